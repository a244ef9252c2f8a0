//! Generated protobuf and gRPC code, one module per proto package. Nothing
//! outside the gRPC adapters should need these types: domain code converts at
//! the boundary.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Encoded `FileDescriptorSet` of every proto in `proto/`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/meshwatch_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("meshwatch.common.v1");
    }
}

pub mod order {
    pub mod v1 {
        tonic::include_proto!("meshwatch.order.v1");
    }
}

pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("meshwatch.inventory.v1");
    }
}

pub mod payment {
    pub mod v1 {
        tonic::include_proto!("meshwatch.payment.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("meshwatch.admin.v1");
    }
}

pub mod monitor {
    pub mod v1 {
        tonic::include_proto!("meshwatch.monitor.v1");
    }
}

pub mod health {
    pub mod v1 {
        tonic::include_proto!("grpc.health.v1");
    }
}

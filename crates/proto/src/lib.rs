//! Generated protobuf and gRPC code, one module per proto package. Nothing
//! outside the gRPC adapters should need these types: domain code converts at
//! the boundary.
#![forbid(unsafe_code)]
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

/// gRPC status codes as people and log lines name them.
pub mod status {
    /// Upper-case gRPC status code name, e.g. `INVALID_ARGUMENT`.
    pub fn code_name(code: i32) -> &'static str {
        match code {
            0 => "OK",
            1 => "CANCELLED",
            2 => "UNKNOWN",
            3 => "INVALID_ARGUMENT",
            4 => "DEADLINE_EXCEEDED",
            5 => "NOT_FOUND",
            6 => "ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "RESOURCE_EXHAUSTED",
            9 => "FAILED_PRECONDITION",
            10 => "ABORTED",
            11 => "OUT_OF_RANGE",
            12 => "UNIMPLEMENTED",
            13 => "INTERNAL",
            14 => "UNAVAILABLE",
            15 => "DATA_LOSS",
            16 => "UNAUTHENTICATED",
            _ => "INVALID_CODE",
        }
    }

    /// Codes that mean the server (or something behind it) failed, as opposed to
    /// a caller's mistake or a normal refusal. Access lines for these are `error`.
    pub fn is_server_error(code: i32) -> bool {
        matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_and_classes() {
            assert_eq!(code_name(0), "OK");
            assert_eq!(code_name(14), "UNAVAILABLE");
            assert_eq!(code_name(99), "INVALID_CODE");
            assert!(is_server_error(14) && is_server_error(13) && is_server_error(4));
            assert!(!is_server_error(0) && !is_server_error(3) && !is_server_error(5));
        }
    }
}

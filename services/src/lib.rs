//! The three services of the meshwatch mesh (order, inventory, payment) as
//! library code: domain logic apart from thin gRPC adapters, wired in `app`
//! and started by thin binaries. `ADDING_A_SERVICE.md` shows how to add one.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod deadline;
pub mod faults;
pub mod inventory;
pub mod money;
pub mod order;
pub mod payment;

mod main_support;

pub use main_support::main_with;

/// `SystemTime` as a protobuf timestamp.
pub fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

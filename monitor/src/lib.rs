//! The meshwatch monitor: failure detection from Kafka heartbeats, the
//! spec-exact `grpc.health.v1` view of the mesh, anomaly alerts from Kafka
//! logs, and the `meshwatch.monitor.v1.Monitor` gRPC service.
#![forbid(unsafe_code)]

pub mod alert;
pub mod anomaly;
pub mod config;
pub mod detector;
pub mod grpc;
pub mod kafka;
pub mod monitor;
pub mod registry;
pub mod server;
pub mod trust;

pub use config::{Args, MonitorConfig};
pub use monitor::Monitor;

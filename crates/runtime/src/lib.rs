//! What makes a gRPC server a meshwatch service: ECS lines on stdout with W3C
//! trace propagation and one access line per RPC (`telemetry`), the
//! spec-exact `grpc.health.v1` state and service (`health`), the heartbeat
//! emitter (`heartbeat`), request limits with load shedding (`limits`), serve
//! with reflection, readiness and a bounded drain, and the admin listener
//! (`serve`), and the common `main` of a service (`entry`).
#![forbid(unsafe_code)]

pub mod entry;
pub mod health;
pub mod heartbeat;
pub mod limits;
pub mod serve;
pub mod telemetry;
#[cfg(test)]
mod test_support;

pub use limits::Limits;
pub use serve::{
    serve, serve_admin, shutdown_on_signals, Readiness, RuntimeError, ServeConfig,
    DEFAULT_DRAIN_GRACE,
};

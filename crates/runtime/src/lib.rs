//! What makes a gRPC server a meshwatch service: ECS lines on stdout with W3C
//! trace propagation and one access line per RPC (`telemetry`), the
//! spec-exact `grpc.health.v1` state and service (`health`), the heartbeat
//! emitter (`heartbeat`), serve with reflection and a bounded drain (`serve`),
//! and the common `main` of a service (`entry`).
#![forbid(unsafe_code)]

pub mod entry;
pub mod health;
pub mod heartbeat;
pub mod serve;
pub mod telemetry;
#[cfg(test)]
mod test_support;

pub use serve::{serve, shutdown_on_signals, RuntimeError, ServeConfig, DEFAULT_DRAIN_GRACE};

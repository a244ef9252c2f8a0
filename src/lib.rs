//! meshwatch: the shared library of the mesh. Generated proto code, ECS
//! telemetry with W3C trace propagation, the spec-exact gRPC health service,
//! heartbeats, the one-call service runtime, Kafka helpers, and the `meshctl`
//! CLI's logic.
#![forbid(unsafe_code)]

pub mod cli;
pub mod ecs;
pub mod elastic;
pub mod health;
pub mod heartbeat;
pub mod kafka;
pub mod proto;
pub mod runtime;
pub mod telemetry;
#[cfg(test)]
mod test_support;
#[cfg(feature = "testkit")]
pub mod testkit;

//! How every meshwatch binary starts: one exit-code enum, one duration syntax
//! (a unit is required), one configuration error, the flags and environment
//! variables that mean the same thing in every binary, and the clap parsing
//! that turns a bad flag into one line naming it and exit 64.
//!
//! Light on purpose (clap, humantime, thiserror): the sidecar shipper links it.
#![forbid(unsafe_code)]

mod args;
mod duration;
mod exit;

pub use args::{parse_kafka_option, KafkaArgs, LogArgs, TlsArgs, TopicArgs};
pub use duration::{duration_flags_without_value_name, parse_duration, MAX_DURATION};
pub use exit::{parse_args, parse_args_from, Exit};

/// Environment variables shared across binaries: one name per concept.
pub mod env {
    /// Kafka bootstrap servers, for every Kafka client (shipper, monitor, meshctl).
    pub const KAFKA: &str = "MESHWATCH_KAFKA";
    /// Extra librdkafka properties `K=V`, `;`-separated, for every Kafka client.
    pub const KAFKA_OPTIONS: &str = "MESHWATCH_KAFKA_OPTIONS";
    pub const LOGS_TOPIC: &str = "MESHWATCH_LOGS_TOPIC";
    pub const HEARTBEATS_TOPIC: &str = "MESHWATCH_HEARTBEATS_TOPIC";
    pub const ALERTS_TOPIC: &str = "MESHWATCH_ALERTS_TOPIC";
    /// The log filter of the binary's own lines (`info`, `debug,rdkafka=warn`…).
    pub const LOG: &str = "MESHWATCH_LOG";
    /// gRPC TLS: certificate chain, key, CA bundle, mutual TLS (every gRPC binary).
    pub const TLS_CERT: &str = "MESHWATCH_TLS_CERT";
    pub const TLS_KEY: &str = "MESHWATCH_TLS_KEY";
    pub const TLS_CA: &str = "MESHWATCH_TLS_CA";
    pub const TLS_CLIENT_AUTH: &str = "MESHWATCH_TLS_CLIENT_AUTH";
}

/// Default topic names (the contract between shippers, monitor and Fluentd).
pub mod topics {
    /// Service log lines.
    pub const LOGS: &str = "meshwatch.logs";
    /// Heartbeat lines of services and shippers.
    pub const HEARTBEATS: &str = "meshwatch.heartbeats";
    /// Alerts and recoveries raised by the monitor.
    pub const ALERTS: &str = "meshwatch.alerts";
}

/// A flag or environment value that failed validation. The message names the
/// flag, so `shipper: --window-bytes: must be at least 1 MiB` tells what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {reason}")]
pub struct ConfigError {
    /// The flag's long name, without the dashes.
    pub flag: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(flag: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            flag: flag.into(),
            reason: reason.into(),
        }
    }
}

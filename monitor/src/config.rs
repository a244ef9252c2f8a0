//! Command line and environment (`MESHWATCH_MONITOR_*` for the monitor's own
//! tuning; `MESHWATCH_KAFKA`, `MESHWATCH_KAFKA_OPTIONS`, the topic variables
//! and `MESHWATCH_LOG` shared with every binary), validated into
//! [`MonitorConfig`] before the runtime starts. Durations take a unit.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use meshwatch_entry::{parse_duration, ConfigError, KafkaArgs, LogArgs, TlsArgs, TopicArgs};
use meshwatch_tls::Tls;

use crate::anomaly::{self, AnomalyConfig};
use crate::detector::{self, DetectorConfig};
use crate::registry::{self, RegistryConfig};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50050";
/// Heartbeats replayed at start: enough to know every live instance at once.
pub const DEFAULT_HEARTBEAT_LOOKBACK: &str = "30s";
/// Logs replayed at start: none (anomaly windows fill from live traffic).
pub const DEFAULT_LOG_LOOKBACK: &str = "0s";
/// How often service statuses are re-evaluated: the detection granularity.
pub const DEFAULT_EVALUATE_EVERY: &str = "100ms";
/// How often missing Kafka topics are reported.
pub const DEFAULT_TOPIC_CHECK_EVERY: &str = "30s";
pub const DEFAULT_LOG_FILTER: &str = "info";

/// The monitor's flags. Every flag has an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "monitor",
    version,
    about = "meshwatch monitor: grpc.health.v1 for the mesh from Kafka heartbeats, anomaly alerts from Kafka logs"
)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "MESHWATCH_MONITOR_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Heartbeats are read from the heartbeats topic (every record, no
    /// consumer group), request lines from the logs topic; alerts go to the
    /// alerts topic.
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Heartbeats younger than this are read at start.
    #[arg(long, env = "MESHWATCH_MONITOR_HEARTBEAT_LOOKBACK", default_value = DEFAULT_HEARTBEAT_LOOKBACK, value_parser = parse_duration)]
    pub heartbeat_lookback: Duration,
    /// Log lines younger than this are read at start.
    #[arg(long, env = "MESHWATCH_MONITOR_LOG_LOOKBACK", default_value = DEFAULT_LOG_LOOKBACK, value_parser = parse_duration)]
    pub log_lookback: Duration,
    /// Suspicion threshold of the phi-accrual detector.
    #[arg(long, env = "MESHWATCH_MONITOR_PHI_THRESHOLD", default_value_t = detector::DEFAULT_THRESHOLD, allow_negative_numbers = true)]
    pub phi_threshold: f64,
    /// Heartbeat gaps remembered per instance.
    #[arg(long, env = "MESHWATCH_MONITOR_MAX_SAMPLE_SIZE", default_value_t = detector::DEFAULT_MAX_SAMPLE_SIZE)]
    pub max_sample_size: usize,
    /// Floor of the learned standard deviation of heartbeat gaps.
    #[arg(long, env = "MESHWATCH_MONITOR_MIN_STD_DEVIATION", default_value = "100ms", value_parser = parse_duration)]
    pub min_std_deviation: Duration,
    /// Extra silence tolerated on top of the mean heartbeat gap.
    #[arg(long, env = "MESHWATCH_MONITOR_ACCEPTABLE_PAUSE", default_value = "250ms", value_parser = parse_duration)]
    pub acceptable_pause: Duration,
    /// Hard bound on silence: this many heartbeat intervals plus the acceptable pause.
    #[arg(long, env = "MESHWATCH_MONITOR_HARD_BOUND_INTERVALS", default_value_t = detector::DEFAULT_HARD_BOUND_INTERVALS)]
    pub hard_bound_intervals: u32,
    /// Heartbeats older than this on arrival do not count as signs of life.
    #[arg(long, env = "MESHWATCH_MONITOR_STALE_AFTER", default_value = "10s", value_parser = parse_duration)]
    pub stale_after: Duration,
    /// Instances silent this long are forgotten.
    #[arg(long, env = "MESHWATCH_MONITOR_FORGET_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub forget_after: Duration,
    /// Instances tracked at most; heartbeats of further new instances are refused.
    #[arg(long, env = "MESHWATCH_MONITOR_MAX_INSTANCES", default_value_t = registry::DEFAULT_MAX_INSTANCES)]
    pub max_instances: usize,
    /// How often silence is re-evaluated (goodbyes and new instances count at once).
    #[arg(long, env = "MESHWATCH_MONITOR_EVALUATE_EVERY", default_value = DEFAULT_EVALUATE_EVERY, value_parser = parse_duration)]
    pub evaluate_every: Duration,
    /// Width of one anomaly bucket.
    #[arg(long, env = "MESHWATCH_MONITOR_ANOMALY_BUCKET", default_value = "10s", value_parser = parse_duration)]
    pub anomaly_bucket: Duration,
    /// Buckets per anomaly window.
    #[arg(long, env = "MESHWATCH_MONITOR_ANOMALY_BUCKETS", default_value_t = anomaly::DEFAULT_BUCKETS)]
    pub anomaly_buckets: usize,
    /// Requests a window needs before it can raise or resolve an anomaly.
    #[arg(long, env = "MESHWATCH_MONITOR_MIN_REQUESTS", default_value_t = anomaly::DEFAULT_MIN_REQUESTS)]
    pub min_requests: u64,
    /// How often missing Kafka topics are looked for (and reported).
    #[arg(long, env = "MESHWATCH_MONITOR_TOPIC_CHECK_EVERY", default_value = DEFAULT_TOPIC_CHECK_EVERY, value_parser = parse_duration)]
    pub topic_check_every: Duration,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub listen: SocketAddr,
    pub kafka: KafkaArgs,
    pub heartbeats_topic: String,
    pub logs_topic: String,
    pub alerts_topic: String,
    pub heartbeat_lookback: Duration,
    pub log_lookback: Duration,
    pub registry: RegistryConfig,
    pub anomaly: AnomalyConfig,
    pub evaluate_every: Duration,
    pub topic_check_every: Duration,
    pub log_filter: String,
    /// gRPC TLS of the monitor's server; `None` is plaintext.
    pub tls: Option<Tls>,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(flag, reason)
}

impl MonitorConfig {
    /// Defaults for `kafka`, listening on an address chosen by the caller (tests).
    pub fn new(kafka: &str, listen: SocketAddr) -> Self {
        Self {
            listen,
            kafka: KafkaArgs::plain(kafka),
            heartbeats_topic: meshwatch_kafka::HEARTBEATS_TOPIC.to_owned(),
            logs_topic: meshwatch_kafka::LOGS_TOPIC.to_owned(),
            alerts_topic: meshwatch_kafka::ALERTS_TOPIC.to_owned(),
            heartbeat_lookback: parse_duration(DEFAULT_HEARTBEAT_LOOKBACK).unwrap_or_default(),
            log_lookback: Duration::ZERO,
            registry: RegistryConfig::default(),
            anomaly: AnomalyConfig::default(),
            evaluate_every: Duration::from_millis(100),
            topic_check_every: Duration::from_secs(30),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            tls: None,
        }
    }
}

impl TryFrom<Args> for MonitorConfig {
    type Error = ConfigError;

    fn try_from(a: Args) -> Result<Self, ConfigError> {
        let listen: SocketAddr = a.listen.parse().map_err(|_| {
            bad(
                "listen",
                format!("{:?} is not an IP:port address", a.listen),
            )
        })?;
        if a.kafka.bootstrap.trim().is_empty() {
            return Err(bad("kafka", "empty bootstrap server list"));
        }
        for (flag, topic) in [
            ("heartbeats-topic", &a.topics.heartbeats_topic),
            ("logs-topic", &a.topics.logs_topic),
            ("alerts-topic", &a.topics.alerts_topic),
        ] {
            if topic.trim().is_empty() {
                return Err(bad(flag, "empty topic name"));
            }
        }
        if !(a.phi_threshold.is_finite() && a.phi_threshold > 0.0) {
            return Err(bad("phi-threshold", "must be a positive number"));
        }
        if a.max_sample_size < 2 {
            return Err(bad("max-sample-size", "must be at least 2"));
        }
        if a.min_std_deviation.is_zero() {
            return Err(bad("min-std-deviation", "must be above zero"));
        }
        if a.hard_bound_intervals == 0 {
            return Err(bad("hard-bound-intervals", "must be at least 1"));
        }
        if a.max_instances == 0 {
            return Err(bad("max-instances", "must be at least 1"));
        }
        if a.evaluate_every < Duration::from_millis(10) {
            return Err(bad("evaluate-every", "must be at least 10ms"));
        }
        if a.anomaly_bucket < Duration::from_millis(100) {
            return Err(bad("anomaly-bucket", "must be at least 100ms"));
        }
        if !(1..=1000).contains(&a.anomaly_buckets) {
            return Err(bad("anomaly-buckets", "must be between 1 and 1000"));
        }
        if a.min_requests == 0 {
            return Err(bad("min-requests", "must be at least 1"));
        }
        if a.topic_check_every < Duration::from_secs(1) {
            return Err(bad("topic-check-every", "must be at least 1s"));
        }
        Ok(Self {
            listen,
            kafka: a.kafka,
            heartbeats_topic: a.topics.heartbeats_topic,
            logs_topic: a.topics.logs_topic,
            alerts_topic: a.topics.alerts_topic,
            heartbeat_lookback: a.heartbeat_lookback,
            log_lookback: a.log_lookback,
            registry: RegistryConfig {
                detector: DetectorConfig {
                    threshold: a.phi_threshold,
                    max_sample_size: a.max_sample_size,
                    min_std_deviation: a.min_std_deviation,
                    acceptable_pause: a.acceptable_pause,
                    hard_bound_intervals: a.hard_bound_intervals,
                    stale_after: a.stale_after,
                },
                forget_after: a.forget_after,
                max_instances: a.max_instances,
                ..RegistryConfig::default()
            },
            anomaly: AnomalyConfig {
                bucket: a.anomaly_bucket,
                buckets: a.anomaly_buckets,
                min_requests: a.min_requests,
                ..AnomalyConfig::default()
            },
            evaluate_every: a.evaluate_every,
            topic_check_every: a.topic_check_every,
            log_filter: a.log.filter,
            tls: Tls::load(&a.tls)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<MonitorConfig, ConfigError> {
        let mut argv = vec!["monitor"];
        argv.extend_from_slice(args);
        MonitorConfig::try_from(Args::try_parse_from(argv).expect("parses"))
    }

    #[test]
    fn defaults_are_valid_and_match_the_library_defaults() {
        let cfg = parse(&[]).expect("valid");
        assert_eq!(cfg.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert_eq!(cfg.registry.detector, DetectorConfig::default());
        assert_eq!(cfg.anomaly, AnomalyConfig::default());
        assert_eq!(cfg.heartbeats_topic, "meshwatch.heartbeats");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn bad_values_name_their_flag() {
        assert_eq!(parse(&["--listen", "nowhere"]).unwrap_err().flag, "listen");
        assert_eq!(
            parse(&["--phi-threshold", "-1"]).unwrap_err().flag,
            "phi-threshold"
        );
        assert_eq!(
            parse(&["--anomaly-buckets", "0"]).unwrap_err().flag,
            "anomaly-buckets"
        );
        let e = parse(&["--min-requests", "0"]).unwrap_err();
        assert!(e.to_string().starts_with("--min-requests: "), "{e}");
    }

    #[test]
    fn durations_need_a_unit() {
        assert!(Args::try_parse_from(["monitor", "--acceptable-pause", "40"]).is_err());
        let cfg = parse(&["--acceptable-pause", "1500ms"]).expect("valid");
        assert_eq!(
            cfg.registry.detector.acceptable_pause,
            Duration::from_millis(1500)
        );
    }
}

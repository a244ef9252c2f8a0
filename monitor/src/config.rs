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
use crate::trust::TrustConfig;

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
    #[arg(long, env = "MESHWATCH_MONITOR_HEARTBEAT_LOOKBACK", default_value = DEFAULT_HEARTBEAT_LOOKBACK, value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat_lookback: Duration,
    /// Log lines younger than this are read at start.
    #[arg(long, env = "MESHWATCH_MONITOR_LOG_LOOKBACK", default_value = DEFAULT_LOG_LOOKBACK, value_parser = parse_duration, value_name = "DURATION")]
    pub log_lookback: Duration,
    /// Suspicion threshold of the phi-accrual detector.
    #[arg(long, env = "MESHWATCH_MONITOR_PHI_THRESHOLD", default_value_t = detector::DEFAULT_THRESHOLD, allow_negative_numbers = true)]
    pub phi_threshold: f64,
    /// Heartbeat gaps remembered per instance.
    #[arg(long, env = "MESHWATCH_MONITOR_MAX_SAMPLE_SIZE", default_value_t = detector::DEFAULT_MAX_SAMPLE_SIZE)]
    pub max_sample_size: usize,
    /// Floor of the learned standard deviation of heartbeat gaps.
    #[arg(long, env = "MESHWATCH_MONITOR_MIN_STD_DEVIATION", default_value = "100ms", value_parser = parse_duration, value_name = "DURATION")]
    pub min_std_deviation: Duration,
    /// Extra silence tolerated on top of the mean heartbeat gap.
    #[arg(long, env = "MESHWATCH_MONITOR_ACCEPTABLE_PAUSE", default_value = "250ms", value_parser = parse_duration, value_name = "DURATION")]
    pub acceptable_pause: Duration,
    /// Hard bound on silence: this many heartbeat intervals plus the acceptable pause.
    #[arg(long, env = "MESHWATCH_MONITOR_HARD_BOUND_INTERVALS", default_value_t = detector::DEFAULT_HARD_BOUND_INTERVALS)]
    pub hard_bound_intervals: u32,
    /// Heartbeats older than this on arrival do not count as signs of life.
    #[arg(long, env = "MESHWATCH_MONITOR_STALE_AFTER", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub stale_after: Duration,
    /// Instances without a heartbeat this long are forgotten; a service left
    /// with none stops counting for the whole mesh ("") at once, stays listed
    /// NOT_SERVING for as long again, then is removed. Heartbeats older than
    /// this are refused.
    #[arg(long, env = "MESHWATCH_MONITOR_FORGET_AFTER", default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub forget_after: Duration,
    /// Instances tracked at most; heartbeats of further new instances are
    /// refused and raise a capacity alert.
    #[arg(long, env = "MESHWATCH_MONITOR_MAX_INSTANCES", default_value_t = registry::DEFAULT_MAX_INSTANCES)]
    pub max_instances: usize,
    /// Services tracked at most (for health, and for anomaly windows);
    /// further new services are refused and raise a capacity alert.
    #[arg(long, env = "MESHWATCH_MONITOR_MAX_SERVICES", default_value_t = registry::DEFAULT_MAX_SERVICES)]
    pub max_services: usize,
    /// Heartbeats stamped further ahead of the monitor's clock are refused.
    #[arg(long, env = "MESHWATCH_MONITOR_MAX_CLOCK_SKEW", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub max_clock_skew: Duration,
    /// How often silence is re-evaluated (goodbyes and new instances count at once).
    #[arg(long, env = "MESHWATCH_MONITOR_EVALUATE_EVERY", default_value = DEFAULT_EVALUATE_EVERY, value_parser = parse_duration, value_name = "DURATION")]
    pub evaluate_every: Duration,
    /// Width of one anomaly bucket.
    #[arg(long, env = "MESHWATCH_MONITOR_ANOMALY_BUCKET", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub anomaly_bucket: Duration,
    /// Buckets per anomaly window.
    #[arg(long, env = "MESHWATCH_MONITOR_ANOMALY_BUCKETS", default_value_t = anomaly::DEFAULT_BUCKETS)]
    pub anomaly_buckets: usize,
    /// Requests a window needs before it can raise or resolve an anomaly.
    #[arg(long, env = "MESHWATCH_MONITOR_MIN_REQUESTS", default_value_t = anomaly::DEFAULT_MIN_REQUESTS)]
    pub min_requests: u64,
    /// How often missing Kafka topics are looked for (and reported).
    #[arg(long, env = "MESHWATCH_MONITOR_TOPIC_CHECK_EVERY", default_value = DEFAULT_TOPIC_CHECK_EVERY, value_parser = parse_duration, value_name = "DURATION")]
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

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// `value` within `min..=max`, or an error naming `flag` and the bounds.
fn within(
    flag: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if value < min || value > max {
        return Err(bad(
            flag,
            format!(
                "{} is outside {}..={}",
                humantime::format_duration(value),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(value)
}

fn count<T: PartialOrd + std::fmt::Display>(
    flag: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(bad(flag, format!("{value} is outside {min}..={max}")));
    }
    Ok(value)
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
        if !(a.phi_threshold.is_finite() && a.phi_threshold > 0.0 && a.phi_threshold <= 100.0) {
            return Err(bad(
                "phi-threshold",
                "must be a number above 0 and at most 100",
            ));
        }
        count("max-sample-size", a.max_sample_size, 2, 100_000)?;
        within("min-std-deviation", a.min_std_deviation, MS, MINUTE)?;
        within("acceptable-pause", a.acceptable_pause, Duration::ZERO, HOUR)?;
        count("hard-bound-intervals", a.hard_bound_intervals, 1, 100)?;
        within("stale-after", a.stale_after, MS, DAY)?;
        within("forget-after", a.forget_after, SECOND, 30 * DAY)?;
        count("max-instances", a.max_instances, 1, 1_000_000)?;
        count("max-services", a.max_services, 1, 100_000)?;
        within("max-clock-skew", a.max_clock_skew, Duration::ZERO, HOUR)?;
        within(
            "heartbeat-lookback",
            a.heartbeat_lookback,
            Duration::ZERO,
            30 * DAY,
        )?;
        within("log-lookback", a.log_lookback, Duration::ZERO, 30 * DAY)?;
        within("evaluate-every", a.evaluate_every, 10 * MS, 10 * SECOND)?;
        within("anomaly-bucket", a.anomaly_bucket, 100 * MS, HOUR)?;
        count("anomaly-buckets", a.anomaly_buckets, 1, 1000)?;
        count("min-requests", a.min_requests, 1, u64::MAX)?;
        within("topic-check-every", a.topic_check_every, SECOND, HOUR)?;
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
                trust: TrustConfig {
                    max_clock_skew: a.max_clock_skew,
                    max_age: a.forget_after,
                    ..TrustConfig::default()
                },
                forget_after: a.forget_after,
                max_instances: a.max_instances,
                max_services: a.max_services,
            },
            anomaly: AnomalyConfig {
                bucket: a.anomaly_bucket,
                buckets: a.anomaly_buckets,
                min_requests: a.min_requests,
                max_services: a.max_services,
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

    #[test]
    fn every_duration_flag_shows_duration_in_help() {
        use clap::CommandFactory;
        assert_eq!(
            meshwatch_entry::duration_flags_without_value_name(&Args::command()),
            Vec::<String>::new()
        );
    }

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
        assert_eq!(cfg.registry.trust, TrustConfig::default());
        assert_eq!(cfg.registry.max_services, registry::DEFAULT_MAX_SERVICES);
        assert_eq!(cfg.heartbeats_topic, "meshwatch.heartbeats");
        assert_eq!(crate::trust::DEFAULT_MAX_CLOCK_SKEW, Duration::from_secs(5));
    }

    #[test]
    fn every_flag_is_bounded_and_the_bound_names_the_flag() {
        let huge = "3650d";
        for (flag, value) in [
            ("phi-threshold", "1e308"),
            ("phi-threshold", "NaN"),
            ("max-sample-size", "18446744073709551615"),
            ("min-std-deviation", huge),
            ("min-std-deviation", "0s"),
            ("acceptable-pause", huge),
            ("hard-bound-intervals", "4294967295"),
            ("stale-after", huge),
            ("forget-after", huge),
            ("max-instances", "18446744073709551615"),
            ("max-services", "0"),
            ("max-clock-skew", huge),
            ("heartbeat-lookback", huge),
            ("log-lookback", huge),
            ("evaluate-every", huge),
            ("evaluate-every", "1ms"),
            ("anomaly-bucket", huge),
            ("anomaly-buckets", "1001"),
            ("topic-check-every", huge),
        ] {
            let e = parse(&[&format!("--{flag}"), value]).expect_err(flag);
            assert_eq!(e.flag, flag, "{e}");
        }
        // The largest accepted values of each build a monitor that runs.
        let cfg = parse(&[
            "--phi-threshold",
            "100",
            "--min-std-deviation",
            "1m",
            "--acceptable-pause",
            "1h",
            "--hard-bound-intervals",
            "100",
            "--forget-after",
            "30d",
            "--evaluate-every",
            "10s",
            "--anomaly-bucket",
            "1h",
            "--anomaly-buckets",
            "1000",
        ])
        .expect("valid");
        let hb = meshwatch_ecs::heartbeat::Heartbeat {
            timestamp: std::time::SystemTime::now(),
            service_name: "order".into(),
            instance_id: "order-1".into(),
            version: "0.1.0".into(),
            status: meshwatch_ecs::heartbeat::HeartbeatStatus::Up,
            sequence: 1,
            interval: crate::trust::DEFAULT_MAX_INTERVAL,
            target_service: None,
        };
        let monitor = crate::Monitor::new(cfg.registry, cfg.anomaly);
        monitor.heartbeat(&hb);
        let now = tokio::time::Instant::now();
        monitor.tick(now);
        assert!(monitor.next_change(now).is_some());
        assert_eq!(monitor.counters().heartbeats, 1);
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

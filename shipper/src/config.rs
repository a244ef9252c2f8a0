//! Command line and environment (`MESHWATCH_SHIPPER_*` for what only the
//! shipper has; `MESHWATCH_KAFKA`, `MESHWATCH_KAFKA_OPTIONS` and the topic
//! variables shared with every binary), validated into [`Config`] before the
//! runtime starts. Durations take a unit (`5ms`, `10s`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use meshwatch_entry::{env, parse_duration, ConfigError, KafkaArgs};

use crate::spool::FsyncPolicy;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/meshwatch-shipper";
pub const DEFAULT_LOGS_TOPIC: &str = meshwatch_kafka::LOGS_TOPIC;
pub const DEFAULT_HEARTBEATS_TOPIC: &str = meshwatch_kafka::HEARTBEATS_TOPIC;
/// Longer lines are cut here (960 KiB: below the record limit, so that a line
/// of this length still fits with the shipper's fields).
pub const DEFAULT_MAX_LINE_BYTES: usize = 960 << 10;
/// The largest record (payload) the shipper produces. With its key, header and
/// batch overhead it stays well below the topics' `max.message.bytes`
/// (1,048,576, [`meshwatch_kafka::TOPIC_MAX_MESSAGE_BYTES`]).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;
/// Room a record needs in a topic's `max.message.bytes` beyond its payload:
/// the key, the traceparent header, the record and batch headers.
pub const RECORD_OVERHEAD_BYTES: usize = 16 << 10;
/// Bounds of `--max-record-bytes`. The upper one is the topic contract: the
/// largest payload that still fits `max.message.bytes` as `meshctl topics
/// create` sets it ([`meshwatch_kafka::TOPIC_MAX_MESSAGE_BYTES`]), so that no
/// record the shipper makes is refused for its size.
pub const MIN_RECORD_BYTES: usize = 4096;
pub const MAX_RECORD_BYTES: usize =
    meshwatch_kafka::TOPIC_MAX_MESSAGE_BYTES as usize - RECORD_OVERHEAD_BYTES;
const _: () = assert!(DEFAULT_MAX_RECORD_BYTES <= MAX_RECORD_BYTES);
/// How often appended spool records are forced to disk by default.
pub const DEFAULT_SPOOL_FSYNC: Duration = Duration::from_millis(100);
/// In-flight bound between reading and Kafka's acknowledgement, in records.
pub const DEFAULT_WINDOW_RECORDS: usize = 20_000;
/// In-flight bound in bytes (our copy; librdkafka's queue is capped to match).
pub const DEFAULT_WINDOW_BYTES: usize = 8 << 20;
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 << 20;
pub const DEFAULT_COMPRESSION: &str = "lz4";
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// Heartbeats are sent at once: a batching delay there is detection delay.
pub const DEFAULT_HEARTBEATS_LINGER: Duration = Duration::ZERO;
pub const DEFAULT_POLL: Duration = Duration::from_millis(50);
pub const DEFAULT_CHECKPOINT: Duration = Duration::from_secs(1);
pub const DEFAULT_STATS: Duration = Duration::from_secs(10);
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
pub const DEFAULT_TOPIC_CHECK: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Where lines come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Tail this file (rotation-aware, checkpointed).
    File(PathBuf),
    /// Spawn this command and ship its stdout and stderr.
    Exec {
        program: String,
        args: Vec<String>,
    },
    Stdin,
}

/// Validated configuration. Tests build it with [`Config::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct Config {
    pub input: Input,
    pub bootstrap: String,
    pub data_dir: PathBuf,
    /// `service.name` put on lines that lack it; `heartbeat.target_service` of our heartbeats.
    pub service_name: String,
    pub host_name: String,
    pub logs_topic: String,
    pub heartbeats_topic: String,
    pub max_line_bytes: usize,
    /// The largest payload produced, `event.id` and every shipper field included.
    pub max_record_bytes: usize,
    pub window_records: usize,
    pub window_bytes: usize,
    pub spool_max_bytes: u64,
    pub spool_fsync: FsyncPolicy,
    pub compression: String,
    /// librdkafka's `linger.ms`: how long a batch may wait for more records.
    pub linger: Duration,
    /// The same for the heartbeats topic (its own producer).
    pub heartbeats_linger: Duration,
    /// Extra librdkafka properties, applied last (they win).
    pub kafka_options: Vec<(String, String)>,
    pub poll_interval: Duration,
    pub checkpoint_interval: Duration,
    /// `None`: no stats lines.
    pub stats_interval: Option<Duration>,
    /// `None`: no heartbeats of our own.
    pub heartbeat_interval: Option<Duration>,
    pub topic_check_interval: Duration,
    pub shutdown_grace: Duration,
}

impl Config {
    /// Defaults for everything but the essentials.
    pub fn new(input: Input, bootstrap: &str, data_dir: PathBuf, service_name: &str) -> Self {
        Self {
            input,
            bootstrap: bootstrap.to_owned(),
            data_dir,
            service_name: service_name.to_owned(),
            host_name: local_host_name(),
            logs_topic: DEFAULT_LOGS_TOPIC.to_owned(),
            heartbeats_topic: DEFAULT_HEARTBEATS_TOPIC.to_owned(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            window_records: DEFAULT_WINDOW_RECORDS,
            window_bytes: DEFAULT_WINDOW_BYTES,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            spool_fsync: FsyncPolicy::Every(DEFAULT_SPOOL_FSYNC),
            compression: DEFAULT_COMPRESSION.to_owned(),
            linger: DEFAULT_LINGER,
            heartbeats_linger: DEFAULT_HEARTBEATS_LINGER,
            kafka_options: Vec::new(),
            poll_interval: DEFAULT_POLL,
            checkpoint_interval: DEFAULT_CHECKPOINT,
            stats_interval: Some(DEFAULT_STATS),
            heartbeat_interval: Some(DEFAULT_HEARTBEAT),
            topic_check_interval: DEFAULT_TOPIC_CHECK,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// The host's name, or "localhost" if it cannot be read.
pub fn local_host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn bad(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(flag, reason)
}

/// Ships one service's JSON lines to Kafka, at least once.
///
/// Inputs (exactly one): `--file PATH` (tail), `--stdin`, or `-- CMD ARGS…` (wrap).
#[derive(Debug, Parser)]
#[command(name = "shipper", version, about, long_about = None)]
pub struct Args {
    /// Tail this file; follows rename and copytruncate rotation; resumes from the checkpoint.
    #[arg(long, env = "MESHWATCH_SHIPPER_FILE", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Read lines from stdin.
    #[arg(long, env = "MESHWATCH_SHIPPER_STDIN")]
    pub stdin: bool,
    /// Kafka: a broker that is down is not a start-up error.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Checkpoint and spool directory (created if missing; locked: a second shipper on it exits 73).
    #[arg(long, env = "MESHWATCH_SHIPPER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The service this shipper speaks for: service.name of lines without one; lines
    /// claiming another are tagged, and only its heartbeats are routed as heartbeats
    /// [default: the wrapped program's name, the file's stem, or "unknown"].
    #[arg(long, env = "MESHWATCH_SHIPPER_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// host.name added to every record [default: the host's name].
    #[arg(long, env = "MESHWATCH_SHIPPER_HOST_NAME")]
    pub host_name: Option<String>,
    /// The topic of log lines (everything that is not a heartbeat).
    #[arg(long, env = env::LOGS_TOPIC, default_value = DEFAULT_LOGS_TOPIC, value_name = "TOPIC")]
    pub logs_topic: String,
    /// The topic of heartbeat lines.
    #[arg(long, env = env::HEARTBEATS_TOPIC, default_value = DEFAULT_HEARTBEATS_TOPIC, value_name = "TOPIC")]
    pub heartbeats_topic: String,
    /// Longer lines are cut here and shipped flagged, with their original length.
    #[arg(long, env = "MESHWATCH_SHIPPER_MAX_LINE_BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
    /// The largest record produced (content that would not fit is cut, its length
    /// recorded); at most 1032192: the topics' max.message.bytes (1048576 by
    /// meshctl) less 16 KiB for key, header and batch overhead.
    #[arg(long, env = "MESHWATCH_SHIPPER_MAX_RECORD_BYTES", default_value_t = DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: usize,
    /// Records sent but not yet acknowledged, at most.
    #[arg(long, env = "MESHWATCH_SHIPPER_WINDOW_RECORDS", default_value_t = DEFAULT_WINDOW_RECORDS)]
    pub window_records: usize,
    /// Bytes sent but not yet acknowledged, at most.
    #[arg(long, env = "MESHWATCH_SHIPPER_WINDOW_BYTES", default_value_t = DEFAULT_WINDOW_BYTES)]
    pub window_bytes: usize,
    /// Disk spool bound (wrap/stdin); beyond it lines are dropped, counted and reported.
    #[arg(long, env = "MESHWATCH_SHIPPER_SPOOL_MAX_BYTES", default_value_t = DEFAULT_SPOOL_MAX_BYTES)]
    pub spool_max_bytes: u64,
    /// When spooled lines are forced to disk: "always" (each pipe read; nothing lost
    /// on power loss) or a duration (at most that much lost on power loss); kill -9
    /// loses nothing either way.
    #[arg(long, env = "MESHWATCH_SHIPPER_SPOOL_FSYNC", default_value = "100ms", value_parser = parse_fsync, value_name = "always|DURATION")]
    pub spool_fsync: FsyncPolicy,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, env = "MESHWATCH_SHIPPER_COMPRESSION", default_value = DEFAULT_COMPRESSION)]
    pub compression: String,
    /// How long a batch may wait for more records before it is sent (librdkafka linger.ms).
    #[arg(long, env = "MESHWATCH_SHIPPER_LINGER", default_value = "5ms", value_parser = parse_duration, value_name = "DURATION")]
    pub linger: Duration,
    /// The heartbeats topic's linger (a producer of its own): 0ms sends each at once.
    #[arg(long, env = "MESHWATCH_SHIPPER_HEARTBEATS_LINGER", default_value = "0ms", value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeats_linger: Duration,
    /// How often an idle tail looks for new data and rotation.
    #[arg(long = "poll", env = "MESHWATCH_SHIPPER_POLL", default_value = "50ms", value_parser = parse_duration, value_name = "DURATION")]
    pub poll: Duration,
    /// How often the checkpoint of acknowledged lines is written.
    #[arg(long = "checkpoint", env = "MESHWATCH_SHIPPER_CHECKPOINT", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub checkpoint: Duration,
    /// Stats line on stderr every so often; 0s turns it off.
    #[arg(long = "stats", env = "MESHWATCH_SHIPPER_STATS", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub stats: Duration,
    /// The shipper's own heartbeat interval; 0s turns it off.
    #[arg(long = "heartbeat", env = "MESHWATCH_SHIPPER_HEARTBEAT", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat: Duration,
    /// How often to check that the topics exist (a missing one is reported each time).
    #[arg(long = "topic-check", env = "MESHWATCH_SHIPPER_TOPIC_CHECK", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub topic_check: Duration,
    /// On SIGTERM or end of input, wait this long for acknowledgements before exiting.
    #[arg(long = "shutdown-grace", env = "MESHWATCH_SHIPPER_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// The command to wrap (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl Args {
    /// Checks every flag; the error names the first bad one.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let inputs = usize::from(self.file.is_some())
            + usize::from(self.stdin)
            + usize::from(!self.command.is_empty());
        if inputs != 1 {
            return Err(bad(
                "file/--stdin/-- CMD",
                format!("give exactly one input (a file to tail, --stdin, or a command after --); got {inputs}"),
            ));
        }
        let input = if let Some(path) = self.file {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(bad(
                    "file",
                    format!("directory {} does not exist", parent.display()),
                ));
            }
            if path.is_dir() {
                return Err(bad("file", format!("{} is a directory", path.display())));
            }
            Input::File(path)
        } else if self.stdin {
            Input::Stdin
        } else {
            let mut command = self.command.into_iter();
            let program = command.next().unwrap_or_default();
            Input::Exec {
                program,
                args: command.collect(),
            }
        };
        let service_name = match self.service_name {
            Some(name) if name.trim().is_empty() => {
                return Err(bad("service-name", "must not be empty"))
            }
            Some(name) => name,
            None => default_service_name(&input),
        };
        if self.kafka.bootstrap.trim().is_empty() {
            return Err(bad("kafka", "must not be empty"));
        }
        for (flag, topic) in [
            ("logs-topic", &self.logs_topic),
            ("heartbeats-topic", &self.heartbeats_topic),
        ] {
            if topic.is_empty()
                || topic.len() > 249
                || !topic
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad(
                    flag,
                    format!("{topic:?} is not a valid Kafka topic name"),
                ));
            }
        }
        if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&self.max_record_bytes) {
            return Err(bad(
                "max-record-bytes",
                format!(
                    "must be between {MIN_RECORD_BYTES} and {MAX_RECORD_BYTES} (the topics' \
                     max.message.bytes {} less {RECORD_OVERHEAD_BYTES} bytes of overhead)",
                    meshwatch_kafka::TOPIC_MAX_MESSAGE_BYTES
                ),
            ));
        }
        if self.max_line_bytes < 256 {
            return Err(bad("max-line-bytes", "must be at least 256"));
        }
        if self.max_line_bytes > self.max_record_bytes {
            return Err(bad(
                "max-line-bytes",
                format!(
                    "must not exceed --max-record-bytes ({})",
                    self.max_record_bytes
                ),
            ));
        }
        if self.window_records == 0 {
            return Err(bad("window-records", "must be at least 1"));
        }
        if self.window_bytes < self.max_record_bytes {
            return Err(bad("window-bytes", "must be at least --max-record-bytes"));
        }
        if !COMPRESSIONS.contains(&self.compression.as_str()) {
            return Err(bad(
                "compression",
                format!(
                    "{:?} is not one of {}",
                    self.compression,
                    COMPRESSIONS.join(", ")
                ),
            ));
        }
        if let Err(e) = std::fs::create_dir_all(&self.data_dir) {
            return Err(bad(
                "data-dir",
                format!("cannot create {}: {e}", self.data_dir.display()),
            ));
        }
        for (flag, d) in [
            ("poll", self.poll),
            ("checkpoint", self.checkpoint),
            ("topic-check", self.topic_check),
        ] {
            if d.is_zero() {
                return Err(bad(flag, "must be positive"));
            }
        }
        let optional = |d: Duration| (!d.is_zero()).then_some(d);
        Ok(Config {
            input,
            bootstrap: self.kafka.bootstrap,
            data_dir: self.data_dir,
            service_name,
            host_name: self.host_name.unwrap_or_else(local_host_name),
            logs_topic: self.logs_topic,
            heartbeats_topic: self.heartbeats_topic,
            max_line_bytes: self.max_line_bytes,
            max_record_bytes: self.max_record_bytes,
            window_records: self.window_records,
            window_bytes: self.window_bytes,
            spool_max_bytes: self.spool_max_bytes,
            spool_fsync: self.spool_fsync,
            compression: self.compression,
            linger: self.linger,
            heartbeats_linger: self.heartbeats_linger,
            kafka_options: self.kafka.options,
            poll_interval: self.poll,
            checkpoint_interval: self.checkpoint,
            stats_interval: optional(self.stats),
            heartbeat_interval: optional(self.heartbeat),
            topic_check_interval: self.topic_check,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// `always`, or a positive duration with a unit.
pub fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    if s.trim() == "always" {
        return Ok(FsyncPolicy::Always);
    }
    match parse_duration(s)? {
        d if d.is_zero() => {
            Err("0 would mean never; write \"always\" or a positive duration".into())
        }
        d => Ok(FsyncPolicy::Every(d)),
    }
}

fn default_service_name(input: &Input) -> String {
    let stem = match input {
        Input::File(p) => p.file_stem().and_then(|s| s.to_str()).map(str::to_owned),
        Input::Exec { program, .. } => std::path::Path::new(program)
            .file_name()
            .and_then(|s| s.to_str())
            .map(str::to_owned),
        Input::Stdin => None,
    };
    stem.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join("meshwatch-shipper-config-test");
        let mut all = vec!["shipper", "--data-dir", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        Args::try_parse_from(all).expect("clap accepts").validate()
    }

    #[test]
    fn wrap_mode_takes_the_command_after_dashes() {
        let c = parse(&["--", "/usr/bin/order", "--port", "1"]).unwrap();
        assert_eq!(
            c.input,
            Input::Exec {
                program: "/usr/bin/order".into(),
                args: vec!["--port".into(), "1".into()]
            }
        );
        assert_eq!(c.service_name, "order");
        assert_eq!(c.compression, "lz4");
        assert_eq!(c.logs_topic, "meshwatch.logs");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn exactly_one_input() {
        assert!(parse(&[]).unwrap_err().flag.contains("file"));
        assert!(parse(&["--stdin", "--", "x"]).is_err());
        assert!(parse(&["--stdin"]).is_ok());
    }

    #[test]
    fn bad_values_name_their_flag() {
        assert_eq!(
            parse(&["--stdin", "--compression", "brotli"])
                .unwrap_err()
                .flag,
            "compression"
        );
        assert!(Args::try_parse_from(["shipper", "--stdin", "--kafka-option", "novalue"]).is_err());
        assert!(Args::try_parse_from(["shipper", "--stdin", "--linger", "5"]).is_err());
        assert_eq!(
            parse(&["--stdin", "--logs-topic", "a b"]).unwrap_err().flag,
            "logs-topic"
        );
        assert_eq!(
            parse(&["--file", "/nonexistent-dir/x.log"])
                .unwrap_err()
                .flag,
            "file"
        );
        assert_eq!(
            parse(&["--stdin", "--max-line-bytes", "10"])
                .unwrap_err()
                .flag,
            "max-line-bytes"
        );
    }

    #[test]
    fn kafka_options_pass_through() {
        let c = parse(&[
            "--stdin",
            "--kafka-option",
            "acks=1",
            "--kafka-option",
            "client.id=x=y",
        ])
        .unwrap();
        assert_eq!(
            c.kafka_options,
            vec![
                ("acks".into(), "1".into()),
                ("client.id".into(), "x=y".into())
            ]
        );
    }
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn every_duration_flag_shows_duration_in_help() {
        use clap::CommandFactory;
        assert_eq!(
            meshwatch_entry::duration_flags_without_value_name(&Args::command()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn durations_take_units_and_zero_turns_optional_ones_off() {
        let dir = std::env::temp_dir().join("meshwatch-shipper-config-test");
        let c = Args::try_parse_from([
            "shipper",
            "--stdin",
            "--data-dir",
            dir.to_str().unwrap(),
            "--linger",
            "0ms",
            "--stats",
            "0s",
            "--shutdown-grace",
            "1500ms",
        ])
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(c.linger, Duration::ZERO);
        assert_eq!(c.stats_interval, None);
        assert_eq!(c.shutdown_grace, Duration::from_millis(1500));
        assert_eq!(c.heartbeat_interval, Some(DEFAULT_HEARTBEAT));
        assert_eq!(c.spool_fsync, FsyncPolicy::Every(DEFAULT_SPOOL_FSYNC));
        assert_eq!(c.heartbeats_linger, Duration::ZERO);
    }

    #[test]
    fn fsync_policy_and_size_limits() {
        let dir = std::env::temp_dir().join("meshwatch-shipper-config-test");
        let parse = |extra: &[&str]| {
            let mut all = vec!["shipper", "--stdin", "--data-dir", dir.to_str().unwrap()];
            all.extend_from_slice(extra);
            Args::try_parse_from(all).map(Args::validate)
        };
        let c = parse(&["--spool-fsync", "always"]).unwrap().unwrap();
        assert_eq!(c.spool_fsync, FsyncPolicy::Always);
        assert_eq!(c.max_record_bytes, DEFAULT_MAX_RECORD_BYTES);
        assert!(c.max_line_bytes < c.max_record_bytes);
        assert!(parse(&["--spool-fsync", "0ms"]).is_err());
        assert!(parse(&["--spool-fsync", "100"]).is_err());
        let e = parse(&["--max-record-bytes", "100"]).unwrap().unwrap_err();
        assert_eq!(e.flag, "max-record-bytes");
        let e = parse(&["--max-line-bytes", "2000000"])
            .unwrap()
            .unwrap_err();
        assert_eq!(e.flag, "max-line-bytes");
        // The flag is capped at the topic contract: up to it is accepted, a
        // byte more is a usage error naming the flag.
        let cap = MAX_RECORD_BYTES.to_string();
        let c = parse(&["--max-record-bytes", &cap]).unwrap().unwrap();
        assert_eq!(c.max_record_bytes, MAX_RECORD_BYTES);
        let over = (MAX_RECORD_BYTES + 1).to_string();
        let e = parse(&["--max-record-bytes", &over]).unwrap().unwrap_err();
        assert_eq!(e.flag, "max-record-bytes");
        let e = parse(&["--max-record-bytes", "16777216"])
            .unwrap()
            .unwrap_err();
        assert_eq!(e.flag, "max-record-bytes");
        let c = parse(&[]).unwrap().unwrap();
        assert!(
            c.max_record_bytes <= MAX_RECORD_BYTES,
            "the default is valid"
        );
    }
}

//! Flags that mean the same thing in every binary, with the same names and
//! environment variables: `#[command(flatten)]` them.

use crate::{env, topics};

/// Default Kafka bootstrap servers.
pub const DEFAULT_KAFKA: &str = "127.0.0.1:9092";

/// How to reach Kafka, for every Kafka client (shipper, monitor, meshctl).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port[,host:port…]).
    #[arg(
        long = "kafka",
        env = env::KAFKA,
        default_value = DEFAULT_KAFKA,
        value_name = "HOST:PORT",
        alias = "kafka-bootstrap"
    )]
    pub bootstrap: String,
    /// Any librdkafka client property as KEY=VALUE, repeatable, applied last
    /// (e.g. security.protocol=SSL, ssl.ca.location=/etc/ca.pem,
    /// sasl.mechanisms=SCRAM-SHA-512). In the environment: `;`-separated.
    #[arg(
        long = "kafka-option",
        env = env::KAFKA_OPTIONS,
        value_delimiter = ';',
        value_name = "KEY=VALUE",
        value_parser = parse_kafka_option
    )]
    pub options: Vec<(String, String)>,
}

impl KafkaArgs {
    /// Plain bootstrap servers and no options.
    pub fn plain(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            options: Vec::new(),
        }
    }
}

/// Parses `KEY=VALUE` (the key non-empty, the value may contain `=`).
pub fn parse_kafka_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE (e.g. security.protocol=SSL)"
        )),
    }
}

/// The topic names, one flag and variable each, in every binary that uses them.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct TopicArgs {
    /// The topic of service log lines.
    #[arg(long, env = env::LOGS_TOPIC, default_value = topics::LOGS, value_name = "TOPIC")]
    pub logs_topic: String,
    /// The topic of heartbeat lines.
    #[arg(long, env = env::HEARTBEATS_TOPIC, default_value = topics::HEARTBEATS, value_name = "TOPIC")]
    pub heartbeats_topic: String,
    /// The topic of the monitor's alerts and recoveries.
    #[arg(long, env = env::ALERTS_TOPIC, default_value = topics::ALERTS, value_name = "TOPIC")]
    pub alerts_topic: String,
}

impl Default for TopicArgs {
    fn default() -> Self {
        Self {
            logs_topic: topics::LOGS.to_owned(),
            heartbeats_topic: topics::HEARTBEATS.to_owned(),
            alerts_topic: topics::ALERTS.to_owned(),
        }
    }
}

/// The filter of the binary's own log lines.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct LogArgs {
    /// Which of this binary's own lines to write (e.g. info, debug, warn,rdkafka=error).
    #[arg(long = "log", env = env::LOG, default_value = "info", value_name = "FILTER")]
    pub filter: String,
}

/// TLS for gRPC, the same flags in every gRPC binary (servers and the
/// clients they run). Plaintext when none is given.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// PEM certificate chain this binary presents: servers then speak TLS only,
    /// and clients present it where a server asks for a client certificate.
    #[arg(long = "tls-cert", env = env::TLS_CERT, value_name = "PEM", global = true)]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", env = env::TLS_KEY, value_name = "PEM", global = true)]
    pub key: Option<std::path::PathBuf>,
    /// PEM CA bundle trusted for the servers this binary calls at https://
    /// addresses (and, with --tls-client-auth, for its clients).
    #[arg(long = "tls-ca", env = env::TLS_CA, value_name = "PEM", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// Require every client to present a certificate signed by --tls-ca (mutual TLS).
    #[arg(long = "tls-client-auth", env = env::TLS_CLIENT_AUTH, global = true)]
    pub client_auth: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Demo {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        topics: TopicArgs,
    }

    #[test]
    fn kafka_flags_parse_with_old_spelling_as_alias() {
        let d = Demo::try_parse_from([
            "demo",
            "--kafka-bootstrap",
            "k:9092",
            "--kafka-option",
            "security.protocol=SSL",
            "--kafka-option",
            "sasl.password=a=b",
        ])
        .unwrap();
        assert_eq!(d.kafka.bootstrap, "k:9092");
        assert_eq!(
            d.kafka.options,
            vec![
                ("security.protocol".into(), "SSL".into()),
                ("sasl.password".into(), "a=b".into())
            ]
        );
        assert_eq!(d.topics, TopicArgs::default());
        assert!(Demo::try_parse_from(["demo", "--kafka-option", "=x"]).is_err());
        assert!(Demo::try_parse_from(["demo", "--kafka-option", "novalue"]).is_err());
    }
}

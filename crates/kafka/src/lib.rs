//! Kafka helpers shared by the shipper, the monitor, meshctl and the tests:
//! one client configuration (with the user's `--kafka-option`s applied last),
//! topic creation with the topics' settings, and the check for missing topics
//! (brokers in production often forbid auto-creation, and the test broker
//! never auto-creates).
#![forbid(unsafe_code)]

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

pub use meshwatch_entry::KafkaArgs;

/// Service log lines.
pub const LOGS_TOPIC: &str = meshwatch_entry::topics::LOGS;
/// Heartbeat lines of services and shippers.
pub const HEARTBEATS_TOPIC: &str = meshwatch_entry::topics::HEARTBEATS;
/// Alerts and recoveries raised by the monitor.
pub const ALERTS_TOPIC: &str = meshwatch_entry::topics::ALERTS;

/// How long admin operations wait for the broker.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the admin helpers.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client configuration: {0}")]
    Client(#[source] RdKafkaError),
    #[error("could not reach kafka at {bootstrap}: {source}")]
    Unreachable {
        bootstrap: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("kafka admin task failed: {0}")]
    Task(String),
}

/// `max.message.bytes` of the meshwatch topics: the largest record batch the
/// broker accepts. The shipper's largest record (`--max-record-bytes`,
/// 1,000,000 by default) plus its key, header and batch overhead stays below it.
pub const TOPIC_MAX_MESSAGE_BYTES: u32 = 1_048_576;
/// `compression.type` of the meshwatch topics. The same codec as the shipper's
/// default, so the broker stores batches as they come; a producer set to another
/// codec is recompressed to this one, and consumers only ever see lz4.
pub const TOPIC_COMPRESSION: &str = "lz4";

/// A topic to create. `retention_ms` of `None` keeps the broker's default;
/// `configs` are further topic settings (`max.message.bytes`, …), set at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub retention_ms: Option<i64>,
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            retention_ms: None,
            configs: Vec::new(),
        }
    }

    /// Adds one topic setting (the last of one name wins).
    #[must_use]
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }

    /// The settings every meshwatch topic gets: the size and codec contract
    /// with the shipper ([`TOPIC_MAX_MESSAGE_BYTES`], [`TOPIC_COMPRESSION`]).
    #[must_use]
    pub fn with_meshwatch_limits(self) -> Self {
        self.config("max.message.bytes", TOPIC_MAX_MESSAGE_BYTES.to_string())
            .config("compression.type", TOPIC_COMPRESSION)
    }

    /// Every setting to send with the creation request, `retention.ms` first.
    pub fn all_configs(&self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        if let Some(ms) = self.retention_ms {
            all.push(("retention.ms".to_owned(), ms.to_string()));
        }
        all.extend(self.configs.iter().cloned());
        all
    }
}

/// The base configuration of every meshwatch Kafka client: bootstrap servers,
/// timeouts short enough that a dead broker is noticed and reported, then the
/// user's `--kafka-option`s (TLS, SASL, …), which win over everything here.
/// Callers set their own properties before [`apply_options`] where the user
/// must be able to override them too.
pub fn client_config(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = base_config(&kafka.bootstrap);
    apply_options(&mut config, kafka);
    config
}

/// The base configuration without the user's options (see [`client_config`]).
pub fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        .set("log.connection.close", "false");
    config
}

/// Applies the user's `--kafka-option K=V` pairs, in order (the last wins).
pub fn apply_options(config: &mut ClientConfig, kafka: &KafkaArgs) {
    for (k, v) in &kafka.options {
        config.set(k, v);
    }
}

/// Creates `topics` with replication factor 1 (single-broker setups and tests);
/// a topic that already exists is fine.
pub async fn create_topics(kafka: &KafkaArgs, topics: &[TopicSpec]) -> Result<(), KafkaError> {
    create_topics_replicated(kafka, topics, 1).await
}

/// Creates `topics` with the given replication factor; existing topics are fine.
pub async fn create_topics_replicated(
    kafka: &KafkaArgs,
    topics: &[TopicSpec],
    replication: i32,
) -> Result<(), KafkaError> {
    let bootstrap = kafka.bootstrap.as_str();
    let admin: AdminClient<DefaultClientContext> =
        client_config(kafka).create().map_err(KafkaError::Client)?;
    let configs: Vec<Vec<(String, String)>> = topics.iter().map(TopicSpec::all_configs).collect();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&configs)
        .map(|(t, configs)| {
            configs.iter().fold(
                NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(replication)),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|source| KafkaError::Unreachable {
            bootstrap: bootstrap.to_owned(),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// The subset of `topics` that does not exist on the broker, in the given order.
/// Fails when the broker cannot be reached within `timeout`.
pub async fn missing_topics(
    kafka: &KafkaArgs,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let bootstrap = kafka.bootstrap.as_str();
    let admin: AdminClient<DefaultClientContext> =
        client_config(kafka).create().map_err(KafkaError::Client)?;
    let wanted: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let bootstrap = bootstrap.to_owned();
    // fetch_metadata blocks the calling thread.
    tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(None, timeout)
            .map_err(|source| KafkaError::Unreachable {
                bootstrap: bootstrap.clone(),
                source,
            })?;
        let present: std::collections::HashSet<&str> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name())
            .collect();
        Ok(wanted
            .into_iter()
            .filter(|t| !present.contains(t.as_str()))
            .collect())
    })
    .await
    .map_err(|e| KafkaError::Task(e.to_string()))?
}

/// The number of partitions of `topic`, or `None` when it does not exist.
pub async fn partition_count(
    kafka: &KafkaArgs,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, KafkaError> {
    let bootstrap = kafka.bootstrap.as_str();
    let admin: AdminClient<DefaultClientContext> =
        client_config(kafka).create().map_err(KafkaError::Client)?;
    let topic = topic.to_owned();
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|source| KafkaError::Unreachable { bootstrap, source })?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)))
    })
    .await
    .map_err(|e| KafkaError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meshwatch_topics_carry_the_size_and_codec_contract() {
        let spec = TopicSpec {
            retention_ms: Some(1000),
            ..TopicSpec::new("t", 3)
        }
        .with_meshwatch_limits();
        assert_eq!(
            spec.all_configs(),
            vec![
                ("retention.ms".to_owned(), "1000".to_owned()),
                ("max.message.bytes".to_owned(), "1048576".to_owned()),
                ("compression.type".to_owned(), "lz4".to_owned()),
            ]
        );
        assert!(TopicSpec::new("t", 1).all_configs().is_empty());
    }
}

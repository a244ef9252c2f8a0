//! The Kafka side: two rdkafka producers (acks=all, idempotent, lz4 by
//! default), one per topic, whose delivery reports come back as [`Ack`]s
//! carrying our sequence number. The heartbeats topic has a producer of its
//! own so that its linger can be zero (`--heartbeats-linger`): a heartbeat never
//! waits for a batch of log lines to fill.
//!
//! `message.timeout.ms` is 0 (infinite) by default: librdkafka keeps retrying
//! while the broker is away instead of failing records after a timeout. Should a
//! user set a timeout, a failed delivery is still retried by the shipping loop:
//! nothing handed to the sink is dropped except on a fatal (non-retryable) error.

use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::event::Record;
use crate::route::Destination;

/// Header carrying the W3C trace context of the line.
pub const TRACEPARENT_HEADER: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
}

/// Why a send did not enter librdkafka's queue.
#[derive(Debug)]
pub enum SendError {
    /// The local queue is full: retry shortly.
    QueueFull,
    /// Refused for now (a topic not created yet, missing ACLs, …): retry with
    /// backoff; the record waits, as it would for a broker that is down.
    Retry(KafkaError),
    /// Retrying cannot help (too large, invalid …).
    Fatal(KafkaError),
}

impl SendError {
    /// Sorts a refusal of `send` by whether waiting can help (see [`is_retryable`]).
    pub fn classify(e: KafkaError) -> Self {
        match e {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => SendError::QueueFull,
            e if is_retryable(&e) => SendError::Retry(e),
            e => SendError::Fatal(e),
        }
    }
}

/// A delivery report.
#[derive(Debug)]
pub struct Ack {
    pub seq: u64,
    pub result: Result<(), KafkaError>,
}

/// Forwards delivery reports from librdkafka's thread to the shipping loop.
/// Unbounded, but never holds more than the in-flight window.
pub struct AckContext {
    acks: mpsc::UnboundedSender<Ack>,
}

impl ClientContext for AckContext {
    /// librdkafka's debug output (only there when asked for with
    /// `--kafka-option debug=msg,broker,…`) as the shipper's own lines on
    /// stderr; without this it went to the `log` crate, which nothing reads.
    /// Its errors come through [`ClientContext::error`] below.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if matches!(level, RDKafkaLogLevel::Debug) {
            crate::diag::debug(
                &format!("librdkafka {fac}: {log_message}"),
                &[("log.logger", serde_json::Value::from("librdkafka"))],
            );
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports transient broker trouble here; it keeps retrying.
        crate::diag::warn(
            &format!("Kafka client: {reason}"),
            &[(
                "error.message",
                serde_json::Value::String(error.to_string()),
            )],
        );
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        // The loop is gone only at shutdown, when reports no longer matter.
        let _ = self.acks.send(Ack {
            seq: seq as u64,
            result,
        });
    }
}

/// The producers and the two topic names they route to.
pub struct Sink {
    logs: ThreadedProducer<AckContext>,
    heartbeats: ThreadedProducer<AckContext>,
    logs_topic: String,
    heartbeats_topic: String,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("logs_topic", &self.logs_topic)
            .finish_non_exhaustive()
    }
}

/// The librdkafka settings of the logs producer, before `--kafka-option` overrides.
pub fn producer_config(config: &Config) -> ClientConfig {
    topic_producer_config(config, config.linger, "")
}

/// The heartbeats producer: the same, with `--heartbeats-linger`.
pub fn heartbeats_producer_config(config: &Config) -> ClientConfig {
    topic_producer_config(config, config.heartbeats_linger, "-heartbeats")
}

fn topic_producer_config(config: &Config, linger: Duration, suffix: &str) -> ClientConfig {
    let mut c = meshwatch_kafka::base_config(&config.bootstrap);
    let queue_kbytes = (config.window_bytes * 2 / 1024 + 1024).to_string();
    let queue_messages = (config.window_records * 2 + 1000).to_string();
    c.set(
        "client.id",
        format!("shipper-{}{suffix}", config.service_name),
    )
    .set("acks", "all")
    .set("enable.idempotence", "true")
    .set("compression.type", &config.compression)
    .set("linger.ms", linger.as_millis().to_string())
    .set("batch.size", "1000000")
    .set("batch.num.messages", "10000")
    .set("message.timeout.ms", "0")
    .set("queue.buffering.max.kbytes", queue_kbytes)
    .set("queue.buffering.max.messages", queue_messages)
    // Room for the largest record plus its key and header. A record the
    // broker still refuses (a topic with a smaller max.message.bytes) is
    // replaced by a small event saying so (see the pipeline).
    .set(
        "message.max.bytes",
        (config.max_record_bytes + 65_536).to_string(),
    );
    for (k, v) in &config.kafka_options {
        c.set(k, v);
    }
    if c.get("debug").is_some() {
        // Otherwise rdkafka caps librdkafka's log level by the `log` crate's
        // (off here): the debug lines asked for would never reach `log`.
        c.set_log_level(RDKafkaLogLevel::Debug);
    }
    c
}

impl Sink {
    pub fn new(config: &Config) -> Result<(Self, mpsc::UnboundedReceiver<Ack>), SinkError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let logs = producer_config(config)
            .create_with_context(AckContext { acks: tx.clone() })
            .map_err(SinkError::Create)?;
        let heartbeats = heartbeats_producer_config(config)
            .create_with_context(AckContext { acks: tx })
            .map_err(SinkError::Create)?;
        Ok((
            Self {
                logs,
                heartbeats,
                logs_topic: config.logs_topic.clone(),
                heartbeats_topic: config.heartbeats_topic.clone(),
            },
            rx,
        ))
    }

    pub fn topic(&self, d: Destination) -> &str {
        match d {
            Destination::Logs => &self.logs_topic,
            Destination::Heartbeats => &self.heartbeats_topic,
        }
    }

    /// Hands one record to librdkafka; its [`Ack`] arrives later with `seq`.
    pub fn send(&self, seq: u64, record: &Record) -> Result<(), SendError> {
        let mut base = BaseRecord::with_opaque_to(self.topic(record.destination), seq as usize)
            .key(&record.key[..])
            .payload(&record.payload[..]);
        if let Some(tp) = &record.traceparent {
            base = base.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: TRACEPARENT_HEADER,
                value: Some(tp.as_bytes()),
            }));
        }
        let producer = match record.destination {
            Destination::Logs => &self.logs,
            Destination::Heartbeats => &self.heartbeats,
        };
        producer.send(base).map_err(|(e, _)| SendError::classify(e))
    }

    /// Drops everything librdkafka still holds; their reports come back as purge errors.
    pub fn purge(&self) {
        for p in [&self.logs, &self.heartbeats] {
            p.purge(PurgeConfig::default().queue().inflight());
            let _ = p.flush(Duration::from_millis(200));
        }
    }

    /// Topics among ours that the broker does not know (blocking metadata call).
    pub fn missing_topics(&self, timeout: Duration) -> Result<Vec<String>, KafkaError> {
        let md = self.logs.client().fetch_metadata(None, timeout)?;
        let known: Vec<&str> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name())
            .collect();
        let mut missing = Vec::new();
        for t in [&self.logs_topic, &self.heartbeats_topic] {
            if !known.contains(&t.as_str()) && !missing.contains(t) {
                missing.push(t.clone());
            }
        }
        Ok(missing)
    }
}

/// Whether resending can succeed later. Purges are not failures of delivery
/// (shutdown) and are handled by the caller. Authorization errors are
/// retryable: the records wait (reported) until an operator fixes the ACLs,
/// as they would for a broker that is down.
pub fn is_retryable(e: &KafkaError) -> bool {
    !matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRequiredAcks
                | RDKafkaErrorCode::PolicyViolation
        )
    )
}

/// A report produced by [`Sink::purge`].
pub fn is_purge(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_fatal_are_told_apart() {
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        let transport = KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure);
        let too_big = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(is_retryable(&timeout));
        assert!(is_retryable(&transport));
        assert!(!is_retryable(&too_big));
        assert!(is_retryable(&KafkaError::MessageProduction(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(is_purge(&KafkaError::MessageProduction(
            RDKafkaErrorCode::PurgeQueue
        )));
        assert!(!is_purge(&timeout));
    }

    #[test]
    fn a_missing_topic_or_acl_refusal_at_send_is_retried_not_fatal() {
        let class = |code| SendError::classify(KafkaError::MessageProduction(code));
        assert!(matches!(
            class(RDKafkaErrorCode::QueueFull),
            SendError::QueueFull
        ));
        for code in [
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            RDKafkaErrorCode::UnknownPartition,
        ] {
            assert!(
                matches!(class(code), SendError::Retry(_)),
                "{code:?} must wait, not be refused for good"
            );
        }
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidTopic,
        ] {
            assert!(matches!(class(code), SendError::Fatal(_)), "{code:?}");
        }
    }

    #[test]
    fn debug_contexts_lift_the_log_level() {
        let mut c = Config::new(crate::Input::Stdin, "b:1", "/tmp".into(), "order");
        assert!(!matches!(
            producer_config(&c).log_level,
            RDKafkaLogLevel::Debug
        ));
        c.kafka_options = vec![("debug".into(), "msg,broker".into())];
        assert!(matches!(
            producer_config(&c).log_level,
            RDKafkaLogLevel::Debug
        ));
        assert!(matches!(
            heartbeats_producer_config(&c).log_level,
            RDKafkaLogLevel::Debug
        ));
    }

    #[test]
    fn user_options_win() {
        let mut c = Config::new(crate::Input::Stdin, "b:1", "/tmp".into(), "order");
        c.kafka_options = vec![("acks".into(), "1".into())];
        let pc = producer_config(&c);
        assert_eq!(pc.get("acks"), Some("1"));
        assert_eq!(pc.get("enable.idempotence"), Some("true"));
        assert_eq!(pc.get("compression.type"), Some("lz4"));
        assert_eq!(pc.get("linger.ms"), Some("5"));
        assert_eq!(pc.get("message.max.bytes"), Some("1065536"));
        let hb = heartbeats_producer_config(&c);
        assert_eq!(hb.get("linger.ms"), Some("0"));
        assert_eq!(hb.get("acks"), Some("1"), "user options win there too");
    }
}

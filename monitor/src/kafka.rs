//! The monitor's Kafka I/O: consumers that see every record of a topic (no
//! consumer group, so every monitor replica sees every heartbeat), starting
//! from recent data; the alert producer; and the missing-topic reporter.
//!
//! Where reading starts: each partition from its beginning, skipping records
//! whose Kafka timestamp is older than `lookback`. Starting at "latest" or at
//! `offsets_for_times` would read less, but both rest on the broker's
//! ListOffsets answer, which the test broker (tansu) gets wrong; the retained
//! topic is read once at start-up instead (keep heartbeat retention short).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::alert::Alert;

/// How long one poll blocks; also the shutdown reaction time of a consumer thread.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often a consumer re-reads the partition count (new partitions, or a
/// topic that did not exist yet).
const METADATA_REFRESH: Duration = Duration::from_secs(10);
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Fetch responses wait at most this long for data: heartbeats are small and
/// their arrival time is what the failure detector measures.
const FETCH_WAIT_MAX_MS: &str = "50";
/// Consumer errors (broker unreachable, ...) are logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Delivery timeout of an alert; after it the alert is reported as lost.
const ALERT_DELIVERY_TIMEOUT_MS: &str = "30000";

#[derive(Debug, thiserror::Error)]
pub enum KafkaIoError {
    #[error("creating the kafka {what}: {source}")]
    Client {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("starting the consumer thread for {topic}: {source}")]
    Thread {
        topic: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to read and from when.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub kafka: meshwatch_kafka::KafkaArgs,
    pub topic: String,
    /// Records older than this (by their Kafka timestamp) at start-up are skipped.
    pub lookback: Duration,
    /// Unique per process: no offsets are committed, no group is joined.
    pub group_id: String,
}

/// Starts a consumer thread that calls `handle(payload)` for every record
/// until `shutdown`. librdkafka polls block, so they get their own thread
/// rather than a runtime worker. A missing topic is waited for (the reporter
/// task says so); partitions added later are picked up.
pub fn spawn_consumer(
    spec: ConsumerSpec,
    shutdown: CancellationToken,
    mut handle: impl FnMut(&[u8]) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, KafkaIoError> {
    let consumer: BaseConsumer = meshwatch_kafka::client_config(&spec.kafka)
        .set("group.id", &spec.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        .create()
        .map_err(|source| KafkaIoError::Client {
            what: "consumer",
            source,
        })?;
    let topic = spec.topic.clone();
    std::thread::Builder::new()
        .name(format!("consume {}", spec.topic))
        .spawn(move || {
            let cutoff_ms = SystemTime::now()
                .checked_sub(spec.lookback)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            let mut assigned = 0usize;
            let mut next_refresh = std::time::Instant::now();
            let mut last_error_log: Option<std::time::Instant> = None;
            while !shutdown.is_cancelled() {
                if std::time::Instant::now() >= next_refresh {
                    next_refresh = std::time::Instant::now() + METADATA_REFRESH;
                    match partition_count(&consumer, &spec.topic) {
                        Some(n) if n > assigned => {
                            let mut tpl = TopicPartitionList::new();
                            for p in 0..n {
                                // Partitions already assigned keep their position.
                                let offset = match consumer.position().ok().and_then(|pos| {
                                    pos.find_partition(&spec.topic, p as i32)
                                        .map(|e| e.offset())
                                }) {
                                    Some(o @ Offset::Offset(_)) => o,
                                    _ => Offset::Beginning,
                                };
                                let _ = tpl.add_partition_offset(&spec.topic, p as i32, offset);
                            }
                            match consumer.assign(&tpl) {
                                Ok(()) => {
                                    tracing::info!(topic = %spec.topic, partitions = n, "consuming");
                                    assigned = n;
                                }
                                Err(e) => {
                                    tracing::error!(topic = %spec.topic, error = %e, "assigning partitions failed; retrying");
                                }
                            }
                        }
                        _ => {}
                    }
                    if assigned == 0 {
                        // Nothing to poll yet; the reporter task names the missing topic.
                        std::thread::sleep(POLL_TIMEOUT);
                        continue;
                    }
                }
                match consumer.poll(POLL_TIMEOUT) {
                    Some(Ok(m)) => {
                        let fresh = match m.timestamp() {
                            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms >= cutoff_ms,
                            Timestamp::NotAvailable => true,
                        };
                        if fresh {
                            if let Some(payload) = m.payload() {
                                handle(payload);
                            }
                        }
                    }
                    Some(Err(e))
                        if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) =>
                    {
                        last_error_log = Some(std::time::Instant::now());
                        tracing::warn!(topic = %spec.topic, error = %e, "kafka consumer error; still retrying");
                    }
                    Some(Err(_)) | None => {}
                }
            }
            let _ = consumer.unassign();
        })
        .map_err(|source| KafkaIoError::Thread { topic, source })
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> Option<usize> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .ok()?;
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
}

/// Produces alerts to the alerts topic, keyed by service.
#[derive(Clone)]
pub struct AlertProducer {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for AlertProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertProducer")
            .field("topic", &self.topic)
            .finish()
    }
}

impl AlertProducer {
    pub fn new(kafka: &meshwatch_kafka::KafkaArgs, topic: &str) -> Result<Self, KafkaIoError> {
        let producer = meshwatch_kafka::client_config(kafka)
            .set("message.timeout.ms", ALERT_DELIVERY_TIMEOUT_MS)
            .set("linger.ms", "5")
            .create()
            .map_err(|source| KafkaIoError::Client {
                what: "producer",
                source,
            })?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Enqueues `alert` and reports its delivery (or loss) in the background.
    /// librdkafka's queue bounds what is in flight; a full queue loses the
    /// alert, reported as an error.
    pub fn send(&self, alert: &Alert) {
        let payload = alert.to_json_line();
        let record = FutureRecord::to(&self.topic)
            .key(&alert.service)
            .payload(&payload);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                let id = alert.id.clone();
                let topic = self.topic.clone();
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(Ok(_)) => tracing::debug!(alert.id = %id, "alert delivered"),
                        Ok(Err((e, _))) => {
                            tracing::error!(alert.id = %id, topic = %topic, error = %e, "alert not delivered to kafka")
                        }
                        Err(_) => {
                            tracing::error!(alert.id = %id, topic = %topic, "alert delivery dropped")
                        }
                    }
                });
            }
            Err((e, _)) => {
                tracing::error!(alert.id = %alert.id, topic = %self.topic, error = %e, "alert not enqueued for kafka")
            }
        }
    }
}

/// Checks at start and every `every` that `topics` exist, and logs an error
/// naming the missing ones (each time) until they do; then keeps checking,
/// because a topic can be deleted.
pub async fn report_missing_topics(
    kafka: meshwatch_kafka::KafkaArgs,
    topics: Vec<String>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let bootstrap = kafka.bootstrap.clone();
    loop {
        match meshwatch_kafka::missing_topics(&kafka, &names, METADATA_TIMEOUT).await {
            Ok(missing) if missing.is_empty() => {}
            Ok(missing) => tracing::error!(
                kafka = %bootstrap,
                missing = ?missing,
                "kafka topics missing: create them (scripts/mesh or the setup job); the monitor waits for them and sees no heartbeats, logs or alerts on them until then"
            ),
            Err(e) => {
                tracing::error!(kafka = %bootstrap, error = %e, "kafka unreachable; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

//! The monitor's Kafka I/O: supervised consumers that see every record of a
//! topic (no consumer group, so every monitor replica sees every heartbeat),
//! starting from recent data; the alert producer; and the missing-topic
//! reporter.
//!
//! Where reading starts: each partition from its beginning, skipping records
//! whose Kafka timestamp is older than `lookback`. Starting at "latest" or at
//! `offsets_for_times` would read less, but both rest on the broker's
//! ListOffsets answer, which the test broker (tansu) gets wrong; the retained
//! topic is read once at start-up instead (keep heartbeat retention short).
//!
//! Supervision: a consumer whose record handler panics, or whose client
//! fails, is started again with a fresh client after a backoff, resuming
//! after the last record it handed out (a record that made the handler panic
//! is not handed out twice); each restart is logged as an error with the
//! cause and counted ([`Consumer::restarts`]).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
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
/// Fetch wait of the heartbeats consumer. A broker may hold each fetch this
/// long even when records are there (the test broker does): the arrival time
/// of a heartbeat is what the failure detector measures, so it is short.
pub const HEARTBEAT_FETCH_WAIT: Duration = Duration::from_millis(10);
/// Fetch wait of the logs consumer: anomaly buckets are seconds wide, so
/// throughput counts more than a few milliseconds.
pub const LOG_FETCH_WAIT: Duration = Duration::from_millis(50);
/// Consumer errors (broker unreachable, ...) are logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Delivery timeout of an alert; after it the alert is reported as lost.
const ALERT_DELIVERY_TIMEOUT_MS: &str = "30000";
/// First wait before a failed consumer starts again; doubles up to the max.
const RESTART_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(10);
/// A consumer that ran this long before failing starts again at the first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

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
    /// `fetch.wait.max.ms` (a `--kafka-option` still overrides it).
    pub fetch_wait: Duration,
}

impl ConsumerSpec {
    fn client(&self) -> Result<BaseConsumer, KafkaIoError> {
        let mut config = meshwatch_kafka::base_config(&self.kafka.bootstrap);
        config
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.min.bytes", "1")
            .set("fetch.wait.max.ms", self.fetch_wait.as_millis().to_string());
        meshwatch_kafka::apply_options(&mut config, &self.kafka);
        config.create().map_err(|source| KafkaIoError::Client {
            what: "consumer",
            source,
        })
    }
}

/// A running consumer thread.
#[derive(Debug)]
pub struct Consumer {
    thread: std::thread::JoinHandle<()>,
    restarts: Arc<AtomicU64>,
}

impl Consumer {
    /// How often the consumer was started again after a failure.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Waits for the thread to end (after shutdown).
    pub fn join(self) -> std::thread::Result<()> {
        self.thread.join()
    }
}

/// Why one run of a consumer ended.
enum Ended {
    Shutdown,
    Failed(KafkaIoError),
}

/// Starts a supervised consumer thread that calls `handle(payload)` for
/// every record until `shutdown`. librdkafka polls block, so they get their
/// own thread rather than a runtime worker. A missing topic is waited for
/// (the reporter task says so); partitions added later are picked up. The
/// first client is created here, so a bad client configuration fails the
/// start rather than a restart loop.
pub fn spawn_consumer(
    spec: ConsumerSpec,
    shutdown: CancellationToken,
    mut handle: impl FnMut(&[u8]) + Send + 'static,
) -> Result<Consumer, KafkaIoError> {
    let first = spec.client()?;
    let restarts = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&restarts);
    let topic = spec.topic.clone();
    let thread = std::thread::Builder::new()
        .name(format!("consume {}", spec.topic))
        .spawn(move || {
            let cutoff_ms = SystemTime::now()
                .checked_sub(spec.lookback)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            // Next offset per partition: where a restarted run resumes.
            let mut next: HashMap<i32, i64> = HashMap::new();
            let mut client = Some(first);
            let mut backoff = RESTART_BACKOFF;
            while !shutdown.is_cancelled() {
                let started = std::time::Instant::now();
                let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let consumer = match client.take() {
                        Some(c) => c,
                        None => match spec.client() {
                            Ok(c) => c,
                            Err(e) => return Ended::Failed(e),
                        },
                    };
                    consume(&consumer, &spec, &shutdown, cutoff_ms, &mut next, &mut handle)
                }));
                let (cause, kind) = match run {
                    Ok(Ended::Shutdown) => break,
                    Ok(Ended::Failed(e)) => (e.to_string(), "meshwatch_monitor::kafka::KafkaIoError"),
                    Err(panic) => (panic_message(panic.as_ref()), "panic"),
                };
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = RESTART_BACKOFF;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    error.message = %cause,
                    error.type = kind,
                    meshwatch.kafka.topic = %spec.topic,
                    meshwatch.monitor.consumer_restarts = n,
                    "the consumer of {} stopped; starting it again in {} ms, after the last record it handed out",
                    spec.topic,
                    backoff.as_millis()
                );
                let resume = std::time::Instant::now() + backoff;
                while !shutdown.is_cancelled() && std::time::Instant::now() < resume {
                    std::thread::sleep(POLL_TIMEOUT.min(backoff));
                }
                backoff = backoff.saturating_mul(2).min(MAX_RESTART_BACKOFF);
            }
        })
        .map_err(|source| KafkaIoError::Thread { topic, source })?;
    Ok(Consumer { thread, restarts })
}

/// The text of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// One run of a consumer: assigns partitions (resuming at `next` where known,
/// else from the beginning with `cutoff_ms`), polls and hands every record to
/// `handle`, until shutdown.
fn consume(
    consumer: &BaseConsumer,
    spec: &ConsumerSpec,
    shutdown: &CancellationToken,
    cutoff_ms: i64,
    next: &mut HashMap<i32, i64>,
    handle: &mut impl FnMut(&[u8]),
) -> Ended {
    let mut assigned = 0usize;
    let mut next_refresh = std::time::Instant::now();
    let mut last_error_log: Option<std::time::Instant> = None;
    while !shutdown.is_cancelled() {
        if std::time::Instant::now() >= next_refresh {
            next_refresh = std::time::Instant::now() + METADATA_REFRESH;
            if let Some(n) = partition_count(consumer, &spec.topic).filter(|n| *n > assigned) {
                let mut tpl = TopicPartitionList::new();
                for p in 0..i32::try_from(n).unwrap_or(i32::MAX) {
                    let offset = next
                        .get(&p)
                        .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                    let _ = tpl.add_partition_offset(&spec.topic, p, offset);
                }
                match consumer.assign(&tpl) {
                    Ok(()) => {
                        tracing::info!(meshwatch.kafka.topic = %spec.topic, meshwatch.kafka.partitions = n, "consuming");
                        assigned = n;
                    }
                    Err(e) => {
                        tracing::error!(meshwatch.kafka.topic = %spec.topic, error.message = %e, error.type = "rdkafka::error::KafkaError", "assigning partitions failed; retrying");
                    }
                }
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
                // Recorded before the handler runs: a record that makes it
                // panic is not handed out again after the restart.
                next.insert(m.partition(), m.offset().saturating_add(1));
                if fresh {
                    if let Some(payload) = m.payload() {
                        handle(payload);
                    }
                }
            }
            Some(Err(e)) if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) => {
                last_error_log = Some(std::time::Instant::now());
                tracing::warn!(meshwatch.kafka.topic = %spec.topic, error.message = %e, error.type = "rdkafka::error::KafkaError", "kafka consumer error; still retrying");
            }
            Some(Err(_)) | None => {}
        }
    }
    let _ = consumer.unassign();
    Ended::Shutdown
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
        let mut config = meshwatch_kafka::base_config(&kafka.bootstrap);
        config
            .set("message.timeout.ms", ALERT_DELIVERY_TIMEOUT_MS)
            .set("linger.ms", "5");
        meshwatch_kafka::apply_options(&mut config, kafka);
        let producer = config.create().map_err(|source| KafkaIoError::Client {
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
                            tracing::error!(alert.id = %id, meshwatch.kafka.topic = %topic, error.message = %e, error.type = "rdkafka::error::KafkaError", "alert not delivered to kafka")
                        }
                        Err(_) => {
                            tracing::error!(alert.id = %id, meshwatch.kafka.topic = %topic, "alert delivery dropped")
                        }
                    }
                });
            }
            Err((e, _)) => {
                tracing::error!(alert.id = %alert.id, meshwatch.kafka.topic = %self.topic, error.message = %e, error.type = "rdkafka::error::KafkaError", "alert not enqueued for kafka")
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
                meshwatch.kafka.bootstrap = %bootstrap,
                meshwatch.kafka.missing_topics = %missing.join(","),
                "kafka topics missing: {}; create them (scripts/mesh or the setup job); the monitor waits for them and sees no heartbeats, logs or alerts on them until then",
                missing.join(", ")
            ),
            Err(e) => {
                tracing::error!(meshwatch.kafka.bootstrap = %bootstrap, error.message = %e, error.type = "meshwatch_kafka::KafkaError", "kafka unreachable; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

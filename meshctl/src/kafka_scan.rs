//! Reads a topic from the beginning with a fresh consumer (no group, nothing
//! committed), on a thread of its own, into a bounded channel. Stops at the
//! end of every partition, after an idle period, or never (follow).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::CliError;
use meshwatch_kafka as kafka;

/// Records buffered between the consumer thread and the caller.
const CHANNEL_BOUND: usize = 4096;

/// One record's position and payload.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

/// How long a scan waits for a first record before it takes the topic for empty.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanOptions {
    /// Keep reading new records forever.
    pub follow: bool,
    /// Without `follow`: stop once nothing arrived for this long (the broker
    /// may not report partition ends reliably).
    pub idle: Duration,
}

/// Starts the scan; the receiver yields records until the scan ends. Dropping
/// the receiver stops the consumer thread.
pub(crate) async fn scan(
    kafka_args: &meshwatch_entry::KafkaArgs,
    topic: &str,
    options: ScanOptions,
) -> Result<mpsc::Receiver<Scanned>, CliError> {
    let bootstrap = kafka_args.bootstrap.as_str();
    let partitions = kafka::partition_count(kafka_args, topic, Duration::from_secs(10))
        .await?
        .ok_or_else(|| CliError::MissingTopic {
            topic: topic.to_owned(),
            bootstrap: bootstrap.to_owned(),
        })?;
    let consumer: BaseConsumer = kafka::client_config(kafka_args)
        .set(
            "group.id",
            format!("meshctl-{:016x}", rand::random::<u64>()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let (tx, rx) = mpsc::channel(CHANNEL_BOUND);
    std::thread::spawn(move || {
        // A partition counts as read to its end only after it yielded a
        // record: the test broker can report an end before the records are
        // visible. Empty partitions end by the idle rule. The idle clock starts
        // with the first record, so a slow start is not mistaken for a quiet
        // topic; a topic with no records at all ends after STARTUP_WAIT.
        let started = Instant::now();
        let mut answered = false;
        let mut with_records = std::collections::HashSet::new();
        let mut at_end = std::collections::HashSet::new();
        let mut last_activity = Instant::now();
        loop {
            if !options.follow {
                let idle_over = if answered {
                    last_activity.elapsed() >= options.idle
                } else {
                    started.elapsed() >= options.idle.max(STARTUP_WAIT)
                };
                if idle_over || at_end.len() >= partitions as usize {
                    break;
                }
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    answered = true;
                    last_activity = Instant::now();
                    with_records.insert(m.partition());
                    at_end.remove(&m.partition());
                    let record = Scanned {
                        partition: m.partition(),
                        offset: m.offset(),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    };
                    if tx.blocking_send(record).is_err() {
                        break;
                    }
                }
                Some(Err(RdError::PartitionEOF(p))) => {
                    if with_records.contains(&p) {
                        at_end.insert(p);
                    }
                }
                Some(Err(RdError::MessageConsumption(
                    RDKafkaErrorCode::UnknownTopicOrPartition,
                ))) => break,
                Some(Err(_)) | None => {
                    if tx.is_closed() {
                        break;
                    }
                }
            }
        }
        let _ = consumer.unassign();
    });
    Ok(rx)
}

//! The shipper's own health: counters, the periodic stats line on stderr, and
//! the watch on the topics it needs (a missing topic is reported every check).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::sink::Sink;

/// Counters shared with the reader threads.
#[derive(Debug, Default)]
pub struct Counters {
    lines_read: AtomicU64,
    bytes_read: AtomicU64,
}

impl Counters {
    pub fn add_read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn add_lines(&self, lines: u64) {
        self.lines_read.fetch_add(lines, Ordering::Relaxed);
    }
    pub fn lines_read(&self) -> u64 {
        self.lines_read.load(Ordering::Relaxed)
    }
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

/// What the shipping loop counts itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shipped {
    pub lines: u64,
    pub bytes: u64,
    /// Dropped on a fatal (non-retryable) Kafka error.
    pub failed: u64,
    pub retries: u64,
}

/// One stats snapshot.
#[derive(Debug)]
pub struct Snapshot {
    pub lines_read: u64,
    pub bytes_read: u64,
    pub shipped: Shipped,
    pub in_flight: usize,
    pub in_flight_bytes: usize,
    pub lag_bytes: Option<u64>,
    pub spool_bytes: Option<u64>,
    pub dropped: u64,
}

impl Snapshot {
    pub fn emit(&self) {
        let mut fields: Vec<(&str, Value)> = vec![
            ("shipper.lines_read", json!(self.lines_read)),
            ("shipper.bytes_read", json!(self.bytes_read)),
            ("shipper.lines_shipped", json!(self.shipped.lines)),
            ("shipper.bytes_shipped", json!(self.shipped.bytes)),
            ("shipper.lines_failed", json!(self.shipped.failed)),
            ("shipper.retries", json!(self.shipped.retries)),
            ("shipper.in_flight", json!(self.in_flight)),
            ("shipper.in_flight_bytes", json!(self.in_flight_bytes)),
            ("shipper.lines_dropped", json!(self.dropped)),
        ];
        if let Some(lag) = self.lag_bytes {
            fields.push(("shipper.lag_bytes", json!(lag)));
        }
        if let Some(spool) = self.spool_bytes {
            fields.push(("shipper.spool_bytes", json!(spool)));
        }
        crate::diag::info("shipper stats", &fields);
    }
}

/// Checks now and every `interval` that our topics exist; says so on stderr
/// each time one is missing (records for it wait until it is created).
pub async fn watch_topics(sink: Arc<Sink>, interval: Duration) {
    let mut unreachable_reported = false;
    loop {
        let s = sink.clone();
        let result =
            tokio::task::spawn_blocking(move || s.missing_topics(Duration::from_secs(5))).await;
        match result {
            Ok(Ok(missing)) if !missing.is_empty() => {
                unreachable_reported = false;
                crate::diag::error(
                    &format!(
                        "Kafka topic(s) {} do not exist; their records wait in the shipper until created \
                         (the shipper never auto-creates topics)",
                        missing.join(", ")
                    ),
                    &[("shipper.missing_topics", json!(missing))],
                );
            }
            Ok(Ok(_)) => unreachable_reported = false,
            Ok(Err(e)) => {
                // Down brokers are normal for a sidecar: say it once per outage.
                if !std::mem::replace(&mut unreachable_reported, true) {
                    crate::diag::warn(
                        &format!("cannot read Kafka metadata ({e}); will keep trying"),
                        &[],
                    );
                }
            }
            Err(_) => {}
        }
        tokio::time::sleep(interval).await;
    }
}

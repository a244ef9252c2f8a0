//! The shipping loop: takes batches from the input while the in-flight window
//! has room, sends them, collects acknowledgements, and commits positions
//! (checkpoint or spool) only up to the first record not yet acknowledged.
//!
//! Memory bound: at most `window_records` records / `window_bytes` bytes are in
//! flight (plus one input batch of overshoot); librdkafka's queue is capped to
//! match. When the window is full the loop stops taking input: the tail waits
//! at its position, the pipe inputs keep appending to the disk spool.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_ecs::ServiceIdentity;
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::mpsc;

use crate::checkpoint::{self, FileCheckpoint, FileIdentity};
use crate::config::Config;
use crate::event::{Enricher, RawLine, Record};
use crate::input::exec::Wrapped;
use crate::input::{Batch, Item, Position};
use crate::sink::{self, Ack, SendError, Sink};
use crate::spool::{Spool, SpoolPos};
use crate::stats::{Counters, Shipped, Snapshot};
use crate::ShutdownSignal;

const TICK: Duration = Duration::from_millis(100);
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Spool records read per batch.
const SPOOL_BATCH: usize = 2048;

/// The input side as the loop sees it.
pub(crate) enum Source {
    File {
        rx: mpsc::Receiver<Batch>,
        stop: Arc<AtomicBool>,
        path: PathBuf,
        checkpoint: PathBuf,
    },
    Spool(Arc<Spool>),
}

impl Source {
    async fn next(&mut self) -> Option<Batch> {
        match self {
            Source::File { rx, .. } => rx.recv().await,
            Source::Spool(spool) => spool.next_batch(SPOOL_BATCH).await.map(|v| Batch {
                items: v
                    .into_iter()
                    .map(|(record, p)| Item {
                        record,
                        pos: Position::Spool(p),
                    })
                    .collect(),
            }),
        }
    }
}

struct Slot {
    record: Record,
    pos: Position,
    acked: bool,
    weight: usize,
}

pub(crate) struct Core {
    config: Config,
    sink: Arc<Sink>,
    acks: mpsc::UnboundedReceiver<Ack>,
    counters: Arc<Counters>,
    spool: Option<Arc<Spool>>,
    inflight: VecDeque<Slot>,
    /// Sequence number of `inflight[0]`.
    base_seq: u64,
    inflight_bytes: usize,
    /// Sequences waiting to be (re)sent, in order.
    retry: VecDeque<u64>,
    retry_at: Option<tokio::time::Instant>,
    retry_backoff: Duration,
    committed_file: Option<(Arc<FileIdentity>, u64)>,
    file_dirty: bool,
    shipped: Shipped,
    identity: ServiceIdentity,
    own: Enricher,
    heartbeat_seq: u64,
    kafka_ok_at: Option<Instant>,
    dropped_reported: u64,
    fatal_reported: bool,
}

impl Core {
    pub(crate) fn new(
        config: Config,
        sink: Arc<Sink>,
        acks: mpsc::UnboundedReceiver<Ack>,
        counters: Arc<Counters>,
        spool: Option<Arc<Spool>>,
    ) -> Self {
        let own = Enricher::new(&config.host_name, "shipper");
        Self {
            config,
            sink,
            acks,
            counters,
            spool,
            inflight: VecDeque::new(),
            base_seq: 0,
            inflight_bytes: 0,
            retry: VecDeque::new(),
            retry_at: None,
            retry_backoff: RETRY_MIN,
            committed_file: None,
            file_dirty: false,
            shipped: Shipped::default(),
            identity: ServiceIdentity::new("shipper", env!("CARGO_PKG_VERSION")),
            own,
            heartbeat_seq: 0,
            kafka_ok_at: None,
            dropped_reported: 0,
            fatal_reported: false,
        }
    }

    fn has_room(&self) -> bool {
        self.inflight.len() < self.config.window_records
            && self.inflight_bytes < self.config.window_bytes
    }

    /// Runs until the input ends (or a shutdown signal in tail/stdin mode), then
    /// waits up to the grace period for acknowledgements and commits.
    /// Returns the exit code: the wrapped child's, or 0.
    pub(crate) async fn run(
        mut self,
        mut source: Source,
        mut signals: mpsc::UnboundedReceiver<ShutdownSignal>,
        mut child: Option<Wrapped>,
    ) -> i32 {
        let mut child_code: Option<i32> = None;
        let mut input_done = false;
        let mut stopping = false;
        let mut signals_open = true;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_checkpoint = Instant::now() + self.config.checkpoint_interval;
        let mut next_stats = self.config.stats_interval.map(|i| Instant::now() + i);
        let mut next_heartbeat = self.config.heartbeat_interval.map(|_| Instant::now());
        let grace = self.config.shutdown_grace;

        loop {
            let finishing = input_done || stopping;
            if finishing && self.inflight.is_empty() && (child.is_none() || child_code.is_some()) {
                break;
            }
            let take_input = !finishing && self.has_room() && self.retry.is_empty();
            let child_running = child.is_some() && child_code.is_none();
            let retry_at = self.retry_at;
            tokio::select! {
                biased;
                Some(ack) = self.acks.recv() => {
                    self.on_ack(ack);
                    while let Ok(ack) = self.acks.try_recv() {
                        self.on_ack(ack);
                    }
                    self.advance();
                }
                sig = signals.recv(), if signals_open => match (sig, child.as_ref()) {
                    (None, _) => signals_open = false,
                    (Some(s), Some(c)) if child_running => c.signal(match s {
                        ShutdownSignal::Terminate => Signal::SIGTERM,
                        ShutdownSignal::Interrupt => Signal::SIGINT,
                    }),
                    (Some(_), _) => {
                        if !stopping {
                            stopping = true;
                            self.heartbeat(HeartbeatStatus::Down);
                            deadline.get_or_insert(tokio::time::Instant::now() + grace);
                        }
                    }
                },
                code = wait_child(child.as_mut()), if child_running => {
                    child_code = Some(code);
                    // The pipes end when the child does (unless it left
                    // descendants holding them): input and acks get the grace.
                    deadline.get_or_insert(tokio::time::Instant::now() + grace);
                }
                batch = source.next(), if take_input => match batch {
                    Some(batch) => self.send_batch(batch),
                    None => {
                        input_done = true;
                        self.heartbeat(HeartbeatStatus::Down);
                        deadline.get_or_insert(tokio::time::Instant::now() + grace);
                    }
                },
                () = sleep_until(retry_at), if retry_at.is_some() => self.resend(),
                _ = ticker.tick() => {
                    let now = Instant::now();
                    if now >= next_checkpoint {
                        self.persist(&source);
                        next_checkpoint = now + self.config.checkpoint_interval;
                    }
                    if let (Some(due), Some(interval)) = (next_heartbeat, self.config.heartbeat_interval) {
                        if now >= due && !finishing {
                            self.heartbeat(HeartbeatStatus::Up);
                            next_heartbeat = Some(now + interval);
                        }
                    }
                    if let (Some(due), Some(interval)) = (next_stats, self.config.stats_interval) {
                        if now >= due {
                            self.snapshot(&source).emit();
                            next_stats = Some(now + interval);
                        }
                    }
                    self.report_loss(&source);
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    if !self.inflight.is_empty() {
                        crate::diag::warn(
                            &format!(
                                "shutdown grace of {grace:?} over with {} records unacknowledged; \
                                 they are sent again on the next start",
                                self.inflight.len()
                            ),
                            &[],
                        );
                    }
                    if child_running {
                        crate::diag::warn("the wrapped process's output did not end within the grace period", &[]);
                    }
                    break;
                }
            }
        }
        self.persist(&source);
        if let Source::File { stop, .. } = &source {
            stop.store(true, Ordering::Relaxed);
        }
        self.snapshot(&source).emit();
        self.sink.purge();
        drop(source);
        match (child_code, child) {
            (Some(code), _) => code,
            // Grace ran out before the child ended (only with descendants holding
            // its pipes, or with a stuck child): it is killed on drop.
            (None, Some(_)) => 70,
            (None, None) => 0,
        }
    }

    fn push(&mut self, record: Record, pos: Position) {
        let seq = self.base_seq + self.inflight.len() as u64;
        let weight = record.weight();
        self.inflight_bytes += weight;
        self.inflight.push_back(Slot {
            record,
            pos,
            acked: false,
            weight,
        });
        if self.retry.is_empty() {
            self.send(seq);
        } else {
            // Keep order behind records that wait for queue space.
            self.retry.push_back(seq);
        }
    }

    fn send_batch(&mut self, batch: Batch) {
        for item in batch.items {
            self.push(item.record, item.pos);
        }
    }

    /// Sends `seq`; on a full local queue schedules it (and everything after it) for retry.
    fn send(&mut self, seq: u64) -> bool {
        let Some(slot) = self.slot(seq) else {
            return true;
        };
        if slot.acked {
            return true;
        }
        match self.sink.send(seq, &slot.record) {
            Ok(()) => true,
            Err(SendError::QueueFull) => {
                self.retry.push_front(seq);
                self.schedule_retry();
                false
            }
            Err(SendError::Fatal(e)) => {
                self.fail(seq, &e);
                true
            }
        }
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Some(tokio::time::Instant::now() + self.retry_backoff);
        self.retry_backoff = (self.retry_backoff * 2).min(RETRY_MAX);
    }

    fn resend(&mut self) {
        self.retry_at = None;
        while let Some(seq) = self.retry.pop_front() {
            if !self.send(seq) {
                return;
            }
        }
        self.retry_backoff = RETRY_MIN;
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        let idx = usize::try_from(seq.checked_sub(self.base_seq)?).ok()?;
        self.inflight.get(idx)
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let idx = usize::try_from(seq.checked_sub(self.base_seq)?).ok()?;
        self.inflight.get_mut(idx)
    }

    fn fail(&mut self, seq: u64, e: &rdkafka::error::KafkaError) {
        self.shipped.failed += 1;
        if !std::mem::replace(&mut self.fatal_reported, true) {
            crate::diag::error(
                &format!(
                    "Kafka refused a record for good ({e}); it is counted in shipper.lines_failed"
                ),
                &[],
            );
        }
        if let Some(slot) = self.slot_mut(seq) {
            slot.acked = true;
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        match ack.result {
            Ok(()) => {
                self.kafka_ok_at = Some(Instant::now());
                if let Some(slot) = self.slot_mut(ack.seq) {
                    if !slot.acked {
                        slot.acked = true;
                        let bytes = slot.record.payload.len() as u64;
                        self.shipped.lines += 1;
                        self.shipped.bytes += bytes;
                    }
                }
            }
            Err(e) if sink::is_purge(&e) => {}
            Err(e) if sink::is_retryable(&e) => {
                if self.slot(ack.seq).is_some_and(|s| !s.acked) {
                    self.shipped.retries += 1;
                    if self.shipped.retries == 1 || self.shipped.retries.is_power_of_two() {
                        crate::diag::warn(
                            &format!("delivery failed ({e}); the record is sent again"),
                            &[("shipper.retries", json!(self.shipped.retries))],
                        );
                    }
                    let pos = self.retry.partition_point(|&s| s < ack.seq);
                    self.retry.insert(pos, ack.seq);
                    if self.retry_at.is_none() {
                        self.schedule_retry();
                    }
                }
            }
            Err(e) => self.fail(ack.seq, &e),
        }
    }

    /// Pops the acknowledged prefix of the window and moves the commit positions.
    fn advance(&mut self) {
        let mut spool_pos: Option<SpoolPos> = None;
        while self.inflight.front().is_some_and(|s| s.acked) {
            let Some(slot) = self.inflight.pop_front() else {
                break;
            };
            self.base_seq += 1;
            self.inflight_bytes -= slot.weight;
            match slot.pos {
                Position::File(ident, offset) => {
                    self.committed_file = Some((ident, offset));
                    self.file_dirty = true;
                }
                Position::Spool(p) => spool_pos = Some(p),
                Position::Internal => {}
            }
        }
        if let (Some(p), Some(spool)) = (spool_pos, &self.spool) {
            spool.commit(p);
        }
    }

    /// Saves the tail checkpoint / spool position if they moved.
    fn persist(&mut self, source: &Source) {
        if let (
            Source::File {
                path, checkpoint, ..
            },
            Some((ident, offset)),
            true,
        ) = (source, &self.committed_file, self.file_dirty)
        {
            let cp = FileCheckpoint {
                path: path.clone(),
                file: (**ident).clone(),
                offset: *offset,
            };
            match checkpoint::save(checkpoint, &cp) {
                Ok(()) => self.file_dirty = false,
                Err(e) => crate::diag::error(&format!("saving the checkpoint failed: {e}"), &[]),
            }
        }
        if let Some(spool) = &self.spool {
            if let Err(e) = spool.persist() {
                crate::diag::error(&format!("saving the spool position failed: {e}"), &[]);
            }
        }
    }

    /// Our own heartbeat, so the monitor sees a dead shipper too. Skipped when
    /// the window is full: a heartbeat is state, not data.
    fn heartbeat(&mut self, status: HeartbeatStatus) {
        let Some(interval) = self.config.heartbeat_interval else {
            return;
        };
        if !self.has_room() {
            return;
        }
        self.heartbeat_seq += 1;
        let hb = Heartbeat {
            timestamp: SystemTime::now(),
            service_name: self.identity.name.clone(),
            instance_id: self.identity.instance_id.clone(),
            version: self.identity.version.clone(),
            status,
            sequence: self.heartbeat_seq,
            interval,
            target_service: Some(self.config.service_name.clone()),
        };
        self.push_own(hb.to_json_line());
    }

    fn push_own(&mut self, line: String) {
        let now = meshwatch_ecs::format_timestamp(SystemTime::now());
        let record = self.own.encode(&RawLine::plain(line.as_bytes()), &now);
        self.push(record, Position::Internal);
    }

    /// Once Kafka acknowledges again after the spool dropped lines, ship one
    /// event saying how many were lost.
    fn report_loss(&mut self, source: &Source) {
        let Source::Spool(spool) = source else { return };
        let (dropped, last_drop) = spool.dropped();
        if dropped <= self.dropped_reported {
            return;
        }
        let kafka_back = match (self.kafka_ok_at, last_drop) {
            (Some(ok), Some(drop)) => ok > drop,
            _ => false,
        };
        if !kafka_back || !self.has_room() {
            return;
        }
        let lost = dropped - self.dropped_reported;
        self.dropped_reported = dropped;
        let message = format!(
            "shipper spool was full ({} bytes): {lost} lines of {} were dropped",
            self.config.spool_max_bytes, self.config.service_name
        );
        crate::diag::error(&message, &[("shipper.lines_dropped", json!(dropped))]);
        let event = json!({
            "@timestamp": meshwatch_ecs::format_timestamp(SystemTime::now()),
            "log.level": "error",
            "message": message,
            "ecs.version": meshwatch_ecs::ECS_VERSION,
            "service.name": "shipper",
            "service.instance.id": self.identity.instance_id,
            "event.dataset": crate::diag::DATASET,
            "event.kind": "alert",
            "shipper.target_service": self.config.service_name,
            "shipper.lines_dropped": lost,
            "shipper.lines_dropped_total": dropped,
            "tags": [LOSS_TAG],
        });
        self.push_own(event.to_string());
    }

    fn snapshot(&self, source: &Source) -> Snapshot {
        let (lag_bytes, spool_bytes, dropped) = match source {
            Source::File { path, .. } => {
                let lag = std::fs::metadata(path)
                    .ok()
                    .map(|m| match &self.committed_file {
                        Some((id, off)) if id.ino == m.ino() && id.dev == m.dev() => {
                            m.len().saturating_sub(*off)
                        }
                        _ => m.len(),
                    });
                (lag, None, 0)
            }
            Source::Spool(spool) => (Some(spool.bytes()), Some(spool.bytes()), spool.dropped().0),
        };
        Snapshot {
            lines_read: self.counters.lines_read(),
            bytes_read: self.counters.bytes_read(),
            shipped: self.shipped,
            in_flight: self.inflight.len(),
            in_flight_bytes: self.inflight_bytes,
            lag_bytes,
            spool_bytes,
            dropped,
        }
    }
}

/// Tag on the event that reports lines dropped at the spool bound.
pub const LOSS_TAG: &str = "meshwatch_shipper_data_loss";

async fn wait_child(child: Option<&mut Wrapped>) -> i32 {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

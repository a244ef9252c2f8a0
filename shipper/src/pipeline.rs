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

use crate::checkpoint::{self, DoneFile, FileCheckpoint, FileIdentity, DONE_KEPT};
use crate::config::Config;
use crate::event::{Enricher, RawLine, Record, FIELD_ORIGINAL_BYTES};
use crate::event_id::{fnv64, EventId};
use crate::identity::{Agent, Speaker};
use crate::input::exec::Wrapped;
use crate::input::{Batch, Position};
use crate::route::Destination;
use crate::sink::{self, Ack, SendError, Sink};
use crate::spool::{Incident, Spool, SpoolItem, SpoolPos};
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

/// What an input hands the loop at once.
pub(crate) enum Input {
    Batch(Batch),
    Spool(Vec<SpoolItem>),
}

impl Source {
    async fn next(&mut self) -> Option<Input> {
        match self {
            Source::File { rx, .. } => rx.recv().await.map(Input::Batch),
            Source::Spool(spool) => spool.next_batch(SPOOL_BATCH).await.map(Input::Spool),
        }
    }
}

struct Slot {
    record: Record,
    pos: Position,
    acked: bool,
    weight: usize,
    /// This record already replaces one Kafka refused.
    replacement: bool,
}

/// Tag on the event that replaces a record Kafka refused for good.
pub const TAG_RECORD_REFUSED: &str = "meshwatch_shipper_record_refused";
/// Tag on the report of a damaged spool record or stretch.
pub const TAG_SPOOL_CORRUPT: &str = "meshwatch_shipper_spool_corrupt";
/// Tag on the report of a torn spool tail cut on start.
pub const TAG_SPOOL_TORN: &str = "meshwatch_shipper_spool_torn_tail";
/// How much of a refused record its replacement keeps (`event.original`).
const REFUSED_KEEP_BYTES: usize = 1024;

/// What the loop is built from besides the configuration.
pub(crate) struct Parts {
    pub sink: Arc<Sink>,
    pub acks: mpsc::UnboundedReceiver<Ack>,
    pub counters: Arc<Counters>,
    pub spool: Option<Arc<Spool>>,
    /// The shipper's own identity (`service.name` "shipper"; its instance id is
    /// the `agent.ephemeral_id` of every record).
    pub identity: ServiceIdentity,
    pub agent: Agent,
    /// The finished generations of the loaded checkpoint (tail mode).
    pub done_files: Vec<DoneFile>,
    /// The generation and offset of the loaded checkpoint: when the tail moves
    /// on from it, it joins `done_files` even if none of its lines is shipped again.
    pub resumed_file: Option<(FileIdentity, u64)>,
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
    /// Generations finished and acknowledged, oldest first (the checkpoint's `done`).
    done_files: Vec<DoneFile>,
    file_dirty: bool,
    /// The checkpoint save in progress: its fsyncs run on a blocking thread,
    /// not on the loop, which keeps sending and taking acks meanwhile (a busy
    /// disk can take hundreds of ms).
    saving: Option<tokio::task::JoinHandle<()>>,
    /// Set by a background save that failed: the checkpoint is dirty again.
    save_failed: Arc<AtomicBool>,
    shipped: Shipped,
    identity: ServiceIdentity,
    agent: Agent,
    own: Enricher,
    heartbeat_seq: u64,
    refused_reported: u64,
    kafka_ok_at: Option<Instant>,
    dropped_reported: u64,
}

impl Core {
    pub(crate) fn new(config: Config, parts: Parts) -> Self {
        let Parts {
            sink,
            acks,
            counters,
            spool,
            identity,
            agent,
            done_files,
            resumed_file,
        } = parts;
        let own = Enricher::new(
            &config.host_name,
            Speaker::trusted(&identity.name),
            &agent,
            config.max_record_bytes,
        );
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
            committed_file: resumed_file.map(|(ident, offset)| (Arc::new(ident), offset)),
            done_files,
            file_dirty: false,
            saving: None,
            save_failed: Arc::new(AtomicBool::new(false)),
            shipped: Shipped::default(),
            identity,
            agent,
            own,
            heartbeat_seq: 0,
            refused_reported: 0,
            kafka_ok_at: None,
            dropped_reported: 0,
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
                    Some(input) => self.take(input),
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
                        self.persist_in_background(&source);
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
        if let Some(saving) = self.saving.take() {
            let _ = saving.await;
        }
        if self.save_failed.swap(false, Ordering::Relaxed) {
            self.file_dirty = true;
        }
        self.persist(&source);
        if let Some(spool) = &self.spool {
            spool.sync_now();
        }
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
            replacement: false,
        });
        if self.retry.is_empty() {
            self.send(seq);
        } else {
            // Keep order behind records that wait for queue space.
            self.retry.push_back(seq);
        }
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Batch(batch) => {
                for item in batch.items {
                    self.push(item.record, item.pos);
                }
            }
            Input::Spool(items) => {
                for item in items {
                    match item {
                        SpoolItem::Record(record, p) => self.push(record, Position::Spool(p)),
                        // In the damaged record's place: the position moves past
                        // the damage only once the report is acknowledged.
                        SpoolItem::Incident(incident, p) => {
                            let record = self.incident_event(&incident);
                            self.push(record, Position::Spool(p));
                        }
                    }
                }
            }
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
            Err(SendError::Retry(e)) => {
                // A topic not created yet or missing ACLs: the record and
                // everything after it wait (reported), never skipped.
                self.shipped.retries += 1;
                if self.shipped.retries == 1 || self.shipped.retries.is_power_of_two() {
                    crate::diag::warn(
                        &format!(
                            "Kafka does not take records now ({e}); they wait and are sent again"
                        ),
                        &[("shipper.retries", json!(self.shipped.retries))],
                    );
                }
                self.retry.push_front(seq);
                self.schedule_retry();
                false
            }
            Err(SendError::Fatal(e)) => {
                self.refuse(seq, &e);
                true
            }
        }
    }

    /// Kafka refused the record for good (too large for the topic, invalid…):
    /// in its place goes a small event saying so, with its `event.id`, size and
    /// first bytes. Only if that is refused too is the record counted as failed.
    fn refuse(&mut self, seq: u64, e: &rdkafka::error::KafkaError) {
        let Some(slot) = self.slot(seq) else { return };
        if slot.replacement || slot.acked {
            self.fail(seq, e);
            return;
        }
        let original = slot.record.clone();
        let replacement = self.refusal_event(&original, e);
        self.refused_reported += 1;
        crate::diag::error(
            &format!(
                "Kafka refused a record of {} bytes ({e}); an event saying so is shipped in its place",
                original.payload.len()
            ),
            &[("shipper.records_refused", json!(self.refused_reported))],
        );
        if let Some(slot) = self.slot_mut(seq) {
            let weight = replacement.weight();
            let old = std::mem::replace(&mut slot.weight, weight);
            slot.record = replacement;
            slot.replacement = true;
            self.inflight_bytes = self.inflight_bytes - old + weight;
        }
        self.send(seq);
    }

    fn refusal_event(&mut self, original: &Record, e: &rdkafka::error::KafkaError) -> Record {
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&original.payload).unwrap_or_default();
        let text = |k: &str| parsed.get(k).and_then(serde_json::Value::as_str);
        let id = text(crate::event_id::FIELD)
            .and_then(|h| {
                let (a, b) = (h.get(..16)?, h.get(16..32)?);
                Some(EventId::new(
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
            .unwrap_or_else(|| {
                EventId::new(
                    fnv64(&[b"refused", self.agent.id.to_string().as_bytes()]),
                    fnv64(&[&original.payload]),
                )
            });
        let head = String::from_utf8_lossy(
            &original.payload[..original.payload.len().min(REFUSED_KEEP_BYTES)],
        )
        .into_owned();
        let service = text(meshwatch_ecs::field::SERVICE_NAME).unwrap_or(&self.config.service_name);
        let mut event = json!({
            "@timestamp": text(meshwatch_ecs::field::TIMESTAMP)
                .map_or_else(|| meshwatch_ecs::format_timestamp(SystemTime::now()), str::to_owned),
            "log.level": "error",
            "message": format!(
                "Kafka refused a record of {} bytes for good ({e}); its first {} bytes are in event.original",
                original.payload.len(),
                head.len()
            ),
            "ecs.version": meshwatch_ecs::ECS_VERSION,
            "service.name": service,
            "event.dataset": format!("{service}.log"),
            "error.message": e.to_string(),
            "event.original": head,
            FIELD_ORIGINAL_BYTES: original.payload.len(),
            "tags": [TAG_RECORD_REFUSED],
        });
        if let (Some(inst), Some(obj)) = (
            text(meshwatch_ecs::field::SERVICE_INSTANCE_ID),
            event.as_object_mut(),
        ) {
            obj.insert(
                meshwatch_ecs::field::SERVICE_INSTANCE_ID.into(),
                inst.into(),
            );
        }
        let mut record = self.encode_own(&event.to_string(), id);
        record.key = original.key.clone();
        record.destination = Destination::Logs;
        record
    }

    /// A report of spool damage, shipped in the damage's place.
    fn incident_event(&mut self, incident: &Incident) -> Record {
        let (tag, segment, offset, bytes, seq) = match *incident {
            Incident::TornTail {
                segment,
                offset,
                bytes,
            } => (TAG_SPOOL_TORN, segment, offset, bytes, None),
            Incident::Corrupt {
                segment,
                offset,
                bytes,
                seq,
            } => (TAG_SPOOL_CORRUPT, segment, offset, bytes, seq),
        };
        let mut event = json!({
            "@timestamp": meshwatch_ecs::format_timestamp(SystemTime::now()),
            "log.level": "error",
            "message": incident.message(),
            "ecs.version": meshwatch_ecs::ECS_VERSION,
            "service.name": self.identity.name,
            "service.instance.id": self.identity.instance_id,
            "event.dataset": crate::diag::DATASET,
            "event.kind": "alert",
            "shipper.target_service": self.config.service_name,
            "shipper.spool.segment": segment,
            "shipper.spool.offset": offset,
            "shipper.spool.skipped_bytes": bytes,
            "tags": [tag],
        });
        if let (Some(seq), Some(obj)) = (seq, event.as_object_mut()) {
            obj.insert("shipper.spool.sequence".into(), seq.into());
        }
        // The same damage reported twice (a restart before the report was
        // acknowledged) has the same id.
        let id = EventId::new(
            fnv64(&[b"spool-incident", self.agent.id.to_string().as_bytes()]),
            fnv64(&[
                tag.as_bytes(),
                &segment.to_le_bytes(),
                &offset.to_le_bytes(),
            ]),
        );
        self.encode_own(&event.to_string(), id)
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
        let n = self.shipped.failed;
        if n == 1 || n.is_power_of_two() {
            crate::diag::error(
                &format!(
                    "Kafka refused a record for good ({e}), and the event reporting it too; \
                     it is counted in shipper.lines_failed"
                ),
                &[("shipper.lines_failed", json!(n))],
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
            Err(e) if !sink::is_retryable(&e) => self.refuse(ack.seq, &e),
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

    /// Encodes one of the shipper's own lines with its `event.id`.
    fn encode_own(&mut self, line: &str, id: EventId) -> Record {
        let now = meshwatch_ecs::format_timestamp(SystemTime::now());
        let mut raw = RawLine::plain(line.as_bytes());
        raw.id = Some(id);
        self.own.encode(&raw, &now)
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
                    if let Some((old, size)) = &self.committed_file {
                        if !old.same_generation(&ident) {
                            // The tail moves on only after a generation's last line.
                            self.done_files.retain(|d| !d.file.same_generation(old));
                            self.done_files.push(DoneFile {
                                file: (**old).clone(),
                                size: *size,
                            });
                            let excess = self.done_files.len().saturating_sub(DONE_KEPT);
                            self.done_files.drain(..excess);
                        }
                    }
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

    /// The tail checkpoint to save, if it moved since the last save.
    fn checkpoint_due(&self, source: &Source) -> Option<(PathBuf, FileCheckpoint)> {
        let (
            Source::File {
                path, checkpoint, ..
            },
            Some((ident, offset)),
            true,
        ) = (source, &self.committed_file, self.file_dirty)
        else {
            return None;
        };
        let cp = FileCheckpoint {
            path: path.clone(),
            file: (**ident).clone(),
            offset: *offset,
            done: self.done_files.clone(),
        };
        Some((checkpoint.clone(), cp))
    }

    /// The periodic save, on a blocking thread, one save at a time: the tail
    /// checkpoint (a failed save leaves it dirty for the next tick) and the
    /// spool position (with the deletion of acknowledged segments). Their
    /// fsyncs never run on the loop, which keeps sending and taking acks
    /// meanwhile: a busy disk can take a second for one fsync.
    fn persist_in_background(&mut self, source: &Source) {
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        if self.save_failed.swap(false, Ordering::Relaxed) {
            self.file_dirty = true;
        }
        let checkpoint = self.checkpoint_due(source);
        if checkpoint.is_some() {
            self.file_dirty = false;
        }
        let spool = self.spool.clone().filter(|s| s.persist_due());
        if checkpoint.is_none() && spool.is_none() {
            return;
        }
        let failed = self.save_failed.clone();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            if let Some((path, cp)) = checkpoint {
                if save_checkpoint(&path, &cp) {
                    failed.store(true, Ordering::Relaxed);
                }
            }
            if let Some(spool) = spool {
                persist_spool(&spool);
            }
        }));
    }

    /// Saves the tail checkpoint / spool position if they moved (here, blocking).
    fn persist(&mut self, source: &Source) {
        if let Some((path, cp)) = self.checkpoint_due(source) {
            if !save_checkpoint(&path, &cp) {
                self.file_dirty = false;
            }
        }
        if let Some(spool) = &self.spool {
            persist_spool(spool);
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
        let seq = self.heartbeat_seq;
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
        let id = EventId::new(
            fnv64(&[b"heartbeat", self.identity.instance_id.as_bytes()]),
            seq,
        );
        let record = self.encode_own(&hb.to_json_line(), id);
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
        let id = EventId::new(
            fnv64(&[b"spool-loss", self.identity.instance_id.as_bytes()]),
            dropped,
        );
        let record = self.encode_own(&event.to_string(), id);
        self.push(record, Position::Internal);
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

/// Saves a checkpoint; true when it failed (reported).
fn save_checkpoint(path: &std::path::Path, cp: &FileCheckpoint) -> bool {
    match checkpoint::save(path, cp) {
        Ok(()) => false,
        Err(e) => {
            crate::diag::error(&format!("saving the checkpoint failed: {e}"), &[]);
            true
        }
    }
}

/// Saves the spool position if it moved (blocking); a failure is reported and
/// retried on the next save.
fn persist_spool(spool: &Spool) {
    if let Err(e) = spool.persist() {
        crate::diag::error(&format!("saving the spool position failed: {e}"), &[]);
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

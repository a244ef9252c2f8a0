//! The bounded disk spool of the wrap and stdin inputs: a write-ahead log of
//! encoded records in checksummed frames ([`frame`]) in segment files
//! ([`segment`]) under `<data-dir>/spool/`.
//!
//! Readers of the wrapped process's pipes append every record here (a file
//! write, never a wait on Kafka), and the shipping loop reads it back in order.
//! The read position is committed only once Kafka acknowledged every record
//! before it, so unacknowledged records survive a restart and are replayed,
//! each with the same `event.id` (the data directory's spool source and the
//! record's sequence number, which is stored in its frame).
//!
//! Durability ([`FsyncPolicy`]): appends reach the page cache at once, so a
//! kill -9 of the shipper loses nothing appended; a power cut loses what was
//! appended since the last fsync: at most one interval (`Every`), nothing
//! (`Always`, at the price of an fsync per pipe read).
//!
//! Damage: a torn tail (a crash in the middle of an append) is cut on start;
//! a damaged frame anywhere is detected by its checksums when read, skipped,
//! and reported as an [`Incident`] in its place; the reader resynchronises on
//! the next good frame, so everything else is delivered.
//!
//! Bound: `max_bytes` of unacknowledged segments on disk; a record that would
//! exceed it is dropped and counted ([`Spool::dropped`]).

pub mod frame;
mod legacy;
pub mod segment;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::checkpoint::write_atomic;
use crate::event::Record;
use crate::event_id::EventId;
use frame::Decoded;

/// A segment is closed and a new one started once it reaches this size.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// At most this many bytes are read from disk per read.
const READ_CHUNK: usize = 512 << 10;
const POSITION_FILE: &str = "position";
/// Sequence numbers are reserved on disk this many at a time, so that none is
/// ever used twice, even after a power cut took unsynced appends away.
const SEQ_RESERVATION: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// When appended records are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append, before the next read of the pipe.
    Always,
    /// By a background thread at this interval.
    Every(Duration),
}

/// How the spool is set up.
#[derive(Clone, Copy, Debug)]
pub struct SpoolOptions {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// The first half of every spooled record's `event.id` (the data directory's agent id).
    pub id_source: u64,
}

/// A committed or readable position: segment id and the byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpoolPos {
    pub segment: u64,
    pub offset: u64,
}

/// Damage found in the spool, reported in place of what it destroyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incident {
    /// A frame cut short at the end of a segment (the shipper stopped in the
    /// middle of an append, or a power cut lost the end of a write): found
    /// on start and cut off.
    TornTail {
        segment: u64,
        offset: u64,
        bytes: u64,
    },
    /// Bytes that are no good frame, skipped. `seq` is known when only the
    /// body of one frame failed its checksum (exactly that record is lost).
    Corrupt {
        segment: u64,
        offset: u64,
        bytes: u64,
        seq: Option<u64>,
    },
}

/// What the reader hands over, in spool order.
#[derive(Debug)]
pub enum SpoolItem {
    /// A record (its `event.id` added) and the position just after it.
    Record(Record, SpoolPos),
    /// Damage, and the position just after it.
    Incident(Incident, SpoolPos),
}

/// See the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    state: Mutex<State>,
    /// Held while the position file is written (taken before `state`, never
    /// after): a save's fsync does not hold `state`, so appends and reads go on
    /// meanwhile, and saves land in order (a reservation is never overwritten
    /// by an older one).
    saving: Mutex<()>,
    readable: Notify,
    fsync: FsyncPolicy,
    id_source: u64,
}

#[derive(Debug)]
struct Writer {
    id: u64,
    file: Arc<File>,
}

#[derive(Debug)]
struct State {
    max_bytes: u64,
    segment_bytes: u64,
    /// Segment id → size on disk, for every segment not yet deleted.
    segments: BTreeMap<u64, u64>,
    total_bytes: u64,
    writer: Option<Writer>,
    next_segment: u64,
    next_seq: u64,
    /// Sequence numbers below this are reserved on disk.
    reserved_seq: u64,
    read: SpoolPos,
    read_file: Option<(u64, File)>,
    committed: SpoolPos,
    persisted: Option<(SpoolPos, u64)>,
    writers: usize,
    dropped: u64,
    last_drop: Option<Instant>,
    write_error_reported: bool,
    /// Found on start; handed out before anything else.
    pending: Vec<Incident>,
    /// Closed segments whose end may not be on disk yet.
    unsynced: Vec<Arc<File>>,
    writer_dirty: bool,
    dir_dirty: bool,
    /// Appends written so far, and how many of them an fsync has completed
    /// for: an `Always` append returns only once its own number is covered,
    /// however the fsyncs of concurrent appenders interleave.
    appended: u64,
    synced: u64,
    /// fsyncs of segment files done (for tests of the policy).
    fsyncs: u64,
    /// The start of a damaged stretch being skipped (reported where it ends).
    damage: Option<SpoolPos>,
    /// Acknowledged segments, deleted by the next [`Spool::persist`].
    deletable: Vec<u64>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, resuming after the last committed
    /// position. A torn tail is cut here and reported by the first read.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Self, SpoolError> {
        let io_err = |source| SpoolError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let saved = read_position(&dir.join(POSITION_FILE));
        let legacy = legacy::take(dir, &saved).map_err(io_err)?;
        let (committed, reserved) = match saved {
            // Sequence numbers reserved by an unfinished carry-over stay used.
            Saved::Current { reserved, .. } if !legacy.is_empty() => {
                (SpoolPos::default(), reserved)
            }
            Saved::Current { pos, reserved } => (pos, reserved),
            _ => (SpoolPos::default(), 0),
        };
        let mut segments = segment::list(dir, segment::EXTENSION).map_err(io_err)?;
        if !legacy.is_empty() {
            // A carry-over to do; what an unfinished one wrote starts over.
            for id in std::mem::take(&mut segments).into_keys() {
                let _ = fs::remove_file(segment::path(dir, id));
            }
        }
        for id in segments
            .range(..committed.segment)
            .map(|(id, _)| *id)
            .collect::<Vec<_>>()
        {
            segments.remove(&id);
            let _ = fs::remove_file(segment::path(dir, id));
        }
        let mut pending = Vec::new();
        let mut last_seq = None;
        if let Some((&last, &size)) = segments.iter().next_back() {
            let path = segment::path(dir, last);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err)?;
            let scan = segment::scan(&file).map_err(io_err)?;
            last_seq = scan.last_seq;
            if scan.valid_end < size {
                file.set_len(scan.valid_end)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err)?;
                segments.insert(last, scan.valid_end);
                let incident = Incident::TornTail {
                    segment: last,
                    offset: scan.valid_end,
                    bytes: size - scan.valid_end,
                };
                crate::diag::error(&incident.message(), &[]);
                pending.push(incident);
            }
        }
        let total_bytes = segments.values().sum();
        let next_segment = segments
            .keys()
            .next_back()
            .map_or(committed.segment.max(1), |last| last + 1);
        let next_seq = reserved.max(last_seq.map_or(0, |s| s.saturating_add(1)));
        let spool = Self {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                max_bytes: opts.max_bytes,
                // At most a quarter of the bound per segment: only whole
                // segments are freed, so a larger one would keep acknowledged
                // records counted against the bound and drop new lines forever.
                segment_bytes: opts.segment_bytes.min(opts.max_bytes / 4).max(1),
                segments,
                total_bytes,
                writer: None,
                next_segment,
                next_seq,
                reserved_seq: next_seq,
                read: committed,
                read_file: None,
                committed,
                persisted: None,
                writers: 0,
                dropped: 0,
                last_drop: None,
                write_error_reported: false,
                pending,
                unsynced: Vec::new(),
                writer_dirty: false,
                dir_dirty: false,
                appended: 0,
                synced: 0,
                fsyncs: 0,
                damage: None,
                deletable: Vec::new(),
            }),
            readable: Notify::new(),
            saving: Mutex::new(()),
            fsync: opts.fsync,
            id_source: opts.id_source,
        };
        {
            let mut st = spool.lock();
            st.reserve(&spool.dir, 1).map_err(io_err)?;
        }
        if !legacy.is_empty() {
            spool.migrate(legacy).map_err(io_err)?;
        }
        Ok(spool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent counters; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the background fsync of [`FsyncPolicy::Every`] (no-op for
    /// `Always`). The thread ends once the spool is dropped.
    pub fn start_syncer(self: &Arc<Self>) -> io::Result<()> {
        let FsyncPolicy::Every(interval) = self.fsync else {
            return Ok(());
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("spool-fsync".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(spool) = weak.upgrade() else { return };
                spool.sync_now();
            })
            .map(|_| ())
    }

    /// Forces everything appended so far to disk.
    pub fn sync_now(&self) {
        self.sync_upto(None);
    }

    /// Forces appends to disk; with `Some(n)`, until append `n` is covered
    /// even when another caller took the dirty files first (its fsync may not
    /// have finished): then the writer is fsynced again here.
    fn sync_upto(&self, own: Option<u64>) {
        let (files, dir, upto) = {
            let mut st = self.lock();
            let mut files = std::mem::take(&mut st.unsynced);
            let dirty = std::mem::take(&mut st.writer_dirty);
            let behind = own.is_some_and(|n| st.synced < n);
            if dirty || behind {
                if let Some(w) = &st.writer {
                    files.push(w.file.clone());
                }
            }
            (files, std::mem::take(&mut st.dir_dirty), st.appended)
        };
        let mut ok = true;
        let n = u64_of(files.len());
        for f in files {
            if let Err(e) = f.sync_data() {
                ok = false;
                crate::diag::error(&format!("fsync of the spool failed: {e}"), &[]);
            }
        }
        if dir {
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                crate::diag::error(&format!("fsync of {} failed: {e}", self.dir.display()), &[]);
            }
        }
        let mut st = self.lock();
        st.fsyncs += n;
        if ok {
            st.synced = st.synced.max(upto);
        }
    }

    /// Appends written and appends covered by a completed fsync, and fsyncs done.
    #[cfg(test)]
    fn sync_counts(&self) -> (u64, u64, u64) {
        let st = self.lock();
        (st.appended, st.synced, st.fsyncs)
    }

    /// Registers a writer; the spool reports its end only after every writer is done.
    pub fn add_writer(&self) {
        self.lock().writers += 1;
    }

    /// A writer finished (its input reached end of stream).
    pub fn writer_done(&self) {
        let mut st = self.lock();
        st.writers = st.writers.saturating_sub(1);
        drop(st);
        self.readable.notify_one();
    }

    /// Appends records, each under the next sequence number; never waits for
    /// Kafka (with [`FsyncPolicy::Always`] it waits for the disk). Returns how
    /// many were dropped because the bound was reached or the disk write failed.
    pub fn append(&self, records: &[Record]) -> usize {
        if records.is_empty() {
            return 0;
        }
        let mut st = self.lock();
        // A new reservation writes the position file: take `saving` first.
        let _saving = if st.needs_reservation(u64_of(records.len())) {
            drop(st);
            let saving = self.saving_lock();
            st = self.lock();
            Some(saving)
        } else {
            None
        };
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 96).sum());
        let mut dropped = 0;
        let mut kept = 0u64;
        let mut error = None;
        if let Err(e) = st.reserve(&self.dir, u64_of(records.len())) {
            error = Some(e);
        }
        for r in records.iter().take_while(|_| error.is_none()) {
            let len = match frame::encoded_len(r) {
                Ok(len) => u64_of(len),
                Err(e) => {
                    crate::diag::error(&format!("a record cannot be spooled: {e}"), &[]);
                    dropped += 1;
                    continue;
                }
            };
            if st.total_bytes + kept + len > st.max_bytes {
                dropped += 1;
                continue;
            }
            let seq = st.next_seq;
            if frame::encode(r, seq, &mut buf).is_ok() {
                st.next_seq += 1;
                kept += len;
            } else {
                dropped += 1;
            }
        }
        if error.is_none() && !buf.is_empty() {
            if let Err(e) = st.write(&self.dir, &buf) {
                error = Some(e);
            }
        }
        if let Some(e) = error {
            if !std::mem::replace(&mut st.write_error_reported, true) {
                crate::diag::error(
                    &format!(
                        "cannot write to the spool in {}: {e}; lines are dropped and counted",
                        self.dir.display()
                    ),
                    &[],
                );
            }
            dropped = records.len();
        }
        if dropped > 0 {
            st.dropped += u64_of(dropped);
            st.last_drop = Some(Instant::now());
        }
        let own = st.appended;
        drop(st);
        if self.fsync == FsyncPolicy::Always {
            self.sync_upto(Some(own));
        }
        self.readable.notify_one();
        dropped
    }

    /// The next items in spool order, each with the position just after it.
    /// Waits while the spool is empty; `None` once every writer is done and
    /// all is read.
    pub async fn next_batch(&self, max_records: usize) -> Option<Vec<SpoolItem>> {
        loop {
            let notified = self.readable.notified();
            {
                let mut st = self.lock();
                let batch = st.read_batch(&self.dir, max_records, self.id_source);
                if !batch.is_empty() {
                    return Some(batch);
                }
                if st.writers == 0 && st.fully_read() {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Every record up to `pos` is acknowledged: segments before it can go.
    pub fn commit(&self, pos: SpoolPos) {
        let mut st = self.lock();
        if pos <= st.committed {
            return;
        }
        st.committed = pos;
        let done: Vec<u64> = st
            .segments
            .range(..pos.segment)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(size) = st.segments.remove(&id) {
                st.total_bytes -= size;
            }
            if matches!(st.read_file, Some((rid, _)) if rid == id) {
                st.read_file = None;
            }
            // Deleted by the next `persist`, after the position that no longer
            // needs it is saved (and off the caller's thread: an unlink of a
            // segment can take tens of ms on a busy disk).
            st.deletable.push(id);
        }
    }

    /// Whether [`Spool::persist`] has anything to do.
    pub fn persist_due(&self) -> bool {
        let st = self.lock();
        st.persisted != Some((st.committed, st.reserved_seq)) || !st.deletable.is_empty()
    }

    /// Saves the committed position (atomically) if it moved, then deletes
    /// the segments acknowledged before it. Blocks on the disk: the shipping
    /// loop calls it from a blocking thread. The file is written with `state`
    /// released (see `saving`).
    pub fn persist(&self) -> Result<(), SpoolError> {
        let _saving = self.saving_lock();
        let (now, line, deletable) = {
            let mut st = self.lock();
            let now = (st.committed, st.reserved_seq);
            let line = (st.persisted != Some(now)).then(|| st.position_line());
            (now, line, std::mem::take(&mut st.deletable))
        };
        if let Some(line) = line {
            if let Err(source) = write_atomic(&self.dir.join(POSITION_FILE), line.as_bytes()) {
                // Kept for the next save: never deleted before their position is saved.
                self.lock().deletable.extend(deletable);
                return Err(SpoolError::Io {
                    path: self.dir.join(POSITION_FILE),
                    source,
                });
            }
            self.lock().persisted = Some(now);
        }
        for id in deletable {
            let _ = fs::remove_file(segment::path(&self.dir, id));
        }
        Ok(())
    }

    fn saving_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.saving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes on disk not yet acknowledged (approximately: whole segments).
    pub fn bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Records dropped since start because the bound was exceeded, and when the last was.
    pub fn dropped(&self) -> (u64, Option<Instant>) {
        let st = self.lock();
        (st.dropped, st.last_drop)
    }

    /// Re-appends the records of a spool in the format before checksums.
    fn migrate(&self, records: Vec<Record>) -> io::Result<()> {
        let n = records.len();
        for chunk in records.chunks(1024) {
            let dropped = self.append(chunk);
            if dropped > 0 {
                return Err(io::Error::other(format!(
                    "{dropped} records of the old spool did not fit the new one"
                )));
            }
        }
        self.sync_now();
        let _saving = self.saving_lock();
        self.lock().save_position(&self.dir)?;
        legacy::complete(&self.dir)?;
        crate::diag::info(
            &format!("spool: {n} records of the previous format carried over"),
            &[],
        );
        Ok(())
    }
}

impl Incident {
    /// One sentence for people.
    pub fn message(&self) -> String {
        match self {
            Incident::TornTail {
                segment,
                offset,
                bytes,
            } => format!(
                "spool segment {segment} ended in a torn record ({bytes} bytes at offset {offset}): \
                 the shipper stopped in the middle of an append; the partial record is lost and was cut off"
            ),
            Incident::Corrupt {
                segment,
                offset,
                bytes,
                seq: Some(seq),
            } => format!(
                "spool record {seq} in segment {segment} at offset {offset} ({bytes} bytes) failed its checksum \
                 and was skipped; the records around it are delivered"
            ),
            Incident::Corrupt {
                segment,
                offset,
                bytes,
                seq: None,
            } => format!(
                "{bytes} damaged bytes in spool segment {segment} at offset {offset} were skipped; \
                 the records in them are lost, the good records after them are delivered"
            ),
        }
    }
}

impl State {
    /// Makes sure `n` more sequence numbers are reserved on disk.
    /// Whether appending `n` records needs a new reservation (a save).
    fn needs_reservation(&self, n: u64) -> bool {
        self.next_seq.saturating_add(n) > self.reserved_seq || self.persisted.is_none()
    }

    /// Callers that append hold `Spool::saving`.
    fn reserve(&mut self, dir: &Path, n: u64) -> io::Result<()> {
        if !self.needs_reservation(n) {
            return Ok(());
        }
        self.reserved_seq = self
            .next_seq
            .saturating_add(n)
            .saturating_add(SEQ_RESERVATION);
        self.save_position(dir)?;
        self.persisted = Some((self.committed, self.reserved_seq));
        Ok(())
    }

    fn save_position(&self, dir: &Path) -> io::Result<()> {
        write_atomic(&dir.join(POSITION_FILE), self.position_line().as_bytes())
    }

    fn position_line(&self) -> String {
        let pos = self.committed;
        format!("v2 {} {} {}\n", pos.segment, pos.offset, self.reserved_seq)
    }

    fn write(&mut self, dir: &Path, buf: &[u8]) -> io::Result<()> {
        let roll = match &self.writer {
            Some(w) => self.segments.get(&w.id).copied().unwrap_or(0) >= self.segment_bytes,
            None => true,
        };
        if roll {
            let id = self.next_segment;
            self.next_segment += 1;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment::path(dir, id))?;
            self.segments.insert(id, 0);
            if let Some(old) = self.writer.replace(Writer {
                id,
                file: Arc::new(file),
            }) {
                if std::mem::take(&mut self.writer_dirty) {
                    self.unsynced.push(old.file);
                }
            }
            self.dir_dirty = true;
        }
        let Some(w) = &self.writer else {
            return Err(io::Error::other("no spool segment"));
        };
        let id = w.id;
        if let Err(e) = (&*w.file).write_all(buf) {
            // The segment may now end in a torn frame: never append after it.
            self.writer = None;
            return Err(e);
        }
        self.writer_dirty = true;
        self.appended += 1;
        *self.segments.entry(id).or_insert(0) += u64_of(buf.len());
        self.total_bytes += u64_of(buf.len());
        Ok(())
    }

    fn fully_read(&self) -> bool {
        self.pending.is_empty()
            && match self.segments.keys().next_back() {
                None => true,
                Some(&last) => {
                    self.read.segment > last
                        || (self.read.segment == last
                            && self.read.offset >= self.segments.get(&last).copied().unwrap_or(0))
                }
            }
    }

    fn read_batch(&mut self, dir: &Path, max_records: usize, id_source: u64) -> Vec<SpoolItem> {
        let mut out: Vec<SpoolItem> = self
            .pending
            .drain(..)
            .map(|i| SpoolItem::Incident(i, self.read))
            .collect();
        while out.len() < max_records {
            // Move the read position onto an existing segment.
            let Some((&seg, &size)) = self.segments.range(self.read.segment..).next() else {
                return out;
            };
            if seg != self.read.segment {
                self.damage = None;
                self.read = SpoolPos {
                    segment: seg,
                    offset: 0,
                };
            }
            let is_write_segment = matches!(&self.writer, Some(w) if w.id == seg);
            if self.read.offset >= size {
                if is_write_segment || self.segments.range(seg + 1..).next().is_none() {
                    return out; // caught up with the writer
                }
                self.end_damage(self.read, &mut out);
                self.read = SpoolPos {
                    segment: seg + 1,
                    offset: 0,
                };
                continue;
            }
            let file = match self.read_file.take() {
                Some((id, f)) if id == seg => f,
                _ => match File::open(segment::path(dir, seg)) {
                    Ok(f) => f,
                    Err(e) => {
                        let incident = Incident::Corrupt {
                            segment: seg,
                            offset: self.read.offset,
                            bytes: size - self.read.offset,
                            seq: None,
                        };
                        crate::diag::error(&format!("{} ({e})", incident.message()), &[]);
                        self.read = SpoolPos {
                            segment: seg + 1,
                            offset: 0,
                        };
                        out.push(SpoolItem::Incident(incident, self.read));
                        continue;
                    }
                },
            };
            let left = usize::try_from(size - self.read.offset).unwrap_or(usize::MAX);
            let mut buf = vec![0u8; left.min(READ_CHUNK)];
            let got = read_fully(&file, &mut buf, self.read.offset);
            buf.truncate(got);
            let base = self.read.offset;
            let chunk_end = base + u64_of(buf.len());
            let at = |pos: usize| SpoolPos {
                segment: seg,
                offset: base + u64_of(pos),
            };
            let mut pos = 0;
            while out.len() < max_records && pos < buf.len() {
                match frame::decode(&buf[pos..]) {
                    Decoded::Frame {
                        seq,
                        mut record,
                        len,
                    } => {
                        self.end_damage(at(pos), &mut out);
                        pos += len;
                        EventId::new(id_source, seq).splice_into(&mut record.payload);
                        out.push(SpoolItem::Record(record, at(pos)));
                    }
                    Decoded::BadBody { seq, len } => {
                        self.end_damage(at(pos), &mut out);
                        let incident = Incident::Corrupt {
                            segment: seg,
                            offset: at(pos).offset,
                            bytes: u64_of(len),
                            seq: Some(seq),
                        };
                        crate::diag::error(&incident.message(), &[]);
                        pos += len;
                        out.push(SpoolItem::Incident(incident, at(pos)));
                    }
                    Decoded::BadHeader => {
                        self.damage.get_or_insert(at(pos));
                        match frame::find_header(&buf, pos + 1) {
                            Some(next) => pos = next,
                            // Keep the last bytes: a header may straddle the chunk end.
                            None if chunk_end < size => {
                                pos = buf.len().saturating_sub(frame::HEADER_LEN - 1).max(pos + 1);
                                break;
                            }
                            None => pos = buf.len(),
                        }
                    }
                    Decoded::Incomplete { needed } => {
                        if at(pos).offset + u64_of(needed) > size {
                            // Cut short by the end of the segment. In the write
                            // segment the rest is still to come (appends are
                            // whole under the lock, so it never is); anywhere
                            // else it is a torn frame.
                            if is_write_segment && self.writers > 0 {
                                break;
                            }
                            self.damage.get_or_insert(at(pos));
                            pos = buf.len();
                        } else if pos == 0 {
                            // One frame larger than the read chunk: read exactly it.
                            let mut big = vec![0u8; needed];
                            if read_fully(&file, &mut big, base) == needed {
                                buf = big;
                                continue;
                            }
                            self.damage.get_or_insert(at(pos));
                            pos = buf.len();
                        } else {
                            break; // the next read starts with this frame
                        }
                    }
                }
            }
            self.read_file = Some((seg, file));
            self.read.offset = at(pos).offset;
            if self.read.offset >= size && (!is_write_segment || self.writers == 0) {
                self.end_damage(self.read, &mut out);
            }
            if pos == 0 {
                return out; // nothing more to read now
            }
        }
        out
    }

    /// Reports a damaged stretch that ends at `end`, if one is open.
    fn end_damage(&mut self, end: SpoolPos, out: &mut Vec<SpoolItem>) {
        let Some(start) = self.damage.take() else {
            return;
        };
        let incident = Incident::Corrupt {
            segment: start.segment,
            offset: start.offset,
            bytes: end.offset.saturating_sub(start.offset),
            seq: None,
        };
        crate::diag::error(&incident.message(), &[]);
        out.push(SpoolItem::Incident(incident, end));
    }
}

fn u64_of(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn read_fully(file: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + u64_of(n)) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    n
}

/// The position file as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Saved {
    None,
    /// `segment offset` of the format before checksums (legacy `.seg` segments).
    Legacy(SpoolPos),
    Current {
        pos: SpoolPos,
        reserved: u64,
    },
}

fn read_position(path: &Path) -> Saved {
    let Ok(text) = fs::read_to_string(path) else {
        return Saved::None;
    };
    let parts: Vec<Option<u64>> = text.split_whitespace().map(|p| p.parse().ok()).collect();
    match (text.starts_with("v2 "), parts.as_slice()) {
        (true, [_, Some(segment), Some(offset), Some(reserved)]) => Saved::Current {
            pos: SpoolPos {
                segment: *segment,
                offset: *offset,
            },
            reserved: *reserved,
        },
        (false, [Some(segment), Some(offset)]) => Saved::Legacy(SpoolPos {
            segment: *segment,
            offset: *offset,
        }),
        _ => Saved::None,
    }
}

#[cfg(test)]
mod tests;

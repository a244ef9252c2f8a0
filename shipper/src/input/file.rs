//! Tails one file path across rotation, every generation in order, however
//! far behind.
//!
//! - A generation is one file's content from its start: identified by device,
//!   inode, the first line (in `event.id`) and a fingerprint of up to 1 KiB,
//!   taken from the bytes as read. It counts as recognisable by content only
//!   from [`MIN_FINGERPRINT`] bytes on.
//! - Rename rotation: at end of file, if the path names another file, the old
//!   one is read through the open handle until it has not grown for
//!   [`ROTATION_GRACE`] (a writer that reopens lazily, as after logrotate's
//!   `create` and a HUP, still appends to it; a partial last line is held
//!   until then). A path that cannot be looked at for another reason than
//!   its absence is no rotation. The next generation is
//!   the oldest file of the rotated family (`order.log`, `order.log.1`,
//!   `order.log-2026…`, not compressed ones) that is neither shipped already
//!   nor a copy of one, and was written no earlier than the finished one
//!   (minus a minute of slack): so generations rotated away while the shipper
//!   was behind (Kafka down, a restart) are shipped too, oldest first.
//! - Copytruncate: truncation is noticed by size and by fingerprint, before
//!   each read is used. The rest of the old generation is read from its copy
//!   (another inode with the same first bytes, at least as long as what was
//!   read), in bounded batches; then the next generations as above. Lines
//!   written between the copy and the truncation are lost by any reader: that
//!   window belongs to copytruncate itself.
//! - Restart: the checkpoint names the generation by identity; it is found at
//!   the path, renamed, or as a copy, and finished first. The successor bound
//!   in force when it was opened is saved with it, so a restart however late
//!   still finds the generations rotated away while the tail was behind.
//!
//! The thread blocks on the bounded channel when the shipping loop has no room:
//! with Kafka down it waits at its position, the files are the buffer.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::{Batch, Item, Position};
use crate::checkpoint::{
    DoneFile, FileCheckpoint, FileIdentity, DONE_KEPT, FINGERPRINT_BYTES, MIN_FINGERPRINT,
};
use crate::event::{Enricher, RawLine};
use crate::event_id::EventId;
use crate::framing::LineFramer;
use crate::stats::Counters;

const READ_BYTES: usize = 64 << 10;
/// A batch is handed over at this many lines or bytes, or at end of file.
const BATCH_LINES: usize = 2048;
const BATCH_BYTES: usize = 512 << 10;
/// A rotated file last written this long before the generation finished
/// before it is not taken as its successor (unless it is unknown and new).
const SUCCESSOR_SLACK: Duration = Duration::from_secs(60);
/// How long a renamed generation must stop growing before it is finished.
pub const ROTATION_GRACE: Duration = Duration::from_secs(2);
/// Names of rotated files that cannot be read as text.
const COMPRESSED: [&str; 7] = [".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".z"];

/// What the tail thread needs.
#[derive(Debug)]
pub struct TailOptions {
    pub path: PathBuf,
    pub max_line: usize,
    pub poll_interval: Duration,
    /// How long a renamed generation must stop growing before it is finished
    /// (its last line without newline shipped) and the next one read.
    pub rotation_grace: Duration,
    pub checkpoint: Option<FileCheckpoint>,
    /// Without a checkpoint (first start): the rotated files already there
    /// ([`history`]), never shipped. The shipping loop starts its finished
    /// list with the same ones, so its checkpoints keep them.
    pub history: Vec<DoneFile>,
    /// When the checkpoint was last written (successors are newer).
    pub checkpoint_time: Option<SystemTime>,
    /// Where the checkpoint lives (for the mark of the very first start).
    pub checkpoint_path: Option<PathBuf>,
    /// Where the generations seen are kept (see [`SEEN_FILE`]).
    pub seen_path: PathBuf,
}

/// The generations whose lines were read, kept as soon as each one's first
/// line is known: a generation found again later only as a copytruncate copy
/// (after a restart, before it was checkpointed) keeps its `event.id`s.
pub const SEEN_FILE: &str = "generations.json";

struct Current {
    file: File,
    ident: Arc<FileIdentity>,
    /// The first bytes as read, up to [`FINGERPRINT_BYTES`]: the fingerprint.
    prefix: Vec<u8>,
    path_str: String,
    /// Next byte to read.
    offset: u64,
    framer: LineFramer,
    /// Once the path names another file: when this one last grew. A writer
    /// that reopens lazily (logrotate `create` then a HUP) still appends to
    /// it; it is finished only after [`TailOptions::rotation_grace`] of quiet.
    replaced_growth: Option<Instant>,
}

impl Current {
    fn id_source(&self) -> u64 {
        self.ident.event_source()
    }
}

/// A generation already shipped (the current one is not among them).
#[derive(Clone, Debug)]
struct Known {
    ident: FileIdentity,
    /// Its length when finished.
    size: Option<u64>,
}

struct Tailer {
    opts: TailOptions,
    enricher: Enricher,
    tx: mpsc::Sender<Batch>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    batch: Vec<Item>,
    batch_bytes: usize,
    waiting_reported: bool,
    known: VecDeque<Known>,
    /// Successors must have been written no earlier than this.
    successors_after: SystemTime,
    /// Generations seen (persisted in [`TailOptions::seen_path`]).
    seen: VecDeque<FileIdentity>,
}

/// Starts the tail thread. It ends when `stop` is set or the receiver is dropped.
pub fn spawn(
    opts: TailOptions,
    enricher: Enricher,
    tx: mpsc::Sender<Batch>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let mut known: VecDeque<Known> = VecDeque::new();
    let done = opts
        .checkpoint
        .as_ref()
        .map_or(&opts.history, |cp| &cp.done);
    known.extend(done.iter().map(|d| Known {
        ident: d.file.clone(),
        size: Some(d.size),
    }));
    // The bound saved with the checkpointed generation; a checkpoint from
    // before it was saved falls back on its own write time.
    let saved_bound = opts
        .checkpoint
        .as_ref()
        .and_then(|cp| cp.file.successors_after)
        .map(|ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns));
    let successors_after = saved_bound.unwrap_or_else(|| {
        opts.checkpoint_time
            .unwrap_or_else(SystemTime::now)
            .checked_sub(SUCCESSOR_SLACK)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    let seen: VecDeque<FileIdentity> = fs::read(&opts.seen_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let tailer = Tailer {
        seen,
        opts,
        enricher,
        tx,
        stop,
        counters,
        batch: Vec::new(),
        batch_bytes: 0,
        waiting_reported: false,
        known,
        successors_after,
    };
    std::thread::Builder::new()
        .name("tail".into())
        .spawn(move || tailer.run())
}

/// The rotated files of `path`'s family (the path's own file left out) as they
/// are now, oldest first, the newest [`DONE_KEPT`]: on a first start, history
/// that is never shipped.
pub fn history(path: &Path) -> Vec<DoneFile> {
    let mut files: Vec<(SystemTime, DoneFile)> = rotated_family(path)
        .into_iter()
        .filter(|(p, _, _)| p != path)
        .filter_map(|(_, f, meta)| {
            let done = DoneFile {
                file: FileIdentity::of(&f).ok()?,
                size: meta.len(),
            };
            Some((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), done))
        })
        .collect();
    files.sort_by_key(|(mtime, _)| *mtime);
    let excess = files.len().saturating_sub(DONE_KEPT);
    files.drain(excess..).map(|(_, d)| d).collect()
}

enum Change {
    Same,
    /// The path now names another file (or none): this generation is complete.
    Replaced,
    /// Shorter than what was read, or other first bytes: truncated (and maybe rewritten).
    Truncated,
}

impl Tailer {
    fn run(mut self) {
        let mut buf = vec![0u8; READ_BYTES];
        let mut cur = self.open_initial();
        if let Some(c) = cur.as_mut().filter(|c| c.ident.successors_after.is_none()) {
            // Resumed from a checkpoint saved before the bound was: keep it from now on.
            self.bind_successors(c);
        }
        while !self.stop.load(Ordering::Relaxed) {
            let Some(c) = cur.as_mut() else {
                cur = self.next_generation();
                if cur.is_none() {
                    if !std::mem::replace(&mut self.waiting_reported, true)
                        && !self.opts.path.exists()
                    {
                        crate::diag::warn(
                            &format!(
                                "{} does not exist yet; waiting for it",
                                self.opts.path.display()
                            ),
                            &[],
                        );
                    }
                    std::thread::sleep(self.opts.poll_interval);
                }
                continue;
            };
            match read_some(&mut c.file, &mut buf) {
                Ok(0) => {
                    if !self.flush() {
                        return;
                    }
                    match self.change(c, c.offset) {
                        Change::Same => std::thread::sleep(self.opts.poll_interval),
                        Change::Truncated => {
                            if !self.recover_truncation(c) {
                                return;
                            }
                            cur = self.next_generation();
                        }
                        Change::Replaced => {
                            // The writer may still append to the renamed file
                            // (it reopens lazily): keep reading it until it has
                            // been quiet for the grace, a partial last line
                            // held, then finish it and go on with the next.
                            let now = Instant::now();
                            let Some(grew) = c.replaced_growth else {
                                crate::diag::info(
                                    &format!(
                                        "{} was rotated; reading it until it has not grown for {:?}",
                                        c.path_str, self.opts.rotation_grace
                                    ),
                                    &[],
                                );
                                c.replaced_growth = Some(now);
                                continue;
                            };
                            if now.duration_since(grew) < self.opts.rotation_grace {
                                std::thread::sleep(self.opts.poll_interval);
                                continue;
                            }
                            if !self.drain_to_end(c, &mut buf) {
                                return;
                            }
                            self.finish_file(c);
                            if !self.flush() {
                                return;
                            }
                            self.finished(c);
                            cur = self.next_generation();
                        }
                    }
                }
                Ok(n) => {
                    // Check the bytes came from the generation we think it is.
                    if matches!(self.change(c, c.offset + n as u64), Change::Truncated) {
                        if !self.recover_truncation(c) {
                            return;
                        }
                        cur = self.next_generation();
                        continue;
                    }
                    self.consume(c, n, &buf);
                    if c.replaced_growth.is_some() {
                        c.replaced_growth = Some(Instant::now());
                    }
                    if self.batch_full() && !self.flush() {
                        return;
                    }
                }
                Err(e) => {
                    crate::diag::error(&format!("reading {} failed: {e}", c.path_str), &[]);
                    std::thread::sleep(self.opts.poll_interval);
                }
            }
        }
    }

    fn batch_full(&self) -> bool {
        self.batch.len() >= BATCH_LINES || self.batch_bytes >= BATCH_BYTES
    }

    fn consume(&mut self, c: &mut Current, n: usize, buf: &[u8]) {
        let chunk = &buf[..n];
        // The fingerprint grows with the bytes as read, up to 1 KiB.
        if (c.prefix.len() as u64) < FINGERPRINT_BYTES && c.offset == c.prefix.len() as u64 {
            let room = usize::try_from(FINGERPRINT_BYTES).unwrap_or(0) - c.prefix.len();
            c.prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let mut id =
                FileIdentity::from_parts(c.ident.dev, c.ident.ino, c.ident.born, &c.prefix);
            // A generation resumed from a checkpoint keeps the head it had.
            let new_head = c.ident.head.is_none() && id.head.is_some();
            id.head = c.ident.head.or(id.head);
            id.id_source = c.ident.id_source;
            id.successors_after = c.ident.successors_after;
            c.ident = Arc::new(id);
            if new_head {
                self.first_line_known(c);
            }
        }
        c.offset += n as u64;
        self.counters.add_read(n as u64);
        let ingested = meshwatch_ecs::format_timestamp(SystemTime::now());
        let (enricher, batch, bytes) = (&mut self.enricher, &mut self.batch, &mut self.batch_bytes);
        let source = c.id_source();
        let (ident, path) = (&c.ident, c.path_str.as_str());
        let mut lines = 0;
        c.framer.feed(chunk, |l| {
            let raw = RawLine {
                bytes: l.bytes,
                original_len: l.original_len,
                truncated: l.truncated,
                no_newline: false,
                file: Some((path, l.start)),
                id: Some(EventId::new(source, l.start)),
            };
            let record = enricher.encode(&raw, &ingested);
            *bytes += record.weight();
            lines += 1;
            batch.push(Item {
                record,
                pos: Position::File(ident.clone(), l.end),
            });
        });
        self.counters.add_lines(lines);
    }

    /// A generation's first line is known, before any of its lines is shipped:
    /// a copy of a generation seen before keeps that one's ids; a new one is
    /// written down (fsynced) first.
    fn first_line_known(&mut self, c: &mut Current) {
        let (dev, ino) = (c.ident.dev, c.ident.ino);
        let copy_of = self.seen.iter().find(|g| {
            (g.dev, g.ino) != (dev, ino)
                && g.head == c.ident.head
                && g.fingerprint_len >= MIN_FINGERPRINT
                && (c.prefix.len() as u64) >= g.fingerprint_len
                && crate::checkpoint::fnv(
                    &c.prefix[..usize::try_from(g.fingerprint_len).unwrap_or(0)],
                ) == g.fingerprint
        });
        if let Some(g) = copy_of {
            if c.ident.id_source.is_none() {
                let mut id = (*c.ident).clone();
                id.id_source = Some(g.event_source());
                c.ident = Arc::new(id);
            }
            return;
        }
        if self.seen.iter().any(|g| g.same_generation(&c.ident)) {
            return;
        }
        self.seen.push_back((*c.ident).clone());
        while self.seen.len() > DONE_KEPT {
            self.seen.pop_front();
        }
        let bytes = serde_json::to_vec(&self.seen).unwrap_or_default();
        if let Err(e) = crate::checkpoint::write_atomic(&self.opts.seen_path, &bytes) {
            crate::diag::error(
                &format!("saving {} failed: {e}", self.opts.seen_path.display()),
                &[],
            );
        }
    }

    /// Ships a last line without newline of a generation we leave for good.
    fn finish_file(&mut self, c: &mut Current) {
        if c.ident.head.is_none() {
            // A file that never had a complete line: its content names it.
            let mut id = (*c.ident).clone();
            id.head = Some(crate::checkpoint::fnv(&c.prefix));
            c.ident = Arc::new(id);
        }
        let ingested = meshwatch_ecs::format_timestamp(SystemTime::now());
        let (enricher, batch) = (&mut self.enricher, &mut self.batch);
        let source = c.id_source();
        let (ident, path) = (&c.ident, c.path_str.as_str());
        c.framer.finish(|l| {
            let raw = RawLine {
                bytes: l.bytes,
                original_len: l.original_len,
                truncated: l.truncated,
                no_newline: true,
                file: Some((path, l.start)),
                id: Some(EventId::new(source, l.start)),
            };
            batch.push(Item {
                record: enricher.encode(&raw, &ingested),
                pos: Position::File(ident.clone(), l.end),
            });
        });
    }

    /// Remembers a generation as done (bounded).
    fn finished(&mut self, c: &Current) {
        let ident = (*c.ident).clone();
        self.known.retain(|k| !k.ident.same_generation(&ident));
        self.known.push_back(Known {
            ident,
            size: Some(c.offset),
        });
        while self.known.len() > DONE_KEPT {
            self.known.pop_front();
        }
        let mtime = c
            .file
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        self.successors_after = mtime
            .checked_sub(SUCCESSOR_SLACK)
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .max(self.successors_after);
    }

    /// Reads `c` to its end in bounded batches; false when the loop is gone.
    fn drain_to_end(&mut self, c: &mut Current, buf: &mut [u8]) -> bool {
        loop {
            match read_some(&mut c.file, buf) {
                Ok(0) => return true,
                Ok(n) => {
                    self.consume(c, n, buf);
                    if self.batch_full() && !self.flush() {
                        return false;
                    }
                }
                Err(e) => {
                    crate::diag::error(&format!("reading {} failed: {e}", c.path_str), &[]);
                    return true;
                }
            }
        }
    }

    /// Hands the batch to the shipping loop; false when the loop is gone.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let items = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.tx.blocking_send(Batch { items }).is_ok()
    }

    /// `upto`: how far we have read (the file must be at least this long).
    fn change(&self, c: &Current, upto: u64) -> Change {
        let Ok(meta) = c.file.metadata() else {
            return Change::Same;
        };
        let prefix_len = c.prefix.len() as u64;
        let prefix_ok = crate::checkpoint::fingerprint(&c.file, prefix_len)
            .map(|f| f.is_none_or(|f| f == crate::checkpoint::fnv(&c.prefix)))
            .unwrap_or(true);
        if meta.len() < upto || !prefix_ok || (prefix_len > 0 && meta.len() < prefix_len) {
            return Change::Truncated;
        }
        match fs::metadata(&self.opts.path) {
            Ok(m) if m.dev() == c.ident.dev && m.ino() == c.ident.ino => Change::Same,
            Ok(_) => Change::Replaced,
            Err(e) if e.kind() == ErrorKind::NotFound => Change::Replaced,
            // A transient failure to look (EACCES, EIO …) says nothing about
            // rotation: never finish a live file on it.
            Err(_) => Change::Same,
        }
    }

    /// The file was truncated under us: read the rest of this generation from
    /// its copy (bounded batches), then leave it. False when the loop is gone.
    fn recover_truncation(&mut self, c: &mut Current) -> bool {
        let resume = c.framer.committed_offset();
        let ident = c.ident.clone();
        let copy = find_in_dir(&self.opts.path, |f, meta| {
            meta.ino() != ident.ino
                && meta.len() >= resume
                && ident.same_content_start(f).unwrap_or(false)
        });
        match copy {
            Some((copy_path, mut copy)) => {
                crate::diag::info(
                    &format!(
                        "{} was truncated (copytruncate); reading its rest from {}",
                        c.path_str,
                        copy_path.display()
                    ),
                    &[],
                );
                c.framer.reset(resume);
                c.offset = resume;
                c.path_str = copy_path.display().to_string();
                if copy.seek(SeekFrom::Start(resume)).is_ok() {
                    c.file = copy;
                    let mut buf = vec![0u8; READ_BYTES];
                    if !self.drain_to_end(c, &mut buf) {
                        return false;
                    }
                }
                self.finish_file(c);
            }
            None => crate::diag::warn(
                &format!(
                    "{} was truncated and no rotated copy of it was found (none with the same first {} bytes); \
                     lines after offset {resume} of it may be missing",
                    c.path_str, ident.fingerprint_len
                ),
                &[],
            ),
        }
        if !self.flush() {
            return false;
        }
        self.finished(c);
        true
    }

    /// Whether `file` (with `meta`) is a generation already shipped, or a copy of one.
    fn is_known(&self, file: &File, meta: &fs::Metadata) -> bool {
        self.known.iter().any(|k| {
            let same_inode = meta.dev() == k.ident.dev && meta.ino() == k.ident.ino;
            let weak = k.ident.fingerprint_len < MIN_FINGERPRINT;
            if same_inode && k.ident.matches(file).unwrap_or(false) {
                // A few bytes identify nothing: then the length must match too.
                return !weak || k.size.is_none_or(|s| s == meta.len());
            }
            !same_inode && k.ident.same_content_start(file).unwrap_or(false)
        })
    }

    /// The next generation to read: the oldest unknown file of the rotated
    /// family written since the last finished one (the path's file included).
    ///
    /// The path's own file is the newest generation, so it comes after every
    /// rotated candidate whatever the clocks say: files written within one
    /// tick of the kernel's coarse clock have the same mtime, and a new file
    /// may get a lower inode than the one rotated before it (a freed one).
    /// Rotated ones go by last write, then birth time, then inode.
    fn next_generation(&mut self) -> Option<Current> {
        // (the path's own file, last write, birth, inode): the order to read in.
        type Order = (bool, SystemTime, u64, u64);
        let mut candidates: Vec<(Order, PathBuf, File)> = Vec::new();
        for (path, file, meta) in rotated_family(&self.opts.path) {
            if self.is_known(&file, &meta) {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let live = path == self.opts.path;
            if !live && mtime < self.successors_after {
                continue;
            }
            let order = (
                live,
                mtime,
                crate::checkpoint::birth_time(&meta),
                meta.ino(),
            );
            candidates.push((order, path, file));
        }
        candidates.sort_by_key(|c| c.0);
        let (_, path, file) = candidates.into_iter().next()?;
        self.waiting_reported = false;
        if path != self.opts.path {
            crate::diag::info(
                &format!(
                    "shipping the rotated generation {} before {}",
                    path.display(),
                    self.opts.path.display()
                ),
                &[],
            );
        }
        let mut c = current(file, &path, 0, self.opts.max_line, None)?;
        self.bind_successors(&mut c);
        self.mark_start(&c);
        Some(c)
    }

    /// Records the successor bound in force on the generation just opened: it
    /// reaches the checkpoint with the generation's positions.
    fn bind_successors(&self, c: &mut Current) {
        let ns = self
            .successors_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .unwrap_or(0);
        let mut id = (*c.ident).clone();
        id.successors_after = Some(ns);
        c.ident = Arc::new(id);
    }

    /// Without a checkpoint yet, the first generation opened is written down at
    /// offset 0 at once: a shipper killed before its first acknowledgement
    /// resumes there, not at whatever the path holds by then.
    fn mark_start(&mut self, c: &Current) {
        let Some(path) = self.opts.checkpoint_path.take() else {
            return;
        };
        if path.exists() {
            return;
        }
        let cp = FileCheckpoint {
            path: PathBuf::from(&c.path_str),
            file: (*c.ident).clone(),
            offset: c.offset,
            done: self
                .known
                .iter()
                .map(|k| DoneFile {
                    file: k.ident.clone(),
                    size: k.size.unwrap_or(0),
                })
                .collect(),
        };
        if let Err(e) = crate::checkpoint::save(&path, &cp) {
            crate::diag::error(&format!("saving the first checkpoint failed: {e}"), &[]);
        }
    }

    fn open_initial(&mut self) -> Option<Current> {
        let Some(cp) = self.opts.checkpoint.take() else {
            // First start: the file at the path, from its start. Rotated files
            // already there are history (`TailOptions::history`, in `known`):
            // never shipped, now or after a restart.
            self.successors_after = SystemTime::now();
            let f = File::open(&self.opts.path).ok()?;
            let mut c = current(f, &self.opts.path, 0, self.opts.max_line, None)?;
            self.bind_successors(&mut c);
            self.mark_start(&c);
            return Some(c);
        };
        self.opts.checkpoint_path = None;
        let resume = |f: File, p: &Path| {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            (len >= cp.offset)
                .then(|| current(f, p, cp.offset, self.opts.max_line, Some(&cp.file)))?
        };
        if let Ok(f) = File::open(&self.opts.path) {
            if cp.file.matches(&f).unwrap_or(false) {
                if let Some(c) = resume(f, &self.opts.path) {
                    return Some(c);
                }
            }
        }
        let found = find_in_dir(&self.opts.path, |f, _| cp.file.matches(f).unwrap_or(false))
            .or_else(|| {
                find_in_dir(&self.opts.path, |f, meta| {
                    meta.len() >= cp.offset && cp.file.same_content_start(f).unwrap_or(false)
                })
            });
        if let Some((p, f)) = found {
            crate::diag::info(
                &format!(
                    "resuming the rotated file {} at offset {} before {}",
                    p.display(),
                    cp.offset,
                    self.opts.path.display()
                ),
                &[],
            );
            if let Some(c) = resume(f, &p) {
                return Some(c);
            }
        }
        crate::diag::warn(
            &format!(
                "the checkpointed file (inode {}, {} lines-bytes shipped) is gone or was truncated \
                 without a copy; lines after offset {} of it may be missing; going on with the \
                 generations written after it",
                cp.file.ino, cp.offset, cp.offset
            ),
            &[],
        );
        self.known.push_back(Known {
            ident: cp.file,
            size: Some(cp.offset),
        });
        self.next_generation()
    }
}

/// Opens a generation at `offset`. `resumed`: its identity from the checkpoint
/// (the first bytes are read again from the file for the fingerprint).
fn current(
    mut file: File,
    path: &Path,
    offset: u64,
    max_line: usize,
    resumed: Option<&FileIdentity>,
) -> Option<Current> {
    let meta = file.metadata().ok()?;
    let upto = offset.min(FINGERPRINT_BYTES);
    let mut prefix = vec![0u8; usize::try_from(upto).ok()?];
    let mut n = 0;
    while n < prefix.len() {
        match std::os::unix::fs::FileExt::read_at(&file, &mut prefix[n..], n as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    prefix.truncate(n);
    let mut ident = FileIdentity::from_prefix(&meta, &prefix);
    if let Some(r) = resumed {
        ident.head = r.head.or(ident.head);
        // Found at its inode or as a copy: its lines keep their ids. (A mark
        // taken before the first line was complete names nothing yet: the
        // first line, read again, does.)
        if r.head.is_some() || r.id_source.is_some() {
            ident.id_source = Some(r.event_source());
        }
        ident.successors_after = r.successors_after;
    }
    file.seek(SeekFrom::Start(offset)).ok()?;
    Some(Current {
        file,
        ident: Arc::new(ident),
        prefix,
        path_str: path.display().to_string(),
        offset,
        framer: LineFramer::new(max_line, offset),
        replaced_growth: None,
    })
}

fn read_some(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match f.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The path's file and its rotated siblings (`NAME.*`, `NAME-*`, `STEM.*.EXT`),
/// regular files only, compressed ones left out.
fn rotated_family(path: &Path) -> Vec<(PathBuf, File, fs::Metadata)> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or(name);
    let ext = path.extension().and_then(|e| e.to_str());
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir_of(path)) else {
        return out;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        let Some(n) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let family = n == name
            || n.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
            || ext.is_some_and(|ext| {
                n.strip_prefix(stem)
                    .and_then(|r| r.strip_prefix('.'))
                    .is_some_and(|r| r.ends_with(&format!(".{ext}")))
            });
        if !family || COMPRESSED.iter().any(|c| n.ends_with(c)) {
            continue;
        }
        let Ok(meta) = fs::metadata(&p) else { continue };
        if !meta.is_file() {
            continue;
        }
        let Ok(f) = File::open(&p) else { continue };
        out.push((p, f, meta));
    }
    out
}

/// The most recently modified file of `path`'s rotated family (other than
/// `path` itself) that satisfies `pred`.
fn find_in_dir(
    path: &Path,
    pred: impl Fn(&File, &fs::Metadata) -> bool,
) -> Option<(PathBuf, File)> {
    let mut best: Option<(SystemTime, PathBuf, File)> = None;
    for (p, f, meta) in rotated_family(path) {
        if p == path || !pred(&f, &meta) {
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _, _)| mtime > *t) {
            best = Some((mtime, p, f));
        }
    }
    best.map(|(_, p, f)| (p, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rotated_family() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "order.log",
            "order.log.1",
            "order.log.2.gz",
            "order.log-20261125",
            "order.1.log",
            "orders.log",
            "payment.log",
            "order.logx",
        ] {
            fs::write(dir.path().join(n), b"x\n").unwrap();
        }
        fs::create_dir(dir.path().join("order.log.d")).unwrap();
        let mut names: Vec<String> = rotated_family(&dir.path().join("order.log"))
            .into_iter()
            .map(|(p, _, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "order.1.log",
                "order.log",
                "order.log-20261125",
                "order.log.1"
            ]
        );
    }
}

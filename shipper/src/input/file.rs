//! Tails one file path across rotation.
//!
//! - Rename rotation: at end of file, if the path names another inode, the old
//!   file is read to its end, then the new one from its start.
//! - Copytruncate: after every read the file is checked (size and the
//!   fingerprint of its first bytes). When it was truncated, the rotated copy
//!   (same leading bytes, another inode, in the same directory) is read from the
//!   last complete line onwards, then the truncated file from its start. Lines
//!   written between the copy and the truncation are lost by any reader: that
//!   window belongs to copytruncate itself.
//! - Restart: the checkpoint names the file by identity; if the path now holds
//!   another file, the old one is looked up in the directory by identity and
//!   finished first.
//!
//! The thread blocks on the bounded channel when the shipping loop has no room:
//! with Kafka down it waits at its position, the file is the buffer.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::{Batch, Item, Position};
use crate::checkpoint::{FileCheckpoint, FileIdentity, FINGERPRINT_BYTES};
use crate::event::{Enricher, RawLine};
use crate::framing::LineFramer;
use crate::stats::Counters;

const READ_BYTES: usize = 64 << 10;
/// A batch is handed over at this many lines or bytes, or at end of file.
const BATCH_LINES: usize = 2048;
const BATCH_BYTES: usize = 512 << 10;

/// What the tail thread needs.
#[derive(Debug)]
pub struct TailOptions {
    pub path: PathBuf,
    pub max_line: usize,
    pub poll_interval: Duration,
    pub checkpoint: Option<FileCheckpoint>,
}

struct Current {
    file: File,
    ident: Arc<FileIdentity>,
    path_str: String,
    /// Next byte to read.
    offset: u64,
    framer: LineFramer,
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
}

/// Starts the tail thread. It ends when `stop` is set or the receiver is dropped.
pub fn spawn(
    opts: TailOptions,
    enricher: Enricher,
    tx: mpsc::Sender<Batch>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let tailer = Tailer {
        opts,
        enricher,
        tx,
        stop,
        counters,
        batch: Vec::new(),
        batch_bytes: 0,
        waiting_reported: false,
    };
    std::thread::Builder::new()
        .name("tail".into())
        .spawn(move || tailer.run())
}

enum Change {
    Same,
    /// The path now names another file (or the old one is gone from it).
    Replaced,
    Truncated,
    PathMissing,
}

impl Tailer {
    fn run(mut self) {
        let mut buf = vec![0u8; READ_BYTES];
        let mut cur = self.open_initial();
        while !self.stop.load(Ordering::Relaxed) {
            let Some(c) = cur.as_mut() else {
                cur = self.open_path(0);
                if cur.is_none() {
                    if !std::mem::replace(&mut self.waiting_reported, true) {
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
                        Change::Same | Change::PathMissing => {
                            std::thread::sleep(self.opts.poll_interval)
                        }
                        Change::Truncated => self.recover_truncation(c),
                        Change::Replaced => {
                            // Finish the old file (the writer has moved on), then switch.
                            if !self.drain_to_end(c, &mut buf) {
                                return;
                            }
                            self.finish_file(c);
                            if !self.flush() {
                                return;
                            }
                            cur = self.open_path(0);
                        }
                    }
                }
                Ok(n) => {
                    // Check the bytes came from the file we think it is (copytruncate).
                    if matches!(self.change(c, c.offset + n as u64), Change::Truncated) {
                        self.recover_truncation(c);
                        continue;
                    }
                    self.consume(c, n, &buf);
                    // Strengthen a fingerprint taken while the file was still short.
                    if c.ident.fingerprint_len < FINGERPRINT_BYTES && c.offset >= FINGERPRINT_BYTES
                    {
                        if let Ok(id) = FileIdentity::of(&c.file) {
                            c.ident = Arc::new(id);
                        }
                    }
                    if (self.batch.len() >= BATCH_LINES || self.batch_bytes >= BATCH_BYTES)
                        && !self.flush()
                    {
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

    fn consume(&mut self, c: &mut Current, n: usize, buf: &[u8]) {
        let chunk = &buf[..n];
        c.offset += n as u64;
        self.counters.add_read(n as u64);
        let ingested = meshwatch_ecs::format_timestamp(SystemTime::now());
        let (enricher, batch, bytes) = (&mut self.enricher, &mut self.batch, &mut self.batch_bytes);
        let (ident, path) = (&c.ident, c.path_str.as_str());
        let mut lines = 0;
        c.framer.feed(chunk, |l| {
            let raw = RawLine {
                bytes: l.bytes,
                original_len: l.original_len,
                truncated: l.truncated,
                no_newline: false,
                file: Some((path, l.start)),
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

    /// Ships a last line without newline of a file we leave for good.
    fn finish_file(&mut self, c: &mut Current) {
        let ingested = meshwatch_ecs::format_timestamp(SystemTime::now());
        let (enricher, batch) = (&mut self.enricher, &mut self.batch);
        let (ident, path) = (&c.ident, c.path_str.as_str());
        c.framer.finish(|l| {
            let raw = RawLine {
                bytes: l.bytes,
                original_len: l.original_len,
                truncated: l.truncated,
                no_newline: true,
                file: Some((path, l.start)),
            };
            batch.push(Item {
                record: enricher.encode(&raw, &ingested),
                pos: Position::File(ident.clone(), l.end),
            });
        });
    }

    fn drain_to_end(&mut self, c: &mut Current, buf: &mut [u8]) -> bool {
        loop {
            match read_some(&mut c.file, buf) {
                Ok(0) => return true,
                Ok(n) => {
                    self.consume(c, n, buf);
                    if self.batch.len() >= BATCH_LINES && !self.flush() {
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
        if meta.len() < upto || !c.ident.matches(&c.file).unwrap_or(true) {
            return Change::Truncated;
        }
        match fs::metadata(&self.opts.path) {
            Ok(m) if m.dev() == c.ident.dev && m.ino() == c.ident.ino => Change::Same,
            Ok(_) => Change::Replaced,
            Err(_) => Change::PathMissing,
        }
    }

    /// The file was truncated under us: read what we missed from its rotated
    /// copy, then start over at the beginning of the truncated file.
    fn recover_truncation(&mut self, c: &mut Current) {
        let resume = c.framer.committed_offset();
        let copy = find_in_dir(&self.opts.path, |f, meta| {
            meta.ino() != c.ident.ino
                && meta.len() >= resume
                && c.ident.same_content_start(f).unwrap_or(false)
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
                let path_str = std::mem::replace(&mut c.path_str, copy_path.display().to_string());
                let mut buf = vec![0u8; READ_BYTES];
                if copy.seek(SeekFrom::Start(resume)).is_ok() {
                    while let Ok(n @ 1..) = read_some(&mut copy, &mut buf) {
                        self.consume(c, n, &buf);
                    }
                }
                self.finish_file(c);
                c.path_str = path_str;
            }
            None => crate::diag::warn(
                &format!(
                    "{} was truncated and no rotated copy was found; lines after offset {resume} may be missing",
                    c.path_str
                ),
                &[],
            ),
        }
        let _ = c.file.seek(SeekFrom::Start(0));
        c.offset = 0;
        c.framer.reset(0);
        if let Ok(id) = FileIdentity::of(&c.file) {
            c.ident = Arc::new(id);
        }
    }

    fn open_initial(&mut self) -> Option<Current> {
        let Some(cp) = self.opts.checkpoint.take() else {
            return self.open_path(0);
        };
        if let Ok(f) = File::open(&self.opts.path) {
            if cp.file.matches(&f).unwrap_or(false) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let offset = if len >= cp.offset { cp.offset } else { 0 };
                return current(f, &self.opts.path, offset, self.opts.max_line);
            }
        }
        if let Some((p, f)) =
            find_in_dir(&self.opts.path, |f, _| cp.file.matches(f).unwrap_or(false))
        {
            crate::diag::info(
                &format!(
                    "resuming the rotated file {} at offset {} before {}",
                    p.display(),
                    cp.offset,
                    self.opts.path.display()
                ),
                &[],
            );
            return current(f, &p, cp.offset, self.opts.max_line);
        }
        crate::diag::warn(
            &format!(
                "the checkpointed file (inode {}) is gone; starting {} from its beginning",
                cp.file.ino,
                self.opts.path.display()
            ),
            &[],
        );
        self.open_path(0)
    }

    fn open_path(&mut self, offset: u64) -> Option<Current> {
        let f = File::open(&self.opts.path).ok()?;
        self.waiting_reported = false;
        current(f, &self.opts.path, offset, self.opts.max_line)
    }
}

fn current(mut file: File, path: &Path, offset: u64, max_line: usize) -> Option<Current> {
    let ident = FileIdentity::of(&file).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    Some(Current {
        file,
        ident: Arc::new(ident),
        path_str: path.display().to_string(),
        offset,
        framer: LineFramer::new(max_line, offset),
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

/// The most recently modified regular file in `path`'s directory (other than
/// `path` itself) that satisfies `pred`.
fn find_in_dir(
    path: &Path,
    pred: impl Fn(&File, &fs::Metadata) -> bool,
) -> Option<(PathBuf, File)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut best: Option<(SystemTime, PathBuf, File)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p == path {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let Ok(f) = File::open(&p) else { continue };
        if pred(&f, &meta) {
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, _, _)| mtime > *t) {
                best = Some((mtime, p, f));
            }
        }
    }
    best.map(|(_, p, f)| (p, f))
}

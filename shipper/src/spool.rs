//! The bounded disk spool of the wrap and stdin inputs: a write-ahead log of
//! encoded records in segment files under `<data-dir>/spool/`.
//!
//! Readers of the wrapped process's pipes append every record here (a buffered
//! file write, never a wait on Kafka), and the shipping loop reads it back in
//! order. The read position is committed only once Kafka acknowledged every
//! record before it, so unacknowledged records survive a shipper restart and
//! are replayed. Bound: `max_bytes` of unacknowledged segments on disk; a record
//! that would exceed it is dropped and counted ([`Spool::dropped`]).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;

use crate::checkpoint::write_atomic;
use crate::event::Record;
use crate::route::{Destination, Key, Traceparent};

/// A segment is closed and a new one started once it reaches this size.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// Upper bound of one frame; anything larger is corruption (torn or foreign data).
const MAX_FRAME: usize = 64 << 20;
/// At most this many bytes are read from disk per batch.
const READ_CHUNK: usize = 512 << 10;
const POSITION_FILE: &str = "position";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A committed or readable position: segment id and the byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpoolPos {
    pub segment: u64,
    pub offset: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    state: Mutex<State>,
    readable: Notify,
}

#[derive(Debug)]
struct State {
    max_bytes: u64,
    segment_bytes: u64,
    /// Segment id → size on disk, for every segment not yet deleted.
    segments: BTreeMap<u64, u64>,
    total_bytes: u64,
    writer: Option<(u64, File)>,
    next_segment: u64,
    read: SpoolPos,
    read_file: Option<(u64, File)>,
    committed: SpoolPos,
    persisted: SpoolPos,
    writers: usize,
    dropped: u64,
    last_drop: Option<Instant>,
    write_error_reported: bool,
    corrupt_skips: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, resuming after the last committed position.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        Self::open_with_segment_size(dir, max_bytes, SEGMENT_BYTES)
    }

    pub fn open_with_segment_size(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<Self, SpoolError> {
        let io_err = |source| SpoolError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let committed = read_position(&dir.join(POSITION_FILE));
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if id < committed.segment {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let len = entry.metadata().map_err(io_err)?.len();
            segments.insert(id, len);
        }
        let total_bytes = segments.values().sum();
        let next_segment = segments
            .keys()
            .next_back()
            .map_or(committed.segment.max(1), |last| last + 1);
        Ok(Self {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                max_bytes,
                // At most a quarter of the bound per segment: only whole
                // segments are freed, so a larger one would keep acknowledged
                // records counted against the bound and drop new lines forever.
                segment_bytes: segment_bytes.min(max_bytes / 4).max(1),
                segments,
                total_bytes,
                writer: None,
                next_segment,
                read: committed,
                read_file: None,
                committed,
                persisted: committed,
                writers: 0,
                dropped: 0,
                last_drop: None,
                write_error_reported: false,
                corrupt_skips: 0,
            }),
            readable: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent counters; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Appends records; never waits for Kafka. Returns how many were dropped
    /// because the bound was reached or the disk write failed.
    pub fn append(&self, records: &[Record]) -> usize {
        if records.is_empty() {
            return 0;
        }
        let mut st = self.lock();
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 64).sum());
        let mut dropped = 0;
        let mut kept = 0u64;
        for r in records {
            let frame_len = frame_size(r) as u64;
            if st.total_bytes + kept + frame_len > st.max_bytes {
                dropped += 1;
                continue;
            }
            encode_frame(r, &mut buf);
            kept += frame_len;
        }
        if !buf.is_empty() {
            if let Err(e) = st.write(&self.dir, &buf) {
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
        }
        if dropped > 0 {
            st.dropped += dropped as u64;
            st.last_drop = Some(Instant::now());
        }
        drop(st);
        self.readable.notify_one();
        dropped
    }

    /// The next records in order, each with the position just after it. Waits
    /// while the spool is empty; `None` once every writer is done and all is read.
    pub async fn next_batch(&self, max_records: usize) -> Option<Vec<(Record, SpoolPos)>> {
        loop {
            let notified = self.readable.notified();
            {
                let mut st = self.lock();
                let batch = st.read_batch(&self.dir, max_records);
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
            let _ = fs::remove_file(segment_path(&self.dir, id));
        }
    }

    /// Saves the committed position (atomically) if it moved.
    pub fn persist(&self) -> Result<(), SpoolError> {
        let mut st = self.lock();
        if st.committed == st.persisted {
            return Ok(());
        }
        let pos = st.committed;
        let path = self.dir.join(POSITION_FILE);
        write_atomic(
            &path,
            format!("{} {}\n", pos.segment, pos.offset).as_bytes(),
        )
        .map_err(|source| SpoolError::Io { path, source })?;
        st.persisted = pos;
        Ok(())
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
}

impl State {
    fn write(&mut self, dir: &Path, buf: &[u8]) -> io::Result<()> {
        let roll = match &self.writer {
            Some((id, _)) => self.segments.get(id).copied().unwrap_or(0) >= self.segment_bytes,
            None => true,
        };
        if roll {
            let id = self.next_segment;
            self.next_segment += 1;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(dir, id))?;
            self.segments.insert(id, 0);
            self.writer = Some((id, file));
        }
        let Some((id, file)) = &mut self.writer else {
            return Err(io::Error::other("no spool segment"));
        };
        let id = *id;
        if let Err(e) = file.write_all(buf) {
            // The segment may now end in a torn frame: never append after it.
            self.writer = None;
            return Err(e);
        }
        *self.segments.entry(id).or_insert(0) += buf.len() as u64;
        self.total_bytes += buf.len() as u64;
        Ok(())
    }

    fn fully_read(&self) -> bool {
        match self.segments.keys().next_back() {
            None => true,
            Some(&last) => {
                self.read.segment > last
                    || (self.read.segment == last
                        && self.read.offset >= self.segments.get(&last).copied().unwrap_or(0))
            }
        }
    }

    fn read_batch(&mut self, dir: &Path, max_records: usize) -> Vec<(Record, SpoolPos)> {
        let mut out = Vec::new();
        while out.len() < max_records {
            // Move the read position onto an existing segment.
            let Some((&seg, &size)) = self.segments.range(self.read.segment..).next() else {
                return out;
            };
            if seg != self.read.segment {
                self.read = SpoolPos {
                    segment: seg,
                    offset: 0,
                };
            }
            let is_write_segment = matches!(self.writer, Some((id, _)) if id == seg);
            if self.read.offset >= size {
                if is_write_segment || self.segments.range(seg + 1..).next().is_none() {
                    return out; // caught up with the writer
                }
                self.read = SpoolPos {
                    segment: seg + 1,
                    offset: 0,
                };
                continue;
            }
            let file = match &self.read_file {
                Some((id, f)) if *id == seg => f,
                _ => match File::open(segment_path(dir, seg)) {
                    Ok(f) => &self.read_file.insert((seg, f)).1,
                    Err(_) => {
                        self.read = SpoolPos {
                            segment: seg + 1,
                            offset: 0,
                        };
                        continue;
                    }
                },
            };
            let want = ((size - self.read.offset) as usize).min(READ_CHUNK);
            let mut buf = vec![0u8; want];
            let got = file.read_at(&mut buf, self.read.offset).unwrap_or(0);
            buf.truncate(got);
            let mut pos = 0;
            let before = out.len();
            while out.len() < max_records {
                match decode_frame(&buf[pos..]) {
                    Frame::Complete(record, used) => {
                        pos += used;
                        out.push((
                            record,
                            SpoolPos {
                                segment: seg,
                                offset: self.read.offset + pos as u64,
                            },
                        ));
                    }
                    Frame::Incomplete(needed)
                        if pos == 0 && self.read.offset + needed as u64 <= size =>
                    {
                        // One frame larger than the read chunk: read exactly it.
                        let mut big = vec![0u8; needed];
                        if let Ok(n) = file.read_at(&mut big, self.read.offset) {
                            if let (true, Frame::Complete(record, used)) =
                                (n == needed, decode_frame(&big))
                            {
                                pos = used;
                                out.push((
                                    record,
                                    SpoolPos {
                                        segment: seg,
                                        offset: self.read.offset + used as u64,
                                    },
                                ));
                            }
                        }
                        break;
                    }
                    Frame::Incomplete(_) => break,
                    Frame::Corrupt => {
                        pos = buf.len();
                        break;
                    }
                }
            }
            if pos == 0 && out.len() == before {
                // Nothing decodable here: a torn tail from a crash, or corruption.
                // The write segment never has torn frames (whole-buffer writes under
                // the lock), so skip to the next segment.
                if is_write_segment {
                    return out;
                }
                self.corrupt_skips += 1;
                crate::diag::warn(
                    &format!("spool segment {seg} ends in an incomplete or corrupt record; skipping the rest of it"),
                    &[],
                );
                self.read = SpoolPos {
                    segment: seg + 1,
                    offset: 0,
                };
                continue;
            }
            self.read.offset += pos as u64;
        }
        out
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn read_position(path: &Path) -> SpoolPos {
    let Ok(text) = fs::read_to_string(path) else {
        return SpoolPos::default();
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => SpoolPos { segment, offset },
        _ => SpoolPos::default(),
    }
}

/// Frame: `u32 len` (of what follows), `u8 destination`, `u16 key len`, key,
/// `u8 traceparent len`, traceparent, payload. Little endian.
fn frame_size(r: &Record) -> usize {
    4 + 1
        + 2
        + r.key.len().min(u16::MAX as usize)
        + 1
        + r.traceparent.as_ref().map_or(0, |t| t.len().min(255))
        + r.payload.len()
}

fn encode_frame(r: &Record, out: &mut Vec<u8>) {
    let key = &r.key[..r.key.len().min(u16::MAX as usize)];
    let tp = r.traceparent.as_deref().unwrap_or("").as_bytes();
    let tp = &tp[..tp.len().min(255)];
    let len = (frame_size(r) - 4) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.push(r.destination.to_byte());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.push(tp.len() as u8);
    out.extend_from_slice(tp);
    out.extend_from_slice(&r.payload);
}

enum Frame {
    /// A record and the bytes it used.
    Complete(Record, usize),
    /// More bytes are needed: the whole frame's size, when known.
    Incomplete(usize),
    Corrupt,
}

fn decode_frame(b: &[u8]) -> Frame {
    let Some(len) = b
        .get(..4)
        .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
    else {
        return Frame::Incomplete(4);
    };
    if !(4..=MAX_FRAME).contains(&len) {
        return Frame::Corrupt;
    }
    let Some(body) = b.get(4..4 + len) else {
        return Frame::Incomplete(4 + len);
    };
    let Some(destination) = Destination::from_byte(body[0]) else {
        return Frame::Corrupt;
    };
    let key_len = u16::from_le_bytes([body[1], body[2]]) as usize;
    let Some(key) = body.get(3..3 + key_len) else {
        return Frame::Corrupt;
    };
    let Some(&tp_len) = body.get(3 + key_len) else {
        return Frame::Corrupt;
    };
    let tp_start = 4 + key_len;
    let Some(tp) = body.get(tp_start..tp_start + tp_len as usize) else {
        return Frame::Corrupt;
    };
    let traceparent = if tp.is_empty() {
        None
    } else {
        if std::str::from_utf8(tp).is_err() {
            return Frame::Corrupt;
        }
        // We only ever write well-formed values; anything else loses its header, not its record.
        Traceparent::from_bytes(tp)
    };
    Frame::Complete(
        Record {
            destination,
            key: Key::from(key),
            traceparent,
            payload: body[tp_start + tp_len as usize..].to_vec(),
        },
        4 + len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rec(i: usize) -> Record {
        Record {
            destination: if i % 5 == 0 {
                Destination::Heartbeats
            } else {
                Destination::Logs
            },
            key: Key::from(format!("k{}", i % 3).as_str()),
            traceparent: (i % 2 == 0).then(|| {
                let (t, s) = (format!("{:032x}", i + 1), format!("{:016x}", i + 1));
                crate::route::traceparent(Some(&t), Some(&s)).unwrap()
            }),
            payload: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    async fn read_all(spool: &Spool) -> Vec<(Record, SpoolPos)> {
        let mut all = Vec::new();
        while let Some(batch) = tokio::time::timeout(Duration::from_secs(5), spool.next_batch(7))
            .await
            .expect("spool read must not hang")
        {
            all.extend(batch);
        }
        all
    }

    #[tokio::test]
    async fn records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open_with_segment_size(dir.path(), 1 << 20, 200).unwrap();
        spool.add_writer();
        let recs: Vec<Record> = (0..100).map(rec).collect();
        for chunk in recs.chunks(9) {
            assert_eq!(spool.append(chunk), 0);
        }
        spool.writer_done();
        let got = read_all(&spool).await;
        assert_eq!(got.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(), recs);
        assert!(
            got.windows(2).all(|w| w[0].1 < w[1].1),
            "positions increase"
        );
    }

    #[tokio::test]
    async fn unacknowledged_records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<Record> = (0..50).map(rec).collect();
        {
            let spool = Spool::open_with_segment_size(dir.path(), 1 << 20, 300).unwrap();
            spool.append(&recs);
            let batch = spool.next_batch(20).await.unwrap();
            // Only the first 10 were acknowledged before the "crash".
            spool.commit(batch[9].1);
            spool.persist().unwrap();
        }
        let spool = Spool::open_with_segment_size(dir.path(), 1 << 20, 300).unwrap();
        let got = read_all(&spool).await;
        assert_eq!(
            got.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
            recs[10..].to_vec()
        );
    }

    #[tokio::test]
    async fn bound_drops_and_counts_and_commit_frees_space() {
        let dir = tempfile::tempdir().unwrap();
        let one = frame_size(&rec(1)) as u64;
        let spool = Spool::open_with_segment_size(dir.path(), one * 10, one * 2).unwrap();
        spool.add_writer();
        let recs: Vec<Record> = (0..15).map(|_| rec(1)).collect();
        // One append is one write into the current segment; segments roll between appends.
        let dropped: usize = recs.chunks(2).map(|c| spool.append(c)).sum();
        assert_eq!(dropped, 5);
        assert_eq!(spool.dropped().0, 5);
        assert!(spool.bytes() <= one * 10);
        let batch = spool.next_batch(100).await.unwrap();
        assert_eq!(batch.len(), 10);
        spool.commit(batch[9].1);
        assert!(
            spool.bytes() <= one * 2,
            "acknowledged segments are deleted"
        );
        assert_eq!(spool.append(&recs[..5]), 0);
    }

    #[tokio::test]
    async fn a_bound_below_the_segment_size_recovers_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let one = frame_size(&rec(1)) as u64;
        let spool = Spool::open(dir.path(), one * 8).unwrap();
        spool.add_writer();
        let dropped: usize = (0..20).map(|_| spool.append(&[rec(1)])).sum();
        assert_eq!(dropped, 12);
        let batch = spool.next_batch(100).await.unwrap();
        assert_eq!(batch.len(), 8);
        spool.commit(batch[7].1);
        assert_eq!(
            spool.append(&[rec(1), rec(1), rec(1)]),
            0,
            "space came back"
        );
    }

    #[tokio::test]
    async fn a_torn_tail_from_a_crash_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            spool.append(&[rec(1), rec(2)]);
        }
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.add_writer();
        spool.append(&[rec(3)]);
        spool.writer_done();
        let got: Vec<Record> = read_all(&spool).await.into_iter().map(|(r, _)| r).collect();
        assert_eq!(got, vec![rec(1), rec(2), rec(3)]);
    }

    #[tokio::test]
    async fn reader_waits_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::open(dir.path(), 1 << 20).unwrap());
        spool.add_writer();
        let reader = {
            let spool = spool.clone();
            tokio::spawn(async move { spool.next_batch(10).await })
        };
        tokio::task::yield_now().await;
        spool.append(&[rec(7)]);
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.unwrap()[0].0, rec(7));
    }
}

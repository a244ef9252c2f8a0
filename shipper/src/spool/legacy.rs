//! The spool format before checksums (`<id:020>.seg` segments of
//! `u32 len, u8 destination, u16 key len, key, u8 traceparent len,
//! traceparent, payload` frames and a `segment offset` position file): its
//! unacknowledged records are carried over into the current format once, on
//! the first start after an upgrade, so an upgrade loses nothing.
//!
//! While a carry-over is under way [`PENDING`] holds the old position: a
//! crash (or a carry-over that did not fit) before it completes leaves the
//! marker, and the next start carries over again from the old segments, which
//! are deleted only once the new position is saved and the marker removed.

use std::fs;
use std::io;
use std::path::Path;

use super::{segment, Saved, SpoolPos};
use crate::checkpoint::write_atomic;
use crate::event::Record;
use crate::route::{Destination, Key, Traceparent};

const EXTENSION: &str = "seg";
/// The marker of a carry-over not yet complete: `segment offset` of the old format.
pub(super) const PENDING: &str = "legacy.pending";
/// The old format's bound on one frame.
const MAX_FRAME: usize = 64 << 20;

/// The records of legacy segments not yet acknowledged, in order. Empty when
/// there are none (or when the position file shows the carry-over finished:
/// then the old segments are only left to delete). Otherwise [`PENDING`] is
/// written (fsynced) before anything else, until [`complete`].
pub(super) fn take(dir: &Path, saved: &Saved) -> io::Result<Vec<Record>> {
    let segments = segment::list(dir, EXTENSION)?;
    let pending = pending(dir);
    if segments.is_empty() {
        if pending.is_some() {
            fs::remove_file(dir.join(PENDING))?;
        }
        return Ok(Vec::new());
    }
    let from = match (pending, saved) {
        (Some(pos), _) => pos,
        (None, Saved::Current { .. }) => {
            remove(dir)?;
            return Ok(Vec::new());
        }
        (None, Saved::Legacy(pos)) => *pos,
        (None, Saved::None) => SpoolPos::default(),
    };
    write_atomic(
        &dir.join(PENDING),
        format!("{} {}\n", from.segment, from.offset).as_bytes(),
    )?;
    let mut out = Vec::new();
    for (&id, _) in segments.range(from.segment..) {
        let bytes = fs::read(dir.join(format!("{id:020}.{EXTENSION}")))?;
        let start = if id == from.segment {
            usize::try_from(from.offset).unwrap_or(usize::MAX)
        } else {
            0
        };
        let mut pos = start;
        while let Some((record, used)) = bytes.get(pos..).and_then(decode) {
            out.push(record);
            pos += used;
        }
        if pos < bytes.len() {
            crate::diag::warn(
                &format!(
                    "old spool segment {id}: {} bytes at offset {pos} are not a whole record; skipped",
                    bytes.len() - pos
                ),
                &[],
            );
        }
    }
    if out.is_empty() {
        // Nothing left to carry: done already.
        complete(dir)?;
    }
    Ok(out)
}

/// The old position of a carry-over not yet complete.
pub(super) fn pending(dir: &Path) -> Option<SpoolPos> {
    let text = fs::read_to_string(dir.join(PENDING)).ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Some(SpoolPos { segment, offset }),
        _ => Some(SpoolPos::default()),
    }
}

/// The carry-over is complete (the new position saved): the marker goes,
/// then the old segments.
pub(super) fn complete(dir: &Path) -> io::Result<()> {
    fs::remove_file(dir.join(PENDING))?;
    if let Ok(d) = fs::File::open(dir) {
        d.sync_all()?;
    }
    remove(dir)
}

/// Deletes the legacy segments.
pub(super) fn remove(dir: &Path) -> io::Result<()> {
    for id in segment::list(dir, EXTENSION)?.into_keys() {
        fs::remove_file(dir.join(format!("{id:020}.{EXTENSION}")))?;
    }
    Ok(())
}

fn decode(b: &[u8]) -> Option<(Record, usize)> {
    let len = usize::try_from(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)).ok()?;
    if !(4..=MAX_FRAME).contains(&len) {
        return None;
    }
    let body = b.get(4..4 + len)?;
    let destination = Destination::from_byte(body[0])?;
    let key_len = usize::from(u16::from_le_bytes([body[1], body[2]]));
    let key = body.get(3..3 + key_len)?;
    let tp_len = usize::from(*body.get(3 + key_len)?);
    let tp_start = 4 + key_len;
    let tp = body.get(tp_start..tp_start + tp_len)?;
    Some((
        Record {
            destination,
            key: Key::from(key),
            traceparent: Traceparent::from_bytes(tp),
            payload: body.get(tp_start + tp_len..)?.to_vec(),
        },
        4 + len,
    ))
}

/// Writes records in the legacy format (for the carry-over test).
#[cfg(test)]
pub(super) fn encode(r: &Record, out: &mut Vec<u8>) {
    let tp = r.traceparent.as_deref().unwrap_or("").as_bytes();
    let len = 4 + r.key.len() + tp.len() + r.payload.len();
    out.extend_from_slice(&u32::try_from(len).unwrap().to_le_bytes());
    out.push(r.destination.to_byte());
    out.extend_from_slice(&u16::try_from(r.key.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&r.key);
    out.push(u8::try_from(tp.len()).unwrap());
    out.extend_from_slice(tp);
    out.extend_from_slice(&r.payload);
}

//! One spooled record on disk: a checksummed frame.
//!
//! ```text
//! header (24 bytes, little endian)
//!   magic     4  b"MWs1"
//!   body_len  4  u32, at most MAX_BODY
//!   seq       8  u64, the record's spool sequence number (its event.id position)
//!   body_crc  4  CRC-32C of the body
//!   head_crc  4  CRC-32C of the 20 bytes before it
//! body
//!   destination 1, key_len 2 (u16), key, traceparent_len 1, traceparent, payload
//! ```
//!
//! The header checksum makes a corrupt length detectable before the body is
//! read; the magic lets the reader find the next good frame after a damaged
//! stretch; the body checksum catches damage inside a record. Every length is
//! checked on the way in and out: nothing is cast in a way that could wrap.

use crate::event::Record;
use crate::route::{Destination, Key, Traceparent};

pub const MAGIC: [u8; 4] = *b"MWs1";
pub const HEADER_LEN: usize = 24;
/// Upper bound of a body. The largest record the shipper makes is
/// `--max-record-bytes` (at most 16 MiB) plus a short key and header.
pub const MAX_BODY: usize = 32 << 20;
/// A body holds at least its destination and the two length fields.
const MIN_BODY: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("a spool frame of {0} bytes exceeds the limit of {MAX_BODY} bytes")]
    TooLarge(usize),
    #[error("a record key of {0} bytes exceeds 65,535 bytes")]
    KeyTooLong(usize),
}

fn body_len(r: &Record) -> Result<usize, EncodeError> {
    if r.key.len() > usize::from(u16::MAX) {
        return Err(EncodeError::KeyTooLong(r.key.len()));
    }
    let tp = r.traceparent.as_ref().map_or(0, |t| t.len());
    let len = MIN_BODY + r.key.len() + tp + r.payload.len();
    if len > MAX_BODY {
        return Err(EncodeError::TooLarge(len));
    }
    Ok(len)
}

/// Bytes the frame of `r` takes on disk.
pub fn encoded_len(r: &Record) -> Result<usize, EncodeError> {
    Ok(HEADER_LEN + body_len(r)?)
}

/// Appends the frame of `r` with sequence number `seq` to `out`.
pub fn encode(r: &Record, seq: u64, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = body_len(r)?;
    let len32 = u32::try_from(len).map_err(|_| EncodeError::TooLarge(len))?;
    let key_len = u16::try_from(r.key.len()).map_err(|_| EncodeError::KeyTooLong(r.key.len()))?;
    let tp = r.traceparent.as_deref().unwrap_or("").as_bytes();
    // A Traceparent is always 55 bytes.
    let tp_len = u8::try_from(tp.len()).unwrap_or(0);
    let tp = &tp[..usize::from(tp_len)];
    let start = out.len();
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out.push(r.destination.to_byte());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&r.key);
    out.push(tp_len);
    out.extend_from_slice(tp);
    out.extend_from_slice(&r.payload);
    let body_crc = crc32c::crc32c(&out[start + HEADER_LEN..]);
    let head = &mut out[start..start + HEADER_LEN];
    head[..4].copy_from_slice(&MAGIC);
    head[4..8].copy_from_slice(&len32.to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head[16..20].copy_from_slice(&body_crc.to_le_bytes());
    let head_crc = crc32c::crc32c(&head[..20]);
    head[20..24].copy_from_slice(&head_crc.to_le_bytes());
    Ok(())
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A good frame of `len` bytes.
    Frame {
        seq: u64,
        record: Record,
        len: usize,
    },
    /// A good header (or too few bytes to tell); the frame needs `needed` bytes.
    Incomplete { needed: usize },
    /// Not a valid header here: damaged data, or not a frame start.
    BadHeader,
    /// A valid header whose body is damaged: the frame's `len` bytes can be skipped.
    BadBody { seq: u64, len: usize },
}

struct Header {
    body_len: usize,
    seq: u64,
    body_crc: u32,
}

fn le32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

fn header(b: &[u8]) -> Option<Header> {
    let h = b.get(..HEADER_LEN)?;
    if h[..4] != MAGIC || crc32c::crc32c(&h[..20]) != le32(&h[20..24]) {
        return None;
    }
    let body_len = usize::try_from(le32(&h[4..8])).ok()?;
    if !(MIN_BODY..=MAX_BODY).contains(&body_len) {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[8..16]);
    Some(Header {
        body_len,
        seq: u64::from_le_bytes(seq),
        body_crc: le32(&h[16..20]),
    })
}

/// Decodes the frame at the start of `b`.
pub fn decode(b: &[u8]) -> Decoded {
    if b.len() < HEADER_LEN {
        return Decoded::Incomplete { needed: HEADER_LEN };
    }
    let Some(h) = header(b) else {
        return Decoded::BadHeader;
    };
    let len = HEADER_LEN + h.body_len;
    let Some(body) = b.get(HEADER_LEN..len) else {
        return Decoded::Incomplete { needed: len };
    };
    let bad = Decoded::BadBody { seq: h.seq, len };
    if crc32c::crc32c(body) != h.body_crc {
        return bad;
    }
    match record(body) {
        Some(record) => Decoded::Frame {
            seq: h.seq,
            record,
            len,
        },
        None => bad,
    }
}

fn record(body: &[u8]) -> Option<Record> {
    let destination = Destination::from_byte(*body.first()?)?;
    let key_len = usize::from(u16::from_le_bytes([*body.get(1)?, *body.get(2)?]));
    let key = body.get(3..3 + key_len)?;
    let tp_len = usize::from(*body.get(3 + key_len)?);
    let tp_start = 4 + key_len;
    let tp = body.get(tp_start..tp_start + tp_len)?;
    let payload = body.get(tp_start + tp_len..)?;
    // Room for the event.id the spool adds when it reads the record back.
    let mut owned = Vec::with_capacity(payload.len() + crate::event_id::SPLICED_LEN);
    owned.extend_from_slice(payload);
    Some(Record {
        destination,
        key: Key::from(key),
        traceparent: if tp.is_empty() {
            None
        } else {
            Some(Traceparent::from_bytes(tp)?)
        },
        payload: owned,
    })
}

/// The offset of the next valid frame header at or after `from` in `b`, if any.
pub fn find_header(b: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = b
        .get(at..)
        .and_then(|rest| memchr::memmem::find(rest, &MAGIC))
    {
        let pos = at + i;
        if header(&b[pos..]).is_some() {
            return Some(pos);
        }
        at = pos + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn rec(i: usize) -> Record {
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

    #[test]
    fn round_trip_and_every_damage_is_detected() {
        let mut buf = Vec::new();
        encode(&rec(2), 77, &mut buf).unwrap();
        assert_eq!(buf.len(), encoded_len(&rec(2)).unwrap());
        match decode(&buf) {
            Decoded::Frame { seq, record, len } => {
                assert_eq!((seq, len), (77, buf.len()));
                assert_eq!(record, rec(2));
            }
            other => panic!("{other:?}"),
        }
        // Every single-bit flip anywhere is caught.
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let d = decode(&bad);
                assert!(
                    matches!(d, Decoded::BadHeader | Decoded::BadBody { .. }),
                    "flip {byte}.{bit} gave {d:?}"
                );
                if byte >= HEADER_LEN {
                    assert!(matches!(d, Decoded::BadBody { seq: 77, .. }), "{d:?}");
                }
            }
        }
        // Every truncation is incomplete, never a frame.
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Decoded::Incomplete { .. }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_records_are_refused() {
        let mut r = rec(1);
        r.payload = vec![b'x'; MAX_BODY];
        assert!(matches!(encoded_len(&r), Err(EncodeError::TooLarge(_))));
        let mut out = Vec::new();
        assert!(encode(&r, 1, &mut out).is_err());
        assert!(out.is_empty());
        r.payload = b"{}".to_vec();
        r.key = Key::from(vec![b'k'; 70_000].as_slice());
        assert!(matches!(encoded_len(&r), Err(EncodeError::KeyTooLong(_))));
    }

    #[test]
    fn a_header_is_found_after_garbage() {
        let mut buf = b"garbage MWs1 not a header".to_vec();
        let at = buf.len();
        encode(&rec(3), 5, &mut buf).unwrap();
        assert_eq!(find_header(&buf, 0), Some(at));
        assert_eq!(find_header(&buf, at + 1), None);
    }

    proptest! {
        /// Random bytes never panic the decoder and never decode as a frame
        /// unless both checksums hold (which random data practically never does).
        #[test]
        fn random_bytes_are_never_a_frame(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let is_frame = matches!(decode(&bytes), Decoded::Frame { .. });
            prop_assert!(!is_frame);
            let _ = find_header(&bytes, 0);
        }

        /// A stream of frames with random damage at a random place: every
        /// decoded frame is one that was written, in order.
        #[test]
        fn damaged_streams_yield_only_written_frames(
            n in 1usize..20,
            at in any::<prop::sample::Index>(),
            junk in proptest::collection::vec(any::<u8>(), 1..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            for i in 0..n {
                encode(&rec(i), i as u64, &mut buf).unwrap();
            }
            let pos = at.index(buf.len());
            for (k, j) in junk.iter().enumerate() {
                if let Some(b) = buf.get_mut(pos + k) {
                    *b ^= j | 1;
                }
            }
            let end = cut.index(buf.len() + 1);
            let buf = &buf[..end];
            let mut seen = Vec::new();
            let mut i = 0;
            while i < buf.len() {
                match decode(&buf[i..]) {
                    Decoded::Frame { seq, record, len } => {
                        prop_assert_eq!(&record, &rec(usize::try_from(seq).unwrap()));
                        seen.push(seq);
                        i += len;
                    }
                    Decoded::BadBody { len, .. } => i += len,
                    Decoded::BadHeader => match find_header(buf, i + 1) {
                        Some(next) => i = next,
                        None => break,
                    },
                    Decoded::Incomplete { .. } => break,
                }
            }
            prop_assert!(seen.windows(2).all(|w| w[0] < w[1]), "{:?}", seen);
        }
    }
}

//! Where a record goes: heartbeats to the heartbeats topic, everything else to
//! the logs topic; and the W3C `traceparent` header rebuilt from the line.

use meshwatch_ecs::HEARTBEAT_DATASET;

/// Which configured topic a record is produced to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Logs,
    Heartbeats,
}

impl Destination {
    /// One byte for the spool's frame format.
    pub fn to_byte(self) -> u8 {
        match self {
            Destination::Logs => 0,
            Destination::Heartbeats => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Destination::Logs),
            1 => Some(Destination::Heartbeats),
            _ => None,
        }
    }
}

/// The same rule as `meshwatch_ecs::heartbeat::is_heartbeat` (`event.dataset` equals
/// the heartbeat dataset), applied to the one field the fast path extracts.
pub fn destination(event_dataset: Option<&str>) -> Destination {
    if event_dataset == Some(HEARTBEAT_DATASET) {
        Destination::Heartbeats
    } else {
        Destination::Logs
    }
}

/// Length of a version-00 `traceparent`: `00-` 32 hex `-` 16 hex `-01`.
pub const TRACEPARENT_LEN: usize = 55;

/// A W3C `traceparent` value held inline: building one per record costs no
/// allocation. Always ASCII; reads as a `&str`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Traceparent([u8; TRACEPARENT_LEN]);

impl Traceparent {
    /// Takes a value as we write it (from the spool); `None` for anything else.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(b).ok()?;
        let rest = s.strip_prefix("00-")?.strip_suffix("-01")?;
        let (t, sp) = rest.split_once('-')?;
        traceparent(Some(t), Some(sp))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from validated lowercase hex and ASCII dashes.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The value as bytes, without the UTF-8 check of [`Self::as_str`]
    /// (the header of every record).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for Traceparent {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Traceparent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `00-<trace.id>-<span.id>-01` when both ids are well-formed W3C ids
/// (lowercase hex, 32 and 16 digits, not all zero); otherwise none.
pub fn traceparent(trace_id: Option<&str>, span_id: Option<&str>) -> Option<Traceparent> {
    let (t, s) = (trace_id?, span_id?);
    if !(valid_id(t, 32) && valid_id(s, 16)) {
        return None;
    }
    let mut b = [0u8; TRACEPARENT_LEN];
    b[..3].copy_from_slice(b"00-");
    b[3..35].copy_from_slice(t.as_bytes());
    b[35] = b'-';
    b[36..52].copy_from_slice(s.as_bytes());
    b[52..].copy_from_slice(b"-01");
    Some(Traceparent(b))
}

/// Key bytes kept inline up to this length (instance ids are short).
const KEY_INLINE: usize = 38;

/// A record key (`service.instance.id`): inline when short, so that the common
/// case costs no allocation per record. Reads as `&[u8]`.
#[derive(Clone, PartialEq, Eq)]
pub enum Key {
    Inline { len: u8, buf: [u8; KEY_INLINE] },
    Heap(Box<[u8]>),
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Self {
        if b.len() <= KEY_INLINE {
            let mut buf = [0u8; KEY_INLINE];
            buf[..b.len()].copy_from_slice(b);
            Key::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Key::Heap(b.into())
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::from(s.as_bytes())
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, buf } => &buf[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Key {
    fn eq(&self, other: &&[u8; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<[u8]> for Key {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

fn valid_id(id: &str, len: usize) -> bool {
    let b = id.as_bytes();
    if b.len() != len {
        return false;
    }
    // No early exit: the loop over 16 or 32 bytes vectorises.
    let (mut hex, mut nonzero) = (true, false);
    for &c in b {
        hex &= c.is_ascii_digit() | (b'a'..=b'f').contains(&c);
        nonzero |= c != b'0';
    }
    hex && nonzero
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    #[test]
    fn agrees_with_the_library_heartbeat_rule() {
        for dataset in [Some(HEARTBEAT_DATASET), Some("order.log"), None] {
            let mut obj = Map::new();
            if let Some(d) = dataset {
                obj.insert("event.dataset".into(), Value::String(d.into()));
            }
            let expected = meshwatch_ecs::heartbeat::is_heartbeat(&obj);
            assert_eq!(
                destination(dataset) == Destination::Heartbeats,
                expected,
                "{dataset:?}"
            );
        }
    }

    #[test]
    fn traceparent_only_from_valid_ids() {
        let t = "0af7651916cd43dd8448eb211c80319c";
        let s = "b7ad6b7169203331";
        assert_eq!(
            traceparent(Some(t), Some(s)).as_deref(),
            Some(&*format!("00-{t}-{s}-01"))
        );
        assert_eq!(traceparent(Some(t), None), None);
        assert_eq!(traceparent(None, Some(s)), None);
        assert_eq!(traceparent(Some(&t.to_uppercase()), Some(s)), None);
        assert_eq!(traceparent(Some(&"0".repeat(32)), Some(s)), None);
        assert_eq!(traceparent(Some(t), Some("b7ad")), None);
    }

    #[test]
    fn traceparent_bytes_round_trip() {
        let t = "0af7651916cd43dd8448eb211c80319c";
        let s = "b7ad6b7169203331";
        let tp = traceparent(Some(t), Some(s)).unwrap();
        assert_eq!(Traceparent::from_bytes(tp.as_bytes()), Some(tp));
        assert_eq!(tp.as_bytes(), tp.as_str().as_bytes());
        assert_eq!(format!("{tp:?}"), format!("\"00-{t}-{s}-01\""));
        assert_eq!(Traceparent::from_bytes(b"00-abc-01"), None);
        assert_eq!(
            Traceparent::from_bytes(format!("01-{t}-{s}-01").as_bytes()),
            None
        );
        assert_eq!(Traceparent::from_bytes(b"\xff"), None);
    }

    #[test]
    fn keys_short_and_long() {
        let short = Key::from("order-1");
        assert!(matches!(short, Key::Inline { .. }));
        assert_eq!(short, b"order-1");
        assert_eq!(&*short, b"order-1");
        let exact = "k".repeat(KEY_INLINE);
        assert!(matches!(Key::from(exact.as_str()), Key::Inline { .. }));
        assert_eq!(&*Key::from(exact.as_str()), exact.as_bytes());
        let long = "x".repeat(KEY_INLINE + 1);
        let k = Key::from(long.as_str());
        assert!(matches!(k, Key::Heap(_)));
        assert_eq!(&*k, long.as_bytes());
        assert_eq!(&*Key::from(""), b"");
        assert_ne!(Key::from("a"), Key::from("b"));
    }

    #[test]
    fn destination_byte_round_trip() {
        for d in [Destination::Logs, Destination::Heartbeats] {
            assert_eq!(Destination::from_byte(d.to_byte()), Some(d));
        }
        assert_eq!(Destination::from_byte(9), None);
    }
}

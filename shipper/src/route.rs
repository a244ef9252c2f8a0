//! Where a record goes: heartbeats to the heartbeats topic, everything else to
//! the logs topic; and the W3C `traceparent` header rebuilt from the line.

use meshwatch::ecs::HEARTBEAT_DATASET;

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

/// The same rule as `meshwatch::heartbeat::is_heartbeat` (`event.dataset` equals
/// the heartbeat dataset), applied to the one field the fast path extracts.
pub fn destination(event_dataset: Option<&str>) -> Destination {
    if event_dataset == Some(HEARTBEAT_DATASET) {
        Destination::Heartbeats
    } else {
        Destination::Logs
    }
}

/// `00-<trace.id>-<span.id>-01` when both ids are well-formed W3C ids
/// (lowercase hex, 32 and 16 digits, not all zero); otherwise none.
pub fn traceparent(trace_id: Option<&str>, span_id: Option<&str>) -> Option<String> {
    let (t, s) = (trace_id?, span_id?);
    (valid_id(t, 32) && valid_id(s, 16)).then(|| format!("00-{t}-{s}-01"))
}

fn valid_id(id: &str, len: usize) -> bool {
    id.len() == len
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0')
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
            let expected = meshwatch::heartbeat::is_heartbeat(&obj);
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
    fn destination_byte_round_trip() {
        for d in [Destination::Logs, Destination::Heartbeats] {
            assert_eq!(Destination::from_byte(d.to_byte()), Some(d));
        }
        assert_eq!(Destination::from_byte(9), None);
    }
}

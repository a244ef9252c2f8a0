//! Elastic Common Schema: the field names every meshwatch line uses, RFC 3339
//! timestamps, the identity of a running service instance, and the heartbeat
//! line. No async runtime and no gRPC: the sidecar shipper links this.
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub mod heartbeat;

/// The ECS version our lines claim to follow.
pub const ECS_VERSION: &str = "8.11.0";
/// `event.dataset` of heartbeat lines.
pub const HEARTBEAT_DATASET: &str = "meshwatch.heartbeat";

/// Dotted ECS field names, written at the top level of every JSON line.
pub mod field {
    pub const TIMESTAMP: &str = "@timestamp";
    pub const LOG_LEVEL: &str = "log.level";
    pub const LOG_LOGGER: &str = "log.logger";
    pub const MESSAGE: &str = "message";
    pub const ECS_VERSION: &str = "ecs.version";
    pub const SERVICE_NAME: &str = "service.name";
    pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";
    pub const SERVICE_VERSION: &str = "service.version";
    pub const EVENT_DATASET: &str = "event.dataset";
    pub const EVENT_KIND: &str = "event.kind";
    pub const EVENT_OUTCOME: &str = "event.outcome";
    /// Duration in nanoseconds (ECS).
    pub const EVENT_DURATION: &str = "event.duration";
    pub const TRACE_ID: &str = "trace.id";
    pub const SPAN_ID: &str = "span.id";
    pub const PARENT_ID: &str = "parent.id";
    pub const RPC_SYSTEM: &str = "rpc.system";
    pub const RPC_SERVICE: &str = "rpc.service";
    pub const RPC_METHOD: &str = "rpc.method";
    pub const RPC_STATUS: &str = "rpc.grpc.status_code";
    pub const ERROR_MESSAGE: &str = "error.message";
    pub const HEARTBEAT_STATUS: &str = "heartbeat.status";
    pub const HEARTBEAT_SEQUENCE: &str = "heartbeat.sequence";
    pub const HEARTBEAT_INTERVAL_MS: &str = "heartbeat.interval_ms";
    pub const HEARTBEAT_TARGET_SERVICE: &str = "heartbeat.target_service";
}

/// Who is writing: a service name, one id per running process, and the build version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceIdentity {
    pub name: String,
    /// Unique per process start: a restart is a new instance.
    pub instance_id: String,
    pub version: String,
}

impl ServiceIdentity {
    /// A fresh identity; `instance_id` is `<name>-<12 random hex digits>`.
    pub fn new(name: &str, version: &str) -> Self {
        let suffix: u64 = rand::random::<u64>() & 0xffff_ffff_ffff;
        Self {
            name: name.to_owned(),
            instance_id: format!("{name}-{suffix:012x}"),
            version: version.to_owned(),
        }
    }
}

/// `2026-11-25T06:30:00.123Z`: RFC 3339, UTC, milliseconds.
const TIMESTAMP_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Formats `t` as RFC 3339 in UTC with millisecond precision,
/// e.g. `2026-11-25T06:30:00.123Z`. Instants before 1970 or past year 9999
/// are clamped to those bounds (a line always gets a valid timestamp).
pub fn format_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let nanos = i128::try_from(since.as_nanos()).unwrap_or(i128::MAX);
    let dt = OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or_else(|_| time::PrimitiveDateTime::MAX.assume_utc());
    dt.format(TIMESTAMP_FORMAT)
        .unwrap_or_else(|_| "9999-12-31T23:59:59.999Z".to_owned())
}

/// Parses an RFC 3339 timestamp with any offset and fractional precision
/// (calendar-checked: `02-31` and `+99:99` are refused). Returns `None` for
/// anything else, including instants before 1970.
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let nanos = u64::try_from(dt.unix_timestamp_nanos()).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_584_600_123);
        assert_eq!(format_timestamp(t), "2026-11-25T05:30:00.123Z");
        // Leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_timestamp(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parse_inverts_format() {
        for ms in [
            0u64,
            1,
            999,
            951_782_400_000,
            1_795_584_600_123,
            4_102_444_799_999,
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t), "ms={ms}");
        }
    }

    #[test]
    fn parses_offsets_and_precision() {
        let z = parse_timestamp("2026-11-25T05:30:00Z").unwrap();
        assert_eq!(parse_timestamp("2026-11-25T06:30:00+01:00"), Some(z));
        assert_eq!(parse_timestamp("2026-11-24T23:30:00-06:00"), Some(z));
        let fine = parse_timestamp("2026-11-25T05:30:00.123456789Z").unwrap();
        assert_eq!(
            fine.duration_since(z).unwrap(),
            Duration::new(0, 123_456_789)
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2026-11-25",
            "2026-13-01T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T05:30:00",
            "2026-11-25T05:30:00.Z",
            "2026-11-25T05:30:00+0100",
            "1969-12-31T23:59:59Z",
            "20x6-11-25T05:30:00Z",
            "2026-02-31T00:00:00Z",
            "2026-11-25T05:30:00+99:99",
            "2026-11-25T05:30:00+24:00",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s:?}");
        }
    }

    #[test]
    fn instance_ids_are_unique_and_named() {
        let a = ServiceIdentity::new("order", "0.1.0");
        let b = ServiceIdentity::new("order", "0.1.0");
        assert_ne!(a.instance_id, b.instance_id);
        assert!(a.instance_id.starts_with("order-"));
        assert_eq!(a.instance_id.len(), "order-".len() + 12);
    }
}

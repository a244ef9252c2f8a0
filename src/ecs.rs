//! Elastic Common Schema: the field names every meshwatch line uses, RFC 3339
//! timestamps, and the identity of a running service instance.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Formats `t` as RFC 3339 in UTC with millisecond precision,
/// e.g. `2026-11-25T06:30:00.123Z`.
pub fn format_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses an RFC 3339 timestamp with any offset and fractional precision.
/// Returns `None` for anything else, including instants before 1970.
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac[..digits].bytes().enumerate().take(9) {
            nanos += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01, proleptic Gregorian.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

//! The caller's remaining time budget (from its `grpc-timeout` header), so
//! downstream calls never outlive the request that made them.

use std::time::Duration;

use tokio::time::Instant;

/// When the current request must be answered.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
        }
    }

    /// The caller's deadline from the value of its `grpc-timeout` header,
    /// capped at `max`; `max` when the caller sent none (or an unreadable one).
    pub fn from_grpc_timeout(header: Option<&str>, max: Duration) -> Self {
        let caller = header.and_then(parse_grpc_timeout);
        Self::after(caller.map_or(max, |t| t.min(max)))
    }

    pub fn instant(&self) -> Instant {
        self.at
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn is_expired(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// Parses the gRPC wire format of a timeout: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    // ASCII only: splitting off the unit byte must not cut a character.
    if !value.is_ascii() || value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    // `u64::from_str` would also take a leading `+`, which the wire format
    // does not allow.
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_junk() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("+5S"), None);
        assert_eq!(parse_grpc_timeout("é"), None);
        assert_eq!(parse_grpc_timeout("5é"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn caller_deadline_is_capped() {
        let d = Deadline::from_grpc_timeout(Some("30S"), Duration::from_secs(10));
        assert_eq!(d.remaining(), Duration::from_secs(10));
        let d = Deadline::from_grpc_timeout(None, Duration::from_secs(10));
        assert_eq!(d.remaining(), Duration::from_secs(10));
        let d = Deadline::from_grpc_timeout(Some("200m"), Duration::from_secs(10));
        assert_eq!(d.remaining(), Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(d.is_expired());
    }
}

//! Alerts: what the monitor raises and resolves, and their ECS JSON form
//! (the value produced to `meshwatch.alerts`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshwatch_ecs::{self as ecs, field};
use serde_json::{json, Map, Value};

/// `event.dataset` of alert lines.
pub const ALERT_DATASET: &str = "meshwatch.alert";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// Server-error rate far above the learned baseline.
    ErrorRate,
    /// p99 latency far above the learned baseline.
    Latency,
    /// A service changed serving status (firing = not serving).
    StatusChange,
    /// The monitor refused input at one of its limits (service "monitor").
    Capacity,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "anomaly_error_rate",
            Self::Latency => "anomaly_latency",
            Self::StatusChange => "status_change",
            Self::Capacity => "capacity",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert event. A firing alert and its resolution share `id` and `started_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub id: String,
    pub kind: AlertKind,
    /// Short service name (registry key).
    pub service: String,
    pub state: AlertState,
    pub message: String,
    /// Window the figures cover (zero for status changes).
    pub window: Duration,
    /// Error rate (0..1), p99 in ms, or 1/0 for SERVING/NOT_SERVING.
    pub observed: f64,
    pub baseline: f64,
    pub threshold: f64,
    pub requests: u64,
    /// At most a handful: evidence, not a log.
    pub example_trace_ids: Vec<String>,
    pub started_at: SystemTime,
    pub at: SystemTime,
}

/// `<kind>/<service>/<unix ms of the start>`: stable across firing and
/// resolution. (Capacity alerts put the limit's name where the service is.)
pub fn alert_id(kind: AlertKind, service: &str, started_at: SystemTime) -> String {
    let ms = started_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    format!("{}/{service}/{ms}", kind.as_str())
}

impl Alert {
    /// The ECS JSON line (no trailing newline). The alerted service is
    /// `service.name` (so it filters like that service's own lines); the
    /// monitor is the `observer`; figures are under `alert.*`.
    pub fn to_json_line(&self) -> String {
        let level = match self.state {
            AlertState::Firing => "warn",
            AlertState::Resolved => "info",
        };
        let mut obj = Map::new();
        let mut put = |k: &str, v: Value| {
            obj.insert(k.to_owned(), v);
        };
        put(field::TIMESTAMP, ecs::format_timestamp(self.at).into());
        put(field::LOG_LEVEL, level.into());
        put(field::MESSAGE, self.message.clone().into());
        put(field::ECS_VERSION, ecs::ECS_VERSION.into());
        put(field::SERVICE_NAME, self.service.clone().into());
        put(field::EVENT_DATASET, ALERT_DATASET.into());
        put(field::EVENT_KIND, "alert".into());
        put("event.action", self.kind.as_str().into());
        put("event.start", ecs::format_timestamp(self.started_at).into());
        if self.state == AlertState::Resolved {
            put("event.end", ecs::format_timestamp(self.at).into());
        }
        put("observer.type", "monitor".into());
        put("observer.product", "meshwatch-monitor".into());
        put("alert.id", self.id.clone().into());
        put("alert.kind", self.kind.as_str().into());
        put("alert.state", self.state.as_str().into());
        put("alert.window_ms", json!(self.window.as_millis() as u64));
        put("alert.observed", json!(finite(self.observed)));
        put("alert.baseline", json!(finite(self.baseline)));
        put("alert.threshold", json!(finite(self.threshold)));
        put("alert.requests", json!(self.requests));
        put("alert.example_trace_ids", json!(self.example_trace_ids));
        Value::Object(obj).to_string()
    }
}

/// JSON has no infinity; clamp to a large finite number.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else if x.is_nan() {
        0.0
    } else {
        f64::MAX.copysign(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_is_ecs_shaped() {
        let start = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let alert = Alert {
            id: alert_id(AlertKind::ErrorRate, "order", start),
            kind: AlertKind::ErrorRate,
            service: "order".into(),
            state: AlertState::Resolved,
            message: "recovered".into(),
            window: Duration::from_secs(60),
            observed: 0.01,
            baseline: 0.0,
            threshold: 0.05,
            requests: 120,
            example_trace_ids: vec!["4bf92f3577b34da6a3ce929d0e0e4736".into()],
            started_at: start,
            at: start + Duration::from_secs(90),
        };
        let v: Value = serde_json::from_str(&alert.to_json_line()).expect("valid JSON");
        assert_eq!(v["alert.id"], "anomaly_error_rate/order/1795000000123");
        assert_eq!(v["service.name"], "order");
        assert_eq!(v["event.kind"], "alert");
        assert_eq!(v["log.level"], "info");
        assert_eq!(v["alert.window_ms"], 60_000);
        assert_eq!(v["alert.requests"], 120);
        assert_eq!(v["event.start"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["event.end"], "2026-11-18T11:08:10.123Z");
        assert!(ecs::parse_timestamp(v["@timestamp"].as_str().expect("string")).is_some());
    }
}

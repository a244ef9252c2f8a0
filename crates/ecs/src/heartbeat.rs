//! The heartbeat line: what a service says about itself every interval, and
//! its JSON form (written by the runtime's emitter, parsed by the monitor).

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate as ecs;
use crate::field;

/// Default time between two heartbeats.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// What the instance reports about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeartbeatStatus {
    /// Alive and ready to serve.
    Up,
    /// Alive but not ready (starting, draining, or a dependency it needs is missing).
    NotReady,
    /// Stopped gracefully; the last heartbeat of this instance.
    Down,
}

impl HeartbeatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::NotReady => "not_ready",
            Self::Down => "down",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(Self::Up),
            "not_ready" => Some(Self::NotReady),
            "down" => Some(Self::Down),
            _ => None,
        }
    }
}

/// Why a JSON object is not a valid heartbeat.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeartbeatError {
    #[error("not a heartbeat: event.dataset is not {}", ecs::HEARTBEAT_DATASET)]
    NotHeartbeat,
    #[error("heartbeat field {0} is missing or has the wrong type")]
    Field(&'static str),
    #[error("heartbeat field {field} has an invalid value {value:?}")]
    Value { field: &'static str, value: String },
}

/// One heartbeat. `sequence` starts at 1 for each instance and increases by one.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub timestamp: SystemTime,
    pub service_name: String,
    pub instance_id: String,
    pub version: String,
    pub status: HeartbeatStatus,
    pub sequence: u64,
    pub interval: Duration,
    /// Set only on a shipper's own heartbeat: the service whose lines it ships.
    pub target_service: Option<String>,
}

impl Heartbeat {
    /// The JSON line (no trailing newline), ECS fields at the top level.
    pub fn to_json_line(&self) -> String {
        let mut obj = Map::new();
        let mut put = |k: &str, v: Value| {
            obj.insert(k.to_owned(), v);
        };
        put(
            field::TIMESTAMP,
            ecs::format_timestamp(self.timestamp).into(),
        );
        put(field::LOG_LEVEL, "info".into());
        put(
            field::MESSAGE,
            format!("heartbeat: {}", self.status.as_str()).into(),
        );
        put(field::ECS_VERSION, ecs::ECS_VERSION.into());
        put(field::SERVICE_NAME, self.service_name.clone().into());
        put(field::SERVICE_INSTANCE_ID, self.instance_id.clone().into());
        put(field::SERVICE_VERSION, self.version.clone().into());
        put(field::EVENT_DATASET, ecs::HEARTBEAT_DATASET.into());
        put(field::EVENT_KIND, "state".into());
        put(field::HEARTBEAT_STATUS, self.status.as_str().into());
        put(field::HEARTBEAT_SEQUENCE, self.sequence.into());
        put(
            field::HEARTBEAT_INTERVAL_MS,
            u64::try_from(self.interval.as_millis())
                .unwrap_or(u64::MAX)
                .into(),
        );
        if let Some(target) = &self.target_service {
            put(field::HEARTBEAT_TARGET_SERVICE, target.clone().into());
        }
        Value::Object(obj).to_string()
    }

    /// Reads a heartbeat from a parsed JSON line.
    pub fn from_json(obj: &Map<String, Value>) -> Result<Self, HeartbeatError> {
        if !is_heartbeat(obj) {
            return Err(HeartbeatError::NotHeartbeat);
        }
        let text = |name: &'static str| -> Result<&str, HeartbeatError> {
            obj.get(name)
                .and_then(Value::as_str)
                .ok_or(HeartbeatError::Field(name))
        };
        let number = |name: &'static str| -> Result<u64, HeartbeatError> {
            obj.get(name)
                .and_then(Value::as_u64)
                .ok_or(HeartbeatError::Field(name))
        };
        let raw_ts = text(field::TIMESTAMP)?;
        let timestamp = ecs::parse_timestamp(raw_ts).ok_or_else(|| HeartbeatError::Value {
            field: field::TIMESTAMP,
            value: raw_ts.to_owned(),
        })?;
        let raw_status = text(field::HEARTBEAT_STATUS)?;
        let status = HeartbeatStatus::parse(raw_status).ok_or_else(|| HeartbeatError::Value {
            field: field::HEARTBEAT_STATUS,
            value: raw_status.to_owned(),
        })?;
        let service_name = text(field::SERVICE_NAME)?;
        if service_name.is_empty() {
            return Err(HeartbeatError::Value {
                field: field::SERVICE_NAME,
                value: String::new(),
            });
        }
        let instance_id = text(field::SERVICE_INSTANCE_ID)?;
        if instance_id.is_empty() {
            return Err(HeartbeatError::Value {
                field: field::SERVICE_INSTANCE_ID,
                value: String::new(),
            });
        }
        Ok(Self {
            timestamp,
            service_name: service_name.to_owned(),
            instance_id: instance_id.to_owned(),
            version: obj
                .get(field::SERVICE_VERSION)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            status,
            sequence: number(field::HEARTBEAT_SEQUENCE)?,
            interval: Duration::from_millis(number(field::HEARTBEAT_INTERVAL_MS)?),
            target_service: obj
                .get(field::HEARTBEAT_TARGET_SERVICE)
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// True when the object is a heartbeat line (`event.dataset` is the heartbeat dataset).
pub fn is_heartbeat(obj: &Map<String, Value>) -> bool {
    obj.get(field::EVENT_DATASET).and_then(Value::as_str) == Some(ecs::HEARTBEAT_DATASET)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Map<String, Value> {
        match serde_json::from_str(line).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn sample() -> Heartbeat {
        Heartbeat {
            timestamp: ecs::parse_timestamp("2026-11-25T06:30:00.123Z").unwrap(),
            service_name: "shipper".into(),
            instance_id: "shipper-0123456789ab".into(),
            version: "0.1.0".into(),
            status: HeartbeatStatus::NotReady,
            sequence: 42,
            interval: Duration::from_millis(1000),
            target_service: Some("order".into()),
        }
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let hb = sample();
        let line = hb.to_json_line();
        assert!(!line.contains('\n'));
        let obj = parse(&line);
        assert_eq!(obj["event.dataset"], "meshwatch.heartbeat");
        assert_eq!(obj["event.kind"], "state");
        assert_eq!(obj["ecs.version"], ecs::ECS_VERSION);
        assert_eq!(obj["heartbeat.status"], "not_ready");
        assert_eq!(obj["@timestamp"], "2026-11-25T06:30:00.123Z");
        assert_eq!(Heartbeat::from_json(&obj), Ok(hb));
    }

    #[test]
    fn rejects_non_heartbeats_and_bad_fields() {
        let mut obj = parse(&sample().to_json_line());
        obj.insert("heartbeat.status".into(), "sleepy".into());
        assert!(matches!(
            Heartbeat::from_json(&obj),
            Err(HeartbeatError::Value {
                field: "heartbeat.status",
                ..
            })
        ));
        obj.remove("heartbeat.sequence");
        obj.insert("heartbeat.status".into(), "up".into());
        assert_eq!(
            Heartbeat::from_json(&obj),
            Err(HeartbeatError::Field("heartbeat.sequence"))
        );
        obj.insert("event.dataset".into(), "order.log".into());
        assert_eq!(
            Heartbeat::from_json(&obj),
            Err(HeartbeatError::NotHeartbeat)
        );
    }
}

//! The shipper's own diagnostics: one ECS JSON line per event on stderr (stdout
//! belongs to the wrapped service's pass-through).

use std::io::Write;
use std::time::SystemTime;

use meshwatch_ecs::{self as ecs, field};
use serde_json::{Map, Value};

/// `event.dataset` of the shipper's own lines.
pub const DATASET: &str = "shipper.log";

fn emit(level: &str, message: &str, fields: &[(&str, Value)]) {
    let mut map = Map::new();
    map.insert(
        field::TIMESTAMP.into(),
        ecs::format_timestamp(SystemTime::now()).into(),
    );
    map.insert(field::LOG_LEVEL.into(), level.into());
    map.insert(field::MESSAGE.into(), message.into());
    map.insert(field::ECS_VERSION.into(), ecs::ECS_VERSION.into());
    map.insert(field::SERVICE_NAME.into(), "shipper".into());
    map.insert(field::EVENT_DATASET.into(), DATASET.into());
    for (k, v) in fields {
        map.insert((*k).to_owned(), v.clone());
    }
    let mut line = serde_json::to_vec(&map).unwrap_or_default();
    line.push(b'\n');
    // Nowhere to report a failing stderr.
    let _ = std::io::stderr().lock().write_all(&line);
}

/// Debug output asked for with `--kafka-option debug=…` (librdkafka's contexts).
pub fn debug(message: &str, fields: &[(&str, Value)]) {
    emit("debug", message, fields);
}

pub fn info(message: &str, fields: &[(&str, Value)]) {
    emit("info", message, fields);
}

pub fn warn(message: &str, fields: &[(&str, Value)]) {
    emit("warn", message, fields);
}

pub fn error(message: &str, fields: &[(&str, Value)]) {
    emit("error", message, fields);
}

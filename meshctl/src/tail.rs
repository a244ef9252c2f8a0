//! `meshctl tail`: follow the log topic, filtered by service, level and trace.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::{Map, Value};

use crate::kafka_scan::{scan, ScanOptions};
use crate::{output, CliError, LogTopicArgs, Style};
use meshwatch_ecs::{self as ecs, field};

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub kafka: LogTopicArgs,
    /// Only lines of this service (repeatable).
    #[arg(long)]
    pub service: Vec<String>,
    /// Only lines at this level or more severe: trace, debug, info, warn, error.
    #[arg(long, value_parser = parse_level)]
    pub level: Option<u8>,
    /// Only lines of this trace id.
    #[arg(long)]
    pub trace: Option<String>,
    /// Also show lines written this long before now.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "30s", value_name = "DURATION")]
    pub since: Duration,
    /// Print what matches and exit once the topic is quiet, instead of following.
    #[arg(long)]
    pub no_follow: bool,
}

fn severity(level: &str) -> Option<u8> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Some(0),
        "debug" => Some(1),
        "info" => Some(2),
        "warn" | "warning" => Some(3),
        "error" => Some(4),
        _ => None,
    }
}

fn parse_level(s: &str) -> Result<u8, String> {
    severity(s).ok_or_else(|| format!("{s:?} is not one of trace, debug, info, warn, error"))
}

/// The filter `tail` applies to each parsed line.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    pub services: Vec<String>,
    pub min_level: Option<u8>,
    pub trace: Option<String>,
    pub not_before: Option<SystemTime>,
}

impl Filter {
    pub(crate) fn matches(&self, obj: &Map<String, Value>) -> bool {
        let text = |k: &str| obj.get(k).and_then(Value::as_str);
        if !self.services.is_empty()
            && !text(field::SERVICE_NAME).is_some_and(|s| self.services.iter().any(|w| w == s))
        {
            return false;
        }
        if let Some(min) = self.min_level {
            if text(field::LOG_LEVEL).and_then(severity).unwrap_or(2) < min {
                return false;
            }
        }
        if let Some(trace) = &self.trace {
            if text(field::TRACE_ID) != Some(trace.as_str()) {
                return false;
            }
        }
        if let Some(not_before) = self.not_before {
            match text(field::TIMESTAMP).and_then(ecs::parse_timestamp) {
                Some(ts) if ts >= not_before => {}
                _ => return false,
            }
        }
        true
    }
}

/// One readable line: time, service, level, short trace id, message, and the
/// most useful request fields.
pub(crate) fn format_line(obj: &Map<String, Value>, style: Style) -> String {
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let ts = text(field::TIMESTAMP);
    let clock = ts.get(11..23).unwrap_or(ts);
    let trace = text(field::TRACE_ID);
    let mut extra = String::new();
    for key in [
        field::RPC_METHOD,
        field::RPC_STATUS,
        "order.id",
        field::EVENT_DURATION,
    ] {
        if let Some(v) = obj.get(key) {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            extra.push_str(&format!(" {}", style.dim(&format!("{key}={v}"))));
        }
    }
    format!(
        "{clock} {} {} {} {}{extra}",
        output::pad(text(field::SERVICE_NAME), 10),
        style.level(&format!("{:<5}", text(field::LOG_LEVEL))),
        style.dim(trace.get(..8).unwrap_or("--------")),
        text(field::MESSAGE),
    )
}

pub(crate) async fn run(args: TailArgs, json: bool, style: Style) -> Result<ExitCode, CliError> {
    let filter = Filter {
        services: args.service,
        min_level: args.level,
        trace: args.trace.map(|t| t.to_ascii_lowercase()),
        not_before: SystemTime::now().checked_sub(args.since),
    };
    let mut rx = scan(
        &args.kafka.kafka,
        &args.kafka.logs_topic,
        ScanOptions {
            follow: !args.no_follow,
            idle: Duration::from_secs(1),
        },
    )
    .await?;
    let stdout = std::io::stdout();
    while let Some(record) = rx.recv().await {
        let obj = match serde_json::from_slice::<Value>(&record.payload) {
            Ok(Value::Object(obj)) => obj,
            _ => continue,
        };
        if !filter.matches(&obj) {
            continue;
        }
        let line = if json {
            Value::Object(obj).to_string()
        } else {
            format_line(&obj, style)
        };
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn filter_by_service_level_trace_and_time() {
        let line = obj(serde_json::json!({
            "@timestamp": "2026-11-25T06:30:00.000Z", "service.name": "payment",
            "log.level": "warn", "trace.id": "ab", "message": "declined"
        }));
        assert!(Filter::default().matches(&line));
        let f = Filter {
            services: vec!["order".into()],
            ..Filter::default()
        };
        assert!(!f.matches(&line));
        let f = Filter {
            services: vec!["order".into(), "payment".into()],
            ..Filter::default()
        };
        assert!(f.matches(&line));
        assert!(Filter {
            min_level: Some(3),
            ..Filter::default()
        }
        .matches(&line));
        assert!(!Filter {
            min_level: Some(4),
            ..Filter::default()
        }
        .matches(&line));
        assert!(!Filter {
            trace: Some("cd".into()),
            ..Filter::default()
        }
        .matches(&line));
        let later = ecs::parse_timestamp("2026-11-25T06:31:00Z");
        assert!(!Filter {
            not_before: later,
            ..Filter::default()
        }
        .matches(&line));
    }

    #[test]
    fn readable_line_shows_the_useful_fields() {
        let line = obj(serde_json::json!({
            "@timestamp": "2026-11-25T06:30:00.123Z", "service.name": "order",
            "log.level": "info", "trace.id": "0123456789abcdef0123456789abcdef",
            "message": "PlaceOrder OK in 3.1 ms", "rpc.method": "PlaceOrder",
            "rpc.grpc.status_code": 0
        }));
        let text = format_line(&line, Style::plain());
        assert!(text.starts_with("06:30:00.123 order"), "{text}");
        assert!(text.contains("01234567 PlaceOrder OK"), "{text}");
        assert!(text.contains("rpc.method=PlaceOrder") && text.contains("rpc.grpc.status_code=0"));
    }
}

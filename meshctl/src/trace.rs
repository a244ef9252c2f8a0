//! `meshctl trace <trace-id>`: every line of one request, from every service,
//! in time order, indented by span (a server span sits under its caller's).

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::{Map, Value};

use crate::elastic::Elastic;
use crate::kafka_scan::{scan, ScanOptions};
use crate::{output, CliError, LogTopicArgs, Style};
use meshwatch_ecs::{self as ecs, field};

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The W3C trace id (32 hex digits), e.g. from PlaceOrder's `traceId`.
    pub trace_id: String,
    #[command(flatten)]
    pub kafka: LogTopicArgs,
    /// Keep scanning until lines of this many distinct services were found (or --wait passes).
    #[arg(long, default_value_t = 1)]
    pub min_services: usize,
    /// How long to keep looking for lines that have not arrived yet.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "0s", value_name = "DURATION")]
    pub wait: Duration,
    /// Stop reading once the topic was quiet for this long.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "1s", value_name = "DURATION")]
    pub idle: Duration,
    /// Search Elasticsearch at this URL (what Fluentd indexed) instead of the log topic.
    #[arg(long, env = "MESHWATCH_ES")]
    pub es: Option<String>,
    #[command(flatten)]
    pub es_auth: crate::setup::EsAuthArgs,
}

/// One log line of a trace, with what the timeline needs.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceLine {
    pub timestamp: SystemTime,
    pub service: String,
    pub level: String,
    pub message: String,
    pub span_id: Option<String>,
    pub parent_id: Option<String>,
    pub rpc_method: Option<String>,
    pub status_code: Option<i64>,
    /// `event.duration` in nanoseconds, on access lines.
    pub duration_ns: Option<u64>,
    /// The whole line as written.
    pub raw: Map<String, Value>,
}

/// Reads a [`TraceLine`] from a parsed log line; `None` when it lacks a
/// parseable `@timestamp`.
pub fn parse_trace_line(obj: Map<String, Value>) -> Option<TraceLine> {
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(TraceLine {
        timestamp: ecs::parse_timestamp(obj.get(field::TIMESTAMP)?.as_str()?)?,
        service: text(field::SERVICE_NAME).unwrap_or_else(|| "?".into()),
        level: text(field::LOG_LEVEL).unwrap_or_else(|| "info".into()),
        message: text(field::MESSAGE).unwrap_or_default(),
        span_id: text(field::SPAN_ID),
        parent_id: text(field::PARENT_ID),
        rpc_method: text(field::RPC_METHOD),
        status_code: obj.get(field::RPC_STATUS).and_then(Value::as_i64),
        duration_ns: obj.get(field::EVENT_DURATION).and_then(Value::as_u64),
        raw: obj,
    })
}

/// Depth of each span: a span whose parent is in the trace sits one deeper.
fn span_depths(lines: &[TraceLine]) -> HashMap<String, usize> {
    let parents: HashMap<&str, Option<&str>> = lines
        .iter()
        .filter_map(|l| Some((l.span_id.as_deref()?, l.parent_id.as_deref())))
        .collect();
    let mut depths = HashMap::new();
    for &span in parents.keys() {
        let mut depth = 0;
        let mut cur = span;
        // Bounded: a malformed cycle cannot loop forever.
        while let Some(Some(parent)) = parents.get(cur) {
            if !parents.contains_key(parent) || depth > parents.len() {
                break;
            }
            depth += 1;
            cur = parent;
        }
        depths.insert(span.to_owned(), depth);
    }
    depths
}

/// The human-readable timeline: time, service, level, duration, message
/// indented by span depth. `lines` must be in time order.
pub fn render_timeline(lines: &[TraceLine], style: Style) -> String {
    let depths = span_depths(lines);
    let width = lines
        .iter()
        .map(|l| l.service.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let start = lines.first().map(|l| l.timestamp);
    let mut out = String::new();
    out.push_str(&style.bold(&format!(
        "{:<12} {:>9}  {}  {:<5}  {:>10}  {}\n",
        "TIME",
        "+MS",
        output::pad("SERVICE", width),
        "LEVEL",
        "DURATION",
        "MESSAGE"
    )));
    for l in lines {
        let ts = ecs::format_timestamp(l.timestamp);
        let clock = ts.get(11..23).unwrap_or(&ts);
        let offset_ms = start
            .and_then(|s| l.timestamp.duration_since(s).ok())
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let depth = l
            .span_id
            .as_ref()
            .and_then(|s| depths.get(s))
            .copied()
            .unwrap_or(0);
        let duration = l
            .duration_ns
            .map(|ns| format!("{:.2}ms", ns as f64 / 1e6))
            .unwrap_or_default();
        out.push_str(&format!(
            "{clock:<12} {offset_ms:>9.1}  {}  {}  {duration:>10}  {}{}\n",
            output::pad(&l.service, width),
            style.level(&format!("{:<5}", l.level)),
            "  ".repeat(depth),
            l.message
        ));
    }
    out
}

/// Every line of `trace_id` in the log topic, in time order.
pub(crate) async fn from_kafka(
    kafka: &LogTopicArgs,
    trace_id: &str,
    idle: Duration,
) -> Result<Vec<TraceLine>, CliError> {
    let mut rx = scan(
        &kafka.kafka,
        &kafka.logs_topic,
        ScanOptions {
            follow: false,
            idle,
        },
    )
    .await?;
    let mut found = Vec::new();
    while let Some(record) = rx.recv().await {
        // Cheap pre-filter before parsing: most lines are of other traces.
        if !contains(&record.payload, trace_id.as_bytes()) {
            continue;
        }
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&record.payload) else {
            continue;
        };
        if obj.get(field::TRACE_ID).and_then(Value::as_str) != Some(trace_id) {
            continue;
        }
        if let Some(line) = parse_trace_line(obj) {
            found.push((line, record.partition, record.offset));
        }
    }
    found.sort_by_key(|(line, partition, offset)| (line.timestamp, *partition, *offset));
    Ok(found.into_iter().map(|(l, _, _)| l).collect())
}

/// Every line of `trace_id` indexed in Elasticsearch, in time order (the
/// search sorts by `@timestamp` in ms; the stable re-sort keeps finer precision).
pub(crate) async fn from_es(es: &Elastic, trace_id: &str) -> Result<Vec<TraceLine>, CliError> {
    let mut found: Vec<TraceLine> = es
        .trace_lines(trace_id)
        .await?
        .into_iter()
        .filter(|obj| obj.get(field::TRACE_ID).and_then(Value::as_str) == Some(trace_id))
        .filter_map(parse_trace_line)
        .collect();
    found.sort_by_key(|line| line.timestamp);
    Ok(found)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn distinct_services(lines: &[TraceLine]) -> usize {
    lines
        .iter()
        .map(|l| l.service.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

pub(crate) async fn run(args: TraceArgs, json: bool, style: Style) -> Result<ExitCode, CliError> {
    let id = args.trace_id.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.bytes().all(|b| b == b'0')
    {
        return Err(CliError::Flag {
            flag: "trace-id",
            reason: format!(
                "{:?} is not a W3C trace id (32 hex digits, not all zero)",
                args.trace_id
            ),
        });
    }
    let es = match &args.es {
        Some(url) => Some(
            Elastic::connect(url, &args.es_auth.auth()?).map_err(crate::setup::url_flag("es"))?,
        ),
        None => None,
    };
    // A --wait too long for the clock means no deadline, not a panic.
    let deadline = tokio::time::Instant::now().checked_add(args.wait);
    let lines = loop {
        let lines = match &es {
            Some(es) => from_es(es, &id).await?,
            None => from_kafka(&args.kafka, &id, args.idle).await?,
        };
        if distinct_services(&lines) >= args.min_services.max(1)
            || deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if lines.is_empty() {
        return Err(CliError::TraceNotFound(id));
    }
    let mut stdout = std::io::stdout().lock();
    if json {
        for l in &lines {
            writeln!(stdout, "{}", Value::Object(l.raw.clone()))?;
        }
    } else {
        write!(stdout, "{}", render_timeline(&lines, style))?;
        writeln!(
            stdout,
            "{} lines from {} services",
            lines.len(),
            distinct_services(&lines)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: &str, service: &str, span: &str, parent: Option<&str>, msg: &str) -> TraceLine {
        let mut obj = Map::new();
        obj.insert("@timestamp".into(), ts.into());
        obj.insert("service.name".into(), service.into());
        obj.insert("log.level".into(), "info".into());
        obj.insert("message".into(), msg.into());
        obj.insert("span.id".into(), span.into());
        if let Some(p) = parent {
            obj.insert("parent.id".into(), p.into());
        }
        obj.insert("event.duration".into(), 2_500_000u64.into());
        parse_trace_line(obj).unwrap()
    }

    #[test]
    fn timeline_indents_callees_under_callers() {
        let lines = vec![
            line(
                "2026-11-25T06:30:00.000Z",
                "order",
                "aaaa",
                Some("client"),
                "PlaceOrder OK",
            ),
            line(
                "2026-11-25T06:30:00.002Z",
                "inventory",
                "bbbb",
                Some("aaaa"),
                "Reserve OK",
            ),
            line(
                "2026-11-25T06:30:00.004Z",
                "payment",
                "cccc",
                Some("aaaa"),
                "Charge OK",
            ),
        ];
        let text = render_timeline(&lines, Style::plain());
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 4, "{text}");
        assert!(rows[0].starts_with("TIME"));
        assert!(rows[1].contains("order") && rows[1].ends_with("  PlaceOrder OK"));
        assert!(
            rows[2].contains("inventory") && rows[2].ends_with("    Reserve OK"),
            "{text}"
        );
        assert!(rows[3].contains("payment") && rows[3].ends_with("    Charge OK"));
        assert!(rows[2].contains("2.50ms"));
        assert!(rows[3].contains("      4.0"), "{text}");
    }

    #[test]
    fn depth_survives_cycles() {
        let lines = vec![
            line("2026-11-25T06:30:00.000Z", "a", "x", Some("y"), "1"),
            line("2026-11-25T06:30:00.001Z", "b", "y", Some("x"), "2"),
        ];
        let depths = span_depths(&lines);
        assert!(depths.values().all(|&d| d <= 3));
    }

    #[test]
    fn lines_without_timestamp_are_skipped() {
        let mut obj = Map::new();
        obj.insert("message".into(), "x".into());
        assert!(parse_trace_line(obj).is_none());
    }
}

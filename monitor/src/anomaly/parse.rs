//! What counts as a request, read from one log line: an access line, i.e. a
//! line with `rpc.grpc.status_code` (the runtime writes exactly one per RPC;
//! the other lines of a request also carry `rpc.method` from the request
//! span, so `rpc.method` alone would count a request several times). A server
//! error: `rpc.grpc.status_code` UNKNOWN (2), DEADLINE_EXCEEDED (4),
//! INTERNAL (13), UNAVAILABLE (14) or DATA_LOSS (15), as a number or a name.
//! Other codes (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...) are the
//! caller's fault or normal outcomes (a declined payment) and do not count.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;

/// Service names longer than this are not request lines of a mesh service
/// (the runtime writes short names); they are skipped, not tracked.
pub const MAX_SERVICE_NAME: usize = 128;

/// gRPC status codes that mean the server failed.
pub fn is_server_error_code(code: i64) -> bool {
    matches!(code, 2 | 4 | 13 | 14 | 15)
}

fn is_server_error_name(name: &str) -> bool {
    [
        "UNKNOWN",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
        || name.parse::<i64>().is_ok_and(is_server_error_code)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StatusCode<'a> {
    Number(i64),
    #[serde(borrow)]
    Name(Cow<'a, str>),
}

/// The few fields anomaly detection reads; everything else is skipped
/// without being materialised.
#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(rename = "service.name", borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(rename = "rpc.grpc.status_code", borrow)]
    status: Option<StatusCode<'a>>,
    #[serde(rename = "event.duration")]
    duration_ns: Option<f64>,
    #[serde(rename = "trace.id", borrow)]
    trace_id: Option<Cow<'a, str>>,
}

/// One request as anomaly detection sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request<'a> {
    pub service: Cow<'a, str>,
    pub server_error: bool,
    pub duration: Option<Duration>,
    pub trace_id: Option<Cow<'a, str>>,
}

/// Reads a request from one JSON line; `None` for anything that is not an
/// access line (no `rpc.grpc.status_code` or no `service.name`), not JSON,
/// or names a service longer than [`MAX_SERVICE_NAME`]. Durations that are
/// negative or not finite count as missing; huge ones saturate.
pub fn parse_request(line: &[u8]) -> Option<Request<'_>> {
    let raw: RawLine<'_> = serde_json::from_slice(line).ok()?;
    let service = raw
        .service
        .filter(|s| !s.is_empty() && s.len() <= MAX_SERVICE_NAME)?;
    let server_error = match raw.status? {
        StatusCode::Number(code) => is_server_error_code(code),
        StatusCode::Name(name) => is_server_error_name(&name),
    };
    let duration = raw
        .duration_ns
        .filter(|ns| ns.is_finite() && *ns >= 0.0)
        // `as` saturates at u64::MAX for floats beyond it.
        .map(|ns| Duration::from_nanos(ns as u64));
    Some(Request {
        service,
        server_error,
        duration,
        // Trace ids are evidence quoted in alerts: an over-long one is dropped.
        trace_id: raw.trace_id.filter(|t| !t.is_empty() && t.len() <= 64),
    })
}

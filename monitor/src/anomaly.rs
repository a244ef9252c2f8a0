//! Anomaly detection on request lines, per service: server-error rate and
//! p99 latency over a sliding window of fixed buckets, compared with a
//! baseline learned from earlier windows (EWMA), with a minimum volume and
//! hysteresis. Time is `tokio::time::Instant` (arrival time at the monitor),
//! so tests drive it with paused time.
//!
//! What counts as a request: an access line, i.e. a line with
//! `rpc.grpc.status_code` (the runtime writes exactly one per RPC; the other
//! lines of a request also carry `rpc.method` from the request span, so
//! `rpc.method` alone would count a request several times). A server error: `rpc.grpc.status_code` UNKNOWN (2), DEADLINE_EXCEEDED (4),
//! INTERNAL (13), UNAVAILABLE (14) or DATA_LOSS (15), as a number or a name.
//! Other codes (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...) are the
//! caller's fault or normal outcomes (a declined payment) and do not count.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::time::Instant;

use crate::alert::{alert_id, Alert, AlertKind, AlertState};

pub const DEFAULT_BUCKET: Duration = Duration::from_secs(10);
pub const DEFAULT_BUCKETS: usize = 6;
/// Fewer requests than this in a window: no verdict either way.
pub const DEFAULT_MIN_REQUESTS: u64 = 50;
pub const DEFAULT_ERROR_RATE_FACTOR: f64 = 3.0;
/// Absolute margin over the baseline error rate (5 percentage points).
pub const DEFAULT_ERROR_RATE_MARGIN: f64 = 0.05;
pub const DEFAULT_LATENCY_FACTOR: f64 = 2.0;
pub const DEFAULT_LATENCY_MARGIN: Duration = Duration::from_millis(50);
/// Weight of the newest window in the baseline.
pub const DEFAULT_BASELINE_ALPHA: f64 = 0.2;
/// Windows with enough volume before a latency baseline is trusted. The
/// error-rate baseline starts from a prior of 0 and needs no warm-up.
pub const DEFAULT_LATENCY_WARMUP: u32 = 3;
/// Services tracked at most; lines of further services are counted and dropped.
pub const DEFAULT_MAX_SERVICES: usize = 1_000;
/// Example trace ids kept per bucket and per alert.
pub const EXAMPLES: usize = 5;
/// Histogram range in microseconds: 1 µs to 1 h, 2 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;
const HIST_SIGFIG: u8 = 2;

#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyConfig {
    pub bucket: Duration,
    pub buckets: usize,
    pub min_requests: u64,
    pub error_rate_factor: f64,
    pub error_rate_margin: f64,
    pub latency_factor: f64,
    pub latency_margin: Duration,
    pub baseline_alpha: f64,
    pub latency_warmup: u32,
    pub max_services: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            bucket: DEFAULT_BUCKET,
            buckets: DEFAULT_BUCKETS,
            min_requests: DEFAULT_MIN_REQUESTS,
            error_rate_factor: DEFAULT_ERROR_RATE_FACTOR,
            error_rate_margin: DEFAULT_ERROR_RATE_MARGIN,
            latency_factor: DEFAULT_LATENCY_FACTOR,
            latency_margin: DEFAULT_LATENCY_MARGIN,
            baseline_alpha: DEFAULT_BASELINE_ALPHA,
            latency_warmup: DEFAULT_LATENCY_WARMUP,
            max_services: DEFAULT_MAX_SERVICES,
        }
    }
}

impl AnomalyConfig {
    pub fn window(&self) -> Duration {
        self.bucket * self.buckets as u32
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnomalyError {
    #[error("histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
}

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
/// access line (no `rpc.grpc.status_code` or no `service.name`) or not JSON.
pub fn parse_request(line: &[u8]) -> Option<Request<'_>> {
    let raw: RawLine<'_> = serde_json::from_slice(line).ok()?;
    let service = raw.service.filter(|s| !s.is_empty())?;
    let server_error = match raw.status? {
        StatusCode::Number(code) => is_server_error_code(code),
        StatusCode::Name(name) => is_server_error_name(&name),
    };
    let duration = raw
        .duration_ns
        .filter(|ns| ns.is_finite() && *ns >= 0.0)
        .map(|ns| Duration::from_nanos(ns as u64));
    Some(Request {
        service,
        server_error,
        duration,
        trace_id: raw.trace_id.filter(|t| !t.is_empty()),
    })
}

#[derive(Debug)]
struct Bucket {
    index: u64,
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
    error_examples: Vec<String>,
    /// The slowest requests with a trace id: (µs, trace id).
    slow_examples: Vec<(u64, String)>,
}

impl Bucket {
    fn new(index: u64) -> Result<Self, AnomalyError> {
        Ok(Self {
            index,
            requests: 0,
            errors: 0,
            latency_us: Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)?,
            error_examples: Vec::new(),
            slow_examples: Vec::new(),
        })
    }

    fn reset(&mut self, index: u64) {
        self.index = index;
        self.requests = 0;
        self.errors = 0;
        self.latency_us.reset();
        self.error_examples.clear();
        self.slow_examples.clear();
    }

    fn record(&mut self, req: &Request<'_>) {
        self.requests += 1;
        if req.server_error {
            self.errors += 1;
            if let Some(t) = &req.trace_id {
                if self.error_examples.len() < EXAMPLES {
                    self.error_examples.push(t.to_string());
                }
            }
        }
        if let Some(d) = req.duration {
            let us = (d.as_micros() as u64).clamp(1, HIST_MAX_US);
            self.latency_us.saturating_record(us);
            if let Some(t) = &req.trace_id {
                if self.slow_examples.len() < EXAMPLES {
                    self.slow_examples.push((us, t.to_string()));
                } else if let Some(min) = self.slow_examples.iter_mut().min_by_key(|(u, _)| *u) {
                    if us > min.0 {
                        *min = (us, t.to_string());
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct Firing {
    id: String,
    started_at: SystemTime,
    /// The firing's example trace ids: a recovery repeats them, as the
    /// evidence of the incident it closes (its own window may have none).
    examples: Vec<String>,
}

#[derive(Debug)]
struct ServiceWindow {
    /// Oldest first, at most `buckets + 1` (the window plus the current one).
    buckets: VecDeque<Bucket>,
    error_baseline: f64,
    latency_baseline_ms: f64,
    latency_windows: u32,
    error_alert: Option<Firing>,
    latency_alert: Option<Firing>,
    merged: Histogram<u64>,
}

/// What one evaluation saw for one service.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowStats {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

/// All services' windows. Feed with [`AnomalyDetector::record`], call
/// [`AnomalyDetector::evaluate`] once per bucket.
#[derive(Debug)]
pub struct AnomalyDetector {
    cfg: AnomalyConfig,
    origin: Instant,
    services: HashMap<String, ServiceWindow>,
    /// Request lines dropped because `max_services` was reached.
    pub dropped_services: u64,
}

impl AnomalyDetector {
    /// `origin` is the start of bucket 0.
    pub fn new(cfg: AnomalyConfig, origin: Instant) -> Self {
        Self {
            cfg,
            origin,
            services: HashMap::new(),
            dropped_services: 0,
        }
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.cfg
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        (since / self.cfg.bucket.as_nanos().max(1)) as u64
    }

    /// When the bucket after the one containing `now` starts (the next evaluation).
    pub fn next_boundary(&self, now: Instant) -> Instant {
        let next = u32::try_from(self.index(now) + 1).unwrap_or(u32::MAX);
        self.origin + self.cfg.bucket.saturating_mul(next)
    }

    /// Counts one request arriving at `now`.
    pub fn record(&mut self, req: &Request<'_>, now: Instant) -> Result<(), AnomalyError> {
        let index = self.index(now);
        let keep = self.cfg.buckets + 1;
        if !self.services.contains_key(req.service.as_ref()) {
            if self.services.len() >= self.cfg.max_services {
                self.dropped_services += 1;
                return Ok(());
            }
            self.services.insert(
                req.service.to_string(),
                ServiceWindow {
                    buckets: VecDeque::with_capacity(keep),
                    error_baseline: 0.0,
                    latency_baseline_ms: 0.0,
                    latency_windows: 0,
                    error_alert: None,
                    latency_alert: None,
                    merged: Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)?,
                },
            );
        }
        let Some(window) = self.services.get_mut(req.service.as_ref()) else {
            return Ok(());
        };
        if window.buckets.back().is_none_or(|b| b.index != index) {
            if window.buckets.len() >= keep {
                if let Some(mut old) = window.buckets.pop_front() {
                    old.reset(index);
                    window.buckets.push_back(old);
                }
            } else {
                window.buckets.push_back(Bucket::new(index)?);
            }
        }
        if let Some(bucket) = window.buckets.back_mut() {
            bucket.record(req);
        }
        Ok(())
    }

    /// Judges the last complete window (the `buckets` buckets before the one
    /// containing `now`) of every service; returns alerts raised or resolved.
    pub fn evaluate(&mut self, now: Instant) -> Vec<Alert> {
        let current = self.index(now);
        let first = current.saturating_sub(self.cfg.buckets as u64);
        let cfg = &self.cfg;
        let mut alerts = Vec::new();
        for (service, w) in &mut self.services {
            let stats = w.stats(first, current);
            if stats.requests < cfg.min_requests {
                continue;
            }
            let window = cfg.window();
            // Error rate.
            let base = w.error_baseline;
            let threshold = (base * cfg.error_rate_factor).max(base + cfg.error_rate_margin);
            let resolve_below = base + (threshold - base) / 2.0;
            match &w.error_alert {
                None if stats.error_rate > threshold => {
                    let at = SystemTime::now();
                    let examples = w.error_examples(first, current);
                    let id = alert_id(AlertKind::ErrorRate, service, at);
                    alerts.push(Alert {
                        id: id.clone(),
                        kind: AlertKind::ErrorRate,
                        service: service.clone(),
                        state: AlertState::Firing,
                        message: format!(
                            "{service}: server-error rate {:.1}% over {}s ({} of {} requests) exceeds {:.1}% (baseline {:.1}%)",
                            stats.error_rate * 100.0, window.as_secs(), stats.errors, stats.requests,
                            threshold * 100.0, base * 100.0
                        ),
                        window,
                        observed: stats.error_rate,
                        baseline: base,
                        threshold,
                        requests: stats.requests,
                        example_trace_ids: examples.clone(),
                        started_at: at,
                        at,
                    });
                    w.error_alert = Some(Firing {
                        id,
                        started_at: at,
                        examples,
                    });
                }
                Some(firing) if stats.error_rate <= resolve_below => {
                    alerts.push(Alert {
                        id: firing.id.clone(),
                        kind: AlertKind::ErrorRate,
                        service: service.clone(),
                        state: AlertState::Resolved,
                        message: format!(
                            "{service}: server-error rate back to {:.1}% over {}s ({} requests; baseline {:.1}%)",
                            stats.error_rate * 100.0, window.as_secs(), stats.requests, base * 100.0
                        ),
                        window,
                        observed: stats.error_rate,
                        baseline: base,
                        threshold,
                        requests: stats.requests,
                        example_trace_ids: firing.examples.clone(),
                        started_at: firing.started_at,
                        at: SystemTime::now(),
                    });
                    w.error_alert = None;
                }
                _ => {}
            }
            if w.error_alert.is_none() {
                w.error_baseline += cfg.baseline_alpha * (stats.error_rate - w.error_baseline);
            }
            // Latency.
            if w.latency_windows >= cfg.latency_warmup {
                let base = w.latency_baseline_ms;
                let margin = cfg.latency_margin.as_secs_f64() * 1000.0;
                let threshold = (base * cfg.latency_factor).max(base + margin);
                let resolve_below = base + (threshold - base) / 2.0;
                match &w.latency_alert {
                    None if stats.p99_ms > threshold => {
                        let at = SystemTime::now();
                        let examples = w.slow_examples(first, current);
                        let id = alert_id(AlertKind::Latency, service, at);
                        alerts.push(Alert {
                            id: id.clone(),
                            kind: AlertKind::Latency,
                            service: service.clone(),
                            state: AlertState::Firing,
                            message: format!(
                                "{service}: p99 latency {:.1} ms over {}s ({} requests) exceeds {:.1} ms (baseline {:.1} ms)",
                                stats.p99_ms, window.as_secs(), stats.requests, threshold, base
                            ),
                            window,
                            observed: stats.p99_ms,
                            baseline: base,
                            threshold,
                            requests: stats.requests,
                            example_trace_ids: examples.clone(),
                            started_at: at,
                            at,
                        });
                        w.latency_alert = Some(Firing {
                            id,
                            started_at: at,
                            examples,
                        });
                    }
                    Some(firing) if stats.p99_ms <= resolve_below => {
                        alerts.push(Alert {
                            id: firing.id.clone(),
                            kind: AlertKind::Latency,
                            service: service.clone(),
                            state: AlertState::Resolved,
                            message: format!(
                                "{service}: p99 latency back to {:.1} ms over {}s ({} requests; baseline {:.1} ms)",
                                stats.p99_ms, window.as_secs(), stats.requests, base
                            ),
                            window,
                            observed: stats.p99_ms,
                            baseline: base,
                            threshold,
                            requests: stats.requests,
                            example_trace_ids: firing.examples.clone(),
                            started_at: firing.started_at,
                            at: SystemTime::now(),
                        });
                        w.latency_alert = None;
                    }
                    _ => {}
                }
            }
            if w.latency_alert.is_none() && stats.p99_ms > 0.0 {
                if w.latency_windows == 0 {
                    w.latency_baseline_ms = stats.p99_ms;
                } else {
                    w.latency_baseline_ms +=
                        cfg.baseline_alpha * (stats.p99_ms - w.latency_baseline_ms);
                }
                w.latency_windows = w.latency_windows.saturating_add(1);
            }
        }
        alerts
    }

    /// The window statistics of `service` as of `now` (for tests and the bench).
    pub fn stats(&mut self, service: &str, now: Instant) -> Option<WindowStats> {
        let current = self.index(now);
        let first = current.saturating_sub(self.cfg.buckets as u64);
        self.services
            .get_mut(service)
            .map(|w| w.stats(first, current))
    }
}

impl ServiceWindow {
    fn in_window(&self, first: u64, current: u64) -> impl DoubleEndedIterator<Item = &Bucket> {
        self.buckets
            .iter()
            .filter(move |b| b.index >= first && b.index < current)
    }

    fn stats(&mut self, first: u64, current: u64) -> WindowStats {
        let mut requests = 0;
        let mut errors = 0;
        self.merged.reset();
        for b in self
            .buckets
            .iter()
            .filter(|b| b.index >= first && b.index < current)
        {
            requests += b.requests;
            errors += b.errors;
            // Same bounds: adding cannot fail.
            let _ = self.merged.add(&b.latency_us);
        }
        let p99_ms = if self.merged.is_empty() {
            0.0
        } else {
            self.merged.value_at_quantile(0.99) as f64 / 1000.0
        };
        WindowStats {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p99_ms,
        }
    }

    /// Newest error trace ids first.
    fn error_examples(&self, first: u64, current: u64) -> Vec<String> {
        self.in_window(first, current)
            .rev()
            .flat_map(|b| b.error_examples.iter().cloned())
            .take(EXAMPLES)
            .collect()
    }

    /// Slowest requests' trace ids first.
    fn slow_examples(&self, first: u64, current: u64) -> Vec<String> {
        let mut all: Vec<_> = self
            .in_window(first, current)
            .flat_map(|b| b.slow_examples.iter())
            .collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.0));
        all.into_iter()
            .take(EXAMPLES)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;

//! Anomaly detection on request lines, per service: server-error rate and
//! p99 latency over a sliding window of fixed buckets ([`window`]), each
//! judged by the one fire/resolve state machine of [`threshold`] against a
//! baseline learned from earlier windows, with a minimum volume. What counts
//! as a request is [`parse`]'s business. Time is `tokio::time::Instant`
//! (arrival time at the monitor), so tests drive it with paused time.
//!
//! Bounded: at most `max_services` services have a window; a service with no
//! request in its whole window is evicted at the next evaluation (an open
//! alert of it is resolved as abandoned, and its baseline is learned afresh
//! should it come back); lines of further services are dropped, counted and
//! handed to the caller to report ([`AnomalyDetector::take_dropped`]).

pub mod parse;
pub mod threshold;
pub mod window;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::alert::{Alert, AlertKind, AlertState};
pub use parse::{is_server_error_code, parse_request, Request};
use threshold::{Signal, ThresholdSpec, Transition};
use window::Window;
pub use window::{WindowStats, EXAMPLES};

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
/// Services with a window at most; lines of further services are counted,
/// dropped and reported.
pub const DEFAULT_MAX_SERVICES: usize = 1_000;
/// Names of dropped services kept as examples for the report.
const DROPPED_EXAMPLES: usize = 5;

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
    /// The window every verdict covers: `buckets` buckets (saturating).
    pub fn window(&self) -> Duration {
        self.bucket
            .saturating_mul(u32::try_from(self.buckets).unwrap_or(u32::MAX))
    }

    fn error_rate(&self) -> ThresholdSpec {
        ThresholdSpec {
            kind: AlertKind::ErrorRate,
            factor: self.error_rate_factor,
            margin: self.error_rate_margin,
            alpha: self.baseline_alpha,
            warmup: 0,
            learn_from_first: false,
        }
    }

    fn latency(&self) -> ThresholdSpec {
        ThresholdSpec {
            kind: AlertKind::Latency,
            factor: self.latency_factor,
            margin: self.latency_margin.as_secs_f64() * 1000.0,
            alpha: self.baseline_alpha,
            warmup: self.latency_warmup,
            learn_from_first: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnomalyError {
    #[error("histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
}

/// Request lines dropped because `max_services` services already had a
/// window, since the last [`AnomalyDetector::take_dropped`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub lines: u64,
    /// The first few distinct service names dropped.
    pub examples: Vec<String>,
}

#[derive(Debug)]
struct ServiceState {
    window: Window,
    error_rate: Signal,
    latency: Signal,
}

/// All services' windows. Feed with [`AnomalyDetector::record`], call
/// [`AnomalyDetector::evaluate`] once per bucket.
#[derive(Debug)]
pub struct AnomalyDetector {
    cfg: AnomalyConfig,
    origin: Instant,
    services: HashMap<String, ServiceState>,
    dropped: Dropped,
    /// Every request line dropped so far.
    pub dropped_total: u64,
    /// Every service evicted for silence so far.
    pub evicted_total: u64,
}

impl AnomalyDetector {
    /// `origin` is the start of bucket 0.
    pub fn new(cfg: AnomalyConfig, origin: Instant) -> Self {
        Self {
            cfg,
            origin,
            services: HashMap::new(),
            dropped: Dropped::default(),
            dropped_total: 0,
            evicted_total: 0,
        }
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.cfg
    }

    /// Services with a window now.
    pub fn tracked(&self) -> usize {
        self.services.len()
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.cfg.bucket.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// When the bucket after the one containing `now` starts (the next evaluation).
    pub fn next_boundary(&self, now: Instant) -> Instant {
        let bucket = self.cfg.bucket.as_nanos().max(1);
        let into = now.saturating_duration_since(self.origin).as_nanos() % bucket;
        let left = u64::try_from(bucket - into).unwrap_or(u64::MAX);
        now.checked_add(Duration::from_nanos(left)).unwrap_or(now)
    }

    /// Counts one request arriving at `now`. A service beyond `max_services`
    /// is counted in [`Dropped`] instead.
    pub fn record(&mut self, req: &Request<'_>, now: Instant) -> Result<(), AnomalyError> {
        let index = self.index(now);
        let service = req.service.as_ref();
        if !self.services.contains_key(service) {
            if self.services.len() >= self.cfg.max_services {
                self.dropped.lines = self.dropped.lines.saturating_add(1);
                self.dropped_total = self.dropped_total.saturating_add(1);
                if self.dropped.examples.len() < DROPPED_EXAMPLES
                    && !self.dropped.examples.iter().any(|e| e == service)
                {
                    self.dropped.examples.push(service.to_owned());
                }
                return Ok(());
            }
            let state = ServiceState {
                window: Window::new(self.cfg.buckets.saturating_add(1))?,
                error_rate: Signal::default(),
                latency: Signal::default(),
            };
            self.services.insert(service.to_owned(), state);
        }
        match self.services.get_mut(service) {
            Some(state) => state.window.record(req, index),
            None => Ok(()),
        }
    }

    /// What was dropped since the last call (`None`: nothing).
    pub fn take_dropped(&mut self) -> Option<Dropped> {
        (self.dropped.lines > 0).then(|| std::mem::take(&mut self.dropped))
    }

    /// Judges the last complete window (the `buckets` buckets before the one
    /// containing `now`) of every service, evicts services with no request in
    /// it, and returns the alerts raised or resolved.
    pub fn evaluate(&mut self, now: Instant) -> Vec<Alert> {
        let current = self.index(now);
        let first = current.saturating_sub(self.cfg.buckets as u64);
        let cfg = &self.cfg;
        let (error_spec, latency_spec) = (cfg.error_rate(), cfg.latency());
        let window = cfg.window();
        let at = SystemTime::now();
        let mut alerts = Vec::new();
        let mut evicted = 0u64;
        self.services.retain(|service, state| {
            if state.window.newest().is_none_or(|newest| newest < first) {
                for (signal, spec) in [
                    (&mut state.error_rate, &error_spec),
                    (&mut state.latency, &latency_spec),
                ] {
                    if let Some(t) = signal.abandon(spec, at) {
                        alerts.push(abandoned(spec.kind, service, window, t));
                    }
                }
                evicted += 1;
                return false;
            }
            let stats = state.window.stats(first, current);
            if stats.requests < cfg.min_requests {
                return true;
            }
            let w = &state.window;
            if let Some(t) = state.error_rate.judge(
                &error_spec,
                service,
                stats.error_rate,
                Some(stats.error_rate),
                || w.error_examples(first, current),
                at,
            ) {
                alerts.push(judged(AlertKind::ErrorRate, service, window, &stats, t));
            }
            if let Some(t) = state.latency.judge(
                &latency_spec,
                service,
                stats.p99_ms,
                (stats.p99_ms > 0.0).then_some(stats.p99_ms),
                || w.slow_examples(first, current),
                at,
            ) {
                alerts.push(judged(AlertKind::Latency, service, window, &stats, t));
            }
            true
        });
        self.evicted_total = self.evicted_total.saturating_add(evicted);
        alerts
    }

    /// The window statistics of `service` as of `now` (for tests and the bench).
    pub fn stats(&mut self, service: &str, now: Instant) -> Option<WindowStats> {
        let current = self.index(now);
        let first = current.saturating_sub(self.cfg.buckets as u64);
        self.services
            .get_mut(service)
            .map(|s| s.window.stats(first, current))
    }
}

/// The alert of a judged transition, with the figures of the window.
fn judged(
    kind: AlertKind,
    service: &str,
    window: Duration,
    stats: &WindowStats,
    t: Transition,
) -> Alert {
    let secs = window.as_secs();
    let (observed, message) = match (kind, t.state) {
        (AlertKind::Latency, AlertState::Firing) => (
            stats.p99_ms,
            format!(
                "{service}: p99 latency {:.1} ms over {secs}s ({} requests) exceeds {:.1} ms (baseline {:.1} ms)",
                stats.p99_ms, stats.requests, t.threshold, t.baseline
            ),
        ),
        (AlertKind::Latency, AlertState::Resolved) => (
            stats.p99_ms,
            format!(
                "{service}: p99 latency back to {:.1} ms over {secs}s ({} requests; baseline {:.1} ms)",
                stats.p99_ms, stats.requests, t.baseline
            ),
        ),
        (_, AlertState::Firing) => (
            stats.error_rate,
            format!(
                "{service}: server-error rate {:.1}% over {secs}s ({} of {} requests) exceeds {:.1}% (baseline {:.1}%)",
                stats.error_rate * 100.0, stats.errors, stats.requests,
                t.threshold * 100.0, t.baseline * 100.0
            ),
        ),
        (_, AlertState::Resolved) => (
            stats.error_rate,
            format!(
                "{service}: server-error rate back to {:.1}% over {secs}s ({} requests; baseline {:.1}%)",
                stats.error_rate * 100.0, stats.requests, t.baseline * 100.0
            ),
        ),
    };
    alert(kind, service, window, observed, stats.requests, message, t)
}

/// The resolution of an incident whose service fell silent.
fn abandoned(kind: AlertKind, service: &str, window: Duration, t: Transition) -> Alert {
    let message = format!(
        "{service}: no requests for {}s; the open {} alert is closed without a verdict",
        window.as_secs(),
        kind.as_str()
    );
    alert(kind, service, window, 0.0, 0, message, t)
}

fn alert(
    kind: AlertKind,
    service: &str,
    window: Duration,
    observed: f64,
    requests: u64,
    message: String,
    t: Transition,
) -> Alert {
    Alert {
        id: t.id,
        kind,
        service: service.to_owned(),
        state: t.state,
        message,
        window,
        observed,
        baseline: t.baseline,
        threshold: t.threshold,
        requests,
        example_trace_ids: t.examples,
        started_at: t.started_at,
        at: t.at,
    }
}

#[cfg(test)]
mod tests;

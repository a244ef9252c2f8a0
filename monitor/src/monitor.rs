//! The monitor's state and its clockwork: heartbeats (once admitted by
//! [`crate::trust`]) into the registry, log lines into anomaly detection,
//! evaluation into the health state and alerts, refusals into one report per
//! period, limits into capacity alerts. No I/O here: Kafka and gRPC feed and
//! read it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::Heartbeat;
use meshwatch_runtime::health::{HealthState, ServingStatus};
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

use crate::alert::{alert_id, Alert, AlertKind, AlertState};
use crate::anomaly::{self, AnomalyConfig, AnomalyDetector};
use crate::detector::Age;
use crate::registry::{self, Registry, RegistryConfig, ServiceView, StatusChange};
use crate::trust::{self, Refusal, RefusalLog, TrustConfig};

/// Alerts buffered for each subscriber (gRPC streams, the Kafka sink); a
/// subscriber further behind loses the oldest and is told so.
pub const ALERT_BUFFER: usize = 1024;
/// A capacity alert resolves once its limit has refused nothing for this long.
pub const CAPACITY_QUIET: Duration = Duration::from_secs(60);
/// The service name capacity alerts are about.
pub const MONITOR_SERVICE: &str = "monitor";

/// Counters of what was read, for logs and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Heartbeats admitted and recorded.
    pub heartbeats: u64,
    /// Records on the heartbeats topic that are not heartbeats at all.
    pub not_heartbeats: u64,
    /// Heartbeats refused: wrong shape, out-of-window sequence, a limit.
    pub refused_heartbeats: u64,
    pub requests: u64,
}

/// One limit of the monitor and its capacity alert.
#[derive(Debug)]
struct Limit {
    /// Names the limit in alert ids: `capacity/<key>/<start ms>`.
    key: &'static str,
    /// The flag that raises it, e.g. `max-instances`.
    flag: &'static str,
    what: &'static str,
    value: usize,
    /// Refused since the last tick.
    pending: u64,
    examples: Vec<String>,
    last_refusal: Option<Instant>,
    /// The open alert: id, start, refusals during it.
    firing: Option<(String, SystemTime, u64)>,
}

impl Limit {
    fn new(key: &'static str, flag: &'static str, what: &'static str, value: usize) -> Self {
        Self {
            key,
            flag,
            what,
            value,
            pending: 0,
            examples: Vec::new(),
            last_refusal: None,
            firing: None,
        }
    }

    fn refuse(&mut self, n: u64, examples: impl IntoIterator<Item = String>) {
        self.pending = self.pending.saturating_add(n);
        for e in examples {
            if self.examples.len() < 3 && !self.examples.contains(&e) {
                self.examples.push(e);
            }
        }
    }

    /// The alert this tick raises or resolves, if any.
    fn tick(&mut self, now: Instant) -> Option<Alert> {
        let at = SystemTime::now();
        let alert = |state, id: String, started_at, observed: f64, total, message| Alert {
            id,
            kind: AlertKind::Capacity,
            service: MONITOR_SERVICE.to_owned(),
            state,
            message,
            window: Duration::ZERO,
            observed,
            baseline: 0.0,
            threshold: self.value as f64,
            requests: total,
            example_trace_ids: Vec::new(),
            started_at,
            at,
        };
        if self.pending > 0 {
            let n = std::mem::take(&mut self.pending);
            let examples = std::mem::take(&mut self.examples);
            self.last_refusal = Some(now);
            if let Some((_, _, total)) = &mut self.firing {
                *total = total.saturating_add(n);
                return None;
            }
            let id = alert_id(AlertKind::Capacity, self.key, at);
            self.firing = Some((id.clone(), at, n));
            let message = format!(
                "monitor: {} limit of {} reached; {n} refused (e.g. {}); raise --{} or stop whoever sends them",
                self.what,
                self.value,
                examples.join(", "),
                self.flag
            );
            return Some(alert(AlertState::Firing, id, at, n as f64, n, message));
        }
        let quiet = self
            .last_refusal
            .is_none_or(|t| now.saturating_duration_since(t) >= CAPACITY_QUIET);
        if quiet {
            if let Some((id, started_at, total)) = self.firing.take() {
                let message = format!(
                    "monitor: nothing refused at the {} limit of {} for {}s ({total} refused in all)",
                    self.what,
                    self.value,
                    CAPACITY_QUIET.as_secs()
                );
                return Some(alert(
                    AlertState::Resolved,
                    id,
                    started_at,
                    0.0,
                    total,
                    message,
                ));
            }
        }
        None
    }
}

#[derive(Debug)]
struct Limits {
    instances: Limit,
    services: Limit,
    anomaly_services: Limit,
}

struct Inner {
    registry: Mutex<Registry>,
    anomaly: Mutex<AnomalyDetector>,
    /// Open status-change alerts (service NOT_SERVING): id and start.
    down_since: Mutex<HashMap<String, (String, SystemTime)>>,
    counters: Mutex<Counters>,
    refusals: Mutex<RefusalLog>,
    /// Request lines dropped by anomaly detection (its service limit).
    dropped_lines: Mutex<RefusalLog>,
    limits: Mutex<Limits>,
    next_anomaly_evaluation: Mutex<Instant>,
    trust: TrustConfig,
    forget_after: Duration,
    health: HealthState,
    alerts: broadcast::Sender<Alert>,
    /// Signalled when a heartbeat brought news (a new instance, a revival):
    /// the clock plans its next evaluation afresh.
    wake: Notify,
}

/// Shared monitor state; cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("health", &self.inner.health)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before it can panic.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Monitor {
    /// A monitor that knows no service yet; the mesh (`""`) is SERVING
    /// (every known service is, vacuously).
    pub fn new(registry: RegistryConfig, anomaly: AnomalyConfig) -> Self {
        let now = Instant::now();
        let limits = Limits {
            instances: Limit::new(
                "instances",
                "max-instances",
                "instance",
                registry.max_instances,
            ),
            services: Limit::new("services", "max-services", "service", registry.max_services),
            anomaly_services: Limit::new(
                "anomaly-windows",
                "max-services",
                "anomaly window (service)",
                anomaly.max_services,
            ),
        };
        let detector = AnomalyDetector::new(anomaly, now);
        let next = detector.next_boundary(now);
        let health = HealthState::new();
        health.set(registry::MESH, ServingStatus::Serving);
        Self {
            inner: Arc::new(Inner {
                trust: registry.trust.clone(),
                forget_after: registry.forget_after,
                registry: Mutex::new(Registry::new(registry)),
                anomaly: Mutex::new(detector),
                down_since: Mutex::new(HashMap::new()),
                counters: Mutex::new(Counters::default()),
                refusals: Mutex::new(RefusalLog::new(trust::REPORT_EVERY, now)),
                dropped_lines: Mutex::new(RefusalLog::new(trust::REPORT_EVERY, now)),
                limits: Mutex::new(limits),
                next_anomaly_evaluation: Mutex::new(next),
                health,
                alerts: broadcast::channel(ALERT_BUFFER).0,
                wake: Notify::new(),
            }),
        }
    }

    /// The `grpc.health.v1` state: every service name, its gRPC names, and `""`.
    pub fn health(&self) -> HealthState {
        self.inner.health.clone()
    }

    /// Alerts from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.inner.alerts.subscribe()
    }

    pub fn counters(&self) -> Counters {
        *lock(&self.inner.counters)
    }

    /// One record of the heartbeats topic. Anything that is not a heartbeat
    /// in the runtime's shape is refused: counted and reported.
    pub fn heartbeat_line(&self, payload: &[u8]) {
        match trust::admit(payload, SystemTime::now(), &self.inner.trust) {
            Ok((hb, age_ms)) => self.observe(&hb, Age(age_ms)),
            Err(refusal) => self.refuse(&refusal, ""),
        }
    }

    /// Records a heartbeat received now (after the same checks).
    pub fn heartbeat(&self, hb: &Heartbeat) {
        match trust::check(hb, SystemTime::now(), &self.inner.trust) {
            Ok(age_ms) => self.observe(hb, Age(age_ms)),
            Err(refusal) => self.refuse(&refusal, &trust::about(hb)),
        }
    }

    fn observe(&self, hb: &Heartbeat, age: Age) {
        let now = Instant::now();
        let result = lock(&self.inner.registry).observe(hb, now, age);
        match result {
            Ok(changed) => {
                lock(&self.inner.counters).heartbeats += 1;
                // A goodbye, a new instance or a revival is published now,
                // not at the next tick (only this service is evaluated).
                if changed {
                    self.evaluate_service(&registry::service_key(hb), now);
                    self.inner.wake.notify_one();
                }
            }
            Err(refusal) => {
                let about = trust::about(hb);
                {
                    let mut limits = lock(&self.inner.limits);
                    match refusal {
                        Refusal::TooManyInstances(_) => {
                            limits.instances.refuse(1, [about.clone()]);
                        }
                        Refusal::TooManyServices(_) => limits.services.refuse(1, [about.clone()]),
                        _ => {}
                    }
                }
                self.refuse(&refusal, &about);
            }
        }
    }

    fn refuse(&self, refusal: &Refusal, about: &str) {
        {
            let mut counters = lock(&self.inner.counters);
            match refusal {
                Refusal::NotHeartbeat(_) => counters.not_heartbeats += 1,
                _ => counters.refused_heartbeats += 1,
            }
        }
        lock(&self.inner.refusals).count(refusal, about);
    }

    /// One record of the logs topic; only request lines count.
    pub fn log_line(&self, payload: &[u8]) {
        if let Some(req) = anomaly::parse_request(payload) {
            // A histogram allocation failure cannot happen with fixed valid bounds.
            let _ = lock(&self.inner.anomaly).record(&req, Instant::now());
            lock(&self.inner.counters).requests += 1;
        }
    }

    /// When the next verdict change is due without any heartbeat (a phi
    /// crossing or a hard bound): the clock evaluates then.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        lock(&self.inner.registry).next_change(now)
    }

    /// Completes when a heartbeat brought news since the last call.
    pub async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// Re-evaluates at `now`: service statuses into the health state and
    /// status alerts; at bucket boundaries, anomalies; refusals reported
    /// once per period; limits into capacity alerts. Publishes and returns
    /// the alerts raised.
    pub fn tick(&self, now: Instant) -> Vec<Alert> {
        let mut alerts = self.evaluate_statuses(now);
        let mut next = lock(&self.inner.next_anomaly_evaluation);
        let mut later = Vec::new();
        let (dropped, limit) = {
            let mut det = lock(&self.inner.anomaly);
            if now >= *next {
                later.extend(det.evaluate(now));
                *next = det.next_boundary(now);
            }
            (det.take_dropped(), det.config().max_services)
        };
        drop(next);
        if let Some(dropped) = dropped {
            let refusal = Refusal::TooManyServices(limit);
            let about = dropped.examples.first().cloned().unwrap_or_default();
            lock(&self.inner.dropped_lines).count_n(&refusal, &about, dropped.lines);
            lock(&self.inner.limits)
                .anomaly_services
                .refuse(dropped.lines, dropped.examples);
        }
        if let Some(report) = lock(&self.inner.dropped_lines).report(now) {
            tracing::warn!(
                meshwatch.monitor.anomaly_lines_dropped = report.total(),
                "anomaly detection dropped {} request lines in the last {}s: their services are beyond the limit of {limit} services with a window (e.g. {})",
                report.total(),
                report.period.as_secs(),
                report.example
            );
        }
        if let Some(report) = lock(&self.inner.refusals).report(now) {
            let by_reason: Vec<String> = report
                .counts
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            tracing::warn!(
                meshwatch.monitor.heartbeats_refused = report.total(),
                meshwatch.monitor.refusal_reasons = %by_reason.join(", "),
                "{} records of the heartbeats topic refused in the last {}s ({}); e.g. {}",
                report.total(),
                report.period.as_secs(),
                by_reason.join(", "),
                report.example
            );
        }
        {
            let mut limits = lock(&self.inner.limits);
            let Limits {
                instances,
                services,
                anomaly_services,
            } = &mut *limits;
            for limit in [instances, services, anomaly_services] {
                later.extend(limit.tick(now));
            }
        }
        self.publish(&later);
        alerts.extend(later);
        alerts
    }

    /// Service statuses at `now` into the health state, and their alerts
    /// published. The registry stays locked until both are out, so that
    /// evaluations from the clock and from the heartbeat consumer publish in
    /// the order they evaluated.
    fn evaluate_statuses(&self, now: Instant) -> Vec<Alert> {
        let mut reg = lock(&self.inner.registry);
        let changes = reg.evaluate(now);
        registry::publish(&self.inner.health, &changes, reg.mesh_status());
        let alerts = self.status_alerts(&changes);
        self.publish(&alerts);
        drop(reg);
        alerts
    }

    /// [`Self::evaluate_statuses`] for one service.
    fn evaluate_service(&self, service: &str, now: Instant) -> Vec<Alert> {
        let mut reg = lock(&self.inner.registry);
        let changes: Vec<StatusChange> = reg.evaluate_service(service, now).into_iter().collect();
        registry::publish(&self.inner.health, &changes, reg.mesh_status());
        let alerts = self.status_alerts(&changes);
        self.publish(&alerts);
        drop(reg);
        alerts
    }

    fn publish(&self, alerts: &[Alert]) {
        for alert in alerts {
            log_alert(alert);
            // No subscriber is fine.
            let _ = self.inner.alerts.send(alert.clone());
        }
    }

    fn status_alerts(&self, changes: &[StatusChange]) -> Vec<Alert> {
        let mut down = lock(&self.inner.down_since);
        let mut alerts = Vec::new();
        for change in changes {
            let at = SystemTime::now();
            let (state, started_at, id, message) = match (change.from, change.to) {
                (_, Some(ServingStatus::NotServing)) => {
                    let id = alert_id(AlertKind::StatusChange, &change.service, at);
                    down.insert(change.service.clone(), (id.clone(), at));
                    let message = format!(
                        "{}: NOT_SERVING (no instance alive and ready)",
                        change.service
                    );
                    (AlertState::Firing, at, id, message)
                }
                (Some(ServingStatus::NotServing), Some(ServingStatus::Serving)) => {
                    let (id, started) = down.remove(&change.service).unwrap_or_else(|| {
                        (alert_id(AlertKind::StatusChange, &change.service, at), at)
                    });
                    let message = format!("{}: SERVING again", change.service);
                    (AlertState::Resolved, started, id, message)
                }
                (_, None) => {
                    // Removed after fading: its open alert is closed.
                    let Some((id, started)) = down.remove(&change.service) else {
                        continue;
                    };
                    let message = format!(
                        "{}: forgotten (no instance for {}s, then faded as long); the NOT_SERVING alert is closed",
                        change.service,
                        self.inner.forget_after.as_secs()
                    );
                    (AlertState::Resolved, started, id, message)
                }
                // First seen and serving: nothing to report.
                (_, Some(ServingStatus::Serving)) => continue,
            };
            let serving = change.to == Some(ServingStatus::Serving);
            alerts.push(Alert {
                id,
                kind: AlertKind::StatusChange,
                service: change.service.clone(),
                state,
                message,
                window: Duration::ZERO,
                observed: if serving { 1.0 } else { 0.0 },
                baseline: 1.0,
                threshold: 1.0,
                requests: 0,
                example_trace_ids: Vec::new(),
                started_at,
                at,
            });
        }
        alerts
    }

    /// Every service with its instances at `now`, and the mesh status.
    pub fn services(&self, now: Instant) -> (Vec<ServiceView>, ServingStatus) {
        let reg = lock(&self.inner.registry);
        (reg.snapshot(now), reg.mesh_status())
    }
}

fn log_alert(alert: &Alert) {
    let fields = (
        alert.id.as_str(),
        alert.kind.as_str(),
        alert.state.as_str(),
        alert.service.as_str(),
    );
    match alert.state {
        AlertState::Firing => tracing::warn!(
            alert.id = fields.0, alert.kind = fields.1, alert.state = fields.2,
            alert.service = fields.3, alert.observed = alert.observed,
            alert.baseline = alert.baseline, alert.threshold = alert.threshold,
            alert.requests = alert.requests,
            alert.example_trace_ids = ?alert.example_trace_ids,
            "{}", alert.message
        ),
        AlertState::Resolved => tracing::info!(
            alert.id = fields.0,
            alert.kind = fields.1,
            alert.state = fields.2,
            alert.service = fields.3,
            alert.observed = alert.observed,
            alert.baseline = alert.baseline,
            alert.requests = alert.requests,
            "{}",
            alert.message
        ),
    }
}

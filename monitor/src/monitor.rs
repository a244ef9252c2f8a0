//! The monitor's state and its clockwork: heartbeats into the registry, log
//! lines into anomaly detection, periodic evaluation into the health state
//! and alerts. No I/O here: Kafka and gRPC feed and read it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{self, Heartbeat};
use meshwatch_runtime::health::{HealthState, ServingStatus};
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::alert::{alert_id, Alert, AlertKind, AlertState};
use crate::anomaly::{self, AnomalyConfig, AnomalyDetector};
use crate::registry::{self, Registry, RegistryConfig, ServiceView, StatusChange};

/// Alerts buffered for each subscriber (gRPC streams, the Kafka sink); a
/// subscriber further behind loses the oldest and is told so.
pub const ALERT_BUFFER: usize = 1024;

/// Counters of what was read, for logs and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub heartbeats: u64,
    pub not_heartbeats: u64,
    pub refused_heartbeats: u64,
    pub requests: u64,
}

struct Inner {
    registry: Mutex<Registry>,
    anomaly: Mutex<AnomalyDetector>,
    /// Open status-change alerts (service NOT_SERVING): id and start.
    down_since: Mutex<HashMap<String, (String, SystemTime)>>,
    counters: Mutex<Counters>,
    next_anomaly_evaluation: Mutex<Instant>,
    health: HealthState,
    alerts: broadcast::Sender<Alert>,
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
        let detector = AnomalyDetector::new(anomaly, now);
        let next = detector.next_boundary(now);
        let health = HealthState::new();
        health.set(registry::MESH, ServingStatus::Serving);
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::new(registry)),
                anomaly: Mutex::new(detector),
                down_since: Mutex::new(HashMap::new()),
                counters: Mutex::new(Counters::default()),
                next_anomaly_evaluation: Mutex::new(next),
                health,
                alerts: broadcast::channel(ALERT_BUFFER).0,
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

    /// One record of the heartbeats topic. Anything that is not a valid
    /// heartbeat is counted and skipped.
    pub fn heartbeat_line(&self, payload: &[u8]) {
        let parsed = serde_json::from_slice::<Map<String, Value>>(payload)
            .ok()
            .filter(heartbeat::is_heartbeat)
            .and_then(|obj| Heartbeat::from_json(&obj).ok());
        let Some(hb) = parsed else {
            lock(&self.inner.counters).not_heartbeats += 1;
            return;
        };
        self.heartbeat(&hb);
    }

    /// Records a heartbeat received now.
    pub fn heartbeat(&self, hb: &Heartbeat) {
        let age = SystemTime::now()
            .duration_since(hb.timestamp)
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        let result = lock(&self.inner.registry).observe(hb, now, age);
        let changed = {
            let mut counters = lock(&self.inner.counters);
            match result {
                Ok(changed) => {
                    counters.heartbeats += 1;
                    changed
                }
                Err(e) => {
                    counters.refused_heartbeats += 1;
                    if counters.refused_heartbeats.is_power_of_two() {
                        tracing::warn!(refused = counters.refused_heartbeats, error = %e, "heartbeat refused");
                    }
                    false
                }
            }
        };
        // A goodbye, a new instance or a revival is published now, not at
        // the next tick.
        if changed {
            self.evaluate_statuses(now);
        }
    }

    /// One record of the logs topic; only request lines count.
    pub fn log_line(&self, payload: &[u8]) {
        if let Some(req) = anomaly::parse_request(payload) {
            // A histogram allocation failure cannot happen with fixed valid bounds.
            let _ = lock(&self.inner.anomaly).record(&req, Instant::now());
            lock(&self.inner.counters).requests += 1;
        }
    }

    /// Re-evaluates at `now`: service statuses into the health state and
    /// status alerts; at bucket boundaries, anomalies. Publishes and returns
    /// the alerts raised.
    pub fn tick(&self, now: Instant) -> Vec<Alert> {
        let mut alerts = self.evaluate_statuses(now);
        let mut next = lock(&self.inner.next_anomaly_evaluation);
        if now >= *next {
            let mut det = lock(&self.inner.anomaly);
            let anomalies = det.evaluate(now);
            *next = det.next_boundary(now);
            drop(det);
            self.publish(&anomalies);
            alerts.extend(anomalies);
        }
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
                (_, ServingStatus::NotServing) => {
                    let id = alert_id(AlertKind::StatusChange, &change.service, at);
                    down.insert(change.service.clone(), (id.clone(), at));
                    let message = format!(
                        "{}: NOT_SERVING (no instance alive and ready)",
                        change.service
                    );
                    (AlertState::Firing, at, id, message)
                }
                (Some(ServingStatus::NotServing), ServingStatus::Serving) => {
                    let (id, started) = down.remove(&change.service).unwrap_or_else(|| {
                        (alert_id(AlertKind::StatusChange, &change.service, at), at)
                    });
                    let message = format!("{}: SERVING again", change.service);
                    (AlertState::Resolved, started, id, message)
                }
                // First seen and serving: nothing to report.
                (_, ServingStatus::Serving) => continue,
            };
            let serving = change.to == ServingStatus::Serving;
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

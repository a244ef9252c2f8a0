//! The mesh as seen through heartbeats: instances grouped by service, the
//! serving status of each service and of the whole mesh, the health names
//! they are published under, and the status changes between evaluations.
//!
//! Forgetting, precisely: an instance is forgotten once no heartbeat of it
//! has arrived for longer than `forget_after` (a goodbye counts as its last
//! heartbeat). A service whose instances are all forgotten *fades*: from
//! that moment it no longer counts for the whole mesh (`""`), while its own
//! names still answer NOT_SERVING (Check, Watch, List, ListServices with no
//! instance) so an operator sees what went; after another `forget_after` of
//! fading it is removed (Check NOT_FOUND, Watch SERVICE_UNKNOWN with the
//! stream kept open, absent from List). A heartbeat of a new instance brings
//! a fading service back at once.

use std::collections::BTreeMap;
use std::time::Duration;

use meshwatch_ecs::heartbeat::Heartbeat;
use meshwatch_runtime::health::{HealthState, ServingStatus};
use tokio::time::Instant;

use crate::detector::{Age, DetectorConfig, InstanceDetector, Liveness};
use crate::trust::{Refusal, TrustConfig};

/// Instances silent (or down) for longer than this are forgotten; a service
/// left with none fades for as long again, then is removed.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(600);
/// Bound on tracked instances across all services; heartbeats of further new
/// instances are refused (counted and reported) until some are forgotten.
pub const DEFAULT_MAX_INSTANCES: usize = 10_000;
/// Bound on known services; heartbeats of further new services are refused.
pub const DEFAULT_MAX_SERVICES: usize = 1_000;
/// The service name shippers put in their own heartbeats.
pub const SHIPPER_SERVICE: &str = "shipper";
/// Health name of the whole mesh.
pub const MESH: &str = "";

/// Fully qualified gRPC service names published alongside a short name.
const GRPC_NAMES: &[(&str, &str)] = &[
    ("order", "meshwatch.order.v1.OrderService"),
    ("inventory", "meshwatch.inventory.v1.InventoryService"),
    ("payment", "meshwatch.payment.v1.PaymentService"),
    ("monitor", "meshwatch.monitor.v1.Monitor"),
];

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub detector: DetectorConfig,
    /// What a heartbeat must look like to count (checked before the registry sees it).
    pub trust: TrustConfig,
    pub forget_after: Duration,
    pub max_instances: usize,
    pub max_services: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::default(),
            trust: TrustConfig::default(),
            forget_after: DEFAULT_FORGET_AFTER,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_services: DEFAULT_MAX_SERVICES,
        }
    }
}

/// The registry key of the service a heartbeat is about: its `service.name`,
/// or `shipper/<target>` for a shipper's own heartbeat.
pub fn service_key(hb: &Heartbeat) -> String {
    match (&hb.target_service, hb.service_name.as_str()) {
        (Some(target), SHIPPER_SERVICE) => format!("{SHIPPER_SERVICE}/{target}"),
        _ => hb.service_name.clone(),
    }
}

/// Every health name a service is published under: its key, plus the fully
/// qualified gRPC service name for the mesh's own services.
pub fn health_names(service: &str) -> Vec<String> {
    let mut names = vec![service.to_owned()];
    names.extend(
        GRPC_NAMES
            .iter()
            .filter(|(short, _)| *short == service)
            .map(|(_, full)| (*full).to_owned()),
    );
    names
}

/// A service changed status between two evaluations, was seen first, or
/// was removed after fading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub service: String,
    /// `None` when the service was not known before.
    pub from: Option<ServingStatus>,
    /// `None` when the service was removed.
    pub to: Option<ServingStatus>,
}

/// One instance as reported by [`Registry::snapshot`].
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceView {
    pub instance_id: String,
    pub version: String,
    pub liveness: Liveness,
    pub silent_for: Duration,
    pub phi: f64,
    pub last_sequence: u64,
    pub interval: Duration,
}

/// One service as reported by [`Registry::snapshot`].
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceView {
    pub name: String,
    pub grpc_names: Vec<String>,
    pub status: ServingStatus,
    /// Every instance is forgotten: the service no longer counts for `""`
    /// and will be removed.
    pub fading: bool,
    pub instances: Vec<InstanceView>,
}

#[derive(Debug)]
struct ServiceEntry {
    instances: BTreeMap<String, InstanceDetector>,
    /// As of the last evaluation; `None` before the first one.
    status: Option<ServingStatus>,
    /// Since when the service has had no instance left (it is fading).
    empty_since: Option<Instant>,
}

/// Instances by service. A vanished service keeps the mesh unhealthy until
/// its instances are forgotten (see the module's account of forgetting).
#[derive(Debug)]
pub struct Registry {
    cfg: RegistryConfig,
    services: BTreeMap<String, ServiceEntry>,
    instance_count: usize,
    /// When the last heartbeat of any instance arrived.
    last_input: Option<Instant>,
    /// [`DetectorConfig::crossing`] of the configured threshold.
    crossing: f64,
    /// The shortest interval any instance announces (as of the last full
    /// evaluation, or shorter since): input liveness is judged by it.
    shortest_interval: Option<Duration>,
}

impl Registry {
    pub fn new(cfg: RegistryConfig) -> Self {
        let crossing = cfg.detector.crossing();
        Self {
            cfg,
            services: BTreeMap::new(),
            instance_count: 0,
            last_input: None,
            crossing,
            shortest_interval: None,
        }
    }

    /// Known services (fading ones included).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Tracked instances.
    pub fn instance_count(&self) -> usize {
        self.instance_count
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// Records a heartbeat received at `now`, `age` old (by the sender's
    /// clock). Returns whether it is news to publish at once rather than at
    /// the next evaluation: a new live instance, a goodbye, a revival, a
    /// change of readiness. A suspicion never is: a stale heartbeat replayed
    /// at start-up is followed by fresher ones within the same catch-up, and
    /// publishing the passing suspicion would flap every service.
    /// Refused: a new service past `max_services`, a new instance past
    /// `max_instances`, a sequence out of the instance's window.
    pub fn observe(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
        age: impl Into<Age>,
    ) -> Result<bool, Refusal> {
        let key = service_key(hb);
        if !self.services.contains_key(&key) && self.services.len() >= self.cfg.max_services {
            return Err(Refusal::TooManyServices(self.cfg.max_services));
        }
        let at_limit = self.instance_count >= self.cfg.max_instances;
        let entry = match self.services.get_mut(&key) {
            Some(entry) => entry,
            None if at_limit => return Err(Refusal::TooManyInstances(self.cfg.max_instances)),
            None => self.services.entry(key).or_insert_with(|| ServiceEntry {
                instances: BTreeMap::new(),
                status: None,
                empty_since: None,
            }),
        };
        let news = match entry.instances.get_mut(&hb.instance_id) {
            Some(det) => {
                let changed = det.heartbeat(hb, now, age, &self.cfg.detector)?;
                changed && det.liveness(now, &self.cfg.detector) != Liveness::Suspected
            }
            None if at_limit => return Err(Refusal::TooManyInstances(self.cfg.max_instances)),
            None => {
                let det = InstanceDetector::new(hb, now, age, &self.cfg.detector);
                self.shortest_interval = Some(
                    self.shortest_interval
                        .map_or(det.interval(), |s| s.min(det.interval())),
                );
                let news = det.liveness(now, &self.cfg.detector) != Liveness::Suspected;
                entry.instances.insert(hb.instance_id.clone(), det);
                entry.empty_since = None;
                self.instance_count = self.instance_count.saturating_add(1);
                news
            }
        };
        self.last_input = Some(now);
        Ok(news)
    }

    /// Whether the monitor hears from anyone at `now`: some heartbeat arrived
    /// within the shortest announced interval plus the acceptable pause. With
    /// several instances beating, one of them falling silent leaves the input
    /// live; all of them falling silent at once is first of all a stalled
    /// input, and only the hard bound judges them (see
    /// [`InstanceDetector::liveness_given_input`]).
    pub fn input_live(&self, now: Instant) -> bool {
        let Some(last) = self.last_input else {
            return true;
        };
        let shortest = self.shortest_interval.unwrap_or(Duration::from_secs(1));
        now.saturating_duration_since(last)
            <= shortest.saturating_add(self.cfg.detector.acceptable_pause)
    }

    /// The next instant after `now` at which an evaluation would find a
    /// verdict changed without any new heartbeat (the earliest phi crossing
    /// or hard bound of any instance).
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        self.services
            .values()
            .flat_map(|s| s.instances.values())
            .filter_map(|det| det.next_change(now, &self.cfg.detector, self.crossing))
            .min()
    }

    /// Re-evaluates every service at `now`, forgets instances silent for
    /// longer than `forget_after`, starts services without instances fading
    /// and removes those faded for `forget_after`; returns the services whose
    /// status changed (or that were removed).
    pub fn evaluate(&mut self, now: Instant) -> Vec<StatusChange> {
        self.shortest_interval = self
            .services
            .values()
            .flat_map(|s| s.instances.values())
            .map(InstanceDetector::interval)
            .min();
        let input_live = self.input_live(now);
        let cfg = &self.cfg;
        let mut changes = Vec::new();
        let mut forgotten = 0usize;
        self.services.retain(|name, entry| {
            let before = entry.instances.len();
            entry
                .instances
                .retain(|_, det| det.silent_for(now) <= cfg.forget_after);
            forgotten += before - entry.instances.len();
            if entry.instances.is_empty() {
                let since = *entry.empty_since.get_or_insert(now);
                if now.saturating_duration_since(since) > cfg.forget_after {
                    changes.push(StatusChange {
                        service: name.clone(),
                        from: entry.status,
                        to: None,
                    });
                    return false;
                }
            }
            changes.extend(judge(name, entry, now, &cfg.detector, input_live));
            true
        });
        self.instance_count = self.instance_count.saturating_sub(forgotten);
        changes
    }

    /// Re-evaluates one service at `now`: after a heartbeat of it brought
    /// news, without the cost of evaluating every other service.
    pub fn evaluate_service(&mut self, service: &str, now: Instant) -> Option<StatusChange> {
        let input_live = self.input_live(now);
        let entry = self.services.get_mut(service)?;
        judge(service, entry, now, &self.cfg.detector, input_live)
    }

    /// The whole mesh as of the last evaluation: SERVING when every known
    /// service that is not fading is (vacuously so before any is known).
    pub fn mesh_status(&self) -> ServingStatus {
        if self
            .services
            .values()
            .filter(|s| s.empty_since.is_none())
            .all(|s| s.status != Some(ServingStatus::NotServing))
        {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    /// Every service with its instances, as of `now`, sorted by name.
    pub fn snapshot(&self, now: Instant) -> Vec<ServiceView> {
        let input_live = self.input_live(now);
        let cfg = &self.cfg.detector;
        self.services
            .iter()
            .map(|(name, entry)| ServiceView {
                name: name.clone(),
                grpc_names: health_names(name).split_off(1),
                status: entry.status.unwrap_or(ServingStatus::NotServing),
                fading: entry.empty_since.is_some(),
                instances: entry
                    .instances
                    .iter()
                    .map(|(id, det)| InstanceView {
                        instance_id: id.clone(),
                        version: det.version().to_owned(),
                        liveness: det.liveness_given_input(now, cfg, input_live),
                        silent_for: det.silent_for(now),
                        phi: det.phi(now, cfg),
                        last_sequence: det.last_sequence(),
                        interval: det.interval(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The status of `entry` at `now`; its change, if it changed.
fn judge(
    name: &str,
    entry: &mut ServiceEntry,
    now: Instant,
    cfg: &DetectorConfig,
    input_live: bool,
) -> Option<StatusChange> {
    let serving = entry
        .instances
        .values()
        .any(|det| det.liveness_given_input(now, cfg, input_live).is_serving());
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    if entry.status == Some(status) {
        return None;
    }
    let change = StatusChange {
        service: name.to_owned(),
        from: entry.status,
        to: Some(status),
    };
    entry.status = Some(status);
    Some(change)
}

/// Publishes `changes` and the mesh status into the health state the
/// `grpc.health.v1` service serves.
pub fn publish(health: &HealthState, changes: &[StatusChange], mesh: ServingStatus) {
    for change in changes {
        for name in health_names(&change.service) {
            match change.to {
                Some(status) => health.set(&name, status),
                None => health.remove(&name),
            }
        }
    }
    health.set(MESH, mesh);
}

#[cfg(test)]
mod tests;

//! The mesh as seen through heartbeats: instances grouped by service, the
//! serving status of each service and of the whole mesh, the health names
//! they are published under, and the status changes between evaluations.

use std::collections::BTreeMap;
use std::time::Duration;

use meshwatch_ecs::heartbeat::Heartbeat;
use meshwatch_runtime::health::{HealthState, ServingStatus};
use tokio::time::Instant;

use crate::detector::{DetectorConfig, InstanceDetector, Liveness};

/// Instances silent (or down) for longer than this are forgotten.
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("instance limit of {0} reached; heartbeat of new instance {1} ignored")]
    TooManyInstances(usize, String),
    #[error("service limit of {0} reached; heartbeat of new service {1} ignored")]
    TooManyServices(usize, String),
}

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub detector: DetectorConfig,
    pub forget_after: Duration,
    pub max_instances: usize,
    pub max_services: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::default(),
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

/// A service changed status between two evaluations (or was seen first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub service: String,
    /// `None` when the service was not known before.
    pub from: Option<ServingStatus>,
    pub to: ServingStatus,
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
    pub instances: Vec<InstanceView>,
}

#[derive(Debug)]
struct ServiceEntry {
    instances: BTreeMap<String, InstanceDetector>,
    /// As of the last evaluation; `None` before the first one.
    status: Option<ServingStatus>,
}

/// Instances by service. Services, once seen, stay known (NOT_SERVING when
/// no instance is left) so that a vanished service keeps the mesh unhealthy.
#[derive(Debug)]
pub struct Registry {
    cfg: RegistryConfig,
    services: BTreeMap<String, ServiceEntry>,
    instance_count: usize,
    /// When the last heartbeat of any instance arrived.
    last_input: Option<Instant>,
}

impl Registry {
    pub fn new(cfg: RegistryConfig) -> Self {
        Self {
            cfg,
            services: BTreeMap::new(),
            instance_count: 0,
            last_input: None,
        }
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
    pub fn observe(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
        age: Duration,
    ) -> Result<bool, RegistryError> {
        self.last_input = Some(now);
        let key = service_key(hb);
        if !self.services.contains_key(&key) && self.services.len() >= self.cfg.max_services {
            return Err(RegistryError::TooManyServices(self.cfg.max_services, key));
        }
        let at_limit = self.instance_count >= self.cfg.max_instances;
        let entry = self.services.entry(key).or_insert_with(|| ServiceEntry {
            instances: BTreeMap::new(),
            status: None,
        });
        match entry.instances.get_mut(&hb.instance_id) {
            Some(det) => {
                let changed = det.heartbeat(hb, now, age, &self.cfg.detector);
                Ok(changed && det.liveness(now, &self.cfg.detector) != Liveness::Suspected)
            }
            None if at_limit => Err(RegistryError::TooManyInstances(
                self.cfg.max_instances,
                hb.instance_id.clone(),
            )),
            None => {
                let det = InstanceDetector::new(hb, now, age, &self.cfg.detector);
                let news = det.liveness(now, &self.cfg.detector) != Liveness::Suspected;
                entry.instances.insert(hb.instance_id.clone(), det);
                self.instance_count += 1;
                Ok(news)
            }
        }
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
        let shortest = self
            .services
            .values()
            .flat_map(|s| s.instances.values())
            .map(InstanceDetector::interval)
            .min()
            .unwrap_or(Duration::from_secs(1));
        now.saturating_duration_since(last) <= shortest + self.cfg.detector.acceptable_pause
    }

    /// Re-evaluates every service at `now`, forgets instances silent for longer
    /// than `forget_after`, and returns the services whose status changed.
    pub fn evaluate(&mut self, now: Instant) -> Vec<StatusChange> {
        let input_live = self.input_live(now);
        let cfg = &self.cfg;
        let mut changes = Vec::new();
        for (name, entry) in &mut self.services {
            let before = entry.instances.len();
            entry
                .instances
                .retain(|_, det| det.silent_for(now) <= cfg.forget_after);
            self.instance_count -= before - entry.instances.len();
            let serving = entry.instances.values().any(|det| {
                det.liveness_given_input(now, &cfg.detector, input_live)
                    .is_serving()
            });
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if entry.status != Some(status) {
                changes.push(StatusChange {
                    service: name.clone(),
                    from: entry.status,
                    to: status,
                });
                entry.status = Some(status);
            }
        }
        changes
    }

    /// The whole mesh as of the last evaluation: SERVING when every known
    /// service is (vacuously so before any service is known).
    pub fn mesh_status(&self) -> ServingStatus {
        if self
            .services
            .values()
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

/// Publishes `changes` and the mesh status into the health state the
/// `grpc.health.v1` service serves.
pub fn publish(health: &HealthState, changes: &[StatusChange], mesh: ServingStatus) {
    for change in changes {
        for name in health_names(&change.service) {
            health.set(&name, change.to);
        }
    }
    health.set(MESH, mesh);
}

#[cfg(test)]
mod tests;

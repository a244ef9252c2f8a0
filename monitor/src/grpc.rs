//! The `meshwatch.monitor.v1.Monitor` gRPC adapter over [`Monitor`]:
//! conversions to proto types happen here and nowhere else.

use std::time::Duration;

use meshwatch_proto::monitor::v1 as pb;
use meshwatch_runtime::health::ServingStatus;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::alert::{Alert, AlertKind, AlertState};
use crate::detector::Liveness;
use crate::monitor::Monitor;
use crate::registry::{InstanceView, ServiceView};

/// Alerts buffered per StreamAlerts call towards the client.
const STREAM_BUFFER: usize = 64;

/// The gRPC service; cheap to clone.
#[derive(Clone, Debug)]
pub struct MonitorService {
    monitor: Monitor,
    shutdown: tokio_util::sync::CancellationToken,
}

/// The tonic server for `meshwatch.monitor.v1.Monitor` over `monitor`.
/// The Monitor service; its alert streams end with UNAVAILABLE when
/// `shutdown` fires, so they do not hold the drain for its whole grace.
pub fn monitor_server(
    monitor: Monitor,
    shutdown: tokio_util::sync::CancellationToken,
) -> pb::monitor_server::MonitorServer<MonitorService> {
    pb::monitor_server::MonitorServer::new(MonitorService { monitor, shutdown })
}

fn status(s: ServingStatus) -> pb::ServingStatus {
    match s {
        ServingStatus::Serving => pb::ServingStatus::Serving,
        ServingStatus::NotServing => pb::ServingStatus::NotServing,
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

impl From<&InstanceView> for pb::InstanceStatus {
    fn from(i: &InstanceView) -> Self {
        let state = match i.liveness {
            Liveness::Alive => pb::InstanceState::Alive,
            Liveness::NotReady => pb::InstanceState::NotReady,
            Liveness::Suspected => pb::InstanceState::Suspected,
            Liveness::Down => pb::InstanceState::Down,
        };
        Self {
            instance_id: i.instance_id.clone(),
            version: i.version.clone(),
            state: state as i32,
            last_heartbeat_age: Some(duration(i.silent_for)),
            // Protobuf doubles carry infinity; clamp anyway so JSON renderings stay numeric.
            phi: i.phi.min(f64::MAX),
            last_sequence: i.last_sequence,
            heartbeat_interval: Some(duration(i.interval)),
        }
    }
}

impl From<&ServiceView> for pb::ServiceStatus {
    fn from(s: &ServiceView) -> Self {
        Self {
            name: s.name.clone(),
            grpc_service_names: s.grpc_names.clone(),
            status: status(s.status) as i32,
            instances: s.instances.iter().map(Into::into).collect(),
            fading: s.fading,
        }
    }
}

impl From<&Alert> for pb::Alert {
    fn from(a: &Alert) -> Self {
        let kind = match a.kind {
            AlertKind::ErrorRate => pb::AlertKind::AnomalyErrorRate,
            AlertKind::Latency => pb::AlertKind::AnomalyLatency,
            AlertKind::StatusChange => pb::AlertKind::StatusChange,
            AlertKind::Capacity => pb::AlertKind::Capacity,
        };
        let state = match a.state {
            AlertState::Firing => pb::AlertState::Firing,
            AlertState::Resolved => pb::AlertState::Resolved,
        };
        Self {
            id: a.id.clone(),
            kind: kind as i32,
            service: a.service.clone(),
            state: state as i32,
            message: a.message.clone(),
            window: Some(duration(a.window)),
            observed: a.observed,
            baseline: a.baseline,
            threshold: a.threshold,
            requests: a.requests,
            example_trace_ids: a.example_trace_ids.clone(),
            started_at: Some(prost_types::Timestamp::from(a.started_at)),
            at: Some(prost_types::Timestamp::from(a.at)),
        }
    }
}

#[tonic::async_trait]
impl pb::monitor_server::Monitor for MonitorService {
    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        // Off the runtime's workers: it takes the registry lock.
        let monitor = self.monitor.clone();
        let (services, mesh) =
            tokio::task::spawn_blocking(move || monitor.services(Instant::now()))
                .await
                .map_err(|_| Status::internal("listing the services failed"))?;
        Ok(Response::new(pb::ListServicesResponse {
            services: services.iter().map(Into::into).collect(),
            mesh_status: status(mesh) as i32,
        }))
    }

    type StreamAlertsStream = ReceiverStream<Result<pb::Alert, Status>>;

    async fn stream_alerts(
        &self,
        request: Request<pb::StreamAlertsRequest>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        let only = request.into_inner().service;
        let mut alerts = self.monitor.subscribe();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    // The client went away: stop at once, not at the next alert.
                    () = tx.closed() => break,
                    () = shutdown.cancelled() => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "the monitor is shutting down; reconnect (to another replica)",
                            )))
                            .await;
                        break;
                    }
                    next = alerts.recv() => next,
                };
                let item = match next {
                    Ok(alert) if only.is_empty() || alert.service == only => Ok((&alert).into()),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::resource_exhausted(
                        format!("this stream fell {n} alerts behind and lost them; reconnect"),
                    )),
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let end = item.is_err();
                // A failed send means the client left.
                if tx.send(item).await.is_err() || end {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

//! The one call that makes a gRPC service a meshwatch service: reflection
//! (v1 and v1alpha), `grpc.health.v1`, trace propagation with access lines,
//! heartbeats, and a bounded graceful drain on shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

use crate::health::{self, HealthState, ServingStatus};
use crate::heartbeat;
use crate::limits::{LimitLayer, Limits};
use crate::telemetry::{self, TraceLayer};
use meshwatch_ecs::ServiceIdentity;

/// Default bound on the drain after a shutdown signal.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("installing the signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// What [`serve`] needs besides the listener and the routes.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub identity: ServiceIdentity,
    pub heartbeat_interval: Duration,
    /// How long in-flight RPCs may take to finish after shutdown starts.
    pub drain_grace: Duration,
    /// Health names this runtime manages: SERVING while running, NOT_SERVING
    /// from the moment the drain starts. Usually `""`, the short name and the
    /// fully qualified proto service names. Leave it empty to manage the
    /// health state yourself (the monitor does).
    pub health_names: Vec<String>,
    /// The state served as `grpc.health.v1.Health`.
    pub health: HealthState,
    /// Fully qualified names of the services in the routes, listed by
    /// reflection (with `grpc.health.v1.Health` and reflection itself), so
    /// `grpcurl list` shows what this server serves and nothing else.
    pub grpc_services: Vec<String>,
    /// TLS for this server (`--tls-cert`/`--tls-key`, mutual with
    /// `--tls-client-auth`); `None` serves plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Message size and concurrency limits of this server.
    pub limits: Limits,
    /// Whether the service can do its work (e.g. its database answers):
    /// while not ready, health is NOT_SERVING and heartbeats say `not_ready`.
    pub readiness: Readiness,
}

/// Whether a service can do its work right now. Cheap to clone; every clone
/// is the same flag. Starts ready.
#[derive(Clone, Debug)]
pub struct Readiness {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            tx: std::sync::Arc::new(watch::channel(true).0),
        }
    }
}

impl Readiness {
    pub fn new(ready: bool) -> Self {
        Self {
            tx: std::sync::Arc::new(watch::channel(ready).0),
        }
    }

    /// Sets the flag; watchers hear only of changes.
    pub fn set(&self, ready: bool) {
        self.tx
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    pub fn is_ready(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

impl ServeConfig {
    /// Defaults for `identity`: one-second heartbeats, the default drain, and
    /// health names `""`, the service name and `proto_services`.
    pub fn new(identity: ServiceIdentity, proto_services: &[&str]) -> Self {
        let mut health_names = vec![String::new(), identity.name.clone()];
        health_names.extend(proto_services.iter().map(|s| (*s).to_owned()));
        Self {
            identity,
            heartbeat_interval: heartbeat::DEFAULT_INTERVAL,
            drain_grace: DEFAULT_DRAIN_GRACE,
            health_names,
            health: HealthState::new(),
            grpc_services: proto_services.iter().map(|s| (*s).to_owned()).collect(),
            tls: None,
            limits: Limits::default(),
            readiness: Readiness::default(),
        }
    }
}

/// A token cancelled by the first SIGTERM or SIGINT. A second signal during the
/// drain is left to the default handler's successor: the process keeps draining
/// within its bound.
pub fn shutdown_on_signals() -> Result<CancellationToken, RuntimeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).map_err(RuntimeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RuntimeError::Signal)?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(event.reason = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(event.reason = "SIGINT", "shutdown requested"),
        }
        cancel.cancel();
    });
    Ok(token)
}

/// Serves `routes` (plus reflection and health) on the already-bound
/// `listener` until `shutdown`, then drains: health turns NOT_SERVING, the
/// heartbeat says `not_ready`, in-flight RPCs get `drain_grace` to finish, and
/// a final `down` heartbeat is written before returning.
pub async fn serve(
    cfg: ServeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    routes: Routes,
) -> Result<(), RuntimeError> {
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(meshwatch_proto::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for name in &cfg.grpc_services {
            b = b.with_service_name(name.clone());
        }
        b
    };
    let max = cfg.limits.max_message_bytes;
    let reflection_v1 = reflection().build_v1()?.max_decoding_message_size(max);
    let reflection_v1alpha = reflection().build_v1alpha()?.max_decoding_message_size(max);
    let routes = routes
        .add_service(health::health_server(cfg.health.clone()).max_decoding_message_size(max))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let local = listener.local_addr().ok();
    let (ready_tx, ready_rx) = watch::channel(false);
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat::run_emitter(
        cfg.identity.clone(),
        cfg.heartbeat_interval,
        ready_rx,
        telemetry::write_line,
        heartbeat_stop.clone(),
    ));

    let stop_serving = CancellationToken::new();
    let mut builder = Server::builder();
    if let Some(tls) = cfg.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .layer(TraceLayer)
        .layer(LimitLayer::new(cfg.limits))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop_serving.clone().cancelled_owned(),
        );
    let mut server = std::pin::pin!(server);

    // Health and heartbeat follow the service's readiness until the drain.
    let follow_stop = CancellationToken::new();
    let mut follower = Some(tokio::spawn(follow_readiness(
        cfg.readiness.subscribe(),
        cfg.health.clone(),
        cfg.health_names.clone(),
        ready_tx.clone(),
        follow_stop.clone(),
    )));
    tracing::info!(
        service.name = %cfg.identity.name,
        server.address = %local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        "serving"
    );

    let result = tokio::select! {
        result = &mut server => result.map_err(RuntimeError::from),
        () = shutdown.cancelled() => {
            // Stopped first, so it cannot turn a name back to SERVING.
            follow_stop.cancel();
            if let Some(f) = follower.take() {
                let _ = f.await;
            }
            for name in &cfg.health_names {
                cfg.health.set(name, ServingStatus::NotServing);
            }
            cfg.health.close_watches();
            let _ = ready_tx.send(false);
            tracing::info!(meshwatch.drain_grace_ms = cfg.drain_grace.as_millis() as u64, "draining");
            stop_serving.cancel();
            match tokio::time::timeout(cfg.drain_grace, &mut server).await {
                Ok(result) => result.map_err(RuntimeError::from),
                Err(_) => {
                    tracing::warn!(meshwatch.drain_grace_ms = cfg.drain_grace.as_millis() as u64, "drain grace period exceeded; closing remaining RPCs");
                    Ok(())
                }
            }
        }
    };
    follow_stop.cancel();
    heartbeat_stop.cancel();
    // These only write lines and statuses; a panic there must not hide the server's result.
    if let Some(f) = follower.take() {
        let _ = f.await;
    }
    let _ = heartbeat.await;
    tracing::info!("stopped");
    result
}

/// Mirrors `ready` into the health names and the heartbeat until `stop`.
async fn follow_readiness(
    mut ready: watch::Receiver<bool>,
    health: HealthState,
    names: Vec<String>,
    heartbeat: watch::Sender<bool>,
    stop: CancellationToken,
) {
    loop {
        let now = *ready.borrow_and_update();
        let status = if now {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in &names {
            health.set(name, status);
        }
        // The emitter holds the receiver until after this task ends.
        let _ = heartbeat.send(now);
        tokio::select! {
            () = stop.cancelled() => return,
            changed = ready.changed() => if changed.is_err() { return },
        }
    }
}

/// Serves the admin `routes` (e.g. fault injection) on their own listener,
/// with reflection listing only `admin_services`, until `shutdown`. Keep the
/// listener on loopback: nothing here is authenticated.
pub async fn serve_admin(
    listener: TcpListener,
    admin_services: &[&str],
    limits: Limits,
    shutdown: CancellationToken,
    routes: Routes,
) -> Result<(), RuntimeError> {
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(meshwatch_proto::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for name in admin_services {
            b = b.with_service_name(*name);
        }
        b
    };
    let max = limits.max_message_bytes;
    let routes = routes
        .add_service(reflection().build_v1()?.max_decoding_message_size(max))
        .add_service(reflection().build_v1alpha()?.max_decoding_message_size(max));
    let local = listener.local_addr().ok();
    tracing::info!(
        server.address = %local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        "admin listener serving"
    );
    Server::builder()
        .layer(TraceLayer)
        .layer(LimitLayer::new(limits))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;

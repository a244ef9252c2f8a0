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
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
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
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let routes = routes
        .add_service(health::health_server(cfg.health.clone()))
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
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop_serving.clone().cancelled_owned(),
        );
    let mut server = std::pin::pin!(server);

    for name in &cfg.health_names {
        cfg.health.set(name, ServingStatus::Serving);
    }
    // Nobody else holds the receiver yet besides the emitter; it cannot be closed.
    let _ = ready_tx.send(true);
    tracing::info!(
        service.name = %cfg.identity.name,
        server.address = %local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        "serving"
    );

    let result = tokio::select! {
        result = &mut server => result.map_err(RuntimeError::from),
        () = shutdown.cancelled() => {
            for name in &cfg.health_names {
                cfg.health.set(name, ServingStatus::NotServing);
            }
            cfg.health.close_watches();
            let _ = ready_tx.send(false);
            tracing::info!(grace_ms = cfg.drain_grace.as_millis() as u64, "draining");
            stop_serving.cancel();
            match tokio::time::timeout(cfg.drain_grace, &mut server).await {
                Ok(result) => result.map_err(RuntimeError::from),
                Err(_) => {
                    tracing::warn!(grace_ms = cfg.drain_grace.as_millis() as u64, "drain grace period exceeded; closing remaining RPCs");
                    Ok(())
                }
            }
        }
    };
    heartbeat_stop.cancel();
    // The emitter only writes lines; a panic there must not hide the server's result.
    let _ = heartbeat.await;
    tracing::info!("stopped");
    result
}

#[cfg(test)]
mod tests;

//! Wiring: Kafka consumers feeding the [`Monitor`], the evaluation clock,
//! the alert sink, the missing-topic reporter, and the gRPC server (the
//! monitor's own health state as `grpc.health.v1`, the Monitor service,
//! reflection) until shutdown.

use std::time::Duration;

use meshwatch_ecs::ServiceIdentity;
use meshwatch_runtime::{self as runtime, ServeConfig};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::MonitorConfig;
use crate::grpc;
use crate::kafka::{self, AlertProducer, ConsumerSpec, KafkaIoError};
use crate::monitor::Monitor;

/// How long consumer threads get to notice shutdown before they are left behind.
const CONSUMER_STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
}

/// The monitor's service identity (`service.name` "monitor").
pub fn identity() -> ServiceIdentity {
    ServiceIdentity::new("monitor", env!("CARGO_PKG_VERSION"))
}

/// Serves `monitor` on `listener` until `shutdown`: `grpc.health.v1` answers
/// from the monitor's mesh view (the runtime manages no health names of its
/// own), plus the Monitor service and reflection.
pub async fn serve(
    monitor: Monitor,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), runtime::RuntimeError> {
    serve_tls(monitor, identity, listener, shutdown, None).await
}

/// [`serve`] over TLS when `tls` carries a certificate (`--tls-cert`).
pub async fn serve_tls(
    monitor: Monitor,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<&meshwatch_tls::Tls>,
) -> Result<(), runtime::RuntimeError> {
    let mut cfg = ServeConfig::new(identity, &["meshwatch.monitor.v1.Monitor"]);
    cfg.tls = tls.and_then(meshwatch_tls::Tls::server_config);
    // The monitor's health state is the mesh's view, not its own.
    cfg.health_names = Vec::new();
    cfg.health = monitor.health();
    let routes = Routes::new(grpc::monitor_server(monitor, shutdown.clone()));
    runtime::serve(cfg, listener, shutdown, routes).await
}

/// Re-evaluates `monitor` until `shutdown`: at the instant the next verdict
/// is due (a phi crossing or a hard bound, so detection does not wait for a
/// tick), and at least every `every` (anomaly buckets, forgetting, reports).
/// A heartbeat that brought news (a new instance) makes it plan afresh.
pub async fn run_clock(monitor: Monitor, every: Duration, shutdown: CancellationToken) {
    use tokio::time::Instant;
    let mut periodic = Instant::now();
    loop {
        let now = Instant::now();
        if now >= periodic {
            periodic = now.checked_add(every).unwrap_or(now);
        }
        let wake_at = monitor
            .next_change(now)
            .map_or(periodic, |due| due.min(periodic));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = monitor.woken() => continue,
            () = tokio::time::sleep_until(wake_at) => {}
        }
        // The evaluation takes the registry lock the consumer thread holds
        // under a flood, and anomaly windows take a while: off the runtime's
        // workers, which serve Check and Watch.
        let m = monitor.clone();
        let _ = tokio::task::spawn_blocking(move || m.tick(Instant::now())).await;
    }
}

/// Produces every alert of `monitor` to Kafka until `shutdown`.
async fn run_alert_sink(
    mut alerts: broadcast::Receiver<crate::alert::Alert>,
    producer: AlertProducer,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = alerts.recv() => next,
        };
        match next {
            Ok(alert) => producer.send(&alert),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(
                    meshwatch.monitor.alerts_lost = n,
                    "alert sink fell behind; {n} alerts not produced to kafka"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Runs the whole monitor on the already-bound `listener` until `shutdown`.
pub async fn run(
    cfg: MonitorConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let monitor = Monitor::new(cfg.registry.clone(), cfg.anomaly.clone());
    let stop = shutdown.child_token();
    let group = format!("meshwatch-monitor-{}", identity.instance_id);

    let producer = AlertProducer::new(&cfg.kafka, &cfg.alerts_topic)?;
    let sink = tokio::spawn(run_alert_sink(monitor.subscribe(), producer, stop.clone()));
    let reporter = tokio::spawn(kafka::report_missing_topics(
        cfg.kafka.clone(),
        vec![
            cfg.heartbeats_topic.clone(),
            cfg.logs_topic.clone(),
            cfg.alerts_topic.clone(),
        ],
        cfg.topic_check_every,
        stop.clone(),
    ));
    let hb_monitor = monitor.clone();
    let heartbeats = kafka::spawn_consumer(
        ConsumerSpec {
            kafka: cfg.kafka.clone(),
            topic: cfg.heartbeats_topic.clone(),
            lookback: cfg.heartbeat_lookback,
            group_id: format!("{group}-heartbeats"),
            fetch_wait: kafka::HEARTBEAT_FETCH_WAIT,
        },
        stop.clone(),
        move |payload| hb_monitor.heartbeat_line(payload),
    )?;
    let log_monitor = monitor.clone();
    let logs = kafka::spawn_consumer(
        ConsumerSpec {
            kafka: cfg.kafka.clone(),
            topic: cfg.logs_topic.clone(),
            lookback: cfg.log_lookback,
            group_id: format!("{group}-logs"),
            fetch_wait: kafka::LOG_FETCH_WAIT,
        },
        stop.clone(),
        move |payload| log_monitor.log_line(payload),
    )?;
    let clock = tokio::spawn(run_clock(monitor.clone(), cfg.evaluate_every, stop.clone()));

    let served = serve_tls(
        monitor,
        identity,
        listener,
        shutdown.clone(),
        cfg.tls.as_ref(),
    )
    .await;
    stop.cancel();
    let _ = tokio::join!(sink, reporter, clock);
    // Consumer threads stop within one poll; a hung librdkafka call is left behind.
    let joins = tokio::task::spawn_blocking(move || {
        let _ = heartbeats.join();
        let _ = logs.join();
    });
    let _ = tokio::time::timeout(CONSUMER_STOP_GRACE, joins).await;
    served.map_err(ServerError::from)
}

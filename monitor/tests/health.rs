//! grpc.health.v1 served by the monitor, over a real socket: every case of
//! the gRPC health-checking spec, fed by heartbeats the way Kafka feeds them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_monitor::anomaly::AnomalyConfig;
use meshwatch_monitor::registry::RegistryConfig;
use meshwatch_monitor::{server, Monitor};
use meshwatch_proto::health::v1::health_check_response::ServingStatus as Pb;
use meshwatch_proto::health::v1::health_client::HealthClient;
use meshwatch_proto::health::v1::{HealthCheckRequest, HealthCheckResponse, HealthListRequest};
use meshwatch_testkit as testkit;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const WAIT: Duration = Duration::from_secs(5);

struct Harness {
    monitor: Monitor,
    client: HealthClient<Channel>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Harness {
    let monitor = Monitor::new(RegistryConfig::default(), AnomalyConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(
        monitor.clone(),
        server::identity(),
        listener,
        shutdown.clone(),
    ));
    let client = HealthClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Harness {
        monitor,
        client,
        shutdown,
    }
}

fn beat(service: &str, instance: &str, seq: u64, status: HeartbeatStatus) -> String {
    Heartbeat {
        timestamp: SystemTime::now(),
        service_name: service.into(),
        instance_id: instance.into(),
        version: "0.1.0".into(),
        status,
        sequence: seq,
        interval: Duration::from_millis(100),
        target_service: None,
    }
    .to_json_line()
}

fn req(name: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: name.into(),
    }
}

async fn check(h: &mut Harness, name: &str) -> Result<Pb, Code> {
    h.client
        .check(req(name))
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| s.code())
}

async fn watch(h: &mut Harness, name: &str) -> Streaming<HealthCheckResponse> {
    h.client.watch(req(name)).await.expect("watch").into_inner()
}

async fn next(stream: &mut Streaming<HealthCheckResponse>) -> Pb {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a Watch update in time")
        .expect("stream healthy")
        .expect("stream still open")
        .status()
}

#[tokio::test]
async fn check_unknown_is_not_found_and_known_names_answer() {
    let mut h = start().await;
    assert_eq!(check(&mut h, "order").await, Err(Code::NotFound));
    assert_eq!(
        check(&mut h, "meshwatch.order.v1.OrderService").await,
        Err(Code::NotFound)
    );
    // No service known yet: the mesh is (vacuously) serving.
    assert_eq!(check(&mut h, "").await, Ok(Pb::Serving));

    h.monitor
        .heartbeat_line(beat("order", "order-1", 1, HeartbeatStatus::Up).as_bytes());
    h.monitor.tick(Instant::now());
    assert_eq!(check(&mut h, "order").await, Ok(Pb::Serving));
    assert_eq!(
        check(&mut h, "meshwatch.order.v1.OrderService").await,
        Ok(Pb::Serving)
    );
    assert_eq!(check(&mut h, "").await, Ok(Pb::Serving));
    assert_eq!(check(&mut h, "inventory").await, Err(Code::NotFound));

    h.monitor
        .heartbeat_line(beat("payment", "payment-1", 1, HeartbeatStatus::Down).as_bytes());
    h.monitor.tick(Instant::now());
    assert_eq!(check(&mut h, "payment").await, Ok(Pb::NotServing));
    assert_eq!(check(&mut h, "").await, Ok(Pb::NotServing));
}

#[tokio::test]
async fn watch_unknown_name_stays_open_and_follows_it_once_it_appears() {
    let mut h = start().await;
    let mut short = watch(&mut h, "inventory").await;
    let mut full = watch(&mut h, "meshwatch.inventory.v1.InventoryService").await;
    assert_eq!(next(&mut short).await, Pb::ServiceUnknown);
    assert_eq!(next(&mut full).await, Pb::ServiceUnknown);
    // Nothing is sent while the name stays unknown: the next message on
    // each stream (asserted below) is the status the name first gets.

    h.monitor
        .heartbeat_line(beat("inventory", "inv-1", 1, HeartbeatStatus::Up).as_bytes());
    h.monitor.tick(Instant::now());
    assert_eq!(next(&mut short).await, Pb::Serving);
    assert_eq!(next(&mut full).await, Pb::Serving);

    // Repeated heartbeats with no change send nothing: the next message is
    // the change to NOT_SERVING, not a repeated SERVING.
    h.monitor
        .heartbeat_line(beat("inventory", "inv-1", 2, HeartbeatStatus::Up).as_bytes());
    h.monitor.tick(Instant::now());

    h.monitor
        .heartbeat_line(beat("inventory", "inv-1", 3, HeartbeatStatus::Down).as_bytes());
    h.monitor.tick(Instant::now());
    assert_eq!(next(&mut short).await, Pb::NotServing);
    assert_eq!(next(&mut full).await, Pb::NotServing);
}

#[tokio::test]
async fn watch_sends_the_current_status_at_once_then_every_change() {
    let mut h = start().await;
    h.monitor
        .heartbeat_line(beat("order", "o1", 1, HeartbeatStatus::Up).as_bytes());
    h.monitor.tick(Instant::now());
    let mut order = watch(&mut h, "order").await;
    let mut mesh = watch(&mut h, "").await;
    assert_eq!(next(&mut order).await, Pb::Serving);
    assert_eq!(next(&mut mesh).await, Pb::Serving);

    // Three transitions in quick succession: none is lost.
    h.monitor
        .heartbeat_line(beat("order", "o1", 2, HeartbeatStatus::NotReady).as_bytes());
    h.monitor.tick(Instant::now());
    h.monitor
        .heartbeat_line(beat("order", "o2", 1, HeartbeatStatus::Up).as_bytes());
    h.monitor.tick(Instant::now());
    h.monitor
        .heartbeat_line(beat("order", "o2", 2, HeartbeatStatus::Down).as_bytes());
    h.monitor.tick(Instant::now());
    assert_eq!(next(&mut order).await, Pb::NotServing);
    assert_eq!(next(&mut order).await, Pb::Serving);
    assert_eq!(next(&mut order).await, Pb::NotServing);
    assert_eq!(next(&mut mesh).await, Pb::NotServing);
    assert_eq!(next(&mut mesh).await, Pb::Serving);
    assert_eq!(next(&mut mesh).await, Pb::NotServing);
}

#[tokio::test]
async fn a_new_instance_and_a_goodbye_are_published_at_once_without_a_tick() {
    // No clock runs here: only the heartbeats themselves move the status.
    let mut h = start().await;
    let mut payment = watch(&mut h, "meshwatch.payment.v1.PaymentService").await;
    assert_eq!(next(&mut payment).await, Pb::ServiceUnknown);
    h.monitor
        .heartbeat_line(beat("payment", "payment-1", 1, HeartbeatStatus::Up).as_bytes());
    assert_eq!(check(&mut h, "payment").await, Ok(Pb::Serving));
    assert_eq!(next(&mut payment).await, Pb::Serving);
    h.monitor
        .heartbeat_line(beat("payment", "payment-1", 2, HeartbeatStatus::Down).as_bytes());
    assert_eq!(check(&mut h, "payment").await, Ok(Pb::NotServing));
    assert_eq!(check(&mut h, "").await, Ok(Pb::NotServing));
    assert_eq!(next(&mut payment).await, Pb::NotServing);
    // The restarted service (a new instance id) is back at once too.
    h.monitor
        .heartbeat_line(beat("payment", "payment-2", 1, HeartbeatStatus::Up).as_bytes());
    assert_eq!(next(&mut payment).await, Pb::Serving);
    assert_eq!(check(&mut h, "").await, Ok(Pb::Serving));
}

#[tokio::test]
async fn a_start_up_replay_from_stale_to_fresh_does_not_flap() {
    // No clock: what the heartbeats publish by themselves.
    let mut h = start().await;
    let mut order = watch(&mut h, "order").await;
    assert_eq!(next(&mut order).await, Pb::ServiceUnknown);
    let mut alerts = h.monitor.subscribe();
    // The lookback replays 20 s of one instance's heartbeats at once: the
    // oldest are stale (suspected on their own), the newest fresh.
    for (seq, age) in (1..=20).zip((1..=20).rev()) {
        let hb = Heartbeat {
            timestamp: SystemTime::now() - Duration::from_secs(age),
            service_name: "order".into(),
            instance_id: "order-1".into(),
            version: "0.1.0".into(),
            status: HeartbeatStatus::Up,
            sequence: seq,
            interval: Duration::from_secs(1),
            target_service: None,
        };
        h.monitor.heartbeat_line(hb.to_json_line().as_bytes());
    }
    h.monitor.tick(Instant::now());
    // The first thing a watcher sees is SERVING; no NOT_SERVING alert was raised.
    assert_eq!(next(&mut order).await, Pb::Serving);
    assert!(alerts.try_recv().is_err(), "no status alert expected");
}

#[tokio::test]
async fn the_mesh_watch_sends_each_change_once() {
    let mut h = start().await;
    let clock = tokio::spawn(server::run_clock(
        h.monitor.clone(),
        Duration::from_millis(10),
        h.shutdown.clone(),
    ));
    let seen = record(watch(&mut h, "").await);
    for (service, seq, status) in [
        ("order", 1, HeartbeatStatus::Up),
        ("inventory", 1, HeartbeatStatus::Up),
        ("payment", 1, HeartbeatStatus::Up),
        ("inventory", 2, HeartbeatStatus::Down),
    ] {
        h.monitor
            .heartbeat_line(beat(service, &format!("{service}-1"), seq, status).as_bytes());
    }
    // order and payment fall silent too: the mesh stays NOT_SERVING, unrepeated.
    testkit::wait_for(WAIT, "order and payment suspected", || {
        let (services, _) = h.monitor.services(Instant::now());
        services
            .iter()
            .all(|s| s.status == meshwatch_runtime::health::ServingStatus::NotServing)
            .then_some(())
    })
    .await;
    // New instances of all three: the mesh SERVING again (the marker that
    // everything before it has been sent).
    for service in ["order", "inventory", "payment"] {
        h.monitor.heartbeat_line(
            beat(service, &format!("{service}-2"), 1, HeartbeatStatus::Up).as_bytes(),
        );
    }
    let statuses = testkit::wait_for(WAIT, "the mesh SERVING again", || {
        let statuses: Vec<Pb> = seen.lock().expect("lock").iter().map(|e| e.1).collect();
        (statuses.len() > 2 && statuses[2] == Pb::Serving).then_some(statuses)
    })
    .await;
    assert_eq!(
        statuses[..3],
        [Pb::Serving, Pb::NotServing, Pb::Serving],
        "every message a change"
    );
    clock.abort();
}

/// Spawns a task that records every message of `stream` with its arrival time.
fn record(mut stream: Streaming<HealthCheckResponse>) -> Arc<Mutex<Vec<(Instant, Pb)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok(Some(msg)) = stream.message().await {
            sink.lock()
                .expect("lock")
                .push((Instant::now(), msg.status()));
        }
    });
    seen
}

#[tokio::test]
async fn silence_turns_not_serving_on_an_open_watch_within_the_bound() {
    const INTERVAL: Duration = Duration::from_millis(100);
    let mut h = start().await;
    let clock = tokio::spawn(server::run_clock(
        h.monitor.clone(),
        Duration::from_millis(10),
        h.shutdown.clone(),
    ));
    let hard_bound = RegistryConfig::default().detector.hard_bound(INTERVAL);
    let seen = record(watch(&mut h, "shipper/payment").await);
    testkit::wait_for(WAIT, "SERVICE_UNKNOWN on the Watch", || {
        (seen.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    let mut ticker = tokio::time::interval(INTERVAL);
    let mut last = Instant::now();
    for seq in 1..=20 {
        ticker.tick().await;
        let hb = Heartbeat {
            timestamp: SystemTime::now(),
            service_name: "shipper".into(),
            instance_id: "shipper-1".into(),
            version: "0.1.0".into(),
            status: HeartbeatStatus::Up,
            sequence: seq,
            interval: INTERVAL,
            target_service: Some("payment".into()),
        };
        // Taken before the monitor stamps the arrival: the silence it
        // measures starts no earlier than this.
        last = Instant::now();
        h.monitor.heartbeat_line(hb.to_json_line().as_bytes());
    }
    // The last update is NOT_SERVING, sent after the last heartbeat. (A
    // machine stalled for longer than the bound while the heartbeats were
    // still coming may show an earlier NOT_SERVING/SERVING pair; the
    // detector's steadiness is the unit tests' business, on paused time.)
    let detected_at =
        testkit::wait_for(WAIT, "NOT_SERVING after the heartbeats stop", || match seen
            .lock()
            .expect("lock")
            .last()
        {
            Some(&(at, Pb::NotServing)) if at > last => Some(at),
            _ => None,
        })
        .await;
    let statuses: Vec<Pb> = seen.lock().expect("lock").iter().map(|e| e.1).collect();
    assert_eq!(
        statuses[..2],
        [Pb::ServiceUnknown, Pb::Serving],
        "{statuses:?}"
    );
    let detected = detected_at - last;
    // Never before the hard bound (3 × 100 ms + 250 ms: it strikes before
    // phi at this interval), and soon after it: clock ticks of 10 ms plus
    // scheduling on a loaded machine.
    assert!(detected >= hard_bound, "{detected:?} < {hard_bound:?}");
    assert!(
        detected < hard_bound + Duration::from_secs(1),
        "{detected:?}"
    );
    clock.abort();
}

#[tokio::test]
async fn list_reports_every_known_name() {
    let mut h = start().await;
    h.monitor
        .heartbeat_line(beat("order", "o1", 1, HeartbeatStatus::Up).as_bytes());
    h.monitor
        .heartbeat_line(beat("payment", "p1", 1, HeartbeatStatus::NotReady).as_bytes());
    h.monitor.tick(Instant::now());
    // A watcher of an unknown name does not make it appear in List.
    let mut unknown = watch(&mut h, "ghost").await;
    assert_eq!(next(&mut unknown).await, Pb::ServiceUnknown);
    let list = h
        .client
        .list(HealthListRequest {})
        .await
        .expect("list")
        .into_inner()
        .statuses;
    let got: Vec<(String, Pb)> = list
        .into_iter()
        .map(|(k, v)| (k, v.status()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let want: Vec<(String, Pb)> = vec![
        ("".into(), Pb::NotServing),
        ("meshwatch.order.v1.OrderService".into(), Pb::Serving),
        ("meshwatch.payment.v1.PaymentService".into(), Pb::NotServing),
        ("order".into(), Pb::Serving),
        ("payment".into(), Pb::NotServing),
    ];
    assert_eq!(got, want);
}

/// On shutdown, open Watch and StreamAlerts streams end promptly (Watch after
/// its last status, alerts with UNAVAILABLE) instead of holding the drain for
/// its whole grace period.
#[tokio::test]
async fn open_streams_end_promptly_on_shutdown() {
    use meshwatch_proto::monitor::v1 as mpb;
    let monitor = Monitor::new(RegistryConfig::default(), AnomalyConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        monitor.clone(),
        server::identity(),
        listener,
        shutdown.clone(),
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "order".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("first message")
        .expect("ok")
        .expect("open");
    assert_eq!(first.status, Pb::ServiceUnknown as i32);
    let mut alerts = mpb::monitor_client::MonitorClient::new(channel)
        .stream_alerts(mpb::StreamAlertsRequest::default())
        .await
        .expect("stream alerts")
        .into_inner();

    let stopped = Instant::now();
    shutdown.cancel();
    let end = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("the Watch stream ends within the wait");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let end = tokio::time::timeout(WAIT, alerts.message())
        .await
        .expect("the alert stream ends within the wait");
    assert_eq!(end.expect_err("UNAVAILABLE").code(), Code::Unavailable);
    tokio::time::timeout(WAIT, server)
        .await
        .expect("serve returns well within the 10 s drain grace")
        .expect("join")
        .expect("clean stop");
    assert!(stopped.elapsed() < WAIT);
}

//! The monitor against the test broker: heartbeats on Kafka → grpc.health.v1,
//! silence → NOT_SERVING on an open Watch, an error burst in the logs → an
//! alert on the alerts topic and on the gRPC stream, then its recovery.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_monitor::anomaly::AnomalyConfig;
use meshwatch_monitor::{server, MonitorConfig};
use meshwatch_proto::health::v1::health_check_response::ServingStatus as Pb;
use meshwatch_proto::health::v1::health_client::HealthClient;
use meshwatch_proto::health::v1::HealthCheckRequest;
use meshwatch_proto::monitor::v1 as pb;
use meshwatch_testkit as testkit;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const HEARTBEAT: Duration = Duration::from_millis(200);

struct Mesh {
    broker: String,
    heartbeats: String,
    logs: String,
    alerts: String,
    producer: FutureProducer,
}

async fn mesh() -> Mesh {
    let broker = testkit::kafka().await;
    let heartbeats = testkit::unique_topic("monitor-it-heartbeats");
    let logs = testkit::unique_topic("monitor-it-logs");
    let alerts = testkit::unique_topic("monitor-it-alerts");
    testkit::create_topic(&broker, &heartbeats, 2).await;
    testkit::create_topic(&broker, &logs, 2).await;
    testkit::create_topic(&broker, &alerts, 1).await;
    let producer = meshwatch_kafka::base_config(&broker)
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    Mesh {
        broker,
        heartbeats,
        logs,
        alerts,
        producer,
    }
}

impl Mesh {
    async fn send(&self, topic: &str, key: &str, payload: &str, timestamp_ms: Option<i64>) {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(ts) = timestamp_ms {
            record = record.timestamp(ts);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }

    async fn start_monitor(&self, anomaly: AnomalyConfig) -> (String, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut cfg = MonitorConfig::new(&self.broker, addr);
        cfg.heartbeats_topic.clone_from(&self.heartbeats);
        cfg.logs_topic.clone_from(&self.logs);
        cfg.alerts_topic.clone_from(&self.alerts);
        cfg.evaluate_every = Duration::from_millis(20);
        cfg.anomaly = anomaly;
        let shutdown = CancellationToken::new();
        tokio::spawn(server::run(
            cfg,
            server::identity(),
            listener,
            shutdown.clone(),
        ));
        (format!("http://{addr}"), shutdown)
    }
}

fn heartbeat(service: &str, instance: &str, seq: u64, status: HeartbeatStatus) -> String {
    Heartbeat {
        timestamp: SystemTime::now(),
        service_name: service.into(),
        instance_id: instance.into(),
        version: "0.1.0".into(),
        status,
        sequence: seq,
        interval: HEARTBEAT,
        target_service: None,
    }
    .to_json_line()
}

fn access_line(service: &str, code: i32, n: u64) -> String {
    format!(
        r#"{{"@timestamp":"{}","log.level":"{}","message":"rpc","ecs.version":"8.11.0","service.name":"{service}","service.instance.id":"{service}-1","event.dataset":"{service}.log","rpc.method":"PlaceOrder","rpc.grpc.status_code":{code},"event.duration":{},"trace.id":"{n:032x}"}}"#,
        meshwatch_ecs::format_timestamp(SystemTime::now()),
        if code == 0 { "info" } else { "error" },
        5_000_000 + n % 7 * 100_000,
    )
}

/// Spawns a task that records every message of a Watch with its arrival time.
fn record(
    mut stream: tonic::Streaming<meshwatch_proto::health::v1::HealthCheckResponse>,
) -> Arc<Mutex<Vec<(Instant, Pb)>>> {
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

fn statuses(seen: &Mutex<Vec<(Instant, Pb)>>) -> Vec<Pb> {
    seen.lock().expect("lock").iter().map(|e| e.1).collect()
}

async fn next_alert(stream: &mut tonic::Streaming<pb::Alert>, within: Duration) -> pb::Alert {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("an alert in time")
        .expect("stream healthy")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_make_a_service_serving_and_silence_not_serving() {
    let mesh = mesh().await;
    // Written long before the monitor starts: outside the lookback, ignored.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let old_ms = hour_ago
        .duration_since(UNIX_EPOCH)
        .expect("epoch")
        .as_millis() as i64;
    mesh.send(
        &mesh.heartbeats,
        "legacy-1",
        &heartbeat("legacy", "legacy-1", 1, HeartbeatStatus::Up),
        Some(old_ms),
    )
    .await;

    let (url, shutdown) = mesh.start_monitor(AnomalyConfig::default()).await;
    let mut health = HealthClient::connect(url.clone()).await.expect("connect");
    let watch = health
        .watch(HealthCheckRequest {
            service: "order".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let seen = record(watch);
    testkit::wait_for(
        Duration::from_secs(5),
        "SERVICE_UNKNOWN on the Watch",
        || (statuses(&seen) == [Pb::ServiceUnknown]).then_some(()),
    )
    .await;

    let mut ticker = tokio::time::interval(HEARTBEAT);
    let mut last_sent = Instant::now();
    for seq in 1..=15 {
        ticker.tick().await;
        mesh.send(
            &mesh.heartbeats,
            "order-1",
            &heartbeat("order", "order-1", seq, HeartbeatStatus::Up),
            None,
        )
        .await;
        last_sent = Instant::now();
    }
    // Stopped: the last update is NOT_SERVING, after the last heartbeat was
    // acknowledged, within the hard bound (3 × 200 ms + 250 ms) plus delivery.
    // (A broker or machine stalled for longer than the bound while the
    // heartbeats were still coming may show an earlier NOT_SERVING/SERVING
    // pair; steadiness is the detector unit tests' business.)
    let detected_at = testkit::wait_for(
        Duration::from_secs(10),
        "NOT_SERVING after the heartbeats stop",
        || match seen.lock().expect("lock").last() {
            Some(&(at, Pb::NotServing)) if at > last_sent => Some(at),
            _ => None,
        },
    )
    .await;
    assert_eq!(
        statuses(&seen)[..2],
        [Pb::ServiceUnknown, Pb::Serving],
        "{:?}",
        statuses(&seen)
    );
    let detected = detected_at - last_sent;
    assert!(detected < Duration::from_millis(850 + 1000), "{detected:?}");

    // The heartbeat from an hour ago was skipped.
    let legacy = health
        .check(HealthCheckRequest {
            service: "legacy".into(),
        })
        .await
        .expect_err("legacy is unknown");
    assert_eq!(legacy.code(), tonic::Code::NotFound);

    // ListServices shows the instance, suspected, with its age and phi.
    let mut client = pb::monitor_client::MonitorClient::connect(url)
        .await
        .expect("connect");
    let list = client
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.services.len(), 1);
    let order = &list.services[0];
    assert_eq!(order.name, "order");
    assert_eq!(
        order.grpc_service_names,
        ["meshwatch.order.v1.OrderService"]
    );
    assert_eq!(order.status(), pb::ServingStatus::NotServing);
    assert_eq!(order.instances[0].state(), pb::InstanceState::Suspected);
    assert_eq!(order.instances[0].last_sequence, 15);
    // At 200 ms heartbeats the hard bound (850 ms) strikes before phi reaches 8;
    // phi is reported all the same.
    let age = order.instances[0].last_heartbeat_age.expect("age");
    assert!(age.seconds > 0 || age.nanos >= 850_000_000, "{age:?}");
    let phi = order.instances[0].phi;
    assert!(phi.is_finite() && phi > 0.0, "{phi}");
    assert_eq!(list.mesh_status(), pb::ServingStatus::NotServing);

    // The status change went to the alerts topic too.
    let records = testkit::read_topic(&mesh.broker, &mesh.alerts, Duration::from_secs(15), |rs| {
        rs.iter().any(|r| r.json()["alert.kind"] == "status_change")
    })
    .await;
    let alert = records
        .iter()
        .map(testkit::Record::json)
        .find(|v| v["alert.kind"] == "status_change")
        .expect("a status_change alert on the alerts topic");
    assert_eq!(alert["service.name"], "order");
    assert_eq!(alert["alert.state"], "firing");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_burst_alerts_on_kafka_and_grpc_then_recovers() {
    let mesh = mesh().await;
    let anomaly = AnomalyConfig {
        bucket: Duration::from_secs(1),
        buckets: 2,
        min_requests: 20,
        ..AnomalyConfig::default()
    };
    let (url, shutdown) = mesh.start_monitor(anomaly).await;
    let mut client = pb::monitor_client::MonitorClient::connect(url)
        .await
        .expect("connect");
    let mut alerts = client
        .stream_alerts(pb::StreamAlertsRequest {
            service: "payment".into(),
        })
        .await
        .expect("stream")
        .into_inner();

    // 50 requests/s: healthy 3 s, half of them INTERNAL for 2 s, healthy until resolved.
    let started = Instant::now();
    let producer = {
        let logs = mesh.logs.clone();
        let prod = mesh.producer.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                n += 1;
                let t = started.elapsed();
                let failing =
                    t >= Duration::from_secs(3) && t < Duration::from_secs(5) && n % 2 == 0;
                let line = access_line("payment", if failing { 13 } else { 0 }, n);
                let _ = prod
                    .send(
                        FutureRecord::to(&logs).key("payment-1").payload(&line),
                        Duration::from_secs(10),
                    )
                    .await;
            }
        })
    };

    let fired = next_alert(&mut alerts, Duration::from_secs(20)).await;
    assert_eq!(fired.kind(), pb::AlertKind::AnomalyErrorRate);
    assert_eq!(fired.state(), pb::AlertState::Firing);
    assert_eq!(fired.service, "payment");
    assert!(fired.observed > fired.threshold, "{fired:?}");
    assert!(fired.requests >= 20);
    assert!(!fired.example_trace_ids.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "fired before the burst"
    );
    let resolved = next_alert(&mut alerts, Duration::from_secs(20)).await;
    assert_eq!(resolved.state(), pb::AlertState::Resolved);
    assert_eq!(resolved.id, fired.id);
    producer.abort();

    let records = testkit::read_topic(&mesh.broker, &mesh.alerts, Duration::from_secs(15), |rs| {
        rs.iter()
            .filter(|r| r.json()["alert.kind"] == "anomaly_error_rate")
            .count()
            >= 2
    })
    .await;
    let states: Vec<String> = records
        .iter()
        .map(testkit::Record::json)
        .filter(|v| v["alert.kind"] == "anomaly_error_rate")
        .map(|v| {
            assert_eq!(v["service.name"], "payment");
            assert_eq!(v["alert.id"], fired.id.as_str());
            assert!(!v["alert.example_trace_ids"]
                .as_array()
                .expect("array")
                .is_empty());
            v["alert.state"].as_str().expect("state").to_owned()
        })
        .collect();
    assert_eq!(states, ["firing", "resolved"]);
    shutdown.cancel();
}

//! Hostile input: records no emitter writes (huge numbers, negative and
//! future times, over-long and odd names, 100k distinct services, garbage)
//! fed as fast as a consumer thread can while a client keeps calling
//! `Check`: nothing panics, a real service is neither displaced nor locked
//! out, the limits raise a capacity alert, and Check keeps answering within
//! 100 ms. Plus the consumer's supervision: a record that makes the handler
//! panic restarts the consumer after it, on the real broker, also when that
//! record is inside a batch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_monitor::alert::{AlertKind, AlertState};
use meshwatch_monitor::anomaly::AnomalyConfig;
use meshwatch_monitor::kafka::{spawn_consumer, ConsumerSpec};
use meshwatch_monitor::registry::RegistryConfig;
use meshwatch_monitor::{server, Monitor};
use meshwatch_proto::health::v1::health_check_response::ServingStatus as Pb;
use meshwatch_proto::health::v1::health_client::HealthClient;
use meshwatch_proto::health::v1::HealthCheckRequest;
use meshwatch_testkit as testkit;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The promise: Check answers within this during the flood (p99; see the test).
const CHECK_BOUND: Duration = Duration::from_millis(100);
/// No Check may take longer than this: nothing in the monitor stalls it.
const CHECK_STALL: Duration = Duration::from_secs(1);

fn beat(service: &str, instance: &str, seq: u64) -> Heartbeat {
    Heartbeat {
        timestamp: SystemTime::now(),
        service_name: service.into(),
        instance_id: instance.into(),
        version: "0.1.0".into(),
        status: HeartbeatStatus::Up,
        sequence: seq,
        interval: Duration::from_secs(1),
        target_service: None,
    }
}

/// A heartbeat line of `order` with fields replaced by `edits`.
fn edited(edits: serde_json::Value) -> Vec<u8> {
    let mut obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&beat("order", "order-1", 2).to_json_line()).expect("json");
    if let serde_json::Value::Object(e) = edits {
        obj.extend(e);
    }
    serde_json::Value::Object(obj).to_string().into_bytes()
}

/// Every kind of record an attacker or a broken writer could put on the
/// heartbeats topic, aimed at `order`'s instance among others.
fn hostile_records() -> Vec<Vec<u8>> {
    let big = "x".repeat(1 << 20);
    let mut deep = "[".repeat(100_000);
    deep.push_str(&"]".repeat(100_000));
    vec![
        Vec::new(),
        b"\xff\xfe\x00garbage".to_vec(),
        deep.into_bytes(),
        format!(r#"{{"message":"{big}"}}"#).into_bytes(),
        edited(json!({"heartbeat.sequence": u64::MAX})),
        edited(json!({"heartbeat.sequence": 1e308})),
        edited(json!({"heartbeat.sequence": -1})),
        edited(json!({"heartbeat.interval_ms": u64::MAX})),
        edited(json!({"heartbeat.interval_ms": 0})),
        edited(json!({"heartbeat.interval_ms": -1000})),
        edited(json!({"@timestamp": "2500-01-01T00:00:00Z", "heartbeat.status": "down"})),
        edited(json!({"@timestamp": "9999-12-31T23:59:59.999Z"})),
        edited(json!({"@timestamp": "1969-12-31T23:59:59Z"})),
        edited(json!({"@timestamp": "1970-01-01T00:00:00Z"})),
        edited(json!({"@timestamp": -1})),
        edited(json!({"@timestamp": 1e300})),
        edited(json!({"service.name": big.clone()})),
        edited(json!({"service.instance.id": big.clone()})),
        edited(json!({"service.name": "order\u{0}\n"})),
        edited(json!({"service.version": big})),
        edited(json!({"heartbeat.status": "down", "tags": ["meshwatch_shipper_foreign_service"]})),
        edited(json!({"heartbeat.target_service": 42})),
        edited(json!({"event.dataset": ["meshwatch.heartbeat"]})),
        b"{\"event.dataset\":\"meshwatch.heartbeat\",\"event.dataset\":1}".to_vec(),
    ]
}

struct Server {
    monitor: Monitor,
    url: String,
    shutdown: CancellationToken,
}

async fn start(registry: RegistryConfig, anomaly: AnomalyConfig) -> Server {
    let monitor = Monitor::new(registry, anomaly);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(
        monitor.clone(),
        server::identity(),
        listener,
        shutdown.clone(),
    ));
    tokio::spawn(server::run_clock(
        monitor.clone(),
        Duration::from_millis(100),
        shutdown.clone(),
    ));
    Server {
        monitor,
        url: format!("http://{addr}"),
        shutdown,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_do_not_crash_spoof_or_slow_the_monitor() {
    let s = start(RegistryConfig::default(), AnomalyConfig::default()).await;
    let mut alerts = s.monitor.subscribe();
    let mut client = HealthClient::connect(s.url.clone()).await.expect("connect");

    // The real order beats every second throughout, from its own task.
    let order_seq = Arc::new(AtomicUsize::new(1));
    s.monitor.heartbeat(&beat("order", "order-1", 1));
    let beating = {
        let monitor = s.monitor.clone();
        let seq = Arc::clone(&order_seq);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = seq.fetch_add(1, Ordering::Relaxed) as u64 + 1;
                // As the consumer thread does: off the runtime's workers.
                let m = monitor.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    m.heartbeat(&beat("order", "order-1", n));
                })
                .await;
            }
        })
    };

    // The feeder: a thread, as the Kafka consumer is, as fast as it goes.
    let done = Arc::new(AtomicBool::new(false));
    let feeder = {
        let monitor = s.monitor.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let hostile = hostile_records();
            for record in &hostile {
                monitor.heartbeat_line(record);
            }
            // 100k distinct services (valid shape), and as many request lines.
            for i in 0..100_000u64 {
                let name = format!("bogus-{i}");
                let line = beat(&name, &format!("{name}-1"), 1).to_json_line();
                monitor.heartbeat_line(line.as_bytes());
                let request = format!(
                    r#"{{"service.name":"{name}","rpc.grpc.status_code":14,"event.duration":{}}}"#,
                    if i % 2 == 0 { "1e300" } else { "-5" }
                );
                monitor.log_line(request.as_bytes());
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    // Meanwhile, Check("order") as often as the client can.
    let mut latencies = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let started = std::time::Instant::now();
        let status = client
            .check(HealthCheckRequest {
                service: "order".into(),
            })
            .await
            .expect("Check answers")
            .into_inner()
            .status();
        latencies.push(started.elapsed());
        assert_eq!(status, Pb::Serving, "order displaced or locked out");
    }
    feeder.join().expect("the feeder did not panic");
    latencies.sort();
    let max = latencies.last().copied().unwrap_or_default();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{} Checks during the feed: median {:?}, p99 {:?}, p99.9 {:?}, max {:?}; over 100 ms: {}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        max,
        latencies.iter().filter(|l| **l >= CHECK_BOUND).count()
    );
    assert!(
        latencies.len() >= 100,
        "too few Checks: {}",
        latencies.len()
    );
    // p99, not the max: on a shared two-core machine the scheduler alone
    // delays an occasional call past 100 ms (a busy-loop thread in place of
    // the feed, no monitor work at all, gave 17 of 14,184 Checks over 100 ms
    // at load 20); a monitor that blocked Check on its own work would show
    // in the p99 and in the stall bound.
    assert!(at(0.99) < CHECK_BOUND, "p99 of Check {:?}", at(0.99));
    assert!(max < CHECK_STALL, "a Check took {max:?}");

    // order's next real heartbeat still counts (no lock-out by the huge
    // sequence or the future timestamp); its instance is the one it was.
    let counters = s.monitor.counters();
    let accepted_before = counters.heartbeats;
    let next = order_seq.fetch_add(1, Ordering::Relaxed) as u64 + 1;
    s.monitor.heartbeat(&beat("order", "order-1", next));
    assert_eq!(s.monitor.counters().heartbeats, accepted_before + 1);
    let (services, _) = s.monitor.services(tokio::time::Instant::now());
    let order = services.iter().find(|v| v.name == "order").expect("order");
    assert_eq!(order.instances.len(), 1);
    assert_eq!(order.instances[0].last_sequence, next);
    assert_eq!(services.len(), RegistryConfig::default().max_services);

    // Every hostile record and every service past the limit was refused.
    let hostile = hostile_records().len() as u64;
    let refused = counters.refused_heartbeats + counters.not_heartbeats;
    assert!(refused >= hostile + 99_000, "{counters:?}");
    // The limits raised capacity alerts (health and anomaly windows), once each.
    s.monitor.tick(tokio::time::Instant::now());
    let mut capacity = Vec::new();
    while let Ok(alert) = alerts.try_recv() {
        if alert.kind == AlertKind::Capacity {
            capacity.push(alert);
        }
    }
    let firing: Vec<&str> = capacity
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| a.id.split('/').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(firing, ["services", "anomaly-windows"], "{capacity:#?}");
    beating.abort();
    s.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_record_handler_restarts_the_consumer_after_that_record() {
    panicking_handler_case(false).await;
}

/// The same with the three records in one batch: the consumer starts again
/// inside it, and the broker must answer with that batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_inside_a_batch_restarts_the_consumer_inside_it() {
    panicking_handler_case(true).await;
}

async fn panicking_handler_case(one_batch: bool) {
    let broker = testkit::kafka().await;
    let topic = testkit::unique_topic("monitor-supervised");
    testkit::create_topic(&broker, &topic, 1).await;
    let producer: FutureProducer = meshwatch_kafka::base_config(&broker)
        .set("linger.ms", if one_batch { "300" } else { "0" })
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    if one_batch {
        // Enqueued together under a long linger: one batch.
        testkit::produce_together(&producer, &topic, &["first", "boom", "last"]).await;
    } else {
        for payload in ["first", "boom", "last"] {
            producer
                .send(
                    FutureRecord::<(), str>::to(&topic).payload(payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("producing: {e}"));
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let shutdown = CancellationToken::new();
    let consumer = spawn_consumer(
        ConsumerSpec {
            kafka: meshwatch_kafka::KafkaArgs::plain(broker.clone()),
            topic: topic.clone(),
            lookback: Duration::from_secs(3600),
            group_id: testkit::unique_topic("monitor-supervised-group"),
            fetch_wait: meshwatch_monitor::kafka::HEARTBEAT_FETCH_WAIT,
        },
        shutdown.clone(),
        move |payload| {
            let text = String::from_utf8_lossy(payload).into_owned();
            sink.lock().expect("lock").push(text.clone());
            assert_ne!(text, "boom", "a handler that panics on one record");
        },
    )
    .expect("consumer");
    let seen_all = testkit::wait_for(Duration::from_secs(30), "every record handed out", || {
        let seen = seen.lock().expect("lock").clone();
        (seen.len() >= 3).then_some(seen)
    })
    .await;
    // Each record once, in order, the panicking one not again.
    assert_eq!(seen_all, ["first", "boom", "last"]);
    assert_eq!(consumer.restarts(), 1);
    // A record produced after the restart is read too.
    producer
        .send(
            FutureRecord::<(), str>::to(&topic).payload("after"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("producing: {e}"));
    testkit::wait_for(
        Duration::from_secs(30),
        "the record after the restart",
        || (seen.lock().expect("lock").len() == 4).then_some(()),
    )
    .await;
    shutdown.cancel();
    tokio::task::spawn_blocking(move || consumer.join())
        .await
        .expect("join")
        .expect("the supervisor thread itself never panics");
}

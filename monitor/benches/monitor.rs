//! Monitor benchmarks (not tests). Run on the test broker:
//!
//! ```text
//! MESHWATCH_TEST_KAFKA=$(scripts/broker start) \
//!   cargo bench -p meshwatch-monitor --bench monitor -- \
//!     [detection|false-suspicions|throughput|throughput-kafka|all] [--seconds N] [--kills N] [--lines N] [--together]
//! ```
//!
//! - detection: services beating every 1 s through Kafka are killed at a
//!   random phase; time from the kill to NOT_SERVING on a grpc.health.v1 Watch
//!   (median, max), next to the hard bound; with three other services
//!   beating throughout, or (`--together`) with the whole mesh stopping.
//! - false-suspicions: services beating every 1 s for `--seconds` while
//!   another process keeps both cores busy; NOT_SERVING transitions counted
//!   (should be zero), with the largest heartbeat age and phi seen.
//! - throughput: request log lines through the anomaly path on one core
//!   (parse + window update), against a plain `serde_json::Value` parse of
//!   the same lines measured in the same run.
//! - throughput-kafka: the same lines produced to a topic first, then read
//!   by the monitor's consumer thread into the anomaly path (lines/s).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_monitor::anomaly::AnomalyConfig;
use meshwatch_monitor::registry::RegistryConfig;
use meshwatch_monitor::{server, Monitor, MonitorConfig};
use meshwatch_proto::health::v1::health_check_response::ServingStatus as Pb;
use meshwatch_proto::health::v1::health_client::HealthClient;
use meshwatch_proto::health::v1::HealthCheckRequest;
use meshwatch_proto::monitor::v1 as pb;
use meshwatch_testkit as testkit;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_secs(1);
/// Heartbeats each instance sends before it is killed (the detector learns them).
const WARM_BEATS: u64 = 8;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn beat(service: &str, instance: &str, seq: u64, status: HeartbeatStatus) -> String {
    Heartbeat {
        timestamp: SystemTime::now(),
        service_name: service.into(),
        instance_id: instance.into(),
        version: "bench".into(),
        status,
        sequence: seq,
        interval: INTERVAL,
        target_service: None,
    }
    .to_json_line()
}

struct Setup {
    url: String,
    topic: String,
    producer: FutureProducer,
    shutdown: CancellationToken,
    hard_bound: Duration,
}

async fn setup() -> Setup {
    let broker = testkit::kafka().await;
    let topic = testkit::unique_topic("monitor-bench-heartbeats");
    let logs = testkit::unique_topic("monitor-bench-logs");
    let alerts = testkit::unique_topic("monitor-bench-alerts");
    for t in [&topic, &logs, &alerts] {
        testkit::create_topic(&broker, t, 1).await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut cfg = MonitorConfig::new(&broker, addr);
    cfg.heartbeats_topic.clone_from(&topic);
    cfg.logs_topic = logs;
    cfg.alerts_topic = alerts;
    let hard_bound = cfg.registry.detector.hard_bound(INTERVAL);
    let shutdown = CancellationToken::new();
    tokio::spawn(server::run(
        cfg,
        server::identity(),
        listener,
        shutdown.clone(),
    ));
    let producer = meshwatch_kafka::base_config(&broker)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    Setup {
        url: format!("http://{addr}"),
        topic,
        producer,
        shutdown,
        hard_bound,
    }
}

/// Beats for `service`/`instance` every INTERVAL until aborted.
/// Seconds since the bench started, for the stall lines.
fn since_start() -> f64 {
    static START: std::sync::OnceLock<StdInstant> = std::sync::OnceLock::new();
    START.get_or_init(StdInstant::now).elapsed().as_secs_f64()
}

/// Beats for `service`/`instance` every INTERVAL until aborted, like a real
/// emitter: on a fixed schedule, never waiting for one heartbeat's delivery
/// before sending the next. Late sends and slow acknowledgements are printed
/// as `sender stall` lines, so a suspicion can be attributed.
fn spawn_beats(s: &Setup, service: String, instance: String) -> tokio::task::JoinHandle<()> {
    let producer = s.producer.clone();
    let topic = s.topic.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_send: Option<StdInstant> = None;
        for seq in 1.. {
            tick.tick().await;
            let now = StdInstant::now();
            if let Some(gap) = last_send.map(|l| now - l) {
                if gap > INTERVAL + Duration::from_millis(300) {
                    println!(
                        "sender stall: {instance} sent {:.0} ms after its previous heartbeat at {:.1} s",
                        gap.as_secs_f64() * 1000.0,
                        since_start()
                    );
                }
            }
            last_send = Some(now);
            let line = beat(&service, &instance, seq, HeartbeatStatus::Up);
            let delivery = producer
                .send_result(FutureRecord::to(&topic).key(&instance).payload(&line))
                .map_err(|(e, _)| e);
            let instance = instance.clone();
            tokio::spawn(async move {
                if let Ok(delivery) = delivery {
                    let _ = delivery.await;
                    let ack = now.elapsed();
                    if ack > Duration::from_millis(300) {
                        println!(
                            "broker stall: {instance} heartbeat {seq} acknowledged after {:.0} ms at {:.1} s",
                            ack.as_secs_f64() * 1000.0,
                            since_start()
                        );
                    }
                }
            });
        }
    })
}

async fn watch(
    url: &str,
    service: &str,
) -> tonic::Streaming<meshwatch_proto::health::v1::HealthCheckResponse> {
    let mut client = HealthClient::connect(url.to_owned())
        .await
        .expect("connect");
    client
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("watch")
        .into_inner()
}

async fn wait_status(
    stream: &mut tonic::Streaming<meshwatch_proto::health::v1::HealthCheckResponse>,
    want: Pb,
) {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("status in time")
            .expect("stream ok")
            .expect("stream open");
        if msg.status() == want {
            return;
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// `together`: no other service beats while the killed ones die (the
/// whole mesh stops at once, kills within about a second of each other);
/// otherwise three more services keep beating throughout, as the rest of a
/// mesh does when one service stops.
async fn detection(kills: usize, together: bool) {
    let s = setup().await;
    let services = 5usize;
    let rounds = kills.div_ceil(services);
    let background: Vec<_> = if together {
        Vec::new()
    } else {
        (0..3)
            .map(|i| spawn_beats(&s, format!("mesh{i}"), format!("mesh{i}-1")))
            .collect()
    };
    println!(
        "detection: {services} services x {rounds} rounds, 1 s heartbeats via Kafka, kill at a random phase; {}; hard bound {:?}",
        if together {
            "no other service beating (the whole mesh stops)"
        } else {
            "3 other services beating throughout"
        },
        s.hard_bound
    );
    let mut tasks = Vec::new();
    for i in 0..services {
        let url = s.url.clone();
        let service = format!("bench{i}");
        let setup = Setup {
            url: s.url.clone(),
            topic: s.topic.clone(),
            producer: s.producer.clone(),
            shutdown: s.shutdown.clone(),
            hard_bound: s.hard_bound,
        };
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((i as u64 + 1) * 0x9e37_79b9));
            let mut stream = watch(&url, &service).await;
            let mut times = Vec::new();
            for round in 0..rounds {
                let beats = spawn_beats(&setup, service.clone(), format!("{service}-{round}"));
                wait_status(&mut stream, Pb::Serving).await;
                let phase = Duration::from_millis(rng.next() % 1000);
                tokio::time::sleep(INTERVAL * WARM_BEATS as u32 + phase).await;
                beats.abort();
                let killed = StdInstant::now();
                wait_status(&mut stream, Pb::NotServing).await;
                times.push(killed.elapsed());
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("round task"));
    }
    for b in background {
        b.abort();
    }
    all.sort();
    let mean = all.iter().sum::<Duration>() / all.len() as u32;
    println!(
        "detection: n={} median={:.0} ms p90={:.0} ms max={:.0} ms min={:.0} ms mean={:.0} ms (target: median < 2000 ms)",
        all.len(),
        percentile(&all, 0.5).as_secs_f64() * 1000.0,
        percentile(&all, 0.9).as_secs_f64() * 1000.0,
        all[all.len() - 1].as_secs_f64() * 1000.0,
        all[0].as_secs_f64() * 1000.0,
        mean.as_secs_f64() * 1000.0
    );
    s.shutdown.cancel();
}

/// Starts `cores` busy threads in a separate process (this binary, `burn`).
fn burn(cores: usize) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["burn", &cores.to_string()])
        .spawn()
        .expect("spawning the CPU burner")
}

async fn false_suspicions(seconds: u64) {
    let s = setup().await;
    let services = 5usize;
    let mut burner = burn(2);
    println!("false-suspicions: {services} services, 1 s heartbeats via Kafka, {seconds} s, both cores saturated by pid {}", burner.id());
    let mut beaters = Vec::new();
    let mut watchers = Vec::new();
    // Shared, so that aborting the watchers at the end does not lose the count.
    let suspicions = Arc::new(AtomicU32::new(0));
    for i in 0..services {
        let service = format!("steady{i}");
        beaters.push(spawn_beats(&s, service.clone(), format!("{service}-1")));
        let url = s.url.clone();
        let suspicions = Arc::clone(&suspicions);
        watchers.push(tokio::spawn(async move {
            let mut stream = watch(&url, &service).await;
            wait_status(&mut stream, Pb::Serving).await;
            while let Ok(Some(msg)) = stream.message().await {
                if msg.status() == Pb::NotServing {
                    suspicions.fetch_add(1, Ordering::Relaxed);
                    println!(
                        "false-suspicions: {service} NOT_SERVING at {:.1} s",
                        since_start()
                    );
                }
            }
        }));
    }
    let mut client = pb::monitor_client::MonitorClient::connect(s.url.clone())
        .await
        .expect("connect");
    let start = StdInstant::now();
    let (mut max_age, mut max_phi) = (Duration::ZERO, 0f64);
    // Wait for the first heartbeats before sampling.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let list = client
            .list_services(pb::ListServicesRequest {})
            .await
            .expect("list")
            .into_inner();
        for svc in list.services {
            for inst in svc.instances {
                let age = inst.last_heartbeat_age.unwrap_or_default();
                let age = Duration::new(age.seconds.max(0) as u64, age.nanos.max(0) as u32);
                if age > Duration::from_millis(1500) {
                    println!(
                        "monitor view: {} silent for {:.0} ms (phi {:.1}) at {:.1} s",
                        inst.instance_id,
                        age.as_secs_f64() * 1000.0,
                        inst.phi,
                        since_start()
                    );
                }
                max_age = max_age.max(age);
                max_phi = max_phi.max(inst.phi);
            }
        }
    }
    let _ = burner.kill();
    let _ = burner.wait();
    s.shutdown.cancel();
    for b in beaters {
        b.abort();
    }
    for w in watchers {
        w.abort();
    }
    let total = suspicions.load(Ordering::Relaxed);
    println!(
        "false-suspicions: {total} NOT_SERVING transitions over {} instance-seconds; largest heartbeat age seen {:.0} ms, largest phi {:.2} (threshold 8, hard bound {:?})",
        seconds * services as u64,
        max_age.as_secs_f64() * 1000.0,
        max_phi,
        s.hard_bound
    );
}

fn lines(n: usize) -> Vec<String> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let services = ["order", "inventory", "payment"];
    let methods = [
        "/meshwatch.order.v1.OrderService/PlaceOrder",
        "/meshwatch.inventory.v1.InventoryService/Reserve",
        "/meshwatch.payment.v1.PaymentService/Charge",
    ];
    (0..n)
        .map(|i| {
            let r = rng.next();
            let s = (r % 3) as usize;
            let code = if r % 50 == 0 { 14 } else { 0 };
            format!(
                r#"{{"@timestamp":"2026-11-25T07:00:00.{:03}Z","log.level":"{}","message":"rpc finished","ecs.version":"8.11.0","service.name":"{}","service.instance.id":"{}-3f9a0c1d2e4b","service.version":"0.1.0","event.dataset":"{}.log","event.kind":"event","trace.id":"{:032x}","span.id":"{:016x}","rpc.system":"grpc","rpc.service":"x","rpc.method":"{}","rpc.grpc.status_code":{code},"event.duration":{},"event.outcome":"{}"}}"#,
                i % 1000,
                if code == 0 { "info" } else { "error" },
                services[s], services[s], services[s],
                r as u128 * 7919, r, methods[s],
                1_000_000 + r % 50_000_000,
                if code == 0 { "success" } else { "failure" },
            )
        })
        .collect()
}

fn throughput() {
    let data = lines(1_000_000);
    let bytes: usize = data.iter().map(String::len).sum();
    println!(
        "throughput: {} lines, {:.0} bytes/line average, one thread",
        data.len(),
        bytes as f64 / data.len() as f64
    );
    // Warm up both paths once.
    let monitor = Monitor::new(RegistryConfig::default(), AnomalyConfig::default());
    for l in data.iter().take(10_000) {
        monitor.log_line(l.as_bytes());
    }
    let mut best_base = f64::MAX;
    let mut best_ours = f64::MAX;
    for _ in 0..3 {
        let t = StdInstant::now();
        let mut fields = 0usize;
        for l in &data {
            let v: serde_json::Value = serde_json::from_slice(l.as_bytes()).expect("json");
            fields += v.as_object().map_or(0, serde_json::Map::len);
        }
        std::hint::black_box(fields);
        best_base = best_base.min(t.elapsed().as_secs_f64());

        let t = StdInstant::now();
        for l in &data {
            monitor.log_line(l.as_bytes());
        }
        best_ours = best_ours.min(t.elapsed().as_secs_f64());
    }
    let base = data.len() as f64 / best_base;
    let ours = data.len() as f64 / best_ours;
    assert!(monitor.counters().requests >= data.len() as u64 * 3);
    println!(
        "throughput: baseline serde_json::Value parse {:.0} lines/s",
        base
    );
    println!("throughput: anomaly path (parse + window + histogram) {:.0} lines/s = {:.2} x baseline (target >= 100000 lines/s)", ours, ours / base);
}

/// The consumption rate through Kafka: `n` request lines produced to a fresh
/// topic first, then read by the monitor's own consumer (one thread) into the
/// anomaly path, timed until the last one is counted. The broker runs on the
/// same two cores.
async fn throughput_kafka(n: usize) {
    let broker = testkit::kafka().await;
    let topic = testkit::unique_topic("monitor-bench-logs");
    testkit::create_topic(&broker, &topic, 1).await;
    let data = lines(n);
    let producer: FutureProducer = meshwatch_kafka::base_config(&broker)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let t = StdInstant::now();
    let deliveries: Vec<_> = data
        .iter()
        .map(|l| {
            producer
                .send_result(FutureRecord::<(), str>::to(&topic).payload(l))
                .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"))
        })
        .collect();
    for d in deliveries {
        let _ = d.await.expect("delivery").expect("acked");
    }
    println!(
        "throughput-kafka: {n} lines produced to {topic} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let monitor = Monitor::new(RegistryConfig::default(), AnomalyConfig::default());
    let stop = CancellationToken::new();
    let counted = monitor.clone();
    let t = StdInstant::now();
    let consumer = meshwatch_monitor::kafka::spawn_consumer(
        meshwatch_monitor::kafka::ConsumerSpec {
            kafka: meshwatch_kafka::KafkaArgs::plain(broker.clone()),
            topic: topic.clone(),
            lookback: Duration::from_secs(3600),
            group_id: "monitor-bench-throughput".into(),
            fetch_wait: meshwatch_monitor::kafka::LOG_FETCH_WAIT,
        },
        stop.clone(),
        move |payload| counted.log_line(payload),
    )
    .expect("consumer");
    testkit::wait_for(Duration::from_secs(300), "every line consumed", || {
        (monitor.counters().requests >= n as u64).then_some(())
    })
    .await;
    let secs = t.elapsed().as_secs_f64();
    stop.cancel();
    let _ = tokio::task::spawn_blocking(move || consumer.join()).await;
    println!(
        "throughput-kafka: monitor consumer (one thread) read and judged {n} lines in {secs:.2} s = {:.0} lines/s, start-up included (target >= 100000 lines/s)",
        n as f64 / secs
    );
}

fn main() {
    since_start();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("burn") {
        let cores: usize = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(2);
        let threads: Vec<_> = (0..cores)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut x = 0u64;
                    loop {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        return;
    }
    let what = args.first().cloned().unwrap_or_else(|| "all".into());
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = flag("--seconds", 120);
    let kills = flag("--kills", 20) as usize;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    match what.as_str() {
        "throughput" => throughput(),
        "throughput-kafka" => rt.block_on(throughput_kafka(flag("--lines", 500_000) as usize)),
        "detection" => rt.block_on(detection(kills, args.iter().any(|a| a == "--together"))),
        "false-suspicions" => rt.block_on(false_suspicions(seconds)),
        _ => {
            throughput();
            rt.block_on(throughput_kafka(flag("--lines", 500_000) as usize));
            rt.block_on(detection(kills, false));
            rt.block_on(detection(kills, true));
            rt.block_on(false_suspicions(seconds));
        }
    }
}

//! The local mesh under load (issue 5's benchmark). Run with
//!
//!     cargo bench --bench mesh            # builds release binaries first
//!
//! It starts the whole mesh through `scripts/mesh up` (its own broker, free
//! ports, release binaries), then measures in one run:
//! 1. the baseline: a trivial tonic unary server in this process, at saturation;
//! 2. PlaceOrder at fixed rates and at saturation (three downstream RPCs each,
//!    so about a third of the echo rate is the ceiling), p50/p99 latency;
//! 3. end-to-end log latency: PlaceOrder returned → its order access line
//!    readable in Kafka (through the shipper), p50/p99;
//! 4. failure detection as users see it (issue 12): payment, wrapped by its
//!    shipper, killed with SIGKILL at a random phase of its heartbeat, time to
//!    NOT_SERVING on a `grpc.health.v1.Health/Watch("payment")` of the
//!    monitor; next to it, in the same run against the same monitor and
//!    broker, heartbeats produced directly to Kafka (no shipper) and stopped
//!    at a random phase; graceful stops (SIGTERM) of payment; and the
//!    heartbeat pipeline delay (written by payment → readable in Kafka, by a
//!    consumer with a 5 ms fetch wait), which splits each detection into the
//!    pipeline's share and the monitor's.
//!
//! Environment: MESH_BENCH_PHASES (default "load,detection"),
//! MESH_BENCH_SECONDS (per load phase, default 10), MESH_BENCH_RATES
//! (default "100,300"), MESH_BENCH_CONCURRENCY (default 32),
//! MESH_BENCH_KILLS (kill -9 rounds and direct rounds each, default 20),
//! MESH_BENCH_STOPS (graceful stops, default 5), MESH_BENCH_WARM_SECONDS
//! (heartbeats before each kill, default 8).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use meshwatch_meshctl::{LoadReport, LoadSpec};
use meshwatch_proto::order::v1 as pb;
use meshwatch_testkit::free_port;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

struct Mesh {
    root: PathBuf,
    state: tempfile::TempDir,
    ports: [(String, u16); 4],
}

impl Mesh {
    fn script(&self, arg: &str) -> std::process::Output {
        self.script_args(&[arg])
    }
    fn script_args(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(self.root.join("scripts/mesh"));
        cmd.args(args)
            .env("MESHWATCH_STATE", self.state.path())
            .env("MESHWATCH_BIN_DIR", meshwatch_testkit::bin_dir())
            .env_remove("MESHWATCH_KAFKA");
        for (k, v) in &self.ports {
            cmd.env(k, v.to_string());
        }
        cmd.output().unwrap()
    }
    fn port(&self, name: &str) -> u16 {
        self.ports.iter().find(|(k, _)| k.contains(name)).unwrap().1
    }
    fn kafka(&self) -> String {
        let port = std::fs::read_to_string(self.state.path().join("broker/port")).unwrap();
        format!("127.0.0.1:{}", port.trim())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

fn line(label: &str, r: &LoadReport, baseline_rps: f64) {
    println!(
        "{label:<28} {:>9.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {:>5}  skipped {:>5}  ratio vs echo {:.3}",
        r.throughput(),
        r.latency_ms(0.5),
        r.latency_ms(0.99),
        r.error_count(),
        r.skipped,
        r.throughput() / baseline_rps
    );
}

fn place_order_call(
    client: pb::order_service_client::OrderServiceClient<tonic::transport::Channel>,
    run: &str,
) -> impl Fn(
    u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
       + Clone
       + Send
       + Sync
       + 'static {
    let run = run.to_owned();
    move |seq| {
        let mut client = client.clone();
        let key = format!("bench-{run}-{seq}");
        Box::pin(async move {
            let mut req = tonic::Request::new(pb::PlaceOrderRequest {
                idempotency_key: key,
                customer_id: "bench".into(),
                items: vec![pb::LineItem {
                    sku: meshwatch_meshctl::DEFAULT_LOAD_SKU.into(),
                    quantity: 1,
                }],
                currency_code: "USD".into(),
                payment_token: String::new(),
            });
            req.set_timeout(Duration::from_secs(5));
            client
                .place_order(req)
                .await
                .map(|r| format!("{:?}", r.get_ref().order.as_ref().map(|o| o.status)))
                .map_err(|s| meshwatch_proto::status::code_name(s.code() as i32).to_owned())
        })
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = common::env_or("MESH_BENCH_SECONDS", 10);
    let concurrency: usize = common::env_or("MESH_BENCH_CONCURRENCY", 32);
    let rates: Vec<f64> = std::env::var("MESH_BENCH_RATES")
        .unwrap_or_else(|_| "100,300".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let phase = Duration::from_secs(seconds);
    let phases = std::env::var("MESH_BENCH_PHASES").unwrap_or_else(|_| "load,detection".into());
    let run_load_phases = phases.split(',').any(|p| p.trim() == "load");
    let run_detection = phases.split(',').any(|p| p.trim() == "detection");
    let root = common::root();

    common::build_release_binaries();

    // 1. Baseline: a trivial unary server on this machine (with the load phases).
    let echo_report = if run_load_phases {
        Some(common::echo_load(&common::start_echo().await, phase, concurrency).await)
    } else {
        None
    };

    // 2. The mesh.
    let mesh = Mesh {
        root: root.clone(),
        state: tempfile::tempdir().unwrap(),
        ports: [
            ("MESHWATCH_ORDER_PORT".into(), free_port()),
            ("MESHWATCH_INVENTORY_PORT".into(), free_port()),
            ("MESHWATCH_PAYMENT_PORT".into(), free_port()),
            ("MESHWATCH_MONITOR_PORT".into(), free_port()),
        ],
    };
    let up = mesh.script("up");
    assert!(
        up.status.success(),
        "scripts/mesh up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let order = pb::order_service_client::OrderServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", mesh.port("ORDER")))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );

    println!();
    println!(
        "machine: {} cores; phases of {seconds}s; concurrency {concurrency}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if let Some(echo_report) = &echo_report {
        let echo_rps = echo_report.throughput();
        load_phases(
            &mesh,
            order,
            echo_report,
            echo_rps,
            &rates,
            phase,
            concurrency,
        )
        .await;
    }
    if run_detection {
        detection(&mesh).await;
    }
}

/// Phases 2 and 3: PlaceOrder load and end-to-end log latency.
async fn load_phases(
    mesh: &Mesh,
    order: pb::order_service_client::OrderServiceClient<tonic::transport::Channel>,
    echo_report: &LoadReport,
    echo_rps: f64,
    rates: &[f64],
    phase: Duration,
    concurrency: usize,
) {
    line("echo baseline (saturation)", echo_report, echo_rps);
    for (i, rate) in rates.iter().enumerate() {
        let r = meshwatch_meshctl::run_load(
            LoadSpec {
                rate: *rate,
                duration: phase,
                concurrency,
            },
            place_order_call(order.clone(), &format!("r{i}")),
            |_| {},
        )
        .await;
        line(&format!("PlaceOrder at {rate}/s"), &r, echo_rps);
    }
    let sat = meshwatch_meshctl::run_load(
        LoadSpec {
            rate: 0.0,
            duration: phase,
            concurrency,
        },
        place_order_call(order.clone(), "sat"),
        |_| {},
    )
    .await;
    line("PlaceOrder saturation", &sat, echo_rps);
    println!(
        "  (ceiling ≈ echo / 3 = {:.0} req/s: PlaceOrder makes three downstream RPCs)",
        echo_rps / 3.0
    );

    // 3. End-to-end log latency: response → order's access line in Kafka.
    let kafka = mesh.kafka();
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer: BaseConsumer = meshwatch_kafka::base_config(&kafka)
        .set("group.id", "mesh-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let partitions = meshwatch_kafka::partition_count(
        &meshwatch_kafka::KafkaArgs::plain(kafka.clone()),
        meshwatch_kafka::LOGS_TOPIC,
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(meshwatch_kafka::LOGS_TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let seen = Arc::clone(&arrivals);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = Arc::clone(&stop);
    let reader = std::thread::spawn(move || {
        while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                let Some(payload) = m.payload() else { continue };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
                    continue;
                };
                if v["rpc.method"] == "PlaceOrder" && v.get("rpc.grpc.status_code").is_some() {
                    if let Some(t) = v["trace.id"].as_str() {
                        seen.lock()
                            .unwrap()
                            .entry(t.to_owned())
                            .or_insert_with(Instant::now);
                    }
                }
            }
        }
    });
    let samples: u64 = common::env_or("MESH_BENCH_LOG_SAMPLES", 200);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut client = order.clone();
    let mut returned = Vec::new();
    for i in 0..samples {
        let resp = client
            .place_order(pb::PlaceOrderRequest {
                idempotency_key: format!("bench-log-{i}"),
                customer_id: "bench".into(),
                items: vec![pb::LineItem {
                    sku: meshwatch_meshctl::DEFAULT_LOAD_SKU.into(),
                    quantity: 1,
                }],
                currency_code: "USD".into(),
                payment_token: String::new(),
            })
            .await
            .unwrap();
        returned.push((resp.into_inner().trace_id, Instant::now()));
        // Steady 50/s, well below saturation: this measures the pipeline, not queueing.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let all_seen = {
            let seen = arrivals.lock().unwrap();
            returned.iter().all(|(t, _)| seen.contains_key(t))
        };
        if all_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reader.join();
    let seen = arrivals.lock().unwrap();
    let mut missing = 0;
    for (trace, at) in &returned {
        match seen.get(trace) {
            // The line can be read before the client saw the response: count that as 1 µs.
            Some(arrived) => latency
                .record(arrived.saturating_duration_since(*at).as_micros().max(1) as u64)
                .unwrap(),
            None => missing += 1,
        }
    }
    println!(
        "log latency (response → order access line in Kafka), {samples} requests at 50/s: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  missing {missing}",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0
    );
}

// ------------------------------------------------------- 4. failure detection

use health::health_check_response::ServingStatus;
use meshwatch_proto::health::v1 as health;

/// xorshift, seeded from the clock: random kill phases, no extra dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Self(u64::from(seed) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A Watch on the mesh's monitor.
async fn watch(monitor: &str, service: &str) -> tonic::Streaming<health::HealthCheckResponse> {
    health::health_client::HealthClient::connect(format!("http://{monitor}"))
        .await
        .unwrap()
        .watch(health::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Reads the Watch until `want`; panics after `bound`.
async fn until(
    stream: &mut tonic::Streaming<health::HealthCheckResponse>,
    want: ServingStatus,
    bound: Duration,
) {
    let end = Instant::now() + bound;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} within {bound:?}"))
            .unwrap()
            .unwrap();
        if msg.status() == want {
            return;
        }
    }
}

/// One heartbeat seen in Kafka: instance, written (its @timestamp), readable.
type Seen = (String, SystemTime, SystemTime);

/// Reads every heartbeat of `service` from the heartbeats topic with a 5 ms
/// fetch wait (the test broker holds a fetch for its whole wait).
async fn observe_heartbeats(
    kafka: &str,
    service: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Arc<Mutex<Vec<Seen>>>, std::thread::JoinHandle<()>) {
    let consumer: BaseConsumer = meshwatch_kafka::base_config(kafka)
        .set("group.id", "mesh-bench-heartbeats")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let partitions = meshwatch_kafka::partition_count(
        &meshwatch_kafka::KafkaArgs::plain(kafka),
        meshwatch_kafka::HEARTBEATS_TOPIC,
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(meshwatch_kafka::HEARTBEATS_TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let start = SystemTime::now();
    let thread = std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) else {
                continue;
            };
            let arrived = SystemTime::now();
            let Some(Ok(v)) = m.payload().map(serde_json::from_slice::<serde_json::Value>) else {
                continue;
            };
            if v["service.name"] != service {
                continue;
            }
            let sent = v["@timestamp"]
                .as_str()
                .and_then(meshwatch_ecs::parse_timestamp);
            if let (Some(sent), Some(id)) = (sent, v["service.instance.id"].as_str()) {
                if sent >= start {
                    sink.lock().unwrap().push((id.to_owned(), sent, arrived));
                }
            }
        }
    });
    (seen, thread)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `label: n=… median … p90 … max … min … mean …` of durations.
fn summary(label: &str, mut all: Vec<Duration>) -> String {
    if all.is_empty() {
        return format!("{label}: no samples");
    }
    all.sort();
    let at = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
    let mean = all.iter().sum::<Duration>() / all.len() as u32;
    format!(
        "{label}: n={} median {:.0} ms  p90 {:.0} ms  max {:.0} ms  min {:.0} ms  mean {:.0} ms",
        all.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(all[all.len() - 1]),
        ms(all[0]),
        ms(mean)
    )
}

/// The pid of payment itself (the child of its shipper).
fn payment_pid(mesh: &Mesh) -> (i32, i32) {
    let wrapper: u32 = std::fs::read_to_string(mesh.state.path().join("pids/payment"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let child = *common::children(wrapper)
        .first()
        .unwrap_or_else(|| panic!("payment's shipper (pid {wrapper}) has no child"));
    (
        i32::try_from(wrapper).unwrap(),
        i32::try_from(child).unwrap(),
    )
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// Waits for `pid` to be gone, then starts payment again through scripts/mesh.
async fn restart_payment(mesh: &Mesh, wrapper: i32) {
    let end = Instant::now() + Duration::from_secs(30);
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(wrapper), None).is_ok() {
        assert!(Instant::now() < end, "payment's shipper did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = mesh.script_args(&["start", "payment"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Heartbeats of `service` produced straight to Kafka every second (no
/// shipper), as the monitor bench does, until the task is aborted.
fn direct_beats(kafka: &str, instance: String) -> tokio::task::JoinHandle<()> {
    let producer: rdkafka::producer::FutureProducer = meshwatch_kafka::base_config(kafka)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        for seq in 1.. {
            tick.tick().await;
            let line = meshwatch_ecs::heartbeat::Heartbeat {
                timestamp: SystemTime::now(),
                service_name: "direct".into(),
                instance_id: instance.clone(),
                version: "bench".into(),
                status: meshwatch_ecs::heartbeat::HeartbeatStatus::Up,
                sequence: seq,
                interval: Duration::from_secs(1),
                target_service: None,
            }
            .to_json_line();
            let _ = producer.send_result(
                rdkafka::producer::FutureRecord::to(meshwatch_kafka::HEARTBEATS_TOPIC)
                    .key(&instance)
                    .payload(&line),
            );
        }
    })
}

/// Phase 4: failure detection through the mesh, next to direct heartbeats.
async fn detection(mesh: &Mesh) {
    let kills: usize = common::env_or("MESH_BENCH_KILLS", 20);
    let stops: usize = common::env_or("MESH_BENCH_STOPS", 5);
    let warm = Duration::from_secs(common::env_or("MESH_BENCH_WARM_SECONDS", 8));
    let kafka = mesh.kafka();
    let monitor = format!("127.0.0.1:{}", mesh.port("MONITOR"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, observer) = observe_heartbeats(&kafka, "payment", Arc::clone(&stop)).await;
    println!();
    println!(
        "detection: {kills} kill -9 of payment (wrapped by its shipper) at a random phase after {}s of heartbeats, at 1 s heartbeats; {kills} direct rounds alongside; {stops} graceful stops",
        warm.as_secs()
    );

    // Directly produced heartbeats, stopped at a random phase, in parallel.
    let direct = {
        let (kafka, monitor) = (kafka.clone(), monitor.clone());
        tokio::spawn(async move {
            let mut rng = Rng::new();
            let mut stream = watch(&monitor, "direct").await;
            let mut times = Vec::new();
            for round in 0..kills {
                let beats = direct_beats(&kafka, format!("direct-{round}"));
                until(&mut stream, ServingStatus::Serving, Duration::from_secs(30)).await;
                tokio::time::sleep(warm + Duration::from_millis(rng.below(1000))).await;
                beats.abort();
                let stopped = Instant::now();
                until(
                    &mut stream,
                    ServingStatus::NotServing,
                    Duration::from_secs(30),
                )
                .await;
                times.push(stopped.elapsed());
            }
            times
        })
    };

    let mut rng = Rng::new();
    let mut stream = watch(&monitor, "payment").await;
    until(&mut stream, ServingStatus::Serving, Duration::from_secs(60)).await;
    let mut detected = Vec::new();
    let mut after_last_arrival = Vec::new();
    for round in 0..kills {
        tokio::time::sleep(warm + Duration::from_millis(rng.below(1000))).await;
        let (wrapper, child) = payment_pid(mesh);
        let killed_at = SystemTime::now();
        let killed = Instant::now();
        signal(child, nix::sys::signal::Signal::SIGKILL);
        until(
            &mut stream,
            ServingStatus::NotServing,
            Duration::from_secs(30),
        )
        .await;
        let took = killed.elapsed();
        detected.push(took);
        // The last heartbeat written before the kill, and when it was readable.
        let last = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, sent, _)| *sent <= killed_at)
            .max_by_key(|(_, sent, _)| *sent)
            .cloned();
        match last {
            Some((_, sent, arrived)) => {
                let phase = killed_at.duration_since(sent).unwrap_or_default();
                let delay = arrived.duration_since(sent).unwrap_or_default();
                // The monitor's share: from the last heartbeat being readable to the verdict.
                let monitor_share = (killed_at + took)
                    .duration_since(arrived)
                    .unwrap_or_default();
                after_last_arrival.push(monitor_share);
                println!(
                    "  kill {:>2}: {:>5.0} ms after its last heartbeat was written (readable {:>4.0} ms later); NOT_SERVING {:>5.0} ms after the kill, {:>5.0} ms after that heartbeat was readable",
                    round + 1,
                    ms(phase),
                    ms(delay),
                    ms(took),
                    ms(monitor_share)
                );
            }
            None => println!(
                "  kill {:>2}: NOT_SERVING {:>5.0} ms after the kill",
                round + 1,
                ms(took)
            ),
        }
        restart_payment(mesh, wrapper).await;
        until(&mut stream, ServingStatus::Serving, Duration::from_secs(60)).await;
    }

    let mut graceful = Vec::new();
    for _ in 0..stops {
        tokio::time::sleep(warm).await;
        let (wrapper, _) = payment_pid(mesh);
        let stopped = Instant::now();
        signal(wrapper, nix::sys::signal::Signal::SIGTERM);
        until(
            &mut stream,
            ServingStatus::NotServing,
            Duration::from_secs(30),
        )
        .await;
        graceful.push(stopped.elapsed());
        restart_payment(mesh, wrapper).await;
        until(&mut stream, ServingStatus::Serving, Duration::from_secs(60)).await;
    }
    let direct = direct.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = observer.join();
    let delays: Vec<Duration> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, sent, arrived)| arrived.duration_since(*sent).unwrap_or_default())
        .collect();
    println!(
        "{}",
        summary(
            "detection through the mesh (kill -9 of payment → NOT_SERVING)",
            detected
        )
    );
    println!(
        "{}",
        summary(
            "  of which after its last heartbeat was readable in Kafka (the monitor's share)",
            after_last_arrival
        )
    );
    println!(
        "{}",
        summary(
            "detection of heartbeats produced directly to Kafka (same monitor and broker)",
            direct
        )
    );
    println!(
        "{}",
        summary(
            "graceful stop (SIGTERM to payment's shipper → NOT_SERVING)",
            graceful
        )
    );
    println!(
        "{}",
        summary(
            "heartbeat pipeline delay (payment writes it → readable in Kafka, 5 ms fetch wait)",
            delays
        )
    );
}

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
//!    readable in Kafka (through the shipper), p50/p99.
//!
//! Environment: MESH_BENCH_SECONDS (per phase, default 10), MESH_BENCH_RATES
//! (default "100,300"), MESH_BENCH_CONCURRENCY (default 32).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use meshwatch_meshctl::{LoadReport, LoadSpec};
use meshwatch_proto::admin::v1 as echo;
use meshwatch_proto::order::v1 as pb;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

struct Echo;

#[tonic::async_trait]
impl echo::fault_service_server::FaultService for Echo {
    async fn get_faults(
        &self,
        _: tonic::Request<echo::GetFaultsRequest>,
    ) -> Result<tonic::Response<echo::Faults>, tonic::Status> {
        Ok(tonic::Response::new(echo::Faults::default()))
    }
    async fn set_faults(
        &self,
        _: tonic::Request<echo::SetFaultsRequest>,
    ) -> Result<tonic::Response<echo::Faults>, tonic::Status> {
        Ok(tonic::Response::new(echo::Faults::default()))
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Mesh {
    root: PathBuf,
    state: tempfile::TempDir,
    ports: [(String, u16); 4],
}

impl Mesh {
    fn script(&self, arg: &str) -> std::process::Output {
        let mut cmd = Command::new(self.root.join("scripts/mesh"));
        cmd.arg(arg)
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
    let seconds: u64 = env_or("MESH_BENCH_SECONDS", 10);
    let concurrency: usize = env_or("MESH_BENCH_CONCURRENCY", 32);
    let rates: Vec<f64> = std::env::var("MESH_BENCH_RATES")
        .unwrap_or_else(|_| "100,300".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let phase = Duration::from_secs(seconds);
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));

    println!("building release binaries…");
    let built = Command::new("cargo")
        .current_dir(&root)
        .args(["build", "--release", "--locked", "--bins", "--workspace"])
        .status()
        .unwrap();
    assert!(built.success(), "cargo build --release failed");

    // 1. Baseline: a trivial unary server on this machine.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(echo::fault_service_server::FaultServiceServer::new(Echo))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let echo_client = echo::fault_service_client::FaultServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{echo_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let echo_report = meshwatch_meshctl::run_load(
        LoadSpec {
            rate: 0.0,
            duration: phase,
            concurrency,
        },
        move |_| {
            let mut c = echo_client.clone();
            async move {
                c.get_faults(echo::GetFaultsRequest {})
                    .await
                    .map(|_| "OK".to_owned())
                    .map_err(|s| meshwatch_proto::status::code_name(s.code() as i32).to_owned())
            }
        },
        |_| {},
    )
    .await;
    let echo_rps = echo_report.throughput();

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
    line("echo baseline (saturation)", &echo_report, echo_rps);
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
    let samples: u64 = env_or("MESH_BENCH_LOG_SAMPLES", 200);
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

//! Shipper throughput against a bare producer, and memory while Kafka is away.
//!
//! Run (a broker must be reachable; `scripts/broker` starts one):
//!
//! ```text
//! export MESHWATCH_TEST_KAFKA=$(scripts/broker start /tmp/shipper-bench-broker)
//! cargo bench -p meshwatch-shipper --bench shipper
//! # optional: BENCH_LINES=1000000 (default) BENCH_ROUNDS=2 (default)
//! #           BENCH_SHIPPER_ARGS="--window-bytes 16777216" (extra flags, tail and steady runs;
//! #             its `--kafka-option K=V` pairs go to the bare producers too)
//! #           BENCH_TRACE=1 (print the tailing shipper's stats lines)
//! #           BENCH_STEADY_KAFKA=127.0.0.1:PORT (the steady-state phase, baseline
//! #             included, against this broker instead, e.g. noida-db's Kafka,
//! #             which answers fetches on arrival where tansu holds them)
//! #           BENCH_PHASES=tail,steady,wrap,slow (default: all four)
//! #           BENCH_SLOW_RATE=350 BENCH_SLOW_SECS=15 BENCH_SLOW_DELAY_MS=40 (the slow phase)
//! #           BENCH_SHIPPER_PREFIX="valgrind --tool=callgrind" (run the tailing
//! #             shipper under a tool; its CPU figure is then the tool's)
//! ```
//!
//! In one run, on the same broker, for the same file of realistic ECS lines:
//! - baseline: a minimal rdkafka producer (the same bundled librdkafka and the
//!   very same producer settings as the shipper: acks=all, idempotence, lz4,
//!   linger, batch and queue sizes) reading the file line by line and producing
//!   each line as is: no parsing, no enrichment, no checkpoint. Done when every
//!   delivery report is in.
//! - shipper: the release binary tailing the file (`--file`). Done when the
//!   checkpoint, which only moves on Kafka's acknowledgement, reaches the end
//!   of the file. Its peak RSS (VmHWM) is recorded.
//! - the ratio shipper / baseline in lines/s, and the CPU each used.
//! - steady state: a writer emits lines at 10,000 lines/s for 10 s, three ways:
//!   produced by a bare producer (the baseline), appended to a file the shipper
//!   tails, written into the shipper's stdin (the wrap path); p50/p99 latency
//!   from the write to the line being readable in Kafka (a consumer with a 5 ms
//!   fetch wait), the p99 ratio to the baseline, and the shipper's RSS mid-run.
//! - wrap mode with Kafka cut (a broker behind `testkit::ProxiedBroker`): the
//!   shipper wraps `cat FILE`; how fast the wrapped process's output went
//!   through, the spool size and the shipper's peak RSS while Kafka is away, then
//!   the time to replay the spool once Kafka is back.
//! - a slow broker (`slow`): a broker behind `testkit::ProxiedBroker` whose
//!   every answer arrives 40 ms late, the shipper fed 350 lines/s on stdin
//!   for 15 s; its CPU per line with its default producer settings against the
//!   baseline of the same shipper with `enable.idempotence=false` and
//!   `max.in.flight=1` (which librdkafka never busy-polls with). Without the
//!   librdkafka fix carried in `vendor/rdkafka-sys`, the default settings spin
//!   for as long as each answer takes (vendor/README.md).
//!
//! Each topic is read back afterwards with a fresh consumer from offset 0 and
//! its count checked (not timed). Lines are produced to one-partition topics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwatch_shipper::{Config, Input};
use meshwatch_testkit::{self as testkit, ProxiedBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

const MIB: f64 = 1024.0 * 1024.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One realistic ECS access/log line (~420 bytes), 8 instances.
fn ecs_line(n: u64) -> String {
    let level = if n % 50 == 0 { "warn" } else { "info" };
    format!(
        concat!(
            r#"{{"@timestamp":"2026-11-25T07:{:02}:{:02}.{:03}Z","log.level":"{}","#,
            r#""message":"PlaceOrder accepted order {} for customer c-{} ({} items, {}.{:02} EUR)","#,
            r#""ecs.version":"8.11.0","service.name":"order","service.version":"0.1.0","#,
            r#""service.instance.id":"order-{}","event.dataset":"order.log","log.logger":"order::api","#,
            r#""trace.id":"{:032x}","span.id":"{:016x}","rpc.system":"grpc","#,
            r#""rpc.method":"/meshwatch.order.v1.Order/PlaceOrder","rpc.grpc.status_code":0,"#,
            r#""event.duration":{}}}"#
        ),
        (n / 60_000) % 60,
        (n / 1000) % 60,
        n % 1000,
        level,
        n,
        n % 977,
        1 + n % 7,
        10 + n % 300,
        n % 100,
        n % 8,
        u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) | 1,
        n.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1,
        200_000 + (n * 7919) % 3_000_000,
    )
}

#[derive(Clone, Default)]
struct Counting {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Counting {
    /// librdkafka's debug lines (`debug` set through `BENCH_SHIPPER_ARGS`'s
    /// `--kafka-option`s applies to the bare producer too) on stderr, timed.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if matches!(level, rdkafka::config::RDKafkaLogLevel::Debug) {
            let at = meshwatch_ecs::format_timestamp(std::time::SystemTime::now());
            eprintln!("{at} bare librdkafka {fac}: {message}");
        }
    }
}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The bare producer: same settings as the shipper, lines as they are.
fn baseline(bootstrap: &str, topic: &str, file: &Path, lines: u64) -> (Duration, Duration) {
    let mut cfg = Config::new(Input::Stdin, bootstrap, std::env::temp_dir(), "bench");
    cfg.logs_topic = topic.to_owned();
    cfg.kafka_options = extra_kafka_options();
    let counting = Counting::default();
    let producer: ThreadedProducer<Counting> = meshwatch_shipper::sink::producer_config(&cfg)
        .create_with_context(counting.clone())
        .expect("baseline producer");
    let cpu_before = cpu_time("self");
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(64 << 10, File::open(file).unwrap());
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    // Queue full: librdkafka's background thread drains it.
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).unwrap();
    while counting.ok.load(Ordering::Relaxed) + counting.failed.load(Ordering::Relaxed) < lines {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    // The whole bench process: the reading loop and librdkafka's threads (the
    // runtime's idle workers add next to nothing).
    let cpu = cpu_time("self").saturating_sub(cpu_before);
    assert_eq!(
        counting.failed.load(Ordering::Relaxed),
        0,
        "baseline failures"
    );
    (elapsed, cpu)
}

fn shipper_args<'a>(
    bootstrap: &'a str,
    topic: &'a str,
    hb: &'a str,
    data: &'a Path,
) -> Vec<String> {
    [
        "--kafka",
        bootstrap,
        "--logs-topic",
        topic,
        "--heartbeats-topic",
        hb,
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "order",
        "--stats",
        "100ms",
        "--shutdown-grace",
        "300000ms",
        "--checkpoint",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("{}ms", env_u64("BENCH_CHECKPOINT_MS", 50))])
    .collect()
}

/// CPU time (user + system) a process has used so far, from /proc (100 Hz ticks).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// `BENCH_SHIPPER_ARGS`: extra flags for the shippers of the tail and steady phases (e.g. a window size).
fn extra_shipper_args() -> Vec<String> {
    std::env::var("BENCH_SHIPPER_ARGS")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The `--kafka-option K=V` pairs among `BENCH_SHIPPER_ARGS`: the bare
/// producers get them too, so that both sides keep the same producer settings
/// (and `debug=…` shows both sides' librdkafka).
fn extra_kafka_options() -> Vec<(String, String)> {
    let args = extra_shipper_args();
    args.iter()
        .zip(args.iter().skip(1))
        .filter(|(flag, _)| *flag == "--kafka-option")
        .filter_map(|(_, kv)| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

/// The shipper binary tailing `file`; returns (time to the checkpoint at the end, peak RSS KiB).
fn shipper_tail(bootstrap: &str, topic: &str, hb: &str, file: &Path) -> (Duration, u64, Duration) {
    let data = tempfile::tempdir().unwrap();
    let len = std::fs::metadata(file).unwrap().len();
    let cp_path = data.path().join(meshwatch_shipper::CHECKPOINT_FILE);
    let started = Instant::now();
    // BENCH_SHIPPER_PREFIX: a command to run the shipper under (e.g. valgrind).
    let prefix: Vec<String> = std::env::var("BENCH_SHIPPER_PREFIX")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_shipper"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_shipper")),
    };
    let child = cmd
        .args(shipper_args(bootstrap, topic, hb, data.path()))
        .args(["--file", file.to_str().unwrap()])
        .args(extra_shipper_args())
        .stdout(Stdio::null())
        .stderr(File::create(data.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Ok(Some(cp)) = meshwatch_shipper::checkpoint::load(&cp_path) {
            if cp.offset >= len {
                break;
            }
        }
        assert!(Instant::now() < deadline, "shipper did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let rss = peak_rss_kib(child.id());
    let cpu = cpu_time(&child.id().to_string());
    stop(child);
    if std::env::var_os("BENCH_TRACE").is_some() {
        // The shipper's own stats lines (every 100 ms), to see where time goes.
        let text = std::fs::read_to_string(data.path().join("stderr")).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["message"] == "shipper stats" {
                println!(
                    "  stats: read {} shipped {} in_flight {} retries {}",
                    v["shipper.lines_read"],
                    v["shipper.lines_shipped"],
                    v["shipper.in_flight"],
                    v["shipper.retries"]
                );
            } else {
                println!("  {line}");
            }
        }
    }
    (elapsed, rss, cpu)
}

/// Counts the records of a one-partition topic from offset 0 (bounded).
fn count_topic(bootstrap: &str, topic: &str, want: u64) -> u64 {
    let consumer: BaseConsumer = meshwatch_kafka::base_config(bootstrap)
        .set("group.id", testkit::unique_topic("bench-count"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut n = 0;
    let mut idle_since = Instant::now();
    while n < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if m.payload().is_some() {
                    n += 1;
                }
                idle_since = Instant::now();
            }
            _ if idle_since.elapsed() > Duration::from_secs(20) => break,
            _ => {}
        }
    }
    let _ = consumer.unassign();
    n
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Steady {
    histogram: hdrhistogram::Histogram<u64>,
    rss_kib: u64,
    peak_rss_kib: u64,
    missing: u64,
    /// From the first warm-up line written to the first one readable.
    startup: Duration,
}

/// How lines reach Kafka in the steady-state run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path_ {
    /// The shipper tails a file the writer appends to (`--poll 5ms`).
    Tail,
    /// The shipper reads the writer's lines from a pipe (`--stdin`: the wrap path).
    Pipe,
    /// Baseline: the writer produces each line itself with the shipper's producer settings.
    Bare,
}

/// A writer emits ECS lines at a steady `rate` lines/s for `secs` seconds
/// (appended to a file the shipper tails, written into the shipper's stdin, or
/// produced directly by a bare producer); a consumer with a 5 ms fetch wait
/// notes when each line becomes readable in Kafka. Latency = write → readable
/// (an upper bound of write → acknowledgement: it adds the consumer's fetch).
fn steady(bootstrap: &str, rate: u64, secs: u64, path_kind: Path_) -> Steady {
    let total = rate * secs;
    let topic = testkit::unique_topic("bench-steady");
    let hb = testkit::unique_topic("bench-steady-hb");
    let rt = tokio::runtime::Handle::current();
    rt.block_on(testkit::create_topic(bootstrap, &topic, 1));
    rt.block_on(testkit::create_topic(bootstrap, &hb, 1));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order.log");
    File::create(&path).unwrap();
    let data = dir.path().join("data");
    let mut child = match path_kind {
        Path_::Bare => None,
        Path_::Tail | Path_::Pipe => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_shipper"));
            cmd.args(shipper_args(bootstrap, &topic, &hb, &data))
                .args(extra_shipper_args());
            if path_kind == Path_::Tail {
                cmd.args(["--file", path.to_str().unwrap(), "--poll", "5ms"]);
            } else {
                cmd.arg("--stdin").stdin(Stdio::piped());
            }
            // BENCH_STEADY_DUMP: the shipper's stats lines (every 100 ms) beside the latencies.
            let stderr = match std::env::var("BENCH_STEADY_DUMP") {
                Ok(dump) => {
                    Stdio::from(File::create(format!("{dump}.{path_kind:?}.stderr")).unwrap())
                }
                Err(_) => Stdio::null(),
            };
            Some(cmd.stdout(Stdio::null()).stderr(stderr).spawn().unwrap())
        }
    };
    enum Out {
        File(std::fs::File),
        Pipe(std::process::ChildStdin),
        Bare(ThreadedProducer<Counting>, String),
    }
    let mut out = match path_kind {
        Path_::Tail => Out::File(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap(),
        ),
        Path_::Pipe => Out::Pipe(child.as_mut().unwrap().stdin.take().unwrap()),
        Path_::Bare => {
            let mut cfg = Config::new(Input::Stdin, bootstrap, std::env::temp_dir(), "bench");
            cfg.logs_topic = topic.clone();
            cfg.kafka_options = extra_kafka_options();
            let p: ThreadedProducer<Counting> = meshwatch_shipper::sink::producer_config(&cfg)
                .create_with_context(Counting::default())
                .unwrap();
            Out::Bare(p, topic.clone())
        }
    };

    let consumer: BaseConsumer = meshwatch_kafka::base_config(bootstrap)
        .set("group.id", testkit::unique_topic("bench-steady"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("fetch.min.bytes", "1")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();

    let written: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    // Warm-up: lines numbered from `total` on, one every 20 ms, until the
    // consumer has read one. Without it the first second of the timed lines
    // waits for start-up (the shipper process, the producer's connection and
    // producer id, the consumer's first fetch), which is 1 % of a 10 s run
    // and so *is* the p99.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let epoch = Instant::now();
    let w = written.clone();
    let r = ready.clone();
    let writer = std::thread::spawn(move || {
        let mut warmup = total;
        let warmup_deadline = Instant::now() + Duration::from_secs(60);
        while !r.load(Ordering::Relaxed) {
            assert!(
                Instant::now() < warmup_deadline,
                "warm-up line never readable"
            );
            let line = format!(
                "{},\"bench.n\":{warmup}}}\n",
                ecs_line(0).trim_end_matches('}')
            );
            warmup += 1;
            write_line(&mut out, &line);
            std::thread::sleep(Duration::from_millis(20));
        }
        let start = Instant::now();
        for n in 0..total {
            let due = start + Duration::from_nanos(n * 1_000_000_000 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let line = format!("{},\"bench.n\":{n}}}\n", ecs_line(n).trim_end_matches('}'));
            w[n as usize].store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
            write_line(&mut out, &line);
        }
        out
    });
    fn write_line(out: &mut Out, line: &str) {
        match out {
            Out::File(f) => f.write_all(line.as_bytes()).unwrap(),
            Out::Pipe(p) => p.write_all(line.as_bytes()).unwrap(),
            Out::Bare(p, topic) => {
                let mut record =
                    BaseRecord::<(), [u8]>::to(topic).payload(line.trim_end().as_bytes());
                while let Err((_, r)) = p.send(record) {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut seen = vec![false; total as usize];
    let mut latencies = vec![0u64; total as usize];
    let mut count = 0;
    let mut rss = 0;
    let mut startup = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(secs + 120);
    while count < total && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let arrived = epoch.elapsed().as_micros() as u64;
        let n = m
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v["bench.n"].as_u64());
        if n.is_some_and(|n| n >= total) && !ready.swap(true, Ordering::Relaxed) {
            startup = epoch.elapsed();
        }
        if let Some(n) = n.filter(|n| *n < total) {
            if !std::mem::replace(&mut seen[n as usize], true) {
                count += 1;
                let sent = written[n as usize].load(Ordering::Relaxed);
                histogram.saturating_record(arrived.saturating_sub(sent).max(1));
                latencies[n as usize] = arrived.saturating_sub(sent);
                if count == total / 2 {
                    // Steady state, mid-run.
                    rss = child.as_ref().map_or(0, |c| rss_kib(c.id()));
                }
            }
        }
    }
    drop(writer.join().unwrap());
    if let Ok(dump) = std::env::var("BENCH_STEADY_DUMP") {
        // One line per timed line: n, written (µs since start), latency (µs).
        let mut f = BufWriter::new(File::create(format!("{dump}.{path_kind:?}")).unwrap());
        for (n, at) in latencies.iter().enumerate() {
            let sent = written[n].load(Ordering::Relaxed);
            writeln!(f, "{n} {sent} {at}").unwrap();
        }
    }
    let peak = child.as_ref().map_or(0, |c| peak_rss_kib(c.id()));
    let _ = consumer.unassign();
    if let Some(child) = child {
        stop(child);
    }
    Steady {
        histogram,
        rss_kib: rss,
        peak_rss_kib: peak,
        missing: total - count,
        startup,
    }
}

struct WrapCut {
    write_time: Duration,
    spool_bytes: u64,
    peak_rss_kib: u64,
    replay_time: Duration,
}

/// Wraps `cat FILE` with Kafka cut; then restores it and waits for the replay.
async fn wrap_cut(file: &Path, lines: u64) -> WrapCut {
    let broker = ProxiedBroker::start().await;
    let bootstrap = broker.bootstrap().to_owned();
    let topic = testkit::unique_topic("bench-wrap");
    let hb = testkit::unique_topic("bench-wrap-hb");
    testkit::create_topic(&bootstrap, &topic, 1).await;
    testkit::create_topic(&bootstrap, &hb, 1).await;
    broker.cut().await;
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shipper"))
        .args(shipper_args(&bootstrap, &topic, &hb, data.path()))
        // Room for the whole file: this measures spooling, not the drop path.
        .args(["--spool-max-bytes", &(4u64 << 30).to_string()])
        .args(["--", "cat", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let stats = Arc::new(std::sync::Mutex::new(None::<serde_json::Value>));
    let s = stats.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "shipper stats" {
                    *s.lock().unwrap() = Some(v);
                }
            }
        }
    });
    let stat = |name: &str| {
        stats
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|v| v[name].as_u64())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while stat("shipper.lines_read") < lines {
        assert!(Instant::now() < deadline, "wrap: lines not read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let write_time = started.elapsed();
    let spool_bytes = stat("shipper.spool_bytes");
    let peak_rss_kib = peak_rss_kib(child.id());
    let restored = Instant::now();
    broker.restore().await;
    // cat has ended: the shipper exits once the spool is replayed and acknowledged.
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "wrap: replay did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let replay_time = restored.elapsed();
    let counted = count_topic(&bootstrap, &topic, lines);
    assert_eq!(counted, lines, "wrap: every line in Kafka");
    WrapCut {
        write_time,
        spool_bytes,
        peak_rss_kib,
        replay_time,
    }
}

/// The slow-broker phase: one shipper `--stdin` fed `rate` lines/s for
/// `secs` against `bootstrap`; returns the shipper's CPU time over the run
/// (from its start to its exit after the last acknowledgement) and the number
/// of lines read back.
fn slow_broker_run(
    bootstrap: &str,
    rate: u64,
    secs: u64,
    kafka_options: &[&str],
) -> (Duration, u64) {
    let total = rate * secs;
    let topic = testkit::unique_topic("bench-slow");
    let hb = testkit::unique_topic("bench-slow-hb");
    let rt = tokio::runtime::Handle::current();
    rt.block_on(testkit::create_topic(bootstrap, &topic, 1));
    rt.block_on(testkit::create_topic(bootstrap, &hb, 1));
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shipper"));
    cmd.args(shipper_args(bootstrap, &topic, &hb, data.path()))
        .arg("--stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for option in kafka_options {
        cmd.args(["--kafka-option", option]);
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().to_string();
    let mut stdin = child.stdin.take().unwrap();
    let started = Instant::now();
    for n in 0..total {
        // Paced to `rate`: line n is written at n / rate seconds.
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        writeln!(stdin, "{}", ecs_line(n)).unwrap();
    }
    drop(stdin);
    // The shipper exits on the end of its input once everything is
    // acknowledged; its CPU is read just before (a zombie keeps its counters
    // until it is reaped).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut cpu = cpu_time(&pid);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "slow-broker shipper failed: {status}");
            break;
        }
        cpu = cpu_time(&pid);
        assert!(
            Instant::now() < deadline,
            "slow-broker shipper did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (cpu, count_topic(bootstrap, &topic, total))
}

fn rate(lines: u64, bytes: u64, d: Duration) -> (f64, f64) {
    let s = d.as_secs_f64();
    (lines as f64 / s, bytes as f64 / MIB / s)
}

/// Whether `phase` is among `BENCH_PHASES` (a comma list; all when unset).
fn phase(name: &str) -> bool {
    std::env::var("BENCH_PHASES").map_or(true, |v| v.split(',').any(|p| p.trim() == name))
}

fn main() {
    let lines = env_u64("BENCH_LINES", 1_000_000);
    let rounds = env_u64("BENCH_ROUNDS", 2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bootstrap = testkit::kafka().await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("order.log");
        let mut w = BufWriter::new(File::create(&file).unwrap());
        for n in 0..lines {
            writeln!(w, "{}", ecs_line(n)).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let bytes = std::fs::metadata(&file).unwrap().len();
        println!(
            "shipper bench: {lines} lines, {:.1} MiB ({} bytes/line), broker {bootstrap}, {} cores",
            bytes as f64 / MIB,
            bytes / lines,
            std::thread::available_parallelism().map_or(0, usize::from)
        );

        let rounds = if phase("tail") { rounds } else { 0 };
        let mut best_base = Duration::MAX;
        let mut best_ship = Duration::MAX;
        let mut max_rss = 0;
        let mut best_base_cpu = Duration::MAX;
        let mut best_ship_cpu = Duration::MAX;
        for round in 1..=rounds {
            let topic = testkit::unique_topic("bench-base");
            testkit::create_topic(&bootstrap, &topic, 1).await;
            let (b, t) = (bootstrap.clone(), topic.clone());
            let f = file.clone();
            let (base, base_cpu) = tokio::task::spawn_blocking(move || baseline(&b, &t, &f, lines))
                .await
                .unwrap();
            let (b, t) = (bootstrap.clone(), topic.clone());
            let counted = tokio::task::spawn_blocking(move || count_topic(&b, &t, lines))
                .await
                .unwrap();
            assert_eq!(counted, lines, "baseline: every line in Kafka");

            let topic = testkit::unique_topic("bench-ship");
            let hb = testkit::unique_topic("bench-ship-hb");
            testkit::create_topic(&bootstrap, &topic, 1).await;
            testkit::create_topic(&bootstrap, &hb, 1).await;
            let (b, t, h) = (bootstrap.clone(), topic.clone(), hb.clone());
            let f = file.clone();
            let (ship, rss, ship_cpu) = tokio::task::spawn_blocking(move || shipper_tail(&b, &t, &h, &f))
                .await
                .unwrap();
            let (b, t) = (bootstrap.clone(), topic.clone());
            let counted = tokio::task::spawn_blocking(move || count_topic(&b, &t, lines))
                .await
                .unwrap();
            assert!(counted >= lines, "shipper: every line in Kafka ({counted})");

            let (bl, bm) = rate(lines, bytes, base);
            let (sl, sm) = rate(lines, bytes, ship);
            println!(
                "round {round}: baseline {:.2} s = {bl:.0} lines/s {bm:.1} MiB/s (CPU {:.2} s) | shipper {:.2} s = {sl:.0} lines/s {sm:.1} MiB/s (CPU {:.2} s) | ratio {:.2} | CPU ratio baseline/shipper {:.2} | shipper peak RSS {:.1} MiB",
                base.as_secs_f64(),
                base_cpu.as_secs_f64(),
                ship.as_secs_f64(),
                ship_cpu.as_secs_f64(),
                sl / bl,
                base_cpu.as_secs_f64() / ship_cpu.as_secs_f64().max(0.01),
                rss as f64 / 1024.0
            );
            best_base_cpu = best_base_cpu.min(base_cpu);
            best_ship_cpu = best_ship_cpu.min(ship_cpu);
            best_base = best_base.min(base);
            best_ship = best_ship.min(ship);
            max_rss = max_rss.max(rss);
        }
        let (bl, bm) = rate(lines, bytes, best_base);
        let (sl, sm) = rate(lines, bytes, best_ship);
        if rounds > 0 {
        println!("best of {rounds}: baseline (bare rdkafka producer) {bl:.0} lines/s, {bm:.1} MiB/s");
        println!("best of {rounds}: shipper --file                   {sl:.0} lines/s, {sm:.1} MiB/s");
        println!("ratio shipper / baseline: {:.2}", sl / bl);
        println!(
            "CPU per run (least of {rounds}): baseline {:.2} s, shipper {:.2} s; ratio baseline / shipper {:.2}",
            best_base_cpu.as_secs_f64(),
            best_ship_cpu.as_secs_f64(),
            best_base_cpu.as_secs_f64() / best_ship_cpu.as_secs_f64().max(0.01)
        );
        println!(
            "CPU per line: baseline {:.2} us, shipper {:.2} us",
            best_base_cpu.as_secs_f64() * 1e6 / lines as f64,
            best_ship_cpu.as_secs_f64() * 1e6 / lines as f64
        );
        println!("shipper peak RSS tailing: {:.1} MiB", max_rss as f64 / 1024.0);
        }

        let rate_per_s = env_u64("BENCH_STEADY_RATE", 10_000);
        let secs = env_u64("BENCH_STEADY_SECS", 10);
        let steady_kafka = std::env::var("BENCH_STEADY_KAFKA")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map_or_else(|| bootstrap.clone(), |v| v.trim().to_owned());
        let steady_kinds: &[Path_] = if phase("steady") {
            println!("steady state against broker {steady_kafka}");
            &[Path_::Bare, Path_::Tail, Path_::Pipe]
        } else {
            &[]
        };
        let mut p99s = Vec::new();
        for &kind in steady_kinds {
            let b = steady_kafka.clone();
            let st = tokio::task::spawn_blocking(move || steady(&b, rate_per_s, secs, kind))
                .await
                .unwrap();
            assert_eq!(st.missing, 0, "steady {kind:?}: every line in Kafka");
            let ms = |q: f64| st.histogram.value_at_quantile(q) as f64 / 1000.0;
            p99s.push(ms(0.99));
            let label = match kind {
                Path_::Bare => "baseline (bare producer)",
                Path_::Tail => "shipper --file (poll 5ms)",
                Path_::Pipe => "shipper --stdin (wrap path)",
            };
            println!(
                "steady {rate_per_s} lines/s for {secs} s, {label}: write -> readable in Kafka p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms (after a warm-up of {:.2} s){}{}",
                ms(0.5),
                ms(0.99),
                ms(0.999),
                st.histogram.max() as f64 / 1000.0,
                st.startup.as_secs_f64(),
                if kind == Path_::Bare { String::new() } else {
                    format!("; p99 ratio to the baseline {:.2}", ms(0.99) / p99s[0].max(0.001))
                },
                if kind == Path_::Bare { String::new() } else {
                    format!(
                        "; shipper RSS mid-run {:.1} MiB, peak {:.1} MiB",
                        st.rss_kib as f64 / 1024.0,
                        st.peak_rss_kib as f64 / 1024.0
                    )
                }
            );
        }

        if phase("slow") {
            let broker = ProxiedBroker::start().await;
            let delay = env_u64("BENCH_SLOW_DELAY_MS", 40);
            broker.delay_answers(Duration::from_millis(delay));
            let rate = env_u64("BENCH_SLOW_RATE", 350);
            let secs = env_u64("BENCH_SLOW_SECS", 15);
            let total = rate * secs;
            let mut cpus = Vec::new();
            for (label, options) in [
                (
                    "baseline (idempotence off, max.in.flight 1)",
                    &["enable.idempotence=false", "max.in.flight=1"][..],
                ),
                ("shipper, default producer settings", &[][..]),
            ] {
                let b = broker.bootstrap().to_owned();
                let options: Vec<&'static str> = options.to_vec();
                let (cpu, counted) =
                    tokio::task::spawn_blocking(move || slow_broker_run(&b, rate, secs, &options))
                        .await
                        .unwrap();
                assert!(counted >= total, "{label}: every line in Kafka ({counted} of {total})");
                println!(
                    "slow broker (answers {delay} ms late), {rate} lines/s for {secs} s, {label}: CPU {:.2} s = {:.1} % of a core, {:.0} us per line",
                    cpu.as_secs_f64(),
                    cpu.as_secs_f64() * 100.0 / secs as f64,
                    cpu.as_secs_f64() * 1e6 / total as f64
                );
                cpus.push(cpu.as_secs_f64());
            }
            println!(
                "slow broker: CPU ratio shipper / baseline {:.2}",
                cpus[1] / cpus[0].max(0.001)
            );
        }

        if !phase("wrap") {
            return;
        }
        // Baseline of the wrap run: the same `cat` writing to nowhere.
        let cat_started = Instant::now();
        Command::new("cat")
            .arg(&file)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let cat_alone = cat_started.elapsed();
        let wrap = wrap_cut(&file, lines).await;
        let (wl, wm) = rate(lines, bytes, wrap.write_time);
        let (rl, rm) = rate(lines, bytes, wrap.replay_time);
        println!(
            "wrap mode, Kafka cut: `cat` output through in {:.2} s ({wl:.0} lines/s, {wm:.1} MiB/s; `cat` to /dev/null alone {:.2} s), spool {:.1} MiB, shipper peak RSS {:.1} MiB",
            wrap.write_time.as_secs_f64(),
            cat_alone.as_secs_f64(),
            wrap.spool_bytes as f64 / MIB,
            wrap.peak_rss_kib as f64 / 1024.0
        );
        println!(
            "wrap mode, Kafka back: spool replayed and acknowledged in {:.2} s ({rl:.0} lines/s, {rm:.1} MiB/s; ratio to the bare producer's best {:.2})",
            wrap.replay_time.as_secs_f64(),
            rl / bl
        );
    });
}

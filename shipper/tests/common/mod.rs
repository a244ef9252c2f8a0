//! Helpers shared by the shipper's integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwatch_shipper::{Config, Input, ShutdownSignal};
use meshwatch_testkit::{self as testkit, Record};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Two fresh topics (logs, heartbeats) on `bootstrap`.
pub async fn topics(bootstrap: &str, prefix: &str, partitions: i32) -> (String, String) {
    let logs = testkit::unique_topic(&format!("{prefix}-logs"));
    let heartbeats = testkit::unique_topic(&format!("{prefix}-hb"));
    testkit::create_topic(bootstrap, &logs, partitions).await;
    testkit::create_topic(bootstrap, &heartbeats, 1).await;
    (logs, heartbeats)
}

/// A config with test-friendly intervals.
pub fn config(
    input: Input,
    bootstrap: &str,
    data_dir: &Path,
    logs: &str,
    heartbeats: &str,
) -> Config {
    let mut c = Config::new(input, bootstrap, data_dir.to_owned(), "order");
    c.host_name = "test-host".into();
    c.logs_topic = logs.into();
    c.heartbeats_topic = heartbeats.into();
    c.poll_interval = Duration::from_millis(10);
    c.checkpoint_interval = Duration::from_millis(100);
    c.stats_interval = None;
    c.heartbeat_interval = Some(Duration::from_millis(500));
    c.topic_check_interval = Duration::from_secs(2);
    c.shutdown_grace = Duration::from_secs(10);
    c
}

/// Runs the shipper in this process; send a signal to stop it.
pub fn start(config: Config) -> (mpsc::UnboundedSender<ShutdownSignal>, JoinHandle<i32>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(async move {
        meshwatch_shipper::run(config, rx)
            .await
            .expect("shipper runs")
    });
    (tx, handle)
}

/// Stops an in-process shipper and returns its exit code (bounded wait).
pub async fn stop(tx: mpsc::UnboundedSender<ShutdownSignal>, handle: JoinHandle<i32>) -> i32 {
    let _ = tx.send(ShutdownSignal::Terminate);
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("shipper stops within 30 s")
        .expect("shipper task")
}

/// One numbered ECS line of instance `order-<n % instances>`.
pub fn numbered_line(n: u64, instances: u64) -> String {
    format!(
        r#"{{"@timestamp":"2026-11-25T07:00:00.000Z","log.level":"info","message":"line {n}","ecs.version":"8.11.0","service.name":"order","service.instance.id":"order-{}","event.dataset":"order.log","test.n":{n}}}"#,
        n % instances
    )
}

/// `test.n` of every record that has one.
pub fn numbers(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).ok())
        .filter_map(|v| v.get("test.n").and_then(serde_json::Value::as_u64))
        .collect()
}

/// A `read_topic` stop condition: every `test.n` in `0..total` has arrived.
/// Incremental (it looks at each record once): the reader calls it after every poll.
pub fn has_all_below(total: u64) -> impl Fn(&[Record]) -> bool + Send + 'static {
    let state = Mutex::new((0usize, vec![false; total as usize], 0u64));
    move |records: &[Record]| {
        let mut guard = state.lock().expect("predicate lock");
        let (done, seen, count) = &mut *guard;
        for r in &records[*done..] {
            let n = serde_json::from_slice::<serde_json::Value>(&r.payload)
                .ok()
                .and_then(|v| v.get("test.n").and_then(serde_json::Value::as_u64));
            if let Some(n) = n.filter(|n| *n < total) {
                if !std::mem::replace(&mut seen[n as usize], true) {
                    *count += 1;
                }
            }
        }
        *done = records.len();
        *count >= total
    }
}

/// Count of distinct `test.n` values below `total`.
pub fn distinct_below(records: &[Record], total: u64) -> usize {
    let mut seen = vec![false; total as usize];
    let mut count = 0;
    for n in numbers(records) {
        if n < total && !std::mem::replace(&mut seen[n as usize], true) {
            count += 1;
        }
    }
    count
}

/// Asserts every number in `0..total` arrived; returns how many arrived more than once.
pub fn assert_all_arrived(records: &[Record], total: u64) -> usize {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for n in numbers(records) {
        *counts.entry(n).or_default() += 1;
    }
    let missing: Vec<u64> = (0..total).filter(|n| !counts.contains_key(n)).collect();
    if !missing.is_empty() {
        let mut per_partition: std::collections::BTreeMap<i32, (usize, i64)> = Default::default();
        for r in records {
            let e = per_partition.entry(r.partition).or_insert((0, -1));
            e.0 += 1;
            e.1 = e.1.max(r.offset);
        }
        panic!(
            "{} of {total} lines missing, first: {:?}; read per partition (count, last offset): {per_partition:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    counts.values().filter(|c| **c > 1).count()
}

/// Per key, the numbers in partition-offset order must increase (first copy of each).
pub fn assert_order_per_key(records: &[Record]) {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for r in sorted {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.payload) else {
            continue;
        };
        let Some(n) = v.get("test.n").and_then(serde_json::Value::as_u64) else {
            continue;
        };
        if !seen.insert(n) {
            continue; // a redelivered copy
        }
        let key = r.key.clone().unwrap_or_default();
        if let Some(prev) = last.insert(key.clone(), n) {
            assert!(
                prev < n,
                "order broken for key {}: {prev} then {n}",
                String::from_utf8_lossy(&key)
            );
        }
    }
}

/// Resident set size of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size of a process in KiB (`VmHWM`), from /proc.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The shipper binary as a child process, its stdout (bytes) and stderr
/// (lines) collected by reader threads. Killed on drop if still running.
pub struct Shipper {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Exit code and collected output of a finished [`Shipper`].
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<String>,
}

impl Shipper {
    /// Starts `shipper ARGS…` with stdin null.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(args, Stdio::null())
    }

    /// Starts `shipper ARGS…` with stdin piped (see [`Shipper::stdin`]).
    pub fn spawn_piped(args: &[&str]) -> Self {
        Self::spawn_with(args, Stdio::piped())
    }

    pub fn spawn_with(args: &[&str], stdin: Stdio) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shipper"))
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the shipper binary");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = BufReader::new(child.stderr.take().expect("piped stderr"));
        let o = stdout.clone();
        let e = stderr.clone();
        let readers = vec![
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 << 10];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    o.lock().expect("stdout lock").extend_from_slice(&buf[..n]);
                }
            }),
            std::thread::spawn(move || {
                let mut line = Vec::new();
                while let Ok(n) = err.read_until(b'\n', &mut line) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    e.lock().expect("stderr lock").push(text);
                    line.clear();
                }
            }),
        ];
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("signalling the shipper");
    }

    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().expect("stdout lock").clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Waits (bounded) until `count` stderr lines satisfy `pred`; returns them.
    pub async fn wait_stderr(
        &self,
        timeout: Duration,
        what: &str,
        count: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        testkit::wait_for(timeout, what, || {
            let hits: Vec<String> = self
                .stderr
                .lock()
                .expect("stderr lock")
                .iter()
                .filter(|l| pred(l))
                .cloned()
                .collect();
            (hits.len() >= count).then_some(hits)
        })
        .await
    }

    /// The stats lines (`shipper stats`) so far, parsed.
    pub fn stats(&self) -> Vec<serde_json::Value> {
        self.stderr()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "shipper stats")
            .collect()
    }

    /// Waits (bounded) for the process to exit; collects its output.
    pub async fn wait(mut self, timeout: Duration) -> Finished {
        let child = &mut self.child;
        let status = testkit::wait_for(timeout, "the shipper to exit", || {
            child.try_wait().expect("waiting for the shipper")
        })
        .await;
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        Finished {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A shell script printing `total` numbered ECS lines (instance `writer-1`),
/// then creating `done`, then waiting for its stdin to end and exiting 3.
pub fn writer_script(total: u64, done: &Path) -> String {
    format!(
        "i=0; while [ $i -lt {total} ]; do \
         echo \"{{\\\"@timestamp\\\":\\\"2026-11-25T07:00:00.000Z\\\",\\\"log.level\\\":\\\"info\\\",\
         \\\"message\\\":\\\"order placed $i\\\",\\\"ecs.version\\\":\\\"8.11.0\\\",\\\"service.name\\\":\\\"writer\\\",\
         \\\"service.instance.id\\\":\\\"writer-1\\\",\\\"event.dataset\\\":\\\"writer.log\\\",\\\"test.n\\\":$i}}\"; \
         i=$((i+1)); done; : > '{}'; read _ignored; exit 3",
        done.display()
    )
}

/// Broker and topic flags for the binary.
pub fn kafka_args<'a>(bootstrap: &'a str, logs: &'a str, hb: &'a str) -> Vec<&'a str> {
    vec![
        "--kafka",
        bootstrap,
        "--logs-topic",
        logs,
        "--heartbeats-topic",
        hb,
    ]
}

const SENTINEL: &str = "meshwatch-test-sentinel";

/// Everything in `topic` now: puts a sentinel record at the end of every
/// partition, reads from offset 0 until all sentinels are seen (so nothing
/// produced before is missed and no timeout needs guessing), and returns the
/// records without the sentinels.
pub async fn read_all(bootstrap: &str, topic: &str, timeout: Duration) -> Vec<Record> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let partitions = meshwatch_kafka::partition_count(
        &meshwatch_kafka::KafkaArgs::plain(bootstrap),
        topic,
        Duration::from_secs(10),
    )
    .await
    .expect("topic metadata")
    .expect("topic exists");
    let producer: FutureProducer = meshwatch_kafka::base_config(bootstrap)
        .set("message.timeout.ms", "20000")
        .create()
        .expect("sentinel producer");
    for p in 0..partitions {
        producer
            .send(
                FutureRecord::<str, str>::to(topic)
                    .partition(p)
                    .payload(SENTINEL),
                Duration::from_secs(20),
            )
            .await
            .expect("producing a sentinel");
    }
    let want = partitions as usize;
    let state = Mutex::new((0usize, 0usize));
    let records = testkit::read_topic(bootstrap, topic, timeout, move |r: &[Record]| {
        let mut guard = state.lock().expect("predicate lock");
        let (done, seen) = &mut *guard;
        *seen += r[*done..]
            .iter()
            .filter(|r| r.payload == SENTINEL.as_bytes())
            .count();
        *done = r.len();
        *seen >= want
    })
    .await;
    let seen = records
        .iter()
        .filter(|r| r.payload == SENTINEL.as_bytes())
        .count();
    assert_eq!(seen, want, "read {topic} to its end within {timeout:?}");
    records
        .into_iter()
        .filter(|r| r.payload != SENTINEL.as_bytes())
        .collect()
}

/// The `tags` of a shipped record.
pub fn tags(v: &serde_json::Value) -> Vec<&str> {
    v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default()
}

//! Test support shared by every crate's integration tests (a dev-dependency only):
//! the Kafka-protocol test broker (tansu), unique topics, a consumer that reads
//! a topic back from offset 0, a broker behind a cuttable proxy for outage
//! tests, and bounded waits on a condition.
//!
//! Panics are the error reporting here: these run inside tests only.
#![forbid(unsafe_code)]
#![allow(clippy::missing_panics_doc)]

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use meshwatch_kafka::{self as kafka, TopicSpec};

/// The directory of the workspace's binaries built with the running test or
/// bench (`target/debug` or `target/release`, wherever `CARGO_TARGET_DIR`
/// puts it): the test executable lives in its `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable has a folder");
    if deps.ends_with("deps") {
        deps.parent().unwrap_or(deps).to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Environment variable naming an already running broker (set by `scripts/test`).
pub const BROKER_ENV: &str = "MESHWATCH_TEST_KAFKA";
const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The bootstrap address of the test broker: `$MESHWATCH_TEST_KAFKA` when set,
/// else a tansu this test process starts once (and that exits with it).
pub async fn kafka() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    if let Some(addr) = SHARED.get() {
        return addr.clone();
    }
    let addr = match std::env::var(BROKER_ENV) {
        Ok(addr) if !addr.trim().is_empty() => addr.trim().to_owned(),
        _ => {
            let port = free_port();
            spawn_tansu(port, port);
            format!("127.0.0.1:{port}")
        }
    };
    SHARED.get_or_init(|| addr).clone()
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

fn tansu_binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin/tansu")))
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu")));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the tansu test broker is not installed: run scripts/install (or set {BROKER_ENV} \
         to a running Kafka-protocol broker)"
    );
}

/// Starts tansu listening on `listen_port` and advertising `advertised_port`,
/// under a watchdog shell that stops it when this process exits (even on
/// kill -9). Returns the watchdog's pid once the listener accepts connections.
fn spawn_tansu(listen_port: u16, advertised_port: u16) -> u32 {
    let tansu = tansu_binary();
    let me = std::process::id();
    let script = format!(
        "\"$0\" broker --listener-url tcp://127.0.0.1:{listen_port} \
         --advertised-listener-url tcp://127.0.0.1:{advertised_port} \
         --storage-engine memory://tansu/ >/dev/null 2>&1 & t=$!; \
         trap 'kill $t 2>/dev/null; exit 0' TERM INT; \
         while kill -0 {me} 2>/dev/null && kill -0 $t 2>/dev/null; do sleep 0.5; done; \
         kill $t 2>/dev/null"
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(&tansu)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", tansu.display()));
    let deadline = Instant::now() + BROKER_READY_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], listen_port));
    while StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {addr} within {BROKER_READY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id();
    // Reap the watchdog when it exits, so no zombie is left behind.
    std::thread::spawn(move || child.wait());
    pid
}

/// `prefix` plus a random suffix, so tests sharing one broker never collide.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Creates `topic` with `partitions` partitions; panics with the broker's reason.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    kafka::create_topics(
        &kafka::KafkaArgs::plain(bootstrap),
        &[TopicSpec::new(topic, partitions)],
    )
    .await
    .unwrap_or_else(|e| panic!("creating topic {topic} on {bootstrap}: {e}"));
}

/// Produces `(key, payload)` records to `topic` and waits for every ack.
pub async fn produce(bootstrap: &str, topic: &str, records: &[(Option<&str>, &str)]) {
    let producer: FutureProducer = kafka::base_config(bootstrap)
        .set("message.timeout.ms", "20000")
        .create()
        .expect("creating a test producer");
    for (key, payload) in records {
        let mut record = FutureRecord::<str, str>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(20))
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }
}

/// Enqueues every payload to `topic` at once, then waits for every ack: under
/// a `producer` with a long `linger.ms` they go as one batch.
pub async fn produce_together<S: AsRef<str>>(
    producer: &FutureProducer,
    topic: &str,
    payloads: &[S],
) {
    let sent: Vec<_> = payloads
        .iter()
        .map(|p| {
            producer
                .send_result(FutureRecord::<(), str>::to(topic).payload(p.as_ref()))
                .unwrap_or_else(|(e, _)| panic!("enqueueing to {topic}: {e}"))
        })
        .collect();
    for delivery in sent {
        delivery
            .await
            .expect("delivery report")
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }
}

/// One record read back from Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The payload as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload parsed as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "record {}@{} is not JSON ({e}): {}",
                self.partition,
                self.offset,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads `topic` with a fresh consumer (no group, nothing committed), every
/// partition from offset 0, until `done(&records)` holds or `timeout` passes;
/// returns what it read either way (the caller asserts).
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool + Send + 'static,
) -> Vec<Record> {
    read_topic_from(bootstrap, topic, Offset::Beginning, timeout, done).await
}

/// [`read_topic`], every partition from `start`.
pub async fn read_topic_from(
    bootstrap: &str,
    topic: &str,
    start: Offset,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool + Send + 'static,
) -> Vec<Record> {
    let partitions = kafka::partition_count(
        &kafka::KafkaArgs::plain(bootstrap),
        topic,
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("metadata for {topic}: {e}"))
    .unwrap_or_else(|| panic!("topic {topic} does not exist on {bootstrap}"));
    let consumer: BaseConsumer = kafka::base_config(bootstrap)
        .set("group.id", unique_topic("meshwatch-testkit-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("creating a test consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, start)
            .expect("building the assignment");
    }
    consumer.assign(&assignment).expect("assigning partitions");

    let (tx, rx) = tokio::sync::oneshot::channel();
    // librdkafka polls block; a consumer has been seen to hang on drop, so the
    // whole read lives on its own thread and the caller's wait is bounded.
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        let mut records = Vec::new();
        while !done(&records) && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        let _ = tx.send(records);
        let _ = consumer.unassign();
    });
    tokio::time::timeout(timeout + Duration::from_secs(10), rx)
        .await
        .unwrap_or_else(|_| panic!("reading {topic} did not finish within {timeout:?}"))
        .expect("the reader thread ended without an answer")
}

/// Polls `f` until it returns `Some`, for at most `timeout`; panics naming
/// `what` when it never does. A bounded wait on a condition, not a sleep.
pub async fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A private tansu broker reached only through a TCP proxy (the broker
/// advertises the proxy's address), so a test can cut the network to Kafka and
/// restore it without losing the broker's in-memory data, or make every
/// answer of the broker arrive late (a slow broker).
pub struct ProxiedBroker {
    bootstrap: String,
    broker_pid: u32,
    cut: Arc<AtomicBool>,
    /// How long each byte from the broker is held back, in microseconds.
    answer_delay_us: Arc<AtomicU64>,
    connections: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl ProxiedBroker {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let proxy_port = listener.local_addr().expect("proxy address").port();
        let broker_port = free_port();
        let broker_pid = spawn_tansu(broker_port, proxy_port);
        let this = Self {
            bootstrap: format!("127.0.0.1:{proxy_port}"),
            broker_pid,
            cut: Arc::new(AtomicBool::new(false)),
            answer_delay_us: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(Mutex::new(CancellationToken::new())),
            stop: CancellationToken::new(),
        };
        tokio::spawn(proxy(
            listener,
            SocketAddr::from(([127, 0, 0, 1], broker_port)),
            Arc::clone(&this.cut),
            Arc::clone(&this.answer_delay_us),
            Arc::clone(&this.connections),
            this.stop.clone(),
        ));
        this
    }

    /// The address clients bootstrap from (the proxy).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Drops every open connection and refuses new ones until [`Self::restore`].
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut token = self.connections.lock().expect("proxy lock");
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Accepts connections again; the broker kept its data.
    pub async fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// From now on every byte the broker sends reaches its client `delay`
    /// late (order kept; requests are not delayed). Zero turns it off.
    pub fn delay_answers(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.answer_delay_us.store(us, Ordering::SeqCst);
    }
}

impl Drop for ProxiedBroker {
    fn drop(&mut self) {
        self.stop.cancel();
        // The watchdog shell stops its tansu on TERM.
        let _ = Command::new("kill")
            .arg(self.broker_pid.to_string())
            .status();
    }
}

async fn proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: Arc<AtomicBool>,
    answer_delay_us: Arc<AtomicU64>,
    connections: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        if cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let token = connections.lock().expect("proxy lock").clone();
        let stop = stop.clone();
        let delay = Arc::clone(&answer_delay_us);
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut from_server, mut to_server) = server.into_split();
            let (mut client_reader, client_writer) = client.into_split();
            let requests = tokio::io::copy(&mut client_reader, &mut to_server);
            tokio::select! {
                () = token.cancelled() => {}
                () = stop.cancelled() => {}
                _ = requests => {}
                () = forward_late(&mut from_server, client_writer, delay) => {}
            }
        });
    }
}

/// Copies the broker's bytes to the client, each chunk held until
/// `delay_us` after it was read (read on at once, so the delay does not add
/// up); ends when either side closes.
async fn forward_late(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_us: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = tokio::time::Instant::now()
                + Duration::from_micros(delay_us.load(Ordering::SeqCst));
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    // The writer drains what was read before the broker closed.
    tokio::join!(reader, writer);
}

/// A throwaway PKI for TLS tests: a CA, a server certificate for
/// `localhost` and `127.0.0.1`, and a client certificate, written as PEM
/// files under a directory the caller owns.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    pub fn create(dir: &std::path::Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "meshwatch test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names)
                .expect("leaf params")
                .signed_by(&key, &ca)
                .expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["meshwatch-test-client".into()]);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        }
    }
}

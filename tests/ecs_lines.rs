//! Every JSON line every binary writes fits `elasticsearch/meshwatch-ecs@mappings.json`,
//! checked the way Elasticsearch maps dotted fields: a field that is a leaf
//! in one place and an object in another is rejected (the line goes to the
//! dead-letter index), a value of the wrong kind for a date or numeric field
//! is rejected, and a field the template does not map is mapped dynamically
//! by the first line that has it (so every later line must agree). On top,
//! the mesh's own rule: a field ECS does not define lives under a namespace
//! the template maps (its first segment is one the template names).
//!
//! The lines come from running each binary (order, inventory, payment,
//! shipper, monitor, meshctl) through its error paths: Kafka unreachable, a
//! downstream service unreachable, bad flags that only fail at run time, an
//! address in use, hostile records; plus the captured records Fluentd
//! indexes (tests/data), for the Elasticsearch rules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshwatch_proto::order::v1 as order_pb;
use meshwatch_testkit as testkit;
use serde_json::{Map, Value};

// ---------------------------------------------------------------- the rules

/// A node of the index mapping: an object with children, or a leaf of a type.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Object(BTreeMap<String, Node>),
    Leaf(String),
}

/// The mapping an index starts with (the template), and the dynamic fields
/// lines have added since, as Elasticsearch keeps them.
struct Index {
    root: BTreeMap<String, Node>,
    /// First segments the template names: where ad-hoc fields may live.
    namespaces: BTreeSet<String>,
}

impl Index {
    fn from_template(template: &Value) -> Self {
        let props = template["template"]["mappings"]["properties"]
            .as_object()
            .expect("template properties");
        let mut root = BTreeMap::new();
        for (name, mapping) in props {
            let ty = mapping["type"].as_str().expect("every property has a type");
            let path: Vec<&str> = name.split('.').collect();
            insert(&mut root, &path, ty).unwrap_or_else(|e| panic!("the template itself: {e}"));
        }
        let namespaces = props
            .keys()
            .map(|k| k.split('.').next().unwrap_or_default().to_owned())
            .collect();
        Self { root, namespaces }
    }

    /// Indexes one line; returns why Elasticsearch (or the namespace rule)
    /// would refuse it.
    fn index(&mut self, line: &Map<String, Value>) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in line {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            if !self.namespaces.contains(&path[0]) {
                problems.push(format!(
                    "{key}: not under a namespace the template maps ({})",
                    self.namespaces
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Err(e) = put(&mut self.root, &path, value, key) {
                problems.push(e);
            }
        }
        problems
    }
}

/// Adds a mapped field at `path` (template loading).
fn insert(node: &mut BTreeMap<String, Node>, path: &[&str], ty: &str) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("empty field name")?;
    if rest.is_empty() {
        let new = if ty == "object" {
            Node::Object(BTreeMap::new())
        } else {
            Node::Leaf(ty.to_owned())
        };
        return match node.get(*head) {
            None => {
                node.insert((*head).to_owned(), new);
                Ok(())
            }
            Some(Node::Object(_)) if ty == "object" => Ok(()),
            Some(existing) => Err(format!("{head} is mapped twice: {existing:?} and {ty}")),
        };
    }
    match node
        .entry((*head).to_owned())
        .or_insert_with(|| Node::Object(BTreeMap::new()))
    {
        Node::Object(children) => insert(children, rest, ty),
        Node::Leaf(t) => Err(format!("{head} is a {t} leaf and has sub-fields")),
    }
}

/// The JSON kind of a scalar, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Elasticsearch's date detection on a new string field: a string that
/// parses as a date makes the field a date.
fn looks_like_date(s: &str) -> bool {
    meshwatch_ecs::parse_timestamp(s).is_some()
        || (s.len() == 10
            && s.as_bytes()[4] == b'-'
            && s.as_bytes()[7] == b'-'
            && s.bytes().filter(u8::is_ascii_digit).count() == 8)
}

/// Whether a leaf of type `ty` takes the scalar `v`. Stricter than
/// Elasticsearch where it would coerce with loss: a fraction into a long is
/// truncated there, and refused here.
fn accepts(ty: &str, v: &Value) -> bool {
    match (ty, v) {
        (_, Value::Null) => true,
        ("keyword" | "text", Value::String(_) | Value::Number(_) | Value::Bool(_)) => true,
        ("long" | "integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("double" | "float", Value::Number(_)) => true,
        ("date", Value::String(s)) => meshwatch_ecs::parse_timestamp(s).is_some(),
        ("date", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("boolean", Value::Bool(_)) => true,
        ("boolean", Value::String(s)) => s == "true" || s == "false",
        _ => false,
    }
}

/// Indexes `value` at `path` below `node`, creating dynamic mappings;
/// `name` is the whole field name, for messages.
fn put(
    node: &mut BTreeMap<String, Node>,
    path: &[String],
    value: &Value,
    name: &str,
) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("empty field name")?;
    if !rest.is_empty() {
        return match node
            .entry(head.clone())
            .or_insert_with(|| Node::Object(BTreeMap::new()))
        {
            Node::Object(children) => put(children, rest, value, name),
            Node::Leaf(ty) => {
                let segments: Vec<&str> = name.split('.').collect();
                let leaf = segments[..segments.len().saturating_sub(rest.len())].join(".");
                Err(format!(
                    "{name}: {leaf} is a {ty} field, so nothing can live under it"
                ))
            }
        };
    }
    match value {
        Value::Null => Ok(()),
        Value::Array(items) => {
            let kinds: BTreeSet<&str> = items.iter().filter(|v| !v.is_null()).map(kind).collect();
            if kinds.len() > 1 {
                return Err(format!("{name}: an array of mixed kinds {kinds:?}"));
            }
            items.iter().try_for_each(|v| put(node, path, v, name))
        }
        Value::Object(obj) => match node
            .entry(head.clone())
            .or_insert_with(|| Node::Object(BTreeMap::new()))
        {
            Node::Object(children) => obj.iter().try_for_each(|(k, v)| {
                let sub: Vec<String> = k.split('.').map(str::to_owned).collect();
                put(children, &sub, v, &format!("{name}.{k}"))
            }),
            Node::Leaf(ty) => Err(format!("{name}: an object where a {ty} field is mapped")),
        },
        scalar => match node.get(head) {
            Some(Node::Object(_)) => Err(format!(
                "{name}: a {} value where an object is mapped (object mapping for [{name}] tried to parse a concrete value)",
                kind(scalar)
            )),
            Some(Node::Leaf(ty)) if accepts(ty, scalar) => Ok(()),
            Some(Node::Leaf(ty)) => Err(format!("{name}: mapped {ty}, the line has {scalar}")),
            None => {
                let ty = match scalar {
                    Value::String(s) if looks_like_date(s) => "date",
                    Value::String(_) => "keyword",
                    Value::Bool(_) => "boolean",
                    Value::Number(n) if n.is_f64() => "float",
                    _ => "long",
                };
                node.insert(head.clone(), Node::Leaf(ty.to_owned()));
                Ok(())
            }
        },
    }
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn template() -> Value {
    let path = root().join("elasticsearch/meshwatch-ecs@mappings.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn object(line: &str) -> Map<String, Value> {
    match serde_json::from_str(line).unwrap() {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn the_checker_catches_what_elasticsearch_rejects() {
    let cases = [
        (
            r#"{"error":"boom"}"#,
            "error: a string value where an object is mapped",
        ),
        (r#"{"@timestamp":"yesterday"}"#, "@timestamp: mapped date"),
        (r#"{"event.duration":"5ms"}"#, "event.duration: mapped long"),
        (r#"{"event.duration":1.5}"#, "event.duration: mapped long"),
        (r#"{"trace.id.x":"a"}"#, "trace.id is a keyword field"),
        (
            r#"{"error":{"message":{"x":1}}}"#,
            "error.message: an object where a text field is mapped",
        ),
        (r#"{"topic":"t"}"#, "topic: not under a namespace"),
        (r#"{"meshwatch.x":[1,"a"]}"#, "an array of mixed kinds"),
    ];
    for (line, want) in cases {
        let mut index = Index::from_template(&template());
        let problems = index.index(&object(line));
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{line}: expected {want:?}, got {problems:?}"
        );
    }
    // Dynamic fields: the first line decides, later lines must agree.
    let mut index = Index::from_template(&template());
    assert!(index
        .index(&object(r#"{"meshwatch.kafka":"k:9092"}"#))
        .is_empty());
    let later = index.index(&object(r#"{"meshwatch.kafka.topic":"t"}"#));
    assert!(
        later
            .iter()
            .any(|p| p.contains("meshwatch.kafka is a keyword field")),
        "{later:?}"
    );
    assert!(index.index(&object(r#"{"meshwatch.n":5}"#)).is_empty());
    let later = index.index(&object(r#"{"meshwatch.n":"five"}"#));
    assert!(later.iter().any(|p| p.contains("mapped long")), "{later:?}");
    assert!(index
        .index(&object(r#"{"meshwatch.when":"2026-11-25T06:30:00Z"}"#))
        .is_empty());
    let later = index.index(&object(r#"{"meshwatch.when":"soon"}"#));
    assert!(later.iter().any(|p| p.contains("mapped date")), "{later:?}");
    // What the mesh writes is fine.
    let mut index = Index::from_template(&template());
    let ok = r#"{"@timestamp":"2026-11-25T06:30:00.123Z","log.level":"error","message":"m","error.message":"e","error.type":"t","event.duration":5,"meshwatch.kafka.topic":"t","alert.observed":1,"tags":["a","b"]}"#;
    assert_eq!(index.index(&object(ok)), Vec::<String>::new());
}

#[test]
fn captured_records_fluentd_indexes_fit_the_template() {
    // One index per family, as Fluentd writes them (logs, heartbeats, alerts):
    // Elasticsearch's rules only (the captured lines predate the namespace rule).
    for family in ["logs", "heartbeats", "alerts"] {
        let text =
            std::fs::read_to_string(root().join(format!("tests/data/captured-{family}.jsonl")))
                .unwrap();
        let mut index = Index::from_template(&template());
        index.namespaces.clear();
        let mut problems = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            for p in index.index(&object(line)) {
                if !p.contains("not under a namespace") {
                    problems.push(format!("{family}: {p}"));
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

// ------------------------------------------------------------ the binaries

/// One run of one binary: its output lines (stdout and stderr), its exit code.
struct Run {
    what: String,
    lines: Vec<String>,
    code: Option<i32>,
}

/// A started binary whose output is being collected.
struct Running {
    what: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// The services' --data-dir (MESHWATCH_DATA_DIR), removed afterwards.
    _data: tempfile::TempDir,
}

fn bin(name: &str) -> PathBuf {
    let path = testkit::bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins, or run scripts/test)",
        path.display()
    );
    path
}

fn collect(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    })
}

fn start(what: &str, program: &Path, args: &[&str]) -> Running {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(program)
        .args(args)
        .env_remove("MESHWATCH_KAFKA")
        .env("MESHWATCH_DATA_DIR", data.path())
        .env(
            "MESHWATCH_LOG",
            "info,meshwatch_monitor=debug,meshwatch_runtime=debug,meshwatch_services=debug",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let readers = vec![
        collect(child.stdout.take().unwrap(), Arc::clone(&lines)),
        collect(child.stderr.take().unwrap(), Arc::clone(&lines)),
    ];
    Running {
        what: what.to_owned(),
        child,
        lines,
        readers,
        _data: data,
    }
}

impl Running {
    /// SIGTERM after `after` (unless it ended before), then waits for the end.
    fn stop_after(mut self, after: Duration) -> Run {
        let deadline = Instant::now() + after;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.child.try_wait().unwrap().is_none() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                break self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for r in self.readers {
            let _ = r.join();
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        Run {
            what: self.what,
            lines,
            code: status.and_then(|s| s.code()),
        }
    }

    fn wait_for_line(&self, needle: &str, within: Duration) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{}: no line with {needle:?} within {within:?}:\n{}",
            self.what,
            self.lines.lock().unwrap().join("\n")
        );
    }
}

/// An address nothing listens on.
fn dead() -> String {
    format!("127.0.0.1:{}", testkit::free_port())
}

async fn place_order(order: &str) -> tonic::Code {
    let mut client =
        order_pb::order_service_client::OrderServiceClient::connect(format!("http://{order}"))
            .await
            .unwrap();
    let mut request = tonic::Request::new(order_pb::PlaceOrderRequest {
        idempotency_key: format!("ecs-{}", testkit::free_port()),
        customer_id: "c-ecs".into(),
        items: vec![order_pb::LineItem {
            sku: "sku-espresso".into(),
            quantity: 1,
        }],
        currency_code: "USD".into(),
        payment_token: String::new(),
    });
    request.set_timeout(Duration::from_secs(10));
    match client.place_order(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// Heartbeat records no emitter writes, and services beyond a small limit.
async fn hostile_heartbeats(broker: &str, topic: &str) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = meshwatch_kafka::base_config(broker)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let now = meshwatch_ecs::format_timestamp(std::time::SystemTime::now());
    let mut records = vec![
        "not json".to_owned(),
        r#"{"event.dataset":"meshwatch.heartbeat","heartbeat.sequence":-1}"#.to_owned(),
        format!(
            r#"{{"@timestamp":"2500-01-01T00:00:00Z","event.dataset":"meshwatch.heartbeat","service.name":"order","service.instance.id":"o-1","heartbeat.status":"up","heartbeat.sequence":1,"heartbeat.interval_ms":1000}}"#
        ),
    ];
    for i in 0..4 {
        records.push(format!(
            r#"{{"@timestamp":"{now}","event.dataset":"meshwatch.heartbeat","service.name":"svc{i}","service.instance.id":"svc{i}-1","heartbeat.status":"up","heartbeat.sequence":1,"heartbeat.interval_ms":200}}"#
        ));
    }
    for r in &records {
        producer
            .send(
                FutureRecord::<(), str>::to(topic).payload(r),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// Runs every binary through its error paths, in parallel; returns every run.
async fn run_all() -> Vec<Run> {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    let mut running = Vec::new();
    let grace = Duration::from_secs(9);

    // monitor: Kafka unreachable (reporter, consumers), then SIGTERM.
    let monitor = bin("monitor");
    let listen = dead();
    running.push((
        start(
            "monitor, kafka unreachable",
            &monitor,
            &["--listen", &listen, "--kafka", &dead()],
        ),
        grace,
    ));
    // monitor: a client option librdkafka refuses at run time (exit 1).
    running.push((
        start(
            "monitor, bad --kafka-option",
            &monitor,
            &[
                "--listen",
                &dead(),
                "--kafka",
                &dead(),
                "--kafka-option",
                "fetch.wait.max.ms=soon",
            ],
        ),
        grace,
    ));
    // monitor: its address in use (exit 69).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    running.push((
        start(
            "monitor, address in use",
            &monitor,
            &["--listen", &taken_addr, "--kafka", &dead()],
        ),
        grace,
    ));
    // monitor on the real broker: missing topics, hostile heartbeats past
    // --max-services, services forgotten quickly (alerts of every kind).
    let broker = testkit::kafka().await;
    let heartbeats = testkit::unique_topic("ecs-heartbeats");
    let logs = testkit::unique_topic("ecs-logs");
    testkit::create_topic(&broker, &heartbeats, 1).await;
    let live = start(
        "monitor, hostile heartbeats and a missing topic",
        &monitor,
        &[
            "--listen",
            &dead(),
            "--kafka",
            &broker,
            "--heartbeats-topic",
            &heartbeats,
            "--logs-topic",
            &logs,
            "--alerts-topic",
            &testkit::unique_topic("ecs-missing-alerts"),
            "--max-services",
            "2",
            "--forget-after",
            "2s",
            "--topic-check-every",
            "2s",
        ],
    );
    live.wait_for_line("consuming", Duration::from_secs(30));
    hostile_heartbeats(&broker, &heartbeats).await;
    running.push((live, Duration::from_secs(13)));

    // order: both downstreams unreachable; then inventory up and payment not.
    let order = bin("order");
    let o1 = dead();
    let first = start(
        "order, downstreams unreachable",
        &order,
        &[
            "--listen",
            &o1,
            "--inventory-addr",
            &format!("http://{}", dead()),
            "--payment-addr",
            &format!("http://{}", dead()),
            "--call-timeout",
            "1s",
        ],
    );
    first.wait_for_line("serving", Duration::from_secs(30));
    let code = place_order(&o1).await;
    assert_ne!(code, tonic::Code::Ok);
    running.push((first, Duration::ZERO));

    let inventory = bin("inventory");
    let inv = dead();
    let inv_run = start("inventory, then SIGTERM", &inventory, &["--listen", &inv]);
    inv_run.wait_for_line("serving", Duration::from_secs(30));
    let o2 = dead();
    let second = start(
        "order, payment unreachable",
        &order,
        &[
            "--listen",
            &o2,
            "--inventory-addr",
            &format!("http://{inv}"),
            "--payment-addr",
            &format!("http://{}", dead()),
            "--call-timeout",
            "1s",
        ],
    );
    second.wait_for_line("serving", Duration::from_secs(30));
    let code = place_order(&o2).await;
    assert_ne!(code, tonic::Code::Ok);
    running.push((second, Duration::ZERO));
    running.push((inv_run, Duration::ZERO));
    running.push((
        start(
            "inventory, missing catalog",
            &inventory,
            &[
                "--listen",
                &dead(),
                "--catalog",
                "/nonexistent/catalog.json",
            ],
        ),
        grace,
    ));

    // payment: address in use; and failing every RPC.
    let payment = bin("payment");
    running.push((
        start(
            "payment, address in use",
            &payment,
            &["--listen", &taken_addr],
        ),
        grace,
    ));

    // shipper wrapping payment with Kafka unreachable; and wrapping a program
    // that writes lines of every shape.
    let shipper = bin("shipper");
    let data = tmp.path().join("shipper");
    let pay = dead();
    running.push((
        start(
            "shipper wrapping payment, kafka unreachable",
            &shipper,
            &[
                "--kafka",
                &dead(),
                "--data-dir",
                data.to_str().unwrap(),
                "--service-name",
                "payment",
                "--",
                payment.to_str().unwrap(),
                "--listen",
                &pay,
            ],
        ),
        grace,
    ));
    let data2 = tmp.path().join("shipper2");
    running.push((
        start(
            "shipper wrapping a program writing odd lines",
            &shipper,
            &[
                "--kafka", &dead(), "--data-dir", data2.to_str().unwrap(), "--service-name", "odd", "--",
                "sh", "-c", r#"printf 'not json\n{"service.name":"someone-else","event.dataset":"meshwatch.heartbeat"}\n'; sleep 30"#,
            ],
        ),
        grace,
    ));

    // meshctl: everything unreachable; bad values at run time.
    let meshctl = bin("meshctl");
    for args in [
        vec!["health", "--monitor", &listen],
        vec![
            "load",
            "--order",
            &o1,
            "--duration",
            "1s",
            "--rate",
            "1e308",
        ],
        vec!["topics", "create", "--kafka", "127.0.0.1:1"],
        vec![
            "trace",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "--kafka",
            "127.0.0.1:1",
        ],
    ] {
        running.push((
            start(&format!("meshctl {}", args[0]), &meshctl, &args),
            grace,
        ));
    }

    let handles: Vec<_> = running
        .into_iter()
        .map(|(r, after)| std::thread::spawn(move || r.stop_after(after)))
        .collect();
    for h in handles {
        runs.push(h.join().unwrap());
    }
    drop(taken);
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_every_binary_writes_fits_the_template() {
    let runs = run_all().await;
    let mut index = Index::from_template(&template());
    let mut problems = Vec::new();
    let mut per_binary: BTreeMap<String, usize> = BTreeMap::new();
    for run in &runs {
        let bin = run
            .what
            .split([' ', ','])
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_ne!(
            run.code,
            Some(101),
            "{} panicked:\n{}",
            run.what,
            run.lines.join("\n")
        );
        assert!(
            !run.lines.iter().any(|l| l.contains("panicked at")),
            "{} panicked:\n{}",
            run.what,
            run.lines.join("\n")
        );
        for line in run.lines.iter().filter(|l| l.starts_with('{')) {
            let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            // A log line (ECS), not a JSON report on stdout (meshctl --json).
            if !obj.contains_key("@timestamp") {
                continue;
            }
            *per_binary.entry(bin.clone()).or_default() += 1;
            for p in index.index(&obj) {
                problems.push(format!("{}: {p}\n    in {line}", run.what));
            }
        }
    }
    eprintln!("ECS lines checked per binary: {per_binary:?}");
    for run in &runs {
        eprintln!(
            "{}: exit {:?}, {} lines",
            run.what,
            run.code,
            run.lines.len()
        );
        // ECS_LINES_SHOW=1 prints every line, to review their wording.
        if std::env::var_os("ECS_LINES_SHOW").is_some() {
            for l in &run.lines {
                eprintln!("    {l}");
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Each error path ran and wrote what it should have.
    let code = |what: &str| runs.iter().find(|r| r.what == what).and_then(|r| r.code);
    assert_eq!(code("monitor, bad --kafka-option"), Some(1));
    assert_eq!(code("monitor, address in use"), Some(69));
    assert_eq!(code("payment, address in use"), Some(69));
    let all: Vec<&String> = runs.iter().flat_map(|r| &r.lines).collect();
    for expected in [
        "kafka unreachable",
        "kafka topics missing",
        "records of the heartbeats topic refused",
        "\"alert.kind\":\"capacity\"",
        "\"alert.kind\":\"status_change\"",
        "reservation failed",
        "charge failed",
        "cannot listen",
        "stopped with an error",
        "shutdown requested",
    ] {
        assert!(
            all.iter().any(|l| l.contains(expected)),
            "no line says {expected:?}"
        );
    }
    for bin in ["order", "inventory", "payment", "shipper", "monitor"] {
        assert!(
            per_binary.get(bin).copied().unwrap_or(0) > 0,
            "{bin} wrote no ECS line: {per_binary:?}"
        );
    }
}

//! `meshctl setup` and `meshctl trace --es` against an Elasticsearch-API
//! server. No real Elasticsearch runs here: noida-db (installed by
//! scripts/install) speaks the ES 8 REST API (templates, bulk, search); it is
//! a stand-in, so these tests check what we send and read, not Elasticsearch's
//! own behaviour. Kibana cannot run here either: its import is tested against
//! a small HTTP stub that records the request and asserts its shape; so is
//! `meshctl setup users`, as noida-db has no security API.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elasticsearch::http::transport::Transport;
use elasticsearch::http::Method;
use elasticsearch::indices::IndicesGetIndexTemplateParts;
use elasticsearch::{BulkParts, Elasticsearch, SearchParts};
use meshwatch_meshctl::elastic;
use meshwatch_testkit as testkit;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A private noida-db serving only the Elasticsearch API; stopped on drop.
struct EsStandIn {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl EsStandIn {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = testkit::free_port();
        let child = Command::new("noida-db")
            .args(["start", "--only", "elasticsearch", "--host", "127.0.0.1"])
            .args(["--elasticsearch-port", &port.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: the wrapper runs the server as a child.
            .process_group(0)
            .spawn()
            .expect("starting noida-db (scripts/install installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let server = Self {
            child,
            url,
            _dir: dir,
        };
        let client = server.client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let up = client
                .send(
                    Method::Get,
                    "/",
                    Default::default(),
                    None::<&()>,
                    None::<()>,
                    None,
                )
                .await
                .is_ok_and(|r| r.status_code().is_success());
            if up {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "noida-db did not answer on {} within 20s",
                server.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn client(&self) -> Elasticsearch {
        Elasticsearch::new(Transport::single_node(&self.url).unwrap())
    }
}

impl Drop for EsStandIn {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env("MESHWATCH_COLOR", "never")
        .env_remove("MESHWATCH_ES")
        .env_remove("MESHWATCH_ES_USER")
        .env_remove("MESHWATCH_ES_PASSWORD")
        .env_remove("MESHWATCH_FLUENTD_ES_PASSWORD")
        .env_remove("MESHWATCH_SETUP_ES_PASSWORD")
        .env_remove("MESHWATCH_KIBANA_SYSTEM_PASSWORD")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn captured_logs() -> Vec<Map<String, Value>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/captured-logs.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The trace id with the most lines in the captured logs (a PlaceOrder across
/// order, inventory and payment).
fn busiest_trace(lines: &[Map<String, Value>]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for l in lines {
        if let Some(t) = l.get("trace.id").and_then(Value::as_str) {
            *counts.entry(t).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .unwrap()
        .0
        .to_owned()
}

/// Bulk-indexes the lines as Fluentd would: `create` into the data stream,
/// with ids derived from the line. Returns the bulk response.
async fn bulk_index(es: &Elasticsearch, lines: &[Map<String, Value>]) -> Value {
    let mut body: Vec<elasticsearch::http::request::JsonBody<Value>> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        body.push(json!({"create": {"_index": elastic::LOGS_DATA_STREAM, "_id": format!("captured-{i}")}}).into());
        body.push(Value::Object(line.clone()).into());
    }
    es.bulk(BulkParts::None)
        .refresh(elasticsearch::params::Refresh::True)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_installs_templates_then_trace_finds_indexed_lines_in_order() {
    let server = EsStandIn::start().await;
    let out = meshctl(&[
        "setup",
        "--es",
        &server.url,
        "--skip-kibana",
        "--wait",
        "10s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for (name, _) in elastic::COMPONENT_TEMPLATES {
        assert!(
            stdout.contains(&format!("installed: component template {name}")),
            "{stdout}"
        );
    }
    let es = server.client();
    for (name, file) in elastic::INDEX_TEMPLATES {
        assert!(
            stdout.contains(&format!("installed: index template {name}")),
            "{stdout}"
        );
        let got: Value = es
            .indices()
            .get_index_template(IndicesGetIndexTemplateParts::Name(name))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let want: Value = serde_json::from_str(file).unwrap();
        assert_eq!(
            got["index_templates"][0]["index_template"]["index_patterns"], want["index_patterns"],
            "{got}"
        );
    }
    // Idempotent: a second run replaces, it does not fail.
    let again = meshctl(&[
        "setup",
        "--es",
        &server.url,
        "--skip-kibana",
        "--wait",
        "10s",
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));

    let lines = captured_logs();
    let response = bulk_index(&es, &lines).await;
    assert_eq!(response["errors"], false, "{response}");
    // The template's ECS mapping applied to the data stream Fluentd writes.
    let mapping: Value = es
        .indices()
        .get_mapping(elasticsearch::indices::IndicesGetMappingParts::Index(&[
            elastic::LOGS_DATA_STREAM,
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let props = &mapping[elastic::LOGS_DATA_STREAM]["mappings"]["properties"];
    assert_eq!(
        props["trace"]["properties"]["id"]["type"], "keyword",
        "{mapping}"
    );
    assert_eq!(
        props["event"]["properties"]["duration"]["type"], "long",
        "{mapping}"
    );

    // A redelivery (same ids, op create) adds nothing.
    let redelivered = bulk_index(&es, &lines).await;
    let conflicts = redelivered["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["create"]["status"] == 409)
        .count();
    assert_eq!(conflicts, lines.len(), "{redelivered}");
    let count: Value = es
        .search(SearchParts::Index(&[elastic::LOGS_INDEX_PATTERN]))
        .body(json!({"size": 0, "track_total_hits": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["hits"]["total"]["value"], lines.len(), "{count}");

    // meshctl trace --es: exactly that trace's lines, in time order.
    let trace = busiest_trace(&lines);
    let mut expected: Vec<&Map<String, Value>> = lines
        .iter()
        .filter(|l| l.get("trace.id").and_then(Value::as_str) == Some(trace.as_str()))
        .collect();
    expected.sort_by_key(|l| {
        meshwatch_ecs::parse_timestamp(l["@timestamp"].as_str().unwrap()).unwrap()
    });
    let out = meshctl(&["trace", &trace, "--es", &server.url, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Vec<Map<String, Value>> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected.into_iter().cloned().collect::<Vec<_>>());
    let services: std::collections::BTreeSet<&str> = got
        .iter()
        .map(|l| l["service.name"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        ["inventory", "order", "payment"].into(),
        "{got:?}"
    );

    // The human timeline is the same renderer as the Kafka path's.
    let out = meshctl(&["trace", &trace, "--es", &server.url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let parsed: Vec<_> = got
        .into_iter()
        .map(|l| meshwatch_meshctl::parse_trace_line(l).unwrap())
        .collect();
    let timeline = meshwatch_meshctl::render_timeline(&parsed, meshwatch_meshctl::Style::plain());
    assert!(
        text(&out.stdout).starts_with(&timeline),
        "{}",
        text(&out.stdout)
    );

    // An id nobody wrote: a clear error, not an empty success.
    let out = meshctl(&[
        "trace",
        "0123456789abcdef0123456789abcdef",
        "--es",
        &server.url,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no log line with trace.id"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_from_elasticsearch_prints_what_trace_from_kafka_prints() {
    let server = EsStandIn::start().await;
    let out = meshctl(&[
        "setup",
        "--es",
        &server.url,
        "--skip-kibana",
        "--wait",
        "10s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = captured_logs();
    let response = bulk_index(&server.client(), &lines).await;
    assert_eq!(response["errors"], false, "{response}");

    let bootstrap = testkit::kafka().await;
    let topic = testkit::unique_topic("es-trace");
    testkit::create_topic(&bootstrap, &topic, 3).await;
    let payloads: Vec<String> = lines
        .iter()
        .map(|l| Value::Object(l.clone()).to_string())
        .collect();
    let records: Vec<(Option<&str>, &str)> = lines
        .iter()
        .zip(&payloads)
        .map(|(l, p)| {
            (
                l.get("service.instance.id").and_then(Value::as_str),
                p.as_str(),
            )
        })
        .collect();
    testkit::produce(&bootstrap, &topic, &records).await;

    let trace = busiest_trace(&lines);
    for json in [false, true] {
        let mut from_kafka = vec![
            "trace",
            trace.as_str(),
            "--kafka",
            &bootstrap,
            "--logs-topic",
            &topic,
        ];
        let mut from_es = vec!["trace", trace.as_str(), "--es", &server.url];
        if json {
            from_kafka.push("--json");
            from_es.push("--json");
        }
        let kafka_out = meshctl(&from_kafka);
        let es_out = meshctl(&from_es);
        assert!(kafka_out.status.success(), "{}", text(&kafka_out.stderr));
        assert!(es_out.status.success(), "{}", text(&es_out.stderr));
        assert_eq!(text(&es_out.stdout), text(&kafka_out.stdout), "json={json}");
    }
}

/// One HTTP request as the stub saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP server that answers every request with `answer(method,
/// target)` (status, JSON body) and records what it saw.
async fn http_stub(
    answer: impl Fn(&str, &str) -> (u16, Value) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let head_end = loop {
                    let mut chunk = [0u8; 4096];
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at;
                    }
                };
                let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
                let mut lines = head.split("\r\n");
                let mut request_line = lines.next().unwrap().split(' ');
                let method = request_line.next().unwrap().to_owned();
                let target = request_line.next().unwrap().to_owned();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = buf[head_end + 4..].to_vec();
                while body.len() < length {
                    let mut chunk = vec![0u8; length - body.len()];
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "client closed mid-body");
                    body.extend_from_slice(&chunk[..n]);
                }
                let (status, payload) = answer(&method, &target);
                record.lock().unwrap().push(Seen {
                    method,
                    target,
                    headers,
                    body,
                });
                let payload = payload.to_string();
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
                    payload.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
                socket.shutdown().await.ok();
            });
        }
    });
    (url, seen)
}

/// A Kibana stand-in: answers `GET /api/status` as available and the import
/// with `import_answer`; records every request.
async fn kibana_stub(import_answer: Value) -> (String, Arc<Mutex<Vec<Seen>>>) {
    http_stub(move |_, target| {
        if target.starts_with("/api/status") {
            (200, json!({"status": {"overall": {"level": "available"}}}))
        } else {
            (200, import_answer.clone())
        }
    })
    .await
}

/// An Elasticsearch stand-in for the security API (noida-db has none): a
/// yellow cluster, and every role, user and password request accepted.
async fn security_stub() -> (String, Arc<Mutex<Vec<Seen>>>) {
    http_stub(|_, target| {
        if target.starts_with("/_cluster/health") {
            (200, json!({"status": "yellow"}))
        } else if target.starts_with("/_security/role/") {
            (200, json!({"role": {"created": true}}))
        } else if target.ends_with("/_password") {
            (200, json!({}))
        } else if target.starts_with("/_security/user/") {
            (200, json!({"created": true}))
        } else {
            (404, json!({"error": "not in the stub"}))
        }
    })
    .await
}

/// Passwords with every character a shell or a hand-made JSON body trips on.
const FLUENTD_PW: &str = "fl\"u\\e$n{t}d p*w'`$(x)#%ü";
const SETUP_PW: &str = "se\"t\\u$p p*w'`${HOME}'\"";
const KIBANA_PW: &str = "ki b$a*n\"a'\\ system pw";

fn setup_users(es: &str, extra: &[&str], passwords: [&str; 3]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["setup", "users", "--es", es, "--wait", "10s"])
        .args(["--user", "elastic", "--password", "superuser-password-0123"])
        .args(extra)
        .env("MESHWATCH_COLOR", "never")
        .env_remove("MESHWATCH_ES")
        .env_remove("MESHWATCH_ES_USER")
        .env_remove("MESHWATCH_ES_PASSWORD")
        .env("MESHWATCH_FLUENTD_ES_PASSWORD", passwords[0])
        .env("MESHWATCH_SETUP_ES_PASSWORD", passwords[1])
        .env("MESHWATCH_KIBANA_SYSTEM_PASSWORD", passwords[2])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_users_makes_least_privilege_users_with_passwords_of_any_character() {
    let (es, seen) = security_stub().await;
    let out = setup_users(&es, &[], [FLUENTD_PW, SETUP_PW, KIBANA_PW]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = seen.lock().unwrap().clone();
    let writes: Vec<(String, String, Value)> = seen
        .iter()
        .filter(|s| s.method != "GET")
        .map(|s| {
            (
                s.method.clone(),
                s.target.clone(),
                serde_json::from_slice(&s.body).unwrap(),
            )
        })
        .collect();
    let targets: Vec<(&str, &str)> = writes
        .iter()
        .map(|(m, t, _)| (m.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            ("PUT", "/_security/role/meshwatch_writer"),
            ("PUT", "/_security/role/meshwatch_setup"),
            ("PUT", "/_security/user/meshwatch_fluentd"),
            ("PUT", "/_security/user/meshwatch_setup"),
            ("POST", "/_security/user/kibana_system/_password"),
        ]
    );
    assert_eq!(writes[0].2, elastic::users::writer_role());
    assert_eq!(writes[1].2, elastic::users::setup_role());
    // The passwords arrive byte for byte, whatever their characters.
    assert_eq!(writes[2].2["password"], FLUENTD_PW);
    assert_eq!(writes[2].2["roles"], json!(["meshwatch_writer"]));
    assert_eq!(writes[3].2["password"], SETUP_PW);
    assert_eq!(writes[3].2["roles"], json!(["meshwatch_setup"]));
    assert_eq!(writes[4].2, json!({"password": KIBANA_PW}));
    // Every request as the superuser: elastic:superuser-password-0123.
    for s in &seen {
        assert_eq!(
            s.header("authorization"),
            Some("Basic ZWxhc3RpYzpzdXBlcnVzZXItcGFzc3dvcmQtMDEyMw=="),
            "{} {}",
            s.method,
            s.target
        );
    }
    // The passwords are never printed.
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for pw in [FLUENTD_PW, SETUP_PW, KIBANA_PW, "superuser-password-0123"] {
        assert!(!printed.contains(pw), "{printed}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_users_refuses_example_or_short_passwords_before_sending_anything() {
    let (es, seen) = security_stub().await;
    for (bad, flag) in [
        (
            [FLUENTD_PW, SETUP_PW, "change-me-kibana"],
            "--kibana-system-password",
        ),
        (["short", SETUP_PW, KIBANA_PW], "--fluentd-password"),
        ([FLUENTD_PW, "", KIBANA_PW], "--setup-password"),
    ] {
        let out = setup_users(&es, &[], bad);
        assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(flag), "{}", text(&out.stderr));
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing is sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_users_dry_run_waits_for_elasticsearch_and_changes_nothing() {
    let (es, seen) = security_stub().await;
    let out = setup_users(&es, &["--dry-run"], [FLUENTD_PW, SETUP_PW, KIBANA_PW]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("would put user: meshwatch_fluentd"),
        "{stdout}"
    );
    assert!(!stdout.contains(FLUENTD_PW), "{stdout}");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|s| s.method == "GET"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_imports_the_saved_objects_into_kibana() {
    let server = EsStandIn::start().await;
    let objects = elastic::SAVED_OBJECTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let (kibana, seen) = kibana_stub(json!({"success": true, "successCount": objects})).await;
    let out = meshctl(&[
        "setup",
        "--es",
        &server.url,
        "--kibana",
        &kibana,
        "--user",
        "elastic",
        "--password",
        "pw",
        "--wait",
        "10s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("imported: {objects} saved objects into Kibana")),
        "{}",
        text(&out.stdout)
    );

    let seen = seen.lock().unwrap().clone();
    let imports: Vec<&Seen> = seen.iter().filter(|s| s.method == "POST").collect();
    assert_eq!(imports.len(), 1, "{seen:?}");
    let import = imports[0];
    assert_eq!(import.target, "/api/saved_objects/_import?overwrite=true");
    assert!(
        import.header("kbn-xsrf").is_some(),
        "Kibana refuses a POST without kbn-xsrf"
    );
    assert_eq!(
        import.header("authorization"),
        Some("Basic ZWxhc3RpYzpwdw==")
    );
    let content_type = import.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {content_type}"));
    // Exactly one part, the `file` field, holding the ndjson unchanged.
    let body = String::from_utf8(import.body.clone()).unwrap();
    let delimiter = format!("--{boundary}");
    assert!(body.starts_with(&format!("{delimiter}\r\n")), "{body}");
    assert!(body.ends_with(&format!("\r\n{delimiter}--\r\n")), "{body}");
    let parts: Vec<&str> = body.split(&delimiter).collect();
    assert_eq!(parts.len(), 3, "one part between the delimiters");
    let (part_head, part_body) = parts[1].split_once("\r\n\r\n").unwrap();
    assert!(part_head
        .contains("Content-Disposition: form-data; name=\"file\"; filename=\"meshwatch.ndjson\""));
    assert_eq!(
        part_body.strip_suffix("\r\n").unwrap(),
        elastic::SAVED_OBJECTS
    );
    // Elasticsearch got the same credentials (templates before Kibana).
    assert!(seen.iter().any(|s| s.target.starts_with("/api/status")
        && s.header("authorization") == Some("Basic ZWxhc3RpYzpwdw==")));
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_fails_when_kibana_rejects_objects() {
    let server = EsStandIn::start().await;
    let (kibana, _) = kibana_stub(json!({
        "success": false,
        "successCount": 0,
        "errors": [{"id": "meshwatch-overview", "type": "dashboard", "error": {"type": "missing_references"}}],
    }))
    .await;
    let out = meshctl(&[
        "setup",
        "--es",
        &server.url,
        "--kibana",
        &kibana,
        "--wait",
        "10s",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("Kibana rejected 1 of the saved objects"),
        "{err}"
    );
    assert!(err.contains("missing_references"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_gives_up_on_an_unreachable_elasticsearch_within_its_bound() {
    let port = testkit::free_port();
    let started = std::time::Instant::now();
    let out = meshctl(&[
        "setup",
        "--es",
        &format!("http://127.0.0.1:{port}"),
        "--skip-kibana",
        "--wait",
        "4s",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    // Tries at 0 s, 2 s and 4 s: the whole --wait, then gives up.
    assert!(err.contains("was not ready after 3 attempts"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A URL flag that does not parse is a usage error naming the flag (exit 64),
/// like every other bad flag, and a --wait too long for the clock is not a panic.
#[test]
fn bad_urls_are_usage_errors_naming_the_flag() {
    let id = "0123456789abcdef0123456789abcdef";
    for (args, flag) in [
        (vec!["setup", "--es", "not a url", "--skip-kibana"], "--es"),
        (
            vec!["setup", "--es", "ftp://x:9200", "--skip-kibana"],
            "--es",
        ),
        (
            vec![
                "setup",
                "--es",
                "http://127.0.0.1:9",
                "--kibana",
                "kibana:5601",
            ],
            "--kibana",
        ),
        (vec!["trace", id, "--es", "elasticsearch:9200"], "--es"),
    ] {
        let out = meshctl(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(&format!("invalid {flag}:")), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }

    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    // Too long for the clock: refused by the one duration parser, naming the flag.
    let out = meshctl(&["trace", id, "--es", &url, "--wait", "4000000000000000h"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--wait"), "{err}");
    let out = meshctl(&["trace", id, "--es", &url, "--wait", "1s"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach Elasticsearch"), "{err}");
}

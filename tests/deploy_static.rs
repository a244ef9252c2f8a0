//! The deployment files, checked where no Docker engine, Fluentd or Kibana
//! runs: docker-compose.yml validates, the Dockerfile builds every binary the
//! compose file runs, the index templates and Kibana saved objects name only
//! fields the mesh really writes (captured lines in tests/data, made by
//! tests/data/capture.sh from the real binaries), every index Fluentd
//! writes has a template, Fluentd decodes every codec the shippers and the
//! topics may use and indexes by event.id, and no secret is usable from the
//! repository.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use meshwatch_meshctl::elastic;
use serde_json::{Map, Value};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn json_file(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

/// Index families and the topic each is fed from.
const FAMILIES: [(&str, &str); 3] = [
    ("logs", meshwatch_kafka::LOGS_TOPIC),
    ("heartbeats", meshwatch_kafka::HEARTBEATS_TOPIC),
    ("alerts", meshwatch_kafka::ALERTS_TOPIC),
];

/// The captured records of one family, as the shippers and the monitor
/// produced them to Kafka.
fn captured(family: &str) -> Vec<Map<String, Value>> {
    let rel = format!("tests/data/captured-{family}.jsonl");
    let lines: Vec<_> = read(&rel)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(o)) => o,
            other => panic!("{rel}: not a JSON object: {other:?}"),
        })
        .collect();
    assert!(
        !lines.is_empty(),
        "{rel} is empty; run tests/data/capture.sh"
    );
    lines
}

fn fields_of(lines: &[Map<String, Value>]) -> BTreeSet<String> {
    lines.iter().flat_map(|l| l.keys().cloned()).collect()
}

/// An .env as a user gets it from scripts/secrets (made once per test run).
fn generated_env() -> &'static Path {
    static ENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("meshwatch-deploy-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = dir.join(".env");
        let _ = std::fs::remove_file(&env);
        let out = Command::new(root().join("scripts/secrets"))
            .arg(&env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    })
}

fn docker_compose_with(env_file: &Path, args: &[&str]) -> std::process::Output {
    Command::new("docker-compose")
        .current_dir(root())
        .arg("--env-file")
        .arg(env_file)
        .args(["-f", "docker-compose.yml"])
        .args(args)
        .env_remove("COMPOSE_PROFILES")
        .output()
        .unwrap_or_else(|e| panic!("running docker-compose (scripts/install installs it): {e}"))
}

fn docker_compose(args: &[&str]) -> std::process::Output {
    docker_compose_with(generated_env(), args)
}

/// `docker-compose config`, normalised, as JSON (through PyYAML, which
/// docker-compose itself depends on).
fn compose_config() -> Value {
    let out = docker_compose(&["config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut py.stdin.take().unwrap(), &out.stdout).unwrap();
    let converted = py.wait_with_output().unwrap();
    assert!(converted.status.success());
    serde_json::from_slice(&converted.stdout).unwrap()
}

#[test]
fn compose_file_is_valid() {
    let out = docker_compose(&["config", "-q"]);
    assert!(
        out.status.success(),
        "docker-compose config -q failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_starts_in_order_with_health_checks() {
    let config = compose_config();
    let services = config["services"].as_object().unwrap();
    let one_shot = ["kafka-topics", "es-users", "setup"];
    for (name, svc) in services {
        if one_shot.contains(&name.as_str()) {
            assert_eq!(svc["restart"], "no", "{name} is a one-shot job");
        } else {
            assert!(
                svc["healthcheck"]["test"].is_array() || svc["healthcheck"]["test"].is_string(),
                "{name} has no health check"
            );
        }
        // Only a user's entry points are published, and only on localhost.
        for port in svc["ports"].as_array().into_iter().flatten() {
            // docker-compose v1 normalises to "ip:host:container/proto", v2 to objects.
            let local = match port {
                Value::String(s) => s.starts_with("127.0.0.1:"),
                p => p["host_ip"] == "127.0.0.1",
            };
            assert!(local, "{name} publishes {port} beyond localhost");
        }
    }
    let published: BTreeSet<&str> = services
        .iter()
        .filter(|(_, s)| s["ports"].is_array())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        published,
        BTreeSet::from(["elasticsearch", "kafka", "kibana", "monitor", "order"])
    );
    let condition = |svc: &str, dep: &str| {
        services[svc]["depends_on"][dep]["condition"]
            .as_str()
            .unwrap_or_else(|| panic!("{svc} does not depend on {dep}"))
            .to_owned()
    };
    // Templates exist before Fluentd writes; topics before anyone produces.
    assert_eq!(
        condition("fluentd", "setup"),
        "service_completed_successfully"
    );
    assert_eq!(
        condition("fluentd", "kafka-topics"),
        "service_completed_successfully"
    );
    for svc in ["order", "inventory", "payment", "monitor"] {
        assert_eq!(
            condition(svc, "kafka-topics"),
            "service_completed_successfully"
        );
    }
    assert_eq!(condition("order", "inventory"), "service_healthy");
    assert_eq!(condition("order", "payment"), "service_healthy");
    assert_eq!(condition("es-users", "elasticsearch"), "service_healthy");
    // The templates job runs as the user es-users makes.
    assert_eq!(
        condition("setup", "es-users"),
        "service_completed_successfully"
    );
    // Ingestion is never gated on Kibana: the templates job waits only for
    // Elasticsearch; the Kibana import is its own job that nothing waits on.
    assert!(
        services["setup"]["depends_on"].get("kibana").is_none(),
        "setup must not wait for Kibana"
    );
    assert_eq!(condition("kibana-setup", "kibana"), "service_started");
    for (name, svc) in services {
        assert!(
            svc["depends_on"].get("kibana-setup").is_none(),
            "{name} waits for the Kibana import"
        );
    }
    assert_eq!(
        condition("kibana", "es-users"),
        "service_completed_successfully"
    );
    assert_eq!(condition("kafka-topics", "kafka"), "service_healthy");

    // Kibana and Elasticsearch share the major of the client meshctl uses.
    let lock = read("Cargo.lock");
    let crate_major = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"elasticsearch\""))
        .and_then(|p| p.split("version = \"").nth(1))
        .and_then(|v| v.split('.').next())
        .unwrap()
        .to_owned();
    for svc in ["elasticsearch", "kibana"] {
        let image = services[svc]["image"].as_str().unwrap();
        let tag = image.rsplit(':').next().unwrap();
        assert_eq!(tag.split('.').next().unwrap(), crate_major, "{image}");
        assert!(
            tag.split('.').count() == 3,
            "{image} is not pinned to a release"
        );
    }
}

#[test]
fn each_service_keeps_its_state_in_its_own_postgres_database() {
    let config = compose_config();
    let services = config["services"].as_object().unwrap();
    let pg = &services["postgres"];
    let image = pg["image"].as_str().unwrap();
    assert!(
        image.starts_with("postgres:15"),
        "{image}: the major the tests run"
    );
    assert_eq!(pg["environment"]["POSTGRES_USER"], "meshwatch");
    // The password comes from .env (as scripts/secrets writes it), not the file.
    let env = env_values(&std::fs::read_to_string(generated_env()).unwrap());
    assert_eq!(
        pg["environment"]["POSTGRES_PASSWORD"].as_str(),
        Some(env["POSTGRES_PASSWORD"].as_str())
    );
    let volumes: Vec<String> = pg["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_str()
                .map_or_else(|| v["target"].to_string(), |s| s.to_owned())
        })
        .collect();
    assert!(
        volumes
            .iter()
            .any(|v| v.contains("/var/lib/postgresql/data")),
        "{volumes:?}"
    );
    let init = read("postgres/init/01-databases.sql");
    for svc in ["order", "inventory", "payment"] {
        let s = &services[svc];
        assert_eq!(
            s["depends_on"]["postgres"]["condition"], "service_healthy",
            "{svc}"
        );
        let url = s["environment"]["MESHWATCH_DATABASE_URL"].as_str().unwrap();
        let database = format!("meshwatch_{svc}");
        assert_eq!(
            url,
            format!(
                "postgres://meshwatch:{}@postgres:5432/{database}",
                env["POSTGRES_PASSWORD"]
            )
        );
        assert!(
            init.contains(&format!("CREATE DATABASE {database} ")),
            "{init}"
        );
        // Fault injection only on the container's loopback.
        let admin = s["environment"]["MESHWATCH_ADMIN_LISTEN"].as_str().unwrap();
        assert!(admin.starts_with("127.0.0.1:"), "{svc}: {admin}");
    }
}

/// Binaries the compose file runs from the meshwatch image: each command's
/// program, the program a shipper wraps, and health-check programs.
fn binaries_compose_runs(config: &Value) -> BTreeSet<String> {
    let mut bins = BTreeSet::new();
    for (name, svc) in config["services"].as_object().unwrap() {
        if svc["image"] != "meshwatch:local" {
            continue;
        }
        let command: Vec<&str> = svc["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: command must be a list"))
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        bins.insert(command[0].to_owned());
        if command[0] == "shipper" {
            let wrapped = command
                .iter()
                .position(|a| *a == "--")
                .unwrap_or_else(|| panic!("{name}: shipper without a wrapped command"));
            bins.insert(command[wrapped + 1].to_owned());
        }
        if let Some(test) = svc["healthcheck"]["test"].as_array() {
            if test[0] == "CMD" {
                bins.insert(test[1].as_str().unwrap().to_owned());
            }
        }
    }
    bins
}

#[test]
fn dockerfile_builds_every_binary_the_compose_file_runs() {
    let dockerfile = read("Dockerfile").replace("\\\n", " ");
    let build = dockerfile
        .lines()
        .find(|l| l.trim_start().starts_with("RUN cargo build"))
        .expect("a RUN cargo build line");
    let words: Vec<&str> = build.split_whitespace().collect();
    let built: BTreeSet<String> = words
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_owned())
        .collect();
    let copied: BTreeSet<String> = dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("COPY --from=builder"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.strip_prefix("/src/target/release/"))
        .map(str::to_owned)
        .collect();
    let needed = binaries_compose_runs(&compose_config());
    assert_eq!(
        needed,
        BTreeSet::from(
            [
                "inventory",
                "meshctl",
                "monitor",
                "order",
                "payment",
                "shipper"
            ]
            .map(String::from)
        )
    );
    assert!(
        built.is_superset(&needed),
        "built {built:?}, compose runs {needed:?}"
    );
    assert!(
        copied.is_superset(&needed),
        "copied {copied:?}, compose runs {needed:?}"
    );

    // Every --bin is a binary target of the workspace.
    let metadata = Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(metadata.status.success());
    let metadata: Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let workspace_bins: BTreeSet<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        workspace_bins.is_superset(&built),
        "Dockerfile builds {built:?}; the workspace has {workspace_bins:?}"
    );
}

fn component_properties() -> Map<String, Value> {
    let (name, _) = elastic::COMPONENT_TEMPLATES[0];
    json_file(&format!("elasticsearch/{name}.json"))["template"]["mappings"]["properties"]
        .as_object()
        .unwrap()
        .clone()
}

fn index_templates() -> Vec<(String, Value)> {
    elastic::INDEX_TEMPLATES
        .iter()
        .map(|(name, _)| {
            (
                name.to_string(),
                json_file(&format!("elasticsearch/{name}.json")),
            )
        })
        .collect()
}

fn compatible(mapped: &str, value: &Value) -> bool {
    match (mapped, value) {
        ("keyword", Value::String(_)) | ("text", Value::String(_)) => true,
        ("keyword", Value::Array(items)) => items.iter().all(Value::is_string),
        ("long", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("double", Value::Number(_)) => true,
        ("date", Value::String(s)) => meshwatch_ecs::parse_timestamp(s).is_some(),
        _ => false,
    }
}

#[test]
fn mappings_name_only_fields_the_mesh_writes_with_their_types() {
    let properties = component_properties();
    let mut written = BTreeSet::new();
    for (family, _) in FAMILIES {
        let lines = captured(family);
        written.extend(fields_of(&lines));
        for line in &lines {
            for (field, value) in line {
                if let Some(mapping) = properties.get(field) {
                    let ty = mapping["type"].as_str().unwrap();
                    assert!(
                        compatible(ty, value),
                        "{family}: {field} is mapped {ty} but a line has {value}"
                    );
                }
            }
        }
        // Fields left to dynamic mapping must keep one JSON kind, or the
        // second kind would be rejected.
        let mut kinds: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for line in &lines {
            for (field, value) in line {
                if properties.contains_key(field) {
                    continue;
                }
                let kind = match value {
                    Value::String(_) => "string",
                    Value::Number(n) if n.is_f64() => "float",
                    Value::Number(_) => "integer",
                    Value::Bool(_) => "bool",
                    Value::Array(_) => "array",
                    Value::Object(_) => "object",
                    Value::Null => continue,
                };
                kinds.entry(field).or_default().insert(kind);
            }
        }
        for (field, k) in kinds {
            assert_eq!(k.len(), 1, "{family}: unmapped {field} is written as {k:?}");
        }
    }
    // Entries of type object are namespaces for fields ECS does not define
    // (checked against the binaries' own lines by tests/ecs_lines.rs), not fields.
    let unused: Vec<_> = properties
        .iter()
        .filter(|(f, m)| m["type"] != "object" && !written.contains(*f))
        .map(|(f, _)| f)
        .collect();
    assert!(unused.is_empty(), "mapped but never written: {unused:?}");
    for required in [
        "@timestamp",
        "trace.id",
        "span.id",
        "service.name",
        "log.level",
        "message",
        "event.duration",
    ] {
        assert!(
            properties.contains_key(required),
            "{required} is not mapped"
        );
    }
    assert_eq!(properties["@timestamp"]["type"], "date");
    assert_eq!(properties["message"]["type"], "text");
    assert_eq!(properties["event.duration"]["type"], "long");
    for keyword in ["trace.id", "span.id", "service.name", "log.level"] {
        assert_eq!(properties[keyword]["type"], "keyword", "{keyword}");
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().unwrap();
    let Some(mut tail) = name.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        if i == rest.len() - 1 {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.is_empty()
}

/// The templates whose patterns match `index`.
fn templates_for(index: &str) -> Vec<(String, Value)> {
    index_templates()
        .into_iter()
        .filter(|(_, t)| {
            t["index_patterns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| glob(p.as_str().unwrap(), index))
        })
        .collect()
}

/// Values of a `key value` directive in fluent.conf, in order.
fn directives<'a>(conf: &'a str, key: &str) -> Vec<&'a str> {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::trim))
        .collect()
}

/// The indices Fluentd writes: per-topic from `index_name` with the tag
/// placeholders resolved, plus fixed ones (dead letters).
fn fluentd_indices() -> BTreeMap<String, String> {
    let conf = read("fluentd/fluent.conf");
    let topics: Vec<&str> = directives(&conf, "topics")[0].split(',').collect();
    assert_eq!(
        topics,
        FAMILIES.map(|(_, t)| t).to_vec(),
        "fluent.conf consumes other topics than the mesh writes"
    );
    let prefix = directives(&conf, "add_prefix")[0];
    let mut indices = BTreeMap::new();
    for index_name in directives(&conf, "index_name") {
        if index_name.contains("${tag") {
            for topic in &topics {
                let tag = format!("{prefix}.{topic}");
                let parts: Vec<&str> = tag.split('.').collect();
                let mut name = index_name.to_owned();
                for (i, part) in parts.iter().enumerate() {
                    name = name.replace(&format!("${{tag[{i}]}}"), part);
                }
                assert!(!name.contains("${"), "unresolved placeholder in {name}");
                indices.insert(name, topic.to_string());
            }
        } else {
            indices.insert(index_name.to_owned(), "dead letters".to_owned());
        }
    }
    indices
}

#[test]
fn every_index_fluentd_writes_has_exactly_one_template() {
    let indices = fluentd_indices();
    assert_eq!(
        indices.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            elastic::LOGS_DATA_STREAM.to_owned(),
            elastic::HEARTBEATS_DATA_STREAM.to_owned(),
            elastic::ALERTS_DATA_STREAM.to_owned(),
            elastic::DEADLETTER_DATA_STREAM.to_owned(),
        ])
    );
    assert_eq!(
        indices[elastic::LOGS_DATA_STREAM],
        meshwatch_kafka::LOGS_TOPIC
    );
    let conf = read("fluentd/fluent.conf");
    for op in directives(&conf, "write_operation") {
        // Data streams take only create; create also makes a redelivery a 409.
        assert_eq!(op, "create");
    }
    for id_key in directives(&conf, "id_key") {
        assert_eq!(id_key, directives(&conf, "hash_id_key")[0]);
    }
    for (index, source) in &indices {
        let matching = templates_for(index);
        assert_eq!(
            matching.len(),
            1,
            "{index} (from {source}) matches templates {:?}",
            matching.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        let (name, template) = &matching[0];
        assert!(
            template["data_stream"].is_object(),
            "{name} is not a data stream template"
        );
        assert!(
            template["template"]["lifecycle"]["data_retention"].is_string(),
            "{name} has no lifecycle"
        );
        // Higher than Elasticsearch's built-in logs-*-* (100).
        assert!(template["priority"].as_u64().unwrap() > 100, "{name}");
    }
}

#[test]
fn dead_letter_mapping_matches_what_fluentd_writes() {
    let conf = read("fluentd/fluent.conf");
    let error_label = conf.split("<label @ERROR>").nth(1).unwrap();
    let record = error_label
        .split("<record>")
        .nth(1)
        .and_then(|r| r.split("</record>").next())
        .unwrap();
    let removed: BTreeSet<&str> = directives(error_label, "remove_keys").into_iter().collect();
    let written: BTreeSet<String> = record
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap())
        .filter(|k| !removed.contains(k))
        .map(str::to_owned)
        .collect();
    let template = json_file("elasticsearch/deadletter-meshwatch.json");
    let mappings = &template["template"]["mappings"];
    assert_eq!(mappings["dynamic"], false);
    let mapped: BTreeSet<String> = mappings["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(mapped, written);
}

/// Field names a KQL query filters on (`field:value` terms).
fn kql_fields(query: &str) -> Vec<String> {
    query
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|term| term.split_once(':').map(|(f, _)| f.to_owned()))
        .filter(|f| !f.is_empty())
        .collect()
}

/// Runtime field scripts read fields as doc['name'].
fn script_fields(script: &str) -> Vec<String> {
    script
        .split("doc['")
        .skip(1)
        .filter_map(|s| s.split_once("']").map(|(f, _)| f.to_owned()))
        .collect()
}

fn embedded_json(value: &Value) -> Value {
    serde_json::from_str(value.as_str().unwrap_or("{}")).unwrap()
}

#[test]
fn saved_objects_use_only_fields_the_mesh_writes() {
    let objects: Vec<Value> = elastic::SAVED_OBJECTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id: BTreeMap<(String, String), &Value> = objects
        .iter()
        .map(|o| {
            (
                (
                    o["type"].as_str().unwrap().to_owned(),
                    o["id"].as_str().unwrap().to_owned(),
                ),
                o,
            )
        })
        .collect();
    assert_eq!(by_id.len(), objects.len(), "duplicate saved object ids");

    // Data views: one per family, each on a templated pattern, time field @timestamp.
    let mut view_fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut views_by_title = BTreeMap::new();
    for view in objects.iter().filter(|o| o["type"] == "index-pattern") {
        let attrs = &view["attributes"];
        let title = attrs["title"].as_str().unwrap();
        assert_eq!(attrs["timeFieldName"], "@timestamp", "{title}");
        let family = title.split('-').next().unwrap();
        let written = match family {
            "deadletter" => {
                let t = json_file("elasticsearch/deadletter-meshwatch.json");
                t["template"]["mappings"]["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect()
            }
            f => fields_of(&captured(f)),
        };
        let concrete = title.replace('*', "default");
        assert_eq!(
            templates_for(&concrete).len(),
            1,
            "data view {title} has no template"
        );
        let runtime = embedded_json(&attrs["runtimeFieldMap"]);
        let mut known = written.clone();
        for (name, def) in runtime.as_object().unwrap() {
            for f in script_fields(def["script"]["source"].as_str().unwrap()) {
                assert!(
                    written.contains(&f),
                    "runtime field {name} reads unwritten {f}"
                );
            }
            known.insert(name.clone());
        }
        for f in embedded_json(&attrs["fieldFormatMap"])
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(written.contains(f), "{title} formats unwritten field {f}");
        }
        views_by_title.insert(title.to_owned(), view["id"].as_str().unwrap().to_owned());
        view_fields.insert(view["id"].as_str().unwrap().to_owned(), known);
    }
    assert_eq!(
        views_by_title.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(
            [
                "alerts-meshwatch-*",
                "deadletter-meshwatch-*",
                "heartbeats-meshwatch-*",
                "logs-meshwatch-*"
            ]
            .map(String::from)
        )
    );

    // trace.id opens Discover on the "Request trace" search, filtered to that id.
    let logs_view = by_id[&(
        "index-pattern".to_owned(),
        views_by_title["logs-meshwatch-*"].clone(),
    )];
    let formats = embedded_json(&logs_view["attributes"]["fieldFormatMap"]);
    let template = formats["trace.id"]["params"]["urlTemplate"]
        .as_str()
        .unwrap();
    assert_eq!(formats["trace.id"]["id"], "url");
    assert!(
        template.contains("/app/discover#/view/meshwatch-request-trace"),
        "{template}"
    );
    assert!(template.contains("trace.id:%22{{value}}%22"), "{template}");
    assert!(by_id.contains_key(&("search".to_owned(), "meshwatch-request-trace".to_owned())));

    for object in &objects {
        let kind = object["type"].as_str().unwrap();
        let id = object["id"].as_str().unwrap();
        // Every reference resolves inside this file.
        for reference in object["references"].as_array().unwrap() {
            let key = (
                reference["type"].as_str().unwrap().to_owned(),
                reference["id"].as_str().unwrap().to_owned(),
            );
            assert!(
                by_id.contains_key(&key),
                "{kind} {id} references missing {key:?}"
            );
        }
        let view = object["references"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "index-pattern")
            .map(|r| r["id"].as_str().unwrap().to_owned());
        let mut used = Vec::new();
        let attrs = &object["attributes"];
        if let Some(source) = attrs["kibanaSavedObjectMeta"]["searchSourceJSON"].as_str() {
            let source: Value = serde_json::from_str(source).unwrap();
            used.extend(kql_fields(source["query"]["query"].as_str().unwrap_or("")));
        }
        for column in attrs["columns"].as_array().into_iter().flatten() {
            used.push(column.as_str().unwrap().to_owned());
        }
        for sort in attrs["sort"].as_array().into_iter().flatten() {
            used.push(sort[0].as_str().unwrap().to_owned());
        }
        if let Some(vis) = attrs["visState"].as_str() {
            let vis: Value = serde_json::from_str(vis).unwrap();
            for agg in vis["aggs"].as_array().unwrap() {
                if let Some(f) = agg["params"]["field"].as_str() {
                    used.push(f.to_owned());
                }
            }
        }
        if used.is_empty() {
            continue;
        }
        let view = view.unwrap_or_else(|| panic!("{kind} {id} uses fields but has no data view"));
        let known = &view_fields[&view];
        for field in used {
            assert!(
                known.contains(&field),
                "{kind} {id} uses {field}, which {view} lines never have"
            );
        }
    }

    // The dashboard shows the panels the issue asks for.
    let dashboard = by_id[&("dashboard".to_owned(), "meshwatch-overview".to_owned())];
    let panels: BTreeSet<String> = dashboard["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "meshwatch-service-health",
        "meshwatch-request-rate",
        "meshwatch-error-rate",
        "meshwatch-p99-latency",
        "meshwatch-alerts-search",
        "meshwatch-orders-by-status",
    ] {
        assert!(panels.contains(expected), "dashboard lacks {expected}");
    }
    let panels_json: Value =
        serde_json::from_str(dashboard["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
    for panel in panels_json.as_array().unwrap() {
        let reference = format!(
            "{}:{}",
            panel["panelIndex"].as_str().unwrap(),
            panel["panelRefName"].as_str().unwrap()
        );
        assert!(
            dashboard["references"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == reference.as_str()),
            "panel {reference} has no reference"
        );
    }
}

#[test]
fn glob_matches_like_index_patterns() {
    assert!(glob("logs-meshwatch-*", "logs-meshwatch-default"));
    assert!(!glob("logs-meshwatch-*", "logs-other-default"));
    assert!(glob("a*c*e", "abcde"));
    assert!(!glob("a*c*e", "abcdf"));
    assert!(glob("exact", "exact"));
    assert!(!glob("exact", "exactly"));
    assert!(Path::new(&root().join("tests/data/capture.sh")).exists());
}

// ---------------------------------------------------------------- secrets

/// The secrets docker-compose.yml needs, as `.env.example` names them.
const SECRETS: [&str; 6] = [
    "ELASTIC_PASSWORD",
    "KIBANA_PASSWORD",
    "KIBANA_ENCRYPTION_KEY",
    "FLUENTD_ES_PASSWORD",
    "SETUP_ES_PASSWORD",
    "POSTGRES_PASSWORD",
];

/// `KEY=value` lines of an env file.
fn env_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn no_usable_secret_in_the_repository_and_compose_refuses_to_start_without_one() {
    let example = env_values(&read(".env.example"));
    for key in SECRETS {
        assert_eq!(
            example.get(key).map(String::as_str),
            Some(""),
            ".env.example must name {key} without a value"
        );
    }
    // Started with the example file, docker-compose stops and says what to do.
    let out = docker_compose_with(&root().join(".env.example"), &["config", "-q"]);
    assert!(!out.status.success(), "compose accepted the example file");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scripts/secrets"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every secret the compose file reads is required (${VAR:?...}).
    let compose = read("docker-compose.yml");
    for key in SECRETS {
        let uses: Vec<&str> = compose
            .split("${")
            .skip(1)
            .filter(|u| u.starts_with(key))
            .collect();
        assert!(!uses.is_empty(), "docker-compose.yml does not use {key}");
        for using in uses {
            assert!(
                using[key.len()..].starts_with(":?"),
                "{key} is used without :? (a missing secret must stop compose)"
            );
        }
    }
    assert!(read(".gitignore")
        .lines()
        .any(|l| l.trim() == ".env" || l.trim() == "/.env"));

    // scripts/secrets made strong values, all different.
    let generated = env_values(&std::fs::read_to_string(generated_env()).unwrap());
    let values: BTreeSet<&String> = SECRETS.iter().map(|k| &generated[*k]).collect();
    assert_eq!(values.len(), SECRETS.len());
    for key in SECRETS {
        let value = &generated[key];
        assert!(value.len() >= 32, "{key} is short: {value}");
        assert!(
            elastic::users::password_problem(value).is_none(),
            "{key}: {value}"
        );
    }
}

#[test]
fn each_writer_has_its_own_user_and_only_the_users_job_sees_the_superuser() {
    let config = compose_config();
    let services = config["services"].as_object().unwrap();
    let generated = env_values(&std::fs::read_to_string(generated_env()).unwrap());
    let elastic_password = &generated["ELASTIC_PASSWORD"];
    let seeing: BTreeSet<&str> = services
        .iter()
        .filter(|(_, svc)| {
            svc["environment"]
                .to_string()
                .contains(elastic_password.as_str())
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(seeing, BTreeSet::from(["elasticsearch", "es-users"]));
    let env = |svc: &str, key: &str| {
        services[svc]["environment"][key]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(env("fluentd", "ES_USER"), elastic::users::FLUENTD_USER);
    assert_eq!(
        env("fluentd", "ES_PASSWORD"),
        generated["FLUENTD_ES_PASSWORD"]
    );
    for job in ["setup", "kibana-setup"] {
        assert_eq!(env(job, "MESHWATCH_ES_USER"), elastic::users::SETUP_USER);
        assert_eq!(
            env(job, "MESHWATCH_ES_PASSWORD"),
            generated["SETUP_ES_PASSWORD"]
        );
    }
    assert_eq!(env("es-users", "MESHWATCH_ES_USER"), "elastic");
    assert_eq!(
        env("es-users", "MESHWATCH_FLUENTD_ES_PASSWORD"),
        generated["FLUENTD_ES_PASSWORD"]
    );
    assert_eq!(
        env("es-users", "MESHWATCH_SETUP_ES_PASSWORD"),
        generated["SETUP_ES_PASSWORD"]
    );
    assert_eq!(
        env("es-users", "MESHWATCH_KIBANA_SYSTEM_PASSWORD"),
        generated["KIBANA_PASSWORD"]
    );
    assert_eq!(
        env("kibana", "ELASTICSEARCH_USERNAME"),
        elastic::users::KIBANA_SYSTEM_USER
    );
    assert_eq!(
        services["es-users"]["command"],
        serde_json::json!(["meshctl", "setup", "users", "--wait", "5m"])
    );
    // Health checks use no password: rotating one never locks them out.
    for (name, svc) in services {
        let test = svc["healthcheck"]["test"].to_string();
        for value in generated.values().filter(|v| v.len() >= 32) {
            assert!(
                !test.contains(value.as_str()),
                "{name}'s health check uses a secret"
            );
        }
        assert!(
            !test.contains("PASSWORD") && !test.contains(" -u "),
            "{name}: {test}"
        );
    }
}

// ---------------------------------------------------------------- Fluentd

/// String literals of a Rust array constant `const NAME: [&str; N] = [...]`.
fn rust_str_array(source: &str, name: &str) -> Vec<String> {
    let decl = source
        .split(&format!("const {name}: [&str;"))
        .nth(1)
        .unwrap_or_else(|| panic!("no const {name} array"));
    let list = decl.split_once("= [").unwrap().1.split(']').next().unwrap();
    list.split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The codecs the shippers may produce (their --compression values).
fn shipper_codecs() -> BTreeSet<String> {
    rust_str_array(&read("shipper/src/config.rs"), "COMPRESSIONS")
        .into_iter()
        .collect()
}

/// What a topic's compression.type may make consumers see: the broker
/// recompresses to the topic's codec; `producer` (Kafka's default, also when
/// the topics set nothing) keeps what the producers sent.
fn topic_codecs() -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for file in ["crates/kafka/src/lib.rs", "meshctl/src/topics.rs"] {
        let source = read(file);
        // `const TOPIC_COMPRESSION: &str = "lz4";`
        for decl in source.split("COMPRESSION: &str = \"").skip(1) {
            values.insert(decl.split('"').next().unwrap().to_owned());
        }
        // `("compression.type", "zstd")` or `.config("compression.type", "zstd")`
        for call in source.split("\"compression.type\"").skip(1) {
            let rest = call.trim_start_matches([',', ' ', '\n', ')']);
            if let Some(literal) = rest.strip_prefix('"') {
                values.insert(literal.split('"').next().unwrap().to_owned());
            }
        }
    }
    // A broker-wide default in the compose file.
    let config = compose_config();
    if let Some(kafka_default) =
        config["services"]["kafka"]["environment"]["KAFKA_COMPRESSION_TYPE"].as_str()
    {
        values.insert(kafka_default.to_owned());
    }
    if values.is_empty() {
        values.insert("producer".to_owned());
    }
    values
        .into_iter()
        .flat_map(|v| match v.as_str() {
            "producer" => shipper_codecs().into_iter().collect::<Vec<_>>(),
            "uncompressed" => vec!["none".to_owned()],
            other => vec![other.to_owned()],
        })
        .collect()
}

/// The Fluentd Dockerfile with continuation lines joined.
fn fluentd_dockerfile() -> String {
    read("fluentd/Dockerfile").replace("\\\n", " ")
}

/// The codecs the image build proves librdkafka decodes: the KAFKA_CODECS
/// build argument, checked by check-codecs.rb in both stages.
fn fluentd_checked_codecs(dockerfile: &str) -> BTreeSet<String> {
    let arg = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG KAFKA_CODECS="))
        .expect("fluentd/Dockerfile: ARG KAFKA_CODECS=\"...\"");
    let checks = dockerfile
        .lines()
        .filter(|l| {
            l.contains("meshwatch-check-codecs ${KAFKA_CODECS}")
                && l.trim_start().starts_with("RUN")
        })
        .count();
    assert_eq!(
        checks, 2,
        "check-codecs must run in the build and the runtime stage"
    );
    arg.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn fluentd_decodes_every_codec_the_shippers_and_the_topics_may_use() {
    let shippers = shipper_codecs();
    assert!(
        shippers.contains("lz4"),
        "the shippers' default: {shippers:?}"
    );
    let needed: BTreeSet<String> = shippers.union(&topic_codecs()).cloned().collect();

    let conf = read("fluentd/fluent.conf");
    let input = conf
        .split("<source>")
        .skip(1)
        .filter_map(|src| directives(src, "@type").first().map(|t| t.to_string()))
        .find(|t| t != "monitor_agent")
        .expect("a Kafka input in fluent.conf");
    let dockerfile = fluentd_dockerfile();
    let gems: BTreeSet<String> = dockerfile
        .split_whitespace()
        .filter_map(|w| w.split_once(':'))
        .filter(|(name, version)| {
            !name.is_empty() && version.chars().next().is_some_and(|c| c.is_ascii_digit())
        })
        .map(|(name, _)| name.to_owned())
        .collect();
    match input.as_str() {
        // librdkafka (fluent-plugin-kafka's rdkafka_group, or ours on top of it).
        "rdkafka_group" | "meshwatch_kafka" => {
            if input == "meshwatch_kafka" {
                let plugin = read("fluentd/plugins/in_meshwatch_kafka.rb");
                assert!(plugin.contains("register_input('meshwatch_kafka'"));
                assert!(plugin.contains("< RdKafkaGroupInput"));
            }
            assert!(
                gems.contains("rdkafka"),
                "the rdkafka gem is not installed: {gems:?}"
            );
            assert!(
                dockerfile.contains("--platform ruby rdkafka:"),
                "rdkafka must be built from source against the headers below"
            );
            let checked = fluentd_checked_codecs(&dockerfile);
            let missing: Vec<&String> = needed.difference(&checked).collect();
            assert!(
                missing.is_empty(),
                "the image build does not prove librdkafka decodes {missing:?} (KAFKA_CODECS {checked:?})"
            );
            // librdkafka's configure leaves a codec out, silently, without
            // its headers (configure.self: zlib, libzstd; snappy and lz4 are
            // built in).
            for (codec, header_package) in [("gzip", "zlib1g-dev"), ("zstd", "libzstd-dev")] {
                if needed.contains(codec) {
                    assert!(
                        dockerfile.split_whitespace().any(|w| w == header_package),
                        "{codec} needs {header_package} in the build stage"
                    );
                }
            }
        }
        // ruby-kafka: a gem per codec, and no zstd topic at all (it fetches
        // with Fetch v4; brokers refuse such fetches from zstd topics).
        "kafka_group" => {
            for (codec, gem) in [
                ("snappy", "snappy"),
                ("lz4", "extlz4"),
                ("zstd", "zstd-ruby"),
            ] {
                assert!(
                    !needed.contains(codec) || gems.contains(gem),
                    "{codec} needs the {gem} gem for kafka_group"
                );
            }
            assert!(!topic_codecs().contains("zstd") || shippers.len() == 1);
        }
        other => panic!("unknown Kafka input {other}: teach this test what it decodes"),
    }
}

#[test]
fn fluentd_indexes_by_event_id_and_stores_offsets_after_emitting() {
    let conf = read("fluentd/fluent.conf");
    let id_key = directives(&conf, "hash_id_key")[0];
    // Both outputs: create with the computed id, never index (which would
    // overwrite) and never an id Elasticsearch makes up.
    assert_eq!(directives(&conf, "id_key"), [id_key, id_key]);
    assert_eq!(directives(&conf, "write_operation"), ["create", "create"]);
    assert_eq!(directives(&conf, "remove_keys"), [id_key, id_key]);
    // The order of the filters: the fallback id hashes the raw bytes before
    // they are parsed; event.id replaces it after.
    let genid = conf.find("@type elasticsearch_genid").unwrap();
    let parser = conf.find("@type parser").unwrap();
    let event_id = conf
        .find(&format!("{id_key} ${{(id = record['event.id'])"))
        .expect("a filter that takes the id from event.id");
    assert!(genid < parser && parser < event_id);
    assert!(conf[event_id..]
        .lines()
        .next()
        .unwrap()
        .contains("id.bytesize <= 512"));
    // Offsets are stored by the plugin, after the batch was emitted.
    assert!(conf.contains("\"enable.auto.offset.store\": false"));
    assert!(conf.contains("\"enable.auto.commit\": true"));
    let plugin = read("fluentd/plugins/in_meshwatch_kafka.rb");
    assert!(plugin.contains("yield batch\n          store_offsets(batch.messages)"));
    // Fluentd's user from the environment, no default password.
    assert_eq!(
        directives(&conf, "password"),
        [
            "\"#{ENV.fetch('ES_PASSWORD')}\"",
            "\"#{ENV.fetch('ES_PASSWORD')}\""
        ]
    );
}

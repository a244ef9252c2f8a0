//! The meshctl binary against the test broker: topic creation and checks,
//! trace search across partitions, and tail filters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use meshwatch_testkit as testkit;
use serde_json::{json, Value};

fn meshctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env("MESHWATCH_COLOR", "never")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line(
    ts: &str,
    service: &str,
    trace: &str,
    span: &str,
    parent: Option<&str>,
    msg: &str,
) -> String {
    let mut v = json!({
        "@timestamp": ts, "log.level": "info", "message": msg, "ecs.version": "8.11.0",
        "service.name": service, "service.instance.id": format!("{service}-000000000001"),
        "service.version": "0.1.0", "event.dataset": format!("{service}.log"),
        "trace.id": trace, "span.id": span,
    });
    if let Some(p) = parent {
        v["parent.id"] = p.into();
    }
    v.to_string()
}

#[tokio::test]
async fn topics_create_and_check() {
    let bootstrap = testkit::kafka().await;
    let logs = testkit::unique_topic("ctl-logs");
    let hb = testkit::unique_topic("ctl-hb");
    let alerts = testkit::unique_topic("ctl-alerts");
    let flags = [
        "--kafka",
        bootstrap.as_str(),
        "--logs-topic",
        logs.as_str(),
        "--heartbeats-topic",
        hb.as_str(),
        "--alerts-topic",
        alerts.as_str(),
    ];
    let (code, out, _) = meshctl(&[&["topics", "check"], &flags[..]].concat());
    assert_eq!(code, 1);
    assert!(
        out.contains(&logs) && out.contains(&hb) && out.contains(&alerts),
        "{out}"
    );
    let (code, out, err) =
        meshctl(&[&["topics", "create", "--partitions", "2"], &flags[..]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = meshctl(&[&["topics", "check"], &flags[..]].concat());
    assert_eq!(code, 0, "{out}");
    // Creating again is fine.
    let (code, _, err) = meshctl(&[&["topics", "create"], &flags[..]].concat());
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn trace_returns_one_requests_lines_in_time_order() {
    let bootstrap = testkit::kafka().await;
    let topic = testkit::unique_topic("ctl-trace");
    testkit::create_topic(&bootstrap, &topic, 3).await;
    let t1 = "0af7651916cd43dd8448eb211c80319c";
    let t2 = "11111111111111111111111111111111";
    let lines = [
        (
            "payment",
            line(
                "2026-11-25T06:30:00.004Z",
                "payment",
                t1,
                "cccc000000000003",
                Some("aaaa000000000001"),
                "Charge OK",
            ),
        ),
        (
            "order",
            line(
                "2026-11-25T06:30:00.000Z",
                "order",
                t1,
                "aaaa000000000001",
                None,
                "PlaceOrder started",
            ),
        ),
        (
            "order",
            line(
                "2026-11-25T06:30:00.001Z",
                "order",
                t2,
                "dddd000000000004",
                None,
                "other request",
            ),
        ),
        (
            "inventory",
            line(
                "2026-11-25T06:30:00.002Z",
                "inventory",
                t1,
                "bbbb000000000002",
                Some("aaaa000000000001"),
                "Reserve OK",
            ),
        ),
        (
            "order",
            line(
                "2026-11-25T06:30:00.006Z",
                "order",
                t1,
                "aaaa000000000001",
                None,
                "PlaceOrder OK",
            ),
        ),
        ("order", "not json at all".to_owned()),
    ];
    let records: Vec<(Option<&str>, &str)> =
        lines.iter().map(|(k, l)| (Some(*k), l.as_str())).collect();
    testkit::produce(&bootstrap, &topic, &records).await;

    let (code, out, err) = meshctl(&[
        "trace",
        t1,
        "--kafka",
        &bootstrap,
        "--logs-topic",
        &topic,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = got.iter().map(|v| v["message"].as_str().unwrap()).collect();
    assert_eq!(
        messages,
        [
            "PlaceOrder started",
            "Reserve OK",
            "Charge OK",
            "PlaceOrder OK"
        ]
    );
    assert!(got.iter().all(|v| v["trace.id"] == t1));

    let (code, out, _) = meshctl(&["trace", t1, "--kafka", &bootstrap, "--logs-topic", &topic]);
    assert_eq!(code, 0);
    assert!(out.contains("4 lines from 3 services"), "{out}");
    let reserve = out.lines().find(|l| l.contains("Reserve OK")).unwrap();
    assert!(
        reserve.ends_with("    Reserve OK"),
        "callee indented under caller: {out}"
    );

    let (code, _, err) = meshctl(&[
        "trace",
        "22222222222222222222222222222222",
        "--kafka",
        &bootstrap,
        "--logs-topic",
        &topic,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no log line with trace.id"), "{err}");
    let (code, _, err) = meshctl(&[
        "trace",
        "xyz",
        "--kafka",
        &bootstrap,
        "--logs-topic",
        &topic,
    ]);
    assert_eq!(code, 64, "a bad flag value exits EX_USAGE");
    assert!(err.contains("--trace-id"), "{err}");
    let missing = testkit::unique_topic("ctl-missing");
    let (code, _, err) = meshctl(&["trace", t1, "--kafka", &bootstrap, "--logs-topic", &missing]);
    assert_eq!(code, 1);
    assert!(
        err.contains("does not exist") && err.contains("meshctl topics create"),
        "{err}"
    );
}

#[tokio::test]
async fn tail_filters_by_service_and_level() {
    let bootstrap = testkit::kafka().await;
    let topic = testkit::unique_topic("ctl-tail");
    testkit::create_topic(&bootstrap, &topic, 1).await;
    let now = meshwatch_ecs::format_timestamp(std::time::SystemTime::now());
    let mut warn = line(
        &now,
        "payment",
        "0af7651916cd43dd8448eb211c80319c",
        "cccc000000000003",
        None,
        "declined",
    );
    warn = warn.replace("\"log.level\":\"info\"", "\"log.level\":\"warn\"");
    let info = line(
        &now,
        "order",
        "0af7651916cd43dd8448eb211c80319c",
        "aaaa000000000001",
        None,
        "placed",
    );
    let old = line(
        "2020-01-01T00:00:00.000Z",
        "payment",
        "0af7651916cd43dd8448eb211c80319c",
        "cccc000000000003",
        None,
        "ancient",
    );
    testkit::produce(
        &bootstrap,
        &topic,
        &[(None, &warn), (None, &info), (None, &old)],
    )
    .await;
    let (code, out, err) = meshctl(&[
        "tail",
        "--kafka",
        &bootstrap,
        "--logs-topic",
        &topic,
        "--no-follow",
        "--since",
        "1h",
        "--level",
        "warn",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(rows[0].contains("payment") && rows[0].contains("declined"));
    let (_, out, _) = meshctl(&[
        "tail",
        "--kafka",
        &bootstrap,
        "--logs-topic",
        &topic,
        "--no-follow",
        "--since",
        "1h",
        "--service",
        "order",
        "--json",
    ]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["message"], "placed");
}

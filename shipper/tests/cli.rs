//! The binary's command line: bad flags exit 64 with one line naming the flag,
//! the broker address comes from `MESHWATCH_KAFKA`, a command that cannot start
//! exits 127, and a missing topic is reported clearly and repeatedly.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::Write;
use std::time::Duration;

use common::*;
use meshwatch_testkit as testkit;

const WAIT: Duration = Duration::from_secs(20);

async fn run(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut all = vec!["--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shipper"));
    cmd.args(&all)
        .env_remove("MESHWATCH_KAFKA")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Finished {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::to_owned)
            .collect(),
    }
}

async fn assert_usage_error(args: &[&str], env: &[(&str, &str)], flag: &str) {
    let out = tokio::time::timeout(WAIT, run(args, env)).await.unwrap();
    assert_eq!(out.code, Some(64), "{args:?}: {:?}", out.stderr);
    assert_eq!(out.stderr.len(), 1, "one line: {:?}", out.stderr);
    assert!(
        out.stderr[0].contains(flag),
        "{args:?}: {:?} should name {flag}",
        out.stderr[0]
    );
}

#[tokio::test]
async fn bad_flags_exit_64_naming_the_flag() {
    assert_usage_error(&["--stdin", "--bogus"], &[], "--bogus").await;
    assert_usage_error(
        &["--stdin", "--window-records", "many"],
        &[],
        "--window-records",
    )
    .await;
    assert_usage_error(
        &["--stdin", "--compression", "brotli"],
        &[],
        "--compression",
    )
    .await;
    assert_usage_error(
        &["--stdin", "--max-line-bytes", "10"],
        &[],
        "--max-line-bytes",
    )
    .await;
    // Above the topics' max.message.bytes less the overhead: refused.
    let over = (meshwatch_shipper::config::MAX_RECORD_BYTES + 1).to_string();
    assert_usage_error(
        &["--stdin", "--max-record-bytes", &over],
        &[],
        "--max-record-bytes",
    )
    .await;
    assert_usage_error(
        &["--stdin", "--kafka-option", "novalue"],
        &[],
        "--kafka-option",
    )
    .await;
    assert_usage_error(&["--file", "/nonexistent-dir/x.log"], &[], "--file").await;
    assert_usage_error(&[], &[], "--stdin").await;
    // The broker address is read from MESHWATCH_KAFKA, like the rest of the project.
    assert_usage_error(&["--stdin"], &[("MESHWATCH_KAFKA", " ")], "--kafka").await;
}

#[tokio::test]
async fn help_names_the_environment_variables() {
    let out = run(&["--help"], &[]).await;
    assert_eq!(out.code, Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--kafka"), "{help}");
    assert!(help.contains("[env: MESHWATCH_KAFKA="), "{help}");
}

#[tokio::test]
async fn a_command_that_cannot_start_exits_127() {
    let out = run(
        &["--kafka", "127.0.0.1:1", "--", "/nonexistent/service"],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(127), "{:?}", out.stderr);
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("/nonexistent/service")),
        "{:?}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_reported_repeatedly_and_its_records_wait() {
    let broker = testkit::kafka().await;
    let logs = testkit::unique_topic("cli-missing-logs");
    let hb = testkit::unique_topic("cli-missing-hb");
    testkit::create_topic(&broker, &hb, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order.log");
    let mut f = fs::File::create(&path).unwrap();
    for n in 0..5 {
        writeln!(f, "{}", numbered_line(n, 1)).unwrap();
    }
    drop(f);
    let data = dir.path().join("data");
    let mut args = vec![
        "--file",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--topic-check",
        "200ms",
        "--stats",
        "0ms",
    ];
    args.extend(kafka_args(&broker, &logs, &hb));
    let shipper = Shipper::spawn(&args);

    let reports = shipper
        .wait_stderr(WAIT, "two missing-topic reports", 2, |l| {
            l.contains(&logs) && l.contains("do not exist")
        })
        .await;
    let report: serde_json::Value = serde_json::from_str(&reports[0]).unwrap();
    assert_eq!(report["log.level"], "error");
    assert_eq!(report["shipper.missing_topics"], serde_json::json!([logs]));
    assert!(
        !reports.iter().any(|l| l.contains(&hb)),
        "the existing topic is not reported"
    );

    // Once the topic exists, the waiting records are delivered.
    testkit::create_topic(&broker, &logs, 1).await;
    let records =
        testkit::read_topic(&broker, &logs, Duration::from_secs(90), has_all_below(5)).await;
    assert_all_arrived(&records, 5);
    shipper.signal(nix::sys::signal::Signal::SIGTERM);
    let out = shipper.wait(WAIT).await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
}

/// A topic created only after librdkafka gave up on it (its metadata
/// propagation wait is over and deliveries failed as "unknown topic"): the
/// records keep waiting and every one arrives; none is refused or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_late_gets_every_line() {
    let broker = testkit::kafka().await;
    let logs = testkit::unique_topic("cli-late-logs");
    let hb = testkit::unique_topic("cli-late-hb");
    testkit::create_topic(&broker, &hb, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order.log");
    let mut f = fs::File::create(&path).unwrap();
    for n in 0..5 {
        writeln!(f, "{}", numbered_line(n, 1)).unwrap();
    }
    drop(f);
    let data = dir.path().join("data");
    let mut args = vec![
        "--file",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--stats",
        "0ms",
        "--kafka-option",
        "topic.metadata.propagation.max.ms=100",
        "--kafka-option",
        "topic.metadata.refresh.interval.ms=500",
    ];
    args.extend(kafka_args(&broker, &logs, &hb));
    let shipper = Shipper::spawn(&args);

    // librdkafka failed the deliveries for the unknown topic, and the shipper
    // tried again at least twice (the resend itself meets "unknown topic").
    shipper
        .wait_stderr(WAIT, "retries of the unknown topic", 2, |l| {
            l.contains("sent again") || l.contains("refused")
        })
        .await;
    testkit::create_topic(&broker, &logs, 1).await;
    let records =
        testkit::read_topic(&broker, &logs, Duration::from_secs(60), has_all_below(5)).await;
    assert_all_arrived(&records, 5);
    assert!(
        !shipper
            .stderr()
            .iter()
            .any(|l| l.contains("refused") || l.contains("lines_failed")),
        "nothing refused for good: {:?}",
        shipper.stderr()
    );
    shipper.signal(nix::sys::signal::Signal::SIGTERM);
    let out = shipper.wait(WAIT).await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
}

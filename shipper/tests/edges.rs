//! The edges where lines could be lost or misattributed, against the real
//! broker: one shipper per data directory, a wrapped program speaking for
//! another service, lines and records over the limits, and a damaged spool.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use meshwatch_shipper::event::{FIELD_ORIGINAL_BYTES, TAG_TRUNCATED};
use meshwatch_shipper::identity::{TAG_FOREIGN_HEARTBEAT, TAG_FOREIGN_SERVICE};
use meshwatch_shipper::spool::frame::{self, Decoded};
use meshwatch_shipper::{TAG_RECORD_REFUSED, TAG_SPOOL_CORRUPT, TAG_SPOOL_TORN};
use meshwatch_testkit as testkit;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_shipper_on_the_same_data_dir_exits_73_naming_the_holder() {
    let broker = testkit::kafka().await;
    let (logs, hb) = topics(&broker, "edge-lock", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = vec![
        "--stdin",
        "--data-dir",
        data.to_str().unwrap(),
        "--stats",
        "0s",
    ];
    args.extend(kafka_args(&broker, &logs, &hb));
    let mut first = Shipper::spawn_piped(&args);
    let holder = format!("pid {}", first.pid());
    testkit::wait_for(WAIT, "the first shipper to hold the lock", || {
        fs::read_to_string(data.join("lock"))
            .ok()
            .filter(|t| t.contains(&holder))
    })
    .await;

    let second = Shipper::spawn(&args);
    let out = second.wait(WAIT).await;
    assert_eq!(out.code, Some(73), "{:?}", out.stderr);
    let said = out.stderr.join("\n");
    assert!(said.contains("in use by another shipper"), "{said}");
    assert!(said.contains(&holder), "names the holder: {said}");

    // The first one is unaffected, and once it is gone the directory is free.
    drop(first.stdin.take());
    assert_eq!(first.wait(WAIT).await.code, Some(0));
    let third = Shipper::spawn(&args);
    assert_eq!(third.wait(WAIT).await.code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_program_cannot_speak_for_another_service() {
    let broker = testkit::kafka().await;
    let (logs, hb) = topics(&broker, "edge-identity", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let beat = |svc: &str, inst: &str, extra: &str| {
        format!(
            r#"{{"@timestamp":"2026-11-25T07:00:00.000Z","message":"heartbeat: up","service.name":"{svc}","service.instance.id":"{inst}","event.dataset":"meshwatch.heartbeat","event.kind":"state","heartbeat.status":"up","heartbeat.sequence":1,"heartbeat.interval_ms":1000{extra},"test.case":"{svc}/{inst}"}}"#
        )
    };
    let lines = [
        beat("svc", "svc-1", ""),
        beat("payment", "payment-1", ""),
        beat("svc", "svc-2", ""),
        beat(
            "shipper",
            "shipper-1",
            r#","heartbeat.target_service":"payment""#,
        ),
        r#"{"message":"card declined","log.level":"error","service.name":"payment","test.case":"log"}"#
            .to_owned(),
    ];
    let script: String = lines
        .iter()
        .map(|l| format!("echo '{l}'\n"))
        .collect::<String>();
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "svc",
        "--stats",
        "0s",
        "--heartbeat",
        "0s",
    ];
    args.extend(kafka_args(&broker, &logs, &hb));
    args.extend(["--", "sh", "-c", &script]);
    let out = Shipper::spawn(&args).wait(WAIT).await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);

    let beats = read_all(&broker, &hb, WAIT).await;
    let cases: Vec<Value> = beats
        .iter()
        .map(|r| r.json()["test.case"].clone())
        .collect();
    assert_eq!(
        cases,
        vec![Value::from("svc/svc-1")],
        "only the child's own heartbeat"
    );
    let logs = read_all(&broker, &logs, WAIT).await;
    let by_case = |c: &str| {
        logs.iter()
            .map(testkit::Record::json)
            .find(|v| v["test.case"] == c)
            .unwrap_or_else(|| panic!("{c} not in the logs topic"))
    };
    let other = by_case("payment/payment-1");
    assert_eq!(
        tags(&other),
        vec![TAG_FOREIGN_SERVICE, TAG_FOREIGN_HEARTBEAT]
    );
    assert_eq!(
        other["service.name"], "payment",
        "the claim is kept, tagged"
    );
    assert_eq!(
        other["agent.name"], "svc",
        "the shipper says whom it ships for"
    );
    assert_eq!(tags(&by_case("svc/svc-2")), vec![TAG_FOREIGN_HEARTBEAT]);
    assert_eq!(
        tags(&by_case("shipper/shipper-1")),
        vec![TAG_FOREIGN_SERVICE, TAG_FOREIGN_HEARTBEAT]
    );
    assert_eq!(tags(&by_case("log")), vec![TAG_FOREIGN_SERVICE]);
    assert_eq!(logs.len(), 4, "every line shipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_line_and_a_refused_record_become_events_that_say_so() {
    let broker = testkit::kafka().await;
    let (logs, hb) = topics(&broker, "edge-size", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("input");
    let long = format!(r#"{{"message":"{}","test.n":1}}"#, "x".repeat(10_000));
    let big = format!(r#"{{"message":"{}","test.n":2}}"#, "y".repeat(30_000));
    let mut bytes = Vec::new();
    for l in [&long, &big, &r#"{"message":"small","test.n":3}"#.to_owned()] {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    fs::write(&input, &bytes).unwrap();
    let mut args = vec![
        "--stdin",
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "order",
        "--stats",
        "0s",
        "--max-line-bytes",
        "40000",
        "--max-record-bytes",
        "40000",
        // The producer refuses what is over this, as a broker refuses what
        // is over a topic's max.message.bytes (tansu does not enforce it).
        "--kafka-option",
        "message.max.bytes=20000",
        "--kafka-option",
        "batch.size=20000",
    ];
    args.extend(kafka_args(&broker, &logs, &hb));
    let out = Shipper::spawn_with(&args, fs::File::open(&input).unwrap().into())
        .wait(WAIT)
        .await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("Kafka refused a record")),
        "said on stderr too: {:?}",
        out.stderr
    );
    let records = read_all(&broker, &logs, WAIT).await;
    assert_eq!(records.len(), 3, "one record per line, none lost");
    let events: Vec<Value> = records.iter().map(testkit::Record::json).collect();
    let small = events.iter().find(|v| v["test.n"] == 3).unwrap();
    assert!(small.get("tags").is_none());
    let kept = events.iter().find(|v| v["test.n"] == 1).unwrap();
    assert!(kept.get("tags").is_none(), "10 KB fits: shipped as is");

    let refused = events
        .iter()
        .find(|v| tags(v).contains(&TAG_RECORD_REFUSED))
        .unwrap_or_else(|| panic!("no refusal event: {events:#?}"));
    assert!(records.iter().all(|r| r.payload.len() < 20_000));
    assert!(refused["shipper.original_bytes"].as_u64().unwrap() > 30_000);
    assert!(refused["message"].as_str().unwrap().contains("refused"));
    assert!(
        refused["error.message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{refused}"
    );
    assert!(refused["event.original"]
        .as_str()
        .unwrap()
        .starts_with("{\"message\":\"yyy"));
    assert_eq!(refused["event.id"].as_str().unwrap().len(), 32);
    assert_eq!(refused["service.name"], "order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_line_is_cut_to_fit_the_record_limit() {
    let broker = testkit::kafka().await;
    let (logs, hb) = topics(&broker, "edge-cut", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("input");
    // Over the line limit, and (escaped) far over the record limit: control
    // characters take six bytes each in JSON.
    let mut line = vec![b'{'];
    line.extend(std::iter::repeat_n(1u8, 9_000));
    line.push(b'\n');
    fs::write(&input, &line).unwrap();
    let mut args = vec![
        "--stdin",
        "--data-dir",
        data.to_str().unwrap(),
        "--stats",
        "0s",
        "--max-line-bytes",
        "8192",
        "--max-record-bytes",
        "8192",
    ];
    args.extend(kafka_args(&broker, &logs, &hb));
    let out = Shipper::spawn_with(&args, fs::File::open(&input).unwrap().into())
        .wait(WAIT)
        .await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
    let records = read_all(&broker, &logs, WAIT).await;
    assert_eq!(records.len(), 1);
    assert!(
        records[0].payload.len() <= 8192,
        "{}",
        records[0].payload.len()
    );
    let v = records[0].json();
    assert!(tags(&v).contains(&TAG_TRUNCATED), "{v}");
    assert_eq!(v[FIELD_ORIGINAL_BYTES], 9_001);
    assert!(v["message"].as_str().unwrap().starts_with("{\u{1}\u{1}"));
}

/// Offsets of every frame in a spool segment.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Decoded::Frame { len, .. } = frame::decode(&bytes[i..]) {
        out.push(i);
        i += len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_is_reported_and_everything_else_delivered() {
    const TOTAL: u64 = 200;
    let broker = testkit::kafka().await;
    let (logs, hb) = topics(&broker, "edge-spool", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let done = dir.path().join("done");

    // Kafka unreachable: every line waits in the spool when the shipper stops.
    let script = writer_script(TOTAL, &done);
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "writer",
        "--stats",
        "0s",
        "--heartbeat",
        "0s",
        "--shutdown-grace",
        "200ms",
        "--kafka",
        "127.0.0.1:1",
        "--logs-topic",
        &logs,
        "--heartbeats-topic",
        &hb,
        "--",
        "sh",
        "-c",
        &script,
    ];
    let mut first = Shipper::spawn_piped(&args);
    testkit::wait_for(WAIT, "the service to write everything", || {
        done.exists().then_some(())
    })
    .await;
    drop(first.stdin.take());
    assert_eq!(first.wait(WAIT).await.code, Some(3));

    // Damage: one record's body, and a torn record at the end of the segment.
    let spool = data.join("spool");
    let seg = fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "spool"))
        .unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let offsets = frame_offsets(&bytes);
    assert_eq!(offsets.len() as u64, TOTAL, "every line spooled");
    bytes[offsets[100] + frame::HEADER_LEN + 20] ^= 0x55;
    let torn = bytes[offsets[5]..offsets[6]].to_vec();
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    fs::write(&seg, &bytes).unwrap();

    // A shipper with Kafka reachable replays the spool.
    let pos = args.iter().position(|a| *a == "127.0.0.1:1").unwrap();
    args[pos] = broker.as_str();
    // Time to deliver everything once the child (`true`) has ended.
    let pos = args.iter().position(|a| *a == "200ms").unwrap();
    args[pos] = "60s";
    let end = args.iter().position(|a| *a == "--").unwrap();
    args.truncate(end);
    args.extend(["--", "true"]);
    let out = Shipper::spawn(&args).wait(WAIT).await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
    let stderr = out.stderr.join("\n");
    assert!(
        stderr.contains("torn record") && stderr.contains("failed its checksum"),
        "{stderr}"
    );

    let records = read_all(&broker, &logs, WAIT).await;
    let lost: Vec<u64> = (0..TOTAL)
        .filter(|n| !numbers(&records).contains(n))
        .collect();
    assert_eq!(lost, vec![100], "only the damaged record is missing");
    assert_order_per_key(&records);
    let events: Vec<Value> = records.iter().map(testkit::Record::json).collect();
    let corrupt = events
        .iter()
        .find(|v| tags(v).contains(&TAG_SPOOL_CORRUPT))
        .unwrap_or_else(|| panic!("no corruption report: {events:#?}"));
    assert_eq!(corrupt["shipper.spool.sequence"], 100);
    assert_eq!(corrupt["shipper.target_service"], "writer");
    assert_eq!(corrupt["log.level"], "error");
    let torn = events
        .iter()
        .find(|v| tags(v).contains(&TAG_SPOOL_TORN))
        .unwrap_or_else(|| panic!("no torn-tail report: {events:#?}"));
    assert_eq!(
        torn["shipper.spool.skipped_bytes"],
        torn_len(&bytes, &offsets)
    );
    // The report of the damage comes where the damage was.
    let at = |tag: &str| events.iter().position(|v| tags(v).contains(&tag)).unwrap();
    let of = |n: u64| events.iter().position(|v| v["test.n"] == n).unwrap();
    assert!(of(99) < at(TAG_SPOOL_CORRUPT) && at(TAG_SPOOL_CORRUPT) < of(101));
    assert!(
        at(TAG_SPOOL_TORN) < of(0),
        "the torn tail is found on start"
    );
}

fn torn_len(bytes: &[u8], offsets: &[usize]) -> u64 {
    let last = *offsets.last().unwrap();
    let Decoded::Frame { len, .. } = frame::decode(&bytes[last..]) else {
        panic!("the last good frame")
    };
    (bytes.len() - last - len) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_with_the_size_and_codec_contract() {
    use meshwatch_kafka::{self as kafka, TopicSpec};
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let broker = testkit::kafka().await;
    let topic = testkit::unique_topic("edge-contract");
    kafka::create_topics(
        &kafka::KafkaArgs::plain(broker.as_str()),
        &[TopicSpec::new(topic.clone(), 1).with_meshwatch_limits()],
    )
    .await
    .unwrap();
    let admin: AdminClient<DefaultClientContext> = kafka::base_config(&broker).create().unwrap();
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(&topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let value = |name: &str| {
        resource
            .entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        value("max.message.bytes").as_deref(),
        Some(kafka::TOPIC_MAX_MESSAGE_BYTES.to_string().as_str())
    );
    assert_eq!(
        value("compression.type").as_deref(),
        Some(kafka::TOPIC_COMPRESSION)
    );
    // The largest --max-record-bytes the shipper accepts fits the topic as
    // created, with its overhead (the flag's validation: tests/cli.rs).
    let topic_max: usize = value("max.message.bytes").unwrap().parse().unwrap();
    assert!(
        meshwatch_shipper::config::MAX_RECORD_BYTES
            + meshwatch_shipper::config::RECORD_OVERHEAD_BYTES
            <= topic_max
    );
}

//! Wrap and stdin modes against the real broker: the service's output passes
//! through unchanged, SIGTERM is forwarded, the child's exit code is returned,
//! and every kind of bad input is shipped as an event saying what was wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use meshwatch_shipper::event::{
    FIELD_ORIGINAL_BYTES, TAG_INVALID_JSON, TAG_INVALID_UTF8, TAG_NOT_OBJECT, TAG_NO_NEWLINE,
    TAG_TRUNCATED,
};
use meshwatch_testkit as testkit;
use nix::sys::signal::Signal;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_passes_output_through_forwards_sigterm_and_returns_the_exit_code() {
    let broker = testkit::kafka().await;
    let (logs, hb) = topics(&broker, "wrap-pass", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Plain text, a JSON line, a stderr line; then wait for SIGTERM and exit 7.
    let script = r#"printf 'plain text, not JSON\n'
echo '{"message":"hello","service.instance.id":"svc-1","test.n":1}'
echo 'to stderr' >&2
trap 'kill $p 2>/dev/null; echo "{\"message\":\"got TERM\",\"test.n\":2}"; exit 7' TERM
sleep 60 & p=$!
echo ready
wait $p"#;
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "svc",
        "--stats",
        "0ms",
    ];
    args.extend(kafka_args(&broker, &logs, &hb));
    args.extend(["--", "sh", "-c", script]);
    let shipper = Shipper::spawn(&args);

    testkit::wait_for(WAIT, "the child's output on our stdout", || {
        String::from_utf8_lossy(&shipper.stdout())
            .contains("ready\n")
            .then_some(())
    })
    .await;
    shipper.signal(Signal::SIGTERM);
    let out = shipper.wait(WAIT).await;
    assert_eq!(out.code, Some(7), "the child's exit code: {:?}", out.stderr);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "plain text, not JSON\n\
         {\"message\":\"hello\",\"service.instance.id\":\"svc-1\",\"test.n\":1}\n\
         ready\n\
         {\"message\":\"got TERM\",\"test.n\":2}\n",
        "stdout passes through unchanged"
    );
    assert!(
        out.stderr.iter().any(|l| l == "to stderr"),
        "stderr passes through: {:?}",
        out.stderr
    );

    // Both streams were shipped, stdout and stderr, the bad line as an event.
    let records = testkit::read_topic(&broker, &logs, WAIT, |r| r.len() >= 5).await;
    let events: Vec<Value> = records.iter().map(testkit::Record::json).collect();
    let find = |f: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|v| f(v))
            .unwrap_or_else(|| panic!("not shipped: {events:#?}"))
    };
    let plain = find(&|v| v["message"] == "plain text, not JSON");
    assert!(tags(plain).contains(&TAG_INVALID_JSON));
    assert_eq!(plain["service.name"], "svc");
    let hello = find(&|v| v["message"] == "hello");
    assert_eq!(hello["service.name"], "svc", "added when the line lacks it");
    assert_eq!(hello["service.instance.id"], "svc-1");
    let key = records
        .iter()
        .find(|r| r.json()["message"] == "hello")
        .unwrap()
        .key
        .clone();
    assert_eq!(key.as_deref(), Some(&b"svc-1"[..]));
    find(&|v| v["message"] == "to stderr");
    find(&|v| v["message"] == "got TERM");
    assert_eq!(records.len(), 5, "{events:#?}");
    // Every record says which shipper carried it and has its own event.id.
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .map(|v| v["event.id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "distinct ids: {ids:?}");
    for v in &events {
        assert_eq!(v["event.id"].as_str().unwrap().len(), 32);
        assert_eq!(v["agent.name"], "svc");
        assert_eq!(v["agent.type"], "meshwatch-shipper");
        assert!(v["agent.id"].is_string() && v["agent.ephemeral_id"].is_string());
    }

    let beats = testkit::read_topic(&broker, &hb, WAIT, |r| !r.is_empty()).await;
    let beat = beats[0].json();
    assert_eq!(beat["service.name"], "shipper");
    assert_eq!(beat["heartbeat.target_service"], "svc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_arrives_as_an_event_saying_what_was_wrong() {
    let broker = testkit::kafka().await;
    let (logs, hb) = topics(&broker, "stdin-bad", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("input");
    let long = format!("{{\"message\":\"{}\"}}", "x".repeat(1000));
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"{\"message\":\"good\",\"test.n\":1}\n");
    bytes.extend_from_slice(b"not json at all\n");
    bytes.extend_from_slice(b"42\n");
    bytes.extend_from_slice(b"[1,2]\n");
    bytes.extend_from_slice(long.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(b"{\"message\":\"caf\xff\xfe\"}\n");
    bytes.extend_from_slice(b"{\"message\":\"last\",\"test.n\":9}");
    std::fs::write(&input, &bytes).unwrap();

    let mut args = vec![
        "--stdin",
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "order",
        "--max-line-bytes",
        "256",
        "--stats",
        "0ms",
    ];
    args.extend(kafka_args(&broker, &logs, &hb));
    let shipper = Shipper::spawn_with(&args, std::fs::File::open(&input).unwrap().into());
    // End of stdin ends the shipper once everything is acknowledged.
    let out = shipper.wait(WAIT).await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);

    let records = testkit::read_topic(&broker, &logs, WAIT, |r| r.len() >= 7).await;
    assert_eq!(records.len(), 7, "one event per line, none dropped");
    let events: Vec<Value> = records.iter().map(testkit::Record::json).collect();
    for v in &events {
        assert_eq!(v["service.name"], "order");
        assert!(v["host.name"].is_string() && v["event.ingested"].is_string());
    }
    let by_message = |m: &str| events.iter().find(|v| v["message"] == m).unwrap();

    let good = by_message("good");
    assert!(good.get("error.message").is_none() && good.get("tags").is_none());

    let not_json = by_message("not json at all");
    assert!(
        not_json.get("event.original").is_none(),
        "the text once, in message"
    );
    assert!(tags(not_json).contains(&TAG_INVALID_JSON));
    assert!(not_json["error.message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    for original in ["42", "[1,2]"] {
        let v = by_message(original);
        assert!(tags(v).contains(&TAG_NOT_OBJECT), "{v}");
        assert!(v["error.message"]
            .as_str()
            .unwrap()
            .contains("not an object"));
    }

    let cut = events
        .iter()
        .find(|v| tags(v).contains(&TAG_TRUNCATED))
        .unwrap();
    assert_eq!(cut[FIELD_ORIGINAL_BYTES], long.len());
    assert_eq!(cut["message"].as_str().unwrap(), &long[..256]);
    assert!(cut["error.message"]
        .as_str()
        .unwrap()
        .contains("--max-line-bytes"));

    let utf8 = events
        .iter()
        .find(|v| tags(v).contains(&TAG_INVALID_UTF8))
        .unwrap();
    assert_eq!(
        utf8["message"], "caf\u{fffd}\u{fffd}",
        "content kept, lossy"
    );
    assert!(utf8["error.message"].as_str().unwrap().contains("UTF-8"));

    let last = by_message("last");
    assert!(tags(last).contains(&TAG_NO_NEWLINE), "{last}");
    assert_eq!(last["test.n"], 9, "content kept");
    assert!(last["error.message"]
        .as_str()
        .unwrap()
        .contains("no final newline"));
}

use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;

fn hb() -> Heartbeat {
    Heartbeat {
        timestamp: SystemTime::now(),
        service_name: "order".into(),
        instance_id: "order-0123456789ab".into(),
        version: "0.1.0".into(),
        status: HeartbeatStatus::Up,
        sequence: 1,
        interval: Duration::from_secs(1),
        target_service: None,
    }
}

fn with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut obj: serde_json::Map<String, Value> =
        serde_json::from_str(&hb().to_json_line()).expect("json");
    edit(&mut obj);
    Value::Object(obj).to_string().into_bytes()
}

fn reason(payload: &[u8]) -> &'static str {
    match admit(payload, SystemTime::now(), &TrustConfig::default()) {
        Ok(_) => "accepted",
        Err(r) => r.reason(),
    }
}

#[test]
fn the_runtimes_own_heartbeats_are_accepted_with_their_age() {
    let line = hb().to_json_line();
    let (parsed, age_ms) =
        admit(line.as_bytes(), SystemTime::now(), &TrustConfig::default()).expect("accepted");
    assert_eq!(parsed.service_name, "order");
    assert!((0.0..1000.0).contains(&age_ms), "{age_ms}");
    // A shipper's own heartbeat names its target; extra fields a shipper adds are fine.
    let shipper = with(|o| {
        o.insert("service.name".into(), json!("shipper"));
        o.insert("heartbeat.target_service".into(), json!("order"));
        o.insert("host.name".into(), json!("node-1"));
        o.insert("event.ingested".into(), json!("2026-11-25T06:30:00.123Z"));
    });
    assert_eq!(reason(&shipper), "accepted");
    // A sender clock slightly ahead: accepted with a negative age.
    let mut ahead = hb();
    ahead.timestamp = SystemTime::now() + Duration::from_secs(1);
    let age = check(&ahead, SystemTime::now(), &TrustConfig::default()).expect("within skew");
    assert!(age < -900.0, "{age}");
}

#[test]
fn hostile_shapes_are_refused_with_their_reason() {
    let long = "x".repeat(MAX_NAME + 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not_a_heartbeat", b"not json".to_vec()),
        ("not_a_heartbeat", b"[1,2]".to_vec()),
        (
            "not_a_heartbeat",
            with(|o| {
                o.insert("event.dataset".into(), json!("order.log"));
            }),
        ),
        (
            "not_a_heartbeat",
            with(|o| {
                o.insert("heartbeat.sequence".into(), json!(-1));
            }),
        ),
        (
            "not_a_heartbeat",
            with(|o| {
                o.insert("heartbeat.sequence".into(), json!(1e300));
            }),
        ),
        (
            "not_a_heartbeat",
            with(|o| {
                o.insert("heartbeat.interval_ms".into(), json!("1000"));
            }),
        ),
        (
            "not_a_heartbeat",
            with(|o| {
                o.insert("@timestamp".into(), json!("1969-12-31T23:59:59Z"));
            }),
        ),
        (
            "not_a_heartbeat",
            with(|o| {
                o.insert("@timestamp".into(), json!(-5));
            }),
        ),
        (
            "not_a_heartbeat",
            with(|o| {
                o.insert("service.name".into(), json!(null));
            }),
        ),
        (
            "bad_name",
            with(|o| {
                o.insert("service.name".into(), json!(long.clone()));
            }),
        ),
        (
            "bad_name",
            with(|o| {
                o.insert("service.name".into(), json!("order\u{0}"));
            }),
        ),
        (
            "bad_name",
            with(|o| {
                o.insert("service.name".into(), json!("ördér"));
            }),
        ),
        (
            "bad_name",
            with(|o| {
                o.insert("service.instance.id".into(), json!("a b"));
            }),
        ),
        (
            "bad_name",
            with(|o| {
                o.insert("heartbeat.target_service".into(), json!(""));
            }),
        ),
        (
            "bad_name",
            with(|o| {
                o.insert("service.version".into(), json!("v\n1"));
            }),
        ),
        (
            "interval",
            with(|o| {
                o.insert("heartbeat.interval_ms".into(), json!(0));
            }),
        ),
        (
            "interval",
            with(|o| {
                o.insert("heartbeat.interval_ms".into(), json!(u64::MAX));
            }),
        ),
        // Beyond what a SystemTime in ns holds: unparseable.
        (
            "not_a_heartbeat",
            with(|o| {
                o.insert("@timestamp".into(), json!("9999-12-31T23:59:59.999Z"));
            }),
        ),
        (
            "future_timestamp",
            with(|o| {
                o.insert("@timestamp".into(), json!("2500-01-01T00:00:00Z"));
            }),
        ),
        (
            "too_old",
            with(|o| {
                o.insert("@timestamp".into(), json!("1970-01-01T00:00:00Z"));
            }),
        ),
        (
            "shipper_tag",
            with(|o| {
                o.insert(
                    "tags".into(),
                    json!(["mine", "meshwatch_shipper_foreign_service"]),
                );
            }),
        ),
        (
            "shipper_tag",
            with(|o| {
                o.insert("tags".into(), json!("meshwatch_shipper_truncated"));
            }),
        ),
    ];
    for (want, payload) in &cases {
        assert_eq!(
            reason(payload),
            *want,
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    // Tags that are not a shipper's do not matter.
    assert_eq!(
        reason(&with(|o| {
            o.insert("tags".into(), json!(["mine"]));
        })),
        "accepted"
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_are_reported_once_per_period_with_counts_and_one_example() {
    let mut log = RefusalLog::new(REPORT_EVERY, Instant::now());
    assert_eq!(log.report(Instant::now()), None);
    for _ in 0..1000 {
        log.count(&Refusal::Interval(Duration::ZERO), "order/order-1");
    }
    log.count(&Refusal::Future(Duration::from_secs(60)), "");
    // Not before the period is over.
    assert_eq!(log.report(Instant::now()), None);
    tokio::time::advance(REPORT_EVERY).await;
    let report = log.report(Instant::now()).expect("a report");
    assert_eq!(report.total(), 1001);
    assert_eq!(report.counts["interval"], 1000);
    assert_eq!(report.counts["future_timestamp"], 1);
    assert!(
        report.example.starts_with("order/order-1: "),
        "{}",
        report.example
    );
    // Nothing new: no report, however much time passes.
    tokio::time::advance(REPORT_EVERY * 3).await;
    assert_eq!(log.report(Instant::now()), None);
    assert_eq!(log.total(), 1001);
}

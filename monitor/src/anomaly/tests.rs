use std::time::Duration;

use tokio::time::{advance, Instant};

use super::*;
use crate::alert::{AlertKind, AlertState};

fn line(service: &str, code: i64, ms: u64, n: u64) -> String {
    format!(
        r#"{{"@timestamp":"2026-11-25T06:30:00.123Z","log.level":"info","message":"rpc","service.name":"{service}","rpc.method":"PlaceOrder","rpc.grpc.status_code":{code},"event.duration":{},"trace.id":"{n:032x}"}}"#,
        ms * 1_000_000
    )
}

fn cfg() -> AnomalyConfig {
    AnomalyConfig {
        bucket: Duration::from_secs(1),
        buckets: 5,
        min_requests: 50,
        ..AnomalyConfig::default()
    }
}

/// Runs `seconds` of traffic at `per_second` requests/s, each line made by
/// `make(n)`; evaluates at every bucket boundary, returns the alerts.
async fn run(
    det: &mut AnomalyDetector,
    seconds: u64,
    per_second: u64,
    counter: &mut u64,
    make: impl Fn(u64) -> String,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let step = Duration::from_secs(1) / per_second as u32;
    let mut boundary = det.next_boundary(Instant::now());
    for _ in 0..seconds * per_second {
        advance(step).await;
        let now = Instant::now();
        if now >= boundary {
            alerts.extend(det.evaluate(now));
            boundary = det.next_boundary(now);
        }
        *counter += 1;
        let text = make(*counter);
        let req = parse_request(text.as_bytes()).expect("request line");
        det.record(&req, now).expect("record");
    }
    alerts
}

#[tokio::test(start_paused = true)]
async fn error_burst_alerts_then_recovers() {
    let mut det = AnomalyDetector::new(cfg(), Instant::now());
    let mut n = 0;
    // Healthy: 1% errors (UNAVAILABLE), 20 ms.
    let healthy = |n: u64| line("order", if n % 100 == 0 { 14 } else { 0 }, 20, n);
    assert!(run(&mut det, 20, 50, &mut n, healthy).await.is_empty());

    // Burst: 40% INTERNAL.
    let burst = |n: u64| line("order", if n % 5 < 2 { 13 } else { 0 }, 20, n);
    let alerts = run(&mut det, 4, 50, &mut n, burst).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let fired = &alerts[0];
    assert_eq!(fired.kind, AlertKind::ErrorRate);
    assert_eq!(fired.state, AlertState::Firing);
    assert_eq!(fired.service, "order");
    assert!(fired.observed > fired.threshold);
    assert!(fired.baseline < 0.02, "{}", fired.baseline);
    assert!(fired.requests >= 50);
    assert_eq!(fired.window, Duration::from_secs(5));
    assert!(!fired.example_trace_ids.is_empty() && fired.example_trace_ids.len() <= EXAMPLES);

    // Healthy again: resolved once the burst has left the window, same id.
    let alerts = run(&mut det, 10, 50, &mut n, healthy).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].state, AlertState::Resolved);
    assert_eq!(alerts[0].id, fired.id);
    assert_eq!(alerts[0].started_at, fired.started_at);
    // The recovery carries the incident's evidence, whatever its own window holds.
    assert_eq!(alerts[0].example_trace_ids, fired.example_trace_ids);
}

#[tokio::test(start_paused = true)]
async fn low_volume_never_alerts() {
    let mut det = AnomalyDetector::new(cfg(), Instant::now());
    let mut n = 0;
    // 5 requests/s, all failing: 25 per window, below the minimum of 50.
    let alerts = run(&mut det, 30, 5, &mut n, |n| line("payment", 13, 20, n)).await;
    assert!(alerts.is_empty(), "{alerts:?}");
    let stats = det.stats("payment", Instant::now()).expect("known");
    assert_eq!(stats.error_rate, 1.0);
}

#[tokio::test(start_paused = true)]
async fn client_errors_do_not_count() {
    let mut det = AnomalyDetector::new(cfg(), Instant::now());
    let mut n = 0;
    // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION: the caller's problem.
    let alerts = run(&mut det, 20, 50, &mut n, |n| {
        line("inventory", [3, 5, 9][(n % 3) as usize], 20, n)
    })
    .await;
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[tokio::test(start_paused = true)]
async fn latency_spike_alerts_after_warmup_then_recovers() {
    let mut det = AnomalyDetector::new(cfg(), Instant::now());
    let mut n = 0;
    let fast = |n: u64| line("payment", 0, 10 + n % 5, n);
    assert!(run(&mut det, 20, 50, &mut n, fast).await.is_empty());
    let slow = |n: u64| line("payment", 0, if n % 10 == 0 { 800 } else { 12 }, n);
    let alerts = run(&mut det, 3, 50, &mut n, slow).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::Latency);
    assert!(alerts[0].observed > 700.0 && alerts[0].baseline < 20.0);
    assert_eq!(alerts[0].example_trace_ids.len(), EXAMPLES);
    let alerts = run(&mut det, 10, 50, &mut n, fast).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, AlertState::Resolved);
}

#[tokio::test(start_paused = true)]
async fn a_steady_high_error_rate_becomes_the_baseline_only_while_not_firing() {
    let mut det = AnomalyDetector::new(cfg(), Instant::now());
    let mut n = 0;
    // A service that always fails 50% fires once and stays firing: the
    // anomaly never poisons its own baseline.
    let alerts = run(&mut det, 60, 50, &mut n, |n| {
        line("order", if n % 2 == 0 { 13 } else { 0 }, 20, n)
    })
    .await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, AlertState::Firing);
}

#[test]
fn request_lines_are_read_from_any_shape() {
    let r = parse_request(br#"{"service.name":"order","rpc.method":"X","rpc.grpc.status_code":"UNAVAILABLE","event.duration":1500000}"#)
        .expect("request");
    assert!(r.server_error);
    assert_eq!(r.duration, Some(Duration::from_micros(1500)));
    // Other lines of a request carry rpc.method from the span but are not
    // requests: only the access line (with a status code) counts.
    assert!(
        parse_request(br#"{"service.name":"order","rpc.method":"X","log.level":"error"}"#)
            .is_none()
    );
    let r = parse_request(br#"{"service.name":"order","rpc.method":"X","log.level":"error","rpc.grpc.status_code":5}"#)
        .expect("request");
    assert!(!r.server_error, "status code decides when present");
    let r = parse_request(br#"{"service.name":"o\u0072der","rpc.method":"X","rpc.grpc.status_code":0,"trace.id":"ab"}"#)
        .expect("escaped strings are fine");
    assert_eq!(r.service, "order");
    assert!(parse_request(br#"{"service.name":"order","message":"hello"}"#).is_none());
    assert!(parse_request(br#"{"rpc.method":"X","rpc.grpc.status_code":0}"#).is_none());
    assert!(parse_request(b"not json").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_silent_service_is_evicted_after_its_window_and_its_open_alert_closed() {
    let mut det = AnomalyDetector::new(cfg(), Instant::now());
    let mut n = 0;
    let healthy = |n: u64| line("order", 0, 20, n);
    assert!(run(&mut det, 10, 50, &mut n, healthy).await.is_empty());
    let failing = |n: u64| line("order", 13, 20, n);
    let fired = run(&mut det, 3, 50, &mut n, failing).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].state, AlertState::Firing);
    assert_eq!(det.tracked(), 1);

    // order falls silent; payment keeps the clock going. Within the window
    // order is kept (and its alert stays open: too few requests for a verdict).
    let other = |n: u64| line("payment", 0, 20, n);
    let alerts = run(&mut det, 5, 50, &mut n, other).await;
    assert!(alerts.is_empty(), "{alerts:?}");
    assert_eq!(det.tracked(), 2);
    // One more bucket and its whole window is empty: evicted, the alert
    // resolved as abandoned with the incident's id and evidence.
    let alerts = run(&mut det, 2, 50, &mut n, other).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let closed = &alerts[0];
    assert_eq!(closed.state, AlertState::Resolved);
    assert_eq!(closed.id, fired[0].id);
    assert_eq!(closed.requests, 0);
    assert_eq!(closed.example_trace_ids, fired[0].example_trace_ids);
    assert!(
        closed.message.contains("without a verdict"),
        "{}",
        closed.message
    );
    assert_eq!(det.tracked(), 1);
    assert_eq!(det.evicted_total, 1);
    assert!(det.stats("order", Instant::now()).is_none());
}

#[tokio::test(start_paused = true)]
async fn services_beyond_the_cap_are_dropped_and_reported_until_room_is_made() {
    let mut det = AnomalyDetector::new(
        AnomalyConfig {
            max_services: 2,
            ..cfg()
        },
        Instant::now(),
    );
    let mut n = 0;
    let names = ["a", "b", "c", "d", "c"];
    run(&mut det, 1, 5, &mut n, |n| {
        line(names[(n - 1) as usize % 5], 0, 20, n)
    })
    .await;
    assert_eq!(det.tracked(), 2);
    let dropped = det.take_dropped().expect("dropped lines");
    assert_eq!(dropped.lines, 3);
    assert_eq!(dropped.examples, ["c", "d"]);
    assert_eq!(det.take_dropped(), None, "reported once");
    assert_eq!(det.dropped_total, 3);

    // a and b fall silent for a window: evicted, c finds room.
    run(&mut det, 7, 5, &mut n, |n| line("x", 0, 20, n)).await;
    assert!(det.stats("a", Instant::now()).is_none());
    let before = det.dropped_total;
    run(&mut det, 1, 5, &mut n, |n| line("c", 0, 20, n)).await;
    assert_eq!(det.dropped_total, before);
    assert!(det.stats("c", Instant::now()).is_some());
}

#[tokio::test(start_paused = true)]
async fn extreme_configuration_and_input_do_not_panic() {
    let cfg = AnomalyConfig {
        bucket: Duration::from_secs(10 * 365 * 24 * 3600),
        buckets: 1000,
        ..AnomalyConfig::default()
    };
    let start = Instant::now();
    let mut det = AnomalyDetector::new(cfg.clone(), start);
    assert!(det.next_boundary(start) > start);
    assert_eq!(cfg.window(), cfg.bucket.saturating_mul(1000));
    let huge = format!(
        r#"{{"service.name":"s","rpc.grpc.status_code":14,"event.duration":1e300,"trace.id":"{}"}}"#,
        "f".repeat(10_000)
    );
    let req = parse_request(huge.as_bytes()).expect("request");
    assert_eq!(req.trace_id, None, "over-long trace ids are not kept");
    det.record(&req, start).expect("record");
    det.evaluate(start);
    let long_name = format!(
        r#"{{"service.name":"{}","rpc.grpc.status_code":0}}"#,
        "s".repeat(parse::MAX_SERVICE_NAME + 1)
    );
    assert!(parse_request(long_name.as_bytes()).is_none());
    for bad in [
        r#"{"service.name":"s","rpc.grpc.status_code":1e400}"#,
        "[]",
        "{}",
        "",
    ] {
        assert!(parse_request(bad.as_bytes()).is_none(), "{bad}");
    }
}

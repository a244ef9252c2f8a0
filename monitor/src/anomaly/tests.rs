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

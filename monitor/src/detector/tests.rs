use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use tokio::time::{advance, Instant};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// A heartbeat source for one instance with its own (sender) clock.
struct Sender {
    sequence: u64,
    sent: SystemTime,
}

impl Sender {
    fn new() -> Self {
        Self {
            sequence: 0,
            sent: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn beat(&mut self, after: Duration, status: HeartbeatStatus) -> Heartbeat {
        self.sequence += 1;
        self.sent += after;
        Heartbeat {
            timestamp: self.sent,
            service_name: "order".into(),
            instance_id: "order-000000000001".into(),
            version: "0.1.0".into(),
            status,
            sequence: self.sequence,
            interval: SECOND,
            target_service: None,
        }
    }
}

/// Feeds `gaps` as heartbeat arrivals (advancing paused time by each gap) and
/// checks the verdict just before every arrival.
async fn feed(
    cfg: &DetectorConfig,
    gaps: impl IntoIterator<Item = Duration>,
) -> (InstanceDetector, Sender, Vec<Liveness>) {
    let mut sender = Sender::new();
    let mut det = InstanceDetector::new(
        &sender.beat(Duration::ZERO, HeartbeatStatus::Up),
        Instant::now(),
        Duration::ZERO,
        cfg,
    );
    let mut verdicts = Vec::new();
    for gap in gaps {
        advance(gap - Duration::from_millis(1)).await;
        verdicts.push(det.liveness(Instant::now(), cfg));
        advance(Duration::from_millis(1)).await;
        det.heartbeat(
            &sender.beat(gap, HeartbeatStatus::Up),
            Instant::now(),
            Duration::ZERO,
            cfg,
        )
        .expect("accepted");
    }
    (det, sender, verdicts)
}

/// Deterministic pseudo-random jitter in [-max, +max] (xorshift).
fn jittered(n: usize, max_ms: i64, mut seed: u64) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = (seed % (2 * max_ms as u64 + 1)) as i64 - max_ms;
            Duration::from_millis((1000 + j) as u64)
        })
        .collect()
}

/// Advances paused time in 10 ms steps until the verdict is not Alive;
/// returns the silence at that moment.
async fn silence_until_suspected(det: &InstanceDetector, cfg: &DetectorConfig) -> Duration {
    let start = Instant::now();
    while det.liveness(Instant::now(), cfg) == Liveness::Alive {
        advance(Duration::from_millis(10)).await;
        assert!(start.elapsed() < Duration::from_secs(60), "never suspected");
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn steady_heartbeats_are_never_suspected() {
    let cfg = DetectorConfig::default();
    let (det, _, verdicts) = feed(&cfg, std::iter::repeat_n(SECOND, 2000)).await;
    assert!(verdicts.iter().all(|v| *v == Liveness::Alive));
    // Bounded history.
    assert_eq!(det.history.gaps.len(), cfg.max_sample_size);
}

#[tokio::test(start_paused = true)]
async fn silence_is_suspected_within_the_bound() {
    let cfg = DetectorConfig::default();
    let (det, _, _) = feed(&cfg, std::iter::repeat_n(SECOND, 60)).await;
    let silence = silence_until_suspected(&det, &cfg).await;
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Suspected);
    assert!(silence <= cfg.hard_bound(SECOND), "{silence:?}");
    // Steady 1 s gaps, 100 ms floor, 250 ms pause: phi crosses 8 at ~1.77 s.
    assert!(
        silence > Duration::from_millis(1500) && silence < Duration::from_millis(2000),
        "{silence:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hard_bound_caps_a_wide_learned_deviation() {
    let cfg = DetectorConfig::default();
    // Gaps alternating 0.2 s and 1.8 s: std 800 ms, phi alone would wait ~6 s.
    let gaps = (0..200).map(|i| {
        if i % 2 == 0 {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(1800)
        }
    });
    let (det, _, _) = feed(&cfg, gaps).await;
    let silence = silence_until_suspected(&det, &cfg).await;
    let bound = cfg.hard_bound(SECOND);
    assert!(
        silence > bound && silence <= bound + Duration::from_millis(10),
        "{silence:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_within_the_acceptable_pause_is_tolerated() {
    let cfg = DetectorConfig::default();
    let (_, _, verdicts) = feed(&cfg, jittered(3000, 250, 0x9e37_79b9_7f4a_7c15)).await;
    let suspected = verdicts.iter().filter(|v| **v != Liveness::Alive).count();
    assert_eq!(suspected, 0);
}

#[tokio::test(start_paused = true)]
async fn a_late_heartbeat_after_a_stall_is_tolerated_once_learned() {
    let cfg = DetectorConfig::default();
    // A GC-like pause of 1.4 s every 10 beats: learned, so never suspected after warm-up.
    let gaps: Vec<_> = (0..500)
        .map(|i| {
            if i % 10 == 9 {
                Duration::from_millis(1400)
            } else {
                SECOND
            }
        })
        .collect();
    let (_, _, verdicts) = feed(&cfg, gaps).await;
    assert!(verdicts[50..].iter().all(|v| *v == Liveness::Alive));
}

#[tokio::test(start_paused = true)]
async fn graceful_down_is_immediate() {
    let cfg = DetectorConfig::default();
    let (mut det, mut sender, _) = feed(&cfg, std::iter::repeat_n(SECOND, 10)).await;
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Alive);
    advance(Duration::from_millis(100)).await;
    det.heartbeat(
        &sender.beat(Duration::from_millis(100), HeartbeatStatus::Down),
        Instant::now(),
        Duration::ZERO,
        &cfg,
    )
    .expect("accepted");
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Down);
    assert!(!det.liveness(Instant::now(), &cfg).is_serving());
}

#[tokio::test(start_paused = true)]
async fn not_ready_is_not_serving_and_recovers() {
    let cfg = DetectorConfig::default();
    let (mut det, mut sender, _) = feed(&cfg, std::iter::repeat_n(SECOND, 5)).await;
    advance(SECOND).await;
    det.heartbeat(
        &sender.beat(SECOND, HeartbeatStatus::NotReady),
        Instant::now(),
        Duration::ZERO,
        &cfg,
    )
    .expect("accepted");
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::NotReady);
    advance(SECOND).await;
    det.heartbeat(
        &sender.beat(SECOND, HeartbeatStatus::Up),
        Instant::now(),
        Duration::ZERO,
        &cfg,
    )
    .expect("accepted");
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Alive);
}

#[tokio::test(start_paused = true)]
async fn duplicates_do_not_refresh_liveness() {
    let cfg = DetectorConfig::default();
    let (mut det, sender, _) = feed(&cfg, std::iter::repeat_n(SECOND, 10)).await;
    let mut replay = Sender::new();
    let old: Vec<_> = (0..sender.sequence)
        .map(|_| replay.beat(SECOND, HeartbeatStatus::Up))
        .collect();
    let silence = {
        let start = Instant::now();
        while det.liveness(Instant::now(), &cfg) == Liveness::Alive {
            advance(Duration::from_millis(100)).await;
            // Redelivered copies of old heartbeats keep arriving.
            for hb in &old {
                det.heartbeat(hb, Instant::now(), Duration::ZERO, &cfg)
                    .expect("accepted");
            }
            assert!(start.elapsed() < Duration::from_secs(30));
        }
        start.elapsed()
    };
    assert!(silence <= cfg.hard_bound(SECOND));
}

#[tokio::test(start_paused = true)]
async fn stale_heartbeats_do_not_count_as_alive() {
    let cfg = DetectorConfig::default();
    let mut sender = Sender::new();
    let det = InstanceDetector::new(
        &sender.beat(Duration::ZERO, HeartbeatStatus::Up),
        Instant::now(),
        cfg.stale_after + SECOND,
        &cfg,
    );
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Suspected);
}

#[tokio::test(start_paused = true)]
async fn a_replayed_burst_does_not_shrink_the_learned_gap() {
    let cfg = DetectorConfig::default();
    let mut sender = Sender::new();
    // Ten heartbeats sent a second apart arrive at the same instant.
    let mut det = InstanceDetector::new(
        &sender.beat(Duration::ZERO, HeartbeatStatus::Up),
        Instant::now(),
        Duration::from_secs(9),
        &cfg,
    );
    for _ in 0..9 {
        det.heartbeat(
            &sender.beat(SECOND, HeartbeatStatus::Up),
            Instant::now(),
            Duration::from_secs(5),
            &cfg,
        )
        .expect("accepted");
    }
    assert!((det.history.mean() - 1000.0).abs() < 1.0);
    advance(Duration::from_millis(1100)).await;
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Alive);
}

#[tokio::test(start_paused = true)]
async fn the_same_instance_id_restarted_is_recognised() {
    let cfg = DetectorConfig::default();
    let (mut det, sender, _) = feed(&cfg, std::iter::repeat_n(SECOND, 20)).await;
    // The process dies; a new one with the same id starts 5 s later at sequence 1.
    advance(Duration::from_secs(5)).await;
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Suspected);
    let mut restarted = Sender {
        sequence: 0,
        sent: sender.sent,
    };
    let changed = det
        .heartbeat(
            &restarted.beat(Duration::from_secs(5), HeartbeatStatus::Up),
            Instant::now(),
            Duration::ZERO,
            &cfg,
        )
        .expect("accepted");
    assert!(changed);
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Alive);
    assert_eq!(det.last_sequence(), 1);
    // A redelivered copy of an old heartbeat is still no restart.
    let mut old = Sender::new();
    let copy = old.beat(Duration::ZERO, HeartbeatStatus::Up);
    assert!(!det
        .heartbeat(&copy, Instant::now(), Duration::ZERO, &cfg)
        .expect("accepted"));
    assert_eq!(det.last_sequence(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_not_learned_as_a_gap() {
    let cfg = DetectorConfig::default();
    let (mut det, mut sender, _) = feed(&cfg, std::iter::repeat_n(SECOND, 60)).await;
    let before = silence_until_suspected(&det, &cfg).await;
    // Back after 20 s of silence (a partition), then steady again.
    advance(Duration::from_secs(20) - before).await;
    assert!(det
        .heartbeat(
            &sender.beat(Duration::from_secs(20), HeartbeatStatus::Up),
            Instant::now(),
            Duration::ZERO,
            &cfg,
        )
        .expect("accepted"));
    for _ in 0..5 {
        advance(SECOND).await;
        det.heartbeat(
            &sender.beat(SECOND, HeartbeatStatus::Up),
            Instant::now(),
            Duration::ZERO,
            &cfg,
        )
        .expect("accepted");
    }
    // The next silence is detected as fast as before the outage.
    let after = silence_until_suspected(&det, &cfg).await;
    assert!(
        after <= before + Duration::from_millis(20),
        "{after:?} vs {before:?}"
    );
}

#[test]
fn phi_rises_with_silence() {
    let mut last = phi(0.0, 1000.0, 100.0);
    for ms in (100..3000).step_by(100) {
        let p = phi(f64::from(ms), 1000.0, 100.0);
        assert!(p >= last, "phi fell at {ms} ms");
        last = p;
    }
    assert!(phi(1000.0, 1000.0, 100.0) < 0.5);
    assert!(phi(2000.0, 1000.0, 100.0) > DEFAULT_THRESHOLD);
    // The same values as Akka's formula where that one is finite...
    for (elapsed, mean, std) in [
        (1500.0, 1000.0, 200.0),
        (800.0, 1000.0, 100.0),
        (1200.0, 1250.0, 100.0),
    ] {
        let y: f64 = (elapsed - mean) / std;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let akka = -(e / (1.0 + e)).log10();
        assert!(
            (phi(elapsed, mean, std) - akka).abs() < 1e-9,
            "{elapsed} {mean} {std}"
        );
    }
    // ...and finite, still rising, where that one is infinite.
    let long = phi(600_000.0, 1000.0, 100.0);
    assert!(long.is_finite() && long > phi(10_000.0, 1000.0, 100.0));
    assert_eq!(phi(0.0, 1_000_000.0, 100.0), 0.0);
}

/// Feeds heartbeats sent exactly every second, each arriving `delay` ms
/// after it was sent and stamped by a sender clock `skew` ms behind ours
/// (so it looks `delay + skew` old), checking the verdict just before every
/// arrival. Time starts at the first send.
async fn feed_skewed(
    cfg: &DetectorConfig,
    beats: &[(u64, f64)],
) -> (InstanceDetector, Sender, Vec<Liveness>) {
    let mut sender = Sender::new();
    let age = |(delay, skew): (u64, f64)| Age(delay as f64 + skew);
    let first = Duration::from_millis(beats[0].0);
    advance(first).await;
    let mut det = InstanceDetector::new(
        &sender.beat(Duration::ZERO, HeartbeatStatus::Up),
        Instant::now(),
        age(beats[0]),
        cfg,
    );
    let mut verdicts = Vec::new();
    let mut prev = first;
    for beat in &beats[1..] {
        let delay = Duration::from_millis(beat.0);
        // Next send is 1 s after the previous one; it arrives `delay` later.
        let until_arrival = SECOND + delay - prev;
        advance(until_arrival - Duration::from_millis(1)).await;
        verdicts.push(det.liveness(Instant::now(), cfg));
        advance(Duration::from_millis(1)).await;
        det.heartbeat(
            &sender.beat(SECOND, HeartbeatStatus::Up),
            Instant::now(),
            age(*beat),
            cfg,
        )
        .expect("accepted");
        prev = delay;
    }
    (det, sender, verdicts)
}

async fn feed_delayed(
    cfg: &DetectorConfig,
    delays: &[u64],
) -> (InstanceDetector, Sender, Vec<Liveness>) {
    let beats: Vec<(u64, f64)> = delays.iter().map(|d| (*d, 0.0)).collect();
    feed_skewed(cfg, &beats).await
}

#[tokio::test(start_paused = true)]
async fn with_a_trusted_clock_a_late_last_heartbeat_does_not_delay_detection() {
    let cfg = DetectorConfig::default();
    // Delays quantised by a broker's fetch wait: 5..200 ms.
    let jitter: Vec<u64> = (0..60).map(|i| 5 + (i * 37) % 196).collect();
    let mut on_time = jitter.clone();
    on_time.push(5);
    let mut late = jitter;
    late.push(200);
    let (det_on_time, _, verdicts) = feed_delayed(&cfg, &on_time).await;
    assert!(
        verdicts.iter().all(|v| *v == Liveness::Alive),
        "{verdicts:?}"
    );
    assert!(det_on_time.clock_trusted(&cfg));
    let after_on_time = silence_until_suspected(&det_on_time, &cfg).await;
    let (det_late, _, _) = feed_delayed(&cfg, &late).await;
    assert!(det_late.clock_trusted(&cfg));
    let after_late = silence_until_suspected(&det_late, &cfg).await;
    // Measured from the send, both verdicts come at the same moment: the late
    // arrival shortens the silence after it by its own lateness.
    let gap = after_on_time.saturating_sub(after_late);
    assert!(
        gap >= Duration::from_millis(180) && gap <= Duration::from_millis(210),
        "{after_on_time:?} vs {after_late:?}"
    );
    // ... and well within the hard bound, which still counts from the arrival.
    assert!(after_late < cfg.hard_bound(SECOND));
}

#[tokio::test(start_paused = true)]
async fn a_sender_clock_step_is_not_trusted_and_not_suspected() {
    let cfg = DetectorConfig::default();
    // Steady, then the sender's clock steps back 5 s: every later heartbeat
    // looks 5 s older than it is (and a sender 300 ms ahead of us throughout).
    let mut beats = vec![(5u64, -300.0); 30];
    beats.extend(std::iter::repeat_n((5u64, 4700.0), 30));
    let (det, _, verdicts) = feed_skewed(&cfg, &beats).await;
    assert!(
        verdicts.iter().all(|v| *v == Liveness::Alive),
        "{verdicts:?}"
    );
    // Once the step has left the recent delays, the new offset is trusted.
    assert!(det.clock_trusted(&cfg));
    assert!(det.lateness_ms(&cfg) < 1.0);
}

#[tokio::test(start_paused = true)]
async fn next_change_is_the_instant_the_verdict_flips() {
    let cfg = DetectorConfig::default();
    let crossing = cfg.crossing();
    // phi at the crossing is the threshold.
    let y = crossing;
    assert!((phi(1000.0 + 100.0 * y, 1000.0, 100.0) - cfg.threshold).abs() < 1e-6);
    let (det, _, _) = feed(&cfg, std::iter::repeat_n(SECOND, 30)).await;
    let now = Instant::now();
    let due = det.next_change(now, &cfg, crossing).expect("pending");
    advance(due - now - Duration::from_millis(2)).await;
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Alive);
    advance(Duration::from_millis(2)).await;
    assert_eq!(det.liveness(Instant::now(), &cfg), Liveness::Suspected);
    // Suspected by phi: the next change left is the hard bound, then none.
    let hard = det
        .next_change(Instant::now(), &cfg, crossing)
        .expect("hard bound");
    advance(hard - Instant::now()).await;
    assert_eq!(det.next_change(Instant::now(), &cfg, crossing), None);
    // Extreme thresholds give finite crossings.
    for threshold in [1e-9, 0.5, 8.0, 100.0] {
        let c = DetectorConfig {
            threshold,
            ..DetectorConfig::default()
        }
        .crossing();
        assert!(c.is_finite(), "{threshold}: {c}");
    }
}

#[test]
fn hard_bound_saturates() {
    let cfg = DetectorConfig {
        hard_bound_intervals: u32::MAX,
        acceptable_pause: Duration::MAX,
        ..DetectorConfig::default()
    };
    assert_eq!(cfg.hard_bound(Duration::MAX), Duration::MAX);
}

use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_runtime::health::{HealthState, ServingStatus};
use tokio::time::{advance, Instant};

use super::*;
use crate::detector::Liveness;
use crate::trust::Refusal;

const SECOND: Duration = Duration::from_secs(1);

fn hb(service: &str, instance: &str, sequence: u64, status: HeartbeatStatus) -> Heartbeat {
    Heartbeat {
        timestamp: SystemTime::now(),
        service_name: service.into(),
        instance_id: instance.into(),
        version: "0.1.0".into(),
        status,
        sequence,
        interval: SECOND,
        target_service: None,
    }
}

fn observe(reg: &mut Registry, hb: &Heartbeat) {
    reg.observe(hb, Instant::now(), Duration::ZERO)
        .expect("within limits");
}

#[tokio::test(start_paused = true)]
async fn a_service_serves_while_one_instance_is_alive() {
    let mut reg = Registry::new(RegistryConfig::default());
    observe(&mut reg, &hb("order", "a", 1, HeartbeatStatus::Up));
    observe(&mut reg, &hb("order", "b", 1, HeartbeatStatus::Up));
    let changes = reg.evaluate(Instant::now());
    assert_eq!(
        changes,
        vec![StatusChange {
            service: "order".into(),
            from: None,
            to: Some(ServingStatus::Serving)
        }]
    );
    // b says goodbye; a keeps beating: still serving, no change.
    observe(&mut reg, &hb("order", "b", 2, HeartbeatStatus::Down));
    for seq in 2..30 {
        advance(SECOND).await;
        observe(&mut reg, &hb("order", "a", seq, HeartbeatStatus::Up));
        assert!(reg.evaluate(Instant::now()).is_empty());
    }
    // a goes quiet: not serving within the hard bound.
    advance(reg.config().detector.hard_bound(SECOND) + Duration::from_millis(1)).await;
    let changes = reg.evaluate(Instant::now());
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].to, Some(ServingStatus::NotServing));
    assert_eq!(reg.mesh_status(), ServingStatus::NotServing);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_instance_is_recognised() {
    let mut reg = Registry::new(RegistryConfig::default());
    observe(
        &mut reg,
        &hb("payment", "payment-old", 7, HeartbeatStatus::Up),
    );
    reg.evaluate(Instant::now());
    observe(
        &mut reg,
        &hb("payment", "payment-old", 8, HeartbeatStatus::Down),
    );
    let changes = reg.evaluate(Instant::now());
    assert_eq!(changes[0].to, Some(ServingStatus::NotServing));
    // New process, new instance id, sequence starts again at 1.
    advance(SECOND).await;
    observe(
        &mut reg,
        &hb("payment", "payment-new", 1, HeartbeatStatus::Up),
    );
    let changes = reg.evaluate(Instant::now());
    assert_eq!(changes[0].to, Some(ServingStatus::Serving));
    let view = reg.snapshot(Instant::now());
    let ids: Vec<_> = view[0]
        .instances
        .iter()
        .map(|i| i.instance_id.as_str())
        .collect();
    assert_eq!(ids, ["payment-new", "payment-old"]);
}

#[tokio::test(start_paused = true)]
async fn long_gone_instances_are_forgotten_but_the_service_stays_known() {
    let cfg = RegistryConfig {
        forget_after: Duration::from_secs(30),
        ..RegistryConfig::default()
    };
    let mut reg = Registry::new(cfg);
    observe(&mut reg, &hb("inventory", "i1", 1, HeartbeatStatus::Up));
    reg.evaluate(Instant::now());
    advance(Duration::from_secs(31)).await;
    reg.evaluate(Instant::now());
    let view = reg.snapshot(Instant::now());
    assert_eq!(view.len(), 1);
    assert!(view[0].instances.is_empty());
    assert_eq!(view[0].status, ServingStatus::NotServing);
    assert!(view[0].fading);
    assert_eq!(reg.instance_count, 0);
}

#[tokio::test(start_paused = true)]
async fn a_service_gone_longer_than_forget_after_leaves_the_mesh_then_fades_out() {
    let forget = Duration::from_secs(30);
    let cfg = RegistryConfig {
        forget_after: forget,
        ..RegistryConfig::default()
    };
    let health = HealthState::new();
    let mut reg = Registry::new(cfg);
    let step = |reg: &mut Registry| {
        let changes = reg.evaluate(Instant::now());
        publish(&health, &changes, reg.mesh_status());
        changes
    };
    // A bogus (or dead) service beats once; order keeps beating.
    observe(&mut reg, &hb("bogus", "b1", 1, HeartbeatStatus::Up));
    let mut seq = 1;
    observe(&mut reg, &hb("order", "o1", seq, HeartbeatStatus::Up));
    step(&mut reg);
    assert_eq!(health.get(MESH), Some(ServingStatus::Serving));
    let mut beat_order = |reg: &mut Registry| {
        seq += 1;
        observe(reg, &hb("order", "o1", seq, HeartbeatStatus::Up));
    };
    // bogus falls silent: NOT_SERVING, and so is the mesh, until forgotten.
    for _ in 0..30 {
        advance(SECOND).await;
        beat_order(&mut reg);
        step(&mut reg);
    }
    assert_eq!(health.get("bogus"), Some(ServingStatus::NotServing));
    assert_eq!(health.get(MESH), Some(ServingStatus::NotServing));
    // Gone longer than forget-after: the mesh is SERVING again; bogus is
    // still listed NOT_SERVING while it fades, with no instance.
    advance(SECOND).await;
    beat_order(&mut reg);
    step(&mut reg);
    assert_eq!(health.get(MESH), Some(ServingStatus::Serving));
    assert_eq!(health.get("bogus"), Some(ServingStatus::NotServing));
    let view = reg.snapshot(Instant::now());
    let bogus = view.iter().find(|s| s.name == "bogus").expect("listed");
    assert!(bogus.fading && bogus.instances.is_empty());
    // After fading for forget-after too: removed (Check NOT_FOUND, not in List).
    let mut removed = Vec::new();
    for _ in 0..31 {
        advance(SECOND).await;
        beat_order(&mut reg);
        removed.extend(step(&mut reg));
    }
    assert_eq!(
        removed,
        [StatusChange {
            service: "bogus".into(),
            from: Some(ServingStatus::NotServing),
            to: None
        }]
    );
    assert_eq!(health.get("bogus"), None);
    assert!(!health.list().contains_key("bogus"));
    assert_eq!(reg.service_count(), 1);
    assert_eq!(health.get(MESH), Some(ServingStatus::Serving));
}

#[tokio::test(start_paused = true)]
async fn a_new_instance_brings_a_fading_service_back() {
    let cfg = RegistryConfig {
        forget_after: Duration::from_secs(5),
        ..RegistryConfig::default()
    };
    let mut reg = Registry::new(cfg);
    observe(&mut reg, &hb("payment", "p1", 1, HeartbeatStatus::Up));
    reg.evaluate(Instant::now());
    advance(Duration::from_secs(6)).await;
    reg.evaluate(Instant::now());
    assert!(reg.snapshot(Instant::now())[0].fading);
    observe(&mut reg, &hb("payment", "p2", 1, HeartbeatStatus::Up));
    let changes = reg.evaluate(Instant::now());
    assert_eq!(changes[0].to, Some(ServingStatus::Serving));
    assert!(!reg.snapshot(Instant::now())[0].fading);
    // Fading is measured afresh next time.
    advance(Duration::from_secs(6)).await;
    reg.evaluate(Instant::now());
    advance(Duration::from_secs(4)).await;
    assert!(reg.evaluate(Instant::now()).iter().all(|c| c.to.is_some()));
    assert_eq!(reg.service_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_sequence_far_ahead_is_refused_and_does_not_lock_the_instance_out() {
    let mut reg = Registry::new(RegistryConfig::default());
    for seq in 1..=5 {
        observe(&mut reg, &hb("order", "o1", seq, HeartbeatStatus::Up));
        advance(SECOND).await;
    }
    assert!(matches!(
        reg.observe(
            &hb("order", "o1", u64::MAX, HeartbeatStatus::Down),
            Instant::now(),
            Duration::ZERO
        ),
        Err(Refusal::SequenceJump { last: 5, .. })
    ));
    // The real next heartbeat still counts; a gap from lost heartbeats is fine.
    observe(&mut reg, &hb("order", "o1", 6, HeartbeatStatus::Up));
    advance(Duration::from_secs(60)).await;
    observe(&mut reg, &hb("order", "o1", 6 + 60, HeartbeatStatus::Up));
    let view = reg.snapshot(Instant::now());
    assert_eq!(view[0].instances[0].last_sequence, 66);
    assert_eq!(view[0].instances[0].liveness, Liveness::Alive);
}

#[tokio::test(start_paused = true)]
async fn not_ready_instances_do_not_serve() {
    let mut reg = Registry::new(RegistryConfig::default());
    observe(&mut reg, &hb("order", "a", 1, HeartbeatStatus::NotReady));
    assert_eq!(
        reg.evaluate(Instant::now())[0].to,
        Some(ServingStatus::NotServing)
    );
    observe(&mut reg, &hb("order", "a", 2, HeartbeatStatus::Up));
    assert_eq!(
        reg.evaluate(Instant::now())[0].to,
        Some(ServingStatus::Serving)
    );
}

#[tokio::test(start_paused = true)]
async fn shippers_are_keyed_by_their_target_and_limits_hold() {
    let cfg = RegistryConfig {
        max_instances: 2,
        max_services: 2,
        ..RegistryConfig::default()
    };
    let mut reg = Registry::new(cfg);
    let mut shipper = hb("shipper", "shipper-1", 1, HeartbeatStatus::Up);
    shipper.target_service = Some("order".into());
    assert_eq!(service_key(&shipper), "shipper/order");
    observe(&mut reg, &shipper);
    observe(&mut reg, &hb("order", "o1", 1, HeartbeatStatus::Up));
    assert_eq!(
        reg.observe(
            &hb("order", "o2", 1, HeartbeatStatus::Up),
            Instant::now(),
            Duration::ZERO
        ),
        Err(Refusal::TooManyInstances(2))
    );
    assert!(matches!(
        reg.observe(
            &hb("payment", "p1", 1, HeartbeatStatus::Up),
            Instant::now(),
            Duration::ZERO
        ),
        Err(Refusal::TooManyServices(2))
    ));
    let names: Vec<_> = reg
        .snapshot(Instant::now())
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["order", "shipper/order"]);
}

#[tokio::test(start_paused = true)]
async fn publish_sets_short_full_and_mesh_names() {
    let health = HealthState::new();
    let mut reg = Registry::new(RegistryConfig::default());
    assert_eq!(reg.mesh_status(), ServingStatus::Serving);
    observe(&mut reg, &hb("order", "o1", 1, HeartbeatStatus::Up));
    observe(&mut reg, &hb("payment", "p1", 1, HeartbeatStatus::Down));
    let changes = reg.evaluate(Instant::now());
    publish(&health, &changes, reg.mesh_status());
    let list = health.list();
    assert_eq!(list.get("order"), Some(&ServingStatus::Serving));
    assert_eq!(
        list.get("meshwatch.order.v1.OrderService"),
        Some(&ServingStatus::Serving)
    );
    assert_eq!(list.get("payment"), Some(&ServingStatus::NotServing));
    assert_eq!(
        list.get("meshwatch.payment.v1.PaymentService"),
        Some(&ServingStatus::NotServing)
    );
    assert_eq!(list.get(MESH), Some(&ServingStatus::NotServing));
    assert_eq!(list.len(), 5);
}

/// Three services beating every second, 60 times, in step.
async fn steady_mesh(reg: &mut Registry) -> u64 {
    let mut seq = 0;
    for _ in 0..60 {
        seq += 1;
        for (service, id) in [("order", "o1"), ("inventory", "i1"), ("payment", "p1")] {
            observe(reg, &hb(service, id, seq, HeartbeatStatus::Up));
        }
        reg.evaluate(Instant::now());
        advance(SECOND).await;
    }
    seq
}

#[tokio::test(start_paused = true)]
async fn one_silent_instance_among_live_ones_is_suspected_by_phi() {
    let mut reg = Registry::new(RegistryConfig::default());
    let mut seq = steady_mesh(&mut reg).await;
    // payment stops; the others keep beating.
    let mut silent = Duration::ZERO;
    let down = loop {
        advance(Duration::from_millis(100)).await;
        silent += Duration::from_millis(100);
        if silent.as_millis() % 1000 == 0 {
            seq += 1;
            observe(&mut reg, &hb("order", "o1", seq, HeartbeatStatus::Up));
            observe(&mut reg, &hb("inventory", "i1", seq, HeartbeatStatus::Up));
        }
        let changes = reg.evaluate(Instant::now());
        if !changes.is_empty() {
            break changes;
        }
        assert!(silent < Duration::from_secs(10));
    };
    assert_eq!(down[0].service, "payment");
    assert_eq!(down[0].to, Some(ServingStatus::NotServing));
    // phi (~1.8 s after the last heartbeat at 1 s gaps), well before the hard bound.
    let last = silent + SECOND;
    assert!(last < reg.config().detector.hard_bound(SECOND), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silence_of_everyone_at_once_waits_for_the_hard_bound() {
    let mut reg = Registry::new(RegistryConfig::default());
    steady_mesh(&mut reg).await;
    // Nobody is heard from (a stalled broker or consumer): past phi's
    // threshold for every instance, but short of the hard bound, nothing flips.
    let bound = reg.config().detector.hard_bound(SECOND);
    advance(bound - SECOND - Duration::from_millis(10)).await;
    let view = reg.snapshot(Instant::now());
    assert!(view
        .iter()
        .all(|s| s.instances[0].phi > reg.config().detector.threshold));
    assert!(reg.evaluate(Instant::now()).is_empty());
    assert!(view
        .iter()
        .all(|s| s.instances[0].liveness == Liveness::Alive));
    // Past the hard bound: everyone is suspected.
    advance(Duration::from_millis(20)).await;
    assert_eq!(reg.evaluate(Instant::now()).len(), 3);
    assert_eq!(reg.mesh_status(), ServingStatus::NotServing);
}

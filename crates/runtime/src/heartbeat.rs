//! The heartbeat emitter: the task that writes this instance's heartbeat line
//! every interval until shutdown, then a final `down`.

use std::time::{Duration, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_ecs::ServiceIdentity;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use meshwatch_ecs::heartbeat::DEFAULT_INTERVAL;

/// Writes a heartbeat through `out` at once and then every `interval`, with the
/// status read from `ready` (true = up, false = not ready), until `shutdown`;
/// then writes a final `down` heartbeat and returns. Missed ticks (a stalled
/// process) are skipped, not bunched up.
pub async fn run_emitter(
    identity: ServiceIdentity,
    interval: Duration,
    ready: watch::Receiver<bool>,
    mut out: impl FnMut(&str) + Send,
    shutdown: CancellationToken,
) {
    let mut sequence = 0u64;
    let mut beat = |status: HeartbeatStatus| {
        sequence += 1;
        let hb = Heartbeat {
            timestamp: SystemTime::now(),
            service_name: identity.name.clone(),
            instance_id: identity.instance_id.clone(),
            version: identity.version.clone(),
            status,
            sequence,
            interval,
            target_service: None,
        };
        out(&hb.to_json_line());
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                let status = if *ready.borrow() { HeartbeatStatus::Up } else { HeartbeatStatus::NotReady };
                beat(status);
            }
        }
    }
    beat(HeartbeatStatus::Down);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use std::sync::{Arc, Mutex};

    fn parse(line: &str) -> Map<String, Value> {
        match serde_json::from_str(line).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn emitter_beats_every_interval_and_ends_with_down() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let (ready_tx, ready_rx) = watch::channel(true);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_emitter(
            ServiceIdentity::new("order", "0.1.0"),
            Duration::from_secs(1),
            ready_rx,
            move |l: &str| sink.lock().unwrap().push(l.to_owned()),
            shutdown.clone(),
        ));
        // First beat at once, then one per second.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        ready_tx.send(false).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.cancel();
        task.await.unwrap();

        let beats: Vec<Heartbeat> = lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| Heartbeat::from_json(&parse(l)).unwrap())
            .collect();
        let statuses: Vec<_> = beats.iter().map(|b| b.status).collect();
        use HeartbeatStatus::*;
        assert_eq!(statuses, vec![Up, Up, Up, NotReady, Down]);
        let seqs: Vec<_> = beats.iter().map(|b| b.sequence).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
}

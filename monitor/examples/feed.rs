//! Demo feed for a local monitor: creates the three topics, then produces
//! heartbeats for order, inventory and payment every second and access lines
//! for payment (50/s), with a burst of INTERNAL errors and a stop of
//! inventory at chosen times.
//!
//! ```text
//! cargo run -p meshwatch-monitor --example feed -- 127.0.0.1:9092 [seconds] [burst_at] [stop_inventory_at]
//! ```

use std::time::{Duration, Instant, SystemTime};

use meshwatch_ecs::heartbeat::{Heartbeat, HeartbeatStatus};
use meshwatch_kafka::{self as kafka, TopicSpec};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let broker = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (seconds, burst_at, stop_at) = (arg(1, 120), arg(2, 40), arg(3, 90));
    kafka::create_topics(
        &kafka::KafkaArgs::plain(broker.clone()),
        &[
            TopicSpec::new(kafka::HEARTBEATS_TOPIC, 1),
            TopicSpec::new(kafka::LOGS_TOPIC, 1),
            TopicSpec::new(kafka::ALERTS_TOPIC, 1),
        ],
    )
    .await?;
    let producer: FutureProducer = kafka::base_config(&broker).set("linger.ms", "5").create()?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0u64;
    let mut seq = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        n += 1;
        let t = start.elapsed().as_secs();
        if n % 50 == 1 {
            seq += 1;
            for service in ["order", "inventory", "payment"] {
                let status = match (service, t >= stop_at) {
                    ("inventory", true) if t == stop_at => HeartbeatStatus::Down,
                    ("inventory", true) => continue,
                    _ => HeartbeatStatus::Up,
                };
                let hb = Heartbeat {
                    timestamp: SystemTime::now(),
                    service_name: service.into(),
                    instance_id: format!("{service}-00000000feed"),
                    version: "0.1.0".into(),
                    status,
                    sequence: seq,
                    interval: Duration::from_secs(1),
                    target_service: None,
                }
                .to_json_line();
                let _ = producer.send_result(
                    FutureRecord::to(kafka::HEARTBEATS_TOPIC)
                        .key(service)
                        .payload(&hb),
                );
            }
        }
        let failing = t >= burst_at && t < burst_at + 10 && n % 3 == 0;
        let line = format!(
            r#"{{"@timestamp":"{}","log.level":"{}","message":"rpc","ecs.version":"8.11.0","service.name":"payment","service.instance.id":"payment-00000000feed","event.dataset":"payment.log","rpc.method":"Charge","rpc.grpc.status_code":{},"event.duration":{},"trace.id":"{:032x}"}}"#,
            meshwatch_ecs::format_timestamp(SystemTime::now()),
            if failing { "error" } else { "info" },
            if failing { 13 } else { 0 },
            4_000_000 + n % 13 * 250_000,
            u128::from(n) * 0x9e37_79b9_7f4a_7c15
        );
        let _ = producer.send_result(
            FutureRecord::to(kafka::LOGS_TOPIC)
                .key("payment")
                .payload(&line),
        );
    }
    Ok(())
}

//! The test kit against the real test broker: topics, produce, read back, and
//! the cuttable proxy.

use std::time::Duration;

use meshwatch_kafka as kafka;
use meshwatch_testkit::{self as testkit, ProxiedBroker};

#[tokio::test]
async fn topics_are_created_and_reported_missing() {
    let bootstrap = testkit::kafka().await;
    let topic = testkit::unique_topic("testkit-create");
    let other = testkit::unique_topic("testkit-absent");
    testkit::create_topic(&bootstrap, &topic, 3).await;
    // Creating again is fine.
    testkit::create_topic(&bootstrap, &topic, 3).await;
    let missing = kafka::missing_topics(
        &kafka::KafkaArgs::plain(bootstrap.clone()),
        &[&topic, &other],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(missing, vec![other]);
    assert_eq!(
        kafka::partition_count(
            &kafka::KafkaArgs::plain(bootstrap.clone()),
            &topic,
            Duration::from_secs(10)
        )
        .await
        .unwrap(),
        Some(3)
    );
}

#[tokio::test]
async fn produced_records_are_read_back_from_offset_zero() {
    let bootstrap = testkit::kafka().await;
    let topic = testkit::unique_topic("testkit-roundtrip");
    testkit::create_topic(&bootstrap, &topic, 2).await;
    let payloads: Vec<String> = (0..50).map(|i| format!("{{\"n\":{i}}}")).collect();
    let records: Vec<(Option<&str>, &str)> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (Some(if i % 2 == 0 { "a" } else { "b" }), p.as_str()))
        .collect();
    testkit::produce(&bootstrap, &topic, &records).await;
    let got = testkit::read_topic(&bootstrap, &topic, Duration::from_secs(30), |r| {
        r.len() >= 50
    })
    .await;
    assert_eq!(got.len(), 50);
    let mut numbers: Vec<i64> = got
        .iter()
        .map(|r| r.json()["n"].as_i64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..50).collect::<Vec<_>>());
    // Per key, order is kept.
    for key in [b"a".as_slice(), b"b"] {
        let seq: Vec<i64> = got
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .map(|r| r.json()["n"].as_i64().unwrap())
            .collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "{seq:?}");
    }
}

#[tokio::test]
async fn proxied_broker_survives_a_cut() {
    let broker = ProxiedBroker::start().await;
    let topic = testkit::unique_topic("testkit-proxy");
    testkit::create_topic(broker.bootstrap(), &topic, 1).await;
    testkit::produce(broker.bootstrap(), &topic, &[(None, "before")]).await;
    broker.cut().await;
    let err = kafka::missing_topics(
        &kafka::KafkaArgs::plain(broker.bootstrap()),
        &[&topic],
        Duration::from_secs(2),
    )
    .await;
    assert!(err.is_err(), "metadata must fail while cut: {err:?}");
    broker.restore().await;
    testkit::produce(broker.bootstrap(), &topic, &[(None, "after")]).await;
    let got = testkit::read_topic(broker.bootstrap(), &topic, Duration::from_secs(30), |r| {
        r.len() >= 2
    })
    .await;
    let texts: Vec<String> = got.iter().map(testkit::Record::text).collect();
    assert_eq!(texts, vec!["before", "after"]);
}

//! The test kit against the real test broker: topics, produce, read back, and
//! the cuttable proxy.

use std::time::Duration;

use meshwatch_kafka as kafka;
use meshwatch_testkit::{self as testkit, ProxiedBroker};
use rdkafka::producer::FutureProducer;
use rdkafka::Offset;

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

/// A consumer that starts inside a batch reads the rest of that batch, as
/// from Kafka: the monitor's consumer resumes after the last record it handed
/// out, which is often inside a batch. (tansu 0.6.0 as published answered with
/// the batches after it only, and the rest of the batch was never read.)
#[tokio::test]
async fn a_consumer_starting_inside_a_batch_reads_the_rest_of_it() {
    let bootstrap = testkit::kafka().await;
    let topic = testkit::unique_topic("testkit-mid-batch");
    testkit::create_topic(&bootstrap, &topic, 1).await;
    // Sent together under a long linger: the first 10 go as one batch, then
    // the next 5 as another.
    let producer: FutureProducer = kafka::base_config(&bootstrap)
        .set("linger.ms", "300")
        .create()
        .expect("producer");
    let payloads: Vec<String> = (0..15).map(|i| format!("r{i}")).collect();
    for chunk in [&payloads[..10], &payloads[10..]] {
        testkit::produce_together(&producer, &topic, chunk).await;
    }
    for start in [4, 9, 10, 12] {
        let got = testkit::read_topic_from(
            &bootstrap,
            &topic,
            Offset::Offset(start),
            Duration::from_secs(20),
            move |r| r.len() >= (15 - start) as usize,
        )
        .await;
        let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
        let texts: Vec<String> = got
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        assert_eq!(offsets, (start..15).collect::<Vec<_>>(), "from {start}");
        assert_eq!(texts, payloads[start as usize..], "from {start}");
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

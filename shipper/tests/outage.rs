//! Kafka unreachable (a broker behind a cuttable proxy): the tail waits at its
//! checkpoint, wrap mode spools to disk without ever blocking the service and
//! with bounded memory, the spool survives a restart, and lines beyond the
//! spool bound are counted and reported once Kafka is back; a broker that
//! answers late still gets every line, in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use common::*;
use meshwatch_shipper::{CHECKPOINT_FILE, LOSS_TAG};
use meshwatch_testkit::{self as testkit, ProxiedBroker};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(60);

fn stat(v: &serde_json::Value, name: &str) -> u64 {
    v[name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_waits_at_its_checkpoint_while_kafka_is_away() {
    const TOTAL: u64 = 60_000;
    let broker = ProxiedBroker::start().await;
    let (logs, hb) = topics(broker.bootstrap(), "outage-tail", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order.log");
    let data = dir.path().join("data");
    let mut w = BufWriter::new(File::create(&path).unwrap());
    for n in 0..TOTAL {
        writeln!(w, "{}", numbered_line(n, 4)).unwrap();
    }
    drop(w);
    broker.cut().await;

    let mut args = vec![
        "--file",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--stats",
        "100ms",
        "--checkpoint",
        "100ms",
        "--window-records",
        "10000",
    ];
    args.extend(kafka_args(broker.bootstrap(), &logs, &hb));
    let shipper = Shipper::spawn(&args);

    // The window fills, then reading stops: the file is the buffer.
    testkit::wait_for(WAIT, "a full in-flight window", || {
        shipper
            .stats()
            .last()
            .is_some_and(|s| stat(s, "shipper.in_flight") >= 10_000)
            .then_some(())
    })
    .await;
    let seen = shipper.stats().len();
    testkit::wait_for(WAIT, "five more stats lines", || {
        (shipper.stats().len() >= seen + 5).then_some(())
    })
    .await;
    let last = shipper.stats().last().cloned().unwrap();
    assert_eq!(stat(&last, "shipper.lines_shipped"), 0);
    assert!(
        stat(&last, "shipper.lines_read") < TOTAL / 2,
        "reading stopped at the window: {last}"
    );
    let cp = meshwatch_shipper::checkpoint::load(&data.join(CHECKPOINT_FILE))
        .unwrap()
        .expect("the first start is marked");
    assert_eq!(
        cp.offset, 0,
        "nothing acknowledged, the checkpoint stays at 0"
    );

    broker.restore().await;
    let records = testkit::read_topic(broker.bootstrap(), &logs, WAIT, has_all_below(TOTAL)).await;
    shipper.signal(Signal::SIGTERM);
    let out = shipper.wait(WAIT).await;
    assert_eq!(out.code, Some(0));
    let dups = assert_all_arrived(&records, TOTAL);
    assert_order_per_key(&records);
    eprintln!("tail outage: {dups} duplicates of {TOTAL}");
    let cp = meshwatch_shipper::checkpoint::load(&data.join(CHECKPOINT_FILE))
        .unwrap()
        .unwrap();
    assert_eq!(cp.offset, std::fs::metadata(&path).unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_spools_to_disk_never_blocks_the_service_and_memory_stays_bounded() {
    const TOTAL: u64 = 100_000;
    let broker = ProxiedBroker::start().await;
    let (logs, hb) = topics(broker.bootstrap(), "outage-wrap", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let done = dir.path().join("done");
    broker.cut().await;

    let script = writer_script(TOTAL, &done);
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "writer",
        "--stats",
        "200ms",
    ];
    args.extend(kafka_args(broker.bootstrap(), &logs, &hb));
    args.extend(["--", "sh", "-c", &script]);
    let started = Instant::now();
    let mut shipper = Shipper::spawn_piped(&args);

    // The service writes everything while Kafka is away: it was never blocked.
    testkit::wait_for(WAIT, "the wrapped service to finish writing", || {
        done.exists().then_some(())
    })
    .await;
    let write_time = started.elapsed();
    let spooled = testkit::wait_for(WAIT, "everything in the spool", || {
        shipper
            .stats()
            .last()
            .filter(|s| stat(s, "shipper.lines_read") >= TOTAL)
            .map(|s| stat(s, "shipper.spool_bytes"))
    })
    .await;
    let peak_kib = peak_rss_kib(shipper.pid()).unwrap();
    testkit::wait_for(WAIT, "every line passed through to stdout", || {
        let lines = shipper.stdout().iter().filter(|b| **b == b'\n').count();
        (lines as u64 == TOTAL).then_some(())
    })
    .await;
    assert!(spooled > 10 << 20, "the lines are on disk: {spooled} bytes");
    // The named bound: 8 MiB in-flight window (ours) + librdkafka's queue capped
    // to twice that; the spool is on disk.
    assert!(
        peak_kib < 80 * 1024,
        "peak RSS {peak_kib} KiB with {spooled} bytes spooled"
    );
    eprintln!(
        "wrap outage: {TOTAL} lines written in {write_time:?} with Kafka away, \
         {spooled} bytes spooled, shipper peak RSS {peak_kib} KiB"
    );

    broker.restore().await;
    let records = testkit::read_topic(broker.bootstrap(), &logs, WAIT, has_all_below(TOTAL)).await;
    drop(shipper.stdin.take()); // the service exits 3
    let out = shipper.wait(WAIT).await;
    assert_eq!(out.code, Some(3));
    drop(records);
    let records = read_all(broker.bootstrap(), &logs, WAIT).await;
    let dups = assert_all_arrived(&records, TOTAL);
    assert_eq!(dups, 0, "no restart, no duplicates");
    assert_order_per_key(&records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_survives_a_shipper_restart() {
    const TOTAL: u64 = 30_000;
    let broker = ProxiedBroker::start().await;
    let (logs, hb) = topics(broker.bootstrap(), "outage-restart", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let done = dir.path().join("done");
    broker.cut().await;

    let script = writer_script(TOTAL, &done);
    let base = |grace: &'static str| {
        let mut args = vec![
            "--data-dir".to_owned(),
            data.to_str().unwrap().to_owned(),
            "--service-name".into(),
            "writer".into(),
            "--stats".into(),
            "0ms".into(),
            "--shutdown-grace".into(),
            grace.into(),
        ];
        args.extend(
            kafka_args(broker.bootstrap(), &logs, &hb)
                .into_iter()
                .map(str::to_owned),
        );
        args
    };
    let mut first_args = base("300ms");
    first_args.extend(["--".into(), "sh".into(), "-c".into(), script]);
    let refs: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let mut first = Shipper::spawn_piped(&refs);
    testkit::wait_for(WAIT, "the wrapped service to finish writing", || {
        done.exists().then_some(())
    })
    .await;
    drop(first.stdin.take());
    let out = first.wait(WAIT).await;
    assert_eq!(out.code, Some(3), "{:?}", out.stderr);
    assert!(
        out.stderr.iter().any(|l| l.contains("unacknowledged")),
        "says records are left: {:?}",
        out.stderr
    );

    // Kafka is back; a new shipper on the same data directory replays the spool.
    broker.restore().await;
    let mut second_args = base("20000ms");
    second_args.extend(["--".into(), "true".into()]);
    let refs: Vec<&str> = second_args.iter().map(String::as_str).collect();
    let second = Shipper::spawn(&refs);
    let out = second.wait(WAIT).await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
    let records = testkit::read_topic(broker.bootstrap(), &logs, WAIT, has_all_below(TOTAL)).await;
    drop(records);
    let records = read_all(broker.bootstrap(), &logs, WAIT).await;
    let dups = assert_all_arrived(&records, TOTAL);
    assert_eq!(dups, 0, "nothing was acknowledged before the restart");
    assert_order_per_key(&records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_beyond_the_spool_bound_are_counted_and_reported_once_kafka_is_back() {
    const TOTAL: u64 = 5_000;
    let broker = ProxiedBroker::start().await;
    let (logs, hb) = topics(broker.bootstrap(), "outage-loss", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let done = dir.path().join("done");
    broker.cut().await;

    let script = writer_script(TOTAL, &done);
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "writer",
        "--stats",
        "100ms",
        "--spool-max-bytes",
        "65536",
    ];
    args.extend(kafka_args(broker.bootstrap(), &logs, &hb));
    args.extend(["--", "sh", "-c", &script]);
    let mut shipper = Shipper::spawn_piped(&args);
    testkit::wait_for(WAIT, "every line read (spooled or dropped)", || {
        shipper
            .stats()
            .last()
            .is_some_and(|s| stat(s, "shipper.lines_read") >= TOTAL)
            .then_some(())
    })
    .await;

    broker.restore().await;
    let records = testkit::read_topic(broker.bootstrap(), &logs, WAIT, |r| {
        r.iter().any(|r| r.text().contains(LOSS_TAG))
    })
    .await;
    drop(shipper.stdin.take());
    let out = shipper.wait(WAIT).await;
    assert_eq!(out.code, Some(3));
    let reports: Vec<serde_json::Value> = records
        .iter()
        .map(testkit::Record::json)
        .filter(|v| v["tags"][0] == LOSS_TAG)
        .collect();
    assert_eq!(reports.len(), 1, "one report: {reports:#?}");
    let report = &reports[0];
    assert_eq!(report["service.name"], "shipper");
    assert_eq!(report["shipper.target_service"], "writer");
    assert_eq!(report["log.level"], "error");
    let dropped = report["shipper.lines_dropped"].as_u64().unwrap();
    let shipped = distinct_below(&records, TOTAL) as u64;
    assert!(
        dropped > 0 && shipped > 0,
        "{shipped} shipped, {dropped} dropped"
    );
    assert_eq!(shipped + dropped, TOTAL, "every line shipped or counted");
    // What was kept is the oldest, without gaps.
    assert_all_arrived(&records, shipped);
    assert!(
        out.stderr.iter().any(|l| l.contains("were dropped")),
        "also said on stderr"
    );
}

/// A broker whose every answer arrives 40 ms late, while lines keep coming:
/// every line arrives, in order, and the shipper ends cleanly. This is the
/// case of the librdkafka fix carried in `vendor/rdkafka-sys` (see
/// vendor/README.md): a partition that must wait for in-flight answers no
/// longer schedules its own wake-up, so the answers are what must wake it;
/// were they not to, this would stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_answers_late_still_gets_every_line_in_order() {
    const TOTAL: u64 = 4_000;
    let broker = ProxiedBroker::start().await;
    let (logs, hb) = topics(broker.bootstrap(), "slow-broker", 1).await;
    broker.delay_answers(Duration::from_millis(40));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = vec![
        "--stdin",
        "--data-dir",
        data.to_str().unwrap(),
        "--service-name",
        "order",
        "--stats",
        "0ms",
    ];
    args.extend(kafka_args(broker.bootstrap(), &logs, &hb));
    let mut shipper = Shipper::spawn_piped(&args);
    let mut stdin = shipper.stdin.take().unwrap();
    // 40 lines every 2 ms: records keep coming while answers are outstanding.
    let writer = std::thread::spawn(move || {
        for chunk in 0..TOTAL / 40 {
            for n in chunk * 40..(chunk + 1) * 40 {
                writeln!(stdin, "{}", numbered_line(n, 1)).unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let records = testkit::read_topic(broker.bootstrap(), &logs, WAIT, has_all_below(TOTAL)).await;
    writer.join().unwrap();
    let out = shipper.wait(WAIT).await;
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
    assert_eq!(assert_all_arrived(&records, TOTAL), 0, "no duplicates");
    assert_order_per_key(&records);
}

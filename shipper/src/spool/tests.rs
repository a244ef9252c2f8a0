use super::*;
use crate::route::{Destination, Key};
use proptest::prelude::*;
use std::io::Seek;

const SOURCE: u64 = 0xfeed_0000_0000_beef;

fn rec(i: usize) -> Record {
    Record {
        destination: if i % 5 == 0 {
            Destination::Heartbeats
        } else {
            Destination::Logs
        },
        key: Key::from(format!("k{}", i % 3).as_str()),
        traceparent: (i % 2 == 0).then(|| {
            let (t, s) = (format!("{:032x}", i + 1), format!("{:016x}", i + 1));
            crate::route::traceparent(Some(&t), Some(&s)).unwrap()
        }),
        payload: format!("{{\"n\":{i}}}").into_bytes(),
    }
}

fn opts(max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        segment_bytes,
        fsync: FsyncPolicy::Every(Duration::from_millis(50)),
        id_source: SOURCE,
    }
}

fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Spool {
    Spool::open(dir, opts(max_bytes, segment_bytes)).unwrap()
}

/// `n` of a record as read back (its payload now also carries event.id).
fn n_of(r: &Record) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    v["n"].as_u64().unwrap()
}

fn id_of(r: &Record) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    v["event.id"].as_str().unwrap().to_owned()
}

/// Everything until the writers are done: records and incidents.
async fn read_all(spool: &Spool) -> (Vec<(Record, SpoolPos)>, Vec<Incident>) {
    let mut records = Vec::new();
    let mut incidents = Vec::new();
    while let Some(batch) = tokio::time::timeout(Duration::from_secs(5), spool.next_batch(7))
        .await
        .expect("spool read must not hang")
    {
        for item in batch {
            match item {
                SpoolItem::Record(r, p) => records.push((r, p)),
                SpoolItem::Incident(i, _) => incidents.push(i),
            }
        }
    }
    (records, incidents)
}

#[tokio::test]
async fn records_come_back_in_order_across_segments_with_their_event_ids() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), 1 << 20, 300);
    spool.add_writer();
    let recs: Vec<Record> = (0..100).map(rec).collect();
    for chunk in recs.chunks(9) {
        assert_eq!(spool.append(chunk), 0);
    }
    spool.writer_done();
    let (got, incidents) = read_all(&spool).await;
    assert!(incidents.is_empty());
    assert_eq!(got.len(), 100);
    for (i, (r, _)) in got.iter().enumerate() {
        assert_eq!(n_of(r), i as u64);
        assert_eq!(
            (r.key.clone(), r.destination),
            (rec(i).key, rec(i).destination)
        );
        assert_eq!(r.traceparent, rec(i).traceparent);
    }
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "positions increase"
    );
    let ids: Vec<String> = got.iter().map(|(r, _)| id_of(r)).collect();
    assert!(ids[0].starts_with("feed00000000beef"), "{}", ids[0]);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers increase"
    );
    assert!(
        segment::list(dir.path(), segment::EXTENSION).unwrap().len() > 3,
        "several segments were used"
    );
}

#[tokio::test]
async fn unacknowledged_records_survive_a_restart_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let recs: Vec<Record> = (0..50).map(rec).collect();
    let first_ids: Vec<String>;
    {
        let spool = open(dir.path(), 1 << 20, 300);
        spool.append(&recs);
        let batch = spool.next_batch(20).await.unwrap();
        let records: Vec<(Record, SpoolPos)> = batch
            .into_iter()
            .filter_map(|i| match i {
                SpoolItem::Record(r, p) => Some((r, p)),
                SpoolItem::Incident(..) => None,
            })
            .collect();
        first_ids = records.iter().map(|(r, _)| id_of(r)).collect();
        // Only the first 10 were acknowledged before the "crash".
        spool.commit(records[9].1);
        spool.persist().unwrap();
    }
    let spool = open(dir.path(), 1 << 20, 300);
    let (got, incidents) = read_all(&spool).await;
    assert!(incidents.is_empty(), "{incidents:?}");
    assert_eq!(
        got.iter().map(|(r, _)| n_of(r)).collect::<Vec<_>>(),
        (10..50).collect::<Vec<_>>()
    );
    let again: Vec<String> = got.iter().take(10).map(|(r, _)| id_of(r)).collect();
    assert_eq!(
        again,
        first_ids[10..20].to_vec(),
        "a replayed record keeps its event.id"
    );
}

#[tokio::test]
async fn bound_drops_and_counts_and_commit_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let one = frame::encoded_len(&rec(1)).unwrap() as u64;
    let spool = open(dir.path(), one * 10, one * 2);
    spool.add_writer();
    let recs: Vec<Record> = (0..15).map(|_| rec(1)).collect();
    // One append is one write into the current segment; segments roll between appends.
    let dropped: usize = recs.chunks(2).map(|c| spool.append(c)).sum();
    assert_eq!(dropped, 5);
    assert_eq!(spool.dropped().0, 5);
    assert!(spool.bytes() <= one * 10);
    let batch = spool.next_batch(100).await.unwrap();
    assert_eq!(batch.len(), 10);
    let SpoolItem::Record(_, last) = &batch[9] else {
        panic!("a record")
    };
    spool.commit(*last);
    assert!(
        spool.bytes() <= one * 2,
        "acknowledged segments are deleted"
    );
    assert_eq!(spool.append(&recs[..5]), 0);
}

#[tokio::test]
async fn acknowledged_segments_are_deleted_by_persist_after_the_position_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let one = frame::encoded_len(&rec(1)).unwrap() as u64;
    // Segments roll between appends: one append of two records per segment.
    let spool = open(dir.path(), one * 100, one);
    spool.add_writer();
    let recs: Vec<Record> = (0..10).map(rec).collect();
    for c in recs.chunks(2) {
        assert_eq!(spool.append(c), 0);
    }
    let files = || segment::list(dir.path(), segment::EXTENSION).unwrap().len();
    assert_eq!(files(), 5);
    let batch = spool.next_batch(100).await.unwrap();
    let SpoolItem::Record(_, last) = &batch[5] else {
        panic!("a record")
    };
    let before = spool.bytes();
    // Just after the sixth record: the end of the third segment.
    spool.commit(*last);
    assert!(spool.bytes() < before, "counted as freed at once");
    // The commit (on the shipping loop) touches no file: the unlinks wait
    // for the save, which runs off the loop.
    assert_eq!(files(), 5);
    assert!(spool.persist_due());
    spool.persist().unwrap();
    assert_eq!(files(), 3, "the two segments before the position are gone");
    assert!(!spool.persist_due());
    let saved = read_position(&dir.path().join(POSITION_FILE));
    assert!(
        matches!(saved, Saved::Current { pos, .. } if pos == *last),
        "the position is saved"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_start_reported_first_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(dir.path(), 1 << 20, 1 << 20);
        spool.append(&[rec(1), rec(2)]);
        // The start of a third frame, cut short by a crash.
        let mut third = Vec::new();
        frame::encode(&rec(3), 99, &mut third).unwrap();
        let seg = segment::path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&third[..third.len() / 2]).unwrap();
    }
    let size_before = fs::metadata(segment::path(dir.path(), 1)).unwrap().len();
    let spool = open(dir.path(), 1 << 20, 1 << 20);
    let size_after = fs::metadata(segment::path(dir.path(), 1)).unwrap().len();
    assert!(
        size_after < size_before,
        "cut: {size_before} -> {size_after}"
    );
    spool.add_writer();
    spool.append(&[rec(4)]);
    spool.writer_done();
    let (got, incidents) = read_all(&spool).await;
    assert_eq!(
        got.iter().map(|(r, _)| n_of(r)).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert!(
        matches!(incidents[0], Incident::TornTail { segment: 1, .. }),
        "{incidents:?}"
    );
    assert!(incidents[0].message().contains("torn"));
}

#[tokio::test]
async fn a_damaged_record_is_reported_and_everything_else_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let one = frame::encoded_len(&rec(1)).unwrap() as u64;
    {
        let spool = open(dir.path(), 1 << 20, 1 << 20);
        spool.append(&(0..10).map(rec).collect::<Vec<_>>());
    }
    // Flip a byte in the body of the record 3, and wreck the header of record 6.
    let path = segment::path(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let offsets: Vec<u64> = {
        let mut o = vec![0u64];
        for i in 0..10 {
            o.push(o[i] + frame::encoded_len(&rec(i)).unwrap() as u64);
        }
        o
    };
    bytes[usize::try_from(offsets[3]).unwrap() + frame::HEADER_LEN + 2] ^= 0x40;
    for b in &mut bytes[usize::try_from(offsets[6]).unwrap()..][..10] {
        *b = 0;
    }
    fs::write(&path, &bytes).unwrap();
    let spool = open(dir.path(), 1 << 20, 1 << 20);
    let (got, incidents) = read_all(&spool).await;
    assert_eq!(
        got.iter().map(|(r, _)| n_of(r)).collect::<Vec<_>>(),
        vec![0, 1, 2, 4, 5, 7, 8, 9]
    );
    assert_eq!(incidents.len(), 2, "{incidents:?}");
    assert_eq!(
        incidents[0],
        Incident::Corrupt {
            segment: 1,
            offset: offsets[3],
            bytes: offsets[4] - offsets[3],
            seq: Some(3)
        }
    );
    assert_eq!(
        incidents[1],
        Incident::Corrupt {
            segment: 1,
            offset: offsets[6],
            bytes: offsets[7] - offsets[6],
            seq: None
        }
    );
    let _ = one;
}

#[tokio::test]
async fn sequence_numbers_are_never_reused_even_after_appends_were_lost() {
    let dir = tempfile::tempdir().unwrap();
    let seen: Vec<String>;
    {
        let spool = open(dir.path(), 1 << 20, 1 << 20);
        spool.append(&(0..5).map(rec).collect::<Vec<_>>());
        let (got, _) = {
            spool.add_writer();
            spool.writer_done();
            read_all(&spool).await
        };
        seen = got.iter().map(|(r, _)| id_of(r)).collect();
    }
    // A power cut took the whole segment (shipped, never synced).
    fs::remove_file(segment::path(dir.path(), 1)).unwrap();
    let spool = open(dir.path(), 1 << 20, 1 << 20);
    spool.add_writer();
    spool.append(&(10..15).map(rec).collect::<Vec<_>>());
    spool.writer_done();
    let (got, _) = read_all(&spool).await;
    for (r, _) in &got {
        assert!(!seen.contains(&id_of(r)), "{} reused", id_of(r));
    }
}

#[tokio::test]
async fn a_spool_of_the_format_before_checksums_is_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Vec::new();
    for i in 0..6 {
        legacy::encode(&rec(i), &mut old);
    }
    fs::write(dir.path().join(format!("{:020}.seg", 3)), &old).unwrap();
    // Records 0 and 1 were acknowledged before the upgrade.
    let acked = {
        let mut b = Vec::new();
        legacy::encode(&rec(0), &mut b);
        legacy::encode(&rec(1), &mut b);
        b.len()
    };
    fs::write(dir.path().join(POSITION_FILE), format!("3 {acked}\n")).unwrap();
    let spool = open(dir.path(), 1 << 20, 1 << 20);
    spool.add_writer();
    spool.writer_done();
    let (got, incidents) = read_all(&spool).await;
    assert!(incidents.is_empty());
    assert_eq!(
        got.iter().map(|(r, _)| n_of(r)).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert!(
        segment::list(dir.path(), "seg").unwrap().is_empty(),
        "old segments deleted"
    );
    assert!(fs::read_to_string(dir.path().join(POSITION_FILE))
        .unwrap()
        .starts_with("v2 "));
}

#[tokio::test]
async fn a_carry_over_cut_short_is_done_again_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Vec::new();
    for i in 0..6 {
        legacy::encode(&rec(i), &mut old);
    }
    fs::write(dir.path().join(format!("{:020}.seg", 3)), &old).unwrap();
    fs::write(dir.path().join(POSITION_FILE), "3 0\n").unwrap();
    // The new spool is too small for the old records: the carry-over stops
    // half-way, as a crash in the middle of it would.
    assert!(Spool::open(dir.path(), opts(300, 300)).is_err());
    assert!(dir.path().join(legacy::PENDING).exists());
    assert_eq!(segment::list(dir.path(), "seg").unwrap().len(), 1);

    let spool = open(dir.path(), 1 << 20, 1 << 20);
    spool.add_writer();
    spool.writer_done();
    let (got, incidents) = read_all(&spool).await;
    assert!(incidents.is_empty());
    assert_eq!(
        got.iter().map(|(r, _)| n_of(r)).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>(),
        "every old record carried over once"
    );
    assert!(segment::list(dir.path(), "seg").unwrap().is_empty());
    assert!(!dir.path().join(legacy::PENDING).exists());
}

#[tokio::test]
async fn reader_waits_for_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(open(dir.path(), 1 << 20, 1 << 20));
    spool.add_writer();
    let reader = {
        let spool = spool.clone();
        tokio::spawn(async move { spool.next_batch(10).await })
    };
    tokio::task::yield_now().await;
    spool.append(&[rec(7)]);
    let got = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(&got[0], SpoolItem::Record(r, _) if n_of(r) == 7));
}

#[tokio::test]
async fn always_fsync_covers_every_append_and_the_syncer_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(1 << 20, 200);
    o.fsync = FsyncPolicy::Always;
    let spool = Arc::new(Spool::open(dir.path(), o).unwrap());
    spool.start_syncer().unwrap();
    spool.add_writer();
    // Two appenders at once (stdout and stderr readers): every append returns
    // only once an fsync that completed covers it.
    let appenders: Vec<_> = (0..2)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    assert_eq!(spool.append(&[rec(t * 100 + i)]), 0);
                    let (appended, synced, _) = spool.sync_counts();
                    assert!(synced >= 1 && appended >= synced);
                }
            })
        })
        .collect();
    for a in appenders {
        a.join().unwrap();
    }
    let (appended, synced, fsyncs) = spool.sync_counts();
    assert_eq!((appended, synced), (100, 100), "every append fsynced");
    assert!(fsyncs >= 1);
    spool.writer_done();
    assert_eq!(read_all(&spool).await.0.len(), 100);

    // The interval policy: the syncer (or sync_now) covers appends.
    let dir = tempfile::tempdir().unwrap();
    let every = Arc::new(open(dir.path(), 1 << 20, 200));
    every.start_syncer().unwrap();
    assert_eq!(every.append(&[rec(1)]), 0);
    every.sync_now();
    assert_eq!(every.sync_counts().1, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random damage (overwritten stretches, a cut tail) to a spool on disk:
    /// reading never hangs or panics, yields only records that were written,
    /// each once, in order, and reports damage whenever records are missing.
    #[test]
    fn damaged_spools_deliver_every_intact_record(
        n in 1usize..40,
        hits in proptest::collection::vec((any::<prop::sample::Index>(), 1usize..64, any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            {
                let spool = open(dir.path(), 1 << 20, 1 << 20);
                for chunk in (0..n).map(rec).collect::<Vec<_>>().chunks(3) {
                    spool.append(chunk);
                }
            }
            let path = segment::path(dir.path(), 1);
            let mut f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
            let len = f.metadata().unwrap().len();
            // Where each record's frame lies: [start, end) in the segment.
            let mut frames = Vec::new();
            let mut start = 0usize;
            for i in 0..n {
                let end = start + frame::encoded_len(&rec(i)).unwrap();
                frames.push((start, end));
                start = end;
            }
            prop_assert_eq!(start as u64, len);
            let mut damaged = vec![false; n];
            for (at, span, byte) in &hits {
                let pos = at.index(usize::try_from(len).unwrap());
                f.seek(io::SeekFrom::Start(pos as u64)).unwrap();
                let junk = vec![*byte | 1; (*span).min(usize::try_from(len).unwrap() - pos)];
                f.write_all(&junk).unwrap();
                for (k, (s, e)) in frames.iter().enumerate() {
                    if pos < *e && pos + junk.len() > *s {
                        damaged[k] = true;
                    }
                }
            }
            if let Some(cut) = cut {
                let at = cut.index(usize::try_from(len).unwrap() + 1);
                f.set_len(at as u64).unwrap();
                for (k, (_, e)) in frames.iter().enumerate() {
                    if *e > at {
                        damaged[k] = true;
                    }
                }
            }
            drop(f);
            let spool = open(dir.path(), 1 << 20, 1 << 20);
            spool.add_writer();
            spool.writer_done();
            let (got, incidents) = read_all(&spool).await;
            let ns: Vec<u64> = got.iter().map(|(r, _)| n_of(r)).collect();
            prop_assert!(ns.windows(2).all(|w| w[0] < w[1]), "{:?}", ns);
            prop_assert!(ns.iter().all(|&k| (k as usize) < n));
            // Missing records are reported, unless a cut took whole records
            // off the end (what a power cut does to unsynced appends).
            if incidents.is_empty() {
                prop_assert_eq!(&ns, &(0..ns.len() as u64).collect::<Vec<_>>());
                prop_assert!(ns.len() == n || cut.is_some());
            }
            if hits.is_empty() && cut.is_none() {
                prop_assert_eq!(ns.len(), n);
            }
            // Whatever was reported, every frame the damage did not touch is delivered.
            let untouched_missing: Vec<usize> = (0..n)
                .filter(|k| !damaged[*k] && !ns.contains(&(*k as u64)))
                .collect();
            prop_assert!(
                untouched_missing.is_empty(),
                "untouched frames not delivered: {:?} (incidents {:?})",
                untouched_missing,
                incidents
            );
            Ok(())
        })?;
    }
}

//! Reads a pipe until end of stream: optionally passes the bytes through
//! unchanged, frames and encodes lines, and appends them to the spool.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::SystemTime;

use crate::event::{Enricher, RawLine, Record};
use crate::framing::LineFramer;
use crate::spool::Spool;
use crate::stats::Counters;

const READ_BYTES: usize = 64 << 10;

/// Runs on its own thread until `reader` reaches end of stream; then marks this
/// spool writer done. `tee` receives every byte before anything else happens.
pub(crate) fn pump(
    mut reader: impl Read,
    mut tee: Option<Box<dyn Write + Send>>,
    mut enricher: Enricher,
    max_line: usize,
    spool: Arc<Spool>,
    counters: Arc<Counters>,
) {
    let mut framer = LineFramer::new(max_line, 0);
    let mut buf = vec![0u8; READ_BYTES];
    let mut records: Vec<Record> = Vec::new();
    let mut tee_failed = false;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                crate::diag::error(&format!("reading the input failed: {e}"), &[]);
                break;
            }
        };
        let chunk = &buf[..n];
        if let Some(out) = tee.as_mut() {
            // The pass-through comes first and never waits on Kafka. If our own
            // stdout is gone, keep shipping: the service must not notice.
            if let Err(e) = out.write_all(chunk).and_then(|()| out.flush()) {
                if !std::mem::replace(&mut tee_failed, true) {
                    crate::diag::warn(
                        &format!("pass-through write failed: {e}; still shipping"),
                        &[],
                    );
                }
            }
        }
        counters.add_read(n as u64);
        let ingested = meshwatch_ecs::format_timestamp(SystemTime::now());
        framer.feed(chunk, |l| {
            records.push(enricher.encode(&raw(&l), &ingested));
        });
        ship(&spool, &mut records, &counters);
    }
    let ingested = meshwatch_ecs::format_timestamp(SystemTime::now());
    framer.finish(|l| records.push(enricher.encode(&raw(&l), &ingested)));
    ship(&spool, &mut records, &counters);
    spool.writer_done();
}

fn raw<'a>(l: &crate::framing::FramedLine<'a>) -> RawLine<'a> {
    RawLine {
        bytes: l.bytes,
        original_len: l.original_len,
        truncated: l.truncated,
        no_newline: l.no_newline,
        file: None,
        // The spool adds it: its sequence number is known only there.
        id: None,
    }
}

fn ship(spool: &Spool, records: &mut Vec<Record>, counters: &Counters) {
    if records.is_empty() {
        return;
    }
    counters.add_lines(records.len() as u64);
    spool.append(records);
    records.clear();
}

//! Lines from the shipper's own stdin (`service | shipper --stdin`).

use std::sync::Arc;

use crate::event::Enricher;
use crate::spool::Spool;
use crate::stats::Counters;

/// Starts the reader thread; the spool ends when stdin does.
pub fn spawn(
    spool: Arc<Spool>,
    enricher: Enricher,
    max_line: usize,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    spool.add_writer();
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            super::pipe::pump(std::io::stdin(), None, enricher, max_line, spool, counters)
        })?;
    Ok(())
}

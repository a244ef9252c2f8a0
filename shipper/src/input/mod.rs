//! Where lines come from: a tailed file ([`file`]), a wrapped command
//! ([`exec`]) or stdin ([`stdin`]). Every input frames and encodes lines on its
//! own thread; the file input hands batches to the shipping loop over a bounded
//! channel, the pipe inputs append to the disk spool (they never wait on Kafka).

pub mod exec;
pub mod file;
mod pipe;
pub mod stdin;

use std::sync::Arc;

use crate::checkpoint::FileIdentity;
use crate::event::Record;
use crate::spool::SpoolPos;

/// Where a record came from: what to commit once it is acknowledged.
#[derive(Clone, Debug)]
pub enum Position {
    /// Tailed file and the offset just after the line.
    File(Arc<FileIdentity>, u64),
    /// Spool position just after the record.
    Spool(SpoolPos),
    /// The shipper's own records (heartbeats, loss reports): nothing to commit.
    Internal,
}

/// One encoded record and its position.
#[derive(Clone, Debug)]
pub struct Item {
    pub record: Record,
    pub pos: Position,
}

/// What an input hands over at once.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
}

//! Segment files of the spool: `<id:020>.spool`, frames appended in order, and
//! the scan on start that finds where the last good frame of a segment ends.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::frame::{self, Decoded};

pub const EXTENSION: &str = "spool";

pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{EXTENSION}"))
}

/// Segment id → size, for every segment file in `dir` with `extension`.
pub fn list(dir: &Path, extension: &str) -> io::Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(extension))
            .and_then(|n| n.strip_suffix('.'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.insert(id, entry.metadata()?.len());
    }
    Ok(out)
}

/// What a segment holds, read from its start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Where the last good frame ends: anything after it is a torn or damaged tail.
    pub valid_end: u64,
    /// The sequence number of the last good frame.
    pub last_seq: Option<u64>,
}

/// Reads the whole segment (at most a segment's size plus one frame) and
/// finds the end of its last good frame, stepping over damage in the middle.
pub fn scan(file: &File) -> io::Result<Scan> {
    let mut bytes = Vec::new();
    (&*file).read_to_end(&mut bytes)?;
    let mut scan = Scan::default();
    let mut i = 0;
    while i < bytes.len() {
        match frame::decode(&bytes[i..]) {
            Decoded::Frame { seq, len, .. } => {
                i += len;
                scan.valid_end = u64::try_from(i).unwrap_or(u64::MAX);
                scan.last_seq = Some(seq);
            }
            // The record is lost but the frame's extent is certain.
            Decoded::BadBody { len, .. } => i += len,
            Decoded::BadHeader => match frame::find_header(&bytes, i + 1) {
                Some(next) => i = next,
                None => break,
            },
            Decoded::Incomplete { .. } => break,
        }
    }
    Ok(scan)
}

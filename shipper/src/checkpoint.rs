//! The tail checkpoint: which file (device, inode and a fingerprint of its first
//! bytes, so a replaced or rotated file is recognised) and up to which offset
//! Kafka has acknowledged every line. Written atomically (temp file, fsync, rename).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How many leading bytes of a file identify it (with its device and inode).
pub const FINGERPRINT_BYTES: u64 = 1024;
/// A file is recognised by its content (as the copy of another, or as a
/// generation already shipped) only once this many leading bytes are known:
/// fewer could match an unrelated file.
pub const MIN_FINGERPRINT: u64 = 128;
/// Finished generations remembered in the checkpoint.
pub const DONE_KEPT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The identity of one generation of a file, independent of its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    /// FNV-1a of the first `fingerprint_len` bytes (at most [`FINGERPRINT_BYTES`]).
    pub fingerprint: u64,
    pub fingerprint_len: u64,
    /// FNV-1a of the first line (at most [`FINGERPRINT_BYTES`]), once complete:
    /// with the inode and birth time it names the generation in every line's
    /// `event.id`, the same in every run of the shipper.
    #[serde(default)]
    pub head: Option<u64>,
    /// The inode's birth time (ns since the epoch; 0 where the file system
    /// does not say): tells a reused inode from the file that had it before.
    #[serde(default)]
    pub born: u64,
    /// The `event.id` source when it is not this file's own: a copy read in
    /// place of a generation seen (and partly shipped) before keeps its ids.
    #[serde(default)]
    pub id_source: Option<u64>,
    /// Not part of the identity: the tail's successor bound when this
    /// generation was opened (ns since the epoch). Rotated files last written
    /// before it are not among the generations after this one. Saved with the
    /// checkpoint so that a restart, however late, keeps the bound instead of
    /// guessing it from the checkpoint's own write time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successors_after: Option<u64>,
}

impl FileIdentity {
    /// Identity of an open file, fingerprinting up to [`FINGERPRINT_BYTES`].
    pub fn of(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let len = meta.len().min(FINGERPRINT_BYTES);
        let mut first = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let got = read_prefix(file, &mut first)?;
        first.truncate(got);
        Ok(Self::from_prefix(&meta, &first))
    }

    /// Identity from the first bytes of a file as read (the head is known once
    /// the first line is complete or the prefix full).
    pub fn from_prefix(meta: &fs::Metadata, first: &[u8]) -> Self {
        Self::from_parts(meta.dev(), meta.ino(), birth_time(meta), first)
    }

    /// [`Self::from_prefix`] from the parts of the metadata it uses.
    pub fn from_parts(dev: u64, ino: u64, born: u64, first: &[u8]) -> Self {
        let first = &first[..first.len().min(FINGERPRINT_BYTES as usize)];
        let head = match memchr::memchr(b'\n', first) {
            Some(nl) => Some(fnv(&first[..=nl])),
            None if first.len() as u64 == FINGERPRINT_BYTES => Some(fnv(first)),
            None => None,
        };
        Self {
            dev,
            ino,
            fingerprint: fnv(first),
            fingerprint_len: first.len() as u64,
            head,
            born,
            id_source: None,
            successors_after: None,
        }
    }

    /// Whether `file` is this file: same device and inode, same leading bytes.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        let meta = file.metadata()?;
        if meta.dev() != self.dev || meta.ino() != self.ino {
            return Ok(false);
        }
        Ok(fingerprint(file, self.fingerprint_len)? == Some(self.fingerprint))
    }

    /// Whether `file` starts with the same bytes (any inode): a copy of this
    /// file. Never for a fingerprint shorter than [`MIN_FINGERPRINT`].
    pub fn same_content_start(&self, file: &File) -> io::Result<bool> {
        if self.fingerprint_len < MIN_FINGERPRINT {
            return Ok(false);
        }
        Ok(fingerprint(file, self.fingerprint_len)? == Some(self.fingerprint))
    }

    /// Same generation: same inode, birth time and first line.
    pub fn same_generation(&self, other: &Self) -> bool {
        (self.dev, self.ino, self.born, self.head) == (other.dev, other.ino, other.born, other.head)
    }

    /// The first half of the `event.id` of this generation's lines.
    pub fn event_source(&self) -> u64 {
        if let Some(source) = self.id_source {
            return source;
        }
        crate::event_id::fnv64(&[
            b"file",
            &self.dev.to_le_bytes(),
            &self.ino.to_le_bytes(),
            &self.born.to_le_bytes(),
            &self.head.unwrap_or(self.fingerprint).to_le_bytes(),
        ])
    }
}

/// The inode's birth time in ns since the epoch, or 0 where unknown.
pub fn birth_time(meta: &fs::Metadata) -> u64 {
    meta.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// A generation read to its end and acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneFile {
    pub file: FileIdentity,
    /// Its length when finished: a file identified by fewer than
    /// [`MIN_FINGERPRINT`] bytes is recognised again only at this length.
    pub size: u64,
}

/// Where tailing resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// The path the file had when read (informational; the identity decides).
    pub path: PathBuf,
    pub file: FileIdentity,
    /// Every line before this offset has been acknowledged by Kafka.
    pub offset: u64,
    /// Generations finished before it, oldest first (at most [`DONE_KEPT`]):
    /// never shipped again however they are renamed.
    #[serde(default)]
    pub done: Vec<DoneFile>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over the first `len` bytes, or `None` if the file is shorter.
/// Uses positioned reads: the file's read position does not move.
pub fn fingerprint(file: &File, len: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; usize::try_from(len.min(FINGERPRINT_BYTES)).unwrap_or(0)];
    if read_prefix(file, &mut buf)? < buf.len() {
        return Ok(None);
    }
    Ok(Some(fnv(&buf)))
}

/// Reads the first `buf.len()` bytes (fewer at end of file); returns how many.
fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// FNV-1a (64 bits) of `bytes`.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub fn load(path: &Path) -> Result<Option<FileCheckpoint>, CheckpointError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| CheckpointError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

pub fn save(path: &Path, cp: &FileCheckpoint) -> Result<(), CheckpointError> {
    let bytes = serde_json::to_vec(cp).unwrap_or_default();
    write_atomic(path, &bytes).map_err(|source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn save_load_round_trip_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        assert_eq!(load(&p).unwrap(), None);
        let cp = FileCheckpoint {
            path: "/x".into(),
            file: FileIdentity {
                dev: 1,
                ino: 2,
                fingerprint: 3,
                fingerprint_len: 4,
                head: Some(5),
                born: 1,
                id_source: None,
                successors_after: Some(7),
            },
            offset: 99,
            done: vec![],
        };
        save(&p, &cp).unwrap();
        assert_eq!(load(&p).unwrap(), Some(cp));
        assert!(!p.with_extension("tmp").exists());
        fs::write(&p, b"{nope").unwrap();
        assert!(matches!(load(&p), Err(CheckpointError::Corrupt { .. })));
        // A checkpoint of the previous format still loads.
        fs::write(
            &p,
            br#"{"path":"/x","file":{"dev":1,"ino":2,"fingerprint":3,"fingerprint_len":4},"offset":9}"#,
        )
        .unwrap();
        let old = load(&p).unwrap().unwrap();
        assert_eq!((old.offset, old.file.head, old.done.len()), (9, None, 0));
    }

    #[test]
    fn short_fingerprints_never_match_by_content_and_heads_name_generations() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        fs::write(&a, b"short\n").unwrap();
        let id = FileIdentity::of(&File::open(&a).unwrap()).unwrap();
        assert!(id.fingerprint_len < MIN_FINGERPRINT);
        let b = dir.path().join("b.log");
        fs::write(&b, b"short\nand more").unwrap();
        assert!(!id.same_content_start(&File::open(&b).unwrap()).unwrap());
        // The head is the first line: fixed once complete, however the file grows.
        let grown = FileIdentity::from_parts(1, 2, 3, b"short\nand more");
        assert_eq!(grown.head, id.head);
        assert_ne!(grown.fingerprint, id.fingerprint);
        assert!(FileIdentity::from_parts(1, 2, 3, b"no newline yet")
            .head
            .is_none());
        // A reused inode (another birth time) is another generation.
        let reborn = FileIdentity::from_parts(1, 2, 4, b"short\nand more");
        assert_ne!(reborn.event_source(), grown.event_source());
        assert!(!reborn.same_generation(&grown));
    }

    #[test]
    fn identity_tells_files_apart_by_inode_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let first = format!(
            "first line of a, long enough to identify it: {}\n",
            "x".repeat(200)
        );
        fs::write(&a, &first).unwrap();
        let fa = File::open(&a).unwrap();
        let id = FileIdentity::of(&fa).unwrap();
        assert!(id.matches(&fa).unwrap());

        // Rename keeps the identity.
        let rotated = dir.path().join("a.log.1");
        fs::rename(&a, &rotated).unwrap();
        assert!(id.matches(&File::open(&rotated).unwrap()).unwrap());

        // A new file with the same content start is a copy, not the same file.
        fs::write(&a, format!("{first}more\n")).unwrap();
        let fb = File::open(&a).unwrap();
        assert!(!id.matches(&fb).unwrap());
        assert!(id.same_content_start(&fb).unwrap());

        // Truncated and rewritten in place: same inode, different content.
        fs::write(&rotated, "other content....\n".repeat(20)).unwrap();
        assert!(!id.matches(&File::open(&rotated).unwrap()).unwrap());
    }

    #[test]
    fn fingerprint_does_not_move_the_read_position() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        fs::write(&a, b"0123456789").unwrap();
        let mut f = File::open(&a).unwrap();
        f.seek(SeekFrom::Start(5)).unwrap();
        FileIdentity::of(&f).unwrap();
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "56789");
    }
}

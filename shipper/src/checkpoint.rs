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

/// The identity of one file, independent of its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    /// FNV-1a of the first `fingerprint_len` bytes.
    pub fingerprint: u64,
    pub fingerprint_len: u64,
}

impl FileIdentity {
    /// Identity of an open file, fingerprinting up to [`FINGERPRINT_BYTES`].
    pub fn of(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let len = meta.len().min(FINGERPRINT_BYTES);
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            fingerprint: fingerprint(file, len)?.unwrap_or(FNV_OFFSET),
            fingerprint_len: len,
        })
    }

    /// Whether `file` is this file: same device and inode, same leading bytes.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        let meta = file.metadata()?;
        if meta.dev() != self.dev || meta.ino() != self.ino {
            return Ok(false);
        }
        Ok(fingerprint(file, self.fingerprint_len)? == Some(self.fingerprint))
    }

    /// Whether `file` starts with the same bytes (any inode): a copy of this file.
    pub fn same_content_start(&self, file: &File) -> io::Result<bool> {
        Ok(fingerprint(file, self.fingerprint_len)? == Some(self.fingerprint))
    }
}

/// Where tailing resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// The path the file had when read (informational; the identity decides).
    pub path: PathBuf,
    pub file: FileIdentity,
    /// Every line before this offset has been acknowledged by Kafka.
    pub offset: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over the first `len` bytes, or `None` if the file is shorter.
/// Uses positioned reads: the file's read position does not move.
fn fingerprint(file: &File, len: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; len as usize];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => return Ok(None),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut h = FNV_OFFSET;
    for b in buf {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(Some(h))
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
            },
            offset: 99,
        };
        save(&p, &cp).unwrap();
        assert_eq!(load(&p).unwrap(), Some(cp));
        assert!(!p.with_extension("tmp").exists());
        fs::write(&p, b"{nope").unwrap();
        assert!(matches!(load(&p), Err(CheckpointError::Corrupt { .. })));
    }

    #[test]
    fn identity_tells_files_apart_by_inode_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        fs::write(&a, b"first line of a\n").unwrap();
        let fa = File::open(&a).unwrap();
        let id = FileIdentity::of(&fa).unwrap();
        assert!(id.matches(&fa).unwrap());

        // Rename keeps the identity.
        let rotated = dir.path().join("a.log.1");
        fs::rename(&a, &rotated).unwrap();
        assert!(id.matches(&File::open(&rotated).unwrap()).unwrap());

        // A new file with the same content start is a copy, not the same file.
        fs::write(&a, b"first line of a\nmore\n").unwrap();
        let fb = File::open(&a).unwrap();
        assert!(!id.matches(&fb).unwrap());
        assert!(id.same_content_start(&fb).unwrap());

        // Truncated and rewritten in place: same inode, different content.
        fs::write(&rotated, b"other content....\n").unwrap();
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

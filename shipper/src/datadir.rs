//! The data directory: one shipper at a time (an exclusive `flock` on
//! `<data-dir>/lock`, released by the kernel however the holder ends, even on
//! kill -9), and the directory's persistent agent id (`agent.id`, the first
//! half of every spooled record's `event.id`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

/// The lock file in the data directory; it names its holder.
pub const LOCK_FILE: &str = "lock";
/// The persistent agent id (32 hex digits) in the data directory.
pub const AGENT_ID_FILE: &str = "agent.id";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Another shipper holds the directory; `holder` is what it wrote about itself.
    #[error(
        "data directory {path} is in use by another shipper ({holder}); \
         one shipper per data directory: give this one its own --data-dir"
    )]
    Locked { path: PathBuf, holder: String },
}

/// The held lock: released when dropped (or when the process ends, however).
#[derive(Debug)]
pub struct DataDirLock {
    _lock: Flock<File>,
}

/// Takes the directory's lock without waiting and writes who holds it
/// (pid, host, start time, command line) into the lock file.
pub fn lock(dir: &Path, host_name: &str) -> Result<DataDirLock, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |source| DataDirError::Io {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(DataDirError::Locked {
                path: dir.to_owned(),
                holder: if holder.is_empty() {
                    "a shipper that has not written its pid yet".to_owned()
                } else {
                    holder.to_owned()
                },
            });
        }
        Err((_, errno)) => return Err(io_err(io::Error::from(errno))),
    };
    let command: Vec<String> = std::env::args().collect();
    let me = format!(
        "pid {} on {host_name}, started {}: {}\n",
        std::process::id(),
        meshwatch_ecs::format_timestamp(SystemTime::now()),
        command.join(" ")
    );
    lock.set_len(0)
        .and_then(|()| lock.seek(SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| lock.write_all(me.as_bytes()))
        .map_err(io_err)?;
    Ok(DataDirLock { _lock: lock })
}

/// The directory's agent id, created (random, 128 bits) on first use and kept
/// for good: records spooled under it keep their `event.id` across restarts
/// (the spool stores sequence numbers, not the id: should the id file be
/// damaged and a new id made, records still spooled get new ids).
pub fn agent_id(dir: &Path) -> Result<AgentId, DataDirError> {
    let path = dir.join(AGENT_ID_FILE);
    let io_err = |source| DataDirError::Io {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            if let Some(id) = AgentId::parse(text.trim()) {
                return Ok(id);
            }
            // A torn or foreign file: a new id never collides with older
            // ones, but the spool does not store the id its records were
            // written under: records still in it (not yet acknowledged) are
            // read back with ids from the new one, so a record already sent
            // once before the restart may be indexed twice. Storing the id
            // per segment would fix that at the price of a format change;
            // this case needs a damaged data directory, so it is reported.
            crate::diag::warn(
                &format!(
                    "{} is not a valid agent id; a new one is made: records still in the spool \
                     get new event.ids, and one sent before this start may be indexed twice",
                    path.display()
                ),
                &[],
            );
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let id = AgentId(rand::random::<u128>());
    crate::checkpoint::write_atomic(&path, format!("{id}\n").as_bytes()).map_err(io_err)?;
    Ok(id)
}

/// A data directory's persistent identity (`agent.id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentId(pub u128);

impl AgentId {
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Self)
    }

    /// The 64 bits that name the spool as a source of `event.id`s.
    pub fn spool_source(self) -> u64 {
        // The high half: any 64 bits of a random id are as good as the rest.
        u64::try_from(self.0 >> 64).unwrap_or(u64::MAX)
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path(), "host-a").unwrap();
        match lock(dir.path(), "host-b") {
            Err(DataDirError::Locked { holder, .. }) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                );
                assert!(holder.contains("host-a"), "{holder}");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        let again = lock(dir.path(), "host-b").unwrap();
        let text = fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(
            text.contains("host-b") && !text.contains("host-a"),
            "{text}"
        );
        drop(again);
    }

    #[test]
    fn agent_id_is_kept_and_a_bad_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let id = agent_id(dir.path()).unwrap();
        assert_eq!(agent_id(dir.path()).unwrap(), id);
        assert_eq!(AgentId::parse(&id.to_string()), Some(id));
        fs::write(dir.path().join(AGENT_ID_FILE), "nope").unwrap();
        let new = agent_id(dir.path()).unwrap();
        assert_ne!(new, id);
        assert_eq!(AgentId::parse("g".repeat(32).as_str()), None);
    }
}

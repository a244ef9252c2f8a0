//! Wrap mode: spawn the service, pass its stdout and stderr through unchanged to
//! ours, ship both, forward signals, and report its exit code.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::event::Enricher;
use crate::spool::Spool;
use crate::stats::Counters;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot read the output of {program:?}: {source}")]
    Pipe {
        program: String,
        source: std::io::Error,
    },
}

/// The wrapped process as the shipping loop sees it: a pid to signal and its
/// exit code once it ends. The `Child` itself lives in a waiting task and is
/// killed if the runtime goes away first.
#[derive(Debug)]
pub struct Wrapped {
    pid: Option<Pid>,
    exit: tokio::sync::oneshot::Receiver<i32>,
}

impl Wrapped {
    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid {
            if let Err(e) = kill(pid, signal) {
                crate::diag::warn(
                    &format!("forwarding {signal} to the wrapped process failed: {e}"),
                    &[],
                );
            }
        }
    }

    /// Waits for the child to exit; returns the code the shipper should exit with
    /// (the child's, or 128 + signal number when a signal killed it).
    pub async fn wait(&mut self) -> i32 {
        (&mut self.exit).await.unwrap_or(70)
    }
}

async fn wait_for(mut child: tokio::process::Child, tx: tokio::sync::oneshot::Sender<i32>) {
    let code = match child.wait().await {
        Ok(status) => exit_code(status),
        Err(e) => {
            crate::diag::error(&format!("waiting for the wrapped process failed: {e}"), &[]);
            70
        }
    };
    let _ = tx.send(code);
}

pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Spawns `program args…` with piped stdout/stderr and starts one pump per pipe.
pub fn spawn(
    program: &str,
    args: &[String],
    spool: Arc<Spool>,
    enricher: Enricher,
    max_line: usize,
    counters: Arc<Counters>,
) -> Result<Wrapped, ExecError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let pipe_err = |source| ExecError::Pipe {
        program: program.to_owned(),
        source,
    };
    let missing = || pipe_err(std::io::Error::other("pipe not captured"));
    let stdout = File::from(
        child
            .stdout
            .take()
            .ok_or_else(missing)?
            .into_owned_fd()
            .map_err(pipe_err)?,
    );
    let stderr = File::from(
        child
            .stderr
            .take()
            .ok_or_else(missing)?
            .into_owned_fd()
            .map_err(pipe_err)?,
    );
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    for (name, pipe, tee) in [
        (
            "stdout-pump",
            stdout,
            Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>,
        ),
        ("stderr-pump", stderr, Box::new(std::io::stderr())),
    ] {
        spool.add_writer();
        let (spool, enricher, counters) = (spool.clone(), enricher.clone(), counters.clone());
        let started = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || super::pipe::pump(pipe, Some(tee), enricher, max_line, spool, counters));
        if let Err(source) = started {
            return Err(pipe_err(source));
        }
    }
    let (tx, exit) = tokio::sync::oneshot::channel();
    tokio::spawn(wait_for(child, tx));
    Ok(Wrapped { pid, exit })
}

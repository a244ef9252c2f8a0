//! meshwatch shipper: the sidecar that ships one service's JSON lines to Kafka
//! at least once. Inputs: a tailed file (rotation-aware, checkpointed), a
//! wrapped command (output passed through, signals forwarded, disk-spooled), or
//! stdin. See `run`.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod diag;
pub mod event;
pub mod framing;
pub mod input;
mod pipeline;
pub mod route;
pub(crate) mod scan;
pub mod sink;
pub mod spool;
pub mod stats;

use meshwatch_entry::Exit;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use config::{Args, Config, Input};
pub use pipeline::LOSS_TAG;

/// File name of the tail checkpoint in the data directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// Directory of the spool in the data directory.
pub const SPOOL_DIR: &str = "spool";
/// Batches waiting between the tail thread and the shipping loop.
const TAIL_CHANNEL_BATCHES: usize = 4;

/// A shutdown request from outside. In wrap mode it is forwarded to the child
/// (the shipper ends when the child does); otherwise it starts the drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownSignal {
    Terminate,
    Interrupt,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Sink(#[from] sink::SinkError),
    #[error(transparent)]
    Exec(#[from] input::exec::ExecError),
    #[error("cannot start the input reader: {0}")]
    Reader(std::io::Error),
}

impl RunError {
    /// Exit code for `main`: 127 when the wrapped command cannot start (as a
    /// shell does), 73 for an unusable data directory, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Exec(input::exec::ExecError::Spawn { .. }) => 127,
            RunError::DataDir { .. } | RunError::Spool(_) | RunError::Checkpoint(_) => {
                Exit::CantCreate.into()
            }
            _ => Exit::Runtime.into(),
        }
    }
}

/// Ships until the input ends (or, outside wrap mode, a signal arrives), then
/// drains within the grace period and commits. Returns the process exit code:
/// the wrapped command's in wrap mode, 0 otherwise. A broker that is down is
/// not an error: records wait (tail) or are spooled (wrap, stdin).
pub async fn run(
    config: Config,
    signals: mpsc::UnboundedReceiver<ShutdownSignal>,
) -> Result<i32, RunError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let (sink, acks) = sink::Sink::new(&config)?;
    let sink = Arc::new(sink);
    let counters = Arc::new(stats::Counters::default());
    let enricher = event::Enricher::new(&config.host_name, &config.service_name);
    let topics = tokio::spawn(stats::watch_topics(
        sink.clone(),
        config.topic_check_interval,
    ));

    let (source, spool, child) = match &config.input {
        Input::File(path) => {
            let cp_path = config.data_dir.join(CHECKPOINT_FILE);
            let checkpoint = checkpoint::load(&cp_path)?;
            let (tx, rx) = mpsc::channel(TAIL_CHANNEL_BATCHES);
            let stop = Arc::new(AtomicBool::new(false));
            let opts = input::file::TailOptions {
                path: path.clone(),
                max_line: config.max_line_bytes,
                poll_interval: config.poll_interval,
                checkpoint,
            };
            input::file::spawn(opts, enricher, tx, stop.clone(), counters.clone())
                .map_err(RunError::Reader)?;
            let source = pipeline::Source::File {
                rx,
                stop,
                path: path.clone(),
                checkpoint: cp_path,
            };
            (source, None, None)
        }
        Input::Stdin => {
            let spool = Arc::new(spool::Spool::open(
                &config.data_dir.join(SPOOL_DIR),
                config.spool_max_bytes,
            )?);
            input::stdin::spawn(
                spool.clone(),
                enricher,
                config.max_line_bytes,
                counters.clone(),
            )
            .map_err(RunError::Reader)?;
            (pipeline::Source::Spool(spool.clone()), Some(spool), None)
        }
        Input::Exec { program, args } => {
            let spool = Arc::new(spool::Spool::open(
                &config.data_dir.join(SPOOL_DIR),
                config.spool_max_bytes,
            )?);
            let child = input::exec::spawn(
                program,
                args,
                spool.clone(),
                enricher,
                config.max_line_bytes,
                counters.clone(),
            )?;
            (
                pipeline::Source::Spool(spool.clone()),
                Some(spool),
                Some(child),
            )
        }
    };
    let core = pipeline::Core::new(config, sink, acks, counters, spool);
    let code = core.run(source, signals, child).await;
    topics.abort();
    Ok(code)
}

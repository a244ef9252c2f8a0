//! meshwatch shipper: the sidecar that ships one service's JSON lines to Kafka
//! at least once. Inputs: a tailed file (rotation-aware, checkpointed), a
//! wrapped command (output passed through, signals forwarded, disk-spooled), or
//! stdin. See `run`.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod datadir;
pub mod diag;
pub mod event;
pub mod event_id;
pub mod framing;
pub mod identity;
pub mod input;
mod pipeline;
pub mod route;
pub(crate) mod scan;
pub mod sink;
pub mod spool;
pub mod stats;

use meshwatch_ecs::ServiceIdentity;
use meshwatch_entry::Exit;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use config::{Args, Config, Input};
pub use pipeline::{LOSS_TAG, TAG_RECORD_REFUSED, TAG_SPOOL_CORRUPT, TAG_SPOOL_TORN};

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
    Locked(#[from] datadir::DataDirError),
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
    /// shell does), 73 for an unusable data directory (or one another shipper
    /// holds), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Exec(input::exec::ExecError::Spawn { .. }) => 127,
            RunError::DataDir { .. }
            | RunError::Locked(_)
            | RunError::Spool(_)
            | RunError::Checkpoint(_) => Exit::CantCreate.into(),
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
    // Held until run returns; the kernel frees it however the process ends.
    let _lock = datadir::lock(&config.data_dir, &config.host_name)?;
    let identity = ServiceIdentity::new("shipper", env!("CARGO_PKG_VERSION"));
    let agent = identity::Agent {
        id: datadir::agent_id(&config.data_dir)?,
        ephemeral_id: identity.instance_id.clone(),
        name: config.service_name.clone(),
        version: identity.version.clone(),
    };
    let (sink, acks) = sink::Sink::new(&config)?;
    let sink = Arc::new(sink);
    let counters = Arc::new(stats::Counters::default());
    let wrap = matches!(config.input, Input::Exec { .. });
    let enricher = event::Enricher::new(
        &config.host_name,
        identity::Speaker::new(&config.service_name, wrap),
        &agent,
        config.max_record_bytes,
    );
    let spool_options = spool::SpoolOptions {
        max_bytes: config.spool_max_bytes,
        segment_bytes: spool::SEGMENT_BYTES,
        fsync: config.spool_fsync,
        id_source: agent.id.spool_source(),
    };
    let open_spool = |config: &Config| -> Result<Arc<spool::Spool>, RunError> {
        let spool = Arc::new(spool::Spool::open(
            &config.data_dir.join(SPOOL_DIR),
            spool_options,
        )?);
        spool.start_syncer().map_err(RunError::Reader)?;
        Ok(spool)
    };
    let topics = tokio::spawn(stats::watch_topics(
        sink.clone(),
        config.topic_check_interval,
    ));

    let mut done_files = Vec::new();
    let mut resumed_file = None;
    let (source, spool, child) = match &config.input {
        Input::File(path) => {
            let cp_path = config.data_dir.join(CHECKPOINT_FILE);
            let checkpoint = checkpoint::load(&cp_path)?;
            let checkpoint_time = std::fs::metadata(&cp_path).and_then(|m| m.modified()).ok();
            // On a first start the rotated files already there are history:
            // the tail skips them and every checkpoint keeps them as done.
            let history = match &checkpoint {
                Some(_) => Vec::new(),
                None => input::file::history(path),
            };
            done_files = checkpoint
                .as_ref()
                .map_or_else(|| history.clone(), |cp| cp.done.clone());
            resumed_file = checkpoint.as_ref().map(|cp| (cp.file.clone(), cp.offset));
            let (tx, rx) = mpsc::channel(TAIL_CHANNEL_BATCHES);
            let stop = Arc::new(AtomicBool::new(false));
            let opts = input::file::TailOptions {
                path: path.clone(),
                max_line: config.max_line_bytes,
                poll_interval: config.poll_interval,
                rotation_grace: input::file::ROTATION_GRACE,
                checkpoint,
                history,
                checkpoint_time,
                checkpoint_path: Some(cp_path.clone()),
                seen_path: config.data_dir.join(input::file::SEEN_FILE),
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
            let spool = open_spool(&config)?;
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
            let spool = open_spool(&config)?;
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
    let core = pipeline::Core::new(
        config,
        pipeline::Parts {
            sink,
            acks,
            counters,
            spool,
            identity,
            agent,
            done_files,
            resumed_file,
        },
    );
    let code = core.run(source, signals, child).await;
    topics.abort();
    Ok(code)
}

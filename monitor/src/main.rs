//! The `monitor` binary: parse and validate flags, set up telemetry, bind,
//! install signals, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use meshwatch_monitor::{server, Args, MonitorConfig};

/// sysexits EX_USAGE: bad flags or environment (the project's one constant).
const EXIT_USAGE: u8 = meshwatch::cli::USAGE;
/// sysexits EX_UNAVAILABLE: could not bind, or the server failed.
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let first = e.to_string();
            let line = first.lines().next().unwrap_or("invalid arguments");
            eprintln!("monitor: {line}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cfg = match MonitorConfig::try_from(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("monitor: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("monitor: starting the async runtime: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    runtime.block_on(async move {
        let identity = server::identity();
        let _telemetry = match meshwatch::telemetry::init(&identity, &cfg.log_filter) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("monitor: --log: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(address = %cfg.listen, error = %e, "cannot listen");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        };
        let shutdown = match meshwatch::runtime::shutdown_on_signals() {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        };
        match server::run(cfg, identity, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "monitor failed");
                ExitCode::from(EXIT_UNAVAILABLE)
            }
        }
    })
}

//! What the three `main`s share: telemetry, bind, signals, run, exit code.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use meshwatch::ecs::ServiceIdentity;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppError};

/// Runs service `name` on `listen`: ECS telemetry on stdout, SIGTERM/SIGINT
/// start the drain, exit 0 after a clean stop, 1 on a runtime error, 69 when
/// the address cannot be bound.
pub fn main_with<F, Fut>(name: &str, listen: SocketAddr, log: &str, run: F) -> ExitCode
where
    F: FnOnce(ServiceIdentity, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), AppError>>,
{
    let identity = app::identity(name);
    let _telemetry = match meshwatch::telemetry::init(&identity, log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: --log: {e}");
            return ExitCode::from(meshwatch::cli::USAGE);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(server.address = %listen, error.message = %e, "cannot listen");
                eprintln!("error: --listen {listen}: {e}");
                return ExitCode::from(69);
            }
        };
        let shutdown = match meshwatch::runtime::shutdown_on_signals() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        match run(identity, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error.message = %e, "stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

//! The `main` every gRPC binary of the mesh shares (services and monitor):
//! ECS telemetry on stdout, the tokio runtime, bind, signals, run, and one
//! exit code per way of stopping ([`Exit`]).

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use meshwatch_ecs::ServiceIdentity;
use meshwatch_entry::Exit;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::serve::shutdown_on_signals;
use crate::telemetry;

/// Runs a server as `identity` on `listen` with log filter `log`: 0 after a
/// clean stop, 1 when `run` fails, 64 for a bad `--log` filter, 69 when the
/// runtime cannot start or the address cannot be bound. Every failure is one
/// line on stderr naming what to fix, and an ECS line where telemetry is up.
pub fn run_main<F, Fut, E>(
    identity: ServiceIdentity,
    listen: SocketAddr,
    log: &str,
    run: F,
) -> ExitCode
where
    F: FnOnce(ServiceIdentity, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    run_main_with(identity, listen, log, run, |_| Exit::Runtime)
}

/// [`run_main`] where `exit_of` picks the exit code of a failed `run` (e.g.
/// 73 for a data dir that cannot be created, 69 for a database that cannot
/// be reached).
pub fn run_main_with<F, Fut, E>(
    identity: ServiceIdentity,
    listen: SocketAddr,
    log: &str,
    run: F,
    exit_of: impl FnOnce(&E) -> Exit,
) -> ExitCode
where
    F: FnOnce(ServiceIdentity, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let program = identity.name.clone();
    let _telemetry = match telemetry::init(&identity, log) {
        Ok(guard) => guard,
        Err(e) => return Exit::Usage.fail(&program, format_args!("--log: {e}")),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            return Exit::Unavailable
                .fail(&program, format_args!("starting the async runtime: {e}"))
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(server.address = %listen, error.message = %e, "cannot listen");
                return Exit::Unavailable.fail(&program, format_args!("--listen {listen}: {e}"));
            }
        };
        let shutdown = match shutdown_on_signals() {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error.message = %e, "cannot install signal handlers");
                return Exit::Unavailable.fail(&program, e);
            }
        };
        match run(identity, listener, shutdown).await {
            Ok(()) => Exit::Ok.into(),
            Err(e) => {
                tracing::error!(error.message = %e, "stopped with an error");
                exit_of(&e).fail(&program, e)
            }
        }
    })
}

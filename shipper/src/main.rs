//! `shipper`: parses flags, installs signal handlers, and runs the library.
#![forbid(unsafe_code)]

use meshwatch_entry::{parse_args, Exit};
use meshwatch_shipper::{Args, ShutdownSignal};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

fn main() {
    let args: Args = match parse_args("shipper") {
        Ok(args) => args,
        // --help/--version exit 0, a bad flag 64; the message is printed.
        Err(exit) => std::process::exit(exit.into()),
    };
    let config = match args.validate() {
        Ok(config) => config,
        Err(e) => {
            Exit::Usage.fail("shipper", e);
            std::process::exit(Exit::Usage.into());
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            Exit::Unavailable.fail("shipper", format_args!("cannot start the runtime: {e}"));
            std::process::exit(Exit::Unavailable.into());
        }
    };
    let code = runtime.block_on(async {
        let (tx, rx) = mpsc::unbounded_channel();
        for (kind, sig) in [
            (SignalKind::terminate(), ShutdownSignal::Terminate),
            (SignalKind::interrupt(), ShutdownSignal::Interrupt),
        ] {
            let mut stream = match signal(kind) {
                Ok(s) => s,
                Err(e) => {
                    Exit::Unavailable.fail(
                        "shipper",
                        format_args!("cannot install signal handlers: {e}"),
                    );
                    return Exit::Unavailable.into();
                }
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            });
        }
        match meshwatch_shipper::run(config, rx).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("shipper: {e}");
                e.exit_code()
            }
        }
    });
    // Reader threads blocked on stdin must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

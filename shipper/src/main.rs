//! `shipper`: parses flags, installs signal handlers, and runs the library.
#![forbid(unsafe_code)]

use clap::error::ErrorKind;
use clap::Parser;
use meshwatch_shipper::{Args, ShutdownSignal};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Exit code for a bad flag (EX_USAGE).
const EXIT_USAGE: i32 = 64;

fn main() {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("shipper: {first} (see shipper --help)");
            std::process::exit(EXIT_USAGE);
        }
    };
    let config = match args.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shipper: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shipper: cannot start the runtime: {e}");
            std::process::exit(1);
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
                    eprintln!("shipper: cannot install signal handlers: {e}");
                    return 1;
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

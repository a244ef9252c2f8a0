//! meshctl: parses flags and runs the command (all logic in `meshwatch::cli`).
//! Bad flags exit 64 naming the flag; other failures exit 1.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match meshwatch::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(meshwatch::cli::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match meshwatch::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshctl: {e}");
            e.exit_code()
        }
    }
}

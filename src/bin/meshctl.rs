//! meshctl: parses flags and runs the command (all logic in `meshwatch::cli`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = meshwatch::cli::Cli::parse();
    match meshwatch::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshctl: {e}");
            ExitCode::FAILURE
        }
    }
}

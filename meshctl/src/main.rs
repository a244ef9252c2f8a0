//! meshctl: parses flags and runs the command (all logic in the library).
//! Bad flags exit 64 naming the flag; other failures exit 1.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use meshwatch_entry::parse_args;
use meshwatch_meshctl::{run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse_args("meshctl") {
        Ok(cli) => cli,
        Err(exit) => return exit.into(),
    };
    match run(cli).await {
        Ok(code) => code,
        Err(e) => e.exit().fail("meshctl", e),
    }
}

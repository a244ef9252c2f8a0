//! The `monitor` binary: parse and validate flags, then the shared service
//! entry (telemetry, bind, signals, run). Exit codes: 0 clean stop, 1 runtime
//! failure, 64 bad flags, 69 cannot bind or start.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use meshwatch_entry::{parse_args, Exit};
use meshwatch_monitor::{server, Args, MonitorConfig};

fn main() -> ExitCode {
    let args: Args = match parse_args("monitor") {
        Ok(args) => args,
        Err(exit) => return exit.into(),
    };
    let cfg = match MonitorConfig::try_from(args) {
        Ok(cfg) => cfg,
        Err(e) => return Exit::Usage.fail("monitor", e),
    };
    let (listen, log) = (cfg.listen, cfg.log_filter.clone());
    meshwatch_runtime::entry::run_main(server::identity(), listen, &log, move |id, l, s| {
        server::run(cfg, id, l, s)
    })
}

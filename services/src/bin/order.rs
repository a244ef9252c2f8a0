//! `order`: the PlaceOrder saga service. Flags: `order --help`.
use std::process::ExitCode;

use meshwatch_services::config::{self, OrderArgs, OrderConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cfg: OrderConfig = match config::parse::<OrderArgs, _>(std::env::args_os()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (listen, log) = (cfg.listen, cfg.common.log.clone());
    let identity = meshwatch_services::app::identity("order");
    meshwatch_runtime::entry::run_main_with(
        identity,
        listen,
        &log,
        move |id, l, s| meshwatch_services::app::run_order(cfg, id, l, s),
        meshwatch_services::app::AppError::exit,
    )
}

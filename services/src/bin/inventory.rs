//! `inventory`: catalog, stock and reservations. Flags: `inventory --help`.
use std::process::ExitCode;

use meshwatch_services::config::{self, InventoryArgs, InventoryConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cfg: InventoryConfig = match config::parse::<InventoryArgs, _>(std::env::args_os()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (listen, log) = (cfg.listen, cfg.common.log.clone());
    let identity = meshwatch_services::app::identity("inventory");
    meshwatch_runtime::entry::run_main_with(
        identity,
        listen,
        &log,
        move |id, l, s| meshwatch_services::app::run_inventory(cfg, id, l, s),
        meshwatch_services::app::AppError::exit,
    )
}

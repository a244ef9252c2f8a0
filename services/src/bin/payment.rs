//! `payment`: charges and refunds. Flags: `payment --help`.
use std::process::ExitCode;

use meshwatch_services::config::{self, PaymentArgs, PaymentConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cfg: PaymentConfig = match config::parse::<PaymentArgs, _>(std::env::args_os()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (listen, log) = (cfg.listen, cfg.common.log.clone());
    let identity = meshwatch_services::app::identity("payment");
    meshwatch_runtime::entry::run_main_with(
        identity,
        listen,
        &log,
        move |id, l, s| meshwatch_services::app::run_payment(cfg, id, l, s),
        meshwatch_services::app::AppError::exit,
    )
}

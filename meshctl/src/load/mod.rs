//! `meshctl load`: a PlaceOrder load generator. Open loop at a fixed rate
//! (latency measured from each request's scheduled start, so a slow server
//! cannot hide its queueing: no coordinated omission), or closed loop at
//! saturation with `--rate 0`. Prints progress every second and a report with
//! HDR-histogram percentiles and the outcome and error breakdown.
//!
//! `engine` runs and measures any call; `command` is `meshctl load` over
//! PlaceOrder.

mod command;
mod engine;

pub(crate) use command::run;
pub use command::{LoadArgs, DEFAULT_SKU};
pub use engine::{run_load, LoadReport, LoadSpec, Progress};

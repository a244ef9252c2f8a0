//! The three services of the meshwatch mesh (order, inventory, payment) as
//! library code: domain logic apart from thin gRPC adapters, wired in `app`
//! and started by thin binaries. `ADDING_A_SERVICE.md` shows how to add one.
//!
//! State lives in a database (`db`: SQLite under `--data-dir` by default,
//! PostgreSQL with `--database-url`), one schema per service under
//! `migrations/`, applied at start; request bounds are in `limits`.
//!
//! The rule: domain modules (`money`, `deadline`, `db`, `ids`, `limits`,
//! `order::{book, saga, ports}`, `inventory::{store, catalog}`,
//! `payment::ledger`) never name
//! tonic or generated proto types; each service's `grpc` module converts at
//! the edge (with the helpers in `edge`) and maps domain errors to `Status`
//! in one place. `tests/domain_purity.rs` holds the rule.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod db;
pub mod deadline;
pub mod edge;
pub mod faults;
pub mod ids;
pub mod inventory;
pub mod limits;
pub mod money;
pub mod order;
pub mod payment;

//! The payment service: charges and refunds, idempotent per order.

pub mod grpc;
pub mod ledger;

pub use grpc::PaymentService;
pub use ledger::{Ledger, PaymentError};

/// The payment database's schema, applied at start (`services/migrations/payment/`).
pub const MIGRATIONS: crate::db::Migrations = crate::db::Migrations(&[(
    1,
    "payments",
    include_str!("../../migrations/payment/0001_payments.sql"),
)]);

//! The payment service: charges and refunds, idempotent per order.

pub mod grpc;
pub mod ledger;

pub use grpc::PaymentService;
pub use ledger::{Ledger, PaymentError};

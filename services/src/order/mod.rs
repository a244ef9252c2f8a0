//! The order service: the PlaceOrder saga over inventory and payment.

pub mod book;
pub mod clients;
pub mod grpc;
pub mod saga;

pub use clients::Clients;
pub use grpc::OrderService;
pub use saga::{Orders, DEFAULT_CALL_TIMEOUT, DEFAULT_REQUEST_BUDGET};

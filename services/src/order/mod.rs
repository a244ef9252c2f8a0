//! The order service: the PlaceOrder saga over inventory and payment.
//! Domain: `book` (orders, idempotency keys), `saga` (reserve → charge →
//! commit with compensation), `ports` (what the saga needs from inventory and
//! payment). Adapters: `grpc` (OrderService), `clients` (the ports over gRPC).

pub mod book;
pub mod clients;
pub mod grpc;
pub mod ports;
pub mod saga;

pub use clients::{GrpcPayments, GrpcStock};
pub use grpc::OrderService;
pub use saga::{Orders, DEFAULT_CALL_TIMEOUT, DEFAULT_REQUEST_BUDGET};

/// The saga as the service runs it: over gRPC clients.
pub type MeshOrders = Orders<GrpcStock, GrpcPayments>;

/// The order database's schema, applied at start (`services/migrations/order/`).
pub const MIGRATIONS: crate::db::Migrations = crate::db::Migrations(&[(
    1,
    "orders",
    include_str!("../../migrations/order/0001_orders.sql"),
)]);

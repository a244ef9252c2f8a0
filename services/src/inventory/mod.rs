//! The inventory service: catalog, stock and reservations.

pub mod catalog;
pub mod grpc;
pub mod store;

pub use grpc::InventoryService;
pub use store::{Inventory, InventoryError, DEFAULT_RESERVATION_TTL};

//! The inventory service: catalog, stock and reservations.

pub mod catalog;
pub mod grpc;
pub mod store;

pub use grpc::InventoryService;
pub use store::{Inventory, InventoryError, DEFAULT_RESERVATION_TTL};

/// The inventory database's schema, applied at start (`services/migrations/inventory/`).
pub const MIGRATIONS: crate::db::Migrations = crate::db::Migrations(&[
    (
        1,
        "stock and reservations",
        include_str!("../../migrations/inventory/0001_stock_and_reservations.sql"),
    ),
    (
        2,
        "reserved from held reservations",
        include_str!("../../migrations/inventory/0002_reserved_from_held_reservations.sql"),
    ),
]);

//! Wiring of each service: domain + gRPC adapter + fault admin, served by
//! the shared runtime (reflection, health, heartbeats, trace propagation,
//! bounded drain). Binaries and tests call these with a bound listener.

use std::sync::Arc;

use meshwatch_ecs::ServiceIdentity;
use meshwatch_runtime::{self as runtime, RuntimeError, ServeConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::{Common, InventoryConfig, OrderConfig, PaymentConfig};
use crate::faults::{FaultAdmin, FaultError, Faults};
use crate::inventory::{store::run_expiry, Inventory, InventoryService};
use crate::order::{clients::ClientError, GrpcPayments, GrpcStock, OrderService, Orders};
use crate::payment::{Ledger, PaymentService};

pub const ORDER_PROTO: &str = "meshwatch.order.v1.OrderService";
pub const INVENTORY_PROTO: &str = "meshwatch.inventory.v1.InventoryService";
pub const PAYMENT_PROTO: &str = "meshwatch.payment.v1.PaymentService";
/// Fault injection, served next to every service.
pub const FAULT_PROTO: &str = "meshwatch.admin.v1.FaultService";

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("fault settings: {0}")]
    Faults(#[from] FaultError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A fresh identity for `name` at this crate's version.
pub fn identity(name: &str) -> ServiceIdentity {
    ServiceIdentity::new(name, env!("CARGO_PKG_VERSION"))
}

fn serve_config(identity: ServiceIdentity, proto: &str, common: &Common) -> ServeConfig {
    let mut cfg = ServeConfig::new(identity, &[proto]);
    cfg.grpc_services.push(FAULT_PROTO.to_owned());
    cfg.heartbeat_interval = common.heartbeat_interval;
    cfg.drain_grace = common.drain_grace;
    cfg.tls = common
        .tls
        .as_ref()
        .and_then(meshwatch_tls::Tls::server_config);
    cfg
}

pub async fn run_inventory(
    cfg: InventoryConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let faults = Faults::new("inventory", cfg.common.faults)?;
    let inventory = Arc::new(Inventory::new(cfg.catalog, cfg.reservation_ttl));
    let expiry_stop = CancellationToken::new();
    let expiry = tokio::spawn(run_expiry(Arc::clone(&inventory), expiry_stop.clone()));
    let routes = Routes::new(InventoryService::new(inventory, faults.clone()).into_server())
        .add_service(FaultAdmin::new(faults).into_server());
    let result = runtime::serve(
        serve_config(identity, INVENTORY_PROTO, &cfg.common),
        listener,
        shutdown,
        routes,
    )
    .await;
    expiry_stop.cancel();
    let _ = expiry.await;
    Ok(result?)
}

pub async fn run_payment(
    cfg: PaymentConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let faults = Faults::new("payment", cfg.common.faults)?;
    let routes =
        Routes::new(PaymentService::new(Arc::new(Ledger::new()), faults.clone()).into_server())
            .add_service(FaultAdmin::new(faults).into_server());
    runtime::serve(
        serve_config(identity, PAYMENT_PROTO, &cfg.common),
        listener,
        shutdown,
        routes,
    )
    .await?;
    Ok(())
}

pub async fn run_order(
    cfg: OrderConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let faults = Faults::new("order", cfg.common.faults)?;
    let tls = cfg.common.tls.as_ref();
    let stock = GrpcStock::new(&cfg.inventory_addr, cfg.call_timeout, tls)?;
    let payments = GrpcPayments::new(&cfg.payment_addr, cfg.call_timeout, tls)?;
    let orders = Orders::new(stock, payments, cfg.call_timeout, &cfg.currency);
    let routes =
        Routes::new(OrderService::new(orders, faults.clone(), cfg.request_budget).into_server())
            .add_service(FaultAdmin::new(faults).into_server());
    runtime::serve(
        serve_config(identity, ORDER_PROTO, &cfg.common),
        listener,
        shutdown,
        routes,
    )
    .await?;
    Ok(())
}

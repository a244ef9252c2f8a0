//! Wiring of each service: database + domain + gRPC adapter, served by the
//! shared runtime (reflection, health, heartbeats, limits, trace propagation,
//! bounded drain), with fault injection on its own admin listener when
//! `--admin-listen` is given. Binaries and tests call these with a bound
//! listener.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use meshwatch_ecs::ServiceIdentity;
use meshwatch_entry::Exit;
use meshwatch_runtime::{self as runtime, RuntimeError, ServeConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::{Common, InventoryConfig, OrderConfig, PaymentConfig};
use crate::db::{self, Clock, Database, OpenError};
use crate::faults::{FaultAdmin, FaultError, Faults};
use crate::inventory::{self, store::run_expiry, Inventory, InventoryService};
use crate::order::saga::run_recovery;
use crate::order::{
    book::OrderBook, clients::ClientError, GrpcPayments, GrpcStock, OrderService, Orders,
};
use crate::payment::{self, Ledger, PaymentService};

pub const ORDER_PROTO: &str = "meshwatch.order.v1.OrderService";
pub const INVENTORY_PROTO: &str = "meshwatch.inventory.v1.InventoryService";
pub const PAYMENT_PROTO: &str = "meshwatch.payment.v1.PaymentService";
/// Fault injection, served on the admin listener only.
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
    #[error(transparent)]
    Database(#[from] OpenError),
    #[error("--admin-listen {addr}: {source}")]
    AdminListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl AppError {
    /// The exit code of a service that stopped with this error: 73 when its
    /// data dir cannot be made, 69 when a port cannot be bound, 64 for a bad
    /// database URL, 1 otherwise.
    pub fn exit(&self) -> Exit {
        match self {
            AppError::Database(OpenError::DataDir { .. } | OpenError::Sqlite { .. }) => {
                Exit::CantCreate
            }
            AppError::Database(OpenError::Url(_)) => Exit::Usage,
            AppError::AdminListen { .. } => Exit::Unavailable,
            _ => Exit::Runtime,
        }
    }
}

/// A fresh identity for `name` at this crate's version.
pub fn identity(name: &str) -> ServiceIdentity {
    ServiceIdentity::new(name, env!("CARGO_PKG_VERSION"))
}

fn serve_config(identity: ServiceIdentity, proto: &str, common: &Common) -> ServeConfig {
    let mut cfg = ServeConfig::new(identity, &[proto]);
    cfg.heartbeat_interval = common.heartbeat_interval;
    cfg.drain_grace = common.drain_grace;
    cfg.tls = common
        .tls
        .as_ref()
        .and_then(meshwatch_tls::Tls::server_config);
    cfg.limits = common.limits;
    cfg
}

/// The tasks a service runs beside its server, stopped together after it.
struct Background {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    fn spawn(&mut self, task: impl FnOnce(CancellationToken) -> JoinHandle<()>) {
        self.tasks.push(task(self.stop.clone()));
    }

    async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            // A background task that panicked has logged it; shutdown goes on.
            let _ = t.await;
        }
    }
}

/// Binds the admin listener when `--admin-listen` was given.
async fn bind_admin(common: &Common) -> Result<Option<TcpListener>, AppError> {
    match common.admin_listen {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| AppError::AdminListen { addr, source }),
    }
}

/// Serves `routes` publicly and, when bound, the fault admin on `admin`,
/// until `shutdown` (then the admin stops too).
async fn serve_both(
    cfg: ServeConfig,
    listener: TcpListener,
    admin: Option<TcpListener>,
    faults: Faults,
    shutdown: CancellationToken,
    routes: Routes,
) -> Result<(), AppError> {
    let limits = cfg.limits;
    let admin_stop = CancellationToken::new();
    let admin_task = admin.map(|l| {
        let routes = Routes::new(FaultAdmin::new(faults).into_server(limits.max_message_bytes));
        tokio::spawn(runtime::serve_admin(
            l,
            &[FAULT_PROTO],
            limits,
            admin_stop.clone(),
            routes,
        ))
    });
    let result = runtime::serve(cfg, listener, shutdown, routes).await;
    admin_stop.cancel();
    if let Some(task) = admin_task {
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error.message = %e, "admin listener failed");
        }
    }
    Ok(result?)
}

fn retention<F, Fut>(
    what: &'static str,
    keep: Duration,
    sweep: F,
) -> impl FnOnce(CancellationToken) -> JoinHandle<()>
where
    F: FnMut(i64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, db::DbError>> + Send + 'static,
{
    move |stop| {
        tokio::spawn(db::run_retention(
            what,
            keep,
            db::RETENTION_EVERY,
            stop,
            sweep,
        ))
    }
}

/// Runs inventory on `listener` (and on `--admin-listen`, bound here) until `shutdown`.
pub async fn run_inventory(
    cfg: InventoryConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let admin = bind_admin(&cfg.common).await?;
    run_inventory_on(cfg, identity, listener, admin, shutdown).await
}

/// [`run_inventory`] with the admin listener already bound (tests bind port 0).
pub async fn run_inventory_on(
    cfg: InventoryConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let faults = Faults::new("inventory", cfg.common.faults)?;
    let serve_cfg = serve_config(identity, INVENTORY_PROTO, &cfg.common);
    let db = Database::open(
        "inventory",
        &cfg.common.database,
        inventory::MIGRATIONS,
        serve_cfg.readiness.clone(),
    )
    .await?;
    let store = Inventory::new(db.clone(), cfg.catalog, cfg.reservation_ttl, Clock::System);
    let mut background = Background::new();
    let d = db.clone();
    background.spawn(|stop| tokio::spawn(d.supervise(db::DEFAULT_CHECK_INTERVAL, stop)));
    let s = store.clone();
    background.spawn(|stop| tokio::spawn(run_expiry(s, stop)));
    let s = store.clone();
    background.spawn(retention(
        "reservations",
        cfg.common.retention,
        move |cutoff| {
            let s = s.clone();
            async move { s.delete_finished_before(cutoff).await }
        },
    ));
    let routes = Routes::new(
        InventoryService::new(store, faults.clone(), cfg.common.limits.max_message_bytes)
            .into_server(),
    );
    let result = serve_both(serve_cfg, listener, admin, faults, shutdown, routes).await;
    background.stop().await;
    db.close().await;
    result
}

/// Runs payment on `listener` (and on `--admin-listen`, bound here) until `shutdown`.
pub async fn run_payment(
    cfg: PaymentConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let admin = bind_admin(&cfg.common).await?;
    run_payment_on(cfg, identity, listener, admin, shutdown).await
}

/// [`run_payment`] with the admin listener already bound (tests bind port 0).
pub async fn run_payment_on(
    cfg: PaymentConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let faults = Faults::new("payment", cfg.common.faults)?;
    let serve_cfg = serve_config(identity, PAYMENT_PROTO, &cfg.common);
    let db = Database::open(
        "payment",
        &cfg.common.database,
        payment::MIGRATIONS,
        serve_cfg.readiness.clone(),
    )
    .await?;
    let ledger = Ledger::new(db.clone(), Clock::System);
    let mut background = Background::new();
    let d = db.clone();
    background.spawn(|stop| tokio::spawn(d.supervise(db::DEFAULT_CHECK_INTERVAL, stop)));
    let l = ledger.clone();
    background.spawn(retention("payments", cfg.common.retention, move |cutoff| {
        let l = l.clone();
        async move { l.delete_before(cutoff).await }
    }));
    let routes = Routes::new(
        PaymentService::new(ledger, faults.clone(), cfg.common.limits.max_message_bytes)
            .into_server(),
    );
    let result = serve_both(serve_cfg, listener, admin, faults, shutdown, routes).await;
    background.stop().await;
    db.close().await;
    result
}

/// How long a run may hold a pending order: longer than any run can take
/// (its budget, then up to four compensation calls), plus a margin.
pub fn order_lease(cfg: &OrderConfig) -> Duration {
    cfg.request_budget + cfg.call_timeout * 4 + Duration::from_secs(2)
}

/// Runs order on `listener` (and on `--admin-listen`, bound here) until `shutdown`.
pub async fn run_order(
    cfg: OrderConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let admin = bind_admin(&cfg.common).await?;
    run_order_on(cfg, identity, listener, admin, shutdown).await
}

/// [`run_order`] with the admin listener already bound (tests bind port 0).
pub async fn run_order_on(
    cfg: OrderConfig,
    identity: ServiceIdentity,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let faults = Faults::new("order", cfg.common.faults)?;
    let tls = cfg.common.tls.as_ref();
    let stock = GrpcStock::new(&cfg.inventory_addr, cfg.call_timeout, tls)?;
    let payments = GrpcPayments::new(&cfg.payment_addr, cfg.call_timeout, tls)?;
    let owner = identity.instance_id.clone();
    let serve_cfg = serve_config(identity, ORDER_PROTO, &cfg.common);
    let db = Database::open(
        "order",
        &cfg.common.database,
        crate::order::MIGRATIONS,
        serve_cfg.readiness.clone(),
    )
    .await?;
    let book = OrderBook::new(db.clone(), Clock::System, &owner, order_lease(&cfg));
    let orders = Orders::new(
        book.clone(),
        stock,
        payments,
        cfg.call_timeout,
        &cfg.currency,
    );
    let mut background = Background::new();
    let d = db.clone();
    background.spawn(|stop| tokio::spawn(d.supervise(db::DEFAULT_CHECK_INTERVAL, stop)));
    let o = orders.clone();
    background.spawn(|stop| tokio::spawn(run_recovery(o, stop)));
    background.spawn(retention(
        "orders and their keys",
        cfg.common.retention,
        move |cutoff| {
            let b = book.clone();
            async move { b.delete_finished_before(cutoff).await }
        },
    ));
    let routes = Routes::new(
        OrderService::new(
            orders,
            faults.clone(),
            cfg.request_budget,
            cfg.common.limits.max_message_bytes,
        )
        .into_server(),
    );
    let result = serve_both(serve_cfg, listener, admin, faults, shutdown, routes).await;
    background.stop().await;
    db.close().await;
    result
}

//! The order saga across the three services, each on a real socket (port 0),
//! in one process, each test once on SQLite and once on PostgreSQL (each
//! service of each test with a database of its own).
#![allow(clippy::unwrap_used)]

mod support;

use support::{Backend, Databases};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshwatch_proto::admin::v1 as admin;
use meshwatch_proto::inventory::v1 as inv;
use meshwatch_proto::order::v1 as pb;
use meshwatch_proto::payment::v1 as pay;
use meshwatch_services::app;
use meshwatch_services::config::{InventoryConfig, OrderConfig, PaymentConfig};
use meshwatch_services::faults::FaultSettings;
use meshwatch_services::inventory::catalog::{self, CatalogItem};
use meshwatch_services::money::Money;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

type OrderClient = pb::order_service_client::OrderServiceClient<Channel>;
type InventoryClient = inv::inventory_service_client::InventoryServiceClient<Channel>;
type PaymentClient = pay::payment_service_client::PaymentServiceClient<Channel>;

struct Mesh {
    order: OrderClient,
    inventory: InventoryClient,
    payment: PaymentClient,
    payment_admin: SocketAddr,
    payment_addr: SocketAddr,
    inventory_addr: SocketAddr,
    shutdown: CancellationToken,
    _databases: Databases,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Options {
    backend: Backend,
    catalog: Vec<CatalogItem>,
    reservation_ttl: Duration,
    payment_faults: FaultSettings,
    call_timeout: Duration,
    request_budget: Duration,
    /// Point order at an address where nothing listens instead.
    inventory_down: bool,
    payment_down: bool,
    /// Order's concurrency limit.
    order_max_concurrent: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            catalog: catalog::seed(),
            reservation_ttl: Duration::from_secs(30),
            payment_faults: FaultSettings::default(),
            // Far above what a call takes: a test that is not about time
            // passes through a disk stall of seconds (a CI runner's), one
            // that is sets its own bounds.
            call_timeout: Duration::from_secs(10),
            request_budget: Duration::from_secs(30),
            inventory_down: false,
            payment_down: false,
            order_max_concurrent: meshwatch_runtime::limits::DEFAULT_MAX_CONCURRENT_RPCS,
        }
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let (l, a) = bind().await;
    drop(l);
    a
}

async fn client_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

async fn mesh(opts: Options) -> Mesh {
    let shutdown = CancellationToken::new();
    let mut databases = Databases::default();
    let (il, inventory_addr) = bind().await;
    let mut icfg = InventoryConfig::local(inventory_addr);
    icfg.catalog = opts.catalog;
    icfg.reservation_ttl = opts.reservation_ttl;
    icfg.common.database = databases.fresh(opts.backend, "inventory").await;
    tokio::spawn(app::run_inventory(
        icfg,
        app::identity("inventory"),
        il,
        shutdown.clone(),
    ));

    let (pl, payment_addr) = bind().await;
    let (admin, payment_admin) = bind().await;
    let mut pcfg = PaymentConfig {
        listen: payment_addr,
        common: Default::default(),
    };
    pcfg.common.faults = opts.payment_faults;
    pcfg.common.database = databases.fresh(opts.backend, "payment").await;
    tokio::spawn(app::run_payment_on(
        pcfg,
        app::identity("payment"),
        pl,
        Some(admin),
        shutdown.clone(),
    ));

    let inv_target = if opts.inventory_down {
        dead_addr().await
    } else {
        inventory_addr
    };
    let pay_target = if opts.payment_down {
        dead_addr().await
    } else {
        payment_addr
    };
    let (ol, order_addr) = bind().await;
    let mut ocfg = OrderConfig::local(
        order_addr,
        &format!("http://{inv_target}"),
        &format!("http://{pay_target}"),
    );
    ocfg.call_timeout = opts.call_timeout;
    ocfg.request_budget = opts.request_budget;
    ocfg.common.limits.max_concurrent_rpcs = opts.order_max_concurrent;
    ocfg.common.database = databases.fresh(opts.backend, "order").await;
    tokio::spawn(app::run_order(
        ocfg,
        app::identity("order"),
        ol,
        shutdown.clone(),
    ));

    let m = Mesh {
        order: OrderClient::new(client_channel(order_addr).await),
        inventory: InventoryClient::new(client_channel(inventory_addr).await),
        payment: PaymentClient::new(client_channel(payment_addr).await),
        payment_admin,
        payment_addr,
        inventory_addr,
        shutdown,
        _databases: databases,
    };
    for addr in [order_addr, inventory_addr, payment_addr] {
        wait_serving(addr).await;
    }
    m
}

/// Until grpc.health.v1 says SERVING for "" (the database is open), bounded.
async fn wait_serving(addr: SocketAddr) {
    use meshwatch_proto::health::v1 as health;
    let client = health::health_client::HealthClient::new(client_channel(addr).await);
    support::eventually(&format!("{addr} SERVING"), Duration::from_secs(20), || {
        let mut c = client.clone();
        async move {
            c.check(health::HealthCheckRequest::default())
                .await
                .is_ok_and(|r| {
                    r.into_inner().status() == health::health_check_response::ServingStatus::Serving
                })
        }
    })
    .await;
}

/// Each test once per backend: `both!(name)` makes `name::sqlite` and
/// `name::postgres` from `async fn name(backend: Backend)`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::Postgres).await;
            }
        }
    };
}

fn request(key: &str, sku: &str, quantity: u32) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "c-42".into(),
        items: vec![pb::LineItem {
            sku: sku.into(),
            quantity,
        }],
        currency_code: "USD".into(),
        payment_token: String::new(),
    }
}

impl Mesh {
    async fn place(&self, req: pb::PlaceOrderRequest) -> Result<pb::Order, tonic::Status> {
        let mut r = Request::new(req);
        r.set_timeout(Duration::from_secs(30));
        Ok(self
            .order
            .clone()
            .place_order(r)
            .await?
            .into_inner()
            .order
            .unwrap())
    }

    /// (available, reserved) of `sku`.
    async fn stock(&self, sku: &str) -> (u32, u32) {
        let items = self
            .inventory
            .clone()
            .get_stock(inv::GetStockRequest {
                skus: vec![sku.into()],
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        (items[0].available, items[0].reserved)
    }

    async fn order_of(&self, order_id: &str) -> Result<pb::Order, tonic::Status> {
        Ok(self
            .order
            .clone()
            .get_order(pb::GetOrderRequest {
                order_id: order_id.into(),
            })
            .await?
            .into_inner()
            .order
            .unwrap())
    }

    async fn payment_of(&self, order_id: &str) -> Result<pay::Payment, tonic::Status> {
        Ok(self
            .payment
            .clone()
            .get_payment(pay::GetPaymentRequest {
                order_id: order_id.into(),
            })
            .await?
            .into_inner())
    }
}

fn item(sku: &str, stock: u32) -> CatalogItem {
    CatalogItem {
        sku: sku.into(),
        name: sku.into(),
        unit_price: Money::new("USD", 250).unwrap(),
        stock,
    }
}

both!(happy_path_confirms_decrements_stock_and_charges_once);
async fn happy_path_confirms_decrements_stock_and_charges_once(backend: Backend) {
    let m = mesh(Options {
        backend,
        ..Options::default()
    })
    .await;
    let before = m.stock("sku-espresso").await;
    let order = m
        .place(request("happy-1", "sku-espresso", 2))
        .await
        .unwrap();
    assert_eq!(order.status(), pb::OrderStatus::Confirmed, "{order:?}");
    assert_eq!(order.total.as_ref().unwrap().amount_minor, 2 * 1_850);
    assert_eq!(m.stock("sku-espresso").await, (before.0 - 2, 0));
    let p = m.payment_of(&order.order_id).await.unwrap();
    assert_eq!(
        (p.status(), p.charge_count),
        (pay::PaymentStatus::Charged, 1)
    );
    assert_eq!(p.payment_id, order.payment_id);

    let got = m.order_of(&order.order_id).await.unwrap();
    assert_eq!(got, order);
}

both!(decline_releases_the_stock_and_leaves_no_charge);
async fn decline_releases_the_stock_and_leaves_no_charge(backend: Backend) {
    let m = mesh(Options {
        backend,
        ..Options::default()
    })
    .await;
    let before = m.stock("sku-mug").await;
    let mut req = request("decline-1", "sku-mug", 3);
    req.payment_token = "tok_decline_insufficient_funds".into();
    let order = m.place(req).await.unwrap();
    assert_eq!(order.status(), pb::OrderStatus::PaymentDeclined);
    assert!(order.failure_reason.contains("declined"), "{order:?}");
    assert_eq!(m.stock("sku-mug").await, before);
    let p = m.payment_of(&order.order_id).await.unwrap();
    assert_eq!(
        (p.status(), p.charge_count),
        (pay::PaymentStatus::Declined, 0)
    );
}

both!(same_key_twice_and_concurrently_gives_one_order_and_one_charge);
async fn same_key_twice_and_concurrently_gives_one_order_and_one_charge(backend: Backend) {
    let m = mesh(Options {
        backend,
        ..Options::default()
    })
    .await;
    let before = m.stock("sku-filter").await;
    let first = m.place(request("idem-seq", "sku-filter", 1)).await.unwrap();
    let second = m.place(request("idem-seq", "sku-filter", 1)).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(m.stock("sku-filter").await.0, before.0 - 1);
    assert_eq!(m.payment_of(&first.order_id).await.unwrap().charge_count, 1);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let m_order = m.order.clone();
            tokio::spawn(async move {
                let mut r = Request::new(request("idem-conc", "sku-filter", 1));
                r.set_timeout(Duration::from_secs(30));
                m_order
                    .clone()
                    .place_order(r)
                    .await
                    .unwrap()
                    .into_inner()
                    .order
                    .unwrap()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let mut o = t.await.unwrap();
        // On a loaded machine a commit can stay ambiguous past the caller's
        // deadline; the order is then answered PENDING and the recovery pass
        // completes it. Wait (bounded) for that outcome.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while o.status() == pb::OrderStatus::Pending && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            o = m.order_of(&o.order_id).await.unwrap();
        }
        assert_eq!(o.status(), pb::OrderStatus::Confirmed, "{o:?}");
        ids.insert(o.order_id);
    }
    assert_eq!(ids.len(), 1, "one order for one key");
    let id = ids.into_iter().next().unwrap();
    assert_eq!(m.payment_of(&id).await.unwrap().charge_count, 1);
    assert_eq!(m.stock("sku-filter").await.0, before.0 - 2);

    // The same key for a different request is refused, not silently merged.
    let e = m
        .place(request("idem-seq", "sku-filter", 5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("idem-seq"));
}

both!(two_hundred_concurrent_orders_against_stock_fifty);
async fn two_hundred_concurrent_orders_against_stock_fifty(backend: Backend) {
    let m = mesh(Options {
        backend,
        catalog: vec![item("sku-rare", 50)],
        // 200 orders queue on one stock row; a loaded machine must not cut
        // an answer to PENDING.
        request_budget: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let c = m.order.clone();
            tokio::spawn(async move {
                let mut r = Request::new(request(&format!("rush-{i}"), "sku-rare", 1));
                r.set_timeout(Duration::from_secs(60));
                c.clone().place_order(r).await
            })
        })
        .collect();
    let (mut confirmed, mut out_of_stock) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                let o = r.into_inner().order.unwrap();
                assert_eq!(o.status(), pb::OrderStatus::Confirmed, "{o:?}");
                confirmed += 1;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                assert!(s.message().contains("insufficient stock"), "{s:?}");
                out_of_stock += 1;
            }
        }
    }
    assert_eq!((confirmed, out_of_stock), (50, 150));
    assert_eq!(m.stock("sku-rare").await, (0, 0));
}

both!(inventory_down_is_unavailable_naming_it_within_the_deadline);
async fn inventory_down_is_unavailable_naming_it_within_the_deadline(backend: Backend) {
    let m = mesh(Options {
        backend,
        inventory_down: true,
        ..Options::default()
    })
    .await;
    let start = Instant::now();
    let e = m
        .place(request("down-inv", "sku-espresso", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().starts_with("inventory unavailable"), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let _ = m.inventory_addr;
}

both!(payment_down_is_unavailable_naming_it_and_releases_the_stock);
async fn payment_down_is_unavailable_naming_it_and_releases_the_stock(backend: Backend) {
    let m = mesh(Options {
        backend,
        payment_down: true,
        ..Options::default()
    })
    .await;
    let before = m.stock("sku-espresso").await;
    let start = Instant::now();
    let e = m
        .place(request("down-pay", "sku-espresso", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().starts_with("payment unavailable"), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        m.stock("sku-espresso").await,
        before,
        "reservation released"
    );
}

both!(a_hanging_payment_answers_deadline_exceeded_within_the_call_timeout);
async fn a_hanging_payment_answers_deadline_exceeded_within_the_call_timeout(backend: Backend) {
    let m = mesh(Options {
        backend,
        payment_faults: FaultSettings {
            hang: true,
            ..FaultSettings::default()
        },
        call_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let before = m.stock("sku-espresso").await;
    let start = Instant::now();
    let e = m
        .place(request("hang-pay", "sku-espresso", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().starts_with("payment did not answer Charge"),
        "{e:?}"
    );
    assert!(
        e.message()
            .contains("could not be refunded: retry with the same idempotency_key"),
        "{e:?}"
    );
    // Two call timeouts (charge, refund: 1 s) and the database writes;
    // far from the caller's 30 s. The margin is for a disk stall.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The refund hangs too (and fails); the release still puts the stock back
    // before the answer.
    assert_eq!(m.stock("sku-espresso").await, before);
}

both!(a_caller_without_a_deadline_is_answered_within_the_budget_while_compensation_goes_on);
async fn a_caller_without_a_deadline_is_answered_within_the_budget_while_compensation_goes_on(
    backend: Backend,
) {
    let m = mesh(Options {
        backend,
        payment_faults: FaultSettings {
            hang: true,
            ..FaultSettings::default()
        },
        call_timeout: Duration::from_millis(900),
        request_budget: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let before = m.stock("sku-espresso").await;
    let start = Instant::now();
    // No grpc-timeout: order's own budget is the only bound. The charge
    // times out at 0.9 s and the refund (which hangs too) would take the
    // answer to 1.8 s.
    let order = m
        .order
        .clone()
        .place_order(request("budget-1", "sku-espresso", 1))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert_eq!(order.status(), pb::OrderStatus::Pending, "{order:?}");
    // The saga still ends its run: refund attempted, stock released. The
    // order stays PENDING (not FAILED: the charge may stand while payment
    // does not answer the refund) for the recovery pass.
    support::eventually("stock released", Duration::from_secs(10), || async {
        m.stock("sku-espresso").await == before
    })
    .await;
    let got = m.order_of(&order.order_id).await.unwrap();
    assert_eq!(got.status(), pb::OrderStatus::Pending, "{got:?}");
}

both!(failure_after_the_charge_refunds_then_releases);
async fn failure_after_the_charge_refunds_then_releases(backend: Backend) {
    // The reservation expires while payment is slow, so the commit fails
    // after the money was taken.
    let m = mesh(Options {
        backend,
        catalog: vec![item("sku-slow", 5)],
        reservation_ttl: Duration::from_millis(200),
        payment_faults: FaultSettings {
            latency: Duration::from_millis(600),
            ..FaultSettings::default()
        },
        ..Options::default()
    })
    .await;
    let order = m
        .place(request("late-commit", "sku-slow", 2))
        .await
        .unwrap();
    assert_eq!(order.status(), pb::OrderStatus::Failed, "{order:?}");
    assert!(
        order.failure_reason.contains("inventory commit failed"),
        "{order:?}"
    );
    assert!(
        order.failure_reason.ends_with("new idempotency_key"),
        "refunded, so the key cannot succeed: {order:?}"
    );
    let p = m.payment_of(&order.order_id).await.unwrap();
    assert_eq!(p.status(), pay::PaymentStatus::Refunded);
    assert_eq!(m.stock("sku-slow").await, (5, 0));
}

both!(invalid_input_is_refused_with_a_useful_message_and_no_state_change);
async fn invalid_input_is_refused_with_a_useful_message_and_no_state_change(backend: Backend) {
    let m = mesh(Options {
        backend,
        ..Options::default()
    })
    .await;
    let before = m.stock("sku-espresso").await;
    let cases: Vec<(pb::PlaceOrderRequest, Code, &str)> = vec![
        (
            pb::PlaceOrderRequest {
                items: vec![],
                ..request("bad-1", "sku-espresso", 1)
            },
            Code::InvalidArgument,
            "items must not be empty",
        ),
        (
            request("bad-2", "sku-espresso", 0),
            Code::InvalidArgument,
            "quantity must be at least 1",
        ),
        (
            request("bad-3", "sku-nope", 1),
            Code::NotFound,
            "unknown SKU \"sku-nope\"",
        ),
        (
            pb::PlaceOrderRequest {
                currency_code: "XYZ".into(),
                ..request("bad-4", "sku-espresso", 1)
            },
            Code::InvalidArgument,
            "currency_code \"XYZ\" is not accepted",
        ),
        (
            request("", "sku-espresso", 1),
            Code::InvalidArgument,
            "idempotency_key is required",
        ),
        // NUL is refused by name on both backends (PostgreSQL's TEXT would
        // refuse it later as an INTERNAL database error).
        (
            request("bad\0key", "sku-espresso", 1),
            Code::InvalidArgument,
            "idempotency_key contains a control character",
        ),
        (
            pb::PlaceOrderRequest {
                customer_id: "c\0".into(),
                ..request("bad-nul-customer", "sku-espresso", 1)
            },
            Code::InvalidArgument,
            "customer_id contains a control character",
        ),
        (
            request("bad-nul-sku", "sku\0", 1),
            Code::InvalidArgument,
            "sku contains a control character",
        ),
        (
            pb::PlaceOrderRequest {
                payment_token: "tok\0".into(),
                ..request("bad-nul-token", "sku-espresso", 1)
            },
            Code::InvalidArgument,
            "payment_token contains a control character",
        ),
        (
            pb::PlaceOrderRequest {
                customer_id: String::new(),
                ..request("bad-6", "sku-espresso", 1)
            },
            Code::InvalidArgument,
            "customer_id is required",
        ),
    ];
    for (req, code, text) in cases {
        let e = m.place(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?} → {e:?}");
        assert!(e.message().contains(text), "{req:?} → {e:?}");
    }
    assert_eq!(m.stock("sku-espresso").await, before);
    let e = m.order_of("ord-missing").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

both!(faults_change_at_run_time_through_the_admin_service);
async fn faults_change_at_run_time_through_the_admin_service(backend: Backend) {
    let m = mesh(Options {
        backend,
        ..Options::default()
    })
    .await;
    // Not on the public port, nor in its reflection.
    let public = client_channel(m.payment_addr).await;
    let e = admin::fault_service_client::FaultServiceClient::new(public)
        .set_faults(admin::SetFaultsRequest {
            hang: Some(true),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    let channel = client_channel(m.payment_admin).await;
    let mut admin = admin::fault_service_client::FaultServiceClient::new(channel);
    let now = admin
        .set_faults(admin::SetFaultsRequest {
            decline_rate: Some(1.0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.decline_rate, 1.0);
    let order = m
        .place(request("fault-1", "sku-espresso", 1))
        .await
        .unwrap();
    assert_eq!(order.status(), pb::OrderStatus::PaymentDeclined);

    let e = admin
        .set_faults(admin::SetFaultsRequest {
            error_rate: Some(3.0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("error_rate"), "{e:?}");

    admin
        .set_faults(admin::SetFaultsRequest {
            decline_rate: Some(0.0),
            error_rate: Some(1.0),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = m
        .place(request("fault-2", "sku-espresso", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("injected fault in payment"), "{e:?}");
}

/// Inventory whose first Commit takes effect but never answers: the order
/// service sees a timeout for a commit that happened.
struct CommitAnswerLost {
    inner: meshwatch_services::inventory::InventoryService,
    lost: std::sync::atomic::AtomicBool,
}

#[tonic::async_trait]
impl inv::inventory_service_server::InventoryService for CommitAnswerLost {
    async fn reserve(
        &self,
        r: Request<inv::ReserveRequest>,
    ) -> Result<tonic::Response<inv::ReserveResponse>, tonic::Status> {
        inv::inventory_service_server::InventoryService::reserve(&self.inner, r).await
    }

    async fn commit(
        &self,
        r: Request<inv::CommitRequest>,
    ) -> Result<tonic::Response<inv::CommitResponse>, tonic::Status> {
        let answer = inv::inventory_service_server::InventoryService::commit(&self.inner, r).await;
        if !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Until the caller gives up and the call is dropped.
            std::future::pending::<()>().await;
        }
        answer
    }

    async fn release(
        &self,
        r: Request<inv::ReleaseRequest>,
    ) -> Result<tonic::Response<inv::ReleaseResponse>, tonic::Status> {
        inv::inventory_service_server::InventoryService::release(&self.inner, r).await
    }

    async fn get_stock(
        &self,
        r: Request<inv::GetStockRequest>,
    ) -> Result<tonic::Response<inv::GetStockResponse>, tonic::Status> {
        inv::inventory_service_server::InventoryService::get_stock(&self.inner, r).await
    }
}

both!(a_commit_whose_answer_is_lost_confirms_instead_of_refunding_sold_units);
async fn a_commit_whose_answer_is_lost_confirms_instead_of_refunding_sold_units(backend: Backend) {
    // Dropped last, after the guard stopped the services.
    let mut databases = Databases::default();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (il, inventory_addr) = bind().await;
    let db = meshwatch_services::db::Database::open(
        "inventory",
        &databases.fresh(backend, "inventory").await,
        meshwatch_services::inventory::MIGRATIONS,
        meshwatch_runtime::Readiness::default(),
    )
    .await
    .unwrap();
    let store = meshwatch_services::inventory::Inventory::new(
        db,
        vec![item("sku-lost", 5)],
        Duration::from_secs(30),
        meshwatch_services::db::Clock::System,
    );
    let wrapped = CommitAnswerLost {
        inner: meshwatch_services::inventory::InventoryService::new(
            store,
            meshwatch_services::faults::Faults::none("inventory"),
            1 << 20,
        ),
        lost: std::sync::atomic::AtomicBool::new(false),
    };
    tokio::spawn(meshwatch_runtime::serve(
        meshwatch_runtime::ServeConfig::new(app::identity("inventory"), &[app::INVENTORY_PROTO]),
        il,
        shutdown.clone(),
        tonic::service::Routes::new(inv::inventory_service_server::InventoryServiceServer::new(
            wrapped,
        )),
    ));
    let (pl, payment_addr) = bind().await;
    let mut pcfg = PaymentConfig {
        listen: payment_addr,
        common: Default::default(),
    };
    pcfg.common.database = databases.fresh(backend, "payment").await;
    tokio::spawn(app::run_payment(
        pcfg,
        app::identity("payment"),
        pl,
        shutdown.clone(),
    ));
    let (ol, order_addr) = bind().await;
    let mut ocfg = OrderConfig::local(
        order_addr,
        &format!("http://{inventory_addr}"),
        &format!("http://{payment_addr}"),
    );
    ocfg.common.database = databases.fresh(backend, "order").await;
    // The lost answer costs one call timeout: short, but not so short
    // that a disk stall at Reserve times out too.
    ocfg.call_timeout = Duration::from_secs(3);
    tokio::spawn(app::run_order(
        ocfg,
        app::identity("order"),
        ol,
        shutdown.clone(),
    ));
    let mut order = OrderClient::new(client_channel(order_addr).await);
    let mut inventory = InventoryClient::new(client_channel(inventory_addr).await);
    let mut payment = PaymentClient::new(client_channel(payment_addr).await);

    let mut r = Request::new(request("lost-commit", "sku-lost", 2));
    r.set_timeout(Duration::from_secs(30));
    let placed = order
        .place_order(r)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let stock = inventory
        .get_stock(inv::GetStockRequest {
            skus: vec!["sku-lost".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let p = payment
        .get_payment(pay::GetPaymentRequest {
            order_id: placed.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // The units are gone from stock, so the order must have been paid for.
    assert_eq!((stock[0].available, stock[0].reserved), (3, 0));
    assert_eq!(placed.status(), pb::OrderStatus::Confirmed, "{placed:?}");
    assert_eq!(
        (p.status(), p.charge_count),
        (pay::PaymentStatus::Charged, 1)
    );
}

both!(every_limit_is_answered_with_a_clear_status_and_the_service_stays_up);
async fn every_limit_is_answered_with_a_clear_status_and_the_service_stays_up(backend: Backend) {
    use meshwatch_services::limits::{MAX_ID_LEN, MAX_ITEMS, MAX_SKU_LEN, MAX_TOKEN_LEN};
    let m = mesh(Options {
        backend,
        order_max_concurrent: 2,
        payment_faults: FaultSettings {
            latency: Duration::from_millis(300),
            ..FaultSettings::default()
        },
        ..Options::default()
    })
    .await;
    let many_items = pb::PlaceOrderRequest {
        items: (0..=MAX_ITEMS)
            .map(|i| pb::LineItem {
                sku: format!("sku-{i}"),
                quantity: 1,
            })
            .collect(),
        ..request("lim-1", "sku-mug", 1)
    };
    let cases: Vec<(pb::PlaceOrderRequest, Code, String)> = vec![
        (
            many_items,
            Code::InvalidArgument,
            format!("{} items in one order; at most {MAX_ITEMS}", MAX_ITEMS + 1),
        ),
        (
            request("lim-2", &"s".repeat(MAX_SKU_LEN + 1), 1),
            Code::InvalidArgument,
            format!("sku is longer than {MAX_SKU_LEN} bytes"),
        ),
        (
            request(&"k".repeat(MAX_ID_LEN + 1), "sku-mug", 1),
            Code::InvalidArgument,
            format!("idempotency_key is longer than {MAX_ID_LEN} bytes"),
        ),
        (
            pb::PlaceOrderRequest {
                customer_id: "c".repeat(MAX_ID_LEN + 1),
                ..request("lim-4", "sku-mug", 1)
            },
            Code::InvalidArgument,
            format!("customer_id is longer than {MAX_ID_LEN} bytes"),
        ),
        (
            pb::PlaceOrderRequest {
                payment_token: "t".repeat(MAX_TOKEN_LEN + 1),
                ..request("lim-5", "sku-mug", 1)
            },
            Code::InvalidArgument,
            format!("payment_token is longer than {MAX_TOKEN_LEN} bytes"),
        ),
        (
            // 4 MiB of one made-up SKU: never decoded, let alone kept.
            request("lim-6", &"x".repeat(4 << 20), 1),
            Code::ResourceExhausted,
            "request message larger than this server's limit".to_owned(),
        ),
    ];
    for (req, code, text) in cases {
        let e = m.place(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(&text), "{text:?} not in {e:?}");
    }
    let e = m
        .inventory
        .clone()
        .get_stock(inv::GetStockRequest {
            skus: (0..=MAX_ITEMS).map(|i| format!("sku-{i}")).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Concurrency: order works on two RPCs at once (each waits 300 ms at
    // payment); the rest is shed at once, not queued.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let mut c = m.order.clone();
            tokio::spawn(async move {
                let mut r = Request::new(request(&format!("burst-{i}"), "sku-filter", 1));
                r.set_timeout(Duration::from_secs(20));
                c.place_order(r).await
            })
        })
        .collect();
    let (mut served, mut shed) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(
                    r.into_inner().order.unwrap().status(),
                    pb::OrderStatus::Confirmed
                );
                served += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("overloaded"), "{e:?}");
                shed += 1;
            }
        }
    }
    assert!(served >= 2 && shed >= 1, "served {served}, shed {shed}");

    // Still up and serving.
    let ok = m.place(request("lim-after", "sku-mug", 1)).await.unwrap();
    assert_eq!(ok.status(), pb::OrderStatus::Confirmed);
}

//! Replicas on one PostgreSQL: two order and two inventory processes'
//! worth of services (in one test process, each on its own port and pool)
//! over the same databases, and one payment.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use meshwatch_proto::inventory::v1 as inv;
use meshwatch_proto::order::v1 as pb;
use meshwatch_proto::payment::v1 as pay;
use meshwatch_services::app;
use meshwatch_services::config::{InventoryConfig, OrderConfig, PaymentConfig};
use meshwatch_services::db::DbTarget;
use meshwatch_services::inventory::catalog::CatalogItem;
use meshwatch_services::money::Money;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

struct Replicas {
    orders: [SocketAddr; 2],
    inventories: [SocketAddr; 2],
    payment: SocketAddr,
    order_db: String,
    payment_db: String,
    _shutdown: tokio_util::sync::DropGuard,
    // After `_shutdown`: the services are told to stop before their
    // databases are dropped.
    _databases: support::Databases,
}

/// Two order replicas (each calling its own inventory replica) and two
/// inventory replicas, sharing the order and inventory databases; one payment.
async fn replicas(stock: u32) -> Replicas {
    let pg = |url: String| DbTarget::Postgres {
        url,
        max_connections: 8,
    };
    let mut databases = support::Databases::default();
    let order_db = databases.postgres("order").await;
    let inventory_db = databases.postgres("inventory").await;
    let payment_db = databases.postgres("payment").await;
    let shutdown = CancellationToken::new();
    let catalog = vec![CatalogItem {
        sku: "sku-rare".into(),
        name: "Rare".into(),
        unit_price: Money::new("USD", 250).unwrap(),
        stock,
    }];

    let (pl, payment) = bind().await;
    let mut pcfg = PaymentConfig {
        listen: payment,
        common: Default::default(),
    };
    pcfg.common.database = pg(payment_db.clone());
    tokio::spawn(app::run_payment(
        pcfg,
        app::identity("payment"),
        pl,
        shutdown.clone(),
    ));

    let mut inventories = Vec::new();
    for _ in 0..2 {
        let (il, addr) = bind().await;
        let mut icfg = InventoryConfig::local(addr);
        icfg.catalog = catalog.clone();
        icfg.common.database = pg(inventory_db.clone());
        tokio::spawn(app::run_inventory(
            icfg,
            app::identity("inventory"),
            il,
            shutdown.clone(),
        ));
        inventories.push(addr);
    }
    let mut orders = Vec::new();
    for inventory in &inventories {
        let (ol, addr) = bind().await;
        let mut ocfg = OrderConfig::local(
            addr,
            &format!("http://{inventory}"),
            &format!("http://{payment}"),
        );
        ocfg.common.database = pg(order_db.clone());
        // All 200 orders queue on one stock row: on a shared 2-core machine
        // that takes seconds; no answer may be cut to PENDING by the budget.
        ocfg.request_budget = Duration::from_secs(60);
        ocfg.call_timeout = Duration::from_secs(30);
        tokio::spawn(app::run_order(
            ocfg,
            app::identity("order"),
            ol,
            shutdown.clone(),
        ));
        orders.push(addr);
    }
    let r = Replicas {
        orders: [orders[0], orders[1]],
        inventories: [inventories[0], inventories[1]],
        payment,
        order_db,
        payment_db,
        _shutdown: shutdown.drop_guard(),
        _databases: databases,
    };
    for addr in r.orders.iter().chain(&r.inventories).chain([&r.payment]) {
        wait_serving(*addr).await;
    }
    r
}

async fn wait_serving(addr: SocketAddr) {
    use meshwatch_proto::health::v1 as health;
    let client = health::health_client::HealthClient::new(channel(addr));
    support::eventually(&format!("{addr} SERVING"), Duration::from_secs(30), || {
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

fn request(key: &str) -> Request<pb::PlaceOrderRequest> {
    let mut r = Request::new(pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "c-replica".into(),
        items: vec![pb::LineItem {
            sku: "sku-rare".into(),
            quantity: 1,
        }],
        currency_code: "USD".into(),
        payment_token: String::new(),
    });
    r.set_timeout(Duration::from_secs(60));
    r
}

async fn stock(addr: SocketAddr) -> (u32, u32) {
    let items = inv::inventory_service_client::InventoryServiceClient::new(channel(addr))
        .get_stock(inv::GetStockRequest {
            skus: vec!["sku-rare".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    (items[0].available, items[0].reserved)
}

/// Money taken matches what was sold, read from the databases: no order
/// that is not CONFIRMED has a standing charge, and there are exactly as
/// many standing charges as confirmed orders. Returns the confirmed count.
async fn assert_charges_match_confirmed_orders(r: &Replicas) -> usize {
    use sqlx::{Connection, Row};
    let mut orders = sqlx::PgConnection::connect(&r.order_db).await.unwrap();
    let status: std::collections::HashMap<String, String> =
        sqlx::query("SELECT order_id, status FROM orders")
            .fetch_all(&mut orders)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get("order_id"), row.get("status")))
            .collect();
    let mut payments = sqlx::PgConnection::connect(&r.payment_db).await.unwrap();
    let charged: Vec<String> =
        sqlx::query_scalar("SELECT order_id FROM payments WHERE status = 'charged'")
            .fetch_all(&mut payments)
            .await
            .unwrap();
    for id in &charged {
        assert_eq!(
            status.get(id).map(String::as_str),
            Some("confirmed"),
            "{id} has a standing charge"
        );
    }
    let confirmed = status.values().filter(|s| *s == "confirmed").count();
    assert_eq!(
        charged.len(),
        confirmed,
        "one standing charge per confirmed order"
    );
    confirmed
}

async fn payment_of(addr: SocketAddr, order_id: &str) -> pay::Payment {
    pay::payment_service_client::PaymentServiceClient::new(channel(addr))
        .get_payment(pay::GetPaymentRequest {
            order_id: order_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_orders_on_stock_fifty_across_two_order_and_two_inventory_replicas() {
    let r = replicas(50).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let target = r.orders[i % 2];
            tokio::spawn(async move {
                pb::order_service_client::OrderServiceClient::new(channel(target))
                    .place_order(request(&format!("rush-{i}")))
                    .await
            })
        })
        .collect();
    let mut confirmed = Vec::new();
    let mut out_of_stock = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(resp) => {
                let o = resp.into_inner().order.unwrap();
                assert_eq!(o.status(), pb::OrderStatus::Confirmed, "{o:?}");
                confirmed.push(o);
            }
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                assert!(s.message().contains("insufficient stock"), "{s:?}");
                out_of_stock += 1;
            }
        }
    }
    assert_eq!((confirmed.len(), out_of_stock), (50, 150));
    // Both inventory replicas see the one stock: nothing left, nothing held.
    assert_eq!(stock(r.inventories[0]).await, (0, 0));
    assert_eq!(stock(r.inventories[1]).await, (0, 0));
    for o in &confirmed {
        let p = payment_of(r.payment, &o.order_id).await;
        assert_eq!(
            (p.status(), p.payment_id.as_str()),
            (pay::PaymentStatus::Charged, o.payment_id.as_str()),
            "the charge of {o:?}"
        );
    }
    assert_eq!(assert_charges_match_confirmed_orders(&r).await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_sent_to_both_order_replicas_at_once_is_one_order_and_one_charge() {
    let r = replicas(1_000).await;
    for round in 0..5 {
        let key = format!("twin-{round}");
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let target = r.orders[i % 2];
                let key = key.clone();
                tokio::spawn(async move {
                    pb::order_service_client::OrderServiceClient::new(channel(target))
                        .place_order(request(&key))
                        .await
                        .unwrap()
                        .into_inner()
                        .order
                        .unwrap()
                })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        let mut last = None;
        for t in tasks {
            let o = t.await.unwrap();
            ids.insert(o.order_id.clone());
            last = Some(o);
        }
        assert_eq!(ids.len(), 1, "one order for key {key}: {ids:?}");
        let order_id = ids.into_iter().next().unwrap();
        // Whichever replica answered last, the order ends confirmed and paid once.
        support::eventually("the order is decided", Duration::from_secs(20), || {
            let order_id = order_id.clone();
            let addr = r.orders[0];
            async move {
                pb::order_service_client::OrderServiceClient::new(channel(addr))
                    .get_order(pb::GetOrderRequest { order_id })
                    .await
                    .unwrap()
                    .into_inner()
                    .order
                    .unwrap()
                    .status()
                    == pb::OrderStatus::Confirmed
            }
        })
        .await;
        let p = payment_of(r.payment, &order_id).await;
        assert_eq!(p.status(), pay::PaymentStatus::Charged, "{last:?}");
    }
    // One order per key, and one standing charge per confirmed order.
    assert_eq!(assert_charges_match_confirmed_orders(&r).await, 5);
    assert_eq!(stock(r.inventories[1]).await, (995, 0), "one unit per key");
}

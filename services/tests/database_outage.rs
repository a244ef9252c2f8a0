//! The database killed under load: the three binaries on a PostgreSQL server
//! of this test's own (scripts/postgres), which is killed (immediate
//! shutdown, as a crash) while orders flow, then started again. Health goes
//! NOT_SERVING and heartbeats `not_ready`, requests fail fast with
//! UNAVAILABLE naming the database, the services recover by themselves, no
//! order is left PENDING, and nothing is charged twice or sold twice.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshwatch_proto::health::v1 as health;
use meshwatch_proto::order::v1 as pb;
use meshwatch_testkit::free_port;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::{Connection, Row};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic::Code;

const STOCK: i64 = 1_000_000;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `scripts/postgres CMD DIR`; returns its stdout.
fn postgres(cmd: &str, dir: &Path) -> String {
    let out = std::process::Command::new(root().join("scripts/postgres"))
        .arg(cmd)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/postgres {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A server of this test's own, stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::process::Command::new(root().join("scripts/postgres"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

struct Service {
    name: &'static str,
    port: u16,
    child: Child,
    /// Every heartbeat status the process wrote, in order.
    heartbeats: Arc<Mutex<Vec<String>>>,
}

fn spawn(name: &'static str, port: u16, url: &str, extra: &[String]) -> Service {
    let bin = match name {
        "order" => env!("CARGO_BIN_EXE_order"),
        "inventory" => env!("CARGO_BIN_EXE_inventory"),
        _ => env!("CARGO_BIN_EXE_payment"),
    };
    let mut child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", url])
        .args(["--heartbeat-interval", "100ms", "--log", "warn"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let heartbeats = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&heartbeats);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(s) = v["heartbeat.status"].as_str() {
                    sink.lock().unwrap().push(s.to_owned());
                }
            }
        }
    });
    Service {
        name,
        port,
        child,
        heartbeats,
    }
}

fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy()
}

async fn status(port: u16) -> Option<health::health_check_response::ServingStatus> {
    let mut c = health::health_client::HealthClient::new(channel(port));
    let mut req = tonic::Request::new(health::HealthCheckRequest::default());
    req.set_timeout(Duration::from_secs(2));
    c.check(req).await.ok().map(|r| r.into_inner().status())
}

async fn wait_status(s: &Service, want: health::health_check_response::ServingStatus) {
    support::eventually(
        &format!("{} {want:?}", s.name),
        Duration::from_secs(30),
        || async { status(s.port).await == Some(want) },
    )
    .await;
}

fn request(key: &str) -> tonic::Request<pb::PlaceOrderRequest> {
    let mut r = tonic::Request::new(pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "c-outage".into(),
        items: vec![pb::LineItem {
            sku: "sku-out".into(),
            quantity: 1,
        }],
        currency_code: "USD".into(),
        payment_token: String::new(),
    });
    r.set_timeout(Duration::from_secs(10));
    r
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let v: i64 = sqlx::query(sql)
        .fetch_one(&mut c)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    c.close().await.unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_killed_under_load_is_survived_without_pending_orders_or_double_charges() {
    use health::health_check_response::ServingStatus::{NotServing, Serving};
    let server = Server {
        dir: tempfile::tempdir().unwrap(),
    };
    // The server runs as the postgres user: it must be able to enter the folder.
    std::fs::set_permissions(
        server.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let admin_url = postgres("start", server.dir.path());
    let urls: Vec<String> = {
        let mut v = Vec::new();
        for name in ["order", "inventory", "payment"] {
            v.push(support::create_database(&admin_url, name).await);
        }
        v
    };
    let catalog = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        catalog.path(),
        format!(
            r#"[{{"sku":"sku-out","name":"Outage","price_minor":100,"currency_code":"USD","stock":{STOCK}}}]"#
        ),
    )
    .unwrap();
    let (op, ip, pp) = (free_port(), free_port(), free_port());
    let inventory = spawn(
        "inventory",
        ip,
        &urls[1],
        &[
            "--catalog".into(),
            catalog.path().display().to_string(),
            "--reservation-ttl".into(),
            "3s".into(),
        ],
    );
    let payment = spawn("payment", pp, &urls[2], &[]);
    let order = spawn(
        "order",
        op,
        &urls[0],
        &[
            "--inventory-addr".into(),
            format!("http://127.0.0.1:{ip}"),
            "--payment-addr".into(),
            format!("http://127.0.0.1:{pp}"),
            "--request-budget".into(),
            "3s".into(),
            "--call-timeout".into(),
            "1s".into(),
        ],
    );
    let services = [&order, &inventory, &payment];
    for s in services {
        wait_status(s, Serving).await;
    }

    // Load: eight clients placing orders with keys of their own until told.
    let stop = Arc::new(AtomicBool::new(false));
    // A failed assertion below stops the load too (else the clients would
    // spin against dead services and the runtime never shut down).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..8)
        .map(|w| {
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut client = pb::order_service_client::OrderServiceClient::new(channel(op));
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    match client.place_order(request(&format!("load-{w}-{n}"))).await {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    support::eventually("orders flow", Duration::from_secs(20), || async {
        ok.load(Ordering::SeqCst) >= 50
    })
    .await;

    // Kill the database (as a crash would) in the middle of it.
    postgres("kill", server.dir.path());
    for s in services {
        wait_status(s, NotServing).await;
    }
    // The next heartbeat (every 100 ms) says so; health may be first.
    for s in services {
        support::eventually(
            &format!(
                "{}: heartbeats say not_ready while the database is down",
                s.name
            ),
            Duration::from_secs(5),
            || async {
                s.heartbeats
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|b| b == "not_ready")
            },
        )
        .await;
    }
    // Fast and named: UNAVAILABLE at once, saying it is the database.
    let mut client = pb::order_service_client::OrderServiceClient::new(channel(op));
    for i in 0..5 {
        let started = Instant::now();
        let e = client
            .place_order(request(&format!("while-down-{i}")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(
            e.message()
                .contains("database unavailable (postgres 127.0.0.1:"),
            "{e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "failed fast, not after a timeout: {:?}",
            started.elapsed()
        );
    }

    // Back: the services recover by themselves, while the load goes on.
    postgres("start", server.dir.path());
    for s in services {
        wait_status(s, Serving).await;
    }
    let before = ok.load(Ordering::SeqCst);
    support::eventually("orders flow again", Duration::from_secs(30), || async {
        ok.load(Ordering::SeqCst) >= before + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert!(
        failed.load(Ordering::SeqCst) > 0,
        "some orders met the outage"
    );
    for s in services {
        let beats = s.heartbeats.lock().unwrap().clone();
        assert_eq!(beats.last().map(String::as_str), Some("up"), "{}", s.name);
    }

    // No order stays PENDING: the recovery pass finishes every one its run
    // could not (lease 3s + 4 x 1s + 2s, then a pass every second).
    support::eventually("no order left PENDING", Duration::from_secs(60), || async {
        scalar(
            &urls[0],
            "SELECT count(*) FROM orders WHERE status = 'pending'",
        )
        .await
            == 0
    })
    .await;
    // Reservations of failed orders expire (TTL 3s) or were released.
    support::eventually("no units left held", Duration::from_secs(30), || async {
        scalar(
            &urls[1],
            "SELECT count(*) FROM reservations WHERE state = 'held'",
        )
        .await
            == 0
    })
    .await;

    // Nothing charged twice, nothing sold twice: every confirmed order is
    // charged once, no other order has a standing charge, and the units
    // gone from stock are exactly the confirmed orders'.
    let mut orders_db = sqlx::PgConnection::connect(&urls[0]).await.unwrap();
    let rows = sqlx::query("SELECT order_id, status FROM orders")
        .fetch_all(&mut orders_db)
        .await
        .unwrap();
    let mut payments_db = sqlx::PgConnection::connect(&urls[2]).await.unwrap();
    let mut confirmed = 0i64;
    for r in &rows {
        let id: String = r.get("order_id");
        let status: String = r.get("status");
        let charge = sqlx::query("SELECT status, charge_count FROM payments WHERE order_id = $1")
            .bind(&id)
            .fetch_optional(&mut payments_db)
            .await
            .unwrap()
            .map(|p| {
                (
                    p.get::<String, _>("status"),
                    p.get::<i64, _>("charge_count"),
                )
            });
        if status == "confirmed" {
            confirmed += 1;
            assert_eq!(charge, Some(("charged".to_owned(), 1)), "{id}");
        } else {
            assert!(
                !matches!(&charge, Some((s, _)) if s == "charged"),
                "{id} is {status} but its charge stands: {charge:?}"
            );
        }
    }
    let charged = scalar(
        &urls[2],
        "SELECT count(*) FROM payments WHERE status = 'charged'",
    )
    .await;
    assert_eq!(
        charged, confirmed,
        "one standing charge per confirmed order"
    );
    let available = scalar(
        &urls[1],
        "SELECT available FROM items WHERE sku = 'sku-out'",
    )
    .await;
    assert_eq!(
        STOCK - available,
        confirmed,
        "units sold = orders confirmed"
    );
    assert!(confirmed >= 100, "{confirmed} confirmed");

    for s in [order, inventory, payment] {
        let pid = Pid::from_raw(i32::try_from(s.child.id().unwrap()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        let mut child = s.child;
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{} exited {status}", s.name);
    }
}

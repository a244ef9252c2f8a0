//! gRPC over TLS between order, inventory and payment, with certificates made
//! in the test: a PlaceOrder through all three over TLS, mutual TLS refusing a
//! client without a certificate, and a plaintext client refused by a TLS port.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use meshwatch_entry::TlsArgs;
use meshwatch_proto::order::v1 as pb;
use meshwatch_services::app;
use meshwatch_services::config::{Common, InventoryConfig, OrderConfig, PaymentConfig};
use meshwatch_services::db::DbTarget;
use meshwatch_testkit::TestPki;
use meshwatch_tls::Tls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

type OrderClient = pb::order_service_client::OrderServiceClient<Channel>;

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// The three services over TLS (mutual when `client_auth`), order calling
/// the other two at https://localhost:PORT.
/// Their SQLite files go into `pki`'s folder (each test its own).
async fn tls_mesh(pki: &TestPki, client_auth: bool, shutdown: &CancellationToken) -> SocketAddr {
    let tls = Tls::load(&TlsArgs {
        cert: Some(pki.server_cert.clone()),
        key: Some(pki.server_key.clone()),
        ca: Some(pki.ca.clone()),
        client_auth,
    })
    .unwrap();
    let data_dir = pki.ca.parent().unwrap().join("data");
    let common = || Common {
        tls: tls.clone(),
        database: DbTarget::Sqlite {
            data_dir: data_dir.clone(),
        },
        ..Common::default()
    };
    let (il, inventory_addr) = bind().await;
    let mut icfg = InventoryConfig::local(inventory_addr);
    icfg.common = common();
    tokio::spawn(app::run_inventory(
        icfg,
        app::identity("inventory"),
        il,
        shutdown.clone(),
    ));
    let (pl, payment_addr) = bind().await;
    let pcfg = PaymentConfig {
        listen: payment_addr,
        common: common(),
    };
    tokio::spawn(app::run_payment(
        pcfg,
        app::identity("payment"),
        pl,
        shutdown.clone(),
    ));
    let (ol, order_addr) = bind().await;
    let mut ocfg = OrderConfig::local(
        order_addr,
        &format!("https://localhost:{}", inventory_addr.port()),
        &format!("https://localhost:{}", payment_addr.port()),
    );
    ocfg.common = common();
    tokio::spawn(app::run_order(
        ocfg,
        app::identity("order"),
        ol,
        shutdown.clone(),
    ));
    order_addr
}

fn client_tls(pki: &TestPki, with_client_cert: bool) -> ClientTlsConfig {
    let mut c = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()));
    if with_client_cert {
        c = c.identity(Identity::from_pem(
            std::fs::read(&pki.client_cert).unwrap(),
            std::fs::read(&pki.client_key).unwrap(),
        ));
    }
    c
}

async fn order_client(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> OrderClient {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://localhost:{}", addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    OrderClient::new(endpoint.connect_lazy())
}

fn place(key: &str) -> tonic::Request<pb::PlaceOrderRequest> {
    let mut r = tonic::Request::new(pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "c-tls".into(),
        items: vec![pb::LineItem {
            sku: "sku-mug".into(),
            quantity: 1,
        }],
        currency_code: "USD".into(),
        payment_token: String::new(),
    });
    r.set_timeout(Duration::from_secs(10));
    r
}

/// Retries until the servers have bound and answer (bounded), then returns
/// the first definitive answer.
async fn place_until_answered(
    client: &mut OrderClient,
    key: &str,
) -> Result<pb::PlaceOrderResponse, tonic::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.place_order(place(key)).await {
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other.map(tonic::Response::into_inner),
        }
    }
}

#[tokio::test]
async fn place_order_runs_over_tls_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let shutdown = CancellationToken::new();
    let order = tls_mesh(&pki, false, &shutdown).await;

    let mut client = order_client(order, Some(client_tls(&pki, false))).await;
    let answer = place_until_answered(&mut client, "tls-1").await.unwrap();
    let placed = answer.order.unwrap();
    assert_eq!(placed.status(), pb::OrderStatus::Confirmed, "{placed:?}");
    assert!(!placed.payment_id.is_empty());

    // A plaintext client cannot talk to the TLS port.
    let mut plain = order_client(order, None).await;
    let err = plain.place_order(place("tls-2")).await.unwrap_err();
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
        "{err:?}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let shutdown = CancellationToken::new();
    let order = tls_mesh(&pki, true, &shutdown).await;

    // With a client certificate: order, and order's own calls downstream
    // (it presents its certificate), go through.
    let mut client = order_client(order, Some(client_tls(&pki, true))).await;
    let answer = place_until_answered(&mut client, "mtls-1").await.unwrap();
    assert_eq!(answer.order.unwrap().status(), pb::OrderStatus::Confirmed);

    // Without one, the handshake is refused.
    let mut anonymous = order_client(order, Some(client_tls(&pki, false))).await;
    let err = anonymous.place_order(place("mtls-2")).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("CertificateRequired"),
        "the server must demand a certificate: {err:?}"
    );
    shutdown.cancel();
}

//! meshctl's gRPC connections over TLS: `meshctl --tls-ca … probe HOST:PORT`
//! against a TLS health server made in the test, and the errors a user sees
//! without the CA or with a bad CA file.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use meshwatch_proto::health::v1 as hpb;
use meshwatch_testkit::TestPki;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

struct AlwaysServing;

#[tonic::async_trait]
impl hpb::health_server::Health for AlwaysServing {
    async fn check(
        &self,
        _: Request<hpb::HealthCheckRequest>,
    ) -> Result<Response<hpb::HealthCheckResponse>, Status> {
        Ok(Response::new(hpb::HealthCheckResponse {
            status: hpb::health_check_response::ServingStatus::Serving as i32,
        }))
    }

    type WatchStream =
        tokio_stream::wrappers::ReceiverStream<Result<hpb::HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: Request<hpb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list(
        &self,
        _: Request<hpb::HealthListRequest>,
    ) -> Result<Response<hpb::HealthListResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

fn meshctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env_remove("MESHWATCH_TLS_CA")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_speaks_tls_with_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let identity = Identity::from_pem(
        std::fs::read(&pki.server_cert).unwrap(),
        std::fs::read(&pki.server_key).unwrap(),
    );
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(hpb::health_server::HealthServer::new(AlwaysServing))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);

    let ca = pki.ca.to_str().unwrap().to_owned();
    let target = format!("localhost:{port}");
    let probe = {
        let (ca, target) = (ca.clone(), target.clone());
        move || meshctl(&["--tls-ca", &ca, "probe", &target, "--timeout", "5s"])
    };
    let out = tokio::task::spawn_blocking(probe).await.unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");

    // The flag also works after the subcommand.
    let (c, t) = (ca.clone(), format!("https://localhost:{port}"));
    let out = tokio::task::spawn_blocking(move || meshctl(&["probe", &t, "--tls-ca", &c]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // https without a CA: a usage-level message naming what to give.
    let t = format!("https://localhost:{port}");
    let out = tokio::task::spawn_blocking(move || meshctl(&["probe", &t]))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--tls-ca"), "{err}");

    // A CA file that is not a certificate: exit 64 naming the flag.
    let key = pki.server_key.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || meshctl(&["--tls-ca", &key, "probe", &target]))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--tls-ca"), "{err}");
}

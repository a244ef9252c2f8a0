//! What the benchmarks share: the echo baseline (a trivial tonic unary
//! server in the benchmark's own process, driven at saturation by the same
//! load loop as PlaceOrder) and reading a setting from the environment.

use std::time::Duration;

use meshwatch_meshctl::{LoadReport, LoadSpec};
use meshwatch_proto::admin::v1 as echo;

/// A client of the echo server that [`start_echo`] runs.
pub type EchoClient = echo::fault_service_client::FaultServiceClient<tonic::transport::Channel>;

struct Echo;

#[tonic::async_trait]
impl echo::fault_service_server::FaultService for Echo {
    async fn get_faults(
        &self,
        _: tonic::Request<echo::GetFaultsRequest>,
    ) -> Result<tonic::Response<echo::Faults>, tonic::Status> {
        Ok(tonic::Response::new(echo::Faults::default()))
    }
    async fn set_faults(
        &self,
        _: tonic::Request<echo::SetFaultsRequest>,
    ) -> Result<tonic::Response<echo::Faults>, tonic::Status> {
        Ok(tonic::Response::new(echo::Faults::default()))
    }
}

/// Starts the echo server on a free loopback port (it runs until the
/// process ends) and returns a connected client.
pub async fn start_echo() -> EchoClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the echo server");
    let addr = listener.local_addr().expect("the echo server's address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(echo::fault_service_server::FaultServiceServer::new(Echo))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    EchoClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("the echo server's URL")
            .connect()
            .await
            .expect("connect to the echo server"),
    )
}

/// The echo server at saturation (closed loop) for `duration`.
pub async fn echo_load(client: &EchoClient, duration: Duration, concurrency: usize) -> LoadReport {
    let client = client.clone();
    meshwatch_meshctl::run_load(
        LoadSpec {
            rate: 0.0,
            duration,
            concurrency,
        },
        move |_| {
            let mut c = client.clone();
            async move {
                c.get_faults(echo::GetFaultsRequest {})
                    .await
                    .map(|_| "OK".to_owned())
                    .map_err(|s| meshwatch_proto::status::code_name(s.code() as i32).to_owned())
            }
        },
        |_| {},
    )
    .await
}

/// `name` from the environment, parsed; `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The live children of `pid` (`pgrep -P`), in pgrep's order; none when
/// pgrep cannot run or `pid` has none.
pub fn children(pid: u32) -> Vec<u32> {
    std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The repository's root.
pub fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `cargo build --release --bins --workspace`, the binaries the benchmark
/// runs. Without the variables `cargo bench` sets for the target it runs
/// (`CARGO_PKG_NAME` and the like): ring's build script watches
/// `CARGO_PKG_NAME`, so with them the build took ring and all that links it
/// for changed and rebuilt them (3 minutes here), and the next plain
/// `cargo build --release` rebuilt them again.
pub fn build_release_binaries() {
    println!("building release binaries…");
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo
        .current_dir(root())
        .args(["build", "--release", "--locked", "--bins", "--workspace"]);
    for (name, _) in std::env::vars_os() {
        let set_for_target = name.to_str().is_some_and(|n| {
            n.starts_with("CARGO_PKG_")
                || n.starts_with("CARGO_MANIFEST_")
                || n.starts_with("CARGO_BIN_")
                || matches!(
                    n,
                    "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
                )
        });
        if set_for_target {
            cargo.env_remove(name);
        }
    }
    let built = cargo.status().expect("run cargo build --release");
    assert!(built.success(), "cargo build --release failed");
}

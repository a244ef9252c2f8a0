//! User flow 2: the mesh comes up and `Watch("")` reaches SERVING; kill -9 of
//! the payment process turns `Watch("payment")` and `Watch("")` NOT_SERVING
//! within the monitor's bound; a restart brings SERVING back.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use meshwatch_proto::health::v1 as pb;
use pb::health_check_response::ServingStatus;
use support::{stderr, Mesh, BOUND};
use tonic::Streaming;

/// Detection bound at one-second heartbeats (the monitor's hard bound plus
/// delivery through shipper and Kafka).
const DETECTION_BOUND: Duration = Duration::from_secs(10);

async fn watch(mesh: &Mesh, service: &str) -> Streaming<pb::HealthCheckResponse> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", mesh.monitor_port))
            .unwrap()
            .connect()
            .await
            .unwrap();
    pb::health_client::HealthClient::new(channel)
        .watch(pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Reads the stream until `want`, at most `bound`; returns when it came.
async fn until(
    stream: &mut Streaming<pb::HealthCheckResponse>,
    want: ServingStatus,
    bound: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let left = bound.checked_sub(start.elapsed()).unwrap_or_default();
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} within {bound:?}"))
            .unwrap()
            .unwrap();
        if msg.status == want as i32 {
            return start.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_payment_then_restart() {
    let mesh = Mesh::up(&[]).await;
    let mut mesh_watch = watch(&mesh, "").await;
    let mut payment_watch = watch(&mesh, "payment").await;
    until(&mut mesh_watch, ServingStatus::Serving, BOUND).await;
    until(&mut payment_watch, ServingStatus::Serving, BOUND).await;

    let payment = mesh.service_pid("payment");
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(payment as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    until(
        &mut payment_watch,
        ServingStatus::NotServing,
        DETECTION_BOUND,
    )
    .await;
    let payment_detected = killed.elapsed();
    until(&mut mesh_watch, ServingStatus::NotServing, DETECTION_BOUND).await;
    eprintln!("payment NOT_SERVING {payment_detected:?} after kill -9");

    // The payment's shipper exits with its child (code 137); restart once it has.
    let wrapper = nix::unistd::Pid::from_raw(mesh.wrapper_pid("payment") as i32);
    meshwatch_testkit::wait_for(BOUND, "payment's shipper to exit after its child", || {
        nix::sys::signal::kill(wrapper, None).is_err().then_some(())
    })
    .await;
    let out = mesh.script(&["start", "payment"]);
    assert!(out.status.success(), "{}", stderr(&out));
    until(&mut payment_watch, ServingStatus::Serving, BOUND).await;
    until(&mut mesh_watch, ServingStatus::Serving, BOUND).await;
}

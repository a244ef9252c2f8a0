use super::*;
use crate::test_support::EchoFaults;
use hpb::health_check_response::ServingStatus as Pb;
use meshwatch_proto::admin::v1::fault_service_server::FaultServiceServer;
use meshwatch_proto::health::v1 as hpb;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;

#[tokio::test]
async fn serves_health_and_drains_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = ServeConfig::new(
        ServiceIdentity::new("probe", "0.1.0"),
        &["meshwatch.admin.v1.FaultService"],
    );
    // Long: an open Watch must not hold the drain until the grace runs out.
    cfg.drain_grace = Duration::from_secs(30);
    cfg.heartbeat_interval = Duration::from_secs(3600);
    let health = cfg.health.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        cfg,
        listener,
        shutdown.clone(),
        Routes::new(FaultServiceServer::new(EchoFaults)),
    ));

    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = hpb::health_client::HealthClient::new(channel);
    for name in ["", "probe", "meshwatch.admin.v1.FaultService"] {
        let status = client
            .check(hpb::HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, Pb::Serving as i32, "{name:?}");
    }
    let unknown = client
        .check(hpb::HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = client
        .watch(hpb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        Pb::Serving as i32
    );

    shutdown.cancel();
    // The drain flips health first; an open Watch sees it.
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a status change during the drain");
    assert_eq!(next.unwrap().unwrap().status, Pb::NotServing as i32);
    assert_eq!(health.get(""), Some(ServingStatus::NotServing));
    // Then the Watch stream ends, and with it the drain, long before the grace.
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the Watch stream ends during the drain");
    assert!(end.is_none(), "{end:?}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once the open Watch has ended, not after the 30 s grace")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn empty_health_names_leave_the_state_alone() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ServeConfig::new(ServiceIdentity::new("monitor", "0.1.0"), &[]);
    cfg.health_names.clear();
    cfg.health.set("", ServingStatus::NotServing);
    let health = cfg.health.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        cfg,
        listener,
        shutdown.clone(),
        Routes::new(FaultServiceServer::new(EchoFaults)),
    ));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(health.list().len(), 1);
    assert_eq!(health.get(""), Some(ServingStatus::NotServing));
}

async fn start(
    cfg: ServeConfig,
    routes: Routes,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tonic::transport::Channel,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(cfg, listener, shutdown.clone(), routes));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    (addr, shutdown, channel)
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_are_shed_and_health_still_answers() {
    use crate::test_support::GatedFaults;
    use meshwatch_proto::admin::v1::fault_service_client::FaultServiceClient;
    use meshwatch_proto::admin::v1::GetFaultsRequest;
    let mut cfg = ServeConfig::new(ServiceIdentity::new("probe", "0.1.0"), &[]);
    cfg.heartbeat_interval = Duration::from_secs(3600);
    cfg.limits.max_concurrent_rpcs = 2;
    let gated = GatedFaults::default();
    let (_, shutdown, channel) =
        start(cfg, Routes::new(FaultServiceServer::new(gated.clone()))).await;
    let _stop = shutdown.drop_guard();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut c = FaultServiceClient::new(channel.clone());
            tokio::spawn(async move { c.get_faults(GetFaultsRequest {}).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gated.entered.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let shed = FaultServiceClient::new(channel.clone())
        .get_faults(GetFaultsRequest {})
        .await
        .unwrap_err();
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed:?}");
    assert!(shed.message().contains("overloaded"), "{shed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shed at once, not queued"
    );
    let health = hpb::health_client::HealthClient::new(channel.clone())
        .check(hpb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, Pb::Serving as i32);
    gated.gate.notify_waiters();
    for h in held {
        h.await.unwrap().unwrap();
    }
    // Places are given back: the next call is served.
    gated.gate.notify_one();
    FaultServiceClient::new(channel)
        .get_faults(GetFaultsRequest {})
        .await
        .unwrap();
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_the_server_stays_up() {
    let mut cfg = ServeConfig::new(ServiceIdentity::new("probe", "0.1.0"), &[]);
    cfg.heartbeat_interval = Duration::from_secs(3600);
    cfg.limits.max_message_bytes = 512;
    let (_, shutdown, channel) = start(cfg, Routes::new(FaultServiceServer::new(EchoFaults))).await;
    let _stop = shutdown.drop_guard();
    let mut client = hpb::health_client::HealthClient::new(channel);
    let e = client
        .check(hpb::HealthCheckRequest {
            service: "x".repeat(4096),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("limit of 512 bytes"), "{e:?}");
    let ok = client
        .check(hpb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().status, Pb::Serving as i32);
}

#[tokio::test]
async fn health_follows_readiness_until_the_drain() {
    let mut cfg = ServeConfig::new(ServiceIdentity::new("probe", "0.1.0"), &["x.v1.X"]);
    cfg.heartbeat_interval = Duration::from_secs(3600);
    let readiness = cfg.readiness.clone();
    let health = cfg.health.clone();
    let (_, shutdown, _) = start(cfg, Routes::new(FaultServiceServer::new(EchoFaults))).await;
    let wait_for = |want: ServingStatus| {
        let health = health.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while ["", "probe", "x.v1.X"]
                .iter()
                .any(|n| health.get(n) != Some(want))
            {
                assert!(tokio::time::Instant::now() < deadline, "never {want:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(ServingStatus::Serving).await;
    readiness.set(false);
    wait_for(ServingStatus::NotServing).await;
    readiness.set(true);
    wait_for(ServingStatus::Serving).await;
    shutdown.cancel();
    wait_for(ServingStatus::NotServing).await;
    // Ready again during the drain changes nothing.
    readiness.set(false);
    readiness.set(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(health.get(""), Some(ServingStatus::NotServing));
}

#[tokio::test]
async fn the_admin_listener_serves_its_routes_until_shutdown() {
    use meshwatch_proto::admin::v1::fault_service_client::FaultServiceClient;
    use meshwatch_proto::admin::v1::GetFaultsRequest;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_admin(
        listener,
        &["meshwatch.admin.v1.FaultService"],
        crate::Limits::default(),
        shutdown.clone(),
        Routes::new(FaultServiceServer::new(EchoFaults)),
    ));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FaultServiceClient::new(channel)
        .get_faults(GetFaultsRequest {})
        .await
        .unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

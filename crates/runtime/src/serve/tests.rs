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

use super::*;
use pb::health_server::Health;
use tokio_stream::StreamExt;

fn req(name: &str) -> Request<pb::HealthCheckRequest> {
    Request::new(pb::HealthCheckRequest {
        service: name.to_owned(),
    })
}

async fn next_status(
    stream: &mut ReceiverStream<Result<pb::HealthCheckResponse, Status>>,
) -> PbStatus {
    let item = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("a watch message within 5 s")
        .expect("stream still open")
        .expect("not an error");
    PbStatus::try_from(item.status).expect("a known enum value")
}

#[tokio::test]
async fn check_unknown_is_not_found_and_known_is_reported() {
    let state = HealthState::new();
    let svc = HealthService::new(state.clone());
    let err = svc.check(req("payment")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("payment"), "{}", err.message());

    state.set("payment", ServingStatus::NotServing);
    let ok = svc.check(req("payment")).await.unwrap().into_inner();
    assert_eq!(ok.status, PbStatus::NotServing as i32);
}

#[tokio::test]
async fn watch_sends_current_then_each_change() {
    let state = HealthState::new();
    state.set("order", ServingStatus::Serving);
    let svc = HealthService::new(state.clone());
    let mut stream = svc.watch(req("order")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut stream).await, PbStatus::Serving);

    state.set("order", ServingStatus::Serving); // no change, no message
    state.set("order", ServingStatus::NotServing);
    state.set("order", ServingStatus::Serving);
    assert_eq!(next_status(&mut stream).await, PbStatus::NotServing);
    assert_eq!(next_status(&mut stream).await, PbStatus::Serving);
}

#[tokio::test]
async fn watch_of_unknown_name_stays_open_and_follows_it() {
    let state = HealthState::new();
    let svc = HealthService::new(state.clone());
    let mut stream = svc.watch(req("inventory")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut stream).await, PbStatus::ServiceUnknown);
    // Not known: not listed, Check says NOT_FOUND, though someone watches it.
    assert!(state.list().is_empty());
    assert_eq!(state.get("inventory"), None);

    state.set("inventory", ServingStatus::Serving);
    assert_eq!(next_status(&mut stream).await, PbStatus::Serving);
    state.remove("inventory");
    assert_eq!(next_status(&mut stream).await, PbStatus::ServiceUnknown);
    state.set("inventory", ServingStatus::NotServing);
    assert_eq!(next_status(&mut stream).await, PbStatus::NotServing);
}

#[tokio::test]
async fn unknown_slot_is_released_when_the_watcher_leaves() {
    let state = HealthState::new();
    let svc = HealthService::new(state.clone());
    let mut stream = svc.watch(req("ghost")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut stream).await, PbStatus::ServiceUnknown);
    drop(stream);
    // The watch task notices the client left on its next send; trigger one.
    state.set("ghost", ServingStatus::Serving);
    state.remove("ghost");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while state.lock().contains_key("ghost") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never released"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn list_reports_known_names_only() {
    let state = HealthState::new();
    let svc = HealthService::new(state.clone());
    state.set("", ServingStatus::Serving);
    state.set("order", ServingStatus::NotServing);
    let _watch_unknown = svc.watch(req("nobody")).await.unwrap();
    let list = svc
        .list(Request::new(pb::HealthListRequest {}))
        .await
        .unwrap()
        .into_inner();
    let got: BTreeMap<_, _> = list
        .statuses
        .into_iter()
        .map(|(k, v)| (k, v.status))
        .collect();
    let want: BTreeMap<_, _> = [
        (String::new(), PbStatus::Serving as i32),
        ("order".to_owned(), PbStatus::NotServing as i32),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn slow_watcher_resynchronises_to_the_latest_status() {
    let state = HealthState::new();
    state.set("payment", ServingStatus::Serving);
    let svc = HealthService::new(state.clone());
    let mut stream = svc.watch(req("payment")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut stream).await, PbStatus::Serving);
    // Far more flips than the backlog and stream buffer hold.
    for i in 0..(WATCH_BACKLOG * 4) {
        let s = if i % 2 == 0 {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        state.set("payment", s);
    }
    state.set("payment", ServingStatus::NotServing);
    // Whatever was skipped, the stream converges on the present status.
    let mut last = next_status(&mut stream).await;
    while last != PbStatus::NotServing || state.get("payment") != Some(ServingStatus::NotServing) {
        last = next_status(&mut stream).await;
    }
    assert_eq!(last, PbStatus::NotServing);
}

#[tokio::test]
async fn closing_delivers_the_drain_status_then_ends_the_stream() {
    let state = HealthState::new();
    state.set("order", ServingStatus::Serving);
    let svc = HealthService::new(state.clone());
    let mut stream = svc.watch(req("order")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut stream).await, PbStatus::Serving);

    state.set("order", ServingStatus::NotServing);
    state.close_watches();
    assert_eq!(next_status(&mut stream).await, PbStatus::NotServing);
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends within 5 s");
    assert!(end.is_none(), "{end:?}");
}

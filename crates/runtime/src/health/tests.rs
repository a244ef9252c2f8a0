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

/// Waits (bounded) until `cond` holds, yielding to the watch tasks.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_watcher_that_leaves_ends_its_task_without_any_change() {
    let state = HealthState::new();
    state.set("order", ServingStatus::Serving);
    let svc = HealthService::new(state.clone());
    let mut quiet = svc.watch(req("order")).await.unwrap().into_inner();
    let mut ghost = svc.watch(req("never-known")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut quiet).await, PbStatus::Serving);
    assert_eq!(next_status(&mut ghost).await, PbStatus::ServiceUnknown);
    assert_eq!(state.open_watches(), 2);
    // Nothing ever changes for either name: only the hang-up can end them.
    drop(quiet);
    drop(ghost);
    eventually("the watch tasks end when their clients leave", || {
        state.open_watches() == 0
    })
    .await;
    eventually("the unknown name's slot is released", || {
        !state.lock().contains_key("never-known")
    })
    .await;
}

#[tokio::test]
async fn open_watches_are_capped_and_a_freed_place_is_reused() {
    let state = HealthState::with_max_watches(2);
    state.set("", ServingStatus::Serving);
    let svc = HealthService::new(state.clone());
    let first = svc.watch(req("")).await.unwrap().into_inner();
    let _second = svc.watch(req("")).await.unwrap().into_inner();
    let err = svc.watch(req("")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("Watch streams"), "{}", err.message());
    // Check still answers at the cap.
    assert!(svc.check(req("")).await.is_ok());
    drop(first);
    eventually("the first watch's place is freed", || {
        state.open_watches() == 1
    })
    .await;
    let mut third = svc.watch(req("")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut third).await, PbStatus::Serving);
}

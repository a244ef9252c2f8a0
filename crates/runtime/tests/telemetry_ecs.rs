//! The ECS layer and W3C propagation through the real global subscriber
//! (`telemetry::init_with_sink`): a process can install it once, so every
//! check lives in this one test binary and one test.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwatch_ecs::ServiceIdentity;
use meshwatch_proto::admin::v1 as pb;
use meshwatch_runtime::telemetry::{self, current_trace_id, traced_channel, TraceLayer};
use opentelemetry::trace::TraceContextExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// `GetFaults` logs an event and succeeds; `SetFaults` fails with INVALID_ARGUMENT.
struct EchoFaults;

#[tonic::async_trait]
impl pb::fault_service_server::FaultService for EchoFaults {
    async fn get_faults(
        &self,
        _request: Request<pb::GetFaultsRequest>,
    ) -> Result<Response<pb::Faults>, Status> {
        tracing::info!(order.id = "o-1", "handling get_faults");
        Ok(Response::new(pb::Faults::default()))
    }

    async fn set_faults(
        &self,
        _request: Request<pb::SetFaultsRequest>,
    ) -> Result<Response<pb::Faults>, Status> {
        Err(Status::invalid_argument("error_rate must be within [0, 1]"))
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

fn take_json(lines: &Lines) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::mem::take(&mut *lines.lock().unwrap())
        .iter()
        .map(|l| match serde_json::from_str(l).unwrap() {
            serde_json::Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

#[tokio::test]
async fn ecs_lines_and_trace_propagation() {
    let lines: Lines = Arc::default();
    let sink = Arc::clone(&lines);
    let identity = ServiceIdentity::new("probe", "9.9.9");
    let _guard = telemetry::init_with_sink(
        &identity,
        "info",
        Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_owned())),
    )
    .unwrap();
    // A second initialisation is refused, not silently ignored.
    assert!(telemetry::init(&identity, "info").is_err());

    outside_spans(&lines);
    rpc_lines(&lines).await;
}

/// Events outside any span: typed fields, no trace fields, filter applied.
fn outside_spans(captured: &Lines) {
    tracing::warn!(
        answer = 42u64,
        ratio = 0.5,
        flag = true,
        "plain {}",
        "message"
    );
    tracing::debug!("filtered out");
    let lines = take_json(captured);
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l["message"], "plain message");
    assert_eq!(l["log.level"], "warn");
    assert_eq!(l["answer"], 42);
    assert_eq!(l["ratio"], 0.5);
    assert_eq!(l["flag"], true);
    assert!(!l.contains_key("trace.id") && !l.contains_key("span.id"));
    assert!(meshwatch_ecs::parse_timestamp(l["@timestamp"].as_str().unwrap()).is_some());

    // A bare `error` field is written as ECS's `error.message`.
    let e = std::io::Error::other("disk on fire");
    tracing::error!(error = %e, "failed");
    let lines = take_json(captured);
    assert_eq!(lines[0]["error.message"], "disk on fire");
    assert!(!lines[0].contains_key("error"));
}

/// Lines of one RPC share the caller's trace id; one access line per RPC.
async fn rpc_lines(captured: &Lines) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(
        Server::builder()
            .layer(TraceLayer)
            .add_service(pb::fault_service_server::FaultServiceServer::new(
                EchoFaults,
            ))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener),
                stop.clone().cancelled_owned(),
            ),
    );

    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::fault_service_client::FaultServiceClient::new(traced_channel(channel));
    let caller = tracing::info_span!("caller");
    let (caller_trace, caller_span) = {
        let _e = caller.enter();
        let cx = caller.context();
        let span = cx.span();
        let sc = span.span_context();
        (current_trace_id().unwrap(), sc.span_id().to_string())
    };
    async {
        client.get_faults(pb::GetFaultsRequest {}).await.unwrap();
        let err = client
            .set_faults(pb::SetFaultsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
    .instrument(caller.clone())
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let lines = take_json(captured);
    for line in &lines {
        for f in REQUIRED {
            assert!(line.contains_key(f), "{f} missing in {line:?}");
        }
        assert_eq!(line["service.name"], "probe");
        assert_eq!(line["event.dataset"], "probe.log");
    }
    let server_lines: Vec<_> = lines
        .iter()
        .filter(|l| l.get("rpc.service").is_some())
        .collect();
    // Handler event + two access lines.
    assert_eq!(server_lines.len(), 3, "{server_lines:#?}");
    for line in &server_lines {
        assert_eq!(line["trace.id"], caller_trace.as_str(), "{line:?}");
        let span = line["span.id"].as_str().unwrap();
        assert!(is_hex(span, 16), "{span}");
        assert_ne!(
            span, caller_span,
            "the server span is a child, not the caller's span"
        );
        assert!(is_hex(line["trace.id"].as_str().unwrap(), 32));
        assert_eq!(line["parent.id"], caller_span.as_str(), "{line:?}");
    }
    let handler = server_lines
        .iter()
        .find(|l| l["message"] == "handling get_faults")
        .unwrap();
    assert_eq!(handler["order.id"], "o-1");
    assert_eq!(handler["rpc.method"], "GetFaults");

    let access: Vec<_> = server_lines
        .iter()
        .filter(|l| l.contains_key("rpc.grpc.status_code"))
        .collect();
    assert_eq!(access.len(), 2);
    let ok = access
        .iter()
        .find(|l| l["rpc.method"] == "GetFaults")
        .unwrap();
    assert_eq!(ok["rpc.grpc.status_code"], 0);
    assert_eq!(ok["log.level"], "info");
    assert_eq!(ok["rpc.service"], "meshwatch.admin.v1.FaultService");
    assert!(ok["event.duration"].as_u64().unwrap() > 0);
    let bad = access
        .iter()
        .find(|l| l["rpc.method"] == "SetFaults")
        .unwrap();
    assert_eq!(bad["rpc.grpc.status_code"], 3);
    assert_eq!(bad["log.level"], "warn");
    assert!(bad["message"]
        .as_str()
        .unwrap()
        .contains("INVALID_ARGUMENT"));
}

//! Helpers for this crate's unit tests: a tiny gRPC service.

use tonic::{Request, Response, Status};

use meshwatch_proto::admin::v1 as pb;

/// A stand-in service: `GetFaults` logs an event and succeeds, `SetFaults`
/// always fails with INVALID_ARGUMENT.
#[derive(Default)]
pub struct EchoFaults;

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

/// A service whose `GetFaults` waits until the test opens the gate: RPCs
/// that stay in progress as long as a test needs.
#[derive(Clone, Default)]
pub struct GatedFaults {
    pub entered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub gate: std::sync::Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl pb::fault_service_server::FaultService for GatedFaults {
    async fn get_faults(
        &self,
        _request: Request<pb::GetFaultsRequest>,
    ) -> Result<Response<pb::Faults>, Status> {
        let open = self.gate.notified();
        self.entered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        open.await;
        Ok(Response::new(pb::Faults::default()))
    }

    async fn set_faults(
        &self,
        _request: Request<pb::SetFaultsRequest>,
    ) -> Result<Response<pb::Faults>, Status> {
        Ok(Response::new(pb::Faults::default()))
    }
}

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

//! `meshwatch.inventory.v1.InventoryService`: a thin adapter over [`Inventory`].

use std::time::Duration;

use meshwatch_proto::inventory::v1 as pb;
use tonic::{Request, Response, Status};

use super::store::{Inventory, InventoryError, ReservationState, ReservedItem};
use crate::edge::{db_status, money_proto, timestamp};
use crate::faults::Faults;

/// Budget assumed when a caller sends no deadline (only faults wait on it).
const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

impl From<InventoryError> for Status {
    fn from(e: InventoryError) -> Self {
        let msg = e.to_string();
        match e {
            InventoryError::Db(e) => db_status(&e),
            InventoryError::MissingOrderId
            | InventoryError::MissingReservationId
            | InventoryError::TooManyItems { .. }
            | InventoryError::TooLong { .. }
            | InventoryError::ControlCharacter { .. }
            | InventoryError::NoItems
            | InventoryError::ZeroQuantity { .. }
            | InventoryError::DuplicateSku(_) => Status::invalid_argument(msg),
            InventoryError::UnknownSku(_) | InventoryError::UnknownReservation(_) => {
                Status::not_found(msg)
            }
            InventoryError::Insufficient { .. } | InventoryError::WrongState { .. } => {
                Status::failed_precondition(msg)
            }
        }
    }
}

impl From<ReservationState> for pb::ReservationState {
    fn from(s: ReservationState) -> Self {
        match s {
            ReservationState::Held => pb::ReservationState::Held,
            ReservationState::Committed => pb::ReservationState::Committed,
            ReservationState::Released => pb::ReservationState::Released,
            ReservationState::Expired => pb::ReservationState::Expired,
        }
    }
}

impl From<&ReservedItem> for pb::ReservedItem {
    fn from(i: &ReservedItem) -> Self {
        pb::ReservedItem {
            sku: i.sku.clone(),
            quantity: i.quantity,
            unit_price: Some(money_proto(&i.unit_price)),
        }
    }
}

/// The gRPC face of an [`Inventory`].
#[derive(Debug, Clone)]
pub struct InventoryService {
    inventory: Inventory,
    faults: Faults,
    max_message_bytes: usize,
}

impl InventoryService {
    pub fn new(inventory: Inventory, faults: Faults, max_message_bytes: usize) -> Self {
        Self {
            inventory,
            faults,
            max_message_bytes,
        }
    }

    pub fn into_server(self) -> pb::inventory_service_server::InventoryServiceServer<Self> {
        let max = self.max_message_bytes;
        pb::inventory_service_server::InventoryServiceServer::new(self)
            .max_decoding_message_size(max)
    }

    async fn faults<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let deadline = crate::edge::deadline(request.metadata(), DEFAULT_BUDGET);
        Ok(self.faults.before_rpc(deadline).await?)
    }
}

#[tonic::async_trait]
impl pb::inventory_service_server::InventoryService for InventoryService {
    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        self.faults(&request).await?;
        let req = request.into_inner();
        meshwatch_runtime::telemetry::record_order_id(&req.order_id);
        let lines: Vec<(String, u32)> =
            req.items.into_iter().map(|i| (i.sku, i.quantity)).collect();
        let r = self
            .inventory
            .reserve(&req.order_id, &lines)
            .await
            .inspect_err(|e| {
                tracing::info!(order.id = %req.order_id, error.message = %e, "reservation refused");
            })?;
        tracing::info!(
            order.id = %r.order_id,
            reservation.id = %r.id,
            "reservation held"
        );
        Ok(Response::new(pb::ReserveResponse {
            reservation_id: r.id.clone(),
            items: r.items.iter().map(Into::into).collect(),
            expires_at: Some(timestamp(r.expires_at)),
            state: pb::ReservationState::from(r.state).into(),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        self.faults(&request).await?;
        let id = request.into_inner().reservation_id;
        let (state, order_id) = self.inventory.commit(&id).await?;
        meshwatch_runtime::telemetry::record_order_id(&order_id);
        tracing::info!(order.id = %order_id, reservation.id = %id, "reservation committed");
        Ok(Response::new(pb::CommitResponse {
            state: pb::ReservationState::from(state).into(),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.faults(&request).await?;
        let id = request.into_inner().reservation_id;
        let (state, order_id) = self.inventory.release(&id).await?;
        meshwatch_runtime::telemetry::record_order_id(&order_id);
        tracing::info!(order.id = %order_id, reservation.id = %id, reservation.state = ?state, "reservation released");
        Ok(Response::new(pb::ReleaseResponse {
            state: pb::ReservationState::from(state).into(),
        }))
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        self.faults(&request).await?;
        let levels = self.inventory.stock(&request.into_inner().skus).await?;
        Ok(Response::new(pb::GetStockResponse {
            items: levels
                .into_iter()
                .map(|l| pb::StockItem {
                    unit_price: Some(money_proto(&l.unit_price)),
                    sku: l.sku,
                    name: l.name,
                    available: l.available,
                    reserved: l.reserved,
                })
                .collect(),
        }))
    }
}

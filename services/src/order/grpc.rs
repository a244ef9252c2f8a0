//! `meshwatch.order.v1.OrderService`: a thin adapter over [`Orders`].

use std::time::Duration;

use meshwatch::proto::order::v1 as pb;
use tonic::{Request, Response, Status};

use super::book::{NewOrder, Order, OrderStatus};
use super::saga::{order_status, Orders};
use crate::deadline::Deadline;
use crate::faults::Faults;
use crate::timestamp;

impl From<OrderStatus> for pb::OrderStatus {
    fn from(s: OrderStatus) -> Self {
        match s {
            OrderStatus::Pending => pb::OrderStatus::Pending,
            OrderStatus::Confirmed => pb::OrderStatus::Confirmed,
            OrderStatus::PaymentDeclined => pb::OrderStatus::PaymentDeclined,
            OrderStatus::Failed => pb::OrderStatus::Failed,
        }
    }
}

impl From<&Order> for pb::Order {
    fn from(o: &Order) -> Self {
        pb::Order {
            order_id: o.order_id.clone(),
            idempotency_key: o.idempotency_key.clone(),
            customer_id: o.customer_id.clone(),
            items: o
                .items
                .iter()
                .map(|i| pb::PricedLineItem {
                    sku: i.sku.clone(),
                    quantity: i.quantity,
                    unit_price: Some((&i.unit_price).into()),
                })
                .collect(),
            total: o.total.as_ref().map(Into::into),
            status: pb::OrderStatus::from(o.status).into(),
            payment_id: o.payment_id.clone().unwrap_or_default(),
            reservation_id: o.reservation_id.clone().unwrap_or_default(),
            failure_reason: o.failure_reason.clone().unwrap_or_default(),
            created_at: Some(timestamp(o.created_at)),
            trace_id: o.trace_id.clone(),
        }
    }
}

/// The gRPC face of [`Orders`].
#[derive(Debug, Clone)]
pub struct OrderService {
    orders: Orders,
    faults: Faults,
    /// Budget of a PlaceOrder whose caller sent no deadline (and the cap).
    request_budget: Duration,
}

impl OrderService {
    pub fn new(orders: Orders, faults: Faults, request_budget: Duration) -> Self {
        Self {
            orders,
            faults,
            request_budget,
        }
    }

    pub fn into_server(self) -> pb::order_service_server::OrderServiceServer<Self> {
        pb::order_service_server::OrderServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderService {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), self.request_budget);
        self.faults.before_rpc(deadline).await?;
        let trace_id = meshwatch::telemetry::current_trace_id().unwrap_or_default();
        let r = request.into_inner();
        let new = NewOrder::validate(
            r.idempotency_key,
            r.customer_id,
            r.items.into_iter().map(|i| (i.sku, i.quantity)).collect(),
            r.currency_code,
            r.payment_token,
            self.orders.currency(),
        )
        .map_err(order_status)?;
        let order = self.orders.place(new, deadline, &trace_id).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some((&order).into()),
            trace_id,
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let deadline = Deadline::from_metadata(request.metadata(), self.request_budget);
        self.faults.before_rpc(deadline).await?;
        let order = self
            .orders
            .get(&request.into_inner().order_id)
            .map_err(order_status)?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some((&order).into()),
        }))
    }
}

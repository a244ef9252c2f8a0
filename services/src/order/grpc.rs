//! `meshwatch.order.v1.OrderService`: a thin adapter over [`Orders`].

use std::time::Duration;

use meshwatch_proto::order::v1 as pb;
use tonic::{Request, Response, Status};

use super::book::{NewOrder, Order, OrderError, OrderStatus};
use super::ports::{CallFailure, Payments, Stock};
use super::saga::Orders;
use crate::edge::{db_status, money_proto, timestamp};
use crate::faults::Faults;

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
                    unit_price: Some(money_proto(&i.unit_price)),
                })
                .collect(),
            total: o.total.as_ref().map(money_proto),
            status: pb::OrderStatus::from(o.status).into(),
            payment_id: o.payment_id.clone().unwrap_or_default(),
            reservation_id: o.reservation_id.clone().unwrap_or_default(),
            failure_reason: o.failure_reason.clone().unwrap_or_default(),
            created_at: Some(timestamp(o.created_at)),
            trace_id: o.trace_id.clone(),
        }
    }
}

/// The status a caller sees for an order error: validation is
/// INVALID_ARGUMENT, an unknown order NOT_FOUND, a reused key
/// FAILED_PRECONDITION, a downstream failure keeps its meaning.
pub fn order_status(e: OrderError) -> Status {
    let msg = e.to_string();
    match e {
        // The cause's code, the whole message.
        OrderError::Undecided(cause, _) => {
            let code = order_status(*cause).code();
            Status::new(code, msg)
        }
        OrderError::UnknownOrder(_) => Status::not_found(msg),
        OrderError::KeyReused(_) | OrderError::Pricing(_) => Status::failed_precondition(msg),
        OrderError::Interrupted(_) => Status::internal(msg),
        OrderError::LeaseLost(_) => Status::aborted(msg),
        OrderError::Overloaded(_) => Status::resource_exhausted(msg),
        OrderError::Db(e) => db_status(&e),
        OrderError::Downstream(call) => match call.failure {
            CallFailure::NotFound => Status::not_found(msg),
            CallFailure::InvalidArgument => Status::invalid_argument(msg),
            CallFailure::FailedPrecondition | CallFailure::Refunded => {
                Status::failed_precondition(msg)
            }
            CallFailure::ResourceExhausted => Status::resource_exhausted(msg),
            CallFailure::Refused => Status::failed_precondition(msg),
            CallFailure::Unavailable => Status::unavailable(msg),
            CallFailure::DeadlineExceeded => Status::deadline_exceeded(msg),
        },
        OrderError::MissingKey
        | OrderError::TooLong { .. }
        | OrderError::ControlCharacter { .. }
        | OrderError::TooManyItems { .. }
        | OrderError::MissingCustomer
        | OrderError::NoItems
        | OrderError::EmptySku { .. }
        | OrderError::ZeroQuantity { .. }
        | OrderError::DuplicateSku(_)
        | OrderError::MissingCurrency(_)
        | OrderError::Currency { .. }
        | OrderError::MissingOrderId => Status::invalid_argument(msg),
    }
}

/// The gRPC face of [`Orders`].
pub struct OrderService<S, P> {
    orders: Orders<S, P>,
    faults: Faults,
    /// Budget of a PlaceOrder whose caller sent no deadline (and the cap).
    request_budget: Duration,
    max_message_bytes: usize,
}

impl<S: Stock, P: Payments> OrderService<S, P> {
    pub fn new(
        orders: Orders<S, P>,
        faults: Faults,
        request_budget: Duration,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            orders,
            faults,
            request_budget,
            max_message_bytes,
        }
    }

    pub fn into_server(self) -> pb::order_service_server::OrderServiceServer<Self> {
        let max = self.max_message_bytes;
        pb::order_service_server::OrderServiceServer::new(self).max_decoding_message_size(max)
    }
}

#[tonic::async_trait]
impl<S: Stock, P: Payments> pb::order_service_server::OrderService for OrderService<S, P> {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let deadline = crate::edge::deadline(request.metadata(), self.request_budget);
        self.faults.before_rpc(deadline).await?;
        let trace_id = meshwatch_runtime::telemetry::current_trace_id().unwrap_or_default();
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
        let order = self
            .orders
            .place(new, deadline, &trace_id)
            .await
            .map_err(order_status)?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some((&order).into()),
            trace_id,
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let deadline = crate::edge::deadline(request.metadata(), self.request_budget);
        self.faults.before_rpc(deadline).await?;
        let order = self
            .orders
            .get(&request.into_inner().order_id)
            .await
            .map_err(order_status)?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some((&order).into()),
        }))
    }
}

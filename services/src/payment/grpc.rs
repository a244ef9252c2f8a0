//! `meshwatch.payment.v1.PaymentService`: a thin adapter over [`Ledger`].

use std::time::Duration;

use meshwatch_proto::payment::v1 as pb;
use tonic::{Request, Response, Status};

use super::ledger::{ChargeRequest, Ledger, Payment, PaymentError, PaymentStatus};
use crate::edge::{db_status, money_proto, timestamp};
use crate::faults::Faults;

const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

impl From<PaymentError> for Status {
    fn from(e: PaymentError) -> Self {
        let msg = e.to_string();
        match e {
            PaymentError::Db(e) => db_status(&e),
            PaymentError::MissingOrderId
            | PaymentError::TooLong { .. }
            | PaymentError::ControlCharacter { .. }
            | PaymentError::MissingCustomer
            | PaymentError::Amount(_)
            | PaymentError::NotPositive(_) => Status::invalid_argument(msg),
            PaymentError::UnknownOrder(_) => Status::not_found(msg),
            PaymentError::AmountMismatch { .. } | PaymentError::NothingToRefund(_) => {
                Status::failed_precondition(msg)
            }
            PaymentError::Refunded { .. } => {
                let mut s = Status::failed_precondition(msg);
                s.metadata_mut().insert(
                    crate::edge::REFUNDED_METADATA,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                s
            }
        }
    }
}

impl From<PaymentStatus> for pb::PaymentStatus {
    fn from(s: PaymentStatus) -> Self {
        match s {
            PaymentStatus::Charged => pb::PaymentStatus::Charged,
            PaymentStatus::Declined => pb::PaymentStatus::Declined,
            PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        }
    }
}

impl From<&Payment> for pb::Payment {
    fn from(p: &Payment) -> Self {
        pb::Payment {
            payment_id: p.payment_id.clone(),
            order_id: p.order_id.clone(),
            amount: Some(money_proto(&p.amount)),
            status: pb::PaymentStatus::from(p.status).into(),
            charge_count: p.charge_count,
            decline_reason: p.decline_reason.clone().unwrap_or_default(),
            refund_reason: p.refund_reason.clone().unwrap_or_default(),
            created_at: Some(timestamp(p.created_at)),
        }
    }
}

/// The gRPC face of a [`Ledger`].
#[derive(Debug, Clone)]
pub struct PaymentService {
    ledger: Ledger,
    faults: Faults,
    max_message_bytes: usize,
}

impl PaymentService {
    pub fn new(ledger: Ledger, faults: Faults, max_message_bytes: usize) -> Self {
        Self {
            ledger,
            faults,
            max_message_bytes,
        }
    }

    pub fn into_server(self) -> pb::payment_service_server::PaymentServiceServer<Self> {
        let max = self.max_message_bytes;
        pb::payment_service_server::PaymentServiceServer::new(self).max_decoding_message_size(max)
    }

    async fn faults<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let deadline = crate::edge::deadline(request.metadata(), DEFAULT_BUDGET);
        Ok(self.faults.before_rpc(deadline).await?)
    }
}

#[tonic::async_trait]
impl pb::payment_service_server::PaymentService for PaymentService {
    async fn charge(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        self.faults(&request).await?;
        let req = request.into_inner();
        meshwatch_runtime::telemetry::record_order_id(&req.order_id);
        let amount = crate::edge::money(req.amount)
            .map_err(|e| Status::from(PaymentError::Amount(e.to_string())))?;
        let (p, decided) = self
            .ledger
            .charge(
                ChargeRequest {
                    order_id: req.order_id,
                    customer_id: req.customer_id,
                    amount,
                    token: req.payment_token,
                },
                self.faults.roll_decline(),
            )
            .await?;
        let approved = p.decline_reason.is_none();
        if decided {
            if approved {
                tracing::info!(
                    order.id = %p.order_id,
                    payment.id = %p.payment_id,
                    payment.amount_minor = p.amount.minor(),
                    payment.currency = %p.amount.currency(),
                    "charge approved"
                );
            } else {
                tracing::info!(
                    order.id = %p.order_id,
                    payment.id = %p.payment_id,
                    event.reason = p.decline_reason.as_deref().unwrap_or_default(),
                    "charge declined"
                );
            }
        } else {
            tracing::info!(order.id = %p.order_id, payment.id = %p.payment_id, "charge replayed: order already decided");
        }
        Ok(Response::new(pb::ChargeResponse {
            payment_id: p.payment_id.clone(),
            outcome: if approved {
                pb::ChargeOutcome::Approved
            } else {
                pb::ChargeOutcome::Declined
            }
            .into(),
            decline_reason: p.decline_reason.unwrap_or_default(),
        }))
    }

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        self.faults(&request).await?;
        let req = request.into_inner();
        meshwatch_runtime::telemetry::record_order_id(&req.order_id);
        let p = self.ledger.refund(&req.order_id, &req.reason).await?;
        tracing::warn!(order.id = %p.order_id, payment.id = %p.payment_id, event.reason = %req.reason, "charge refunded");
        Ok(Response::new(pb::RefundResponse {
            payment_id: p.payment_id.clone(),
            status: pb::PaymentStatus::from(p.status).into(),
            amount: Some(money_proto(&p.amount)),
        }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        self.faults(&request).await?;
        let p = self.ledger.get(&request.into_inner().order_id).await?;
        Ok(Response::new((&p).into()))
    }
}

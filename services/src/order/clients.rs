//! Order's gRPC clients for inventory and payment, the adapters behind the
//! saga's ports: lazy channels that reconnect by themselves, trace
//! propagation, a client-side timeout on every call (the caller's remaining
//! budget, capped), and errors that name the service that failed.

use std::future::Future;
use std::time::Duration;

use meshwatch_proto::inventory::v1 as inv;
use meshwatch_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use meshwatch_proto::payment::v1 as pay;
use meshwatch_proto::payment::v1::payment_service_client::PaymentServiceClient;
use meshwatch_runtime::telemetry::{traced_channel, TracedChannel};
use meshwatch_tls::Tls;
use tonic::{Code, Request, Status};

use super::ports::{
    CallError, CallFailure, ChargeDecision, Payments, Reservation, ReservedLine, Stock,
};
use crate::deadline::Deadline;
use crate::edge::money_proto;
use crate::money::Money;

/// Bound on establishing a TCP connection to a downstream service.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a downstream address was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Address(#[from] meshwatch_entry::ConfigError),
}

/// A downstream service: its client, name and address.
#[derive(Debug, Clone)]
struct Downstream<C> {
    client: C,
    name: &'static str,
    addr: String,
    /// Upper bound on one call.
    call_timeout: Duration,
}

fn channel(
    flag: &'static str,
    addr: &str,
    tls: Option<&Tls>,
) -> Result<TracedChannel, ClientError> {
    let endpoint = meshwatch_tls::endpoint(flag, addr, tls)?;
    Ok(traced_channel(
        endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy(),
    ))
}

/// Inventory over gRPC: the saga's [`Stock`].
#[derive(Debug, Clone)]
pub struct GrpcStock(Downstream<InventoryServiceClient<TracedChannel>>);

impl GrpcStock {
    /// A client for `addr` (a URL; `https://` over `tls`); connects on first
    /// use, so an inventory that is not up yet is fine.
    pub fn new(addr: &str, call_timeout: Duration, tls: Option<&Tls>) -> Result<Self, ClientError> {
        Ok(Self(Downstream {
            client: InventoryServiceClient::new(channel("inventory-addr", addr, tls)?),
            name: "inventory",
            addr: addr.to_owned(),
            call_timeout,
        }))
    }
}

impl Stock for GrpcStock {
    async fn reserve(
        &self,
        deadline: Deadline,
        order_id: &str,
        items: &[(String, u32)],
    ) -> Result<Reservation, CallError> {
        let req = inv::ReserveRequest {
            order_id: order_id.to_owned(),
            items: items
                .iter()
                .map(|(sku, quantity)| inv::ItemRequest {
                    sku: sku.clone(),
                    quantity: *quantity,
                })
                .collect(),
        };
        let mut c = self.0.client.clone();
        let r = call(&self.0, deadline, "Reserve", req, |r| async move {
            c.reserve(r).await
        })
        .await?;
        Ok(Reservation {
            reservation_id: r.reservation_id,
            lines: r
                .items
                .into_iter()
                .map(|i| {
                    let (currency_code, unit_price_minor) = i
                        .unit_price
                        .map(|m| (m.currency_code, m.amount_minor))
                        .unwrap_or_default();
                    ReservedLine {
                        sku: i.sku,
                        quantity: i.quantity,
                        currency_code,
                        unit_price_minor,
                    }
                })
                .collect(),
        })
    }

    async fn commit(&self, deadline: Deadline, reservation_id: &str) -> Result<(), CallError> {
        let req = inv::CommitRequest {
            reservation_id: reservation_id.to_owned(),
        };
        let mut c = self.0.client.clone();
        call(&self.0, deadline, "Commit", req, |r| async move {
            c.commit(r).await
        })
        .await
        .map(drop)
    }

    async fn release(&self, deadline: Deadline, reservation_id: &str) -> Result<(), CallError> {
        let req = inv::ReleaseRequest {
            reservation_id: reservation_id.to_owned(),
        };
        let mut c = self.0.client.clone();
        call(&self.0, deadline, "Release", req, |r| async move {
            c.release(r).await
        })
        .await
        .map(drop)
    }
}

/// Payment over gRPC: the saga's [`Payments`].
#[derive(Debug, Clone)]
pub struct GrpcPayments(Downstream<PaymentServiceClient<TracedChannel>>);

impl GrpcPayments {
    /// A client for `addr` (a URL; `https://` over `tls`); connects on first use.
    pub fn new(addr: &str, call_timeout: Duration, tls: Option<&Tls>) -> Result<Self, ClientError> {
        Ok(Self(Downstream {
            client: PaymentServiceClient::new(channel("payment-addr", addr, tls)?),
            name: "payment",
            addr: addr.to_owned(),
            call_timeout,
        }))
    }
}

impl Payments for GrpcPayments {
    async fn charge(
        &self,
        deadline: Deadline,
        order_id: &str,
        customer_id: &str,
        amount: &Money,
        payment_token: &str,
    ) -> Result<ChargeDecision, CallError> {
        let req = pay::ChargeRequest {
            order_id: order_id.to_owned(),
            customer_id: customer_id.to_owned(),
            amount: Some(money_proto(amount)),
            payment_token: payment_token.to_owned(),
        };
        let mut c = self.0.client.clone();
        let r = call(&self.0, deadline, "Charge", req, |r| async move {
            c.charge(r).await
        })
        .await?;
        Ok(if r.outcome() == pay::ChargeOutcome::Approved {
            ChargeDecision::Approved {
                payment_id: r.payment_id,
            }
        } else {
            ChargeDecision::Declined {
                payment_id: r.payment_id,
                reason: r.decline_reason,
            }
        })
    }

    async fn refund(
        &self,
        deadline: Deadline,
        order_id: &str,
        reason: &str,
    ) -> Result<(), CallError> {
        let req = pay::RefundRequest {
            order_id: order_id.to_owned(),
            reason: reason.to_owned(),
        };
        let mut c = self.0.client.clone();
        call(&self.0, deadline, "Refund", req, |r| async move {
            c.refund(r).await
        })
        .await
        .map(drop)
    }
}

/// One downstream call within `min(deadline, call_timeout)`, enforced on
/// this side too so a peer that never answers cannot hang the saga.
async fn call<C, Req, Resp, F, Fut>(
    downstream: &Downstream<C>,
    deadline: Deadline,
    method: &str,
    req: Req,
    f: F,
) -> Result<Resp, CallError>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let budget = deadline.remaining().min(downstream.call_timeout);
    if budget.is_zero() {
        return Err(CallError::new(
            CallFailure::DeadlineExceeded,
            format!(
                "request deadline passed before calling {}.{method}",
                downstream.name
            ),
        ));
    }
    let mut request = Request::new(req);
    request.set_timeout(budget);
    match tokio::time::timeout(budget, f(request)).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(name_failure(
            downstream.name,
            &downstream.addr,
            method,
            budget,
            &status,
        )),
        Err(_) => Err(CallError::new(
            CallFailure::DeadlineExceeded,
            format!(
                "{} did not answer {method} within {budget:?} ({})",
                downstream.name, downstream.addr
            ),
        )),
    }
}

/// Maps a downstream status to the failure order answers with, naming the
/// service: transport trouble is UNAVAILABLE, a timeout DEADLINE_EXCEEDED,
/// a refusal keeps its meaning.
pub fn name_failure(
    name: &str,
    addr: &str,
    method: &str,
    budget: Duration,
    s: &Status,
) -> CallError {
    let refused = |failure| CallError::new(failure, format!("{name}: {}", s.message()));
    match s.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::Internal
        | Code::Unimplemented
        | Code::DataLoss => CallError::new(
            CallFailure::Unavailable,
            format!(
                "{name} unavailable ({addr}) during {method}: {}",
                s.message()
            ),
        ),
        Code::DeadlineExceeded | Code::Cancelled => CallError::new(
            CallFailure::DeadlineExceeded,
            format!(
                "{name} did not answer {method} within {budget:?} ({addr}): {}",
                s.message()
            ),
        ),
        Code::NotFound => refused(CallFailure::NotFound),
        Code::InvalidArgument | Code::OutOfRange => refused(CallFailure::InvalidArgument),
        Code::FailedPrecondition if s.metadata().contains_key(crate::edge::REFUNDED_METADATA) => {
            refused(CallFailure::Refunded)
        }
        Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => {
            refused(CallFailure::FailedPrecondition)
        }
        Code::ResourceExhausted => refused(CallFailure::ResourceExhausted),
        Code::Ok | Code::PermissionDenied | Code::Unauthenticated => refused(CallFailure::Refused),
    }
}

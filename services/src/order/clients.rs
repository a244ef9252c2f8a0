//! Order's gRPC clients for inventory and payment: lazy channels that
//! reconnect by themselves, trace propagation, a client-side timeout on every
//! call (the caller's remaining budget, capped), and errors that name the
//! service that failed.

use std::future::Future;
use std::time::Duration;

use meshwatch::proto::inventory::v1 as inv;
use meshwatch::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use meshwatch::proto::payment::v1 as pay;
use meshwatch::proto::payment::v1::payment_service_client::PaymentServiceClient;
use meshwatch::telemetry::{traced_channel, TracedChannel};
use tonic::transport::Endpoint;
use tonic::{Code, Request, Status};

use crate::deadline::Deadline;

/// Bound on establishing a TCP connection to a downstream service.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a downstream address was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--{flag}: {addr:?} is not a valid URL (e.g. http://127.0.0.1:50052): {source}")]
    Address {
        flag: &'static str,
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A downstream service: its client, name and address.
#[derive(Debug, Clone)]
struct Downstream<C> {
    client: C,
    name: &'static str,
    addr: String,
}

/// The clients a saga needs.
#[derive(Debug, Clone)]
pub struct Clients {
    inventory: Downstream<InventoryServiceClient<TracedChannel>>,
    payment: Downstream<PaymentServiceClient<TracedChannel>>,
    /// Upper bound on one downstream call.
    call_timeout: Duration,
}

fn channel(flag: &'static str, addr: &str) -> Result<TracedChannel, ClientError> {
    let endpoint =
        Endpoint::from_shared(addr.to_owned()).map_err(|source| ClientError::Address {
            flag,
            addr: addr.to_owned(),
            source,
        })?;
    Ok(traced_channel(
        endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy(),
    ))
}

impl Clients {
    /// Clients for `inventory_addr` and `payment_addr` (URLs). Connections
    /// are made on first use, so a downstream that is not up yet is fine.
    pub fn new(
        inventory_addr: &str,
        payment_addr: &str,
        call_timeout: Duration,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            inventory: Downstream {
                client: InventoryServiceClient::new(channel("inventory-addr", inventory_addr)?),
                name: "inventory",
                addr: inventory_addr.to_owned(),
            },
            payment: Downstream {
                client: PaymentServiceClient::new(channel("payment-addr", payment_addr)?),
                name: "payment",
                addr: payment_addr.to_owned(),
            },
            call_timeout,
        })
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    pub async fn reserve(
        &self,
        deadline: Deadline,
        req: inv::ReserveRequest,
    ) -> Result<inv::ReserveResponse, Status> {
        let mut c = self.inventory.client.clone();
        call(
            &self.inventory,
            self.call_timeout,
            deadline,
            "Reserve",
            req,
            |r| async move { c.reserve(r).await },
        )
        .await
    }

    pub async fn commit(
        &self,
        deadline: Deadline,
        req: inv::CommitRequest,
    ) -> Result<inv::CommitResponse, Status> {
        let mut c = self.inventory.client.clone();
        call(
            &self.inventory,
            self.call_timeout,
            deadline,
            "Commit",
            req,
            |r| async move { c.commit(r).await },
        )
        .await
    }

    pub async fn release(
        &self,
        deadline: Deadline,
        req: inv::ReleaseRequest,
    ) -> Result<inv::ReleaseResponse, Status> {
        let mut c = self.inventory.client.clone();
        call(
            &self.inventory,
            self.call_timeout,
            deadline,
            "Release",
            req,
            |r| async move { c.release(r).await },
        )
        .await
    }

    pub async fn charge(
        &self,
        deadline: Deadline,
        req: pay::ChargeRequest,
    ) -> Result<pay::ChargeResponse, Status> {
        let mut c = self.payment.client.clone();
        call(
            &self.payment,
            self.call_timeout,
            deadline,
            "Charge",
            req,
            |r| async move { c.charge(r).await },
        )
        .await
    }

    pub async fn refund(
        &self,
        deadline: Deadline,
        req: pay::RefundRequest,
    ) -> Result<pay::RefundResponse, Status> {
        let mut c = self.payment.client.clone();
        call(
            &self.payment,
            self.call_timeout,
            deadline,
            "Refund",
            req,
            |r| async move { c.refund(r).await },
        )
        .await
    }
}

/// One downstream call within `min(deadline, cap)`, enforced on this side
/// too so a peer that never answers cannot hang the saga.
async fn call<C, Req, Resp, F, Fut>(
    downstream: &Downstream<C>,
    cap: Duration,
    deadline: Deadline,
    method: &str,
    req: Req,
    f: F,
) -> Result<Resp, Status>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let budget = deadline.remaining().min(cap);
    if budget.is_zero() {
        return Err(Status::deadline_exceeded(format!(
            "request deadline passed before calling {}.{method}",
            downstream.name
        )));
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
            status,
        )),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{} did not answer {method} within {budget:?} ({})",
            downstream.name, downstream.addr
        ))),
    }
}

/// Maps a downstream status to the one order answers with, naming the
/// service: transport trouble is UNAVAILABLE, a timeout DEADLINE_EXCEEDED,
/// a refusal keeps its code.
pub fn name_failure(name: &str, addr: &str, method: &str, budget: Duration, s: Status) -> Status {
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Unimplemented => {
            Status::unavailable(format!(
                "{name} unavailable ({addr}) during {method}: {}",
                s.message()
            ))
        }
        Code::DeadlineExceeded | Code::Cancelled => Status::deadline_exceeded(format!(
            "{name} did not answer {method} within {budget:?} ({addr}): {}",
            s.message()
        )),
        code => Status::new(code, format!("{name}: {}", s.message())),
    }
}

/// True when the step may or may not have happened at the peer.
pub fn is_ambiguous(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
}

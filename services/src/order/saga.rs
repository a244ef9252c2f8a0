//! The PlaceOrder saga: reserve → charge → commit, with compensation. A
//! declined charge releases the reservation (status PAYMENT_DECLINED); a
//! failure after the charge refunds it, then releases (status FAILED). Each
//! run is a spawned task, so a caller that hangs up cannot leave a saga half
//! done.

use std::sync::Arc;
use std::time::Duration;

use meshwatch::proto::inventory::v1 as inv;
use meshwatch::proto::payment::v1 as pay;
use tonic::{Code, Status};
use tracing::Instrument;

use super::book::{
    Claim, NewOrder, Order, OrderBook, OrderError, OrderStatus, Outcome, PricedItem,
};
use super::clients::{is_ambiguous, Clients};
use crate::deadline::Deadline;
use crate::money::Money;

/// Order's domain: the book and the downstream clients.
#[derive(Debug, Clone)]
pub struct Orders {
    book: Arc<OrderBook>,
    clients: Clients,
    /// The catalog currency orders must be placed in.
    currency: String,
}

impl Orders {
    pub fn new(clients: Clients, currency: &str) -> Self {
        Self {
            book: Arc::new(OrderBook::new()),
            clients,
            currency: currency.to_owned(),
        }
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn get(&self, order_id: &str) -> Result<Order, OrderError> {
        self.book.get(order_id)
    }

    /// Places `request` idempotently, answering within `deadline`.
    pub async fn place(&self, request: NewOrder, deadline: Deadline, trace_id: &str) -> Outcome {
        let key = request.idempotency_key.clone();
        match self
            .book
            .claim(request.clone(), trace_id)
            .map_err(order_status)?
        {
            Claim::Done(order) => {
                tracing::info!(order.id = %order.order_id, "idempotent replay: returning the decided order");
                Ok(order)
            }
            Claim::Wait(mut rx, pending) => {
                tracing::info!(order.id = %pending.order_id, "same key in flight: waiting for its outcome");
                let waited = tokio::time::timeout_at(deadline.instant(), async {
                    loop {
                        if let Some(outcome) = rx.borrow_and_update().clone() {
                            return Some(outcome);
                        }
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                })
                .await;
                match waited {
                    Ok(Some(outcome)) => outcome,
                    // Still running when our budget ran out: say so.
                    _ => Ok(self.book.get(&pending.order_id).unwrap_or(pending)),
                }
            }
            Claim::Run(order) => {
                let this = self.clone();
                let pending = order.clone();
                // Made before the task so that it is dropped with the task
                // even if the task is never polled.
                let mut finish = FinishOnDrop {
                    book: Arc::clone(&self.book),
                    key,
                    order_id: order.order_id.clone(),
                };
                let mut run = tokio::spawn(
                    async move {
                        let outcome = this.run(order, &request, deadline).await;
                        finish.finish(outcome.clone());
                        outcome
                    }
                    .in_current_span(),
                );
                // Compensation runs on its own budget and may outlast ours:
                // answer by the deadline and let the task finish the saga.
                match tokio::time::timeout_at(deadline.instant(), &mut run).await {
                    Ok(joined) => joined.unwrap_or_else(|e| {
                        Err(Status::internal(format!("order saga task failed: {e}")))
                    }),
                    Err(_) => {
                        tracing::warn!(order.id = %pending.order_id, "request budget spent with the saga still running; answering with the order as it stands");
                        Ok(self.book.get(&pending.order_id).unwrap_or(pending))
                    }
                }
            }
        }
    }

    async fn run(&self, mut order: Order, req: &NewOrder, deadline: Deadline) -> Outcome {
        let id = order.order_id.clone();
        meshwatch::telemetry::record_order_id(&id);
        tracing::info!(order.id = %id, customer.id = %req.customer_id, "placing order");

        // 1. Reserve.
        let reserved = self
            .clients
            .reserve(
                deadline,
                inv::ReserveRequest {
                    order_id: id.clone(),
                    items: req
                        .items
                        .iter()
                        .map(|(sku, quantity)| inv::ItemRequest {
                            sku: sku.clone(),
                            quantity: *quantity,
                        })
                        .collect(),
                },
            )
            .await
            .inspect_err(|s| tracing::warn!(order.id = %id, error.message = %s.message(), "reservation failed"))?;
        order.reservation_id = Some(reserved.reservation_id.clone());
        let priced = price(&reserved, &self.currency);
        let (items, total) = match priced {
            Ok(p) => p,
            Err(reason) => {
                self.release(&id, &reserved.reservation_id).await;
                return Err(Status::failed_precondition(reason));
            }
        };
        order.items = items;
        order.total = Some(total.clone());
        self.book.update(&order);

        // 2. Charge.
        let charged = self
            .clients
            .charge(
                deadline,
                pay::ChargeRequest {
                    order_id: id.clone(),
                    customer_id: req.customer_id.clone(),
                    amount: Some((&total).into()),
                    payment_token: req.payment_token.clone(),
                },
            )
            .await;
        let charge = match charged {
            Ok(c) => c,
            Err(status) => {
                tracing::warn!(order.id = %id, error.message = %status.message(), "charge failed; compensating");
                let mut status = status;
                if is_ambiguous(&status) {
                    // The charge may have gone through before the failure.
                    let refunded = self
                        .refund(
                            &id,
                            &format!("charge outcome unknown: {}", status.message()),
                        )
                        .await;
                    if !refunded {
                        // Say so: a charge may stand for an order that failed.
                        status = Status::new(
                            status.code(),
                            format!(
                                "{}; the charge may have gone through and could not be refunded: retry with the same idempotency_key to finish order {id}",
                                status.message()
                            ),
                        );
                    }
                }
                self.release(&id, &reserved.reservation_id).await;
                return Err(status);
            }
        };
        if charge.outcome() != pay::ChargeOutcome::Approved {
            self.release(&id, &reserved.reservation_id).await;
            order.status = OrderStatus::PaymentDeclined;
            order.payment_id = non_empty(charge.payment_id);
            order.failure_reason = Some(if charge.decline_reason.is_empty() {
                "payment declined".to_owned()
            } else {
                charge.decline_reason
            });
            tracing::info!(
                order.id = %id,
                order.status = "PAYMENT_DECLINED",
                event.reason = order.failure_reason.as_deref().unwrap_or_default(),
                "order declined by payment; reservation released"
            );
            return Ok(order);
        }
        order.payment_id = non_empty(charge.payment_id);
        self.book.update(&order);

        // 3. Commit. From here on the money is taken: a failure refunds.
        let commit = inv::CommitRequest {
            reservation_id: reserved.reservation_id.clone(),
        };
        let mut committed = self.clients.commit(deadline, commit.clone()).await;
        if let Err(status) = &committed {
            if is_ambiguous(status) {
                // The commit may have landed with its answer lost; refunding
                // then would give the money back for units already taken
                // from stock (a committed reservation cannot be released).
                // Commit is idempotent: ask once more, on our own budget.
                tracing::warn!(order.id = %id, error.message = %status.message(), "commit outcome unknown; asking again");
                committed = self
                    .clients
                    .commit(self.compensation_deadline(), commit)
                    .await;
            }
        }
        if let Err(status) = committed {
            let reason = format!("inventory commit failed: {}", status.message());
            tracing::warn!(order.id = %id, error.message = %reason, "compensating: refund, then release");
            let refunded = self.refund(&id, &reason).await;
            self.release(&id, &reserved.reservation_id).await;
            order.status = OrderStatus::Failed;
            order.failure_reason = Some(if refunded {
                format!("{reason}; payment refunded")
            } else {
                format!(
                    "{reason}; REFUND FAILED, payment {} needs attention",
                    order.payment_id.as_deref().unwrap_or("?")
                )
            });
            return Ok(order);
        }
        order.status = OrderStatus::Confirmed;
        tracing::info!(
            order.id = %id,
            order.status = "CONFIRMED",
            order.total_minor = total.minor(),
            order.currency = %total.currency(),
            "order confirmed"
        );
        Ok(order)
    }

    /// Compensation budget: independent of the caller, who may be gone.
    fn compensation_deadline(&self) -> Deadline {
        Deadline::after(self.clients.call_timeout())
    }

    async fn release(&self, order_id: &str, reservation_id: &str) {
        let r = self
            .clients
            .release(
                self.compensation_deadline(),
                inv::ReleaseRequest {
                    reservation_id: reservation_id.to_owned(),
                },
            )
            .await;
        match r {
            Ok(_) => {
                tracing::info!(order.id = %order_id, reservation.id = %reservation_id, "reservation released")
            }
            Err(s) => tracing::error!(
                order.id = %order_id,
                reservation.id = %reservation_id,
                error.message = %s.message(),
                "release failed; the reservation expires at its TTL"
            ),
        }
    }

    /// True when no charge is left standing.
    async fn refund(&self, order_id: &str, reason: &str) -> bool {
        let r = self
            .clients
            .refund(
                self.compensation_deadline(),
                pay::RefundRequest {
                    order_id: order_id.to_owned(),
                    reason: reason.to_owned(),
                },
            )
            .await;
        match r {
            Ok(_) => {
                tracing::warn!(order.id = %order_id, "payment refunded");
                true
            }
            // Never charged, or declined: nothing to give back.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => true,
            Err(s) => {
                tracing::error!(order.id = %order_id, error.message = %s.message(), "refund failed");
                false
            }
        }
    }
}

/// Ends a run's claim on its key even when the saga task dies (a panic,
/// the runtime shutting down), so the order is not left PENDING with every
/// retry waiting on it.
struct FinishOnDrop {
    book: Arc<OrderBook>,
    key: String,
    order_id: String,
}

impl FinishOnDrop {
    fn finish(&mut self, outcome: Outcome) {
        self.book
            .finish(&std::mem::take(&mut self.key), &self.order_id, outcome);
    }
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if !self.key.is_empty() {
            self.finish(Err(Status::internal(format!(
                "order {} stopped before it was decided; retry with the same idempotency_key",
                self.order_id
            ))));
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Items with prices and the total, all in `currency`.
fn price(r: &inv::ReserveResponse, currency: &str) -> Result<(Vec<PricedItem>, Money), String> {
    let mut total = Money::zero(currency).map_err(|e| e.to_string())?;
    let mut items = Vec::with_capacity(r.items.len());
    for i in &r.items {
        let unit = Money::try_from(i.unit_price.clone())
            .map_err(|e| format!("inventory priced {} badly: {e}", i.sku))?;
        if unit.currency() != currency {
            return Err(format!(
                "inventory prices {} in {}, but orders are taken in {currency}",
                i.sku,
                unit.currency()
            ));
        }
        total = total
            .plus(&unit.times(i.quantity).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        items.push(PricedItem {
            sku: i.sku.clone(),
            quantity: i.quantity,
            unit_price: unit,
        });
    }
    Ok((items, total))
}

/// Maps an [`OrderError`] to the status a caller sees.
pub fn order_status(e: OrderError) -> Status {
    let msg = e.to_string();
    match e {
        OrderError::UnknownOrder(_) => Status::not_found(msg),
        OrderError::KeyReused(_) => Status::failed_precondition(msg),
        _ => Status::invalid_argument(msg),
    }
}

/// Default bound on one downstream call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Default budget of a PlaceOrder whose caller set no deadline.
pub const DEFAULT_REQUEST_BUDGET: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saga_that_dies_with_its_runtime_leaves_the_key_retryable() {
        // Accepts connections, never answers: the saga cannot finish.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", silent.local_addr().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let orders = rt.block_on(async {
            Orders::new(
                Clients::new(&addr, &addr, Duration::from_secs(30)).unwrap(),
                "USD",
            )
        });
        let request = NewOrder::validate(
            "k".into(),
            "c".into(),
            vec![("sku-mug".into(), 1)],
            "USD".into(),
            String::new(),
            "USD",
        )
        .unwrap();
        let o = orders.clone();
        let r = request.clone();
        rt.block_on(async move {
            // One poll of PlaceOrder (claim, spawn), then the caller leaves.
            tokio::select! {
                biased;
                _ = o.place(r, Deadline::after(Duration::from_secs(30)), "t1") => {
                    panic!("the saga cannot have finished")
                }
                () = std::future::ready(()) => {}
            }
        });
        drop(rt);
        match orders.book.claim(request, "t2").unwrap() {
            Claim::Run(order) => assert_eq!(order.status, OrderStatus::Pending),
            other => panic!("the key is still claimed by a dead saga: {other:?}"),
        }
    }
}

//! The PlaceOrder saga: reserve → charge → commit, with compensation. A
//! declined charge releases the reservation (status PAYMENT_DECLINED); a
//! failure after the charge refunds it, then releases (status FAILED). Each
//! run is a spawned task, so a caller that hangs up cannot leave a saga half
//! done; a run cut by a crash (or by its database going away) leaves the
//! order PENDING with a lease, and once the lease has run out the recovery
//! pass ([`Orders::recover_one`]) finishes it: an order whose charge was
//! approved and recorded is committed (completing what was paid for), any
//! other is compensated (refund by order id, release).
//!
//! A refund by order id bars the order id from being charged ever after
//! (payment leaves a tombstone when nothing was charged yet, so a charge
//! still on its way takes no money). An order that was refunded therefore
//! ends FAILED and not retryable: its caller places it again under a new
//! idempotency key. When the saga cannot tell what happened (a commit whose
//! outcome stays unknown, a refund that does not answer, the order's row
//! that cannot be written) it does not guess: it leaves the order PENDING
//! for the recovery pass, which asks again until it knows.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::book::{
    Claim, NewOrder, Order, OrderBook, OrderError, OrderStatus, Outcome, PricedItem,
};
use super::ports::{CallError, CallFailure, ChargeDecision, Payments, Reservation, Stock};
use crate::deadline::Deadline;
use crate::money::Money;

/// Order's domain: the book and the two ports the saga drives.
pub struct Orders<S, P> {
    book: Arc<OrderBook>,
    stock: Arc<S>,
    payments: Arc<P>,
    /// Budget of each compensation step, independent of the caller.
    compensation_budget: Duration,
    /// The catalog currency orders must be placed in.
    currency: String,
}

impl<S, P> Clone for Orders<S, P> {
    fn clone(&self) -> Self {
        Self {
            book: Arc::clone(&self.book),
            stock: Arc::clone(&self.stock),
            payments: Arc::clone(&self.payments),
            compensation_budget: self.compensation_budget,
            currency: self.currency.clone(),
        }
    }
}

impl<S, P> std::fmt::Debug for Orders<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orders")
            .field("currency", &self.currency)
            .finish_non_exhaustive()
    }
}

/// How long the recovery pass waits before trying again an order it could
/// not decide (a downstream service did not answer).
pub const RECOVERY_RETRY: Duration = Duration::from_secs(5);
/// How often a replica looks for abandoned orders.
pub const RECOVERY_EVERY: Duration = Duration::from_secs(1);
/// How often a retry reads an order another replica is running.
const WAIT_ELSEWHERE_POLL: Duration = Duration::from_millis(25);

impl<S: Stock, P: Payments> Orders<S, P> {
    /// Orders in `book` over `stock` and `payments`; each compensation step
    /// (release, refund, a second commit) gets `compensation_budget`.
    pub fn new(
        book: OrderBook,
        stock: S,
        payments: P,
        compensation_budget: Duration,
        currency: &str,
    ) -> Self {
        Self {
            book: Arc::new(book),
            stock: Arc::new(stock),
            payments: Arc::new(payments),
            compensation_budget,
            currency: currency.to_owned(),
        }
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub async fn get(&self, order_id: &str) -> Result<Order, OrderError> {
        self.book.get(order_id).await
    }

    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    /// Places `request` idempotently, answering within `deadline`.
    pub async fn place(&self, request: NewOrder, deadline: Deadline, trace_id: &str) -> Outcome {
        let key = request.idempotency_key.clone();
        match self.book.claim(&request, trace_id).await? {
            Claim::WaitElsewhere(pending) => {
                tracing::info!(order.id = %pending.order_id, "same key in flight on another replica: waiting for its outcome");
                let mut latest = pending;
                loop {
                    if deadline.remaining() <= WAIT_ELSEWHERE_POLL {
                        return Ok(latest);
                    }
                    tokio::time::sleep(WAIT_ELSEWHERE_POLL).await;
                    latest = self.book.get(&latest.order_id).await?;
                    if latest.status != OrderStatus::Pending {
                        return Ok(latest);
                    }
                }
            }
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
                    _ => Ok(self.book.get(&pending.order_id).await.unwrap_or(pending)),
                }
            }
            Claim::Run(order) => {
                let this = self.clone();
                let pending = order.clone();
                // Made before the task so that it is dropped with the task
                // even if the task is never polled.
                let mut finish = FinishOnDrop {
                    book: Arc::clone(&self.book),
                    key: key.clone(),
                    order_id: order.order_id.clone(),
                };
                let mut run = tokio::spawn(
                    async move {
                        let mut order = order;
                        let outcome = this.run(&mut order, &request, deadline).await;
                        if let Err(OrderError::Undecided(..)) = &outcome {
                            this.book
                                .leave_to_recovery(&key, &order, RECOVERY_RETRY, outcome.clone())
                                .await;
                        } else {
                            this.book.finish(&key, &order, outcome.clone()).await;
                        }
                        finish.disarm();
                        outcome
                    }
                    .in_current_span(),
                );
                // Compensation runs on its own budget and may outlast ours:
                // answer by the deadline and let the task finish the saga.
                match tokio::time::timeout_at(deadline.instant(), &mut run).await {
                    Ok(joined) => joined.unwrap_or_else(|e| {
                        Err(OrderError::Interrupted(format!(
                            "order saga task failed: {e}"
                        )))
                    }),
                    Err(_) => {
                        tracing::warn!(order.id = %pending.order_id, "request budget spent with the saga still running; answering with the order as it stands");
                        Ok(self.book.get(&pending.order_id).await.unwrap_or(pending))
                    }
                }
            }
        }
    }

    async fn run(&self, order: &mut Order, req: &NewOrder, deadline: Deadline) -> Outcome {
        let id = order.order_id.clone();
        meshwatch_runtime::telemetry::record_order_id(&id);
        tracing::info!(order.id = %id, customer.id = %req.customer_id, "placing order");

        // 1. Reserve.
        let reserved = self
            .stock
            .reserve(deadline, &id, &req.items)
            .await
            .inspect_err(
                |e| tracing::warn!(order.id = %id, error.message = %e, "reservation failed"),
            )
            .map_err(OrderError::Downstream)?;
        order.reservation_id = Some(reserved.reservation_id.clone());
        let (items, total) = match price(&reserved, &self.currency) {
            Ok(p) => p,
            Err(reason) => {
                self.release(&id, &reserved.reservation_id).await;
                return Err(OrderError::Pricing(reason));
            }
        };
        order.items = items;
        order.total = Some(total.clone());

        // 2. Charge.
        let charged = self
            .payments
            .charge(deadline, &id, &req.customer_id, &total, &req.payment_token)
            .await;
        let decision = match charged {
            Ok(d) => d,
            Err(error) if error.failure == CallFailure::Refunded => {
                // An earlier run (or the recovery pass) refunded this order
                // id: it is never charged again.
                tracing::warn!(order.id = %id, error.message = %error, "order already refunded; releasing");
                self.release(&id, &reserved.reservation_id).await;
                return Ok(refunded_failure(order, &error.to_string()));
            }
            Err(error) => {
                tracing::warn!(order.id = %id, error.message = %error, "charge failed; compensating");
                if error.is_ambiguous() {
                    // The charge may have gone through before the failure,
                    // or may still be on its way: refund by order id, which
                    // also bars a late charge.
                    let reason = format!("charge outcome unknown: {error}");
                    let refund = self.refund(&id, &reason).await;
                    self.release(&id, &reserved.reservation_id).await;
                    match refund {
                        Refund::Done => return Ok(refunded_failure(order, &reason)),
                        Refund::NothingCharged => {}
                        Refund::Failed => {
                            // A charge may stand: the recovery pass refunds
                            // it once payment answers.
                            tracing::error!(order.id = %id, "charge outcome unknown and the refund failed; leaving the order to the recovery pass");
                            let mut error = error;
                            error.message = format!(
                                "{error}; the charge may have gone through and could not be refunded: retry with the same idempotency_key"
                            );
                            return Err(undecided(OrderError::Downstream(error), &id));
                        }
                    }
                    return Err(OrderError::Downstream(error));
                }
                self.release(&id, &reserved.reservation_id).await;
                return Err(OrderError::Downstream(error));
            }
        };
        let payment_id = match decision {
            ChargeDecision::Approved { payment_id } => payment_id,
            ChargeDecision::Declined { payment_id, reason } => {
                self.release(&id, &reserved.reservation_id).await;
                order.status = OrderStatus::PaymentDeclined;
                order.payment_id = non_empty(payment_id);
                order.failure_reason = Some(if reason.is_empty() {
                    "payment declined".to_owned()
                } else {
                    reason
                });
                tracing::info!(
                    order.id = %id,
                    order.status = "PAYMENT_DECLINED",
                    event.reason = order.failure_reason.as_deref().unwrap_or_default(),
                    "order declined by payment; reservation released"
                );
                return Ok(order.clone());
            }
        };
        order.payment_id = non_empty(payment_id);
        // What the recovery pass needs to complete a paid order if this
        // run is cut. Not recorded: the commit below is then not attempted.
        // Nor is any compensation: the write may have landed with its
        // answer lost (the recovery pass would then commit a paid order
        // this run refunded), or another replica may own the order now.
        // The recovery pass decides from what the row says.
        if let Err(e) = self.book.update(order).await {
            if matches!(e, OrderError::LeaseLost(_)) {
                tracing::warn!(order.id = %id, error.message = %e, "lease lost: this run stops");
                return Err(e);
            }
            tracing::warn!(order.id = %id, error.message = %e, "recording the charge failed; leaving the order to the recovery pass");
            return Err(undecided(e, &id));
        }

        // 3. Commit. From here on the money is taken: a failure refunds.
        let mut committed = self.stock.commit(deadline, &reserved.reservation_id).await;
        if let Err(error) = &committed {
            if error.is_ambiguous() {
                // The commit may have landed with its answer lost; refunding
                // then would give the money back for units already taken
                // from stock (a committed reservation cannot be released).
                // Commit is idempotent: ask once more, on our own budget.
                tracing::warn!(order.id = %id, error.message = %error, "commit outcome unknown; asking again");
                committed = self
                    .stock
                    .commit(self.compensation_deadline(), &reserved.reservation_id)
                    .await;
            }
        }
        if let Err(error) = committed {
            if error.is_ambiguous() {
                // Still unknown: refunding and releasing now would lose the
                // units if the commit landed (a committed reservation cannot
                // be released). The recovery pass asks again until it knows.
                tracing::warn!(order.id = %id, error.message = %error, "commit outcome still unknown; leaving the paid order to the recovery pass");
                return Err(undecided(OrderError::Downstream(error), &id));
            }
            let reason = format!("inventory commit failed: {error}");
            tracing::warn!(order.id = %id, error.message = %reason, "compensating: refund, then release");
            if self.refund(&id, &reason).await == Refund::Failed {
                // The charge stands: the recovery pass commits again (it is
                // refused again) and refunds once payment answers.
                tracing::error!(order.id = %id, "refund failed; leaving the order to the recovery pass");
                return Err(undecided(
                    OrderError::Downstream(CallError::new(
                        CallFailure::Unavailable,
                        format!("{reason}; the refund failed"),
                    )),
                    &id,
                ));
            }
            self.release(&id, &reserved.reservation_id).await;
            return Ok(refunded_failure(order, &reason));
        }
        order.status = OrderStatus::Confirmed;
        tracing::info!(
            order.id = %id,
            order.status = "CONFIRMED",
            order.total_minor = total.minor(),
            order.currency = %total.currency(),
            "order confirmed"
        );
        Ok(order.clone())
    }

    /// Finishes one abandoned order (see the module docs), if there is one;
    /// returns whether there was. A downstream service that does not answer
    /// leaves it pending for another try after [`RECOVERY_RETRY`].
    pub async fn recover_one(&self) -> Result<bool, OrderError> {
        let Some(recovered) = self.book.take_over_abandoned().await? else {
            return Ok(false);
        };
        let mut order = recovered.order;
        let id = order.order_id.clone();
        let key = order.idempotency_key.clone();
        meshwatch_runtime::telemetry::record_order_id(&id);
        tracing::warn!(order.id = %id, "recovering an order its run left pending");
        if let (Some(_), Some(reservation)) = (&order.payment_id, order.reservation_id.clone()) {
            // Paid for and recorded: complete it.
            match self
                .stock
                .commit(self.compensation_deadline(), &reservation)
                .await
            {
                Ok(()) => {
                    order.status = OrderStatus::Confirmed;
                    tracing::info!(order.id = %id, order.status = "CONFIRMED", "recovered order confirmed");
                    self.book.finish(&key, &order, Ok(order.clone())).await;
                    return Ok(true);
                }
                Err(e) if e.is_ambiguous() => {
                    tracing::warn!(order.id = %id, error.message = %e, "recovery: commit outcome unknown; trying again later");
                    self.book.postpone(&key, &id, RECOVERY_RETRY).await?;
                    return Ok(true);
                }
                Err(e) => {
                    let reason =
                        format!("recovered after an interruption: inventory commit failed: {e}");
                    if self.refund(&id, &reason).await == Refund::Failed {
                        self.book.postpone(&key, &id, RECOVERY_RETRY).await?;
                        return Ok(true);
                    }
                    self.release(&id, &reservation).await;
                    let failed = refunded_failure(&mut order, &reason);
                    self.book.finish(&key, &failed, Ok(failed.clone())).await;
                    return Ok(true);
                }
            }
        }
        // Not known to be paid: the charge may or may not have happened, or
        // may still be on its way. Refund by order id (nothing charged yet →
        // payment bars a late charge), release.
        let reason = "order interrupted before it was decided";
        let refund = self.refund(&id, reason).await;
        if refund == Refund::Failed {
            self.book.postpone(&key, &id, RECOVERY_RETRY).await?;
            return Ok(true);
        }
        if let Some(reservation) = &order.reservation_id {
            self.release(&id, reservation).await;
        }
        tracing::warn!(order.id = %id, order.status = "FAILED", "recovered order compensated");
        if refund == Refund::Done {
            let failed = refunded_failure(&mut order, reason);
            self.book.finish(&key, &failed, Ok(failed.clone())).await;
        } else {
            // Declined: a retry replays the decline.
            self.book
                .finish(
                    &key,
                    &order,
                    Err(OrderError::Interrupted(format!(
                        "order {id} was interrupted before it was decided; nothing was charged and the reservation was released or left to expire: retry with the same idempotency_key"
                    ))),
                )
                .await;
        }
        Ok(true)
    }

    /// Compensation budget: independent of the caller, who may be gone.
    fn compensation_deadline(&self) -> Deadline {
        Deadline::after(self.compensation_budget)
    }

    async fn release(&self, order_id: &str, reservation_id: &str) {
        let r = self
            .stock
            .release(self.compensation_deadline(), reservation_id)
            .await;
        match r {
            Ok(()) => {
                tracing::info!(order.id = %order_id, reservation.id = %reservation_id, "reservation released")
            }
            Err(e) => tracing::error!(
                order.id = %order_id,
                reservation.id = %reservation_id,
                error.message = %e,
                "release failed; the reservation expires at its TTL"
            ),
        }
    }

    /// Refunds `order_id` by order id; see [`Refund`].
    async fn refund(&self, order_id: &str, reason: &str) -> Refund {
        let r = self
            .payments
            .refund(self.compensation_deadline(), order_id, reason)
            .await;
        match r {
            Ok(()) => {
                tracing::warn!(order.id = %order_id, "payment refunded (or barred before any charge)");
                Refund::Done
            }
            // Declined: nothing to give back, and a retry replays the decline.
            Err(CallError {
                failure: CallFailure::FailedPrecondition,
                ..
            }) => Refund::NothingCharged,
            // NOT_FOUND included: a payment that answers so wrote no
            // tombstone, so a charge still on its way could land after it.
            Err(e) => {
                tracing::error!(order.id = %order_id, error.message = %e, "refund failed");
                Refund::Failed
            }
        }
    }
}

/// What a refund by order id left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refund {
    /// No charge stands and none can be made for the order any more.
    Done,
    /// The charge was declined: nothing to give back.
    NothingCharged,
    /// Payment did not say: a charge may stand.
    Failed,
}

/// `cause` left order `id` undecided: it stays PENDING for the recovery pass.
fn undecided(cause: OrderError, id: &str) -> OrderError {
    OrderError::Undecided(Box::new(cause), id.to_owned())
}

/// `order` ended FAILED after its payment was refunded (or barred): the
/// order id can never be charged again, so the key is not retryable.
fn refunded_failure(order: &mut Order, reason: &str) -> Order {
    order.status = OrderStatus::Failed;
    order.failure_reason = Some(format!(
        "{reason}; no charge stands for order {} and it cannot be charged again: place the order again with a new idempotency_key",
        order.order_id
    ));
    order.clone()
}

/// Ends a run's claim on its key in this process even when the saga task
/// dies (a panic, the runtime shutting down), so retries here do not wait
/// on it forever; the row stays PENDING for the recovery pass.
struct FinishOnDrop {
    book: Arc<OrderBook>,
    key: String,
    order_id: String,
}

impl FinishOnDrop {
    fn disarm(&mut self) {
        self.key.clear();
    }
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if !self.key.is_empty() {
            self.book.release(
                &self.key,
                Err(OrderError::Interrupted(format!(
                    "order {} stopped before it was decided; retry with the same idempotency_key",
                    self.order_id
                ))),
            );
        }
    }
}

/// Runs the recovery pass every [`RECOVERY_EVERY`] until `shutdown`.
pub async fn run_recovery<S: Stock, P: Payments>(
    orders: Orders<S, P>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        if orders.book.database().is_up() {
            loop {
                match orders.recover_one().await {
                    Ok(true) if !shutdown.is_cancelled() => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error.message = %e, "recovery pass failed; trying again");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RECOVERY_EVERY) => {}
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Items with prices and the total, all in `currency`.
fn price(r: &Reservation, currency: &str) -> Result<(Vec<PricedItem>, Money), String> {
    let mut total = Money::zero(currency).map_err(|e| e.to_string())?;
    let mut items = Vec::with_capacity(r.lines.len());
    for line in &r.lines {
        let unit = Money::new(&line.currency_code, line.unit_price_minor)
            .map_err(|e| format!("inventory priced {} badly: {e}", line.sku))?;
        if unit.currency() != currency {
            return Err(format!(
                "inventory prices {} in {}, but orders are taken in {currency}",
                line.sku,
                unit.currency()
            ));
        }
        total = total
            .plus(&unit.times(line.quantity).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        items.push(PricedItem {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price: unit,
        });
    }
    Ok((items, total))
}

/// Default bound on one downstream call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Default budget of a PlaceOrder whose caller set no deadline.
pub const DEFAULT_REQUEST_BUDGET: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;

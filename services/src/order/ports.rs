//! What the saga needs from inventory and payment, in domain terms: the
//! ports [`Stock`] and [`Payments`], implemented over gRPC in `clients` and by
//! fakes in tests, so the saga runs and is tested without sockets.

use std::fmt;
use std::future::Future;

use crate::deadline::Deadline;
use crate::money::Money;

/// One line of a reservation as inventory priced it. The price is checked by
/// the saga (currency, overflow), not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedLine {
    pub sku: String,
    pub quantity: u32,
    pub currency_code: String,
    pub unit_price_minor: i64,
}

/// Units held for an order until commit or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub reservation_id: String,
    pub lines: Vec<ReservedLine>,
}

/// What payment decided about a charge. A decline is a normal outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeDecision {
    Approved { payment_id: String },
    Declined { payment_id: String, reason: String },
}

/// How a call to a downstream service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The service refused: the request names something unknown.
    NotFound,
    /// The service refused the request as malformed.
    InvalidArgument,
    /// The service refused: the state does not allow it (e.g. out of stock).
    FailedPrecondition,
    /// Payment refused to charge: the order id was refunded (or barred by a
    /// refund that came first) and can never be charged.
    Refunded,
    /// The service shed the request; it may be retried later.
    ResourceExhausted,
    /// Any other refusal that is the caller's to fix.
    Refused,
    /// Transport trouble or a server error: the step may or may not have happened.
    Unavailable,
    /// No answer in time: the step may or may not have happened.
    DeadlineExceeded,
}

/// A failed downstream call; the message names the service and the method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub failure: CallFailure,
    pub message: String,
}

impl CallError {
    pub fn new(failure: CallFailure, message: impl Into<String>) -> Self {
        Self {
            failure,
            message: message.into(),
        }
    }

    /// True when the step may or may not have happened at the peer.
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self.failure,
            CallFailure::Unavailable | CallFailure::DeadlineExceeded
        )
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

/// Inventory as the saga sees it. Every call is idempotent per order or
/// reservation id and is answered by `deadline`.
pub trait Stock: Send + Sync + 'static {
    fn reserve(
        &self,
        deadline: Deadline,
        order_id: &str,
        items: &[(String, u32)],
    ) -> impl Future<Output = Result<Reservation, CallError>> + Send;

    fn commit(
        &self,
        deadline: Deadline,
        reservation_id: &str,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    fn release(
        &self,
        deadline: Deadline,
        reservation_id: &str,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
}

/// Payment as the saga sees it: at most one charge per order.
pub trait Payments: Send + Sync + 'static {
    fn charge(
        &self,
        deadline: Deadline,
        order_id: &str,
        customer_id: &str,
        amount: &Money,
        payment_token: &str,
    ) -> impl Future<Output = Result<ChargeDecision, CallError>> + Send;

    /// Gives a charge back. `NotFound`/`FailedPrecondition`: nothing was charged.
    fn refund(
        &self,
        deadline: Deadline,
        order_id: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
}

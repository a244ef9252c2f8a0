//! Charges and refunds, idempotent per order: the first decision for an
//! order is final and a retry returns it, so money is taken at most once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::money::Money;

/// Tokens starting with this are always declined (demos and tests).
pub const DECLINE_TOKEN_PREFIX: &str = "tok_decline";

/// Why a payment operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("order_id is required")]
    MissingOrderId,
    #[error("customer_id is required")]
    MissingCustomer,
    #[error("amount: {0}")]
    Amount(String),
    #[error("amount must be positive, got {0}")]
    NotPositive(Money),
    #[error("charge for order {order_id} was already made with {first}; this request says {now}")]
    AmountMismatch {
        order_id: String,
        first: Money,
        now: Money,
    },
    #[error("no payment for order {0:?}")]
    UnknownOrder(String),
    #[error("the charge for order {0} was declined; there is nothing to refund")]
    NothingToRefund(String),
    #[error("the charge for order {order_id} was refunded ({reason}); it is not charged again: place the order again with a new idempotency_key")]
    Refunded { order_id: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Charged,
    Declined,
    Refunded,
}

/// The record of one order's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    pub order_id: String,
    pub amount: Money,
    pub status: PaymentStatus,
    /// Times money was actually taken: 0 or 1.
    pub charge_count: u32,
    pub decline_reason: Option<String>,
    pub refund_reason: Option<String>,
    pub created_at: SystemTime,
}

/// What a caller asks to be charged.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub order_id: String,
    pub customer_id: String,
    pub amount: Money,
    pub token: String,
}

/// All payments of one process.
#[derive(Debug, Default)]
pub struct Ledger {
    payments: Mutex<HashMap<String, Payment>>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Payment>> {
        self.payments.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges once per order. `injected_decline` is the fault injector's
    /// roll, applied only to the first decision. Returns the payment and
    /// whether this call made the decision (false for a replay).
    pub fn charge(
        &self,
        req: ChargeRequest,
        injected_decline: bool,
    ) -> Result<(Payment, bool), PaymentError> {
        if req.order_id.is_empty() {
            return Err(PaymentError::MissingOrderId);
        }
        if req.customer_id.is_empty() {
            return Err(PaymentError::MissingCustomer);
        }
        if req.amount.minor() == 0 {
            return Err(PaymentError::NotPositive(req.amount));
        }
        let mut payments = self.lock();
        if let Some(existing) = payments.get(&req.order_id) {
            if existing.amount != req.amount {
                return Err(PaymentError::AmountMismatch {
                    order_id: req.order_id,
                    first: existing.amount.clone(),
                    now: req.amount,
                });
            }
            // A refunded charge is not a standing approval: answering
            // "approved" would let a retried saga confirm an order whose
            // money was given back.
            if existing.status == PaymentStatus::Refunded {
                return Err(PaymentError::Refunded {
                    order_id: req.order_id,
                    reason: existing.refund_reason.clone().unwrap_or_default(),
                });
            }
            return Ok((existing.clone(), false));
        }
        let decline_reason = if req.token.starts_with(DECLINE_TOKEN_PREFIX) {
            Some(format!("card declined (test token {:?})", req.token))
        } else if injected_decline {
            Some("card declined (injected decline_rate)".to_owned())
        } else {
            None
        };
        let payment = Payment {
            payment_id: format!("pay-{:016x}", rand::random::<u64>()),
            order_id: req.order_id.clone(),
            amount: req.amount,
            status: if decline_reason.is_some() {
                PaymentStatus::Declined
            } else {
                PaymentStatus::Charged
            },
            charge_count: u32::from(decline_reason.is_none()),
            decline_reason,
            refund_reason: None,
            created_at: SystemTime::now(),
        };
        payments.insert(req.order_id, payment.clone());
        Ok((payment, true))
    }

    /// Refunds an approved charge. Idempotent.
    pub fn refund(&self, order_id: &str, reason: &str) -> Result<Payment, PaymentError> {
        if order_id.is_empty() {
            return Err(PaymentError::MissingOrderId);
        }
        let mut payments = self.lock();
        let p = payments
            .get_mut(order_id)
            .ok_or_else(|| PaymentError::UnknownOrder(order_id.to_owned()))?;
        match p.status {
            PaymentStatus::Declined => Err(PaymentError::NothingToRefund(order_id.to_owned())),
            PaymentStatus::Refunded => Ok(p.clone()),
            PaymentStatus::Charged => {
                p.status = PaymentStatus::Refunded;
                p.refund_reason = Some(reason.to_owned());
                Ok(p.clone())
            }
        }
    }

    pub fn get(&self, order_id: &str) -> Result<Payment, PaymentError> {
        if order_id.is_empty() {
            return Err(PaymentError::MissingOrderId);
        }
        self.lock()
            .get(order_id)
            .cloned()
            .ok_or_else(|| PaymentError::UnknownOrder(order_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn req(order: &str, token: &str, cents: i64) -> ChargeRequest {
        ChargeRequest {
            order_id: order.into(),
            customer_id: "c".into(),
            amount: Money::new("USD", cents).unwrap(),
            token: token.into(),
        }
    }

    #[test]
    fn charge_is_once_per_order() {
        let l = Ledger::new();
        let (p, first) = l.charge(req("o1", "", 500), false).unwrap();
        assert!(first);
        assert_eq!((p.status, p.charge_count), (PaymentStatus::Charged, 1));
        let (again, first) = l.charge(req("o1", "", 500), true).unwrap();
        assert!(!first);
        assert_eq!(again, p, "a retry returns the first decision");
        assert!(matches!(
            l.charge(req("o1", "", 600), false),
            Err(PaymentError::AmountMismatch { .. })
        ));
    }

    #[test]
    fn declines_and_refunds() {
        let l = Ledger::new();
        let (p, _) = l
            .charge(req("o1", "tok_decline_insufficient", 500), false)
            .unwrap();
        assert_eq!((p.status, p.charge_count), (PaymentStatus::Declined, 0));
        assert!(matches!(
            l.refund("o1", "x"),
            Err(PaymentError::NothingToRefund(_))
        ));
        let (p, _) = l.charge(req("o2", "", 500), true).unwrap();
        assert_eq!(p.status, PaymentStatus::Declined, "injected decline");

        l.charge(req("o3", "", 500), false).unwrap();
        let r = l.refund("o3", "commit failed").unwrap();
        assert_eq!(r.status, PaymentStatus::Refunded);
        assert_eq!(
            l.refund("o3", "again").unwrap().refund_reason.as_deref(),
            Some("commit failed")
        );
        assert!(matches!(
            l.refund("nope", "x"),
            Err(PaymentError::UnknownOrder(_))
        ));
        assert!(matches!(
            l.charge(req("o4", "", 0), false),
            Err(PaymentError::NotPositive(_))
        ));
    }

    #[test]
    fn a_refunded_charge_is_not_approved_again() {
        let l = Ledger::new();
        l.charge(req("o", "", 500), false).unwrap();
        l.refund("o", "charge outcome unknown").unwrap();
        let e = l.charge(req("o", "", 500), false).unwrap_err();
        assert!(matches!(e, PaymentError::Refunded { .. }), "{e:?}");
        assert!(e.to_string().contains("new idempotency_key"), "{e}");
        let p = l.get("o").unwrap();
        assert_eq!((p.status, p.charge_count), (PaymentStatus::Refunded, 1));
    }

    #[test]
    fn concurrent_charges_take_money_once() {
        let l = Arc::new(Ledger::new());
        let made: usize = (0..32)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || l.charge(req("o", "", 100), false).unwrap().1)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(made, 1);
        assert_eq!(l.get("o").unwrap().charge_count, 1);
    }
}

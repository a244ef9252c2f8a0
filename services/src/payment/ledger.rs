//! Charges and refunds in the service's database, idempotent per order: the
//! first decision for an order is final and a retry returns it, so money is
//! taken at most once. The order id is the table's primary key, so two
//! replicas (or a retry after a restart) cannot both decide: the second
//! insert does nothing and reads the first decision.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::db::{query, Clock, Database, DbError, RETENTION_BATCH};
use crate::limits::{has_control, truncate, MAX_ID_LEN, MAX_REASON_LEN, MAX_TOKEN_LEN};
use crate::money::Money;
use crate::with_conn;

/// Tokens starting with this are always declined (demos and tests).
pub const DECLINE_TOKEN_PREFIX: &str = "tok_decline";
/// Currency of a refund tombstone (ISO 4217 "no currency"; amount 0).
pub const TOMBSTONE_CURRENCY: &str = "XXX";

/// Why a payment operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PaymentError {
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains a control character (NUL, newline, …); send printable text")]
    ControlCharacter { field: &'static str },
    #[error(transparent)]
    Db(#[from] DbError),
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

impl PaymentStatus {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "charged" => Self::Charged,
            "declined" => Self::Declined,
            "refunded" => Self::Refunded,
            _ => return None,
        })
    }
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

/// Payments over the service's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    db: Database,
    clock: Clock,
}

const COLUMNS: &str = "SELECT payment_id, order_id, currency, amount_minor, status, charge_count, \
     decline_reason, refund_reason, created_ms FROM payments WHERE order_id = $1";

impl Ledger {
    pub fn new(db: Database, clock: Clock) -> Self {
        Self { db, clock }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    fn check_order_id(order_id: &str) -> Result<(), PaymentError> {
        if order_id.is_empty() {
            return Err(PaymentError::MissingOrderId);
        }
        if order_id.len() > MAX_ID_LEN {
            return Err(PaymentError::TooLong {
                field: "order_id",
                max: MAX_ID_LEN,
            });
        }
        if has_control(order_id) {
            return Err(PaymentError::ControlCharacter { field: "order_id" });
        }
        Ok(())
    }

    async fn read(&self, order_id: &str) -> Result<Option<Payment>, PaymentError> {
        let row = with_conn!(self.db, p => {
            let row = self.db.bounded(query(COLUMNS).bind(order_id).fetch_optional(&mut *p)).await?;
            match row {
                None => None,
                Some(r) => {
                    let currency: String = self.db.track(r.try_get("currency"))?;
                    let minor: i64 = self.db.track(r.try_get("amount_minor"))?;
                    let status: String = self.db.track(r.try_get("status"))?;
                    let created: i64 = self.db.track(r.try_get("created_ms"))?;
                    let count: i64 = self.db.track(r.try_get("charge_count"))?;
                    Some(Payment {
                        payment_id: self.db.track(r.try_get("payment_id"))?,
                        order_id: self.db.track(r.try_get("order_id"))?,
                        amount: Money::new(&currency, minor)
                            .map_err(|e| self.db.corrupt(format!("amount of {order_id}: {e}")))?,
                        status: PaymentStatus::parse(&status).ok_or_else(|| {
                            self.db.corrupt(format!("payment status {status:?}"))
                        })?,
                        charge_count: u32::try_from(count).unwrap_or(0),
                        decline_reason: self.db.track(r.try_get("decline_reason"))?,
                        refund_reason: self.db.track(r.try_get("refund_reason"))?,
                        created_at: UNIX_EPOCH
                            + Duration::from_millis(u64::try_from(created).unwrap_or(0)),
                    })
                }
            }
        });
        Ok(row)
    }

    /// Charges once per order. `injected_decline` is the fault injector's
    /// roll, applied only to the first decision. Returns the payment and
    /// whether this call made the decision (false for a replay).
    pub async fn charge(
        &self,
        req: ChargeRequest,
        injected_decline: bool,
    ) -> Result<(Payment, bool), PaymentError> {
        Self::check_order_id(&req.order_id)?;
        if req.customer_id.is_empty() {
            return Err(PaymentError::MissingCustomer);
        }
        if req.customer_id.len() > MAX_ID_LEN {
            return Err(PaymentError::TooLong {
                field: "customer_id",
                max: MAX_ID_LEN,
            });
        }
        if req.token.len() > MAX_TOKEN_LEN {
            return Err(PaymentError::TooLong {
                field: "payment_token",
                max: MAX_TOKEN_LEN,
            });
        }
        for (field, value) in [
            ("customer_id", &req.customer_id),
            ("payment_token", &req.token),
        ] {
            if has_control(value) {
                return Err(PaymentError::ControlCharacter { field });
            }
        }
        if req.amount.minor() == 0 {
            return Err(PaymentError::NotPositive(req.amount));
        }
        self.db.check()?;
        let decline_reason = if req.token.starts_with(DECLINE_TOKEN_PREFIX) {
            Some(format!("card declined (test token {:?})", req.token))
        } else if injected_decline {
            Some("card declined (injected decline_rate)".to_owned())
        } else {
            None
        };
        let now = self.clock.now_ms();
        let payment = Payment {
            payment_id: crate::ids::new_id("pay"),
            order_id: req.order_id.clone(),
            amount: req.amount.clone(),
            status: if decline_reason.is_some() {
                PaymentStatus::Declined
            } else {
                PaymentStatus::Charged
            },
            charge_count: u32::from(decline_reason.is_none()),
            decline_reason,
            refund_reason: None,
            created_at: UNIX_EPOCH + Duration::from_millis(u64::try_from(now).unwrap_or(0)),
        };
        let inserted = with_conn!(self.db, p => self.db.bounded(
            query(
                "INSERT INTO payments (order_id, payment_id, customer_id, currency, amount_minor, \
                 status, charge_count, decline_reason, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(&payment.order_id)
            .bind(&payment.payment_id)
            .bind(&req.customer_id)
            .bind(payment.amount.currency())
            .bind(payment.amount.minor())
            .bind(match payment.status {
                PaymentStatus::Charged => "charged",
                _ => "declined",
            })
            .bind(i64::from(payment.charge_count))
            .bind(&payment.decline_reason)
            .bind(now)
            .execute(&mut *p)
            ,
        ).await?);
        if inserted == 1 {
            return Ok((payment, true));
        }
        let existing = self.read(&req.order_id).await?.ok_or_else(|| {
            self.db.query_error(format!(
                "payment of order {} neither inserted nor found; retry",
                req.order_id
            ))
        })?;
        // A refunded charge is not a standing approval: answering
        // "approved" would let a retried saga confirm an order whose
        // money was given back. Checked before the amount: a refund that
        // came first left a tombstone without one.
        if existing.status == PaymentStatus::Refunded {
            return Err(PaymentError::Refunded {
                order_id: req.order_id,
                reason: existing.refund_reason.clone().unwrap_or_default(),
            });
        }
        if existing.amount != req.amount {
            return Err(PaymentError::AmountMismatch {
                order_id: req.order_id,
                first: existing.amount,
                now: req.amount,
            });
        }
        Ok((existing, false))
    }

    /// Refunds an approved charge. Idempotent. When no payment exists for
    /// the order yet, a tombstone is written in its place (status refunded,
    /// nothing charged): a charge for the order that is still on its way
    /// (say, waiting for a connection on another replica after its caller
    /// gave up) then finds the order refunded and takes no money. Either way
    /// the order can never be charged afterwards. A declined order is
    /// [`PaymentError::NothingToRefund`].
    pub async fn refund(&self, order_id: &str, reason: &str) -> Result<Payment, PaymentError> {
        Self::check_order_id(order_id)?;
        self.db.check()?;
        let now = self.clock.now_ms();
        let reason = truncate(reason, MAX_REASON_LEN);
        // Tombstone first, then reverse a charge: whichever of the charge's
        // insert and ours lands first, the row is final once both ran, and
        // a charge that won is turned into a refund below.
        with_conn!(self.db, p => self.db.bounded(
            query(
                "INSERT INTO payments (order_id, payment_id, customer_id, currency, amount_minor, \
                 status, charge_count, refund_reason, created_ms, updated_ms) \
                 VALUES ($1, $2, '', $3, 0, 'refunded', 0, $4, $5, $5) \
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order_id)
            .bind(crate::ids::new_id("pay"))
            .bind(TOMBSTONE_CURRENCY)
            .bind(reason)
            .bind(now)
            .execute(&mut *p)
            ,
        ).await.map(drop))?;
        let changed = with_conn!(self.db, p => self.db.bounded(
            query(
                "UPDATE payments SET status = 'refunded', refund_reason = $2, updated_ms = $3 \
                 WHERE order_id = $1 AND status = 'charged'",
            )
            .bind(order_id)
            .bind(reason)
            .bind(now)
            .execute(&mut *p)
            ,
        ).await?);
        let p = self.read(order_id).await?.ok_or_else(|| {
            self.db.query_error(format!(
                "refund of order {order_id}: the payment was neither found nor written; retry"
            ))
        })?;
        match p.status {
            PaymentStatus::Declined => Err(PaymentError::NothingToRefund(order_id.to_owned())),
            PaymentStatus::Refunded => Ok(p),
            PaymentStatus::Charged => Err(self
                .db
                .query_error(format!(
                    "refund of order {order_id} changed {changed} rows and left it charged; retry"
                ))
                .into()),
        }
    }

    pub async fn get(&self, order_id: &str) -> Result<Payment, PaymentError> {
        Self::check_order_id(order_id)?;
        self.db.check()?;
        self.read(order_id)
            .await?
            .ok_or_else(|| PaymentError::UnknownOrder(order_id.to_owned()))
    }

    /// Deletes one batch of payments last changed before `cutoff_ms`.
    pub async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, DbError> {
        self.db.check()?;
        with_conn!(self.db, p => self.db.bounded(
            query(
                "DELETE FROM payments WHERE order_id IN (SELECT order_id FROM payments \
                 WHERE updated_ms < $1 LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(RETENTION_BATCH)
            .execute(&mut *p)
            ,
        ).await)
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

    async fn ledger() -> (Ledger, tempfile::TempDir) {
        let (db, dir) = crate::db::test_sqlite("payment", super::super::MIGRATIONS).await;
        (Ledger::new(db, Clock::System), dir)
    }

    #[tokio::test]
    async fn charge_is_once_per_order() {
        let (l, _dir) = ledger().await;
        let (p, first) = l.charge(req("o1", "", 500), false).await.unwrap();
        assert!(first);
        assert_eq!((p.status, p.charge_count), (PaymentStatus::Charged, 1));
        let (again, first) = l.charge(req("o1", "", 500), true).await.unwrap();
        assert!(!first);
        assert_eq!(
            again.payment_id, p.payment_id,
            "a retry returns the first decision"
        );
        assert_eq!(again.status, PaymentStatus::Charged);
        assert!(matches!(
            l.charge(req("o1", "", 600), false).await,
            Err(PaymentError::AmountMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn declines_and_refunds() {
        let (l, _dir) = ledger().await;
        let (p, _) = l
            .charge(req("o1", "tok_decline_insufficient", 500), false)
            .await
            .unwrap();
        assert_eq!((p.status, p.charge_count), (PaymentStatus::Declined, 0));
        assert!(matches!(
            l.refund("o1", "x").await,
            Err(PaymentError::NothingToRefund(_))
        ));
        let (p, _) = l.charge(req("o2", "", 500), true).await.unwrap();
        assert_eq!(p.status, PaymentStatus::Declined, "injected decline");

        l.charge(req("o3", "", 500), false).await.unwrap();
        let r = l.refund("o3", "commit failed").await.unwrap();
        assert_eq!(r.status, PaymentStatus::Refunded);
        assert_eq!(
            l.refund("o3", "again")
                .await
                .unwrap()
                .refund_reason
                .as_deref(),
            Some("commit failed")
        );
        let tombstone = l.refund("nope", "x").await.unwrap();
        assert_eq!(
            (tombstone.status, tombstone.charge_count),
            (PaymentStatus::Refunded, 0),
            "a refund before any charge leaves a tombstone, not a charge"
        );
        for (order, customer, token, field) in [
            ("o\0", "c", "", "order_id"),
            ("o6", "c\0", "", "customer_id"),
            ("o7", "c", "tok\n", "payment_token"),
        ] {
            let mut r = req(order, token, 5);
            r.customer_id = customer.into();
            let e = l.charge(r, false).await.unwrap_err();
            assert!(
                matches!(e, PaymentError::ControlCharacter { field: f } if f == field),
                "{e:?}"
            );
        }
        assert!(matches!(
            l.charge(req("o4", "", 0), false).await,
            Err(PaymentError::NotPositive(_))
        ));
        assert!(matches!(
            l.charge(req("o5", &"t".repeat(MAX_TOKEN_LEN + 1), 5), false)
                .await,
            Err(PaymentError::TooLong {
                field: "payment_token",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_refunded_charge_is_not_approved_again() {
        let (l, _dir) = ledger().await;
        l.charge(req("o", "", 500), false).await.unwrap();
        l.refund("o", "charge outcome unknown").await.unwrap();
        let e = l.charge(req("o", "", 500), false).await.unwrap_err();
        assert!(matches!(e, PaymentError::Refunded { .. }), "{e:?}");
        assert!(e.to_string().contains("new idempotency_key"), "{e}");
        let p = l.get("o").await.unwrap();
        assert_eq!((p.status, p.charge_count), (PaymentStatus::Refunded, 1));
    }

    #[tokio::test]
    async fn a_charge_that_lands_after_its_refund_takes_no_money() {
        let (l, _dir) = ledger().await;
        // The saga gave up on the charge and refunded by order id while the
        // charge was still on its way (e.g. waiting for a connection).
        let r = l.refund("late", "charge outcome unknown").await.unwrap();
        assert_eq!((r.status, r.charge_count), (PaymentStatus::Refunded, 0));
        let e = l.charge(req("late", "", 500), false).await.unwrap_err();
        assert!(matches!(e, PaymentError::Refunded { .. }), "{e:?}");
        let p = l.get("late").await.unwrap();
        assert_eq!(
            (p.status, p.charge_count),
            (PaymentStatus::Refunded, 0),
            "no standing charge"
        );
        // And again: idempotent, nothing charged.
        assert_eq!(l.refund("late", "again").await.unwrap().charge_count, 0);
    }

    #[tokio::test]
    async fn concurrent_charges_take_money_once() {
        let (l, _dir) = ledger().await;
        let l = Arc::new(l);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let l = Arc::clone(&l);
                tokio::spawn(async move { l.charge(req("o", "", 100), false).await.unwrap().1 })
            })
            .collect();
        let mut made = 0;
        for t in tasks {
            made += usize::from(t.await.unwrap());
        }
        assert_eq!(made, 1);
        assert_eq!(l.get("o").await.unwrap().charge_count, 1);
    }

    #[tokio::test]
    async fn retention_deletes_old_payments_in_batches() {
        let (l, _dir) = ledger().await;
        for i in 0..3 {
            l.charge(req(&format!("o{i}"), "", 100), false)
                .await
                .unwrap();
        }
        assert_eq!(l.delete_before(0).await.unwrap(), 0, "nothing that old");
        assert_eq!(l.delete_before(i64::MAX).await.unwrap(), 3);
        assert!(matches!(
            l.get("o1").await,
            Err(PaymentError::UnknownOrder(_))
        ));
    }
}

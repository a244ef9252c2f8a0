//! Orders and their idempotency keys, in the service's database. A key is
//! claimed by the first request (a unique index, so across replicas and
//! restarts too); a concurrent retry waits for that request's outcome (in
//! this process through a channel, from another replica by reading the
//! row), a later retry gets the final order, and a run that ended in an
//! error may be retried with the same order id (every downstream step is
//! idempotent per order id). The replica running a pending order holds a
//! lease on it; an order whose lease ran out (its replica died) is finished
//! by the recovery pass of any replica.
//!
//! Leases are fenced and renewed: every write of a pending order's progress
//! renews the lease and holds only while this process still owns the row
//! (`owner`), so a run that lost its order to another replica learns it
//! ([`OrderError::LeaseLost`]) and stops. Lease times are taken from one
//! clock, the database's (`lease_until_ms` is written and compared in SQL
//! with the server's time), so replicas whose clocks disagree still agree
//! on when a lease ran out. Tests with a manual [`Clock`] use that clock
//! instead. `created_ms`/`updated_ms` stay on the process clock: they only
//! date rows for display and retention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::ports::CallError;
use crate::db::{query, Clock, Database, DbError, RETENTION_BATCH};
use crate::limits::{has_control, MAX_ID_LEN, MAX_ITEMS, MAX_SKU_LEN, MAX_TOKEN_LEN};
use crate::money::{is_currency_code, Money};
use crate::with_conn;

/// Sagas one process runs at once at most; one more is refused with
/// RESOURCE_EXHAUSTED (the server's concurrency limit is far lower: this is
/// the bound on the waiters' channels).
pub const MAX_RUNNING: usize = 10_000;

/// Why an order was refused or failed. Validation errors come before
/// anything happened; the others end a saga run, which may be retried with
/// the same idempotency key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrderError {
    #[error("idempotency_key is required (1 to {MAX_ID_LEN} characters); reuse it when you retry")]
    MissingKey,
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains a control character (NUL, newline, …); send printable text")]
    ControlCharacter { field: &'static str },
    #[error("{count} items in one order; at most {MAX_ITEMS}")]
    TooManyItems { count: usize },
    #[error("customer_id is required")]
    MissingCustomer,
    #[error("items must not be empty")]
    NoItems,
    #[error("item {index} has an empty sku")]
    EmptySku { index: usize },
    #[error("item {sku:?}: quantity must be at least 1")]
    ZeroQuantity { sku: String },
    #[error("item {0:?} appears more than once; send one line per SKU with the total quantity")]
    DuplicateSku(String),
    #[error("currency_code is required (the catalog is priced in {0})")]
    MissingCurrency(String),
    #[error("currency_code {given:?} is not accepted: the catalog is priced in {catalog}")]
    Currency { given: String, catalog: String },
    #[error("idempotency_key {0:?} was already used for a different order request")]
    KeyReused(String),
    #[error("order_id is required")]
    MissingOrderId,
    #[error("order {0:?} not found")]
    UnknownOrder(String),
    /// Inventory or payment failed or refused; the message names which.
    #[error("{0}")]
    Downstream(CallError),
    /// Inventory's prices cannot be used (another currency, overflow).
    #[error("{0}")]
    Pricing(String),
    /// The run stopped before it was decided (its task died).
    #[error("{0}")]
    Interrupted(String),
    /// Too many sagas in progress in this process.
    #[error("{0}")]
    Overloaded(String),
    /// The run could not tell how a step ended (`.0` says which): the
    /// order stays PENDING and the recovery pass finishes it.
    #[error("{0}; order {1} stays PENDING until the recovery pass finishes it: retry with the same idempotency_key later to read its outcome")]
    Undecided(Box<OrderError>, String),
    /// Another replica took the order over (this run's lease ran out):
    /// this run must not act on it any more.
    #[error("order {0} is being finished by another replica; retry with the same idempotency_key to read its outcome")]
    LeaseLost(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A validated `PlaceOrder` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub idempotency_key: String,
    pub customer_id: String,
    /// (sku, quantity), quantities ≥ 1, SKUs unique.
    pub items: Vec<(String, u32)>,
    pub currency: String,
    pub payment_token: String,
}

impl NewOrder {
    /// Validates a request against the catalog currency.
    pub fn validate(
        idempotency_key: String,
        customer_id: String,
        items: Vec<(String, u32)>,
        currency: String,
        payment_token: String,
        catalog_currency: &str,
    ) -> Result<Self, OrderError> {
        if idempotency_key.is_empty() {
            return Err(OrderError::MissingKey);
        }
        if idempotency_key.len() > MAX_ID_LEN {
            return Err(OrderError::TooLong {
                field: "idempotency_key",
                max: MAX_ID_LEN,
            });
        }
        if customer_id.is_empty() {
            return Err(OrderError::MissingCustomer);
        }
        if customer_id.len() > MAX_ID_LEN {
            return Err(OrderError::TooLong {
                field: "customer_id",
                max: MAX_ID_LEN,
            });
        }
        if payment_token.len() > MAX_TOKEN_LEN {
            return Err(OrderError::TooLong {
                field: "payment_token",
                max: MAX_TOKEN_LEN,
            });
        }
        for (field, value) in [
            ("idempotency_key", &idempotency_key),
            ("customer_id", &customer_id),
            ("payment_token", &payment_token),
        ] {
            if has_control(value) {
                return Err(OrderError::ControlCharacter { field });
            }
        }
        if items.is_empty() {
            return Err(OrderError::NoItems);
        }
        if items.len() > MAX_ITEMS {
            return Err(OrderError::TooManyItems { count: items.len() });
        }
        let mut seen = std::collections::HashSet::new();
        for (index, (sku, qty)) in items.iter().enumerate() {
            if sku.is_empty() {
                return Err(OrderError::EmptySku { index });
            }
            if sku.len() > MAX_SKU_LEN {
                return Err(OrderError::TooLong {
                    field: "sku",
                    max: MAX_SKU_LEN,
                });
            }
            if has_control(sku) {
                return Err(OrderError::ControlCharacter { field: "sku" });
            }
            if *qty == 0 {
                return Err(OrderError::ZeroQuantity { sku: sku.clone() });
            }
            if !seen.insert(sku.as_str()) {
                return Err(OrderError::DuplicateSku(sku.clone()));
            }
        }
        if currency.is_empty() {
            return Err(OrderError::MissingCurrency(catalog_currency.to_owned()));
        }
        if !is_currency_code(&currency) || currency != catalog_currency {
            return Err(OrderError::Currency {
                given: currency,
                catalog: catalog_currency.to_owned(),
            });
        }
        Ok(Self {
            idempotency_key,
            customer_id,
            items,
            currency,
            payment_token,
        })
    }
}

impl NewOrder {
    /// What the key was used for, to tell a retry from a different request
    /// under the same key. The token is kept only as a hash.
    fn fingerprint(&self) -> String {
        // FNV-1a: a retry must carry the same token; the token itself is
        // not stored.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.payment_token.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        serde_json::json!([
            self.customer_id,
            self.items,
            self.currency,
            format!("{h:016x}")
        ])
        .to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    PaymentDeclined,
    Failed,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::PaymentDeclined => "payment_declined",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "confirmed" => Self::Confirmed,
            "payment_declined" => Self::PaymentDeclined,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: Money,
}

#[derive(Serialize, Deserialize)]
struct StoredItem {
    sku: String,
    quantity: u32,
    price_minor: i64,
    currency: String,
}

/// An order as `GetOrder` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub idempotency_key: String,
    pub customer_id: String,
    pub items: Vec<PricedItem>,
    pub total: Option<Money>,
    pub status: OrderStatus,
    pub payment_id: Option<String>,
    pub reservation_id: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: SystemTime,
    pub trace_id: String,
}

/// How a saga run ended, as concurrent retries see it: the order, or the
/// error to answer with (the run may be retried).
pub type Outcome = Result<Order, OrderError>;

/// What [`OrderBook::claim`] decided for a request.
#[derive(Debug)]
pub enum Claim {
    /// Run the saga for this pending order, then call `finish`.
    Run(Order),
    /// This process is running it for another request with the same key:
    /// wait for this.
    Wait(watch::Receiver<Option<Outcome>>, Order),
    /// Another replica is running it: read the order until it is decided.
    WaitElsewhere(Order),
    /// Already decided.
    Done(Order),
}

/// An order taken over by the recovery pass: its request as stored.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub order: Order,
    /// (sku, quantity) as requested.
    pub items: Vec<(String, u32)>,
}

/// The orders, over the service's database. Cheap to clone.
#[derive(Clone)]
pub struct OrderBook {
    db: Database,
    clock: Clock,
    /// This process, as the owner of the leases it takes.
    owner: Arc<str>,
    /// How long a run may hold a pending order before another replica may
    /// finish it (longer than any run).
    lease: Duration,
    /// Sagas running in this process, by key: their waiters' channel.
    running: Arc<Mutex<HashMap<String, watch::Sender<Option<Outcome>>>>>,
}

impl std::fmt::Debug for OrderBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderBook")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .finish()
    }
}

const COLUMNS: &str = "SELECT order_id, idempotency_key, fingerprint, customer_id, request_items, \
     items, currency, total_minor, status, retryable, payment_id, reservation_id, failure_reason, \
     trace_id, created_ms FROM orders";

/// One row as read.
struct StoredOrder {
    order: Order,
    fingerprint: String,
    retryable: bool,
    request_items: Vec<(String, u32)>,
}

/// Which rows [`OrderBook::take_over`] may take; `{now}` is the lease clock.
const ABANDONED: &str = "status = 'pending' AND lease_until_ms <= {now}";
const RETRYABLE: &str = "status = 'failed' AND retryable = 1";

impl OrderBook {
    /// The book of this process (`owner`, e.g. its instance id), whose runs
    /// hold a pending order for at most `lease`.
    pub fn new(db: Database, clock: Clock, owner: &str, lease: Duration) -> Self {
        Self {
            db,
            clock,
            owner: owner.into(),
            lease,
            running: Arc::default(),
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    fn running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Option<Outcome>>>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lease clock's "now" in SQL, reading parameter `$n`: the manual
    /// clock's time when one is bound (tests), else the database's clock.
    fn now_sql(&self, n: usize) -> String {
        format!("COALESCE(${n}, {})", self.db.now_ms_sql())
    }

    /// The value for [`Self::now_sql`]'s parameter.
    fn now_param(&self) -> Option<i64> {
        match &self.clock {
            Clock::System => None,
            Clock::Manual(_) => Some(self.clock.now_ms()),
        }
    }

    fn items_json(&self, items: &[PricedItem]) -> Result<String, DbError> {
        let stored: Vec<StoredItem> = items
            .iter()
            .map(|i| StoredItem {
                sku: i.sku.clone(),
                quantity: i.quantity,
                price_minor: i.unit_price.minor(),
                currency: i.unit_price.currency().to_owned(),
            })
            .collect();
        serde_json::to_string(&stored).map_err(|e| self.db.corrupt(e.to_string()))
    }

    /// Claims `request`'s idempotency key for a run, or says how to answer
    /// a retry. `trace_id` is recorded on a new order.
    pub async fn claim(&self, request: &NewOrder, trace_id: &str) -> Result<Claim, OrderError> {
        self.db.check()?;
        let key = &request.idempotency_key;
        let fingerprint = request.fingerprint();
        // Two rounds: a row deleted by retention between our insert and read
        // is inserted again.
        for _ in 0..2 {
            let now = self.clock.now_ms();
            let order = Order {
                order_id: crate::ids::new_id("ord"),
                idempotency_key: key.clone(),
                customer_id: request.customer_id.clone(),
                items: Vec::new(),
                total: None,
                status: OrderStatus::Pending,
                payment_id: None,
                reservation_id: None,
                failure_reason: None,
                created_at: UNIX_EPOCH + Duration::from_millis(u64::try_from(now).unwrap_or(0)),
                trace_id: trace_id.to_owned(),
            };
            let request_items = serde_json::to_string(&request.items)
                .map_err(|e| self.db.corrupt(e.to_string()))?;
            // Registered before the insert: a retry in this process that
            // finds the row pending always finds the channel too.
            let slot = self.reserve_slot(key)?;
            let sql = format!(
                "INSERT INTO orders (order_id, idempotency_key, fingerprint, customer_id, \
                 request_items, items, currency, status, trace_id, created_ms, updated_ms, \
                 owner, lease_until_ms) VALUES ($1, $2, $3, $4, $5, '[]', $6, 'pending', $7, \
                 $8, $8, $9, {} + $11) ON CONFLICT (idempotency_key) DO NOTHING",
                self.now_sql(10)
            );
            let inserted = with_conn!(self.db, p => self.db.bounded(
                query(&sql)
                .bind(&order.order_id)
                .bind(key)
                .bind(&fingerprint)
                .bind(&request.customer_id)
                .bind(&request_items)
                .bind(&request.currency)
                .bind(trace_id)
                .bind(now)
                .bind(&*self.owner)
                .bind(self.now_param())
                .bind(crate::db::ms(self.lease))
                .execute(&mut *p)
                ,
            ).await);
            let inserted = match inserted {
                Ok(n) => n == 1,
                Err(e) => {
                    slot.give_back(self);
                    return Err(e.into());
                }
            };
            if inserted {
                slot.keep();
                return Ok(Claim::Run(order));
            }
            slot.give_back(self);
            let Some(stored) = self
                .read(&format!("{COLUMNS} WHERE idempotency_key = $1"), key)
                .await?
            else {
                continue;
            };
            if stored.fingerprint != fingerprint {
                return Err(OrderError::KeyReused(key.clone()));
            }
            let existing = stored.order;
            match existing.status {
                OrderStatus::Pending => {
                    if let Some(tx) = self.running().get(key) {
                        return Ok(Claim::Wait(tx.subscribe(), existing));
                    }
                    // Its run died with its replica (the lease ran out, as
                    // the database's clock says): finish it here.
                    if self.take_over(&existing.order_id, ABANDONED, key).await? {
                        return Ok(Claim::Run(existing));
                    }
                    return Ok(Claim::WaitElsewhere(existing));
                }
                OrderStatus::Failed if stored.retryable => {
                    if self.take_over(&existing.order_id, RETRYABLE, key).await? {
                        let mut order = existing;
                        order.status = OrderStatus::Pending;
                        order.failure_reason = None;
                        return Ok(Claim::Run(order));
                    }
                    // Another request took it first: wait for that run.
                    return Ok(Claim::WaitElsewhere(existing));
                }
                _ => return Ok(Claim::Done(existing)),
            }
        }
        Err(self
            .db
            .query_error(format!(
                "idempotency_key {key:?} kept changing under us; retry"
            ))
            .into())
    }

    /// Makes this process the runner of `order_id` when `condition` (SQL on
    /// the row, `{now}` = the lease clock) holds; registers the waiters'
    /// channel for `key`. Never when this process runs `key` already: its
    /// own run is alive, however late its lease.
    async fn take_over(
        &self,
        order_id: &str,
        condition: &str,
        key: &str,
    ) -> Result<bool, OrderError> {
        let slot = self.reserve_slot(key)?;
        if slot.key.is_none() {
            return Ok(false);
        }
        let now = self.now_sql(3);
        let sql = format!(
            "UPDATE orders SET status = 'pending', retryable = 0, failure_reason = NULL, \
             owner = $2, lease_until_ms = {now} + $4, updated_ms = $5 WHERE order_id = $1 AND {}",
            condition.replace("{now}", &now)
        );
        let taken = with_conn!(self.db, p => self.db.bounded(
            query(&sql)
                .bind(order_id)
                .bind(&*self.owner)
                .bind(self.now_param())
                .bind(crate::db::ms(self.lease))
                .bind(self.clock.now_ms())
                .execute(&mut *p)
                ,
        ).await);
        match taken {
            Ok(1) => {
                slot.keep();
                Ok(true)
            }
            Ok(_) => {
                slot.give_back(self);
                Ok(false)
            }
            Err(e) => {
                slot.give_back(self);
                Err(e.into())
            }
        }
    }

    fn reserve_slot(&self, key: &str) -> Result<Slot, OrderError> {
        let mut running = self.running();
        if running.contains_key(key) {
            // Only possible when this process already runs the key: the
            // caller then finds it pending and waits on this channel.
            return Ok(Slot { key: None });
        }
        if running.len() >= MAX_RUNNING {
            return Err(OrderError::Overloaded(format!(
                "{MAX_RUNNING} orders are in progress in this order process; retry with backoff"
            )));
        }
        running.insert(key.to_owned(), watch::channel(None).0);
        Ok(Slot {
            key: Some(key.to_owned()),
        })
    }

    async fn read(&self, sql: &str, value: &str) -> Result<Option<StoredOrder>, OrderError> {
        let stored = with_conn!(self.db, p => {
            let row = self.db.bounded(query(sql).bind(value).fetch_optional(&mut *p)).await?;
            match row {
                None => None,
                Some(r) => {
                    let status: String = self.db.track(r.try_get("status"))?;
                    let currency: String = self.db.track(r.try_get("currency"))?;
                    let total: Option<i64> = self.db.track(r.try_get("total_minor"))?;
                    let items: String = self.db.track(r.try_get("items"))?;
                    let items: Vec<StoredItem> = serde_json::from_str(&items)
                        .map_err(|e| self.db.corrupt(format!("order items {items:?}: {e}")))?;
                    let request_items: String = self.db.track(r.try_get("request_items"))?;
                    let request_items: Vec<(String, u32)> = serde_json::from_str(&request_items)
                        .map_err(|e| self.db.corrupt(format!("order request {request_items:?}: {e}")))?;
                    let created: i64 = self.db.track(r.try_get("created_ms"))?;
                    let retryable: i64 = self.db.track(r.try_get("retryable"))?;
                    let money = |c: &str, m: i64| {
                        Money::new(c, m).map_err(|e| self.db.corrupt(format!("amount {m} {c}: {e}")))
                    };
                    let priced = items
                        .into_iter()
                        .map(|i| {
                            Ok(PricedItem {
                                unit_price: money(&i.currency, i.price_minor)?,
                                sku: i.sku,
                                quantity: i.quantity,
                            })
                        })
                        .collect::<Result<Vec<_>, DbError>>()?;
                    Some(StoredOrder {
                        order: Order {
                            order_id: self.db.track(r.try_get("order_id"))?,
                            idempotency_key: self.db.track(r.try_get("idempotency_key"))?,
                            customer_id: self.db.track(r.try_get("customer_id"))?,
                            items: priced,
                            total: total.map(|m| money(&currency, m)).transpose()?,
                            status: OrderStatus::parse(&status)
                                .ok_or_else(|| self.db.corrupt(format!("order status {status:?}")))?,
                            payment_id: self.db.track(r.try_get("payment_id"))?,
                            reservation_id: self.db.track(r.try_get("reservation_id"))?,
                            failure_reason: self.db.track(r.try_get("failure_reason"))?,
                            created_at: UNIX_EPOCH
                                + Duration::from_millis(u64::try_from(created).unwrap_or(0)),
                            trace_id: self.db.track(r.try_get("trace_id"))?,
                        },
                        fingerprint: self.db.track(r.try_get("fingerprint"))?,
                        retryable: retryable != 0,
                        request_items,
                    })
                }
            }
        });
        Ok(stored)
    }

    /// Records a running order's progress (items, total, reservation,
    /// payment): what the recovery pass needs to finish it. Renews the
    /// lease. [`OrderError::LeaseLost`] when another replica took it over.
    pub async fn update(&self, order: &Order) -> Result<(), OrderError> {
        self.write(order, OrderStatus::Pending, false, Some(self.lease))
            .await
    }

    /// Writes `order` as `status` while this process owns it and it is
    /// pending; a pending write sets the lease to `lease` from now.
    async fn write(
        &self,
        order: &Order,
        status: OrderStatus,
        retryable: bool,
        lease: Option<Duration>,
    ) -> Result<(), OrderError> {
        let items = self.items_json(&order.items)?;
        let sql = format!(
            "UPDATE orders SET status = $2, retryable = $3, items = $4, total_minor = $5, \
             payment_id = $6, reservation_id = $7, failure_reason = $8, updated_ms = $9, \
             lease_until_ms = COALESCE({} + $12, lease_until_ms) \
             WHERE order_id = $1 AND status = 'pending' AND owner = $10",
            self.now_sql(11)
        );
        let written = with_conn!(self.db, p => self.db.bounded(
            query(&sql)
            .bind(&order.order_id)
            .bind(status.as_str())
            .bind(i64::from(retryable))
            .bind(&items)
            .bind(order.total.as_ref().map(Money::minor))
            .bind(&order.payment_id)
            .bind(&order.reservation_id)
            .bind(&order.failure_reason)
            .bind(self.clock.now_ms())
            .bind(&*self.owner)
            .bind(self.now_param())
            .bind(lease.map(crate::db::ms))
            .execute(&mut *p)
            ,
        ).await)?;
        if written != 1 {
            return Err(OrderError::LeaseLost(order.order_id.clone()));
        }
        Ok(())
    }

    /// Ends the run for `key`: a final order is kept for every retry; an
    /// error leaves the key retryable with the same order id. Waiters in
    /// this process get the outcome either way; when the database cannot
    /// take it, the order stays pending and the recovery pass finishes it
    /// once the lease has run out.
    pub async fn finish(&self, key: &str, order: &Order, outcome: Outcome) {
        let written = match &outcome {
            // Not ours any more: the new owner decides.
            Err(OrderError::LeaseLost(_)) => Ok(()),
            Ok(done) => self.write(done, done.status, false, None).await,
            Err(error) => {
                let mut failed = order.clone();
                failed.status = OrderStatus::Failed;
                failed.failure_reason = Some(error.to_string());
                self.write(&failed, OrderStatus::Failed, true, None).await
            }
        };
        if let Err(e) = written {
            tracing::error!(
                order.id = %order.order_id,
                error.message = %e,
                "could not record how the order ended; the recovery pass finishes it after its lease"
            );
        }
        self.release(key, outcome);
    }

    /// Ends this process's run of `key` without deciding the order: its
    /// progress is recorded and it stays PENDING with a lease of `after`,
    /// for the recovery pass to finish (its outcome is not known yet).
    /// Waiters here get `outcome`.
    pub async fn leave_to_recovery(
        &self,
        key: &str,
        order: &Order,
        after: Duration,
        outcome: Outcome,
    ) {
        let mut pending = order.clone();
        pending.status = OrderStatus::Pending;
        if let Err(e) = self
            .write(&pending, OrderStatus::Pending, false, Some(after))
            .await
        {
            tracing::warn!(
                order.id = %order.order_id,
                error.message = %e,
                "could not record the order's progress; the recovery pass finishes it after its lease"
            );
        }
        self.release(key, outcome);
    }

    /// Forgets this process's run of `key` and tells its waiters `outcome`.
    pub fn release(&self, key: &str, outcome: Outcome) {
        if let Some(tx) = self.running().remove(key) {
            tx.send_replace(Some(outcome));
        }
    }

    pub async fn get(&self, order_id: &str) -> Result<Order, OrderError> {
        if order_id.is_empty() {
            return Err(OrderError::MissingOrderId);
        }
        if order_id.len() > MAX_ID_LEN {
            return Err(OrderError::TooLong {
                field: "order_id",
                max: MAX_ID_LEN,
            });
        }
        self.db.check()?;
        self.read(&format!("{COLUMNS} WHERE order_id = $1"), order_id)
            .await?
            .map(|s| s.order)
            .ok_or_else(|| OrderError::UnknownOrder(order_id.to_owned()))
    }

    /// Takes over one pending order whose lease has run out (its run died
    /// with its process), if there is one: the recovery pass finishes it.
    pub async fn take_over_abandoned(&self) -> Result<Option<Recovered>, OrderError> {
        self.db.check()?;
        let sql = format!(
            "SELECT order_id FROM orders WHERE status = 'pending' AND lease_until_ms <= {} \
             ORDER BY lease_until_ms LIMIT 16",
            self.now_sql(1)
        );
        let rows = with_conn!(self.db, p => self.db.bounded(
            query(&sql).bind(self.now_param()).fetch_all(&mut *p),
        ).await?);
        let candidates = rows
            .iter()
            .map(|r| self.db.track(r.try_get::<String>("order_id")))
            .collect::<Result<Vec<_>, _>>()?;
        for order_id in candidates {
            let Some(stored) = self
                .read(&format!("{COLUMNS} WHERE order_id = $1"), &order_id)
                .await?
            else {
                continue;
            };
            let key = stored.order.idempotency_key.clone();
            if self.take_over(&order_id, ABANDONED, &key).await? {
                return Ok(Some(Recovered {
                    order: stored.order,
                    items: stored.request_items,
                }));
            }
        }
        Ok(None)
    }

    /// Gives a taken-over order back to the recovery pass in `after` (its
    /// fate could not be decided yet, e.g. a downstream service is down).
    pub async fn postpone(
        &self,
        key: &str,
        order_id: &str,
        after: Duration,
    ) -> Result<(), OrderError> {
        let sql = format!(
            "UPDATE orders SET lease_until_ms = {} + $3 \
             WHERE order_id = $1 AND status = 'pending' AND owner = $4",
            self.now_sql(2)
        );
        let r = with_conn!(self.db, p => self.db.bounded(
            query(&sql)
                .bind(order_id)
                .bind(self.now_param())
                .bind(crate::db::ms(after))
                .bind(&*self.owner)
                .execute(&mut *p)
                ,
        ).await.map(drop));
        self.release(
            key,
            Err(OrderError::Interrupted(format!(
                "order {order_id} is being recovered; retry with the same idempotency_key"
            ))),
        );
        r.map_err(Into::into)
    }

    /// Deletes one batch of orders (with their keys) finished before `cutoff_ms`.
    pub async fn delete_finished_before(&self, cutoff_ms: i64) -> Result<u64, DbError> {
        self.db.check()?;
        with_conn!(self.db, p => self.db.bounded(
            query(
                "DELETE FROM orders WHERE order_id IN (SELECT order_id FROM orders \
                 WHERE status <> 'pending' AND updated_ms < $1 LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(RETENTION_BATCH)
            .execute(&mut *p)
            ,
        ).await)
    }
}

/// A waiters' channel registered for a key before the database decided
/// whether this process runs it.
struct Slot {
    key: Option<String>,
}

impl Slot {
    fn keep(self) {}

    fn give_back(self, book: &OrderBook) {
        if let Some(key) = self.key {
            book.running().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests;

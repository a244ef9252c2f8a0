//! Stock and reservations in the service's database. Stock moves in one
//! conditional statement (`available >= qty`), so it never goes negative
//! however many orders race on however many replicas; a reservation is
//! all-or-nothing (one transaction), at most one is live per order (a unique
//! index), and one not committed within its TTL expires: the sweeper finds
//! due ones through an index on the deadline, and every use checks it too.
//!
//! A SKU's row holds only what is available. Units reserved are the lines
//! of the held reservations, summed when `GetStock` asks: so Reserve is the
//! one write on a SKU's row per order, and Commit writes only its
//! reservation. (On PostgreSQL a row lock lasts until the commit's WAL
//! flush; the row of a popular SKU is the queue every order waits in.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::catalog::CatalogItem;
use crate::db::{query, Clock, Database, DbError, RETENTION_BATCH};
use crate::limits::{has_control, MAX_ID_LEN, MAX_ITEMS, MAX_SKU_LEN};
use crate::money::Money;
use crate::{begin_write, with_conn};

/// Default time a reservation may stay uncommitted.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(30);
/// Due reservations expired per sweep.
const EXPIRY_BATCH: i64 = 200;
/// The sweeper looks at least this often (other replicas add reservations).
const EXPIRY_POLL: Duration = Duration::from_secs(1);

/// Why an inventory operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InventoryError {
    #[error("order_id is required")]
    MissingOrderId,
    #[error("reservation_id is required")]
    MissingReservationId,
    #[error("items must not be empty")]
    NoItems,
    #[error("{count} items in one reservation; at most {MAX_ITEMS}")]
    TooManyItems { count: usize },
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains a control character (NUL, newline, …); send printable text")]
    ControlCharacter { field: &'static str },
    #[error("item {sku:?}: quantity must be at least 1")]
    ZeroQuantity { sku: String },
    #[error("item {0:?} appears more than once; send one line per SKU")]
    DuplicateSku(String),
    #[error("unknown SKU {0:?}; GetStock lists the catalog")]
    UnknownSku(String),
    #[error("insufficient stock for {sku}: {requested} requested, {available} available")]
    Insufficient {
        sku: String,
        requested: u32,
        available: u32,
    },
    #[error("reservation {0:?} not found")]
    UnknownReservation(String),
    #[error("reservation {id} is {state:?} and cannot be {action}")]
    WrongState {
        id: String,
        state: ReservationState,
        action: &'static str,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Held,
    Committed,
    Released,
    Expired,
}

impl ReservationState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "held" => Self::Held,
            "committed" => Self::Committed,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// One reserved line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: Money,
}

/// A line as stored in `reservations.lines`.
#[derive(Serialize, Deserialize)]
struct StoredLine {
    sku: String,
    quantity: u32,
    price_minor: i64,
    currency: String,
}

/// What `reserve` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub order_id: String,
    pub items: Vec<ReservedItem>,
    pub state: ReservationState,
    /// Wall-clock expiry.
    pub expires_at: SystemTime,
}

/// Stock of one SKU as `GetStock` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: String,
    pub name: String,
    pub available: u32,
    pub reserved: u32,
    pub unit_price: Money,
}

/// Inventory over its database. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    db: Database,
    catalog: std::sync::Arc<Vec<CatalogItem>>,
    seeded: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ttl: Duration,
    currency: String,
    clock: Clock,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("ttl", &self.ttl)
            .field("db", &self.db)
            .finish()
    }
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Rolls back `$tx` and returns `$err` from the enclosing function.
macro_rules! bail {
    ($db:expr, $tx:expr, $err:expr) => {{
        // `$err` may rest on what other calls in the same group commit
        // wrote (SQLite): when that group fails, its error is the answer.
        $db.bounded($tx.rollback()).await?;
        return Err($err);
    }};
}

/// Gives the units of `$lines` back to stock (inside transaction `$tx`).
macro_rules! return_units {
    ($db:expr, $tx:expr, $lines:expr) => {
        for l in $lines {
            $db.bounded(
                query("UPDATE items SET available = available + $1 WHERE sku = $2")
                    .bind(i64::from(l.quantity))
                    .bind(&l.sku)
                    .execute(&mut $tx),
            )
            .await?;
        }
    };
}

/// Expires reservation `$id` if it is still held (inside `$tx`); evaluates
/// to the order id when it did.
macro_rules! expire_in_tx {
    ($self:expr, $tx:expr, $id:expr, $now:expr) => {{
        let row = $self
            .db
            .bounded(
                query(
                    "UPDATE reservations SET state = 'expired', finished_ms = $2 \
                 WHERE id = $1 AND state = 'held' RETURNING order_id, lines",
                )
                .bind($id)
                .bind($now)
                .fetch_optional(&mut $tx),
            )
            .await?;
        match row {
            Some(row) => {
                let lines = $self.lines($self.db.track(row.try_get::<String>("lines"))?)?;
                return_units!($self.db, $tx, &lines);
                Some($self.db.track(row.try_get::<String>("order_id"))?)
            }
            None => None,
        }
    }};
}

/// The state and order of reservation `$id` (inside `$tx`), or returns
/// `UnknownReservation` from the enclosing function.
macro_rules! state_in_tx {
    ($self:expr, $tx:expr, $id:expr) => {{
        let row = $self
            .db
            .bounded(
                query("SELECT state, order_id FROM reservations WHERE id = $1")
                    .bind($id)
                    .fetch_optional(&mut $tx),
            )
            .await?;
        let Some(row) = row else {
            bail!(
                $self.db,
                $tx,
                InventoryError::UnknownReservation($id.to_owned())
            );
        };
        let state: String = $self.db.track(row.try_get("state"))?;
        let state = ReservationState::parse(&state).ok_or_else(|| {
            $self
                .db
                .corrupt(format!("reservation {} state {state:?}", $id))
        })?;
        (state, $self.db.track(row.try_get::<String>("order_id"))?)
    }};
}

impl Inventory {
    /// Inventory over `db`, stocked from `catalog` (validated by the caller)
    /// the first time: SKUs already in the database keep their stock (a
    /// restart does not sell sold units again); name and price follow the
    /// catalog.
    pub fn new(db: Database, catalog: Vec<CatalogItem>, ttl: Duration, clock: Clock) -> Self {
        let currency = catalog
            .first()
            .map_or_else(String::new, |i| i.unit_price.currency().to_owned());
        Self {
            db,
            catalog: std::sync::Arc::new(catalog),
            seeded: std::sync::Arc::default(),
            ttl,
            currency,
            clock,
        }
    }

    /// The catalog's currency.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Puts catalog SKUs missing from the database in, once per process
    /// (again after a failure).
    pub async fn seed(&self) -> Result<(), DbError> {
        if self.seeded.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.db.check()?;
        with_conn!(self.db, p => {
            let mut tx = begin_write!(self.db, p)?;
            for item in self.catalog.iter() {
                self.db.bounded(
                    query(
                        "INSERT INTO items (sku, name, currency, price_minor, available) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (sku) DO UPDATE SET name = excluded.name, \
                         currency = excluded.currency, price_minor = excluded.price_minor",
                    )
                    .bind(&item.sku)
                    .bind(&item.name)
                    .bind(item.unit_price.currency())
                    .bind(item.unit_price.minor())
                    .bind(i64::from(item.stock))
                    .execute(&mut tx)
                    ,
                ).await?;
            }
            self.db.bounded(tx.commit()).await?;
        });
        self.seeded.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    async fn ready(&self) -> Result<(), InventoryError> {
        self.db.check()?;
        self.seed().await?;
        Ok(())
    }

    fn lines(&self, text: String) -> Result<Vec<StoredLine>, DbError> {
        serde_json::from_str(&text)
            .map_err(|e| self.db.corrupt(format!("reservation lines {text:?}: {e}")))
    }

    fn items(&self, lines: Vec<StoredLine>) -> Result<Vec<ReservedItem>, DbError> {
        lines
            .into_iter()
            .map(|l| {
                let unit_price = Money::new(&l.currency, l.price_minor)
                    .map_err(|e| self.db.corrupt(format!("price of {}: {e}", l.sku)))?;
                Ok(ReservedItem {
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price,
                })
            })
            .collect()
    }

    /// Reserves every line or none. Idempotent per order: while the order's
    /// reservation is held (and not past its deadline) or committed it is
    /// returned again; after it was released or expired, a new one is made.
    pub async fn reserve(
        &self,
        order_id: &str,
        lines: &[(String, u32)],
    ) -> Result<Reservation, InventoryError> {
        if order_id.is_empty() {
            return Err(InventoryError::MissingOrderId);
        }
        if order_id.len() > MAX_ID_LEN {
            return Err(InventoryError::TooLong {
                field: "order_id",
                max: MAX_ID_LEN,
            });
        }
        if has_control(order_id) {
            return Err(InventoryError::ControlCharacter { field: "order_id" });
        }
        if lines.is_empty() {
            return Err(InventoryError::NoItems);
        }
        if lines.len() > MAX_ITEMS {
            return Err(InventoryError::TooManyItems { count: lines.len() });
        }
        let mut seen = std::collections::HashSet::new();
        for (sku, qty) in lines {
            if sku.len() > MAX_SKU_LEN {
                return Err(InventoryError::TooLong {
                    field: "sku",
                    max: MAX_SKU_LEN,
                });
            }
            if has_control(sku) {
                return Err(InventoryError::ControlCharacter { field: "sku" });
            }
            if *qty == 0 {
                return Err(InventoryError::ZeroQuantity { sku: sku.clone() });
            }
            if !seen.insert(sku.as_str()) {
                return Err(InventoryError::DuplicateSku(sku.clone()));
            }
        }
        self.ready().await?;
        // Rows locked in one order by every replica: no deadlocks.
        let mut sorted: Vec<&(String, u32)> = lines.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        // Two attempts: the second reads the reservation a concurrent call
        // for the same order made first (the unique index refused ours).
        for _ in 0..2 {
            let now = self.clock.now_ms();
            let made: Option<Reservation> = with_conn!(self.db, p => {
                let mut tx = begin_write!(self.db, p)?;
                let existing = self.db.bounded(
                    query(
                        "SELECT id, state, lines, deadline_ms FROM reservations \
                         WHERE order_id = $1 AND state IN ('held', 'committed')",
                    )
                    .bind(order_id)
                    .fetch_optional(&mut tx)
                    ,
                ).await?;
                if let Some(row) = existing {
                    let id: String = self.db.track(row.try_get("id"))?;
                    let state: String = self.db.track(row.try_get("state"))?;
                    let deadline: i64 = self.db.track(row.try_get("deadline_ms"))?;
                    if state == "held" && deadline <= now {
                        // Checked on use: expired, though the sweeper has not got to it.
                        expire_in_tx!(self, tx, &id, now);
                    } else {
                        let lines = self.lines(self.db.track(row.try_get::<String>("lines"))?)?;
                        self.db.bounded(tx.commit()).await?;
                        return Ok(Reservation {
                            id,
                            order_id: order_id.to_owned(),
                            items: self.items(lines)?,
                            state: ReservationState::parse(&state).unwrap_or(ReservationState::Held),
                            expires_at: at(deadline),
                        });
                    }
                }
                let mut stored = Vec::with_capacity(sorted.len());
                for (sku, qty) in &sorted {
                    let taken = self.db.bounded(
                        query(
                            "UPDATE items SET available = available - $1 \
                             WHERE sku = $2 AND available >= $1 RETURNING price_minor, currency",
                        )
                        .bind(i64::from(*qty))
                        .bind(sku)
                        .fetch_optional(&mut tx)
                        ,
                    ).await?;
                    let Some(row) = taken else {
                        let level = self.db.bounded(
                            query("SELECT available FROM items WHERE sku = $1")
                                .bind(sku)
                                .fetch_optional(&mut tx)
                                ,
                        ).await?;
                        let err = match level {
                            None => InventoryError::UnknownSku(sku.clone()),
                            Some(r) => InventoryError::Insufficient {
                                sku: sku.clone(),
                                requested: *qty,
                                available: to_u32(self.db.track(r.try_get::<i64>("available"))?),
                            },
                        };
                        bail!(self.db, tx, err);
                    };
                    stored.push(StoredLine {
                        sku: sku.clone(),
                        quantity: *qty,
                        price_minor: self.db.track(row.try_get("price_minor"))?,
                        currency: self.db.track(row.try_get("currency"))?,
                    });
                }
                let id = crate::ids::new_id("res");
                let deadline = now.saturating_add(crate::db::ms(self.ttl));
                let json = serde_json::to_string(&stored)
                    .map_err(|e| self.db.corrupt(e.to_string()))?;
                let inserted = query(
                    "INSERT INTO reservations (id, order_id, state, lines, deadline_ms, created_ms) \
                     VALUES ($1, $2, 'held', $3, $4, $5)",
                )
                .bind(&id)
                .bind(order_id)
                .bind(&json)
                .bind(deadline)
                .bind(now)
                .execute(&mut tx);
                let inserted = self.db.within(inserted).await?;
                match inserted {
                    Err(e) if e.is_unique_violation() => {
                        self.db.bounded(tx.rollback()).await?;
                        None
                    }
                    other => {
                        self.db.track(other)?;
                        self.db.bounded(tx.commit()).await?;
                        Some(Reservation {
                            id,
                            order_id: order_id.to_owned(),
                            items: self.items(stored)?,
                            state: ReservationState::Held,
                            expires_at: at(deadline),
                        })
                    }
                }
            });
            if let Some(r) = made {
                return Ok(r);
            }
        }
        Err(self
            .db
            .query_error(format!(
                "reservation for order {order_id} kept conflicting; retry"
            ))
            .into())
    }

    fn check_id(id: &str) -> Result<(), InventoryError> {
        if id.is_empty() {
            return Err(InventoryError::MissingReservationId);
        }
        if id.len() > MAX_ID_LEN {
            return Err(InventoryError::TooLong {
                field: "reservation_id",
                max: MAX_ID_LEN,
            });
        }
        Ok(())
    }

    /// Makes a held reservation permanent. Idempotent. Returns the state and
    /// the order it was made for.
    pub async fn commit(&self, id: &str) -> Result<(ReservationState, String), InventoryError> {
        Self::check_id(id)?;
        self.ready().await?;
        let now = self.clock.now_ms();
        with_conn!(self.db, p => {
            let mut tx = begin_write!(self.db, p)?;
            let row = self.db.bounded(
                query(
                    "UPDATE reservations SET state = 'committed', finished_ms = $2 \
                     WHERE id = $1 AND state = 'held' AND deadline_ms > $2 RETURNING order_id",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&mut tx)
                ,
            ).await?;
            if let Some(row) = row {
                // The units left `available` at Reserve; committed, they
                // are no longer counted as reserved (not held). The SKU's
                // row is not touched.
                let order_id: String = self.db.track(row.try_get("order_id"))?;
                self.db.bounded(tx.commit()).await?;
                return Ok((ReservationState::Committed, order_id));
            }
            let (state, order_id) = state_in_tx!(self, tx, id);
            let state = match state {
                ReservationState::Committed => {
                    self.db.bounded(tx.commit()).await?;
                    return Ok((ReservationState::Committed, order_id));
                }
                ReservationState::Held => {
                    // Past its deadline (the UPDATE above refused it): expire it now.
                    expire_in_tx!(self, tx, id, now);
                    self.db.bounded(tx.commit()).await?;
                    ReservationState::Expired
                }
                other => {
                    self.db.bounded(tx.rollback()).await?;
                    other
                }
            };
            Err(InventoryError::WrongState {
                id: id.to_owned(),
                state,
                action: "committed",
            })
        })
    }

    /// Returns held units to stock. Idempotent on released or expired
    /// reservations; a committed one is refused.
    pub async fn release(&self, id: &str) -> Result<(ReservationState, String), InventoryError> {
        Self::check_id(id)?;
        self.ready().await?;
        let now = self.clock.now_ms();
        with_conn!(self.db, p => {
            let mut tx = begin_write!(self.db, p)?;
            let row = self.db.bounded(
                query(
                    "UPDATE reservations SET state = 'released', finished_ms = $2 \
                     WHERE id = $1 AND state = 'held' RETURNING order_id, lines",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&mut tx)
                ,
            ).await?;
            if let Some(row) = row {
                let order_id: String = self.db.track(row.try_get("order_id"))?;
                let lines = self.lines(self.db.track(row.try_get::<String>("lines"))?)?;
                return_units!(self.db, tx, &lines);
                self.db.bounded(tx.commit()).await?;
                return Ok((ReservationState::Released, order_id));
            }
            let (state, order_id) = state_in_tx!(self, tx, id);
            self.db.bounded(tx.rollback()).await?;
            match state {
                s @ (ReservationState::Released | ReservationState::Expired) => Ok((s, order_id)),
                state => Err(InventoryError::WrongState {
                    id: id.to_owned(),
                    state,
                    action: "released",
                }),
            }
        })
    }

    /// Stock of `skus`, or of the whole catalog when empty.
    pub async fn stock(&self, skus: &[String]) -> Result<Vec<StockLevel>, InventoryError> {
        if skus.len() > MAX_ITEMS {
            return Err(InventoryError::TooManyItems { count: skus.len() });
        }
        if skus.iter().any(|s| s.len() > MAX_SKU_LEN) {
            return Err(InventoryError::TooLong {
                field: "sku",
                max: MAX_SKU_LEN,
            });
        }
        self.ready().await?;
        // One statement, so one snapshot on either database: the SKUs'
        // rows, then (`lines` not empty) the lines of every held
        // reservation, which the partial index on held reservations finds.
        // Their count is the orders in flight plus those abandoned within
        // the TTL; history is never read.
        let wanted = if skus.is_empty() {
            String::new()
        } else {
            let marks: Vec<String> = (1..=skus.len()).map(|n| format!("${n}")).collect();
            format!("WHERE sku IN ({}) ", marks.join(", "))
        };
        let sql = format!(
            "SELECT sku, name, currency, price_minor, available, '' AS lines FROM items {wanted}\
             UNION ALL SELECT '', '', '', 0, 0, lines FROM reservations WHERE state = 'held'"
        );
        let rows = with_conn!(self.db, p => {
            let mut q = query(sql);
            for sku in skus {
                q = q.bind(sku);
            }
            self.db.bounded(q.fetch_all(&mut *p)).await?
        });
        let mut levels = std::collections::BTreeMap::new();
        let mut held: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for r in &rows {
            let lines: String = self.db.track(r.try_get("lines"))?;
            if !lines.is_empty() {
                for l in self.lines(lines)? {
                    *held.entry(l.sku).or_default() += u64::from(l.quantity);
                }
                continue;
            }
            let sku: String = self.db.track(r.try_get("sku"))?;
            let currency: String = self.db.track(r.try_get("currency"))?;
            let unit_price = Money::new(&currency, self.db.track(r.try_get("price_minor"))?)
                .map_err(|e| self.db.corrupt(format!("price of {sku}: {e}")))?;
            let level = StockLevel {
                name: self.db.track(r.try_get("name"))?,
                available: to_u32(self.db.track(r.try_get("available"))?),
                reserved: 0,
                unit_price,
                sku: sku.clone(),
            };
            levels.insert(sku, level);
        }
        for (sku, units) in held {
            if let Some(level) = levels.get_mut(&sku) {
                level.reserved = u32::try_from(units).unwrap_or(u32::MAX);
            }
        }
        if skus.is_empty() {
            // The whole catalog, by SKU.
            return Ok(levels.into_values().collect());
        }
        // The SKUs asked for, in the order asked.
        skus.iter()
            .map(|sku| {
                levels
                    .get(sku)
                    .cloned()
                    .ok_or_else(|| InventoryError::UnknownSku(sku.clone()))
            })
            .collect()
    }

    /// Expires up to one batch of held reservations past their deadline;
    /// returns (reservation id, order id) of each.
    pub async fn expire_due(&self) -> Result<Vec<(String, String)>, InventoryError> {
        self.ready().await?;
        let now = self.clock.now_ms();
        with_conn!(self.db, p => {
            let due = self.db.bounded(
                query(
                    "SELECT id FROM reservations WHERE state = 'held' AND deadline_ms <= $1 \
                     ORDER BY deadline_ms LIMIT $2",
                )
                .bind(now)
                .bind(EXPIRY_BATCH)
                .fetch_all(&mut *p),
            ).await?;
            let due = due
                .iter()
                .map(|r| self.db.track(r.try_get::<String>("id")))
                .collect::<Result<Vec<_>, _>>()?;
            let mut expired = Vec::with_capacity(due.len());
            for id in due {
                let mut tx = begin_write!(self.db, p)?;
                // Another replica may have got there first: then nothing happens.
                if let Some(order_id) = expire_in_tx!(self, tx, &id, now) {
                    expired.push((id, order_id));
                }
                self.db.bounded(tx.commit()).await?;
            }
            Ok(expired)
        })
    }

    /// When the next held reservation expires (ms), if any.
    pub async fn next_expiry_ms(&self) -> Result<Option<i64>, InventoryError> {
        self.db.check()?;
        let row = with_conn!(self.db, p => self.db.bounded(
            query("SELECT MIN(deadline_ms) AS next FROM reservations WHERE state = 'held'")
                .fetch_optional(&mut *p),
        ).await?);
        let next = match row {
            Some(r) => self.db.track(r.try_get::<Option<i64>>("next"))?,
            None => None,
        };
        Ok(next)
    }

    /// Deletes one batch of reservations finished before `cutoff_ms`.
    pub async fn delete_finished_before(&self, cutoff_ms: i64) -> Result<u64, DbError> {
        self.db.check()?;
        with_conn!(self.db, p => self.db.bounded(
            query(
                "DELETE FROM reservations WHERE id IN (SELECT id FROM reservations \
                 WHERE finished_ms IS NOT NULL AND finished_ms < $1 LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(RETENTION_BATCH)
            .execute(&mut *p)
            ,
        ).await)
    }
}

/// Expires reservations as their TTLs pass, until `shutdown`.
pub async fn run_expiry(inventory: Inventory, shutdown: CancellationToken) {
    loop {
        let mut wait = EXPIRY_POLL;
        if inventory.database().is_up() {
            match inventory.expire_due().await {
                Ok(expired) => {
                    let full = expired.len() >= usize::try_from(EXPIRY_BATCH).unwrap_or(usize::MAX);
                    for (id, order_id) in &expired {
                        tracing::warn!(
                            order.id = %order_id,
                            reservation.id = %id,
                            "reservation expired uncommitted; units returned to stock"
                        );
                    }
                    if full {
                        wait = Duration::ZERO;
                    } else if let Ok(Some(next)) = inventory.next_expiry_ms().await {
                        let until = next.saturating_sub(inventory.clock.now_ms()).max(0);
                        wait = wait.min(Duration::from_millis(u64::try_from(until).unwrap_or(0)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error.message = %e, "expiring reservations failed; trying again")
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::catalog;

    async fn inv(stock: u32) -> (Inventory, Clock, tempfile::TempDir) {
        let cat = vec![
            CatalogItem {
                sku: "a".into(),
                name: "A".into(),
                unit_price: Money::new("USD", 100).unwrap(),
                stock,
            },
            CatalogItem {
                sku: "b".into(),
                name: "B".into(),
                unit_price: Money::new("USD", 7).unwrap(),
                stock,
            },
        ];
        catalog::validate(&cat).unwrap();
        let (db, dir) = crate::db::test_sqlite("inventory", crate::inventory::MIGRATIONS).await;
        let clock = Clock::manual(1_000_000);
        (
            Inventory::new(db, cat, Duration::from_secs(30), clock.clone()),
            clock,
            dir,
        )
    }

    async fn avail(i: &Inventory, sku: &str) -> (u32, u32) {
        let s = &i.stock(&[sku.to_owned()]).await.unwrap()[0];
        (s.available, s.reserved)
    }

    #[tokio::test]
    async fn reserve_commit_release_lifecycle() {
        let (i, _, _dir) = inv(10).await;
        let r = i
            .reserve("o1", &[("a".into(), 3), ("b".into(), 1)])
            .await
            .unwrap();
        assert_eq!(avail(&i, "a").await, (7, 3));
        assert_eq!(
            i.reserve("o1", &[("a".into(), 3)]).await.unwrap().id,
            r.id,
            "idempotent"
        );
        assert_eq!(avail(&i, "a").await, (7, 3));
        assert_eq!(
            i.commit(&r.id).await.unwrap().0,
            ReservationState::Committed
        );
        assert_eq!(
            i.commit(&r.id).await.unwrap(),
            (ReservationState::Committed, "o1".to_owned())
        );
        assert_eq!(avail(&i, "a").await, (7, 0));
        assert!(matches!(
            i.release(&r.id).await,
            Err(InventoryError::WrongState { .. })
        ));

        let r2 = i.reserve("o2", &[("a".into(), 2)]).await.unwrap();
        assert_eq!(
            i.release(&r2.id).await.unwrap().0,
            ReservationState::Released
        );
        assert_eq!(
            i.release(&r2.id).await.unwrap().0,
            ReservationState::Released
        );
        assert_eq!(avail(&i, "a").await, (7, 0));
        assert!(matches!(
            i.commit(&r2.id).await,
            Err(InventoryError::WrongState { .. })
        ));
        // A released order may reserve again.
        let r3 = i.reserve("o2", &[("a".into(), 1)]).await.unwrap();
        assert_ne!(r3.id, r2.id);
    }

    /// (SKU, available, reserved) of each level, in the order given.
    fn counts(levels: &[StockLevel]) -> Vec<(&str, u32, u32)> {
        levels
            .iter()
            .map(|s| (s.sku.as_str(), s.available, s.reserved))
            .collect()
    }

    #[tokio::test]
    async fn reserved_is_the_sum_of_held_lines_per_sku() {
        let (i, clock, _dir) = inv(10).await;
        let r1 = i
            .reserve("o1", &[("a".into(), 2), ("b".into(), 1)])
            .await
            .unwrap();
        i.reserve("o2", &[("a".into(), 3)]).await.unwrap();
        let r3 = i.reserve("o3", &[("b".into(), 4)]).await.unwrap();
        let all = i.stock(&[]).await.unwrap();
        assert_eq!(
            counts(&all),
            [("a", 5, 5), ("b", 5, 5)],
            "the catalog by SKU"
        );

        // Committed: sold, no longer reserved. Released: back to available.
        i.commit(&r1.id).await.unwrap();
        i.release(&r3.id).await.unwrap();
        let asked = i.stock(&["b".into(), "a".into()]).await.unwrap();
        assert_eq!(
            counts(&asked),
            [("b", 9, 0), ("a", 5, 3)],
            "in the order asked"
        );
        assert_eq!(asked[0].name, "B");
        assert_eq!(asked[1].unit_price, Money::new("USD", 100).unwrap());

        // Expired by the sweeper: back to available.
        clock.advance(Duration::from_secs(31));
        assert_eq!(i.expire_due().await.unwrap().len(), 1);
        assert_eq!(avail(&i, "a").await, (8, 0));
    }

    #[tokio::test]
    async fn all_or_nothing_and_clear_refusals() {
        let (i, _, _dir) = inv(2).await;
        let e = i
            .reserve("o", &[("a".into(), 1), ("b".into(), 5)])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "insufficient stock for b: 5 requested, 2 available"
        );
        assert_eq!(avail(&i, "a").await, (2, 0), "nothing held after a refusal");
        assert!(matches!(
            i.reserve("o", &[]).await,
            Err(InventoryError::NoItems)
        ));
        assert!(matches!(
            i.reserve("o", &[("a".into(), 0)]).await,
            Err(InventoryError::ZeroQuantity { .. })
        ));
        assert!(matches!(
            i.reserve("o", &[("zz".into(), 1)]).await,
            Err(InventoryError::UnknownSku(_))
        ));
        assert!(matches!(
            i.reserve("o", &[("a".into(), 1), ("a".into(), 1)]).await,
            Err(InventoryError::DuplicateSku(_))
        ));
        assert!(matches!(
            i.reserve("", &[("a".into(), 1)]).await,
            Err(InventoryError::MissingOrderId)
        ));
        let many: Vec<(String, u32)> = (0..=MAX_ITEMS).map(|n| (format!("s{n}"), 1)).collect();
        assert!(matches!(
            i.reserve("o", &many).await,
            Err(InventoryError::TooManyItems { .. })
        ));
        assert!(matches!(
            i.reserve("o", &[("x".repeat(MAX_SKU_LEN + 1), 1)]).await,
            Err(InventoryError::TooLong { field: "sku", .. })
        ));
        assert!(matches!(
            i.commit("nope").await,
            Err(InventoryError::UnknownReservation(_))
        ));
        assert!(matches!(
            i.stock(&["zz".into()]).await,
            Err(InventoryError::UnknownSku(_))
        ));
    }

    #[tokio::test]
    async fn concurrent_reservations_never_oversell() {
        let (i, _, _dir) = inv(50).await;
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                let i = i.clone();
                tokio::spawn(async move {
                    i.reserve(&format!("o{n}"), &[("a".into(), 1)])
                        .await
                        .is_ok()
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 50);
        assert_eq!(avail(&i, "a").await, (0, 50));
    }

    /// The same race where it can happen: two replicas (two pools of
    /// several connections each) on the PostgreSQL server of
    /// `MESHWATCH_TEST_POSTGRES`, when set. (On SQLite the one-connection
    /// pool serializes every reservation.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reservations_never_oversell_on_postgres_replicas() {
        use sqlx::Connection;
        let Ok(url) = std::env::var("MESHWATCH_TEST_POSTGRES") else {
            return;
        };
        let name = format!("t_inv_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let mut admin = sqlx::PgConnection::connect(url.trim()).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = url.trim().rsplit_once('/').unwrap().0;
        let target = crate::db::DbTarget::Postgres {
            url: format!("{base}/{name}"),
            max_connections: 8,
        };
        let cat = vec![CatalogItem {
            sku: "a".into(),
            name: "A".into(),
            unit_price: Money::new("USD", 100).unwrap(),
            stock: 50,
        }];
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let db = Database::open(
                "inventory",
                &target,
                crate::inventory::MIGRATIONS,
                meshwatch_runtime::Readiness::default(),
            )
            .await
            .unwrap();
            let i = Inventory::new(db, cat.clone(), Duration::from_secs(30), Clock::System);
            i.seed().await.unwrap();
            replicas.push(i);
        }
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                let i = replicas[n % 2].clone();
                tokio::spawn(async move {
                    i.reserve(&format!("o{n}"), &[("a".into(), 1)])
                        .await
                        .is_ok()
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 50);
        assert_eq!(avail(&replicas[0], "a").await, (0, 50));
        assert_eq!(avail(&replicas[1], "a").await, (0, 50));
        for i in &replicas {
            i.database().close().await;
        }
    }

    #[tokio::test]
    async fn a_restarted_inventory_keeps_its_stock() {
        let (i, clock, dir) = inv(10).await;
        let r = i.reserve("o1", &[("a".into(), 4)]).await.unwrap();
        i.commit(&r.id).await.unwrap();
        i.database().close().await;
        // The same file opened again, with the catalog's original stock.
        let db = crate::db::Database::open(
            "inventory",
            &crate::db::DbTarget::Sqlite {
                data_dir: dir.path().to_owned(),
            },
            crate::inventory::MIGRATIONS,
            meshwatch_runtime::Readiness::default(),
        )
        .await
        .unwrap();
        let again = Inventory::new(db, (*i.catalog).clone(), Duration::from_secs(30), clock);
        assert_eq!(
            avail(&again, "a").await,
            (6, 0),
            "sold units are not sold again"
        );
        assert_eq!(
            again.commit(&r.id).await.unwrap().0,
            ReservationState::Committed,
            "its reservations are still known"
        );
    }

    #[tokio::test]
    async fn a_database_from_before_migration_2_keeps_its_holds() {
        // Written by a build of schema 1: `reserved` counted on the row.
        let dir = tempfile::tempdir().unwrap();
        let target = crate::db::DbTarget::Sqlite {
            data_dir: dir.path().to_owned(),
        };
        let first = crate::db::Migrations(&crate::inventory::MIGRATIONS.0[..1]);
        let readiness = meshwatch_runtime::Readiness::default;
        let old = crate::db::Database::open("inventory", &target, first, readiness())
            .await
            .unwrap();
        let written: Result<(), DbError> = async {
            with_conn!(old, p => {
                query(
                    "INSERT INTO items (sku, name, currency, price_minor, available, reserved) \
                     VALUES ('a', 'A', 'USD', 100, 7, 3)",
                )
                .execute(&mut *p)
                .await
                .unwrap();
                query(
                    "INSERT INTO reservations (id, order_id, state, lines, deadline_ms, created_ms) \
                     VALUES ('res-old', 'o1', 'held', \
                     '[{\"sku\":\"a\",\"quantity\":3,\"price_minor\":100,\"currency\":\"USD\"}]', \
                     2000000, 1000000)",
                )
                .execute(&mut *p)
                .await
                .unwrap();
            });
            Ok(())
        }
        .await;
        written.unwrap();
        old.close().await;

        let db = crate::db::Database::open(
            "inventory",
            &target,
            crate::inventory::MIGRATIONS,
            readiness(),
        )
        .await
        .unwrap();
        let cat = vec![CatalogItem {
            sku: "a".into(),
            name: "A".into(),
            unit_price: Money::new("USD", 100).unwrap(),
            stock: 10,
        }];
        let i = Inventory::new(db, cat, Duration::from_secs(30), Clock::manual(1_000_000));
        assert_eq!(avail(&i, "a").await, (7, 3), "the hold counts as before");
        i.commit("res-old").await.unwrap();
        assert_eq!(avail(&i, "a").await, (7, 0), "committed: sold");
    }

    #[tokio::test]
    async fn uncommitted_reservations_expire_by_sweep_and_on_use() {
        let (i, clock, _dir) = inv(5).await;
        let swept = i.reserve("o1", &[("a".into(), 2)]).await.unwrap();
        let used = i.reserve("o2", &[("a".into(), 2)]).await.unwrap();
        assert_eq!(
            i.next_expiry_ms().await.unwrap(),
            Some(clock.now_ms() + 30_000)
        );
        clock.advance(Duration::from_secs(29));
        assert!(
            i.expire_due().await.unwrap().is_empty(),
            "still held before the TTL"
        );
        assert_eq!(avail(&i, "a").await, (1, 4));
        clock.advance(Duration::from_secs(2));
        // Checked on use, before any sweep: a late commit is refused and
        // the units come back.
        assert!(matches!(
            i.commit(&used.id).await,
            Err(InventoryError::WrongState {
                state: ReservationState::Expired,
                ..
            })
        ));
        assert_eq!(avail(&i, "a").await, (3, 2));
        // The sweep gets the other one.
        assert_eq!(
            i.expire_due().await.unwrap(),
            vec![(swept.id.clone(), "o1".to_owned())]
        );
        assert_eq!(avail(&i, "a").await, (5, 0));
        assert_eq!(
            i.release(&swept.id).await.unwrap().0,
            ReservationState::Expired
        );
        assert_eq!(i.next_expiry_ms().await.unwrap(), None);
        // An expired order may reserve again.
        assert_eq!(
            i.reserve("o1", &[("a".into(), 1)]).await.unwrap().state,
            ReservationState::Held
        );
    }

    #[tokio::test]
    async fn retention_deletes_finished_reservations_only() {
        let (i, clock, _dir) = inv(5).await;
        let done = i.reserve("o1", &[("a".into(), 1)]).await.unwrap();
        i.commit(&done.id).await.unwrap();
        let held = i.reserve("o2", &[("a".into(), 1)]).await.unwrap();
        clock.advance(Duration::from_secs(5));
        assert_eq!(i.delete_finished_before(clock.now_ms()).await.unwrap(), 1);
        assert!(matches!(
            i.commit(&done.id).await,
            Err(InventoryError::UnknownReservation(_))
        ));
        assert_eq!(
            i.commit(&held.id).await.unwrap().0,
            ReservationState::Committed
        );
    }
}

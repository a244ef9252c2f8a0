//! Stock and reservations. All-or-nothing reservations under one lock, so
//! stock never goes negative however many orders race; a reservation not
//! committed within its TTL expires and its units return to stock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::catalog::CatalogItem;
use crate::money::Money;

/// Default time a reservation may stay uncommitted.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(30);

/// Why an inventory operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("order_id is required")]
    MissingOrderId,
    #[error("reservation_id is required")]
    MissingReservationId,
    #[error("items must not be empty")]
    NoItems,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Held,
    Committed,
    Released,
    Expired,
}

/// One reserved line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: Money,
}

/// What `reserve` returns and `get` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub order_id: String,
    pub items: Vec<ReservedItem>,
    pub state: ReservationState,
    /// Wall-clock expiry, for callers.
    pub expires_at: SystemTime,
    deadline: Instant,
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

struct Item {
    name: String,
    unit_price: Money,
    available: u32,
    reserved: u32,
}

#[derive(Default)]
struct State {
    items: BTreeMap<String, Item>,
    reservations: HashMap<String, Reservation>,
    /// order id → its current reservation id.
    by_order: HashMap<String, String>,
    next_id: u64,
}

/// The inventory of one process.
pub struct Inventory {
    state: Mutex<State>,
    ttl: Duration,
    currency: String,
    /// Random per process, so a reservation id held by an order's saga
    /// across an inventory restart names nothing rather than another
    /// order's reservation (the counter starts again at 1).
    id_prefix: u32,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory").field("ttl", &self.ttl).finish()
    }
}

impl Inventory {
    /// An inventory stocked from `catalog` (validated by the caller).
    pub fn new(catalog: Vec<CatalogItem>, ttl: Duration) -> Self {
        let currency = catalog
            .first()
            .map_or_else(String::new, |i| i.unit_price.currency().to_owned());
        let items = catalog
            .into_iter()
            .map(|c| {
                (
                    c.sku,
                    Item {
                        name: c.name,
                        unit_price: c.unit_price,
                        available: c.stock,
                        reserved: 0,
                    },
                )
            })
            .collect();
        Self {
            state: Mutex::new(State {
                items,
                ..State::default()
            }),
            ttl,
            currency,
            id_prefix: rand::random(),
        }
    }

    /// The catalog's currency.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves every line or none. Idempotent per order: while the order's
    /// reservation is held or committed it is returned again; after it was
    /// released or expired, a new one is made.
    pub fn reserve(
        &self,
        order_id: &str,
        lines: &[(String, u32)],
    ) -> Result<Reservation, InventoryError> {
        if order_id.is_empty() {
            return Err(InventoryError::MissingOrderId);
        }
        if lines.is_empty() {
            return Err(InventoryError::NoItems);
        }
        let mut seen = std::collections::HashSet::new();
        for (sku, qty) in lines {
            if *qty == 0 {
                return Err(InventoryError::ZeroQuantity { sku: sku.clone() });
            }
            if !seen.insert(sku.as_str()) {
                return Err(InventoryError::DuplicateSku(sku.clone()));
            }
        }
        let now = Instant::now();
        let mut st = self.lock();
        expire_due(&mut st, now);
        if let Some(existing) = st
            .by_order
            .get(order_id)
            .and_then(|id| st.reservations.get(id))
        {
            if matches!(
                existing.state,
                ReservationState::Held | ReservationState::Committed
            ) {
                return Ok(existing.clone());
            }
        }
        let mut reserved = Vec::with_capacity(lines.len());
        for (sku, qty) in lines {
            let item = st
                .items
                .get(sku)
                .ok_or_else(|| InventoryError::UnknownSku(sku.clone()))?;
            if item.available < *qty {
                return Err(InventoryError::Insufficient {
                    sku: sku.clone(),
                    requested: *qty,
                    available: item.available,
                });
            }
            reserved.push(ReservedItem {
                sku: sku.clone(),
                quantity: *qty,
                unit_price: item.unit_price.clone(),
            });
        }
        for r in &reserved {
            if let Some(item) = st.items.get_mut(&r.sku) {
                item.available -= r.quantity;
                item.reserved += r.quantity;
            }
        }
        st.next_id += 1;
        let id = format!("res-{:08x}-{:08}", self.id_prefix, st.next_id);
        let reservation = Reservation {
            id: id.clone(),
            order_id: order_id.to_owned(),
            items: reserved,
            state: ReservationState::Held,
            expires_at: SystemTime::now() + self.ttl,
            deadline: now + self.ttl,
        };
        st.reservations.insert(id.clone(), reservation.clone());
        st.by_order.insert(order_id.to_owned(), id);
        Ok(reservation)
    }

    /// Makes a held reservation permanent. Idempotent.
    pub fn commit(&self, id: &str) -> Result<ReservationState, InventoryError> {
        let mut st = self.lock();
        expire_due(&mut st, Instant::now());
        let r = reservation_mut(&mut st, id)?;
        match r.state {
            ReservationState::Committed => Ok(ReservationState::Committed),
            ReservationState::Held => {
                r.state = ReservationState::Committed;
                let items = r.items.clone();
                for line in items {
                    if let Some(item) = st.items.get_mut(&line.sku) {
                        item.reserved -= line.quantity;
                    }
                }
                Ok(ReservationState::Committed)
            }
            state => Err(InventoryError::WrongState {
                id: id.to_owned(),
                state,
                action: "committed",
            }),
        }
    }

    /// Returns held units to stock. Idempotent on released or expired
    /// reservations; a committed one is refused.
    pub fn release(&self, id: &str) -> Result<ReservationState, InventoryError> {
        let mut st = self.lock();
        expire_due(&mut st, Instant::now());
        let r = reservation_mut(&mut st, id)?;
        match r.state {
            ReservationState::Held => {
                r.state = ReservationState::Released;
                let items = r.items.clone();
                return_units(&mut st, &items);
                Ok(ReservationState::Released)
            }
            s @ (ReservationState::Released | ReservationState::Expired) => Ok(s),
            state => Err(InventoryError::WrongState {
                id: id.to_owned(),
                state,
                action: "released",
            }),
        }
    }

    /// The order a reservation was made for (for log lines).
    pub fn order_of(&self, reservation_id: &str) -> Option<String> {
        self.lock()
            .reservations
            .get(reservation_id)
            .map(|r| r.order_id.clone())
    }

    /// Stock of `skus`, or of the whole catalog when empty.
    pub fn stock(&self, skus: &[String]) -> Result<Vec<StockLevel>, InventoryError> {
        let mut st = self.lock();
        expire_due(&mut st, Instant::now());
        let level = |sku: &str, i: &Item| StockLevel {
            sku: sku.to_owned(),
            name: i.name.clone(),
            available: i.available,
            reserved: i.reserved,
            unit_price: i.unit_price.clone(),
        };
        if skus.is_empty() {
            return Ok(st.items.iter().map(|(s, i)| level(s, i)).collect());
        }
        skus.iter()
            .map(|s| {
                st.items
                    .get(s)
                    .map(|i| level(s, i))
                    .ok_or_else(|| InventoryError::UnknownSku(s.clone()))
            })
            .collect()
    }

    /// Expires every held reservation past its TTL; returns them.
    pub fn expire(&self) -> Vec<Reservation> {
        expire_due(&mut self.lock(), Instant::now())
    }

    /// When the next held reservation expires, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lock()
            .reservations
            .values()
            .filter(|r| r.state == ReservationState::Held)
            .map(|r| r.deadline)
            .min()
    }
}

fn reservation_mut<'a>(st: &'a mut State, id: &str) -> Result<&'a mut Reservation, InventoryError> {
    if id.is_empty() {
        return Err(InventoryError::MissingReservationId);
    }
    st.reservations
        .get_mut(id)
        .ok_or_else(|| InventoryError::UnknownReservation(id.to_owned()))
}

fn return_units(st: &mut State, items: &[ReservedItem]) {
    for line in items {
        if let Some(item) = st.items.get_mut(&line.sku) {
            item.reserved -= line.quantity;
            item.available += line.quantity;
        }
    }
}

fn expire_due(st: &mut State, now: Instant) -> Vec<Reservation> {
    let due: Vec<String> = st
        .reservations
        .values()
        .filter(|r| r.state == ReservationState::Held && r.deadline <= now)
        .map(|r| r.id.clone())
        .collect();
    let mut expired = Vec::with_capacity(due.len());
    for id in due {
        if let Some(r) = st.reservations.get_mut(&id) {
            r.state = ReservationState::Expired;
            let snapshot = r.clone();
            return_units(st, &snapshot.items);
            expired.push(snapshot);
        }
    }
    expired
}

/// Expires reservations as their TTLs pass, until `shutdown`.
pub async fn run_expiry(
    inventory: std::sync::Arc<Inventory>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        // New reservations expire no earlier than one TTL from now, so
        // waking at least once per TTL never misses one by more than a TTL.
        let wake = inventory
            .next_expiry()
            .unwrap_or_else(|| Instant::now() + inventory.ttl());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
        for r in inventory.expire() {
            tracing::warn!(
                order.id = %r.order_id,
                reservation.id = %r.id,
                "reservation expired uncommitted; units returned to stock"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::inventory::catalog;

    fn inv(stock: u32) -> Inventory {
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
        Inventory::new(cat, Duration::from_secs(30))
    }

    fn avail(i: &Inventory, sku: &str) -> (u32, u32) {
        let s = &i.stock(&[sku.to_owned()]).unwrap()[0];
        (s.available, s.reserved)
    }

    #[test]
    fn reserve_commit_release_lifecycle() {
        let i = inv(10);
        let r = i
            .reserve("o1", &[("a".into(), 3), ("b".into(), 1)])
            .unwrap();
        assert_eq!(avail(&i, "a"), (7, 3));
        assert_eq!(
            i.reserve("o1", &[("a".into(), 3)]).unwrap().id,
            r.id,
            "idempotent"
        );
        assert_eq!(avail(&i, "a"), (7, 3));
        assert_eq!(i.commit(&r.id).unwrap(), ReservationState::Committed);
        assert_eq!(i.commit(&r.id).unwrap(), ReservationState::Committed);
        assert_eq!(avail(&i, "a"), (7, 0));
        assert!(matches!(
            i.release(&r.id),
            Err(InventoryError::WrongState { .. })
        ));

        let r2 = i.reserve("o2", &[("a".into(), 2)]).unwrap();
        assert_eq!(i.release(&r2.id).unwrap(), ReservationState::Released);
        assert_eq!(i.release(&r2.id).unwrap(), ReservationState::Released);
        assert_eq!(avail(&i, "a"), (7, 0));
        assert!(matches!(
            i.commit(&r2.id),
            Err(InventoryError::WrongState { .. })
        ));
        // A released order may reserve again.
        let r3 = i.reserve("o2", &[("a".into(), 1)]).unwrap();
        assert_ne!(r3.id, r2.id);
    }

    #[test]
    fn reservation_ids_are_not_reused_by_a_restarted_inventory() {
        // A saga may hold an id across an inventory restart: committing or
        // releasing it must not touch another order's reservation.
        let before = inv(10).reserve("o1", &[("a".into(), 1)]).unwrap();
        let restarted = inv(10);
        let other = restarted.reserve("o2", &[("a".into(), 1)]).unwrap();
        assert_ne!(before.id, other.id);
        assert!(matches!(
            restarted.commit(&before.id),
            Err(InventoryError::UnknownReservation(_))
        ));
    }

    #[test]
    fn all_or_nothing_and_clear_refusals() {
        let i = inv(2);
        let e = i
            .reserve("o", &[("a".into(), 1), ("b".into(), 5)])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "insufficient stock for b: 5 requested, 2 available"
        );
        assert_eq!(avail(&i, "a"), (2, 0), "nothing held after a refusal");
        assert_eq!(i.reserve("o", &[]).unwrap_err(), InventoryError::NoItems);
        assert!(matches!(
            i.reserve("o", &[("a".into(), 0)]),
            Err(InventoryError::ZeroQuantity { .. })
        ));
        assert!(matches!(
            i.reserve("o", &[("zz".into(), 1)]),
            Err(InventoryError::UnknownSku(_))
        ));
        assert!(matches!(
            i.reserve("o", &[("a".into(), 1), ("a".into(), 1)]),
            Err(InventoryError::DuplicateSku(_))
        ));
        assert_eq!(
            i.reserve("", &[("a".into(), 1)]).unwrap_err(),
            InventoryError::MissingOrderId
        );
        assert!(matches!(
            i.commit("nope"),
            Err(InventoryError::UnknownReservation(_))
        ));
        assert!(matches!(
            i.stock(&["zz".into()]),
            Err(InventoryError::UnknownSku(_))
        ));
    }

    #[test]
    fn concurrent_reservations_never_oversell() {
        let i = Arc::new(inv(50));
        let handles: Vec<_> = (0..200)
            .map(|n| {
                let i = Arc::clone(&i);
                std::thread::spawn(move || i.reserve(&format!("o{n}"), &[("a".into(), 1)]).is_ok())
            })
            .collect();
        let ok = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(ok, 50);
        assert_eq!(avail(&i, "a"), (0, 50));
    }

    #[tokio::test(start_paused = true)]
    async fn uncommitted_reservations_expire_on_time() {
        let i = Arc::new(inv(5));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run_expiry(Arc::clone(&i), shutdown.clone()));
        let r = i.reserve("o", &[("a".into(), 4)]).unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        tokio::task::yield_now().await;
        assert_eq!(avail(&i, "a"), (1, 4), "still held before the TTL");
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert_eq!(avail(&i, "a"), (5, 0), "returned after the TTL");
        assert!(matches!(
            i.commit(&r.id),
            Err(InventoryError::WrongState {
                state: ReservationState::Expired,
                ..
            })
        ));
        assert_eq!(i.release(&r.id).unwrap(), ReservationState::Expired);
        shutdown.cancel();
        task.await.unwrap();
    }
}

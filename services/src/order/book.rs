//! Orders and their idempotency keys. A key is claimed by the first request;
//! a concurrent retry waits for that request's outcome, a later retry gets
//! the final order, and a run that ended in an error may be retried with the
//! same order id (every downstream step is idempotent per order id).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;

use super::ports::CallError;
use crate::money::{is_currency_code, Money};

/// Longest idempotency key and customer id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Why an order was refused or failed. Validation errors come before
/// anything happened; the others end a saga run, which may be retried with
/// the same idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("idempotency_key is required (1 to {MAX_ID_LEN} characters); reuse it when you retry")]
    MissingKey,
    #[error("{field} is longer than {MAX_ID_LEN} characters")]
    TooLong { field: &'static str },
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
            });
        }
        if customer_id.is_empty() {
            return Err(OrderError::MissingCustomer);
        }
        if customer_id.len() > MAX_ID_LEN {
            return Err(OrderError::TooLong {
                field: "customer_id",
            });
        }
        if items.is_empty() {
            return Err(OrderError::NoItems);
        }
        let mut seen = std::collections::HashSet::new();
        for (index, (sku, qty)) in items.iter().enumerate() {
            if sku.is_empty() {
                return Err(OrderError::EmptySku { index });
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    PaymentDeclined,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: Money,
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
    /// Another request with the same key is running it: wait for this.
    Wait(watch::Receiver<Option<Outcome>>, Order),
    /// Already decided.
    Done(Order),
}

enum Entry {
    Running {
        request: NewOrder,
        order_id: String,
        done: watch::Sender<Option<Outcome>>,
    },
    Done {
        request: NewOrder,
        order_id: String,
    },
    /// The last run ended in an error; a retry runs again with this id.
    Retryable {
        request: NewOrder,
        order_id: String,
    },
}

impl Entry {
    fn request(&self) -> &NewOrder {
        match self {
            Entry::Running { request, .. }
            | Entry::Done { request, .. }
            | Entry::Retryable { request, .. } => request,
        }
    }
}

#[derive(Default)]
struct State {
    by_key: HashMap<String, Entry>,
    orders: HashMap<String, Order>,
}

/// The orders of one process.
#[derive(Default)]
pub struct OrderBook {
    state: Mutex<State>,
}

impl std::fmt::Debug for OrderBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderBook")
    }
}

impl OrderBook {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `request`'s idempotency key for a run, or says how to answer
    /// a retry. `trace_id` is recorded on a new order.
    pub fn claim(&self, request: NewOrder, trace_id: &str) -> Result<Claim, OrderError> {
        let mut st = self.lock();
        let key = request.idempotency_key.clone();
        if let Some(entry) = st.by_key.get(&key) {
            if entry.request() != &request {
                return Err(OrderError::KeyReused(key));
            }
        }
        match st.by_key.remove(&key) {
            Some(Entry::Running {
                request,
                order_id,
                done,
            }) => {
                let rx = done.subscribe();
                let snapshot = st.orders.get(&order_id).cloned();
                st.by_key.insert(
                    key,
                    Entry::Running {
                        request,
                        order_id,
                        done,
                    },
                );
                match snapshot {
                    Some(order) => Ok(Claim::Wait(rx, order)),
                    None => Err(OrderError::UnknownOrder(String::new())),
                }
            }
            Some(Entry::Done { request, order_id }) => {
                let order = st.orders.get(&order_id).cloned();
                st.by_key.insert(key, Entry::Done { request, order_id });
                order
                    .map(Claim::Done)
                    .ok_or(OrderError::UnknownOrder(String::new()))
            }
            Some(Entry::Retryable { request, order_id }) => {
                let order = st.orders.get(&order_id).cloned().map(|mut o| {
                    o.status = OrderStatus::Pending;
                    o.failure_reason = None;
                    o
                });
                let (done, _) = watch::channel(None);
                st.by_key.insert(
                    key,
                    Entry::Running {
                        request,
                        order_id: order_id.clone(),
                        done,
                    },
                );
                let order = order.ok_or(OrderError::UnknownOrder(order_id))?;
                st.orders.insert(order.order_id.clone(), order.clone());
                Ok(Claim::Run(order))
            }
            None => {
                let order = Order {
                    order_id: format!("ord-{:016x}", rand::random::<u64>()),
                    idempotency_key: key.clone(),
                    customer_id: request.customer_id.clone(),
                    items: Vec::new(),
                    total: None,
                    status: OrderStatus::Pending,
                    payment_id: None,
                    reservation_id: None,
                    failure_reason: None,
                    created_at: SystemTime::now(),
                    trace_id: trace_id.to_owned(),
                };
                let (done, _) = watch::channel(None);
                st.by_key.insert(
                    key,
                    Entry::Running {
                        request,
                        order_id: order.order_id.clone(),
                        done,
                    },
                );
                st.orders.insert(order.order_id.clone(), order.clone());
                Ok(Claim::Run(order))
            }
        }
    }

    /// Records progress of a running order (seen by `GetOrder` and waiters).
    pub fn update(&self, order: &Order) {
        self.lock()
            .orders
            .insert(order.order_id.clone(), order.clone());
    }

    /// Ends the run for `key`: a final order is kept for every retry; an
    /// error leaves the key retryable with the same order id.
    pub fn finish(&self, key: &str, order_id: &str, outcome: Outcome) {
        let mut st = self.lock();
        let Some(Entry::Running { request, done, .. }) = st.by_key.remove(key) else {
            return;
        };
        let entry = match &outcome {
            Ok(order) => {
                st.orders.insert(order.order_id.clone(), order.clone());
                Entry::Done {
                    request,
                    order_id: order_id.to_owned(),
                }
            }
            Err(error) => {
                if let Some(order) = st.orders.get_mut(order_id) {
                    order.status = OrderStatus::Failed;
                    order.failure_reason = Some(error.to_string());
                }
                Entry::Retryable {
                    request,
                    order_id: order_id.to_owned(),
                }
            }
        };
        st.by_key.insert(key.to_owned(), entry);
        done.send_replace(Some(outcome));
    }

    pub fn get(&self, order_id: &str) -> Result<Order, OrderError> {
        if order_id.is_empty() {
            return Err(OrderError::MissingOrderId);
        }
        self.lock()
            .orders
            .get(order_id)
            .cloned()
            .ok_or_else(|| OrderError::UnknownOrder(order_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_order(key: &str, qty: u32) -> NewOrder {
        NewOrder::validate(
            key.into(),
            "c-1".into(),
            vec![("sku-a".into(), qty)],
            "USD".into(),
            String::new(),
            "USD",
        )
        .unwrap()
    }

    #[test]
    fn validation_names_the_problem() {
        let v = |key: &str, cust: &str, items: Vec<(String, u32)>, cur: &str| {
            NewOrder::validate(
                key.into(),
                cust.into(),
                items,
                cur.into(),
                String::new(),
                "USD",
            )
            .unwrap_err()
        };
        let one = || vec![("a".to_owned(), 1)];
        assert_eq!(v("", "c", one(), "USD"), OrderError::MissingKey);
        assert_eq!(v("k", "", one(), "USD"), OrderError::MissingCustomer);
        assert_eq!(v("k", "c", vec![], "USD"), OrderError::NoItems);
        assert!(matches!(
            v("k", "c", vec![("a".into(), 0)], "USD"),
            OrderError::ZeroQuantity { .. }
        ));
        assert!(matches!(
            v("k", "c", vec![("a".into(), 1), ("a".into(), 2)], "USD"),
            OrderError::DuplicateSku(_)
        ));
        assert!(matches!(
            v("k", "c", one(), ""),
            OrderError::MissingCurrency(_)
        ));
        assert_eq!(
            v("k", "c", one(), "EUR").to_string(),
            "currency_code \"EUR\" is not accepted: the catalog is priced in USD"
        );
        assert!(matches!(
            v(&"k".repeat(129), "c", one(), "USD"),
            OrderError::TooLong { .. }
        ));
    }

    #[test]
    fn a_key_runs_once_and_replays_its_outcome() {
        let book = OrderBook::new();
        let Claim::Run(order) = book.claim(new_order("k", 1), "t1").unwrap() else {
            panic!("first claim runs")
        };
        let Claim::Wait(mut rx, pending) = book.claim(new_order("k", 1), "t2").unwrap() else {
            panic!("concurrent retry waits")
        };
        assert_eq!(pending.status, OrderStatus::Pending);
        assert_eq!(
            book.claim(new_order("k", 2), "t3").unwrap_err(),
            OrderError::KeyReused("k".into())
        );
        let mut done = order.clone();
        done.status = OrderStatus::Confirmed;
        book.finish("k", &order.order_id, Ok(done.clone()));
        assert_eq!(rx.borrow_and_update().clone().unwrap().unwrap(), done);
        let Claim::Done(again) = book.claim(new_order("k", 1), "t4").unwrap() else {
            panic!("later retry replays")
        };
        assert_eq!(again, done);
        assert_eq!(again.trace_id, "t1");
        assert_eq!(book.get(&order.order_id).unwrap(), done);
    }

    #[test]
    fn an_error_leaves_the_key_retryable_with_the_same_order_id() {
        let book = OrderBook::new();
        let Claim::Run(order) = book.claim(new_order("k", 1), "t").unwrap() else {
            panic!()
        };
        book.finish(
            "k",
            &order.order_id,
            Err(OrderError::Downstream(CallError::new(
                crate::order::ports::CallFailure::Unavailable,
                "payment unavailable",
            ))),
        );
        let Claim::Run(again) = book.claim(new_order("k", 1), "t").unwrap() else {
            panic!("retry runs again")
        };
        assert_eq!(again.order_id, order.order_id);
        assert!(matches!(book.get("nope"), Err(OrderError::UnknownOrder(_))));
        assert_eq!(book.get("").unwrap_err(), OrderError::MissingOrderId);
    }
}

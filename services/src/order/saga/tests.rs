//! The saga against fake ports: every compensation path, no sockets.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;
use crate::order::ports::ReservedLine;

/// A scripted downstream: answers from a queue (the last answer repeats) and
/// records every call.
struct Script<T> {
    answers: Mutex<VecDeque<T>>,
    calls: Mutex<Vec<String>>,
}

impl<T: Clone> Script<T> {
    fn new(answers: Vec<T>) -> Self {
        Self {
            answers: Mutex::new(answers.into()),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn next(&self, call: String) -> T {
        self.calls.lock().unwrap().push(call);
        let mut q = self.answers.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front().cloned().expect("a scripted answer")
        }
    }
}

fn unavailable(what: &str) -> CallError {
    CallError::new(CallFailure::Unavailable, format!("{what} unavailable"))
}

struct FakeStock {
    reserve: Script<Result<Reservation, CallError>>,
    commit: Script<Result<(), CallError>>,
    release: Script<Result<(), CallError>>,
}

impl FakeStock {
    fn ok(currency: &str) -> Self {
        Self {
            reserve: Script::new(vec![Ok(Reservation {
                reservation_id: "res-1".into(),
                lines: vec![ReservedLine {
                    sku: "sku-mug".into(),
                    quantity: 2,
                    currency_code: currency.into(),
                    unit_price_minor: 900,
                }],
            })]),
            commit: Script::new(vec![Ok(())]),
            release: Script::new(vec![Ok(())]),
        }
    }

    fn calls(&self) -> Vec<String> {
        let mut all = self.reserve.calls.lock().unwrap().clone();
        all.extend(self.commit.calls.lock().unwrap().iter().cloned());
        all.extend(self.release.calls.lock().unwrap().iter().cloned());
        all
    }
}

impl Stock for FakeStock {
    async fn reserve(
        &self,
        _deadline: Deadline,
        order_id: &str,
        _items: &[(String, u32)],
    ) -> Result<Reservation, CallError> {
        self.reserve.next(format!("reserve {order_id}"))
    }

    async fn commit(&self, _deadline: Deadline, reservation_id: &str) -> Result<(), CallError> {
        self.commit.next(format!("commit {reservation_id}"))
    }

    async fn release(&self, _deadline: Deadline, reservation_id: &str) -> Result<(), CallError> {
        self.release.next(format!("release {reservation_id}"))
    }
}

struct FakePayments {
    charge: Script<Result<ChargeDecision, CallError>>,
    refund: Script<Result<(), CallError>>,
}

impl FakePayments {
    fn approving() -> Self {
        Self {
            charge: Script::new(vec![Ok(ChargeDecision::Approved {
                payment_id: "pay-1".into(),
            })]),
            refund: Script::new(vec![Ok(())]),
        }
    }

    fn calls(&self) -> Vec<String> {
        let mut all = self.charge.calls.lock().unwrap().clone();
        all.extend(self.refund.calls.lock().unwrap().iter().cloned());
        all
    }
}

impl Payments for FakePayments {
    async fn charge(
        &self,
        _deadline: Deadline,
        order_id: &str,
        _customer_id: &str,
        amount: &Money,
        _payment_token: &str,
    ) -> Result<ChargeDecision, CallError> {
        self.charge.next(format!("charge {order_id} {amount}"))
    }

    async fn refund(
        &self,
        _deadline: Deadline,
        order_id: &str,
        _reason: &str,
    ) -> Result<(), CallError> {
        self.refund.next(format!("refund {order_id}"))
    }
}

fn request(key: &str) -> NewOrder {
    NewOrder::validate(
        key.into(),
        "c-1".into(),
        vec![("sku-mug".into(), 2)],
        "USD".into(),
        String::new(),
        "USD",
    )
    .unwrap()
}

/// A book on a fresh SQLite file (kept with the returned folder).
async fn test_book() -> (OrderBook, tempfile::TempDir) {
    let (db, dir) = crate::db::test_sqlite("order", crate::order::MIGRATIONS).await;
    (
        OrderBook::new(
            db,
            crate::db::Clock::System,
            "test",
            Duration::from_secs(30),
        ),
        dir,
    )
}

async fn place(stock: FakeStock, payments: FakePayments) -> (Outcome, Vec<String>, Vec<String>) {
    let (book, _dir) = test_book().await;
    let orders = Orders::new(book, stock, payments, Duration::from_secs(1), "USD");
    let outcome = orders
        .place(request("k"), Deadline::after(Duration::from_secs(5)), "t")
        .await;
    let (stock, payments) = (orders.stock.calls(), orders.payments.calls());
    let strip = |calls: Vec<String>| -> Vec<String> {
        calls
            .into_iter()
            .map(|c| c.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    };
    (outcome, strip(stock), strip(payments))
}

#[tokio::test]
async fn happy_path_reserves_charges_commits() {
    let (outcome, stock, payments) = place(FakeStock::ok("USD"), FakePayments::approving()).await;
    let order = outcome.unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.total.unwrap().minor(), 1800);
    assert_eq!(order.payment_id.as_deref(), Some("pay-1"));
    assert_eq!(stock, ["reserve", "commit"]);
    assert_eq!(payments, ["charge"]);
}

#[tokio::test]
async fn a_decline_releases_and_is_an_outcome_not_an_error() {
    let payments = FakePayments {
        charge: Script::new(vec![Ok(ChargeDecision::Declined {
            payment_id: "pay-2".into(),
            reason: "card declined".into(),
        })]),
        refund: Script::new(vec![Ok(())]),
    };
    let (outcome, stock, payments) = place(FakeStock::ok("USD"), payments).await;
    let order = outcome.unwrap();
    assert_eq!(order.status, OrderStatus::PaymentDeclined);
    assert_eq!(order.failure_reason.as_deref(), Some("card declined"));
    assert_eq!(stock, ["reserve", "release"]);
    assert_eq!(payments, ["charge"]);
}

#[tokio::test]
async fn an_ambiguous_charge_is_refunded_then_released() {
    let payments = FakePayments {
        charge: Script::new(vec![Err(unavailable("payment"))]),
        refund: Script::new(vec![Ok(())]),
    };
    let (outcome, stock, payments) = place(FakeStock::ok("USD"), payments).await;
    // The refund bars the order id from any charge: FAILED for good.
    let order = outcome.unwrap();
    assert_eq!(order.status, OrderStatus::Failed);
    let reason = order.failure_reason.unwrap();
    assert!(reason.contains("charge outcome unknown"), "{reason}");
    assert!(reason.contains("new idempotency_key"), "{reason}");
    assert_eq!(stock, ["reserve", "release"]);
    assert_eq!(payments, ["charge", "refund"]);
}

#[tokio::test]
async fn a_charge_refused_as_refunded_ends_the_order_for_good() {
    let payments = FakePayments {
        charge: Script::new(vec![Err(CallError::new(
            CallFailure::Refunded,
            "payment: the charge for order o was refunded",
        ))]),
        refund: Script::new(vec![Ok(())]),
    };
    let (book, _dir) = test_book().await;
    let orders = Orders::new(
        book.clone(),
        FakeStock::ok("USD"),
        payments,
        Duration::from_secs(1),
        "USD",
    );
    let order = orders
        .place(request("k"), Deadline::after(Duration::from_secs(5)), "t")
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Failed);
    assert!(
        order
            .failure_reason
            .unwrap()
            .contains("new idempotency_key"),
        "the caller is told the key cannot succeed"
    );
    assert_eq!(
        orders.stock.calls(),
        [
            format!("reserve {}", order.order_id),
            "release res-1".to_owned()
        ]
    );
    // Not retryable: the same key replays the failure.
    assert!(matches!(
        book.claim(&request("k"), "t2").await.unwrap(),
        Claim::Done(o) if o.status == OrderStatus::Failed
    ));
}

#[tokio::test]
async fn a_failed_refund_after_an_ambiguous_charge_is_said() {
    let payments = FakePayments {
        charge: Script::new(vec![Err(unavailable("payment"))]),
        refund: Script::new(vec![Err(unavailable("payment"))]),
    };
    let (outcome, stock, _) = place(FakeStock::ok("USD"), payments).await;
    // A charge may stand: not FAILED (which would leave it standing), but
    // PENDING for the recovery pass, which refunds once payment answers.
    let error = outcome.unwrap_err();
    assert!(matches!(error, OrderError::Undecided(..)), "{error:?}");
    let error = error.to_string();
    assert!(error.contains("could not be refunded"), "{error}");
    assert!(error.contains("stays PENDING"), "{error}");
    assert!(error.contains("same idempotency_key"), "{error}");
    assert_eq!(stock, ["reserve", "release"]);
}

#[tokio::test]
async fn a_refusal_to_charge_is_not_refunded() {
    let payments = FakePayments {
        charge: Script::new(vec![Err(CallError::new(
            CallFailure::InvalidArgument,
            "payment: amount must be positive",
        ))]),
        refund: Script::new(vec![Ok(())]),
    };
    let (outcome, stock, payments) = place(FakeStock::ok("USD"), payments).await;
    assert!(outcome.is_err());
    assert_eq!(stock, ["reserve", "release"]);
    assert_eq!(payments, ["charge"]);
}

#[tokio::test]
async fn an_ambiguous_commit_is_asked_again_before_any_refund() {
    let mut stock = FakeStock::ok("USD");
    stock.commit = Script::new(vec![Err(unavailable("inventory")), Ok(())]);
    let (outcome, stock, payments) = place(stock, FakePayments::approving()).await;
    assert_eq!(outcome.unwrap().status, OrderStatus::Confirmed);
    assert_eq!(stock, ["reserve", "commit", "commit"]);
    assert_eq!(payments, ["charge"]);
}

#[tokio::test]
async fn a_commit_still_ambiguous_after_the_retry_is_left_to_recovery_not_compensated() {
    let (db, _dir) = crate::db::test_sqlite("order", crate::order::MIGRATIONS).await;
    let clock = crate::db::Clock::manual(crate::db::now_ms());
    let book = OrderBook::new(db, clock.clone(), "a", Duration::from_secs(30));
    let mut stock = FakeStock::ok("USD");
    stock.commit = Script::new(vec![
        Err(unavailable("inventory")),
        Err(unavailable("inventory")),
        Ok(()),
    ]);
    let orders = Orders::new(
        book.clone(),
        stock,
        FakePayments::approving(),
        Duration::from_secs(1),
        "USD",
    );
    let error = orders
        .place(request("k"), Deadline::after(Duration::from_secs(5)), "t")
        .await
        .unwrap_err();
    assert!(matches!(error, OrderError::Undecided(..)), "{error:?}");
    let OrderError::Undecided(_, id) = &error else {
        unreachable!()
    };
    let order = book.get(id).await.unwrap();
    // The commit may have landed: no refund, no release (a committed
    // reservation cannot be released, so that would lose the units).
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(orders.payments.calls().len(), 1, "the charge only");
    assert_eq!(
        orders.stock.calls(),
        [
            format!("reserve {id}"),
            "commit res-1".to_owned(),
            "commit res-1".to_owned()
        ]
    );
    let stored = book.get(&order.order_id).await.unwrap();
    assert_eq!(stored.status, OrderStatus::Pending);
    assert_eq!(stored.payment_id.as_deref(), Some("pay-1"));
    // The recovery pass asks again once the short lease is over, and
    // completes what was paid for.
    clock.advance(RECOVERY_RETRY + Duration::from_secs(1));
    assert!(orders.recover_one().await.unwrap());
    assert_eq!(
        book.get(&order.order_id).await.unwrap().status,
        OrderStatus::Confirmed
    );
    assert!(!orders
        .payments
        .calls()
        .iter()
        .any(|c| c.starts_with("refund")));
}

#[tokio::test]
async fn a_failed_commit_refunds_then_releases() {
    let mut stock = FakeStock::ok("USD");
    stock.commit = Script::new(vec![Err(CallError::new(
        CallFailure::FailedPrecondition,
        "inventory: reservation res-1 expired",
    ))]);
    let (outcome, stock, payments) = place(stock, FakePayments::approving()).await;
    let order = outcome.unwrap();
    assert_eq!(order.status, OrderStatus::Failed);
    let reason = order.failure_reason.unwrap();
    assert!(reason.contains("new idempotency_key"), "{reason}");
    assert_eq!(stock, ["reserve", "commit", "release"]);
    assert_eq!(payments, ["charge", "refund"]);
}

#[tokio::test]
async fn prices_in_another_currency_release_without_charging() {
    let (outcome, stock, payments) = place(FakeStock::ok("EUR"), FakePayments::approving()).await;
    assert!(matches!(outcome, Err(OrderError::Pricing(_))));
    assert_eq!(stock, ["reserve", "release"]);
    assert!(payments.is_empty());
}

#[tokio::test]
async fn a_failed_reservation_touches_nothing_else_and_the_key_stays_retryable() {
    let mut stock = FakeStock::ok("USD");
    stock.reserve = Script::new(vec![
        Err(CallError::new(
            CallFailure::FailedPrecondition,
            "inventory: not enough sku-mug",
        )),
        FakeStock::ok("USD").reserve.next(String::new()),
    ]);
    let (book, _dir) = test_book().await;
    let orders = Orders::new(
        book,
        stock,
        FakePayments::approving(),
        Duration::from_secs(1),
        "USD",
    );
    let deadline = || Deadline::after(Duration::from_secs(5));
    let first = orders.place(request("k"), deadline(), "t").await;
    assert!(matches!(first, Err(OrderError::Downstream(_))));
    let second = orders.place(request("k"), deadline(), "t").await.unwrap();
    assert_eq!(second.status, OrderStatus::Confirmed);
    assert_eq!(orders.payments.calls().len(), 1, "charged once");
}

/// A stock that never answers: the saga cannot finish.
struct Silent;

impl Stock for Silent {
    async fn reserve(
        &self,
        _: Deadline,
        _: &str,
        _: &[(String, u32)],
    ) -> Result<Reservation, CallError> {
        std::future::pending().await
    }
    async fn commit(&self, _: Deadline, _: &str) -> Result<(), CallError> {
        std::future::pending().await
    }
    async fn release(&self, _: Deadline, _: &str) -> Result<(), CallError> {
        std::future::pending().await
    }
}

#[test]
fn a_saga_that_dies_with_its_runtime_is_recovered_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let target = crate::db::DbTarget::Sqlite {
        data_dir: dir.path().to_owned(),
    };
    let open = |rt: &tokio::runtime::Runtime, clock: crate::db::Clock| {
        rt.block_on(async {
            let db = crate::db::Database::open(
                "order",
                &target,
                crate::order::MIGRATIONS,
                meshwatch_runtime::Readiness::default(),
            )
            .await
            .unwrap();
            OrderBook::new(db, clock, "test", Duration::from_secs(30))
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let orders = Orders::new(
        open(&rt, crate::db::Clock::System),
        Silent,
        FakePayments::approving(),
        Duration::from_secs(30),
        "USD",
    );
    let o = orders.clone();
    rt.block_on(async move {
        // PlaceOrder until the saga is spawned and waits on Reserve, then
        // the caller leaves and the process dies.
        let place = o.place(request("k"), Deadline::after(Duration::from_secs(30)), "t1");
        tokio::select! {
            biased;
            _ = place => panic!("the saga cannot have finished"),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    });
    drop(orders);
    drop(rt);

    // The restarted process: the row is pending under the dead run's lease.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = crate::db::Clock::manual(crate::db::now_ms());
    let book = open(&rt, now.clone());
    rt.block_on(async {
        let id = match book.claim(&request("k"), "t2").await.unwrap() {
            Claim::WaitElsewhere(order) => {
                assert_eq!(order.status, OrderStatus::Pending);
                order.order_id
            }
            other => panic!("a live lease is respected: {other:?}"),
        };
        now.advance(Duration::from_secs(31));
        let orders = Orders::new(
            book.clone(),
            FakeStock::ok("USD"),
            FakePayments::approving(),
            Duration::from_secs(1),
            "USD",
        );
        assert!(
            orders.recover_one().await.unwrap(),
            "the abandoned order is recovered"
        );
        // Not known to be paid: compensated (refund by order id, which
        // bars a late charge), so the order id can never be paid: final.
        assert_eq!(orders.payments.calls(), [format!("refund {id}")]);
        let failed = book.get(&id).await.unwrap();
        assert_eq!(failed.status, OrderStatus::Failed, "{failed:?}");
        let reason = failed.failure_reason.unwrap();
        assert!(reason.contains("interrupted"), "{reason}");
        assert!(reason.contains("new idempotency_key"), "{reason}");
        assert!(!orders.recover_one().await.unwrap(), "nothing left pending");
        match book.claim(&request("k"), "t3").await.unwrap() {
            Claim::Done(order) => assert_eq!(order.order_id, id),
            other => panic!("a refunded order is not retried under its key: {other:?}"),
        }
    });
}

#[tokio::test]
async fn a_recovered_order_that_was_paid_is_committed_not_refunded() {
    let (db, _dir) = crate::db::test_sqlite("order", crate::order::MIGRATIONS).await;
    let clock = crate::db::Clock::manual(crate::db::now_ms());
    let book = OrderBook::new(db, clock.clone(), "a", Duration::from_secs(30));
    let Claim::Run(mut order) = book.claim(&request("paid"), "t").await.unwrap() else {
        panic!()
    };
    // The run got as far as a recorded charge, then its process died.
    order.reservation_id = Some("res-1".into());
    order.payment_id = Some("pay-1".into());
    book.update(&order).await.unwrap();
    book.release("paid", Err(OrderError::Interrupted(String::new())));
    clock.advance(Duration::from_secs(31));
    let orders = Orders::new(
        book.clone(),
        FakeStock::ok("USD"),
        FakePayments::approving(),
        Duration::from_secs(1),
        "USD",
    );
    assert!(orders.recover_one().await.unwrap());
    assert_eq!(orders.stock.calls(), ["commit res-1"]);
    assert!(
        orders.payments.calls().is_empty(),
        "no refund of a completed order"
    );
    assert_eq!(
        book.get(&order.order_id).await.unwrap().status,
        OrderStatus::Confirmed
    );
}

#[tokio::test]
async fn recovery_waits_when_payment_cannot_say_whether_it_charged() {
    let (db, _dir) = crate::db::test_sqlite("order", crate::order::MIGRATIONS).await;
    let clock = crate::db::Clock::manual(crate::db::now_ms());
    let book = OrderBook::new(db, clock.clone(), "a", Duration::from_secs(30));
    let Claim::Run(order) = book.claim(&request("unsure"), "t").await.unwrap() else {
        panic!()
    };
    book.release("unsure", Err(OrderError::Interrupted(String::new())));
    clock.advance(Duration::from_secs(31));
    let payments = FakePayments {
        charge: Script::new(vec![Ok(ChargeDecision::Approved {
            payment_id: "pay-1".into(),
        })]),
        refund: Script::new(vec![Err(unavailable("payment")), Ok(())]),
    };
    let orders = Orders::new(
        book.clone(),
        FakeStock::ok("USD"),
        payments,
        Duration::from_secs(1),
        "USD",
    );
    assert!(orders.recover_one().await.unwrap());
    assert_eq!(
        book.get(&order.order_id).await.unwrap().status,
        OrderStatus::Pending,
        "undecided while payment does not answer"
    );
    assert!(
        !orders.recover_one().await.unwrap(),
        "postponed, not retried at once"
    );
    clock.advance(super::RECOVERY_RETRY + Duration::from_secs(1));
    assert!(orders.recover_one().await.unwrap());
    assert_eq!(
        book.get(&order.order_id).await.unwrap().status,
        OrderStatus::Failed
    );
}

/// Payment that approves, but so slowly that another replica takes the
/// order over first.
struct Overtaken {
    other: OrderBook,
    clock: crate::db::Clock,
    calls: Mutex<Vec<String>>,
}

impl Payments for Overtaken {
    async fn charge(
        &self,
        _: Deadline,
        order_id: &str,
        _: &str,
        _: &Money,
        _: &str,
    ) -> Result<ChargeDecision, CallError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("charge {order_id}"));
        self.clock.advance(Duration::from_secs(31));
        assert!(self.other.take_over_abandoned().await.unwrap().is_some());
        Ok(ChargeDecision::Approved {
            payment_id: "pay-1".into(),
        })
    }

    async fn refund(&self, _: Deadline, order_id: &str, _: &str) -> Result<(), CallError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("refund {order_id}"));
        Ok(())
    }
}

#[tokio::test]
async fn a_run_that_lost_its_lease_stops_without_compensating() {
    let (db, _dir) = crate::db::test_sqlite("order", crate::order::MIGRATIONS).await;
    let clock = crate::db::Clock::manual(crate::db::now_ms());
    let book = OrderBook::new(db.clone(), clock.clone(), "a", Duration::from_secs(30));
    let other = OrderBook::new(db, clock.clone(), "b", Duration::from_secs(30));
    let payments = Overtaken {
        other: other.clone(),
        clock,
        calls: Mutex::new(Vec::new()),
    };
    let orders = Orders::new(
        book.clone(),
        FakeStock::ok("USD"),
        payments,
        Duration::from_secs(1),
        "USD",
    );
    let e = orders
        .place(request("k"), Deadline::after(Duration::from_secs(5)), "t")
        .await
        .unwrap_err();
    assert!(matches!(e, OrderError::LeaseLost(_)), "{e:?}");
    // No refund, no release, no commit: the order is b's to finish.
    assert_eq!(orders.payments.calls.lock().unwrap().len(), 1);
    assert_eq!(orders.stock.calls().len(), 1, "{:?}", orders.stock.calls());
}

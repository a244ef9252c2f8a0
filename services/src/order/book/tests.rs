use super::*;
use crate::order::ports::CallFailure;
use crate::with_pool;

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

async fn book() -> (OrderBook, Clock, tempfile::TempDir) {
    let (db, dir) = crate::db::test_sqlite("order", crate::order::MIGRATIONS).await;
    let clock = Clock::manual(1_000_000);
    (
        OrderBook::new(db, clock.clone(), "replica-a", Duration::from_secs(10)),
        clock,
        dir,
    )
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
    assert!(matches!(v("", "c", one(), "USD"), OrderError::MissingKey));
    // PostgreSQL TEXT refuses NUL: refused here, naming the field.
    for (key, cust, sku, field) in [
        ("k\0", "c", "a", "idempotency_key"),
        ("k", "c\0", "a", "customer_id"),
        ("k", "c", "a\u{1b}", "sku"),
    ] {
        let e = v(key, cust, vec![(sku.into(), 1)], "USD");
        assert!(
            matches!(e, OrderError::ControlCharacter { field: f } if f == field),
            "{e:?}"
        );
        assert!(e.to_string().starts_with(field), "{e}");
    }
    let e = NewOrder::validate(
        "k".into(),
        "c".into(),
        one(),
        "USD".into(),
        "tok\0".into(),
        "USD",
    )
    .unwrap_err();
    assert!(matches!(
        e,
        OrderError::ControlCharacter {
            field: "payment_token"
        }
    ));
    assert!(matches!(
        v("k", "", one(), "USD"),
        OrderError::MissingCustomer
    ));
    assert!(matches!(v("k", "c", vec![], "USD"), OrderError::NoItems));
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
        OrderError::TooLong {
            field: "idempotency_key",
            ..
        }
    ));
    assert!(matches!(
        v("k", "c", vec![("s".repeat(MAX_SKU_LEN + 1), 1)], "USD"),
        OrderError::TooLong { field: "sku", .. }
    ));
    let many = (0..=MAX_ITEMS).map(|i| (format!("s{i}"), 1)).collect();
    assert_eq!(
        v("k", "c", many, "USD").to_string(),
        format!("{} items in one order; at most {MAX_ITEMS}", MAX_ITEMS + 1)
    );
    let long_token = NewOrder::validate(
        "k".into(),
        "c".into(),
        one(),
        "USD".into(),
        "t".repeat(MAX_TOKEN_LEN + 1),
        "USD",
    )
    .unwrap_err();
    assert!(matches!(
        long_token,
        OrderError::TooLong {
            field: "payment_token",
            ..
        }
    ));
}

#[tokio::test]
async fn a_key_runs_once_and_replays_its_outcome() {
    let (book, _, _dir) = book().await;
    let Claim::Run(order) = book.claim(&new_order("k", 1), "t1").await.unwrap() else {
        panic!("first claim runs")
    };
    let Claim::Wait(mut rx, pending) = book.claim(&new_order("k", 1), "t2").await.unwrap() else {
        panic!("concurrent retry waits")
    };
    assert_eq!(pending.status, OrderStatus::Pending);
    assert!(matches!(
        book.claim(&new_order("k", 2), "t3").await.unwrap_err(),
        OrderError::KeyReused(k) if k == "k"
    ));
    let mut done = order.clone();
    done.status = OrderStatus::Confirmed;
    book.finish("k", &order, Ok(done.clone())).await;
    assert_eq!(rx.borrow_and_update().clone().unwrap().unwrap(), done);
    let Claim::Done(again) = book.claim(&new_order("k", 1), "t4").await.unwrap() else {
        panic!("later retry replays")
    };
    assert_eq!(again, done);
    assert_eq!(again.trace_id, "t1");
    assert_eq!(book.get(&order.order_id).await.unwrap(), done);
}

#[tokio::test]
async fn an_error_leaves_the_key_retryable_with_the_same_order_id() {
    let (book, _, _dir) = book().await;
    let Claim::Run(order) = book.claim(&new_order("k", 1), "t").await.unwrap() else {
        panic!()
    };
    book.finish(
        "k",
        &order,
        Err(OrderError::Downstream(CallError::new(
            CallFailure::Unavailable,
            "payment unavailable",
        ))),
    )
    .await;
    let failed = book.get(&order.order_id).await.unwrap();
    assert_eq!(failed.status, OrderStatus::Failed);
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("payment unavailable")
    );
    let Claim::Run(again) = book.claim(&new_order("k", 1), "t").await.unwrap() else {
        panic!("retry runs again")
    };
    assert_eq!(again.order_id, order.order_id);
    assert_eq!(again.status, OrderStatus::Pending);
    assert!(matches!(
        book.get("nope").await,
        Err(OrderError::UnknownOrder(_))
    ));
    assert!(matches!(
        book.get("").await,
        Err(OrderError::MissingOrderId)
    ));
}

#[tokio::test]
async fn another_replica_waits_then_takes_over_once_the_lease_runs_out() {
    let (a, clock, _dir) = book().await;
    let b = OrderBook::new(
        a.db.clone(),
        clock.clone(),
        "replica-b",
        Duration::from_secs(10),
    );
    let Claim::Run(order) = a.claim(&new_order("k", 1), "t").await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        b.claim(&new_order("k", 1), "t").await.unwrap(),
        Claim::WaitElsewhere(o) if o.order_id == order.order_id
    ));
    assert!(
        b.take_over_abandoned().await.unwrap().is_none(),
        "lease still running"
    );
    // Replica a dies with the order pending; its lease runs out.
    clock.advance(Duration::from_secs(11));
    let recovered = b
        .take_over_abandoned()
        .await
        .unwrap()
        .expect("abandoned order");
    assert_eq!(recovered.order.order_id, order.order_id);
    assert_eq!(recovered.items, vec![("sku-a".to_owned(), 1)]);
    // Taken: nobody else gets it while b's lease runs.
    assert!(a.take_over_abandoned().await.unwrap().is_none());
    let mut done = recovered.order.clone();
    done.status = OrderStatus::Confirmed;
    b.finish("k", &recovered.order, Ok(done)).await;
    assert_eq!(
        a.get(&order.order_id).await.unwrap().status,
        OrderStatus::Confirmed
    );
}

#[tokio::test]
async fn a_run_whose_order_was_taken_over_cannot_write_it_any_more() {
    let (a, clock, _dir) = book().await;
    let b = OrderBook::new(
        a.db.clone(),
        clock.clone(),
        "replica-b",
        Duration::from_secs(10),
    );
    let Claim::Run(order) = a.claim(&new_order("k", 1), "t").await.unwrap() else {
        panic!()
    };
    // a is slow past its lease; b's recovery pass takes the order over.
    clock.advance(Duration::from_secs(11));
    let taken = b.take_over_abandoned().await.unwrap().expect("abandoned");
    let mut progress = order.clone();
    progress.payment_id = Some("pay-a".into());
    assert!(matches!(
        a.update(&progress).await,
        Err(OrderError::LeaseLost(id)) if id == order.order_id
    ));
    // Nor can a's run decide it: b's outcome stands.
    let mut confirmed = order.clone();
    confirmed.status = OrderStatus::Confirmed;
    a.finish("k", &order, Ok(confirmed)).await;
    let stored = a.get(&order.order_id).await.unwrap();
    assert_eq!(stored.status, OrderStatus::Pending);
    assert_eq!(stored.payment_id, None);
    let mut failed = taken.order.clone();
    failed.status = OrderStatus::Failed;
    b.finish("k", &taken.order, Ok(failed)).await;
    assert_eq!(
        a.get(&order.order_id).await.unwrap().status,
        OrderStatus::Failed
    );
}

#[tokio::test]
async fn progress_renews_the_lease() {
    let (a, clock, _dir) = book().await;
    let b = OrderBook::new(
        a.db.clone(),
        clock.clone(),
        "replica-b",
        Duration::from_secs(10),
    );
    let Claim::Run(order) = a.claim(&new_order("k", 1), "t").await.unwrap() else {
        panic!()
    };
    for _ in 0..3 {
        clock.advance(Duration::from_secs(8));
        a.update(&order).await.unwrap();
    }
    // 33 s after the claim, 9 s after the last progress: still a's.
    clock.advance(Duration::from_secs(9));
    assert!(b.take_over_abandoned().await.unwrap().is_none());
    clock.advance(Duration::from_secs(2));
    assert!(b.take_over_abandoned().await.unwrap().is_some());
}

#[tokio::test]
async fn the_recovery_pass_never_takes_over_a_run_of_its_own_process() {
    let (a, clock, _dir) = book().await;
    let Claim::Run(order) = a.claim(&new_order("k", 1), "t").await.unwrap() else {
        panic!()
    };
    // The run is alive here, only late: its lease ran out.
    clock.advance(Duration::from_secs(11));
    assert!(a.take_over_abandoned().await.unwrap().is_none());
    a.update(&order).await.unwrap();
}

#[tokio::test]
async fn leases_are_kept_on_the_database_clock() {
    let (db, _dir) = crate::db::test_sqlite("order", crate::order::MIGRATIONS).await;
    let a = OrderBook::new(db.clone(), Clock::System, "a", Duration::from_secs(60));
    let b = OrderBook::new(db, Clock::System, "b", Duration::from_secs(60));
    let before = crate::db::now_ms();
    let Claim::Run(_) = a.claim(&new_order("k", 1), "t").await.unwrap() else {
        panic!()
    };
    let until: i64 = with_pool!(a.db.pool(), p => sqlx::query_scalar(
        "SELECT lease_until_ms FROM orders WHERE idempotency_key = 'k'"
    )
    .fetch_one(p)
    .await
    .unwrap());
    // Written from the database's clock (here the same machine's).
    let lease = until - before;
    assert!((59_000..=61_000).contains(&lease), "{lease}");
    assert!(matches!(
        b.claim(&new_order("k", 1), "t").await.unwrap(),
        Claim::WaitElsewhere(_)
    ));
    assert!(b.take_over_abandoned().await.unwrap().is_none());
}

#[tokio::test]
async fn retention_deletes_finished_orders_and_their_keys_but_never_pending_ones() {
    let (book, clock, _dir) = book().await;
    let Claim::Run(done) = book.claim(&new_order("old", 1), "t").await.unwrap() else {
        panic!()
    };
    let mut confirmed = done.clone();
    confirmed.status = OrderStatus::Confirmed;
    book.finish("old", &done, Ok(confirmed)).await;
    let Claim::Run(pending) = book.claim(&new_order("running", 1), "t").await.unwrap() else {
        panic!()
    };
    clock.advance(Duration::from_secs(3600));
    let cutoff = clock.now_ms() - 1;
    assert_eq!(book.delete_finished_before(cutoff).await.unwrap(), 1);
    assert!(matches!(
        book.get(&done.order_id).await,
        Err(OrderError::UnknownOrder(_))
    ));
    assert_eq!(
        book.get(&pending.order_id).await.unwrap().status,
        OrderStatus::Pending
    );
    // The key is free again: a new order.
    let Claim::Run(fresh) = book.claim(&new_order("old", 1), "t").await.unwrap() else {
        panic!()
    };
    assert_ne!(fresh.order_id, done.order_id);
}

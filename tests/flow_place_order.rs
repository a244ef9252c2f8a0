//! User flow 1: PlaceOrder with the real grpcurl against the running mesh →
//! CONFIRMED with a trace id; GetOrder agrees.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use support::{grpcurl, place_order, stderr, Mesh};

#[tokio::test(flavor = "multi_thread")]
async fn place_order_with_grpcurl_then_get_order() {
    let mesh = Mesh::up(&[]).await;
    let placed = place_order(&mesh, "flow-1");
    let order = &placed["order"];
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{placed}");
    let trace_id = placed["traceId"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32, "{placed}");
    assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
    let order_id = order["orderId"].as_str().unwrap();

    let out = grpcurl(&[
        "-plaintext",
        "-d",
        &format!("{{\"order_id\":\"{order_id}\"}}"),
        &format!("127.0.0.1:{}", mesh.order_port),
        "meshwatch.order.v1.OrderService/GetOrder",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        &got["order"], order,
        "GetOrder returns the order PlaceOrder returned"
    );

    // A retry with the same key is the same order, not a second one.
    let again = place_order(&mesh, "flow-1");
    assert_eq!(again["order"]["orderId"], order["orderId"]);
}

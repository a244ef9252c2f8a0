//! User flow 3: after a PlaceOrder, `meshctl trace <id> --json` returns the
//! lines of order, inventory and payment, in time order, all with that id.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeSet;

use support::{place_order, stderr, stdout, Mesh};

#[tokio::test(flavor = "multi_thread")]
async fn trace_of_one_request_spans_three_services() {
    let mesh = Mesh::up(&[]).await;
    let placed = place_order(&mesh, "flow-3");
    let trace_id = placed["traceId"].as_str().unwrap().to_owned();

    // Lines reach Kafka through the shippers; --wait bounds how long we look.
    let out = mesh.meshctl(&[
        "trace",
        &trace_id,
        "--json",
        "--min-services",
        "3",
        "--wait",
        "30s",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        mesh.process_logs()
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let services: BTreeSet<&str> = lines
        .iter()
        .map(|l| l["service.name"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["inventory", "order", "payment"]),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| l["trace.id"] == trace_id.as_str()));
    let times: Vec<_> = lines
        .iter()
        .map(|l| meshwatch_ecs::parse_timestamp(l["@timestamp"].as_str().unwrap()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in time order");
    // Each service wrote its access line for its part of the request.
    for (service, method) in [
        ("order", "PlaceOrder"),
        ("inventory", "Reserve"),
        ("payment", "Charge"),
    ] {
        assert!(
            lines.iter().any(|l| l["service.name"] == service
                && l["rpc.method"] == method
                && l["rpc.grpc.status_code"] == 0),
            "no OK access line of {service} {method}"
        );
    }

    // The readable timeline too.
    let out = mesh.meshctl(&["trace", &trace_id]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("from 3 services"), "{}", stdout(&out));
}

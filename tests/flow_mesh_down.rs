//! User flow 5: `scripts/mesh down` stops exactly what `up` started and leaves
//! no process of ours running.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use meshwatch_testkit as testkit;
use support::{stderr, Mesh};

#[tokio::test(flavor = "multi_thread")]
async fn down_leaves_nothing_running() {
    let mut mesh = Mesh::up(&[]).await;
    let status = mesh.script(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    for name in ["monitor", "inventory", "payment", "order"] {
        assert!(text.contains(&format!("{name:<10} running")), "{text}");
    }
    let before = mesh.our_processes();
    // Four shippers and their four services.
    assert!(before.len() >= 8, "{before:#?}");

    let out = mesh.down();
    assert!(out.status.success(), "{}", stderr(&out));
    testkit::wait_for(
        Duration::from_secs(10),
        "every mesh process to exit",
        || mesh.our_processes().is_empty().then_some(()),
    )
    .await;
    let pids = mesh.state.path().join("pids");
    let remaining: Vec<_> = std::fs::read_dir(&pids)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(remaining.is_empty(), "pid files left: {remaining:?}");
    let status = mesh.script(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("order      stopped"));
}

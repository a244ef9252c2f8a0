//! The soak (issue 10): PlaceOrder at saturation, phase after phase, until at
//! least SOAK_ORDERS orders per configuration, to show that throughput and
//! memory stay flat as orders accumulate. Run with
//!
//!     cargo bench -p meshwatch-flows --bench soak     # builds release binaries first
//!
//! Configurations (SOAK_CONFIGS, comma-separated, default all four):
//! - `services-sqlite`: order, inventory and payment alone (release binaries,
//!   stdout to /dev/null, no shippers), each on its SQLite file (WAL,
//!   synchronous=NORMAL, the default);
//! - `services-postgres`: the same on one PostgreSQL server started by
//!   `scripts/postgres` with durable settings (fsync and synchronous_commit
//!   on), a database per service;
//! - `mesh-sqlite` / `mesh-postgres`: the whole local mesh (`scripts/mesh up`:
//!   a tansu broker, every service under its shipper, the monitor).
//!
//! Baseline measured in the same run: a trivial tonic unary echo server in
//! this process at saturation, for 10 s at the start and for
//! SOAK_PROBE_SECONDS (default 5) after every phase, the target idle. Every
//! phase prints its ratio to the first baseline and to the configuration's
//! first phase, and also that last ratio with each phase taken relative to the
//! probe after it: this machine's speed drifts by a quarter within minutes,
//! and the second ratio is a rough correction for that (a 5 s probe is a poor
//! gauge of a 60 s phase). RSS of each service (VmRSS) after each phase, and
//! the CPU each process (for the mesh also the shippers together, the broker
//! and the monitor) used per order in the phase, so that a phase slower than
//! the first says whose cost grew; and where the whole machine's time went in
//! the phase (/proc/stat: busy, idle, iowait, steal), so that one slowed by the
//! hypervisor (steal) or the disk (iowait) says so. On PostgreSQL also what
//! the server did in the phase: its CPU per order (all its processes, which
//! the services' groups do not hold); its buffer cache (blocks read from
//! outside it per order, and the hit %), so that a working set outgrowing
//! `shared_buffers` shows; WAL bytes per order and the checkpoints begun, so
//! that a phase slowed by the full-page images after a checkpoint shows; and
//! buffers the backends had to write out themselves.
//!
//! After the soak of a configuration, unless SOAK_CONTROL=0, a control: one
//! phase on a fresh start of it (empty databases, a new broker), right after
//! the last phase, so at the machine's speed of then. The last phase over the
//! control is what the accumulated orders cost with the machine's drift taken
//! out; the last phase over the first is the measure, and includes it.
//!
//! SIGINT or SIGTERM stops what the soak started (the mesh, the PostgreSQL
//! server) before it exits (status 130 or 143); a second one is ignored
//! while that runs (scripts/mesh down and scripts/postgres stop are bounded;
//! a service alone gets 30 s after its SIGTERM, then SIGKILL).
//!
//! Environment: SOAK_ORDERS (per configuration, default 500000),
//! SOAK_PHASE_SECONDS (default 60), SOAK_CONCURRENCY (default 32);
//! MESHWATCH_PG_OPTIONS is passed on to `scripts/postgres` (server options,
//! e.g. `-c shared_buffers=1GB`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use common::EchoClient;
use meshwatch_meshctl::{LoadReport, LoadSpec};
use meshwatch_proto::order::v1 as pb;
use meshwatch_testkit::free_port;

/// VmRSS of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A throwaway PostgreSQL server (durable settings) with a database per service.
struct Postgres {
    dir: tempfile::TempDir,
    /// The server's URL without a database.
    url: String,
    /// Its `postgres` database, for the soak's own queries.
    admin: String,
}

impl Postgres {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let out = Command::new(common::root().join("scripts/postgres"))
            .args(["start"])
            .arg(dir.path())
            .env("MESHWATCH_PG_DURABLE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // The server runs: from here on, dropping `server` (a panic, or a
        // signal that drops this future) stops it.
        let server = Self {
            dir,
            url: admin.trim_end_matches("/postgres").to_owned(),
            admin,
        };
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server.admin)
            .await
            .unwrap();
        for svc in ["order", "inventory", "payment"] {
            sqlx::query(&format!("CREATE DATABASE meshwatch_{svc}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        server
    }

    fn url(&self, svc: &str) -> String {
        format!("{}/meshwatch_{svc}", self.url)
    }

    /// The server's postmaster, from the data directory's `postmaster.pid`.
    fn postmaster(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid on postmaster.pid's first line")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(common::root().join("scripts/postgres"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// The server's counters so far, over all databases, from
/// `pg_stat_database` (buffer cache), `pg_stat_bgwriter` (checkpoints, and
/// buffers the services' own backends had to write out to find a free one)
/// and the WAL position. Backends publish their counts about once a second,
/// so a phase's difference is exact to a second's worth at its edges.
#[derive(Clone, Copy)]
struct PgCounters {
    /// Blocks read from outside the buffer cache.
    blks_read: i64,
    /// Blocks found in it.
    blks_hit: i64,
    /// Checkpoints started, by timeout or by WAL volume.
    checkpoints: i64,
    /// Buffers written by backends themselves (no clean one was free).
    buffers_backend: i64,
    /// Bytes of WAL written since the server's start.
    wal_bytes: i64,
    /// The server's CPU time, in seconds ([`server_cpu_secs`]).
    cpu_secs: f64,
}

/// The statement [`pg_counters`] runs on a server of `server_version_num`.
/// PostgreSQL 17 moved the checkpoint counts from `pg_stat_bgwriter` to
/// `pg_stat_checkpointer` (`num_timed`, `num_requested`) and dropped
/// `buffers_backend`, whose count is then the client backends' writes in
/// `pg_stat_io` (PostgreSQL commit 96f0526 and the 17 release notes; only
/// the PostgreSQL 15 form has run here).
fn pg_counters_sql(server_version_num: i32) -> &'static str {
    if server_version_num >= 170_000 {
        "SELECT (SELECT sum(blks_read)::bigint FROM pg_stat_database), \
                (SELECT sum(blks_hit)::bigint FROM pg_stat_database), \
                (SELECT (num_timed + num_requested)::bigint FROM pg_stat_checkpointer), \
                (SELECT coalesce(sum(writes), 0)::bigint FROM pg_stat_io \
                  WHERE backend_type = 'client backend'), \
                pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
    } else {
        "SELECT (SELECT sum(blks_read)::bigint FROM pg_stat_database), \
                (SELECT sum(blks_hit)::bigint FROM pg_stat_database), \
                (checkpoints_timed + checkpoints_req)::bigint, \
                buffers_backend::bigint, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint \
         FROM pg_stat_bgwriter"
    }
}

async fn pg_counters(conn: &mut sqlx::PgConnection, sql: &str, postmaster: u32) -> PgCounters {
    let (blks_read, blks_hit, checkpoints, buffers_backend, wal_bytes) =
        sqlx::query_as(sql).fetch_one(conn).await.unwrap();
    PgCounters {
        blks_read,
        blks_hit,
        checkpoints,
        buffers_backend,
        wal_bytes,
        cpu_secs: server_cpu_secs(postmaster),
    }
}

/// What the server did in a phase of `orders` orders, for the phase's line.
fn pg_phase(before: PgCounters, after: PgCounters, orders: u64) -> String {
    let per_order = |v: i64| v as f64 / orders.max(1) as f64;
    let (read, hit) = (
        after.blks_read - before.blks_read,
        after.blks_hit - before.blks_hit,
    );
    format!(
        "  PostgreSQL: CPU {:.3} ms/order; cache {:.2} blocks read from outside per order, \
         {:.2} % hit; WAL {:.1} KiB/order; checkpoints {}; backend-written buffers {:.2}/order",
        (after.cpu_secs - before.cpu_secs) * 1000.0 / orders.max(1) as f64,
        per_order(read),
        hit as f64 * 100.0 / (read + hit).max(1) as f64,
        per_order(after.wal_bytes - before.wal_bytes) / 1024.0,
        after.checkpoints - before.checkpoints,
        per_order(after.buffers_backend - before.buffers_backend),
    )
}

/// What a configuration runs: the order port and the pids to measure.
trait Target {
    fn order_port(&self) -> u16;
    fn pids(&self) -> Vec<(&'static str, u32)>;
    /// The processes whose CPU is reported per order, in groups.
    fn cpu_groups(&self) -> Vec<(&'static str, Vec<u32>)> {
        self.pids().into_iter().map(|(n, p)| (n, vec![p])).collect()
    }
}

/// CPU time (user + system) `pid` has used so far, in seconds (100 Hz ticks);
/// 0 for a process that is gone.
fn cpu_secs(pid: u32) -> f64 {
    stat_secs(pid, &[11, 12])
}

/// The sum of `fields` of /proc/`pid`/stat (counted after the command name,
/// from 0: 11 utime, 12 stime, 13 cutime, 14 cstime), as seconds of 100 Hz
/// ticks; 0 for a process that is gone.
fn stat_secs(pid: u32, fields: &[usize]) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    fields
        .iter()
        .filter_map(|i| rest.get(*i)?.parse::<f64>().ok())
        .sum::<f64>()
        / 100.0
}

/// CPU time the PostgreSQL server under `postmaster` has used so far, in
/// seconds: the postmaster's own, its children's that have exited (cutime and
/// cstime: autovacuum workers come and go) and its live children's (the
/// backends, the writers). A child that exits within a phase is counted live
/// at the start and reaped at the end, so a difference still holds all of it.
fn server_cpu_secs(postmaster: u32) -> f64 {
    let live: f64 = common::children(postmaster).into_iter().map(cpu_secs).sum();
    stat_secs(postmaster, &[11, 12, 13, 14]) + live
}

fn group_cpu(groups: &[(&'static str, Vec<u32>)]) -> Vec<f64> {
    groups
        .iter()
        .map(|(_, pids)| pids.iter().map(|p| cpu_secs(*p)).sum())
        .collect()
}

/// The whole machine's CPU time so far, from /proc/stat's first line: user,
/// nice, system, idle, iowait, irq, softirq, steal (ticks).
fn machine_ticks() -> [u64; 8] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut t = [0u64; 8];
    let fields = stat.lines().next().unwrap_or_default().split_whitespace();
    for (slot, v) in t.iter_mut().zip(fields.skip(1)) {
        *slot = v.parse().unwrap_or(0);
    }
    t
}

/// Where the machine's time went between two [`machine_ticks`], in percent:
/// busy (user, nice, system, irq, softirq), idle, iowait, and steal (the
/// hypervisor ran someone else: this VM's cores were not ours).
fn machine_split(before: [u64; 8], after: [u64; 8]) -> String {
    let d: Vec<f64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(b) as f64)
        .collect();
    let total = d.iter().sum::<f64>().max(1.0);
    let pct = |v: f64| v * 100.0 / total;
    format!(
        "busy {:.0} idle {:.0} iowait {:.0} steal {:.0}",
        pct(d[0] + d[1] + d[2] + d[5] + d[6]),
        pct(d[3]),
        pct(d[4]),
        pct(d[7])
    )
}

/// The three release binaries alone.
struct Services {
    children: Vec<(&'static str, Child)>,
    order_port: u16,
    _data: tempfile::TempDir,
}

impl Services {
    fn start(bin: &Path, pg: Option<&Postgres>) -> Self {
        let data = tempfile::tempdir().unwrap();
        let (ip, pp, op) = (free_port(), free_port(), free_port());
        let db = |svc: &str| -> Vec<String> {
            match pg {
                Some(pg) => vec!["--database-url".into(), pg.url(svc)],
                None => vec!["--data-dir".into(), data.path().display().to_string()],
            }
        };
        let spawn = |svc: &'static str, port: u16, extra: Vec<String>| {
            let child = Command::new(bin.join(svc))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(db(svc))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            (svc, child)
        };
        let children = vec![
            spawn("inventory", ip, vec![]),
            spawn("payment", pp, vec![]),
            spawn(
                "order",
                op,
                vec![
                    "--inventory-addr".into(),
                    format!("http://127.0.0.1:{ip}"),
                    "--payment-addr".into(),
                    format!("http://127.0.0.1:{pp}"),
                ],
            ),
        ];
        Self {
            children,
            order_port: op,
            _data: data,
        }
    }
}

impl Target for Services {
    fn order_port(&self) -> u16 {
        self.order_port
    }
    fn pids(&self) -> Vec<(&'static str, u32)> {
        self.children.iter().map(|(n, c)| (*n, c.id())).collect()
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap_or(0)),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        // They drain within their own bound; one that does not is killed.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for (_, c) in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The whole local mesh through scripts/mesh.
struct Mesh {
    state: tempfile::TempDir,
    bin: PathBuf,
    ports: Vec<(&'static str, u16)>,
    postgres: Option<String>,
}

impl Mesh {
    fn script(&self, arg: &str) -> std::process::Output {
        let mut cmd = Command::new(common::root().join("scripts/mesh"));
        cmd.arg(arg)
            .env("MESHWATCH_STATE", self.state.path())
            .env("MESHWATCH_BIN_DIR", &self.bin)
            .env_remove("MESHWATCH_KAFKA");
        if let Some(pg) = &self.postgres {
            cmd.env("MESHWATCH_MESH_POSTGRES", pg);
        }
        for (k, v) in &self.ports {
            cmd.env(k, v.to_string());
        }
        cmd.output().unwrap()
    }

    fn start(bin: &Path, pg: Option<&Postgres>) -> Self {
        let mesh = Self {
            state: tempfile::tempdir().unwrap(),
            bin: bin.to_owned(),
            ports: vec![
                ("MESHWATCH_ORDER_PORT", free_port()),
                ("MESHWATCH_INVENTORY_PORT", free_port()),
                ("MESHWATCH_PAYMENT_PORT", free_port()),
                ("MESHWATCH_MONITOR_PORT", free_port()),
                ("MESHWATCH_ORDER_ADMIN_PORT", free_port()),
                ("MESHWATCH_INVENTORY_ADMIN_PORT", free_port()),
                ("MESHWATCH_PAYMENT_ADMIN_PORT", free_port()),
            ],
            postgres: pg.map(|p| p.url.clone()),
        };
        let up = mesh.script("up");
        assert!(
            up.status.success(),
            "scripts/mesh up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        mesh
    }
}

impl Target for Mesh {
    fn order_port(&self) -> u16 {
        self.ports[0].1
    }
    fn pids(&self) -> Vec<(&'static str, u32)> {
        ["order", "inventory", "payment"]
            .into_iter()
            .filter_map(|name| Some((name, self.wrapped(name)?)))
            .collect()
    }
    fn cpu_groups(&self) -> Vec<(&'static str, Vec<u32>)> {
        let mut groups: Vec<(&'static str, Vec<u32>)> =
            self.pids().into_iter().map(|(n, p)| (n, vec![p])).collect();
        // Every process scripts/mesh starts is a shipper wrapping its program.
        let shippers: Vec<u32> = ["order", "inventory", "payment", "monitor"]
            .into_iter()
            .filter_map(|name| self.pid_file(&format!("pids/{name}")))
            .collect();
        groups.push(("shippers", shippers));
        groups.extend(self.pid_file("broker/pid").map(|p| ("broker", vec![p])));
        groups.extend(self.wrapped("monitor").map(|p| ("monitor", vec![p])));
        groups
    }
}

impl Mesh {
    /// The program `name`'s shipper wraps: the child of the pid in its pid file.
    fn wrapped(&self, name: &str) -> Option<u32> {
        let wrapper = self.pid_file(&format!("pids/{name}"))?;
        common::children(wrapper).first().copied()
    }

    fn pid_file(&self, path: &str) -> Option<u32> {
        std::fs::read_to_string(self.state.path().join(path))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

async fn wait_serving(port: u16) {
    use meshwatch_proto::health::v1 as health;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            let r = health::health_client::HealthClient::new(ch)
                .check(health::HealthCheckRequest::default())
                .await;
            if r.is_ok_and(|r| {
                r.into_inner().status() == health::health_check_response::ServingStatus::Serving
            }) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} never SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn place_order(
    client: pb::order_service_client::OrderServiceClient<tonic::transport::Channel>,
    run: String,
) -> impl Fn(
    u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |seq| {
        let mut client = client.clone();
        let key = format!("soak-{run}-{seq}");
        Box::pin(async move {
            let mut req = tonic::Request::new(pb::PlaceOrderRequest {
                idempotency_key: key,
                customer_id: "soak".into(),
                items: vec![pb::LineItem {
                    sku: meshwatch_meshctl::DEFAULT_LOAD_SKU.into(),
                    quantity: 1,
                }],
                currency_code: "USD".into(),
                payment_token: String::new(),
            });
            req.set_timeout(Duration::from_secs(10));
            client
                .place_order(req)
                .await
                .map(|r| format!("{:?}", r.get_ref().order.as_ref().map(|o| o.status)))
                .map_err(|s| meshwatch_proto::status::code_name(s.code() as i32).to_owned())
        })
    }
}

/// The machine's speed now: the echo server at saturation for `secs`.
async fn echo_probe(echo: &EchoClient, secs: u64) -> LoadReport {
    common::echo_load(echo, Duration::from_secs(secs), concurrency()).await
}

type OrderClient = pb::order_service_client::OrderServiceClient<tonic::transport::Channel>;

/// A client of `target`'s order service, once it is SERVING.
async fn order_client(target: &dyn Target) -> OrderClient {
    wait_serving(target.order_port()).await;
    OrderClient::new(
        tonic::transport::Endpoint::from_shared(format!(
            "http://127.0.0.1:{}",
            target.order_port()
        ))
        .unwrap()
        .connect()
        .await
        .unwrap(),
    )
}

fn phase_length() -> Duration {
    Duration::from_secs(common::env_or("SOAK_PHASE_SECONDS", 60))
}

/// Requests in flight in a phase and in the echo probe.
fn concurrency() -> usize {
    common::env_or("SOAK_CONCURRENCY", 32)
}

/// One phase: PlaceOrder at saturation for [`phase_length`], keys tagged `run`.
async fn run_phase(client: &OrderClient, run: String) -> LoadReport {
    meshwatch_meshctl::run_load(
        LoadSpec {
            rate: 0.0,
            duration: phase_length(),
            concurrency: concurrency(),
        },
        place_order(client.clone(), run),
        |_| {},
    )
    .await
}

/// Phases until SOAK_ORDERS orders; returns the last phase's throughput.
async fn soak(name: &str, started: &Started, echo: &EchoClient, echo_rps: f64) -> f64 {
    let target = started.target.as_ref();
    // On PostgreSQL, what the server does in each phase (pg_counters).
    let mut pg = match &started.postgres {
        Some(p) => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&p.admin)
                .await
                .unwrap();
            let (version,): (i32,) =
                sqlx::query_as("SELECT current_setting('server_version_num')::int")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            Some((conn, pg_counters_sql(version), p.postmaster()))
        }
        None => None,
    };
    let orders: u64 = common::env_or("SOAK_ORDERS", 500_000);
    let phase = phase_length();
    let concurrency = concurrency();
    let client = order_client(target).await;
    let rss = |pids: &[(&'static str, u32)]| {
        pids.iter()
            .map(|(n, p)| format!("{n} {:.1}", rss_mib(*p)))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let pids = target.pids();
    let groups = target.cpu_groups();
    println!("\n{name}: {orders} orders in phases of {phase:?}, concurrency {concurrency}; RSS at start (MiB): {}", rss(&pids));
    let probe_secs: u64 = common::env_or("SOAK_PROBE_SECONDS", 5);
    let (mut total, mut first_rps, mut first_adjusted, mut i) = (0u64, 0.0, 0.0, 0);
    let mut last = (0.0, 0.0);
    while total < orders {
        i += 1;
        let cpu_before = group_cpu(&groups);
        let machine_before = machine_ticks();
        let pg_before = match pg.as_mut() {
            Some((c, sql, pid)) => Some(pg_counters(c, sql, *pid).await),
            None => None,
        };
        let r = run_phase(&client, format!("{name}-{i}")).await;
        let machine = machine_split(machine_before, machine_ticks());
        let server = match (pg.as_mut(), pg_before) {
            (Some((c, sql, pid)), Some(before)) => {
                pg_phase(before, pg_counters(c, sql, *pid).await, r.completed)
            }
            _ => String::new(),
        };
        total += r.completed;
        let per_order: Vec<String> = groups
            .iter()
            .zip(group_cpu(&groups).iter().zip(&cpu_before))
            .map(|((name, _), (after, before))| {
                format!(
                    "{name} {:.3}",
                    (after - before) * 1000.0 / r.completed.max(1) as f64
                )
            })
            .collect();
        // The machine's speed right after the phase (the target idle): this
        // machine's speed drifts by a quarter within minutes, so a phase is
        // also compared with the first as a ratio to its own probe.
        let probe = echo_probe(echo, probe_secs).await.throughput();
        let adjusted = r.throughput() / probe;
        if i == 1 {
            first_rps = r.throughput();
            first_adjusted = adjusted;
        }
        last = (r.throughput() / first_rps, adjusted / first_adjusted);
        let outcomes: Vec<String> = r
            .outcomes
            .iter()
            .chain(r.errors.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{name:<18} phase {i:>2}  total {total:>7}  {:>7.1} req/s  p50 {:>6.2} ms  p99 {:>7.2} ms  errors {:>4}  vs phase 1 {:.2}  vs echo {:.3}  echo now {probe:.0} req/s, vs phase 1 at the machine's speed {:.2}  RSS MiB: {}  CPU ms/order: {}  machine %: {machine}{server}  [{}]",
            r.throughput(),
            r.latency_ms(0.5),
            r.latency_ms(0.99),
            r.error_count(),
            r.throughput() / first_rps,
            r.throughput() / echo_rps,
            adjusted / first_adjusted,
            rss(&pids),
            per_order.join("  "),
            outcomes.join(" ")
        );
    }
    println!(
        "{name}: last phase / first: {:.2}; each as a ratio to the echo probe after it: {:.2}",
        last.0, last.1
    );
    last.0 * first_rps
}

/// What one configuration runs: its processes, then the database server
/// they use (the fields drop in this order).
struct Started {
    target: Box<dyn Target>,
    postgres: Option<Postgres>,
}

async fn start(config: &str, bin: &Path) -> Started {
    let pg = match config {
        "services-sqlite" | "mesh-sqlite" => None,
        "services-postgres" | "mesh-postgres" => Some(Postgres::start().await),
        other => panic!("unknown SOAK_CONFIGS entry {other:?}"),
    };
    let target: Box<dyn Target> = if config.starts_with("mesh-") {
        Box::new(Mesh::start(bin, pg.as_ref()))
    } else {
        Box::new(Services::start(bin, pg.as_ref()))
    };
    Started {
        target,
        postgres: pg,
    }
}

/// The control: one phase on a fresh start of `config` (empty databases, a
/// new broker), run right after the soak, so at the same machine speed as its
/// last phase but with nothing accumulated. The last phase over this one is
/// what the accumulated orders cost, with the machine's drift since the first
/// phase taken out.
async fn control(config: &str, bin: &Path, last_rps: f64) {
    let fresh = start(config, bin).await;
    let client = order_client(fresh.target.as_ref()).await;
    let r = run_phase(&client, format!("{config}-control")).await;
    println!(
        "{config:<18} control: a fresh start, one phase  {:>7.1} req/s  p50 {:>6.2} ms  p99 {:>7.2} ms  errors {:>4}",
        r.throughput(),
        r.latency_ms(0.5),
        r.latency_ms(0.99),
        r.error_count(),
    );
    println!(
        "{config}: last phase / the fresh control phase after it: {:.2}",
        last_rps / r.throughput()
    );
}

#[tokio::main]
async fn main() {
    let configs: Vec<String> = std::env::var("SOAK_CONFIGS")
        .unwrap_or_else(|_| "services-sqlite,services-postgres,mesh-sqlite,mesh-postgres".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    common::build_release_binaries();
    let bin = meshwatch_testkit::bin_dir();

    // Baseline: a trivial unary server in this process, at saturation.
    let echo_client = common::start_echo().await;
    let echo_report = echo_probe(&echo_client, 10).await;
    let echo_rps = echo_report.throughput();
    println!(
        "machine: {} cores; echo baseline {echo_rps:.1} req/s, p99 {:.2} ms",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        echo_report.latency_ms(0.99)
    );

    // SIGINT or SIGTERM ends the soak through the drops below (scripts/mesh
    // down, the PostgreSQL server stopped), which a killed process would skip:
    // its mesh and server would run on.
    let mut term = signal(SignalKind::terminate()).unwrap();
    let mut int = signal(SignalKind::interrupt()).unwrap();
    let mut interrupted = std::pin::pin!(async move {
        tokio::select! {
            _ = term.recv() => ("SIGTERM", 128 + 15),
            _ = int.recv() => ("SIGINT", 128 + 2),
        }
    });
    let (echo, bin) = (&echo_client, &bin);
    for config in &configs {
        let run = async move {
            let started = start(config, bin).await;
            let last_rps = soak(config, &started, echo, echo_rps).await;
            drop(started);
            if common::env_or("SOAK_CONTROL", 1) != 0 {
                control(config, bin, last_rps).await;
            }
        };
        // Ends with the future that ended first; the other is dropped (its
        // processes and server stopped) before the exit below.
        let signal = tokio::select! {
            () = run => None,
            signal = &mut interrupted => Some(signal),
        };
        if let Some((signal, code)) = signal {
            println!("{config}: {signal}: stopped the soak and what it started");
            std::process::exit(code);
        }
    }
}

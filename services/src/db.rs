//! The database a service keeps its state in: an embedded SQLite file under
//! `--data-dir` (the default: nothing to start) or PostgreSQL at
//! `--database-url` (deployments, several replicas of one service). One
//! [`Database`] owns the pool, applies the service's migrations, and watches
//! the connection: while the database does not answer, [`Database::check`]
//! fails at once with [`DbError::Unavailable`] naming it, and the service's
//! readiness is off; both come back by themselves when it answers again.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL`: a commit is durable
//! against a crash of the process (it is in the WAL file), and a power loss
//! can lose the last commits but never corrupts the file. One connection per
//! process does the repositories' work (SQLite writes one transaction at a
//! time anyway), held by the process behind a mutex; its statements run on
//! the calling thread through rusqlite ([`sql`]), not on a driver thread of
//! their own. Writes that meet at the connection share one commit
//! ([`sqlite`]: group commit); no call returns before its commit. Write
//! transactions open with `BEGIN IMMEDIATE` so writers from other processes
//! wait (busy timeout) instead of failing on a lock upgrade.
//! Repositories reach it through [`with_conn!`] and write statements once,
//! for both databases, with [`query`]. sqlx stays for PostgreSQL and for the
//! migrations of both.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::ConnectOptions as _;
use tokio_util::sync::CancellationToken;

mod sql;
mod sqlite;
pub use sql::{query, Arg, Column, Exec, Query, Row, SqlError, Tx};

/// How often the connection is checked, and retried while it is down.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on waiting for a connection from the pool (queueing under load;
/// the in-flight RPCs are bounded by the server's concurrency limit).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one health check of the connection. A check that times out
/// twice in a row marks the database down (a refused or broken connection
/// does at once): a busy machine is not a dead database.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one statement on the PostgreSQL server (`statement_timeout`):
/// the server cancels a statement stuck on a lock or a slow plan.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on a session that sits in an open transaction doing nothing
/// (`idle_in_transaction_session_timeout`): a client that died or hung
/// mid-transaction does not hold its row locks forever.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one database call as the service waits for it (a connection
/// from the pool, then the statement), whatever the server does: a
/// database that stopped answering without closing its connections (a
/// paused process, a network partition) fails the call with
/// [`DbError::Unavailable`] instead of holding the request.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default PostgreSQL connections per process.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// How long a SQLite writer waits for another process's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the checkpointer folds SQLite's WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL frames past which the checkpointer restarts the WAL (16 MiB of
/// 4 KiB pages): see [`Checkpointer`].
const WAL_RESTART_FRAMES: i64 = 4_096;
/// WAL pages past which a commit checkpoints by itself, on the request
/// path: only when the checkpointer thread is not there (128 MiB).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 32_768;

/// Why a database operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database does not answer (down, unreachable, not migrated yet):
    /// the caller may retry later.
    #[error("database unavailable ({target}): {reason}")]
    Unavailable { target: String, reason: String },
    /// The database answered with an error that retrying will not fix.
    #[error("database error ({target}): {reason}")]
    Query { target: String, reason: String },
    /// A stored row could not be read back as a domain value.
    #[error("database row unreadable ({target}): {reason}")]
    Corrupt { target: String, reason: String },
}

/// Where a service's state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbTarget {
    /// `<data_dir>/<service>.db`, created on first start.
    Sqlite { data_dir: PathBuf },
    /// A `postgres://` URL (password included; never logged).
    Postgres { url: String, max_connections: u32 },
}

/// One service's migrations: (version, description, SQL), kept in
/// `services/migrations/<service>/` and compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migrations(pub &'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Migrations {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// A pool of either kind (migrations, shutdown, the tests' own queries).
/// Repositories do not use it: they take a [`Conn`] with [`with_conn!`].
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The connection one repository call runs on: the process's SQLite
/// connection (calls take turns; a call hands it on while it waits for its
/// group commit, and takes it again for its next statement) or one from
/// the PostgreSQL pool (back to the pool when the call ends).
pub enum Conn {
    Sqlite(sqlite::Held),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

/// Runs `$body` with `$p` bound to `&mut` a [`Conn`] of `$db` (a
/// [`Database`]). Fails the enclosing function with [`DbError`] when no
/// connection comes within [`ACQUIRE_TIMEOUT`]. Statements take `&mut *$p`.
#[macro_export]
macro_rules! with_conn {
    ($db:expr, $p:ident => $body:expr) => {{
        let mut conn = $db.connection().await?;
        let $p: &mut $crate::db::Conn = &mut conn;
        $body
    }};
}

/// Runs `$body` with `$p` bound to the concrete pool.
#[macro_export]
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}

/// Opens a write transaction on connection `$p` (from [`with_conn!`]): a
/// savepoint in the group commit on SQLite, `BEGIN` on PostgreSQL.
#[macro_export]
macro_rules! begin_write {
    ($db:expr, $p:ident) => {
        $db.bounded($crate::db::Tx::begin(&mut *$p)).await
    };
}

/// How one check of the connection failed.
enum Check {
    Slow(DbError),
    Failed(DbError),
}

struct Status {
    up: AtomicBool,
    reason: Mutex<String>,
}

/// A service's database: the pool, its display name, its health.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    /// SQLite: the connection the repositories use (see [`Conn`]).
    /// `None` inside once [`Self::close`] closed it.
    sqlite: Option<Arc<sqlite::Shared>>,
    checkpointer: Option<Arc<Checkpointer>>,
    target: Arc<str>,
    status: Arc<Status>,
    readiness: meshwatch_runtime::Readiness,
    migrations: Migrations,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.target)
            .field("up", &self.is_up())
            .finish()
    }
}

/// Why a database could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("--data-dir {dir}: {source}")]
    DataDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--data-dir: opening {file}: {reason}")]
    Sqlite { file: String, reason: String },
    #[error("--database-url: {0}")]
    Url(String),
    #[error("migrating {target}: {reason}")]
    Migrate { target: String, reason: String },
}

/// `postgres://user:secret@host:5432/db?…` → `postgres host:5432/db`.
pub fn display_url(url: &str) -> String {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or(url);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split('?').next().unwrap_or(host);
    format!("postgres {host}")
}

/// Checks a `--database-url` value; the reason names what is wrong.
pub fn parse_postgres_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{:?} is not a postgres:// URL (e.g. postgres://meshwatch:secret@127.0.0.1:5432/order)",
            display_url(url)
        ));
    }
    PgConnectOptions::from_str(url)
        .map(drop)
        .map_err(|e| format!("{} is not a valid URL: {e}", display_url(url)))
}

impl Database {
    /// Opens the database of `service` at `target` and applies
    /// `migrations`. SQLite is opened and migrated now (an error is fatal:
    /// the file cannot be made). PostgreSQL is connected lazily: when it
    /// does not answer yet, the database starts down and [`Self::supervise`]
    /// migrates it once it answers.
    pub async fn open(
        service: &str,
        target: &DbTarget,
        migrations: Migrations,
        readiness: meshwatch_runtime::Readiness,
    ) -> Result<Self, OpenError> {
        let (pool, name) = match target {
            DbTarget::Sqlite { data_dir } => {
                std::fs::create_dir_all(data_dir).map_err(|source| OpenError::DataDir {
                    dir: data_dir.display().to_string(),
                    source,
                })?;
                let file = data_dir.join(format!("{service}.db"));
                let opened = open_sqlite(&file).await.map_err(|e| OpenError::Sqlite {
                    file: file.display().to_string(),
                    reason: e.to_string(),
                })?;
                (Pool::Sqlite(opened), format!("sqlite {}", file.display()))
            }
            DbTarget::Postgres {
                url,
                max_connections,
            } => {
                // sqlx's own statement logs are off: its "slow statement"
                // warning carries fields of its own (`db.statement`,
                // `elapsed`, …) that no ECS mapping knows, and a slow disk
                // at start made one (tests/ecs_lines.rs). A slow call shows
                // as UNAVAILABLE past the bounds above instead.
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| OpenError::Url(format!("{}: {e}", display_url(url))))?
                    .disable_statement_logging()
                    .options([
                        ("statement_timeout", pg_ms(STATEMENT_TIMEOUT)),
                        (
                            "idle_in_transaction_session_timeout",
                            pg_ms(IDLE_IN_TRANSACTION_TIMEOUT),
                        ),
                    ]);
                let pool = PgPoolOptions::new()
                    .max_connections(*max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options);
                (Pool::Postgres(pool), display_url(url))
            }
        };
        let mut db = Self {
            pool,
            sqlite: None,
            checkpointer: None,
            target: name.into(),
            status: Arc::new(Status {
                up: AtomicBool::new(false),
                reason: Mutex::new("not connected yet".to_owned()),
            }),
            readiness,
            migrations,
        };
        db.readiness.set(false);
        match db.connect_and_migrate().await {
            Ok(()) => db.mark_up(),
            Err(e) if db.is_sqlite() => {
                return Err(OpenError::Migrate {
                    target: db.target.to_string(),
                    reason: e.to_string(),
                })
            }
            Err(e) => db.mark_down(&e.to_string()),
        }
        if let DbTarget::Sqlite { data_dir } = target {
            // Opened after the migrations.
            let file = data_dir.join(format!("{service}.db"));
            let failed = |e: rusqlite::Error| OpenError::Sqlite {
                file: file.display().to_string(),
                reason: e.to_string(),
            };
            let conn = open_rusqlite(&file).map_err(failed)?;
            // Checkpoints (two fsyncs each) are the checkpointer's, off the
            // request path; a commit does one only as a fallback.
            conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
                .map_err(failed)?;
            let checkpoints = open_rusqlite(&file).map_err(failed)?;
            let shared = sqlite::Shared::new(conn);
            db.checkpointer = Some(Arc::new(Checkpointer::start(
                checkpoints,
                shared.clone(),
                Cadence {
                    every: CHECKPOINT_EVERY,
                    restart_frames: WAL_RESTART_FRAMES,
                },
                db.target.clone(),
            )));
            db.sqlite = Some(shared);
        }
        Ok(db)
    }

    async fn connect_and_migrate(&self) -> Result<(), DbError> {
        let migrator = Migrator::new(self.migrations)
            .await
            .map_err(|e| self.query_error(e.to_string()))?;
        let result = with_pool!(&self.pool, p => migrator.run(p).await);
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => self.classify(&e.into()),
            other => self.query_error(other.to_string()),
        })
    }

    /// Keeps checking the connection every `interval` until `shutdown`:
    /// a database that stopped answering is marked down (readiness off, RPCs
    /// fail fast), one that answers again is migrated if it was never, and
    /// marked up.
    pub async fn supervise(self, interval: Duration, shutdown: CancellationToken) {
        let mut migrated = self.is_up();
        // Checked on a connection of its own: a pool busy with requests is
        // not a database that is down.
        let mut probe: Option<sqlx::PgConnection> = None;
        let mut slow_checks = 0u32;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let result = if migrated {
                self.ping(&mut probe).await
            } else {
                self.connect_and_migrate().await.map_err(Check::Failed)
            };
            match result {
                Ok(()) => {
                    migrated = true;
                    slow_checks = 0;
                    if !self.is_up() {
                        self.mark_up();
                    }
                }
                Err(Check::Slow(e)) => {
                    slow_checks += 1;
                    if slow_checks >= 2 {
                        self.mark_down(&e.to_string());
                    }
                }
                Err(Check::Failed(e)) => self.mark_down(&e.to_string()),
            }
        }
    }

    /// One check of a PostgreSQL server (SQLite is a local file: always
    /// there once opened).
    async fn ping(&self, probe: &mut Option<sqlx::PgConnection>) -> Result<(), Check> {
        use sqlx::Connection;
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let check = async {
            if probe.is_none() {
                *probe = Some(sqlx::PgConnection::connect_with(&pool.connect_options()).await?);
            }
            match probe.as_mut() {
                Some(conn) => sqlx::query("SELECT 1").execute(conn).await.map(drop),
                None => Ok(()),
            }
        };
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(r) => r.map_err(|e| Check::Failed(self.unavailable(e.to_string()))),
            Err(_) => Err(Check::Slow(
                self.unavailable(format!("no answer within {CHECK_TIMEOUT:?}")),
            )),
        };
        if result.is_err() {
            // Reconnect next time.
            *probe = None;
        }
        result
    }

    fn mark_up(&self) {
        let was = self.status.up.swap(true, Ordering::SeqCst);
        if !was {
            tracing::info!(meshwatch.database = %self.target, "database available");
        }
        self.readiness.set(true);
    }

    fn mark_down(&self, reason: &str) {
        let was = self.status.up.swap(false, Ordering::SeqCst);
        *self
            .status
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason.to_owned();
        if was {
            tracing::error!(meshwatch.database = %self.target, error.message = %reason, "database unavailable; requests fail with UNAVAILABLE until it answers again");
        }
        self.readiness.set(false);
    }

    pub fn is_up(&self) -> bool {
        self.status.up.load(Ordering::SeqCst)
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.pool, Pool::Sqlite(_))
    }

    /// SQL for the database server's clock, in milliseconds since the Unix
    /// epoch: one clock for every replica that shares the database.
    pub fn now_ms_sql(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Pool::Postgres(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The pool (migrations, shutdown, tests); repositories use
    /// [`Self::connection`] through [`with_conn!`].
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection for one repository call, within [`ACQUIRE_TIMEOUT`].
    pub async fn connection(&self) -> Result<Conn, DbError> {
        match (&self.pool, &self.sqlite) {
            (_, Some(shared)) => shared
                .lock(ACQUIRE_TIMEOUT)
                .await
                .map(Conn::Sqlite)
                .map_err(|e| self.classify(&e.into())),
            (Pool::Postgres(pool), None) => self.bounded(pool.acquire()).await.map(Conn::Postgres),
            // Only before `open` returns.
            (Pool::Sqlite(_), None) => Err(self.unavailable("not opened yet".to_owned())),
        }
    }

    /// The database's name for messages (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Fails at once while the database is known to be down.
    pub fn check(&self) -> Result<(), DbError> {
        if self.is_up() {
            return Ok(());
        }
        let reason = self
            .status
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Err(self.unavailable(format!("{reason}; retry later")))
    }

    /// Maps a driver error. A lost connection marks the database down at
    /// once (the checker brings it back); a busy database (no connection
    /// free in time, locked) is UNAVAILABLE for this request only.
    pub fn classify(&self, e: &SqlError) -> DbError {
        use sqlx::Error as E;
        let e = match e {
            SqlError::Sqlx(e) => e,
            SqlError::Unavailable(reason) => return self.unavailable(reason.clone()),
            SqlError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                use rusqlite::ErrorCode as C;
                return match f.code {
                    // Locked by another process past the busy timeout, or
                    // the disk failing or full: retry later.
                    C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::FileLockingProtocolFailed
                    | C::SystemIoFailure
                    | C::DiskFull
                    | C::CannotOpen => self.unavailable(e.to_string()),
                    _ => self.query_error(e.to_string()),
                };
            }
            other => return self.query_error(other.to_string()),
        };
        let (unavailable, down) = match e {
            E::Io(_) | E::Tls(_) | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
                (true, true)
            }
            E::PoolTimedOut => (true, false),
            E::Database(d) => match d.code() {
                // PostgreSQL: connection exceptions (08…), shutting down or
                // starting (57P…).
                Some(c) if c.starts_with("08") || c.starts_with("57P") => (true, true),
                // PostgreSQL: too many connections; SQLite: busy or locked
                // beyond the busy timeout.
                Some(c) if c == "53300" || c == "5" || c == "6" => (true, false),
                _ => (false, false),
            },
            _ => (false, false),
        };
        if down {
            self.mark_down(&e.to_string());
        }
        if unavailable {
            self.unavailable(e.to_string())
        } else {
            self.query_error(e.to_string())
        }
    }

    /// Runs one database call within [`CALL_TIMEOUT`]; past it the call is
    /// dropped (its connection goes back to the pool to be reset) and the
    /// request fails with [`DbError::Unavailable`] naming the database.
    /// Errors are classified as by [`Self::track`].
    pub async fn bounded<T, E: Into<SqlError>>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, DbError> {
        self.track(self.within(call).await?)
    }

    /// [`Self::bounded`] leaving the driver's error to the caller (to tell
    /// a unique violation from a failure).
    pub async fn within<T, E: Into<SqlError>>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<Result<T, SqlError>, DbError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(r) => Ok(r.map_err(Into::into)),
            Err(_) => {
                Err(self.unavailable(format!("no answer within {CALL_TIMEOUT:?}; retry later")))
            }
        }
    }

    /// `Ok` or the classified error.
    pub fn track<T, E: Into<SqlError>>(&self, r: Result<T, E>) -> Result<T, DbError> {
        r.map_err(|e| self.classify(&e.into()))
    }

    pub fn unavailable(&self, reason: String) -> DbError {
        DbError::Unavailable {
            target: self.target.to_string(),
            reason,
        }
    }

    pub fn query_error(&self, reason: String) -> DbError {
        DbError::Query {
            target: self.target.to_string(),
            reason,
        }
    }

    pub fn corrupt(&self, reason: String) -> DbError {
        DbError::Corrupt {
            target: self.target.to_string(),
            reason,
        }
    }

    /// Closes the connection and the pool (at shutdown); later calls are UNAVAILABLE.
    pub async fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop().await;
        }
        if let Some(shared) = &self.sqlite {
            // Waits for the call in progress and commits the open group; a
            // clean close folds the WAL into the database file.
            if let Some(conn) = shared.close().await {
                if let Err((_, e)) = conn.close() {
                    tracing::warn!(meshwatch.database = %self.target, error.message = %e, "closing the database connection failed; the next start recovers from the WAL");
                }
            }
        }
        with_pool!(&self.pool, p => p.close().await);
    }
}

/// A thread with a SQLite connection of its own that keeps the WAL folded
/// into the database file, off the request path:
///
/// - every interval, `wal_checkpoint(PASSIVE)` on its own connection: it
///   copies the frames written so far and syncs the file while requests go
///   on writing (the bulk of the work, fsyncs included);
/// - once the WAL holds more than `restart_frames`, a second passive pass
///   (it folds in and syncs what came during the first), then it takes the
///   repositories' connection for a moment (requests wait their turn
///   asynchronously; the group commit open on it is committed first) and
///   runs `wal_checkpoint(RESTART)` on it. That folds in the last few
///   milliseconds' frames, and the next commit writes the WAL from its
///   start again. (Without that moment, under steady writes the passive
///   pass never catches the last frames, and SQLite restarts a WAL only
///   when it is fully folded in: the WAL would grow until a commit
///   checkpointed it on the request path.) RESTART, not TRUNCATE: the file
///   keeps its size for the next round, where truncating it (and, on a
///   filesystem mounted with `discard`, discarding its blocks) held the
///   connection for ~25 ms each time, and requests with it (2026-12-02,
///   `docs/benchmarks.md`).
///
/// Stops when told or when the last [`Database`] clone drops.
struct Checkpointer {
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Times the WAL was restarted from its start, and times that was tried.
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests watch it"))]
    restarts: Arc<std::sync::atomic::AtomicU64>,
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests watch it"))]
    attempts: Arc<std::sync::atomic::AtomicU64>,
}

/// How often the checkpointer runs, and from what WAL size it restarts it.
#[derive(Clone, Copy, Debug)]
struct Cadence {
    every: Duration,
    restart_frames: i64,
}

type Shared = Arc<sqlite::Shared>;

/// `PRAGMA wal_checkpoint(MODE)`: (busy, WAL frames, frames folded in).
fn checkpoint(conn: &rusqlite::Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

impl Checkpointer {
    fn start(
        conn: rusqlite::Connection,
        shared: Shared,
        cadence: Cadence,
        target: Arc<str>,
    ) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let restarts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = restarts.clone();
        let tried = attempts.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                let mut failing = false;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(cadence.every)
                {
                    let r = checkpoint(&conn, "PASSIVE").and_then(|(_, first, _)| {
                        if first <= cadence.restart_frames {
                            return Ok(());
                        }
                        // Once more, still off the lock: it folds in (and
                        // syncs) what came during the first pass, so that
                        // the pass under the lock below has only the last
                        // few milliseconds' frames to sync and copy.
                        let (_, log, folded) = checkpoint(&conn, "PASSIVE")?;
                        if log == first && log == folded {
                            // Nothing written since the first pass, all
                            // folded in: idle. (After a RESTART the header
                            // counts the old frames until the next commit.)
                            // Folded in while writes go on is not enough:
                            // a write transaction open during the pass
                            // does not restart the WAL, nor do the ones
                            // after it.
                            return Ok(());
                        }
                        // Not from a runtime thread: this one is ours.
                        // The group open on it is committed first.
                        let Some(mut guard) = shared.blocking_lock() else {
                            return Ok(()); // closed
                        };
                        let Some(main) = guard.as_mut().map(|s| s.conn()) else {
                            return Ok(());
                        };
                        // Never waits: a reader elsewhere (a second process, a
                        // sqlite3 shell) makes it give up at once (busy) and try
                        // again next time, instead of holding the connection for
                        // the busy timeout.
                        main.busy_timeout(Duration::ZERO)?;
                        let restarted = checkpoint(main, "RESTART");
                        main.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
                        tried.fetch_add(1, Ordering::SeqCst);
                        let (busy, log, folded) = restarted?;
                        if busy == 0 && log == folded {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    });
                    match r {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(meshwatch.database = %target, error.message = %e, "checkpointing the WAL failed; trying again (commits checkpoint by themselves past 128 MiB)");
                        }
                        Err(_) => {}
                    }
                }
            })
            .ok();
        if thread.is_none() {
            tracing::warn!("no checkpointer thread could be started; commits checkpoint by themselves past 128 MiB");
        }
        Self {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(thread),
            restarts,
            attempts,
        }
    }

    /// Stops the thread and waits for it (a checkpoint in progress ends).
    async fn stop(&self) {
        drop(
            self.stop
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The repositories' connection: the settings of [`open_sqlite`] (WAL is a
/// property of the file, set there).
fn open_rusqlite(file: &Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    let conn = rusqlite::Connection::open(file)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

async fn open_sqlite(file: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
        // See the PostgreSQL options.
        .disable_statement_logging();
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // One local connection: nothing to test before each use.
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
}

/// The wall clock in milliseconds the repositories stamp rows with (one
/// clock across replicas and restarts); tests set it by hand.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<std::sync::atomic::AtomicI64>),
}

impl Clock {
    /// A hand-set clock starting at `ms`.
    pub fn manual(ms: i64) -> Self {
        Self::Manual(Arc::new(std::sync::atomic::AtomicI64::new(ms)))
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System => now_ms(),
            Self::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock on (no effect on the system clock).
    pub fn advance(&self, d: Duration) {
        if let Self::Manual(t) = self {
            t.fetch_add(ms(d), Ordering::SeqCst);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration as a PostgreSQL setting value in milliseconds ("3000ms").
fn pg_ms(d: Duration) -> String {
    format!("{}ms", ms(d))
}

/// A duration in milliseconds, saturating.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Rows deleted per statement by retention: small enough that a batch
/// never holds the database for long.
pub const RETENTION_BATCH: i64 = 500;
/// How often retention runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Runs `sweep(cutoff_ms)` every `every` until `shutdown`, where `cutoff` is
/// `retention` ago; `sweep` deletes one batch and returns how many rows it
/// deleted, and is called again at once while batches come back full.
pub async fn run_retention<F, Fut>(
    what: &'static str,
    retention: Duration,
    every: Duration,
    shutdown: CancellationToken,
    mut sweep: F,
) where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = Result<u64, DbError>>,
{
    loop {
        let cutoff = now_ms().saturating_sub(ms(retention));
        let mut total = 0u64;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match sweep(cutoff).await {
                Ok(n) => {
                    total += n;
                    if n < u64::try_from(RETENTION_BATCH).unwrap_or(u64::MAX) {
                        break;
                    }
                    // Let requests in between batches.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error.message = %e, "retention of {what} failed; trying again later");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                retention.deleted = total,
                "deleted {what} finished longer than the retention ago"
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// A fresh SQLite database of `service` in a temporary folder (unit tests).
#[cfg(test)]
pub(crate) async fn test_sqlite(
    service: &str,
    migrations: Migrations,
) -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = Database::open(
        service,
        &DbTarget::Sqlite {
            data_dir: dir.path().to_owned(),
        },
        migrations,
        meshwatch_runtime::Readiness::default(),
    )
    .await
    .expect("a SQLite database in a temporary folder");
    (db, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            display_url("postgres://u:secret@db:5432/order?sslmode=disable"),
            "postgres db:5432/order"
        );
        assert!(parse_postgres_url("mysql://x").is_err());
        assert!(parse_postgres_url("postgres://u:p@127.0.0.1:5432/order").is_ok());
    }

    /// `e` came after `bound` (and before twice it), as UNAVAILABLE naming `db`.
    fn assert_unavailable_after(db: &Database, e: &DbError, waited: Duration, bound: Duration) {
        assert!(waited >= bound && waited < bound * 2, "{waited:?}");
        assert!(matches!(e, DbError::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains(db.target()), "{e}");
    }

    #[tokio::test]
    async fn a_call_the_database_never_answers_fails_as_unavailable_naming_it() {
        let (db, _dir) = test_sqlite("order", crate::order::MIGRATIONS).await;
        // Opened on real time (SQLite opens on a blocking thread); the wait
        // on paused time.
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        let e = db
            .bounded(std::future::pending::<Result<(), sqlx::Error>>())
            .await
            .unwrap_err();
        assert_unavailable_after(&db, &e, started.elapsed(), CALL_TIMEOUT);
    }

    #[tokio::test]
    async fn calls_take_turns_on_the_sqlite_connection_and_a_stuck_one_makes_the_next_unavailable()
    {
        let (db, _dir) = test_sqlite("order", crate::order::MIGRATIONS).await;
        // Two calls in a row on the one connection; each sees the other's commit.
        async fn count(db: &Database) -> Result<i64, DbError> {
            let rows = with_conn!(db, p => db.bounded(
                query("SELECT COUNT(*) AS n FROM orders").fetch_all(&mut *p),
            ).await?);
            db.track(rows[0].try_get("n"))
        }
        assert_eq!(count(&db).await.unwrap(), 0);
        let held = db.connection().await.unwrap();
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        let e = count(&db).await.unwrap_err();
        assert_unavailable_after(&db, &e, started.elapsed(), ACQUIRE_TIMEOUT);
        assert!(e.to_string().contains("busy"), "{e}");
        drop(held);
        tokio::time::resume();
        assert_eq!(count(&db).await.unwrap(), 0);
        // Closed (shutdown): calls fail at once, saying so.
        db.close().await;
        let e = count(&db).await.unwrap_err();
        assert!(e.to_string().contains("stopping"), "{e}");
    }
    /// One autocommit statement on the repositories' connection.
    async fn write(db: &Database, sql: &'static str) {
        let mut c = db.connection().await.unwrap();
        query(sql).execute(&mut c).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_writes_the_checkpointer_keeps_restarting_the_wal_and_stops_at_close() {
        let (db, dir) = test_sqlite("order", crate::order::MIGRATIONS).await;
        // A checkpointer of its own, quick and with a small bound, in place
        // of the default one.
        db.checkpointer.as_ref().unwrap().stop().await;
        let file = dir.path().join("order.db");
        let restart_frames = 64;
        let checkpointer = Checkpointer::start(
            open_rusqlite(&file).unwrap(),
            db.sqlite.clone().unwrap(),
            Cadence {
                every: Duration::from_millis(10),
                restart_frames,
            },
            db.target.clone(),
        );
        {
            let mut c = db.connection().await.unwrap();
            let Conn::Sqlite(held) = &mut c else { panic!() };
            let conn = held.held().unwrap().conn();
            let fallback: i64 = conn
                .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .unwrap();
            assert_eq!(fallback, i64::from(WAL_AUTOCHECKPOINT_PAGES));
            conn.execute_batch("CREATE TABLE filler (x TEXT)").unwrap();
        }
        // Steady writes, one page each, never a pause for a passive
        // checkpoint to catch up: far below the commit fallback, only the
        // checkpointer's restarts keep the WAL small. Four writers at once,
        // so that group commits are open while the checkpointer runs (a
        // pass that folds everything in while a group is open does not
        // let SQLite restart the WAL). Bounded: until three restarts, at
        // most 20,000 commits per writer.
        let wal = dir.path().join("order.db-wal");
        let page = 4096u64;
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let mut commits = 0;
                    while !done.load(Ordering::SeqCst) {
                        assert!(
                            commits < 20_000,
                            "fewer than 3 WAL restarts in {commits} commits"
                        );
                        write(&db, "INSERT INTO filler VALUES (hex(randomblob(1500)))").await;
                        commits += 1;
                    }
                })
            })
            .collect();
        let mut largest = 0u64;
        while checkpointer.restarts.load(Ordering::SeqCst) < 3 {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            if writers.iter().any(tokio::task::JoinHandle::is_finished) {
                break; // one failed: its panic is reported below
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        done.store(true, Ordering::SeqCst);
        for w in writers {
            w.await.unwrap();
        }
        // Restarted: never near the fallback (128 MiB).
        assert!(
            largest < 100 * u64::try_from(restart_frames).unwrap() * page,
            "the WAL reached {largest} bytes"
        );
        checkpointer.stop().await;
        assert!(
            checkpointer.thread.lock().unwrap().is_none(),
            "joined at stop"
        );
        db.close().await;
        // The last connection's close folded in and removed the WAL.
        assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_elsewhere_never_makes_the_checkpointer_hold_the_connection() {
        let (db, dir) = test_sqlite("order", crate::order::MIGRATIONS).await;
        db.checkpointer.as_ref().unwrap().stop().await;
        let file = dir.path().join("order.db");
        let checkpointer = Checkpointer::start(
            open_rusqlite(&file).unwrap(),
            db.sqlite.clone().unwrap(),
            Cadence {
                every: Duration::from_millis(10),
                restart_frames: 8,
            },
            db.target.clone(),
        );
        {
            let mut c = db.connection().await.unwrap();
            query("CREATE TABLE filler (x TEXT)")
                .execute(&mut c)
                .await
                .unwrap();
        }
        // Another connection holds a read snapshot (a sqlite3 shell, say):
        // the WAL cannot be restarted while it reads.
        let reader = open_rusqlite(&file).unwrap();
        reader
            .execute_batch("BEGIN; SELECT COUNT(*) FROM filler;")
            .unwrap();
        // Writes keep the WAL past the bound, so the checkpointer keeps
        // trying; each write still gets the connection at once (waiting the
        // 5 s busy timeout under the connection's lock would fail this).
        let mut writes = 0;
        while checkpointer.attempts.load(Ordering::SeqCst) < 3 {
            assert!(writes < 2_000, "fewer than 3 attempts in {writes} writes");
            let mut c = tokio::time::timeout(Duration::from_secs(1), db.connection())
                .await
                .expect("the connection within 1 s while a reader is open")
                .unwrap();
            query("INSERT INTO filler VALUES (hex(randomblob(1500)))")
                .execute(&mut c)
                .await
                .unwrap();
            writes += 1;
        }
        assert_eq!(checkpointer.restarts.load(Ordering::SeqCst), 0);
        reader.execute_batch("COMMIT").unwrap();
        // Once the reader is gone, the WAL is restarted again (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while checkpointer.restarts.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no restart within 10 s"
            );
            write(&db, "INSERT INTO filler VALUES ('x')").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        checkpointer.stop().await;
        db.close().await;
    }

    /// On the PostgreSQL server of `MESHWATCH_TEST_POSTGRES` when set.
    #[tokio::test]
    async fn postgres_sessions_carry_statement_and_idle_transaction_timeouts() {
        use sqlx::Connection;
        let Ok(url) = std::env::var("MESHWATCH_TEST_POSTGRES") else {
            return;
        };
        let name = format!("t_db_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let mut admin = sqlx::PgConnection::connect(url.trim()).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = url.trim().rsplit_once('/').unwrap().0;
        let db = Database::open(
            "order",
            &DbTarget::Postgres {
                url: format!("{base}/{name}"),
                max_connections: 2,
            },
            crate::order::MIGRATIONS,
            meshwatch_runtime::Readiness::default(),
        )
        .await
        .unwrap();
        let Pool::Postgres(p) = db.pool() else {
            panic!()
        };
        let show = |what: &'static str| async move {
            sqlx::query_scalar::<_, String>(&format!("SHOW {what}"))
                .fetch_one(p)
                .await
                .unwrap()
        };
        assert_eq!(show("statement_timeout").await, "3s");
        assert_eq!(show("idle_in_transaction_session_timeout").await, "10s");
        // A statement past the bound is cancelled by the server.
        let e = db
            .bounded(sqlx::query("SELECT pg_sleep(4)").execute(p))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("statement timeout"), "{e}");
        db.close().await;
    }
}

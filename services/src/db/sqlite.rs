//! The repositories' SQLite connection, shared by the process's calls, and
//! its group commit.
//!
//! One connection does all the repositories' work (SQLite writes one
//! transaction at a time anyway); calls take turns on it behind an async
//! mutex. A commit is what costs: SQLite writes every page the transaction
//! touched to the WAL (4 KiB each, a `pwrite` each), and the order
//! service's three writes per order came to 46 KB of WAL. So writes that
//! meet at the connection share one commit:
//!
//! - A write that finds no transaction open opens one (`BEGIN IMMEDIATE`):
//!   the group. Writes that come while it is open run inside it; an
//!   explicit transaction ([`super::Tx`]) is a savepoint in it, so its
//!   rollback undoes its own statements only.
//! - A call that ran in the group hands the connection on. When another
//!   call is waiting for the connection, the group stays open for it;
//!   otherwise (or once the group holds [`MAX_MEMBERS`] calls or is
//!   [`MAX_OPEN`] old) the call commits it.
//! - No call returns before the group it ran in has committed: its caller
//!   never sees a write that a crash could still undo, nor an answer that
//!   read one. A read that finds no group open runs at once on committed
//!   data, as before.
//! - A group whose commit fails fails every call in it, with SQLite's
//!   error; nothing of it is kept. So does a call whose error made SQLite
//!   roll back the whole transaction (a full disk, an I/O error).
//! - A call hands the connection on while it waits, and takes it again for
//!   its next statement: two statements of one call are atomic only in a
//!   [`super::Tx`].
//!
//! Under load, the pages every order touches (the table's last page, the
//! stock rows, the index ends) are written once per group instead of once
//! per call, and a lone call commits at once, as it did.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::sql::SqlError;

/// Calls one group holds at most before one of them commits it.
pub const MAX_MEMBERS: usize = 32;
/// How long a group stays open at most before a call commits it: about the
/// most a call waits for the calls after it. 0.5, 1, 2 and 4 ms were
/// tried at saturation (docs/benchmarks.md): 4 ms left the machine idler,
/// below 2 ms the figures were within the runs' noise.
pub const MAX_OPEN: Duration = Duration::from_millis(2);
/// A call waiting for its group's commit takes the connection (and so
/// commits the group) after this long: for when the call the group was
/// left open for went away (its client hung up) and no other comes.
const FALLBACK: Duration = Duration::from_millis(20);

/// How a group ended, for each call in it.
type Outcome = Option<Result<(), Failure>>;

/// A failed group commit, as told to each call in the group.
#[derive(Clone, Debug)]
struct Failure {
    /// SQLite's extended result code (`SQLITE_ERROR` when it had none).
    code: c_int,
    message: String,
}

impl Failure {
    fn of(e: &rusqlite::Error) -> Self {
        let code = match e {
            rusqlite::Error::SqliteFailure(f, _) => f.extended_code,
            _ => rusqlite::ffi::SQLITE_ERROR,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }

    fn error(&self) -> SqlError {
        SqlError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(self.code),
            Some(format!(
                "the group commit this call's work was in failed: {}",
                self.message
            )),
        ))
    }
}

/// The group open on the connection.
struct Group {
    members: usize,
    opened: Instant,
    done: watch::Sender<Outcome>,
}

/// The connection and the group open on it.
pub struct State {
    conn: rusqlite::Connection,
    group: Option<Group>,
}

/// The connection behind its mutex, with the count of calls waiting for it.
pub struct Shared {
    state: Arc<tokio::sync::Mutex<Option<State>>>,
    waiting: AtomicUsize,
    /// [`MAX_MEMBERS`] and [`MAX_OPEN`] (tests set others).
    max_members: usize,
    max_open: Duration,
    stats: Stats,
}

/// Counts for tests and benchmarks.
#[derive(Default)]
pub struct Stats {
    /// Groups committed.
    pub commits: AtomicU64,
    /// Calls whose work went into a group.
    pub members: AtomicU64,
}

/// Why the connection could not be had.
pub enum LockError {
    /// Not within the bound: other calls held it.
    Busy(Duration),
    /// Closed: the service is stopping.
    Closed,
}

impl Shared {
    pub fn new(conn: rusqlite::Connection) -> Arc<Self> {
        Self::with_limits(conn, MAX_MEMBERS, MAX_OPEN)
    }

    fn with_limits(
        conn: rusqlite::Connection,
        max_members: usize,
        max_open: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Arc::new(tokio::sync::Mutex::new(Some(State { conn, group: None }))),
            waiting: AtomicUsize::new(0),
            max_members,
            max_open,
            stats: Stats::default(),
        })
    }

    #[cfg_attr(not(test), expect(dead_code, reason = "the tests watch it"))]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The connection for one call, within `bound`.
    pub async fn lock(self: &Arc<Self>, bound: Duration) -> Result<Held, LockError> {
        let guard = {
            let _waiting = Waiting::count(self);
            tokio::time::timeout(bound, self.state.clone().lock_owned())
                .await
                .map_err(|_| LockError::Busy(bound))?
        };
        if guard.is_none() {
            return Err(LockError::Closed);
        }
        Ok(Held {
            shared: self.clone(),
            guard: Some(guard),
        })
    }

    /// The connection from a thread that is not the runtime's (the
    /// checkpointer), with the group open on it committed first; `None`
    /// once closed.
    pub fn blocking_lock(self: &Arc<Self>) -> Option<tokio::sync::OwnedMutexGuard<Option<State>>> {
        let mut guard = self.state.clone().blocking_lock_owned();
        let state = guard.as_mut()?;
        state.commit(&self.stats);
        Some(guard)
    }

    /// Takes the connection away for good (shutdown), once the call in
    /// progress ends, with the group open on it committed.
    pub async fn close(&self) -> Option<rusqlite::Connection> {
        let mut state = self.state.lock().await.take()?;
        state.commit(&self.stats);
        Some(state.conn)
    }

    /// Commits the open group if no call holds the connection or waits
    /// for it: for a call that goes away (its future dropped) while the
    /// group was left open for it, or while it waited in the group.
    fn commit_if_idle(&self) {
        if self.waiting.load(Ordering::SeqCst) != 0 {
            return; // that call commits it
        }
        if let Ok(mut guard) = self.state.try_lock() {
            if let Some(state) = guard.as_mut() {
                state.commit(&self.stats);
            }
        } // else the holder does, when it hands the connection on
    }
}

/// Counts a call waiting for the connection while it waits; a wait given
/// up (the call's future dropped) commits a group left open for it.
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    fn count(shared: &'a Shared) -> Self {
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        // Right after the lock was had, the caller holds it: no-op.
        self.0.commit_if_idle();
    }
}

impl State {
    pub fn conn(&mut self) -> &mut rusqlite::Connection {
        &mut self.conn
    }

    /// Opens a group unless one is open.
    fn open(&mut self) -> Result<(), SqlError> {
        if self.group.is_some() {
            return Ok(());
        }
        if !self.conn.is_autocommit() {
            // Left by a failed ROLLBACK: nothing of it may commit later.
            self.conn.execute_batch("ROLLBACK")?;
        }
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        self.group = Some(Group {
            members: 0,
            opened: Instant::now(),
            done: watch::Sender::new(None),
        });
        Ok(())
    }

    /// After an error (`cause`, when known): when SQLite rolled back the
    /// whole transaction (it does on a full disk, an I/O error, …), the
    /// group is gone; every call in it is told, with the cause's code
    /// (I/O error when not known: a transient failure, retried later).
    fn check_lost(&mut self, cause: Option<&SqlError>) {
        if self.group.is_some() && self.conn.is_autocommit() {
            let failure = match cause {
                Some(SqlError::Sqlite(e)) => Failure::of(e),
                _ => Failure {
                    code: rusqlite::ffi::SQLITE_IOERR,
                    message: "SQLite rolled back the transaction after an error".to_owned(),
                },
            };
            self.end(Err(failure));
        }
    }

    /// Rolls back whatever is open and fails the group: for when the
    /// connection's state is not what the group says (a savepoint that
    /// could not be undone, a transaction no group knows of).
    fn abandon(&mut self, why: &rusqlite::Error) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error.message = %e, "rolling back an abandoned transaction failed");
            }
        }
        self.end(Err(Failure::of(why)));
    }

    /// Makes the calling call a member of the open group: it waits for
    /// what the returned receiver says. Commits the group now when it is
    /// full or old. `None` when no group is open (nothing to wait for).
    fn join(&mut self, shared: &Shared) -> Option<watch::Receiver<Outcome>> {
        let group = self.group.as_mut()?;
        group.members += 1;
        shared.stats.members.fetch_add(1, Ordering::Relaxed);
        let joined = group.done.subscribe();
        if group.members >= shared.max_members || group.opened.elapsed() >= shared.max_open {
            self.commit(&shared.stats);
        }
        Some(joined)
    }

    /// Commits the open group, if any, and tells its calls.
    fn commit(&mut self, stats: &Stats) {
        if self.group.is_none() {
            return;
        }
        let committed = match self.conn.prepare_cached("COMMIT") {
            Ok(mut s) => s.execute([]).map(drop),
            Err(e) => Err(e),
        };
        let outcome = match committed {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // A failed COMMIT can leave the transaction open (a
                // deferred constraint): nothing of the group is kept.
                if !self.conn.is_autocommit() {
                    if let Err(r) = self.conn.execute_batch("ROLLBACK") {
                        tracing::warn!(error.message = %r, "rolling back a failed group commit failed");
                    }
                }
                Err(Failure::of(&e))
            }
        };
        self.end(outcome);
    }

    fn end(&mut self, outcome: Result<(), Failure>) {
        if let Some(group) = self.group.take() {
            group.done.send_replace(Some(outcome));
        }
    }
}

/// The connection held by one call (`None` inside while the call waits for
/// its group; the next statement takes it again).
pub struct Held {
    shared: Arc<Shared>,
    guard: Option<tokio::sync::OwnedMutexGuard<Option<State>>>,
}

impl Held {
    /// The connection, taken again if this call handed it on.
    pub async fn state(&mut self, bound: Duration) -> Result<&mut State, SqlError> {
        if self.guard.is_none() {
            let mut again = self.shared.lock(bound).await.map_err(SqlError::from)?;
            self.guard = again.guard.take();
        }
        self.held()
            .ok_or_else(|| SqlError::Unavailable("closed: the service is stopping".to_owned()))
    }

    /// The connection while this call holds it.
    pub fn held(&mut self) -> Option<&mut State> {
        self.guard.as_mut().and_then(|g| g.as_mut())
    }

    /// Runs one statement (`sql`, by `run`) as a call of its own: a write
    /// goes into the open group (opening one); then, when a group is open,
    /// waits for its commit.
    pub async fn statement<T>(
        &mut self,
        sql: &str,
        bound: Duration,
        run: impl FnOnce(&mut rusqlite::Connection) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let state = self.state(bound).await?;
        let writes = !state.conn.prepare_cached(sql)?.readonly();
        if writes {
            state.open()?;
        }
        let out = run(&mut state.conn);
        if let Err(e) = &out {
            state.check_lost(Some(e));
        }
        let settled = self.settle().await;
        let out = out?;
        settled.map(|()| out)
    }

    /// Opens the savepoint of an explicit transaction in the open group
    /// (opening one).
    pub async fn savepoint(&mut self, bound: Duration) -> Result<(), SqlError> {
        let state = self.state(bound).await?;
        state.open()?;
        state.conn.prepare_cached("SAVEPOINT tx")?.execute([])?;
        Ok(())
    }

    /// Ends the savepoint: keeps its work in the group, or undoes it.
    /// Synchronous (also used on drop); [`Self::settle`] waits for the group.
    pub fn end_savepoint(&mut self, keep: bool) -> Result<(), SqlError> {
        let Some(state) = self.held() else {
            return Ok(());
        };
        if state.group.is_none() || state.conn.is_autocommit() {
            // SQLite rolled everything back already.
            state.check_lost(None);
            return Err(SqlError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some("SQLite rolled back the transaction after an error".to_owned()),
            )));
        }
        let run = |sql: &str| state.conn.prepare_cached(sql)?.execute([]).map(drop);
        let r = if keep {
            run("RELEASE tx")
        } else {
            run("ROLLBACK TO tx").and_then(|()| run("RELEASE tx"))
        };
        if let Err(e) = &r {
            // The savepoint may stay open inside the group, half done:
            // nothing of the group may commit.
            state.abandon(e);
        }
        r.map_err(SqlError::from)
    }

    /// Joins the open group, hands the connection on, and waits until the
    /// group has committed (at once when no group is open).
    pub async fn settle(&mut self) -> Result<(), SqlError> {
        let shared = self.shared.clone();
        let Some(state) = self.held() else {
            return Ok(());
        };
        let Some(done) = state.join(&shared) else {
            return Ok(());
        };
        self.release();
        wait(&shared, done).await
    }

    /// Hands the connection on; commits the open group first unless a call
    /// is waiting for the connection (it goes on in the group) and the
    /// group is neither full nor old.
    fn release(&mut self) {
        let shared = &self.shared;
        if let Some(mut guard) = self.guard.take() {
            if let Some(state) = guard.as_mut() {
                let keep_open = state.group.as_ref().is_some_and(|g| {
                    shared.waiting.load(Ordering::SeqCst) != 0
                        && g.members < shared.max_members
                        && g.opened.elapsed() < shared.max_open
                });
                if !keep_open {
                    state.commit(&shared.stats);
                }
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// Until the group has ended, as `done` tells; past [`FALLBACK`] at a time,
/// has it committed.
async fn wait(shared: &Arc<Shared>, mut done: watch::Receiver<Outcome>) -> Result<(), SqlError> {
    // A member that goes away while it waits (its future dropped) commits
    // the group if no one else is left to.
    struct Member<'a>(&'a Shared);
    impl Drop for Member<'_> {
        fn drop(&mut self) {
            self.0.commit_if_idle();
        }
    }
    let _member = Member(shared);
    loop {
        if let Some(outcome) = done.borrow_and_update().clone() {
            return outcome.map_err(|f| f.error());
        }
        match tokio::time::timeout(FALLBACK, done.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(SqlError::Unavailable(
                    "the connection closed before this call's group committed".to_owned(),
                ))
            }
            Err(_) => {
                // Taking the connection and handing it on commits the
                // open group, unless a call is waiting for it (that call
                // then does).
                drop(
                    shared
                        .lock(super::ACQUIRE_TIMEOUT)
                        .await
                        .map_err(SqlError::from)?,
                );
            }
        }
    }
}

impl From<LockError> for SqlError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Busy(bound) => SqlError::Unavailable(format!(
                "the connection stayed busy for {bound:?}; retry later"
            )),
            LockError::Closed => {
                SqlError::Unavailable("closed: the service is stopping".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{query, Conn, Tx};
    use std::future::Future as _;

    const BOUND: Duration = Duration::from_secs(5);

    /// A connection to a new file with `schema`, behind a [`Shared`] that
    /// never commits a group early; and a second connection to read what
    /// is committed.
    fn open(schema: &str) -> (Arc<Shared>, rusqlite::Connection, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let conn = super::super::open_rusqlite(&file).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        conn.execute_batch(schema).unwrap();
        let reader = super::super::open_rusqlite(&file).unwrap();
        (
            Shared::with_limits(conn, usize::MAX, Duration::from_secs(3600)),
            reader,
            dir,
        )
    }

    fn committed(reader: &rusqlite::Connection, sql: &str) -> Vec<String> {
        let mut s = reader.prepare(sql).unwrap();
        let rows = s.query_map([], |r| r.get::<_, String>(0)).unwrap();
        let mut v: Vec<String> = rows.map(Result::unwrap).collect();
        v.sort();
        v
    }

    const INSERT: &str = "INSERT INTO t (x) VALUES ($1)";

    /// `sql` (with `arg` as `$1` when given) as a call of its own.
    async fn execute(
        shared: &Arc<Shared>,
        sql: &'static str,
        arg: Option<String>,
    ) -> Result<u64, SqlError> {
        let mut c = Conn::Sqlite(shared.lock(BOUND).await.map_err(SqlError::from)?);
        match arg {
            Some(a) => query(sql).bind(a),
            None => query(sql),
        }
        .execute(&mut c)
        .await
    }

    /// [`execute`] on a task of its own.
    fn spawn_execute(
        shared: &Arc<Shared>,
        sql: &'static str,
        arg: Option<String>,
    ) -> tokio::task::JoinHandle<Result<u64, SqlError>> {
        let shared = shared.clone();
        tokio::spawn(async move { execute(&shared, sql, arg).await })
    }

    /// Until `n` calls have joined groups (bounded: 10 s).
    async fn until_members(shared: &Shared, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while shared.stats().members.load(Ordering::SeqCst) != n {
            assert!(std::time::Instant::now() < deadline, "the member never ran");
            tokio::task::yield_now().await;
        }
    }

    /// Until `n` calls wait for the connection (bounded: 10 s).
    async fn until_waiting(shared: &Shared, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while shared.waiting.load(Ordering::SeqCst) != n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} calls never waited for the connection"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_that_meet_share_one_commit_and_none_returns_before_it() {
        let (shared, reader, _dir) = open("CREATE TABLE t (x TEXT NOT NULL)");
        // A lone write commits at once: no one waits.
        execute(&shared, INSERT, Some("alone".into()))
            .await
            .unwrap();
        assert_eq!(committed(&reader, "SELECT x FROM t"), ["alone"]);
        assert_eq!(shared.stats().commits.load(Ordering::SeqCst), 1);
        // Ten writers queue behind a held connection; each checks, as soon
        // as its call returns, that its row is committed (the reader sees
        // committed rows only).
        let first = shared.lock(BOUND).await.ok().unwrap();
        let mut writers = Vec::new();
        for i in 0..10 {
            let shared = shared.clone();
            let file = _dir.path().join("t.db");
            writers.push(tokio::spawn(async move {
                execute(&shared, INSERT, Some(format!("w{i}")))
                    .await
                    .unwrap();
                let reader = super::super::open_rusqlite(&file).unwrap();
                let mine: i64 = reader
                    .query_row(
                        "SELECT COUNT(*) FROM t WHERE x = ?1",
                        [format!("w{i}")],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(mine, 1, "w{i} returned before its row was committed");
            }));
        }
        until_waiting(&shared, 10).await;
        let mut first = Conn::Sqlite(first);
        query("INSERT INTO t (x) VALUES ('first')")
            .execute(&mut first)
            .await
            .unwrap();
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(committed(&reader, "SELECT x FROM t").len(), 12);
        // Eleven calls, one commit: the one that found no one waiting.
        assert_eq!(shared.stats().members.load(Ordering::SeqCst), 12);
        assert_eq!(shared.stats().commits.load(Ordering::SeqCst), 2);
        // A read with no group open neither joins nor waits.
        let rows = query("SELECT COUNT(*) AS n FROM t")
            .fetch_all(&mut first)
            .await
            .unwrap();
        assert_eq!(rows[0].try_get::<i64>("n").unwrap(), 12);
        assert_eq!(shared.stats().members.load(Ordering::SeqCst), 12);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_rolled_back_in_a_group_undoes_only_its_own_statements() {
        let (shared, reader, _dir) = open("CREATE TABLE t (x TEXT NOT NULL)");
        let first = shared.lock(BOUND).await.ok().unwrap();
        let undone = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut c = Conn::Sqlite(shared.lock(BOUND).await.ok().unwrap());
                let mut tx = Tx::begin(&mut c).await.unwrap();
                for x in ["undone-1", "undone-2"] {
                    query("INSERT INTO t (x) VALUES ($1)")
                        .bind(x)
                        .execute(&mut tx)
                        .await
                        .unwrap();
                }
                tx.rollback().await.unwrap();
            })
        };
        until_waiting(&shared, 1).await;
        let dropped = {
            let shared = shared.clone();
            tokio::spawn(async move {
                // Dropped without an end: rolled back too.
                let mut c = Conn::Sqlite(shared.lock(BOUND).await.ok().unwrap());
                let mut tx = Tx::begin(&mut c).await.unwrap();
                query("INSERT INTO t (x) VALUES ('dropped')")
                    .execute(&mut tx)
                    .await
                    .unwrap();
            })
        };
        until_waiting(&shared, 2).await;
        let kept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut c = Conn::Sqlite(shared.lock(BOUND).await.ok().unwrap());
                let mut tx = Tx::begin(&mut c).await.unwrap();
                query("INSERT INTO t (x) VALUES ('kept')")
                    .execute(&mut tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            })
        };
        until_waiting(&shared, 3).await;
        let mut first = Conn::Sqlite(first);
        query("INSERT INTO t (x) VALUES ('first')")
            .execute(&mut first)
            .await
            .unwrap();
        undone.await.unwrap();
        dropped.await.unwrap();
        kept.await.unwrap();
        drop(first);
        assert_eq!(committed(&reader, "SELECT x FROM t"), ["first", "kept"]);
        assert_eq!(shared.stats().commits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_group_commit_fails_every_call_in_the_group_and_keeps_nothing() {
        // A deferred foreign key is checked at COMMIT: one call's bad row
        // fails the whole group.
        let (shared, reader, _dir) = open(
            "CREATE TABLE parent (x TEXT PRIMARY KEY); \
             CREATE TABLE child (p TEXT REFERENCES parent (x) DEFERRABLE INITIALLY DEFERRED)",
        );
        let first = shared.lock(BOUND).await.ok().unwrap();
        let good = spawn_execute(&shared, "INSERT INTO parent (x) VALUES ('good')", None);
        until_waiting(&shared, 1).await;
        let mut first = Conn::Sqlite(first);
        let bad = query("INSERT INTO child (p) VALUES ('nobody')")
            .execute(&mut first)
            .await
            .unwrap_err();
        let good = good.await.unwrap().unwrap_err();
        for e in [&bad, &good] {
            let text = e.to_string();
            assert!(
                text.contains("group commit") && text.contains("FOREIGN KEY"),
                "{text}"
            );
        }
        assert!(committed(&reader, "SELECT x FROM parent").is_empty());
        assert_eq!(shared.stats().commits.load(Ordering::SeqCst), 0);
        // The connection goes on.
        query("INSERT INTO parent (x) VALUES ('later')")
            .execute(&mut first)
            .await
            .unwrap();
        assert_eq!(committed(&reader, "SELECT x FROM parent"), ["later"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_left_open_for_a_call_that_went_away_is_committed_at_once() {
        let (shared, reader, _dir) = open("CREATE TABLE t (x TEXT NOT NULL)");
        let first = shared.lock(BOUND).await.ok().unwrap();
        let member = spawn_execute(&shared, INSERT, Some("member".into()));
        until_waiting(&shared, 1).await;
        // A second call waits for the connection, then goes away (its
        // client hung up) once the group was left open for it, before it
        // ran again: polled here by hand, once, then dropped.
        let mut gone = Box::pin(shared.lock(BOUND));
        std::future::poll_fn(|cx| {
            assert!(gone.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        assert_eq!(shared.waiting.load(Ordering::SeqCst), 2);
        drop(first);
        until_members(&shared, 1).await;
        assert!(
            committed(&reader, "SELECT x FROM t").is_empty(),
            "left open"
        );
        let started = tokio::time::Instant::now();
        drop(gone);
        tokio::time::timeout(Duration::from_secs(60), member)
            .await
            .expect("the member returns")
            .unwrap()
            .unwrap();
        // At once: not after the member's own fallback.
        assert!(started.elapsed() < FALLBACK, "{:?}", started.elapsed());
        assert_eq!(committed(&reader, "SELECT x FROM t"), ["member"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_no_one_is_left_to_commit_is_committed_by_its_member_after_the_fallback() {
        let (shared, reader, _dir) = open("CREATE TABLE t (x TEXT NOT NULL)");
        // A call counted as waiting that vanishes without a trace (none
        // does; this is the fallback's own test).
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let member = spawn_execute(&shared, INSERT, Some("member".into()));
        until_members(&shared, 1).await;
        assert!(
            committed(&reader, "SELECT x FROM t").is_empty(),
            "left open"
        );
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(60), member)
            .await
            .expect("the member commits its group within 60 s")
            .unwrap()
            .unwrap();
        assert!(started.elapsed() >= FALLBACK, "{:?}", started.elapsed());
        assert_eq!(committed(&reader, "SELECT x FROM t"), ["member"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_group_is_committed_before_the_next_call_joins() {
        let (shared, reader, dir) = open("CREATE TABLE t (x TEXT NOT NULL)");
        let file = dir.path().join("t.db");
        let conn = super::super::open_rusqlite(&file).unwrap();
        drop(shared);
        let shared = Shared::with_limits(conn, 3, Duration::from_secs(3600));
        let first = shared.lock(BOUND).await.ok().unwrap();
        let mut writers = Vec::new();
        for i in 0..4 {
            writers.push(spawn_execute(&shared, INSERT, Some(format!("w{i}"))));
            until_waiting(&shared, i + 1).await;
        }
        let mut first = Conn::Sqlite(first);
        query("INSERT INTO t (x) VALUES ('first')")
            .execute(&mut first)
            .await
            .unwrap();
        for w in writers {
            w.await.unwrap().unwrap();
        }
        assert_eq!(committed(&reader, "SELECT x FROM t").len(), 5);
        // first, w0, w1 (full: committed at w1's join); w2, w3.
        assert_eq!(shared.stats().commits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_that_makes_sqlite_roll_back_the_group_fails_every_call_in_it() {
        let (shared, reader, _dir) = open("CREATE TABLE t (x TEXT NOT NULL)");
        let mut first = shared.lock(BOUND).await.ok().unwrap();
        // A database that cannot grow: SQLite answers SQLITE_FULL and rolls
        // back the whole transaction, not only the statement.
        let pages: i64 = {
            let c = first.held().unwrap().conn();
            let n: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            c.execute_batch(&format!("PRAGMA max_page_count = {}", n + 3))
                .unwrap();
            n
        };
        let big = spawn_execute(
            &shared,
            "INSERT INTO t (x) VALUES (hex(randomblob(100000)))",
            None,
        );
        until_waiting(&shared, 1).await;
        let mut first = Conn::Sqlite(first);
        let small = query("INSERT INTO t (x) VALUES ('small')")
            .execute(&mut first)
            .await
            .unwrap_err();
        let big = big.await.unwrap().unwrap_err();
        for e in [&small, &big] {
            assert!(e.to_string().contains("full"), "{e}");
            let SqlError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) = e else {
                panic!("{e:?}")
            };
            // Retryable (UNAVAILABLE), as the disk's own error is.
            assert_eq!(f.code, rusqlite::ErrorCode::DiskFull, "{e}");
        }
        assert!(small.to_string().contains("group commit"), "{small}");
        assert!(committed(&reader, "SELECT x FROM t").is_empty());
        // Room again: the connection goes on.
        let Conn::Sqlite(held) = &mut first else {
            panic!()
        };
        held.state(BOUND)
            .await
            .unwrap()
            .conn()
            .execute_batch(&format!("PRAGMA max_page_count = {}", pages + 1000))
            .unwrap();
        query("INSERT INTO t (x) VALUES ('later')")
            .execute(&mut first)
            .await
            .unwrap();
        assert_eq!(committed(&reader, "SELECT x FROM t"), ["later"]);
    }
}

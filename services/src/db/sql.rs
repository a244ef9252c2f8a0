//! One statement API over both databases, so that every repository is
//! written once. [`query`] builds a statement with `$1`, `$2`, … arguments;
//! it runs on a [`Conn`] or a [`Tx`] (anything [`Exec`]).
//!
//! - PostgreSQL: through sqlx, as before.
//! - SQLite: through rusqlite, on the calling thread, with the statement
//!   prepared once and cached. A statement costs SQLite's own few
//!   microseconds and nothing more. sqlx's SQLite driver, by contrast, sends
//!   every statement to a worker thread of its own and waits for the answer:
//!   two thread wake-ups per statement. That hand-off, not SQLite, was most
//!   of the services' CPU per order (docs/benchmarks.md). A statement on a
//!   [`Conn`] and a [`Tx`]'s commit go through the group commit of
//!   [`super::sqlite`]: they return once the commit their writes went into
//!   has been made.
//!
//! Nothing here waits on SQLite for long: commits do not fsync
//! (`synchronous = NORMAL` in WAL mode), and the WAL is folded into the
//! database file by a checkpointer thread off the request path (see
//! [`super::Database`]). Another process holding the write lock (two
//! processes on one data dir, which the services do not do) would make a
//! writer wait up to the busy timeout on the calling thread.

use std::borrow::Cow;

use rusqlite::types::{Value, ValueRef};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::Row as _;

/// A driver error from either database.
#[derive(Debug)]
pub enum SqlError {
    /// From sqlx: PostgreSQL, or the migrations of either database.
    Sqlx(sqlx::Error),
    Sqlite(rusqlite::Error),
    /// A column missing or of another type than asked for.
    Column(String),
    /// SQLite's connection could not be had (busy past the bound, closed).
    Unavailable(String),
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlx(e) => e.fmt(f),
            Self::Sqlite(e) => e.fmt(f),
            Self::Column(e) | Self::Unavailable(e) => f.write_str(e),
        }
    }
}

impl From<sqlx::Error> for SqlError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sqlx(e)
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl SqlError {
    /// A unique index refused the row.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Sqlx(sqlx::Error::Database(d)) => d.is_unique_violation(),
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

/// One argument of a statement.
#[derive(Debug, Clone)]
pub enum Arg<'q> {
    Int(Option<i64>),
    Text(Option<Cow<'q, str>>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl<'q> From<&'q str> for Arg<'q> {
    fn from(v: &'q str) -> Self {
        Self::Text(Some(Cow::Borrowed(v)))
    }
}

impl<'q> From<&'q String> for Arg<'q> {
    fn from(v: &'q String) -> Self {
        Self::Text(Some(Cow::Borrowed(v)))
    }
}

impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Self::Text(Some(Cow::Owned(v)))
    }
}

impl<'q> From<&'q Option<String>> for Arg<'q> {
    fn from(v: &'q Option<String>) -> Self {
        Self::Text(v.as_deref().map(Cow::Borrowed))
    }
}

impl<'q> From<Option<&'q str>> for Arg<'q> {
    fn from(v: Option<&'q str>) -> Self {
        Self::Text(v.map(Cow::Borrowed))
    }
}

/// A statement and its arguments (`$1` is the first [`Query::bind`]).
#[derive(Debug, Clone)]
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query<'q> {
    sql: Cow<'q, str>,
    args: Vec<Arg<'q>>,
}

/// A statement with `$n` arguments, on either database.
pub fn query<'q>(sql: impl Into<Cow<'q, str>>) -> Query<'q> {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

/// `$1` … `$16`: SQLite's names of the numbered arguments.
const NAMES: [&str; 16] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
    "$16",
];

impl<'q> Query<'q> {
    pub fn bind(mut self, v: impl Into<Arg<'q>>) -> Self {
        self.args.push(v.into());
        self
    }

    /// Runs the statement; the rows it changed.
    pub async fn execute(self, on: &mut impl Exec) -> Result<u64, SqlError> {
        let run = |c: &mut rusqlite::Connection| {
            self.sqlite(c, |stmt| {
                let mut rows = stmt.raw_query();
                while rows.next()?.is_some() {}
                Ok(())
            })
            .map(|((), changed)| changed)
        };
        match on.target() {
            Target::Sqlite(c) => run(c),
            Target::Grouped(h) => h.statement(&self.sql, super::ACQUIRE_TIMEOUT, run).await,
            Target::Postgres(c) => Ok(self.postgres().execute(c).await?.rows_affected()),
        }
    }

    /// The first row, if any (the statement runs to its end).
    pub async fn fetch_optional(self, on: &mut impl Exec) -> Result<Option<Row>, SqlError> {
        Ok(self.fetch_all(on).await?.into_iter().next())
    }

    /// Every row.
    pub async fn fetch_all(self, on: &mut impl Exec) -> Result<Vec<Row>, SqlError> {
        let run = |c: &mut rusqlite::Connection| {
            self.sqlite(c, |stmt| {
                let names: std::sync::Arc<[String]> =
                    stmt.column_names().into_iter().map(str::to_owned).collect();
                let width = names.len();
                let mut out = Vec::new();
                let mut rows = stmt.raw_query();
                while let Some(row) = rows.next()? {
                    let mut values = Vec::with_capacity(width);
                    for (i, name) in names.iter().enumerate() {
                        values.push(owned(row.get_ref(i)?, name)?);
                    }
                    out.push(Row(Inner::Sqlite {
                        names: names.clone(),
                        values,
                    }));
                }
                Ok(out)
            })
            .map(|(rows, _)| rows)
        };
        match on.target() {
            Target::Sqlite(c) => run(c),
            Target::Grouped(h) => h.statement(&self.sql, super::ACQUIRE_TIMEOUT, run).await,
            Target::Postgres(c) => Ok(self
                .postgres()
                .fetch_all(c)
                .await?
                .into_iter()
                .map(|r| Row(Inner::Postgres(r)))
                .collect()),
        }
    }

    fn postgres(&self) -> sqlx::query::Query<'_, sqlx::Postgres, PgArguments> {
        let mut q = sqlx::query(&self.sql);
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
            };
        }
        q
    }

    /// Prepares (cached), binds, runs `f`; also returns the rows changed.
    fn sqlite<T>(
        &self,
        c: &mut rusqlite::Connection,
        f: impl FnOnce(&mut rusqlite::CachedStatement<'_>) -> Result<T, SqlError>,
    ) -> Result<(T, u64), SqlError> {
        let mut stmt = c.prepare_cached(&self.sql)?;
        // Every `$n` of the statement has its argument (a missing one would
        // be NULL), and at most as many as there are names.
        let given = self.args.len();
        for i in 1..=stmt.parameter_count() {
            let n = stmt
                .parameter_name(i)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok());
            match n {
                Some(n) if (1..=given.min(NAMES.len())).contains(&n) => {}
                _ => {
                    return Err(SqlError::Column(format!(
                        "argument {:?} of the statement is not one of the {given} given \
                         (write $1 … ${given}): {}",
                        stmt.parameter_name(i).unwrap_or("?"),
                        self.sql
                    )))
                }
            }
        }
        for (arg, name) in self.args.iter().zip(NAMES) {
            // An argument the statement does not use is left out.
            let Some(i) = stmt.parameter_index(name)? else {
                continue;
            };
            match arg {
                Arg::Int(v) => stmt.raw_bind_parameter(i, v)?,
                Arg::Text(v) => stmt.raw_bind_parameter(i, v.as_deref())?,
            }
        }
        let out = f(&mut stmt)?;
        drop(stmt);
        Ok((out, c.changes()))
    }
}

/// An owned copy of a SQLite value; text that is not UTF-8 is an error
/// naming the column (rusqlite's own conversion would panic).
fn owned(v: ValueRef<'_>, column: &str) -> Result<Value, SqlError> {
    match v {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(|t| Value::Text(t.to_owned()))
            .map_err(|e| {
                SqlError::Column(format!("column {column:?}: text that is not UTF-8: {e}"))
            }),
        other => Ok(Value::from(other)),
    }
}

/// Where a statement runs. SQLite is borrowed `&mut` (a shared borrow of a
/// connection would make the request's future unable to move threads).
pub enum Target<'a> {
    /// Inside a transaction: the statement is part of it.
    Sqlite(&'a mut rusqlite::Connection),
    /// A call's connection: the statement is a call of its own in the
    /// group commit ([`super::sqlite`]).
    Grouped(&'a mut super::sqlite::Held),
    Postgres(&'a mut sqlx::PgConnection),
}

/// A connection or transaction statements run on.
pub trait Exec: Send {
    fn target(&mut self) -> Target<'_>;
}

impl Exec for super::Conn {
    fn target(&mut self) -> Target<'_> {
        match self {
            Self::Sqlite(c) => Target::Grouped(c),
            Self::Postgres(c) => Target::Postgres(c),
        }
    }
}

/// An open write transaction. Dropped without [`Tx::commit`], it rolls
/// back. (`None` inside once it ended.) On SQLite it is a savepoint in the
/// group commit open on the connection ([`super::sqlite`]): its commit and
/// its rollback return once the group has committed, and fail when the
/// group does (what it read may have been another call's uncommitted
/// write).
pub enum Tx<'c> {
    Sqlite(Option<&'c mut super::sqlite::Held>),
    Postgres(Option<sqlx::Transaction<'c, sqlx::Postgres>>),
}

impl<'c> Tx<'c> {
    /// A savepoint in the open group on SQLite (the group opens with
    /// `BEGIN IMMEDIATE`: writers of other processes wait the busy timeout
    /// instead of failing on a lock upgrade), `BEGIN` on PostgreSQL.
    pub async fn begin(on: &'c mut super::Conn) -> Result<Self, SqlError> {
        use sqlx::Connection as _;
        match on {
            super::Conn::Sqlite(c) => {
                c.savepoint(super::ACQUIRE_TIMEOUT).await?;
                Ok(Self::Sqlite(Some(c)))
            }
            super::Conn::Postgres(c) => Ok(Self::Postgres(Some(c.begin().await?))),
        }
    }

    pub async fn commit(self) -> Result<(), SqlError> {
        self.end(true).await
    }

    pub async fn rollback(self) -> Result<(), SqlError> {
        self.end(false).await
    }

    /// COMMIT or ROLLBACK (on SQLite: RELEASE or ROLLBACK TO the savepoint,
    /// then the wait for the group). A ROLLBACK is not tried twice.
    async fn end(mut self, commit: bool) -> Result<(), SqlError> {
        match &mut self {
            Self::Sqlite(c) => {
                if let Some(held) = c.take() {
                    // A savepoint that cannot be ended rolls the whole
                    // group back (`end_savepoint`): no half of it commits.
                    let ended = held.end_savepoint(commit);
                    let settled = held.settle().await;
                    ended.and(settled)?;
                }
            }
            Self::Postgres(t) => match t.take() {
                Some(t) if commit => t.commit().await?,
                Some(t) => t.rollback().await?,
                None => {}
            },
        }
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // PostgreSQL: sqlx rolls an open transaction back when it drops.
        if let Self::Sqlite(Some(held)) = self {
            if let Err(e) = held.end_savepoint(false) {
                tracing::warn!(error.message = %e, "rolling back a SQLite transaction failed");
            }
        }
    }
}

impl Exec for Tx<'_> {
    fn target(&mut self) -> Target<'_> {
        // `None` only after commit or rollback, which take the Tx by value.
        match self {
            Self::Sqlite(Some(held)) => match held.held() {
                Some(state) => Target::Sqlite(state.conn()),
                None => unreachable!("a transaction holds the connection until it ends"),
            },
            Self::Postgres(Some(tx)) => Target::Postgres(tx),
            Self::Sqlite(None) | Self::Postgres(None) => {
                unreachable!("a transaction used after it ended")
            }
        }
    }
}

/// One result row.
#[derive(Debug)]
pub struct Row(Inner);

#[derive(Debug)]
enum Inner {
    Postgres(PgRow),
    Sqlite {
        names: std::sync::Arc<[String]>,
        values: Vec<Value>,
    },
}

impl Row {
    /// Column `name` as `T`.
    pub fn try_get<T: Column>(&self, name: &str) -> Result<T, SqlError> {
        match &self.0 {
            Inner::Postgres(r) => T::from_postgres(r, name),
            Inner::Sqlite { names, values } => {
                let i = names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| SqlError::Column(format!("no column {name:?}")))?;
                T::from_sqlite(ValueRef::from(&values[i]))
                    .map_err(|e| SqlError::Column(format!("column {name:?}: {e}")))
            }
        }
    }
}

/// A column type both databases read.
pub trait Column: Sized {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, SqlError>;
    fn from_sqlite(v: ValueRef<'_>) -> Result<Self, String>;
}

impl Column for i64 {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, SqlError> {
        Ok(row.try_get(name)?)
    }
    fn from_sqlite(v: ValueRef<'_>) -> Result<Self, String> {
        v.as_i64().map_err(|e| e.to_string())
    }
}

impl Column for String {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, SqlError> {
        Ok(row.try_get(name)?)
    }
    fn from_sqlite(v: ValueRef<'_>) -> Result<Self, String> {
        v.as_str().map(str::to_owned).map_err(|e| e.to_string())
    }
}

impl<T: Column> Column for Option<T>
where
    for<'r> Option<T>: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, SqlError> {
        Ok(row.try_get(name)?)
    }
    fn from_sqlite(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_sqlite(v).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> (super::super::Database, tempfile::TempDir) {
        super::super::test_sqlite("order", crate::order::MIGRATIONS).await
    }

    #[tokio::test]
    async fn arguments_bind_by_number_whatever_their_order_in_the_statement() {
        let (db, _dir) = sqlite().await;
        let mut c = db.connection().await.unwrap();
        // $2 comes first in the text: bound by name, not by position.
        let row = query("SELECT $2 AS b, $1 AS a, $2 || $1 AS ba, $3 AS n")
            .bind("one")
            .bind(String::from("two"))
            .bind(None::<i64>)
            .fetch_optional(&mut c)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<String>("a").unwrap(), "one");
        assert_eq!(row.try_get::<String>("b").unwrap(), "two");
        assert_eq!(row.try_get::<String>("ba").unwrap(), "twoone");
        assert_eq!(row.try_get::<Option<i64>>("n").unwrap(), None);
        // Wrong type and missing column say which column.
        let e = row.try_get::<i64>("a").unwrap_err().to_string();
        assert!(e.contains("\"a\""), "{e}");
        let e = row.try_get::<i64>("zz").unwrap_err().to_string();
        assert!(e.contains("zz"), "{e}");
        // A `$n` past the arguments given is an error naming it and the
        // statement, not a NULL; so is a gap (`$1`, `$3` with two given).
        for sql in ["SELECT $1 AS a, $2 AS b", "SELECT $1 AS a, $3 AS c"] {
            let e = query(sql)
                .bind(1)
                .fetch_all(&mut c)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("not one of the 1 given") && e.contains(sql),
                "{e}"
            );
        }
        let e = query("SELECT $1 AS a, $3 AS c")
            .bind(1)
            .bind(2)
            .fetch_all(&mut c)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"$3\"") && e.contains("2 given"), "{e}");
        // Text that is not UTF-8 is an error naming the column, no panic.
        let e = query("SELECT CAST(x'ff' AS TEXT) AS bad")
            .fetch_all(&mut c)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"bad\"") && e.contains("UTF-8"), "{e}");
        assert!(query("SELECT 1 AS one").fetch_all(&mut c).await.is_ok());
    }

    #[tokio::test]
    async fn a_transaction_dropped_without_commit_rolls_back_and_the_connection_goes_on() {
        let (db, _dir) = sqlite().await;
        let mut c = db.connection().await.unwrap();
        let insert = |id: &'static str| {
            query(
                "INSERT INTO orders (order_id, idempotency_key, fingerprint, customer_id, \
                 request_items, items, currency, status, trace_id, created_ms, updated_ms, \
                 owner, lease_until_ms) VALUES ($1, $1, '', 'c', '[]', '[]', 'EUR', 'pending', \
                 '', 0, 0, 'me', 0)",
            )
            .bind(id)
        };
        let count = "SELECT COUNT(*) AS n FROM orders";
        {
            let mut tx = Tx::begin(&mut c).await.unwrap();
            assert_eq!(insert("a").execute(&mut tx).await.unwrap(), 1);
            // Dropped: rolled back.
        }
        {
            let mut tx = Tx::begin(&mut c).await.unwrap();
            insert("b").execute(&mut tx).await.unwrap();
            // A unique violation is told apart from other failures.
            let e = insert("b").execute(&mut tx).await.unwrap_err();
            assert!(e.is_unique_violation(), "{e}");
            tx.commit().await.unwrap();
        }
        let rows = query(count).fetch_all(&mut c).await.unwrap();
        assert_eq!(rows[0].try_get::<i64>("n").unwrap(), 1);
        let mut tx = Tx::begin(&mut c).await.unwrap();
        insert("c").execute(&mut tx).await.unwrap();
        tx.rollback().await.unwrap();
        let rows = query(count).fetch_all(&mut c).await.unwrap();
        assert_eq!(rows[0].try_get::<i64>("n").unwrap(), 1);
    }
}

//! What the services' integration tests share: a fresh database of either
//! kind for each service of each test (a SQLite folder, or a database of its
//! own on the PostgreSQL server scripts/test starts), and bounded waits.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses part of it

use std::time::Duration;

use meshwatch_services::db::DbTarget;
use sqlx::Connection;

/// The PostgreSQL server for tests (`scripts/test` sets it): a superuser URL.
pub const POSTGRES_ENV: &str = "MESHWATCH_TEST_POSTGRES";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The test server's URL; a test that needs it fails (never skips) without it.
pub fn postgres_url() -> String {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{POSTGRES_ENV} is not set: run scripts/test, or start one with \
             `scripts/postgres start DIR` and export {POSTGRES_ENV}=<the URL it prints>"
        ),
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Creates an empty database on the server at `server_url`; returns its URL.
pub async fn create_database(server_url: &str, tag: &str) -> String {
    let name = database_name(tag);
    let mut admin = sqlx::PgConnection::connect(server_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL at {server_url}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    with_database(server_url, &name)
}

/// A fresh database name for `tag`.
fn database_name(tag: &str) -> String {
    format!(
        "t_{}_{:012x}",
        tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
    .to_lowercase()
}

/// Drops the databases named in `urls` (made by [`create_database`]), with
/// `FORCE` (a service still shutting down loses its connections), within
/// 10 s. On a thread of its own, so a test's runtime need not be running.
/// Each is ~7.5 MB plus as much WAL: a server kept across many runs would
/// fill the disk. A failure is said on stderr, never a panic in a drop.
pub fn drop_databases(server_url: &str, urls: &[String]) {
    let server_url = server_url.to_owned();
    let names: Vec<String> = urls
        .iter()
        .filter_map(|u| u.split('?').next()?.rsplit('/').next().map(str::to_owned))
        .collect();
    let dropping = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let mut admin = sqlx::PgConnection::connect(&server_url).await?;
                for name in &names {
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await?;
                }
                admin.close().await
            })
            .await
            .map_err(|_| std::io::Error::other("no answer within 10 s"))?
            .map_err(std::io::Error::other)
        })
    });
    match dropping.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("dropping the test databases {urls:?}: {e}"),
        Err(_) => eprintln!("dropping the test databases {urls:?}: the thread panicked"),
    }
}

/// Where a test's databases live: SQLite folders, and databases on the
/// test PostgreSQL server; both are removed when it is dropped.
#[derive(Default)]
pub struct Databases {
    dirs: Vec<tempfile::TempDir>,
    postgres: Vec<String>,
}

impl Drop for Databases {
    fn drop(&mut self) {
        if !self.postgres.is_empty() {
            drop_databases(&postgres_url(), &self.postgres);
        }
    }
}

impl Databases {
    /// A fresh database for `service` of this test.
    pub async fn fresh(&mut self, backend: Backend, service: &str) -> DbTarget {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let target = DbTarget::Sqlite {
                    data_dir: dir.path().to_owned(),
                };
                self.dirs.push(dir);
                target
            }
            Backend::Postgres => DbTarget::Postgres {
                url: self.postgres(service).await,
                max_connections: 8,
            },
        }
    }

    /// A fresh database on the test PostgreSQL server, dropped with `self`;
    /// returns its URL.
    pub async fn postgres(&mut self, tag: &str) -> String {
        let url = create_database(&postgres_url(), tag).await;
        self.postgres.push(url.clone());
        url
    }
}

/// Waits until `check` returns true, polling, at most `bound`.
pub async fn eventually<F, Fut>(what: &str, bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

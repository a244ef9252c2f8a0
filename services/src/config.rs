//! Flags and environment of the three binaries (clap derive, `MESHWATCH_*`),
//! validated into typed configs before anything starts. Bad input exits 64
//! with a one-line reason naming the flag.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use meshwatch_entry::{parse_args_from, parse_duration, ConfigError, Exit, LogArgs, TlsArgs};
use meshwatch_tls::Tls;

use crate::db::{self, DbTarget};
use crate::faults::FaultSettings;
use crate::inventory::catalog::{self, CatalogItem};
use crate::inventory::DEFAULT_RESERVATION_TTL;
use crate::order::{DEFAULT_CALL_TIMEOUT, DEFAULT_REQUEST_BUDGET};

pub const DEFAULT_ORDER_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_INVENTORY_LISTEN: &str = "127.0.0.1:50052";
pub const DEFAULT_PAYMENT_LISTEN: &str = "127.0.0.1:50053";
pub const DEFAULT_INVENTORY_ADDR: &str = "http://127.0.0.1:50052";
pub const DEFAULT_PAYMENT_ADDR: &str = "http://127.0.0.1:50053";

/// Default folder of the SQLite files (`<dir>/<service>.db`), relative to
/// the working directory.
pub const DEFAULT_DATA_DIR: &str = "meshwatch-data";
/// Default age past which finished orders, keys, payments and reservations
/// are deleted.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest duration the timeout and TTL flags take: far past any sensible
/// setting, and short enough that adding it to the clock cannot overflow
/// (which panics in the middle of a request).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn at_most_max(flag: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d > MAX_DURATION {
        return Err(ConfigError::new(
            flag,
            format!("{d:?} is longer than the maximum, 30 days"),
        ));
    }
    Ok(d)
}

/// Flags every service has.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Interval of the heartbeat lines on stdout.
    #[arg(long, env = "MESHWATCH_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat_interval: Duration,
    /// Bound on the drain after SIGTERM/SIGINT.
    #[arg(long, env = "MESHWATCH_DRAIN_GRACE", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_grace: Duration,
    #[command(flatten)]
    pub log: LogArgs,
    /// Fault injection: latency added before each RPC.
    #[arg(long, env = "MESHWATCH_FAULT_LATENCY", default_value = "0ms", value_parser = parse_duration, value_name = "DURATION")]
    pub fault_latency: Duration,
    /// Fault injection: probability in [0, 1] that an RPC fails with UNAVAILABLE.
    #[arg(long, env = "MESHWATCH_FAULT_ERROR_RATE", default_value_t = 0.0)]
    pub fault_error_rate: f64,
    /// Fault injection: probability in [0, 1] that a charge is declined (payment).
    #[arg(long, env = "MESHWATCH_FAULT_DECLINE_RATE", default_value_t = 0.0)]
    pub fault_decline_rate: f64,
    /// Fault injection: RPCs never answer before the caller's deadline.
    #[arg(long, env = "MESHWATCH_FAULT_HANG")]
    pub fault_hang: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Serve fault injection (meshwatch.admin.v1.FaultService) on this
    /// loopback address; off when not given. Never on the public port.
    #[arg(long, env = "MESHWATCH_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Folder of the embedded SQLite database (`<dir>/<service>.db`, created
    /// on first start); not used with --database-url.
    #[arg(long, env = "MESHWATCH_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// PostgreSQL instead of SQLite: postgres://user:password@host:5432/dbname.
    #[arg(long, env = "MESHWATCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL connections this process opens at most.
    #[arg(long, env = "MESHWATCH_DATABASE_MAX_CONNECTIONS", default_value_t = db::DEFAULT_MAX_CONNECTIONS)]
    pub database_max_connections: u32,
    /// Finished orders, idempotency keys, payments and reservations older
    /// than this are deleted (in small batches). Clients must not retry a
    /// key for longer.
    #[arg(long, env = "MESHWATCH_RETENTION", default_value = "7d", value_parser = parse_duration, value_name = "DURATION")]
    pub retention: Duration,
    /// RPCs served at once; past it requests are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MESHWATCH_MAX_CONCURRENT_RPCS", default_value_t = meshwatch_runtime::limits::DEFAULT_MAX_CONCURRENT_RPCS)]
    pub max_concurrent_rpcs: usize,
    /// Largest request message accepted, in bytes (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "MESHWATCH_MAX_MESSAGE_BYTES", default_value_t = meshwatch_runtime::limits::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
}

/// What every service runs with.
#[derive(Debug, Clone)]
pub struct Common {
    pub heartbeat_interval: Duration,
    pub drain_grace: Duration,
    pub log: String,
    pub faults: FaultSettings,
    /// gRPC TLS for the server and its clients; `None` is plaintext.
    pub tls: Option<Tls>,
    /// Where the fault admin listens (loopback), if anywhere.
    pub admin_listen: Option<SocketAddr>,
    pub database: DbTarget,
    pub retention: Duration,
    pub limits: meshwatch_runtime::Limits,
}

impl TryFrom<CommonArgs> for Common {
    type Error = ConfigError;

    fn try_from(a: CommonArgs) -> Result<Self, ConfigError> {
        if a.heartbeat_interval < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "heartbeat-interval",
                "must be at least 10ms",
            ));
        }
        for (flag, v) in [
            ("fault-error-rate", a.fault_error_rate),
            ("fault-decline-rate", a.fault_decline_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::new(flag, format!("{v} is outside [0, 1]")));
            }
        }
        let admin_listen = a
            .admin_listen
            .as_deref()
            .map(|s| {
                let addr = listen("admin-listen", s)?;
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::new(
                        "admin-listen",
                        format!("{addr} is not a loopback address (127.0.0.1:PORT or [::1]:PORT): fault injection is unauthenticated"),
                    ));
                }
                Ok(addr)
            })
            .transpose()?;
        let database = match a.database_url {
            Some(url) => {
                db::parse_postgres_url(&url).map_err(|e| ConfigError::new("database-url", e))?;
                if a.database_max_connections == 0 {
                    return Err(ConfigError::new(
                        "database-max-connections",
                        "must be at least 1",
                    ));
                }
                DbTarget::Postgres {
                    url,
                    max_connections: a.database_max_connections,
                }
            }
            None => {
                if a.data_dir.as_os_str().is_empty() {
                    return Err(ConfigError::new("data-dir", "must not be empty"));
                }
                DbTarget::Sqlite {
                    data_dir: a.data_dir,
                }
            }
        };
        if a.retention < Duration::from_secs(60) {
            return Err(ConfigError::new("retention", "must be at least 1m"));
        }
        if a.max_concurrent_rpcs == 0 {
            return Err(ConfigError::new(
                "max-concurrent-rpcs",
                "must be at least 1",
            ));
        }
        if a.max_message_bytes < 1024 {
            return Err(ConfigError::new(
                "max-message-bytes",
                "must be at least 1024",
            ));
        }
        Ok(Self {
            heartbeat_interval: a.heartbeat_interval,
            drain_grace: a.drain_grace,
            log: a.log.filter,
            faults: FaultSettings {
                latency: a.fault_latency,
                error_rate: a.fault_error_rate,
                decline_rate: a.fault_decline_rate,
                hang: a.fault_hang,
            },
            tls: Tls::load(&a.tls)?,
            admin_listen,
            database,
            retention: at_most_max("retention", a.retention)?,
            limits: meshwatch_runtime::Limits {
                max_message_bytes: a.max_message_bytes,
                max_concurrent_rpcs: a.max_concurrent_rpcs,
            },
        })
    }
}

impl Default for Common {
    fn default() -> Self {
        Self {
            heartbeat_interval: meshwatch_ecs::heartbeat::DEFAULT_INTERVAL,
            drain_grace: meshwatch_runtime::DEFAULT_DRAIN_GRACE,
            log: meshwatch_runtime::telemetry::DEFAULT_FILTER.to_owned(),
            faults: FaultSettings::default(),
            tls: None,
            admin_listen: None,
            database: DbTarget::Sqlite {
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            },
            retention: DEFAULT_RETENTION,
            limits: meshwatch_runtime::Limits::default(),
        }
    }
}

fn listen(flag: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|e| {
        ConfigError::new(
            flag,
            format!("{s:?} is not an address like 127.0.0.1:50051 ({e})"),
        )
    })
}

/// A downstream URL as the client will use it: `http://` plaintext,
/// `https://` only with `--tls-ca`.
fn url(flag: &'static str, s: &str, tls: Option<&Tls>) -> Result<String, ConfigError> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| {
            ConfigError::new(
                flag,
                format!("{s:?} must be a URL like http://127.0.0.1:50052"),
            )
        })?;
    if rest.is_empty() || rest.starts_with(':') {
        return Err(ConfigError::new(flag, format!("{s:?} has no host")));
    }
    // What the client will build from it, so a bad URL is refused here
    // (exit 64) rather than after start-up.
    meshwatch_tls::endpoint(flag, s, tls)?;
    Ok(s.to_owned())
}

/// `inventory` flags.
#[derive(Debug, Parser)]
#[command(
    name = "inventory",
    version,
    about = "meshwatch inventory service: catalog, stock and reservations over gRPC"
)]
pub struct InventoryArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "MESHWATCH_INVENTORY_LISTEN", default_value = DEFAULT_INVENTORY_LISTEN)]
    pub listen: String,
    /// Time a reservation may stay uncommitted before its units return to stock.
    #[arg(long, env = "MESHWATCH_RESERVATION_TTL", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub reservation_ttl: Duration,
    /// JSON catalog: [{"sku","name","price_minor","currency_code","stock"}]. Default: the built-in seed.
    #[arg(long, env = "MESHWATCH_CATALOG")]
    pub catalog: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone)]
pub struct InventoryConfig {
    pub listen: SocketAddr,
    pub reservation_ttl: Duration,
    pub catalog: Vec<CatalogItem>,
    pub common: Common,
}

impl InventoryConfig {
    /// Seed catalog, default TTL, no faults; for tests.
    pub fn local(listen: SocketAddr) -> Self {
        Self {
            listen,
            reservation_ttl: DEFAULT_RESERVATION_TTL,
            catalog: catalog::seed(),
            common: Common::default(),
        }
    }
}

impl TryFrom<InventoryArgs> for InventoryConfig {
    type Error = ConfigError;

    fn try_from(a: InventoryArgs) -> Result<Self, ConfigError> {
        if a.reservation_ttl.is_zero() {
            return Err(ConfigError::new("reservation-ttl", "must be positive"));
        }
        let catalog = match &a.catalog {
            Some(path) => {
                catalog::load(path).map_err(|e| ConfigError::new("catalog", e.to_string()))?
            }
            None => catalog::seed(),
        };
        Ok(Self {
            listen: listen("listen", &a.listen)?,
            reservation_ttl: at_most_max("reservation-ttl", a.reservation_ttl)?,
            catalog,
            common: a.common.try_into()?,
        })
    }
}

/// `payment` flags.
#[derive(Debug, Parser)]
#[command(
    name = "payment",
    version,
    about = "meshwatch payment service: charges and refunds, idempotent per order"
)]
pub struct PaymentArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "MESHWATCH_PAYMENT_LISTEN", default_value = DEFAULT_PAYMENT_LISTEN)]
    pub listen: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone)]
pub struct PaymentConfig {
    pub listen: SocketAddr,
    pub common: Common,
}

impl TryFrom<PaymentArgs> for PaymentConfig {
    type Error = ConfigError;

    fn try_from(a: PaymentArgs) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: listen("listen", &a.listen)?,
            common: a.common.try_into()?,
        })
    }
}

/// `order` flags.
#[derive(Debug, Parser)]
#[command(
    name = "order",
    version,
    about = "meshwatch order service: the PlaceOrder saga over inventory and payment"
)]
pub struct OrderArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "MESHWATCH_ORDER_LISTEN", default_value = DEFAULT_ORDER_LISTEN)]
    pub listen: String,
    /// URL of the inventory service.
    #[arg(long, env = "MESHWATCH_INVENTORY_ADDR", default_value = DEFAULT_INVENTORY_ADDR)]
    pub inventory_addr: String,
    /// URL of the payment service.
    #[arg(long, env = "MESHWATCH_PAYMENT_ADDR", default_value = DEFAULT_PAYMENT_ADDR)]
    pub payment_addr: String,
    /// Currency orders are taken in (the catalog's).
    #[arg(long, env = "MESHWATCH_CURRENCY", default_value = catalog::SEED_CURRENCY)]
    pub currency: String,
    /// Bound on one call to inventory or payment.
    #[arg(long, env = "MESHWATCH_CALL_TIMEOUT", default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub call_timeout: Duration,
    /// Budget of a PlaceOrder whose caller sent no deadline; also caps the caller's.
    #[arg(long, env = "MESHWATCH_REQUEST_BUDGET", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_budget: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone)]
pub struct OrderConfig {
    pub listen: SocketAddr,
    pub inventory_addr: String,
    pub payment_addr: String,
    pub currency: String,
    pub call_timeout: Duration,
    pub request_budget: Duration,
    pub common: Common,
}

impl OrderConfig {
    /// Defaults for the given addresses; for tests.
    pub fn local(listen: SocketAddr, inventory_addr: &str, payment_addr: &str) -> Self {
        Self {
            listen,
            inventory_addr: inventory_addr.to_owned(),
            payment_addr: payment_addr.to_owned(),
            currency: catalog::SEED_CURRENCY.to_owned(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            request_budget: DEFAULT_REQUEST_BUDGET,
            common: Common::default(),
        }
    }
}

impl TryFrom<OrderArgs> for OrderConfig {
    type Error = ConfigError;

    fn try_from(a: OrderArgs) -> Result<Self, ConfigError> {
        if !crate::money::is_currency_code(&a.currency) {
            return Err(ConfigError::new(
                "currency",
                format!("{:?} is not an ISO 4217 code like USD", a.currency),
            ));
        }
        if a.call_timeout.is_zero() {
            return Err(ConfigError::new("call-timeout", "must be positive"));
        }
        if a.request_budget.is_zero() {
            return Err(ConfigError::new("request-budget", "must be positive"));
        }
        let common: Common = a.common.try_into()?;
        Ok(Self {
            listen: listen("listen", &a.listen)?,
            inventory_addr: url("inventory-addr", &a.inventory_addr, common.tls.as_ref())?,
            payment_addr: url("payment-addr", &a.payment_addr, common.tls.as_ref())?,
            currency: a.currency,
            call_timeout: at_most_max("call-timeout", a.call_timeout)?,
            request_budget: at_most_max("request-budget", a.request_budget)?,
            common,
        })
    }
}

/// Parses `args` into `C` through `A`; on bad input prints one line naming
/// the flag and returns the exit code: 0 for --help and --version, 64
/// otherwise.
pub fn parse<A, C>(args: impl IntoIterator<Item = OsString>) -> Result<C, ExitCode>
where
    A: Parser,
    C: TryFrom<A, Error = ConfigError>,
{
    let program = A::command().get_name().to_owned();
    let parsed: A = parse_args_from(&program, args).map_err(ExitCode::from)?;
    C::try_from(parsed).map_err(|e| Exit::Usage.fail(&program, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_flag_shows_duration_in_help() {
        use clap::CommandFactory;
        for cmd in [
            OrderArgs::command(),
            InventoryArgs::command(),
            PaymentArgs::command(),
        ] {
            assert_eq!(
                meshwatch_entry::duration_flags_without_value_name(&cmd),
                Vec::<String>::new()
            );
        }
    }

    fn order(args: &[&str]) -> Result<OrderConfig, ConfigError> {
        let mut v = vec!["order"];
        v.extend_from_slice(args);
        OrderConfig::try_from(OrderArgs::try_parse_from(v).unwrap())
    }

    #[test]
    fn cli_definitions_are_consistent() {
        use clap::CommandFactory;
        OrderArgs::command().debug_assert();
        InventoryArgs::command().debug_assert();
        PaymentArgs::command().debug_assert();
    }

    #[test]
    fn defaults_are_valid() {
        let o = order(&[]).unwrap();
        assert_eq!(o.listen, DEFAULT_ORDER_LISTEN.parse().unwrap());
        assert_eq!(o.inventory_addr, DEFAULT_INVENTORY_ADDR);
        assert_eq!(o.common.heartbeat_interval, Duration::from_secs(1));
        let i = InventoryConfig::try_from(InventoryArgs::try_parse_from(["inventory"]).unwrap())
            .unwrap();
        assert_eq!(i.catalog, catalog::seed());
        PaymentConfig::try_from(PaymentArgs::try_parse_from(["payment"]).unwrap()).unwrap();
    }

    #[test]
    fn bad_values_name_their_flag() {
        assert_eq!(order(&["--listen", "nowhere"]).unwrap_err().flag, "listen");
        assert_eq!(
            order(&["--inventory-addr", "127.0.0.1:1"])
                .unwrap_err()
                .flag,
            "inventory-addr"
        );
        assert_eq!(order(&["--currency", "usd"]).unwrap_err().flag, "currency");
        assert_eq!(
            order(&["--payment-addr", "http://bad host:1"])
                .unwrap_err()
                .flag,
            "payment-addr"
        );
        let e = order(&["--fault-error-rate", "2"]).unwrap_err();
        assert_eq!(e.to_string(), "--fault-error-rate: 2 is outside [0, 1]");
        let e = order(&["--inventory-addr", "https://inventory:50052"]).unwrap_err();
        assert_eq!(e.flag, "inventory-addr");
        assert!(e.reason.contains("--tls-ca"), "{e}");
        assert_eq!(
            order(&["--tls-cert", "/nonexistent.pem"]).unwrap_err().flag,
            "tls-key"
        );
        let e = InventoryConfig::try_from(
            InventoryArgs::try_parse_from(["inventory", "--catalog", "/nonexistent.json"]).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.flag, "catalog");
        assert!(OrderArgs::try_parse_from(["order", "--call-timeout", "soon"]).is_err());
    }

    #[test]
    fn database_admin_and_limit_flags() {
        let o = order(&[]).unwrap();
        assert_eq!(
            o.common.database,
            DbTarget::Sqlite {
                data_dir: PathBuf::from(DEFAULT_DATA_DIR)
            }
        );
        assert_eq!(o.common.admin_listen, None, "admin is off by default");
        let o = order(&[
            "--database-url",
            "postgres://u:p@127.0.0.1:5432/order",
            "--admin-listen",
            "127.0.0.1:6051",
            "--retention",
            "1h",
        ])
        .unwrap();
        assert!(matches!(o.common.database, DbTarget::Postgres { .. }));
        assert_eq!(
            o.common.admin_listen,
            Some("127.0.0.1:6051".parse().unwrap())
        );
        assert_eq!(o.common.retention, Duration::from_secs(3600));
        let e = order(&["--admin-listen", "0.0.0.0:6051"]).unwrap_err();
        assert_eq!(e.flag, "admin-listen");
        assert!(e.to_string().contains("loopback"), "{e}");
        let e = order(&["--database-url", "mysql://x/y"]).unwrap_err();
        assert_eq!(e.flag, "database-url");
        let e = order(&["--database-url", "postgres://u:hunter2@h:notaport/x"]).unwrap_err();
        assert!(
            !e.to_string().contains("hunter2"),
            "no password in errors: {e}"
        );
        assert_eq!(
            order(&["--max-concurrent-rpcs", "0"]).unwrap_err().flag,
            "max-concurrent-rpcs"
        );
        assert_eq!(
            order(&["--max-message-bytes", "10"]).unwrap_err().flag,
            "max-message-bytes"
        );
        assert_eq!(order(&["--retention", "1s"]).unwrap_err().flag, "retention");
    }

    #[test]
    fn durations_that_would_overflow_the_clock_are_refused() {
        // Parses as a Duration, but `Instant::now() + d` panics: refused by
        // the parser; past 30 days refused by the config, naming the flag.
        let huge = "10000000000000000000s";
        for flag in ["--call-timeout", "--request-budget"] {
            assert!(OrderArgs::try_parse_from(["order", flag, huge]).is_err());
        }
        assert!(InventoryArgs::try_parse_from(["inventory", "--reservation-ttl", huge]).is_err());
        let e = order(&["--retention", "31d"]).unwrap_err();
        assert_eq!(e.flag, "retention", "{e}");
        let e = order(&["--call-timeout", "31d"]).unwrap_err();
        assert_eq!(e.flag, "call-timeout", "{e}");
        let e = order(&["--request-budget", "31d"]).unwrap_err();
        assert_eq!(e.flag, "request-budget", "{e}");
        let e = InventoryConfig::try_from(
            InventoryArgs::try_parse_from(["inventory", "--reservation-ttl", "31d"]).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.flag, "reservation-ttl", "{e}");
        assert!(order(&["--request-budget", "720h"]).is_ok());
    }
}

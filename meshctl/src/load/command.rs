//! `meshctl load`: the command. Flags, the PlaceOrder call the engine drives,
//! progress on stderr and the report on stdout.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use meshwatch_proto::order::v1 as pb;

use super::engine::{run_load, LoadSpec};
use crate::{CliError, Style};

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The order service's gRPC address.
    #[arg(long, env = "MESHWATCH_ORDER_ADDR", default_value = crate::DEFAULT_ORDER)]
    pub order: String,
    /// Requests per second; 0 runs closed-loop at saturation.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long to generate load.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "10s", value_name = "DURATION")]
    pub duration: Duration,
    /// Most requests in flight at once (open loop: a tick finding all busy is counted as skipped).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Items of every order as SKU or SKU:QUANTITY (repeatable).
    #[arg(long = "sku", default_value = DEFAULT_SKU)]
    pub skus: Vec<String>,
    /// Currency of the orders.
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Share of orders paid with a token that is always declined, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub decline_ratio: f64,
    /// Deadline of each PlaceOrder.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub timeout: Duration,
}

/// The SKU orders use by default: one the seeded catalog stocks plentifully.
pub const DEFAULT_SKU: &str = "sku-load";

fn parse_items(skus: &[String]) -> Result<Vec<pb::LineItem>, CliError> {
    skus.iter()
        .map(|s| {
            let (sku, qty) = match s.split_once(':') {
                Some((sku, qty)) => (
                    sku,
                    qty.parse::<u32>().map_err(|_| CliError::Flag {
                        flag: "sku",
                        reason: format!("{s:?}: quantity must be a positive whole number"),
                    })?,
                ),
                None => (s.as_str(), 1),
            };
            if sku.is_empty() || qty == 0 {
                return Err(CliError::Flag {
                    flag: "sku",
                    reason: format!("{s:?}: expected SKU or SKU:QUANTITY with QUANTITY >= 1"),
                });
            }
            Ok(pb::LineItem {
                sku: sku.to_owned(),
                quantity: qty,
            })
        })
        .collect()
}

fn status_label(order: Option<&pb::Order>) -> String {
    let status = order.map_or(0, |o| o.status);
    pb::OrderStatus::try_from(status)
        .map_or("UNSPECIFIED", |s| s.as_str_name())
        .trim_start_matches("ORDER_STATUS_")
        .to_owned()
}

/// Highest `--rate` accepted (requests per second).
pub const MAX_RATE: f64 = 1_000_000.0;
/// Lowest non-zero `--rate` accepted: one request every 100 s.
pub const MIN_RATE: f64 = 0.01;
/// Highest `--concurrency` accepted.
pub const MAX_CONCURRENCY: usize = super::engine::MAX_CONCURRENCY;

/// Checks the flags a run depends on; a bad one is named (exit 64).
fn validate(args: &LoadArgs) -> Result<(), CliError> {
    let flag = |flag: &'static str, reason: String| Err(CliError::Flag { flag, reason });
    if !(args.rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&args.rate)) {
        return flag(
            "rate",
            format!(
                "{} is not 0 (closed loop) or within {MIN_RATE}..={MAX_RATE} requests/s",
                args.rate
            ),
        );
    }
    if !(0.0..=1.0).contains(&args.decline_ratio) {
        return flag("decline-ratio", "must be within [0, 1]".into());
    }
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        return flag(
            "concurrency",
            format!("{} is not within 1..={MAX_CONCURRENCY}", args.concurrency),
        );
    }
    if args.duration.is_zero() {
        return flag("duration", "must be above zero".into());
    }
    if args.timeout.is_zero() {
        return flag("timeout", "must be above zero".into());
    }
    Ok(())
}

pub(crate) async fn run(args: LoadArgs, json: bool, style: Style) -> Result<ExitCode, CliError> {
    validate(&args)?;
    let items = Arc::new(parse_items(&args.skus)?);
    let channel = crate::connect("order", &args.order).await?;
    let client = pb::order_service_client::OrderServiceClient::new(channel);
    let run_id = format!("{:08x}", rand::random::<u32>());
    let (currency, timeout, decline_ratio) =
        (args.currency.clone(), args.timeout, args.decline_ratio);
    let call = move |seq: u64| {
        let mut client = client.clone();
        let items = Arc::clone(&items);
        let currency = currency.clone();
        let run_id = run_id.clone();
        async move {
            let declined = decline_ratio > 0.0 && rand::random::<f64>() < decline_ratio;
            let mut request = tonic::Request::new(pb::PlaceOrderRequest {
                idempotency_key: format!("load-{run_id}-{seq}"),
                customer_id: "meshctl-load".into(),
                items: (*items).clone(),
                currency_code: currency,
                payment_token: if declined {
                    "tok_decline_load".into()
                } else {
                    String::new()
                },
            });
            request.set_timeout(timeout);
            match client.place_order(request).await {
                Ok(resp) => Ok(status_label(resp.get_ref().order.as_ref())),
                Err(status) => {
                    Err(meshwatch_proto::status::code_name(status.code() as i32).to_owned())
                }
            }
        }
    };
    let spec = LoadSpec {
        rate: args.rate,
        duration: args.duration,
        concurrency: args.concurrency,
    };
    let terminal = std::io::stderr().is_terminal();
    let report = run_load(spec, call, |p| {
        let line = format!(
            "{:>6.1}s  sent {:>7}  done {:>7}  errors {:>5}  p99 {:>8.2} ms  {:>8.1} req/s",
            p.elapsed.as_secs_f64(),
            p.sent,
            p.completed,
            p.errors,
            p.p99_ms,
            p.completed as f64 / p.elapsed.as_secs_f64().max(1e-9)
        );
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    })
    .await;
    if terminal {
        eprintln!();
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.render(style))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> LoadArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let mut argv = vec!["load"];
        argv.extend_from_slice(extra);
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().load
    }

    #[test]
    fn extreme_flags_are_usage_errors_naming_the_flag() {
        for (flag, value) in [
            ("rate", "1e308"),
            ("rate", "1e-300"),
            ("rate", "-1"),
            ("rate", "NaN"),
            ("rate", "inf"),
            ("concurrency", "18446744073709551615"),
            ("concurrency", "0"),
            ("duration", "0s"),
            ("timeout", "0s"),
            ("decline-ratio", "2"),
        ] {
            match validate(&args(&[&format!("--{flag}={value}")])) {
                Err(CliError::Flag { flag: named, .. }) => assert_eq!(named, flag, "{value}"),
                other => panic!("--{flag} {value}: {other:?}"),
            }
        }
        for ok in [
            vec!["--rate", "0", "--concurrency", "10000"],
            vec![
                "--rate",
                "1000000",
                "--duration",
                "3650d",
                "--timeout",
                "3650d",
            ],
            vec!["--rate", "0.01"],
        ] {
            assert!(validate(&args(&ok)).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn items_parse_and_reject() {
        let items = parse_items(&["sku-a".into(), "sku-b:3".into()]).unwrap();
        assert_eq!(items[0].quantity, 1);
        assert_eq!(items[1].quantity, 3);
        assert!(parse_items(&["sku-a:0".into()]).is_err());
        assert!(parse_items(&["sku-a:x".into()]).is_err());
        assert!(parse_items(&[":2".into()]).is_err());
    }
}

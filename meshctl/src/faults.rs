//! `meshctl faults ADDR`: reads or changes a service's fault injection on its
//! admin listener (`--admin-listen`, loopback; never the public port). With
//! no change flag it shows what is in force; with some, it changes only
//! those and shows the result.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::CliError;
use meshwatch_proto::admin::v1 as apb;

#[derive(Args, Debug)]
pub struct FaultsArgs {
    /// The service's admin address (its --admin-listen), e.g. 127.0.0.1:60053.
    pub addr: String,
    /// Latency added before each RPC, e.g. 50ms (0ms turns it off).
    #[arg(long, value_parser = meshwatch_entry::parse_duration, value_name = "DURATION")]
    pub latency: Option<Duration>,
    /// Probability in [0, 1] that an RPC fails with UNAVAILABLE.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// Probability in [0, 1] that a charge is declined (payment).
    #[arg(long)]
    pub decline_rate: Option<f64>,
    /// RPCs answer only when the caller's deadline passes: true or false.
    #[arg(long)]
    pub hang: Option<bool>,
    /// Give up after this long.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub timeout: Duration,
}

impl FaultsArgs {
    /// The change asked for, or `None` to only read; bad values name their flag.
    fn change(&self) -> Result<Option<apb::SetFaultsRequest>, CliError> {
        for (flag, v) in [
            ("error-rate", self.error_rate),
            ("decline-rate", self.decline_rate),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(CliError::Flag {
                        flag,
                        reason: format!("{v} is outside [0, 1]"),
                    });
                }
            }
        }
        let latency_ms = self
            .latency
            .map(|d| {
                u32::try_from(d.as_millis()).map_err(|_| CliError::Flag {
                    flag: "latency",
                    reason: format!("{d:?} is too long"),
                })
            })
            .transpose()?;
        let req = apb::SetFaultsRequest {
            latency_ms,
            error_rate: self.error_rate,
            decline_rate: self.decline_rate,
            hang: self.hang,
        };
        Ok((req != apb::SetFaultsRequest::default()).then_some(req))
    }
}

async fn call(
    args: &FaultsArgs,
    change: Option<apb::SetFaultsRequest>,
) -> Result<apb::Faults, CliError> {
    let channel = crate::connect("admin listener", &args.addr).await?;
    let mut client = apb::fault_service_client::FaultServiceClient::new(channel);
    let answer = match change {
        Some(req) => client.set_faults(req).await,
        None => client.get_faults(apb::GetFaultsRequest {}).await,
    };
    answer
        .map(tonic::Response::into_inner)
        .map_err(|s| CliError::rpc("fault admin", &s))
}

pub(crate) async fn run(args: FaultsArgs, json: bool) -> Result<ExitCode, CliError> {
    let change = args.change()?;
    let faults = tokio::time::timeout(args.timeout, call(&args, change))
        .await
        .map_err(|_| CliError::Connect {
            what: "admin listener",
            addr: args.addr.clone(),
            reason: format!("no answer within {:?}", args.timeout),
        })??;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "latency_ms": faults.latency_ms,
                "error_rate": faults.error_rate,
                "decline_rate": faults.decline_rate,
                "hang": faults.hang,
            })
        );
    } else {
        println!(
            "latency {}ms  error_rate {}  decline_rate {}  hang {}",
            faults.latency_ms, faults.error_rate, faults.decline_rate, faults.hang
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FaultsArgs,
    }

    fn args(v: &[&str]) -> FaultsArgs {
        let mut all = vec!["faults", "127.0.0.1:1"];
        all.extend_from_slice(v);
        Cli::try_parse_from(all).unwrap().args
    }

    #[test]
    fn no_flag_reads_and_flags_change_only_themselves() {
        assert!(args(&[]).change().unwrap().is_none());
        let req = args(&["--error-rate", "0.5", "--latency", "50ms"])
            .change()
            .unwrap()
            .unwrap();
        assert_eq!(req.error_rate, Some(0.5));
        assert_eq!(req.latency_ms, Some(50));
        assert_eq!(req.decline_rate, None);
        assert_eq!(req.hang, None);
        let e = args(&["--decline-rate", "2"]).change().unwrap_err();
        assert!(
            matches!(
                e,
                CliError::Flag {
                    flag: "decline-rate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(Cli::try_parse_from(["faults", "a", "--latency", "50"]).is_err());
    }
}

//! `meshctl alerts`: the monitor's alert stream, one line per alert or recovery.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::{CliError, Style};
use meshwatch_proto::monitor::v1 as pb;

#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// The monitor's gRPC address.
    #[arg(long, env = "MESHWATCH_MONITOR_ADDR", default_value = crate::DEFAULT_MONITOR)]
    pub monitor: String,
    /// Only alerts of this service.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Only alerts of these kinds (repeatable): error_rate, latency, status_change, capacity.
    #[arg(long = "kind", value_parser = ["error_rate", "latency", "status_change", "capacity"])]
    pub kinds: Vec<String>,
    /// Exit after this many alerts (after the filters).
    #[arg(long)]
    pub count: Option<usize>,
    /// Exit (with status 1) when the stream stayed silent this long.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

fn kind_name(kind: i32) -> &'static str {
    match pb::AlertKind::try_from(kind) {
        Ok(pb::AlertKind::AnomalyErrorRate) => "error_rate",
        Ok(pb::AlertKind::AnomalyLatency) => "latency",
        Ok(pb::AlertKind::StatusChange) => "status_change",
        Ok(pb::AlertKind::Capacity) => "capacity",
        _ => "unknown",
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::AlertState::try_from(state) {
        Ok(pb::AlertState::Firing) => "firing",
        Ok(pb::AlertState::Resolved) => "resolved",
        _ => "unknown",
    }
}

pub(crate) fn to_json(a: &pb::Alert) -> serde_json::Value {
    json!({
        "id": a.id,
        "kind": kind_name(a.kind),
        "service": a.service,
        "state": state_name(a.state),
        "message": a.message,
        "observed": a.observed,
        "baseline": a.baseline,
        "threshold": a.threshold,
        "requests": a.requests,
        "example_trace_ids": a.example_trace_ids,
    })
}

pub(crate) async fn run(args: AlertsArgs, json: bool, style: Style) -> Result<ExitCode, CliError> {
    let channel = crate::connect("monitor", &args.monitor).await?;
    let mut stream = pb::monitor_client::MonitorClient::new(channel)
        .stream_alerts(pb::StreamAlertsRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|s| CliError::rpc("monitor", &s))?
        .into_inner();
    let mut seen = 0usize;
    loop {
        if args.count.is_some_and(|c| seen >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        let next = match args.timeout {
            Some(t) => match tokio::time::timeout(t, stream.message()).await {
                Ok(next) => next,
                Err(_) => return Ok(ExitCode::FAILURE),
            },
            None => stream.message().await,
        };
        let alert = match next {
            Ok(Some(alert)) => alert,
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Err(s) => return Err(CliError::rpc("monitor", &s)),
        };
        if !args.kinds.is_empty() && !args.kinds.iter().any(|k| k == kind_name(alert.kind)) {
            continue;
        }
        seen += 1;
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", to_json(&alert))?;
        } else {
            writeln!(
                out,
                "{} {:<13} {:<10} {}",
                style.level(&format!("{:<8}", state_name(alert.state))),
                kind_name(alert.kind),
                alert.service,
                alert.message
            )?;
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_kind_has_a_name_the_kind_filter_takes() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: AlertsArgs,
        }
        let cmd = Cli::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "kinds")
            .expect("--kind");
        let accepted: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect();
        for kind in [
            pb::AlertKind::AnomalyErrorRate,
            pb::AlertKind::AnomalyLatency,
            pb::AlertKind::StatusChange,
            pb::AlertKind::Capacity,
        ] {
            let name = kind_name(kind as i32);
            assert_ne!(name, "unknown", "{kind:?}");
            assert!(accepted.iter().any(|a| a == name), "{name} not in --kind");
        }
        assert_eq!(kind_name(pb::AlertKind::Unspecified as i32), "unknown");
    }
}

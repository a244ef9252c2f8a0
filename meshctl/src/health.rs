//! `meshctl health`: the monitor's view of services and their instances.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::{output, CliError, Style};
use meshwatch_proto::monitor::v1 as pb;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The monitor's gRPC address.
    #[arg(long, env = "MESHWATCH_MONITOR_ADDR", default_value = crate::DEFAULT_MONITOR)]
    pub monitor: String,
    /// Wait until the whole mesh is SERVING, at most this long; exit 1 if it never is.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, value_name = "DURATION")]
    pub wait_serving: Option<Duration>,
    /// With --wait-serving: also wait until this service is known and SERVING
    /// (repeatable). The whole mesh is SERVING as soon as every service seen so
    /// far is, which at start-up may be before all of them have reported.
    #[arg(long = "require", value_name = "SERVICE")]
    pub require: Vec<String>,
}

/// True when the mesh and every `required` service are SERVING.
fn ready(resp: &pb::ListServicesResponse, required: &[String]) -> bool {
    let serving = pb::ServingStatus::Serving as i32;
    resp.mesh_status == serving
        && required.iter().all(|name| {
            resp.services
                .iter()
                .any(|s| &s.name == name && s.status == serving)
        })
}

fn status_name(status: i32) -> &'static str {
    match pb::ServingStatus::try_from(status) {
        Ok(pb::ServingStatus::Serving) => "SERVING",
        Ok(pb::ServingStatus::NotServing) => "NOT_SERVING",
        _ => "UNKNOWN",
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::InstanceState::try_from(state) {
        Ok(pb::InstanceState::Alive) => "alive",
        Ok(pb::InstanceState::NotReady) => "not_ready",
        Ok(pb::InstanceState::Suspected) => "suspected",
        Ok(pb::InstanceState::Down) => "down",
        _ => "unknown",
    }
}

fn age(d: Option<&prost_types::Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1}s", d.seconds as f64 + f64::from(d.nanos) / 1e9),
    )
}

/// phi with two decimals; past 999 (certain death) just `>999`.
fn phi(v: f64) -> String {
    if v.is_finite() && v < 999.0 {
        format!("{v:.2}")
    } else {
        ">999".to_owned()
    }
}

/// The table of services and instances.
pub(crate) fn render(resp: &pb::ListServicesResponse, style: Style) -> String {
    let width = resp
        .services
        .iter()
        .map(|s| s.name.chars().count())
        .chain(std::iter::once(16))
        .max()
        .unwrap_or(16);
    let mut out = format!("mesh: {}\n", style.level(status_name(resp.mesh_status)));
    out.push_str(&style.bold(&format!(
        "{}  {}  {}  {:<9}  {:>8}  {:>6}\n",
        output::pad("SERVICE", width),
        output::pad("STATUS", 11),
        output::pad("INSTANCE", 30),
        "STATE",
        "LAST HB",
        "PHI"
    )));
    for svc in &resp.services {
        let status = style.level(&output::pad(status_name(svc.status), 11));
        if svc.instances.is_empty() {
            let note = if svc.fading {
                "  (fading: every instance forgotten; no longer counts for the mesh)"
            } else {
                ""
            };
            out.push_str(&format!(
                "{}  {status}{note}\n",
                output::pad(&svc.name, width)
            ));
        }
        for (i, inst) in svc.instances.iter().enumerate() {
            let (name, status) = if i == 0 {
                (svc.name.as_str(), status.clone())
            } else {
                ("", " ".repeat(11))
            };
            out.push_str(&format!(
                "{}  {status}  {}  {}  {:>8}  {:>6}\n",
                output::pad(name, width),
                output::pad(&inst.instance_id, 30),
                style.level(&format!("{:<9}", state_name(inst.state))),
                age(inst.last_heartbeat_age.as_ref()),
                phi(inst.phi)
            ));
        }
    }
    out
}

fn to_json(resp: &pb::ListServicesResponse) -> serde_json::Value {
    json!({
        "mesh_status": status_name(resp.mesh_status),
        "services": resp.services.iter().map(|s| json!({
            "name": s.name,
            "grpc_service_names": s.grpc_service_names,
            "status": status_name(s.status),
            "fading": s.fading,
            "instances": s.instances.iter().map(|i| json!({
                "instance_id": i.instance_id,
                "version": i.version,
                "state": state_name(i.state),
                "last_heartbeat_age_s": i.last_heartbeat_age.as_ref().map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9),
                "phi": if i.phi.is_finite() { json!(i.phi) } else { json!(null) },
                "last_sequence": i.last_sequence,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// When `--wait-serving` gives up: `wait` after `now`, or as far as the
/// clock goes (a flag can ask for years).
fn deadline(now: tokio::time::Instant, wait: Duration) -> tokio::time::Instant {
    now.checked_add(wait).unwrap_or_else(|| {
        now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600))
            .unwrap_or(now)
    })
}

pub(crate) async fn run(args: HealthArgs, json: bool, style: Style) -> Result<ExitCode, CliError> {
    let deadline = args
        .wait_serving
        .map(|d| deadline(tokio::time::Instant::now(), d));
    let resp = loop {
        let attempt = async {
            let channel = crate::connect("monitor", &args.monitor).await?;
            pb::monitor_client::MonitorClient::new(channel)
                .list_services(pb::ListServicesRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| CliError::rpc("monitor", &s))
        }
        .await;
        match (attempt, deadline) {
            (Ok(resp), None) => break resp,
            (Ok(resp), Some(_)) if ready(&resp, &args.require) => break resp,
            (Ok(resp), Some(d)) if tokio::time::Instant::now() >= d => {
                print(&resp, json, style)?;
                return Ok(ExitCode::FAILURE);
            }
            (Err(e), Some(d)) if tokio::time::Instant::now() >= d => return Err(e),
            (Err(e), None) => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    print(&resp, json, style)?;
    Ok(ExitCode::SUCCESS)
}

fn print(resp: &pb::ListServicesResponse, json: bool, style: Style) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", to_json(resp))?;
    } else {
        write!(stdout, "{}", render(resp, style))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_services_must_be_known_and_serving() {
        let serving = pb::ServingStatus::Serving as i32;
        let svc = |name: &str, status| pb::ServiceStatus {
            name: name.into(),
            status,
            ..Default::default()
        };
        let mut resp = pb::ListServicesResponse {
            mesh_status: serving,
            services: vec![svc("order", serving)],
        };
        let req = vec!["order".to_owned(), "payment".to_owned()];
        assert!(ready(&resp, &[]));
        assert!(!ready(&resp, &req), "payment not seen yet");
        resp.services
            .push(svc("payment", pb::ServingStatus::NotServing as i32));
        assert!(!ready(&resp, &req));
        resp.services[1].status = serving;
        assert!(ready(&resp, &req));
        resp.mesh_status = pb::ServingStatus::NotServing as i32;
        assert!(!ready(&resp, &req));
    }

    #[test]
    fn any_wait_gives_a_deadline_without_overflow() {
        let now = tokio::time::Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(deadline(now, meshwatch_entry::MAX_DURATION) > now);
        assert!(deadline(now, Duration::MAX) >= now);
    }

    #[test]
    fn table_lists_services_and_instances() {
        let resp = pb::ListServicesResponse {
            mesh_status: pb::ServingStatus::NotServing as i32,
            services: vec![pb::ServiceStatus {
                name: "payment".into(),
                grpc_service_names: vec!["meshwatch.payment.v1.PaymentService".into()],
                status: pb::ServingStatus::NotServing as i32,
                instances: vec![pb::InstanceStatus {
                    instance_id: "payment-0123456789ab".into(),
                    state: pb::InstanceState::Suspected as i32,
                    last_heartbeat_age: Some(prost_types::Duration {
                        seconds: 4,
                        nanos: 500_000_000,
                    }),
                    phi: 9.25,
                    ..Default::default()
                }],
                fading: false,
            }],
        };
        let text = render(&resp, Style::plain());
        assert!(text.starts_with("mesh: NOT_SERVING\n"), "{text}");
        let row = text.lines().nth(2).unwrap();
        assert!(row.starts_with("payment"), "{row}");
        for part in [
            "NOT_SERVING",
            "payment-0123456789ab",
            "suspected",
            "4.5s",
            "9.25",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
        assert_eq!(
            to_json(&resp)["services"][0]["instances"][0]["state"],
            "suspected"
        );
    }
}

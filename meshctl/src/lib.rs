//! `meshctl`: the command line for a running mesh. Follow or search the log
//! topic, print one request's cross-service timeline, show the monitor's view,
//! stream alerts, create the topics, prepare Elasticsearch and Kibana,
//! generate PlaceOrder load, and read or change a service's fault injection
//! on its admin listener.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use meshwatch_entry::Exit;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod alerts;
pub mod elastic;
mod faults;
mod health;
mod kafka_scan;
mod load;
mod output;
mod probe;
mod setup;
mod tail;
mod topics;
mod trace;

pub use load::{run_load, LoadReport, LoadSpec, Progress, DEFAULT_SKU as DEFAULT_LOAD_SKU};
pub use output::Style;
pub use trace::{parse_trace_line, render_timeline, TraceLine};

/// Default order service address.
pub const DEFAULT_ORDER: &str = "http://127.0.0.1:50051";
/// Default monitor address.
pub const DEFAULT_MONITOR: &str = "http://127.0.0.1:50050";

/// Errors of meshctl commands; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("kafka: {0}")]
    Kafka(#[from] meshwatch_kafka::KafkaError),
    #[error("kafka client: {0}")]
    KafkaClient(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic} does not exist on {bootstrap}; create it with `meshctl topics create --kafka {bootstrap}`")]
    MissingTopic { topic: String, bootstrap: String },
    #[error("cannot reach {what} at {addr}: {reason}")]
    Connect {
        what: &'static str,
        addr: String,
        reason: String,
    },
    #[error("{what} answered {code}: {message}")]
    Rpc {
        what: &'static str,
        code: String,
        message: String,
    },
    #[error("invalid --{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("no log line with trace.id {0} was found")]
    TraceNotFound(String),
    #[error(transparent)]
    Elastic(#[from] elastic::ElasticError),
    #[error(transparent)]
    Config(#[from] meshwatch_entry::ConfigError),
}

impl CliError {
    /// [`Exit::Usage`] for a bad flag value, [`Exit::Runtime`] for everything else.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Flag { .. } | CliError::Config(_) => Exit::Usage,
            _ => Exit::Runtime,
        }
    }

    pub(crate) fn rpc(what: &'static str, status: &tonic::Status) -> Self {
        Self::Rpc {
            what,
            code: meshwatch_proto::status::code_name(status.code() as i32).to_owned(),
            message: status.message().to_owned(),
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "meshctl",
    version,
    about = "Look into a running meshwatch mesh: traces, logs, health, alerts, load"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print machine-readable JSON (one object per line) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// gRPC TLS towards order and the monitor (https:// addresses; a bare
    /// HOST:PORT is https when --tls-ca is given).
    #[command(flatten)]
    pub tls: meshwatch_entry::TlsArgs,
    /// Colour the output: auto (when stdout is a terminal), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, env = "MESHWATCH_COLOR")]
    pub color: ColorChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the cross-service timeline of one request, by its trace id.
    Trace(trace::TraceArgs),
    /// Follow the log topic, optionally filtered.
    Tail(tail::TailArgs),
    /// Show the monitor's view of services and instances.
    Health(health::HealthArgs),
    /// Stream the monitor's alerts and recoveries.
    Alerts(alerts::AlertsArgs),
    /// Generate PlaceOrder load and report throughput and latency.
    Load(load::LoadArgs),
    /// Manage the meshwatch topics.
    Topics(topics::TopicsArgs),
    /// Prepare Elasticsearch and Kibana: index templates, lifecycle, saved objects.
    Setup(setup::SetupArgs),
    /// Check one server's grpc.health.v1 status (exit 0 when SERVING); for container health checks.
    Probe(probe::ProbeArgs),
    /// Show or change a service's fault injection on its admin listener (--admin-listen).
    Faults(faults::FaultsArgs),
}

/// Kafka flags of the commands that read the log topic.
#[derive(Args, Debug, Clone)]
pub struct LogTopicArgs {
    #[command(flatten)]
    pub kafka: meshwatch_entry::KafkaArgs,
    /// The topic of service log lines.
    #[arg(long, env = meshwatch_entry::env::LOGS_TOPIC, default_value = meshwatch_kafka::LOGS_TOPIC)]
    pub logs_topic: String,
}

/// TLS for the gRPC connections of this run, loaded once from the global
/// `--tls-*` flags before any command connects.
static TLS: std::sync::OnceLock<Option<meshwatch_tls::Tls>> = std::sync::OnceLock::new();

/// Runs one meshctl command to completion.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let style = Style::new(cli.color);
    let tls = meshwatch_tls::Tls::load(&cli.tls)?;
    let _ = TLS.set(tls);
    match cli.command {
        Command::Trace(args) => trace::run(args, cli.json, style).await,
        Command::Tail(args) => tail::run(args, cli.json, style).await,
        Command::Health(args) => health::run(args, cli.json, style).await,
        Command::Alerts(args) => alerts::run(args, cli.json, style).await,
        Command::Load(args) => load::run(args, cli.json, style).await,
        Command::Topics(args) => topics::run(args, cli.json).await,
        Command::Setup(args) => setup::run(args, cli.json).await,
        Command::Probe(args) => probe::run(args).await,
        Command::Faults(args) => faults::run(args, cli.json).await,
    }
}

/// Connects a gRPC channel with a bounded connect timeout: `http://`,
/// `https://` (with `--tls-ca`), or a bare HOST:PORT (https when `--tls-ca`
/// is given, else http).
pub(crate) async fn connect(
    what: &'static str,
    addr: &str,
) -> Result<tonic::transport::Channel, CliError> {
    let tls = TLS.get().and_then(Option::as_ref);
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else if tls.is_some_and(meshwatch_tls::Tls::can_call_tls) {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let endpoint = meshwatch_tls::endpoint(what, &uri, tls)
        .map_err(|e| CliError::Connect {
            what,
            addr: addr.to_owned(),
            reason: e.reason,
        })?
        .connect_timeout(Duration::from_secs(5));
    endpoint.connect().await.map_err(|e| CliError::Connect {
        what,
        addr: uri,
        reason: source_text(&e),
    })
}

/// The innermost cause of `e` (what the TLS or TCP layer said).
fn source_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_duration_flag_shows_duration_in_help() {
        use clap::CommandFactory;
        assert_eq!(
            meshwatch_entry::duration_flags_without_value_name(&Cli::command()),
            Vec::<String>::new()
        );
    }
}

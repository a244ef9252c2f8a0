//! `meshctl setup`: the one-shot job that prepares Elasticsearch and Kibana
//! before anything is indexed: waits for both (bounded), installs the index
//! templates with their lifecycle, and imports the Kibana saved objects.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::elastic::{Auth, Elastic, ElasticError, Kibana, Retry, SAVED_OBJECTS};
use crate::CliError;

/// Default Elasticsearch URL.
pub const DEFAULT_ES: &str = "http://127.0.0.1:9200";
/// Default Kibana URL.
pub const DEFAULT_KIBANA: &str = "http://127.0.0.1:5601";
/// How often a server that is still starting is asked again.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Credentials for Elasticsearch (and Kibana, which checks them against it).
#[derive(Args, Debug, Clone, Default)]
pub struct EsAuthArgs {
    /// User for Elasticsearch and Kibana (basic auth); none when security is off.
    #[arg(long, env = "MESHWATCH_ES_USER")]
    pub user: Option<String>,
    /// Password of --user.
    #[arg(long, env = "MESHWATCH_ES_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// PEM CA bundle that signed the https:// Elasticsearch and Kibana
    /// certificates (default: the system's trusted roots).
    #[arg(long = "es-ca", env = "MESHWATCH_ES_CA", value_name = "PEM")]
    pub ca: Option<std::path::PathBuf>,
}

impl EsAuthArgs {
    /// Credentials and the CA, read now so a bad file is a usage error.
    pub fn auth(&self) -> Result<Auth, CliError> {
        let ca_pem = match &self.ca {
            Some(path) => Some(std::fs::read(path).map_err(|e| CliError::Flag {
                flag: "es-ca",
                reason: format!("cannot read {}: {e}", path.display()),
            })?),
            None => None,
        };
        Ok(Auth {
            user: self.user.clone(),
            password: self.password.clone(),
            ca_pem,
        })
    }
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// Elasticsearch URL.
    #[arg(long, env = "MESHWATCH_ES", default_value = DEFAULT_ES)]
    pub es: String,
    /// Kibana URL.
    #[arg(long, env = "MESHWATCH_KIBANA", default_value = DEFAULT_KIBANA)]
    pub kibana: String,
    #[command(flatten)]
    pub auth: EsAuthArgs,
    /// How long to wait for each of Elasticsearch and Kibana to come up.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "5m")]
    pub wait: Duration,
    /// Only install the Elasticsearch templates; do not touch Kibana.
    #[arg(long)]
    pub skip_kibana: bool,
}

/// A URL flag that does not parse is a usage error (exit 64) naming the flag;
/// every other error passes through.
pub(crate) fn url_flag(flag: &'static str) -> impl FnOnce(ElasticError) -> CliError {
    move |e| match e {
        ElasticError::Url { url, reason, .. } => CliError::Flag {
            flag,
            reason: format!("{url:?} is not an http(s) URL: {reason}"),
        },
        ElasticError::Ca { reason } => CliError::Flag {
            flag: "es-ca",
            reason,
        },
        other => other.into(),
    }
}

fn step(json: bool, what: &str, detail: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", json!({ "step": what, "detail": detail }))?;
    } else {
        writeln!(out, "{what}: {detail}")?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) async fn run(args: SetupArgs, json: bool) -> Result<ExitCode, CliError> {
    let auth = args.auth.auth()?;
    let retry = Retry::for_about(args.wait, PROBE_INTERVAL);
    let es = Elastic::connect(&args.es, &auth).map_err(url_flag("es"))?;
    let kibana = if args.skip_kibana {
        None
    } else {
        Some(Kibana::connect(&args.kibana, &auth).map_err(url_flag("kibana"))?)
    };

    es.wait_ready(retry).await?;
    step(json, "elasticsearch", &format!("ready at {}", es.url()))?;
    for installed in es.install_templates().await? {
        step(json, "installed", &installed)?;
    }

    if let Some(kibana) = kibana {
        kibana.wait_ready(retry).await?;
        step(json, "kibana", &format!("ready at {}", kibana.url()))?;
        let summary = kibana.import_saved_objects(SAVED_OBJECTS).await?;
        step(
            json,
            "imported",
            &format!("{} saved objects into Kibana", summary.success_count),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

//! `meshctl setup`: the one-shot job that prepares Elasticsearch and Kibana
//! before anything is indexed: waits for both (bounded), installs the index
//! templates with their lifecycle, and imports the Kibana saved objects.
//! `meshctl setup users`: the job before it, run as the `elastic` superuser,
//! that makes the least-privilege roles and users the others run with.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::elastic::users::{
    self, FLUENTD_USER, KIBANA_SYSTEM_USER, SETUP_ROLE, SETUP_USER, WRITER_ROLE,
};
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
#[command(args_conflicts_with_subcommands = true)]
pub struct SetupArgs {
    #[command(subcommand)]
    pub action: Option<SetupAction>,
    /// Elasticsearch URL.
    #[arg(long, env = "MESHWATCH_ES", default_value = DEFAULT_ES)]
    pub es: String,
    /// Kibana URL.
    #[arg(long, env = "MESHWATCH_KIBANA", default_value = DEFAULT_KIBANA)]
    pub kibana: String,
    #[command(flatten)]
    pub auth: EsAuthArgs,
    /// How long to wait for each of Elasticsearch and Kibana to come up.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "5m", value_name = "DURATION")]
    pub wait: Duration,
    /// Only install the Elasticsearch templates; do not touch Kibana.
    #[arg(long)]
    pub skip_kibana: bool,
}

#[derive(Subcommand, Debug)]
pub enum SetupAction {
    /// Create or update the roles and users the deployment runs with
    /// (meshwatch_fluentd, meshwatch_setup) and set kibana_system's password;
    /// run as the elastic superuser (--user/--password). Idempotent: run it
    /// again after changing a password.
    Users(UsersArgs),
}

#[derive(Args, Debug)]
pub struct UsersArgs {
    /// Elasticsearch URL.
    #[arg(long, env = "MESHWATCH_ES", default_value = DEFAULT_ES)]
    pub es: String,
    /// The superuser that creates the others (elastic).
    #[command(flatten)]
    pub auth: EsAuthArgs,
    /// How long to wait for Elasticsearch to come up.
    #[arg(long, value_parser = meshwatch_entry::parse_duration, default_value = "5m", value_name = "DURATION")]
    pub wait: Duration,
    /// Password of Fluentd's user meshwatch_fluentd.
    #[arg(long, env = "MESHWATCH_FLUENTD_ES_PASSWORD", hide_env_values = true)]
    pub fluentd_password: String,
    /// Password of the setup jobs' user meshwatch_setup.
    #[arg(long, env = "MESHWATCH_SETUP_ES_PASSWORD", hide_env_values = true)]
    pub setup_password: String,
    /// Password of Kibana's built-in kibana_system user (left as it is when not given).
    #[arg(long, env = "MESHWATCH_KIBANA_SYSTEM_PASSWORD", hide_env_values = true)]
    pub kibana_system_password: Option<String>,
    /// Wait for Elasticsearch and check the passwords, then print what would
    /// be created instead of sending it.
    #[arg(long)]
    pub dry_run: bool,
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
    if let Some(SetupAction::Users(users)) = args.action {
        return run_users(users, json).await;
    }
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

async fn run_users(args: UsersArgs, json: bool) -> Result<ExitCode, CliError> {
    let mut passwords: Vec<(&'static str, &str, &str)> = vec![
        ("fluentd-password", FLUENTD_USER, &args.fluentd_password),
        ("setup-password", SETUP_USER, &args.setup_password),
    ];
    if let Some(kibana) = &args.kibana_system_password {
        passwords.push(("kibana-system-password", KIBANA_SYSTEM_USER, kibana));
    }
    // The superuser's own password too: a stack seeded with an example value
    // stops here.
    if let (Some(user), Some(password)) = (&args.auth.user, &args.auth.password) {
        passwords.push(("password", user, password));
    }
    // Checked before anything is sent: an example value never becomes a password.
    for (flag, user, password) in &passwords {
        if let Some(problem) = users::password_problem(password) {
            return Err(CliError::Flag {
                flag,
                reason: format!("the password for {user} {problem}"),
            });
        }
    }
    let auth = args.auth.auth()?;
    let es = Elastic::connect(&args.es, &auth).map_err(url_flag("es"))?;
    es.wait_ready(Retry::for_about(args.wait, PROBE_INTERVAL))
        .await?;
    step(json, "elasticsearch", &format!("ready at {}", es.url()))?;

    let roles = [
        (WRITER_ROLE, users::writer_role()),
        (SETUP_ROLE, users::setup_role()),
    ];
    let accounts = [
        (
            FLUENTD_USER,
            users::user_body(
                &args.fluentd_password,
                WRITER_ROLE,
                "meshwatch Fluentd (writer)",
            ),
        ),
        (
            SETUP_USER,
            users::user_body(&args.setup_password, SETUP_ROLE, "meshwatch setup jobs"),
        ),
    ];
    if args.dry_run {
        for (name, body) in &roles {
            step(json, "would put role", &format!("{name} {body}"))?;
        }
        for (name, body) in &accounts {
            let roles = &body["roles"];
            step(
                json,
                "would put user",
                &format!("{name} roles {roles} (password hidden)"),
            )?;
        }
        if args.kibana_system_password.is_some() {
            step(json, "would set password", KIBANA_SYSTEM_USER)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for (name, body) in roles {
        es.put_role(name, body).await?;
        step(json, "role", name)?;
    }
    for (name, body) in accounts {
        es.put_user(name, body).await?;
        step(json, "user", name)?;
    }
    if let Some(password) = &args.kibana_system_password {
        es.set_password(KIBANA_SYSTEM_USER, password).await?;
        step(json, "password set", KIBANA_SYSTEM_USER)?;
    }
    Ok(ExitCode::SUCCESS)
}

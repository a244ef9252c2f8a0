//! Elasticsearch and Kibana: what `meshctl setup` installs (the ECS component
//! template, one data-stream index template per topic with its lifecycle, the
//! Kibana saved objects) and the trace search behind `meshctl trace --es`.
//!
//! The JSON lives in `elasticsearch/` and `kibana/` at the repository root and
//! is compiled in, so the setup job needs nothing but the binary.
//!
//! Layout: `es` (the cluster: templates, trace search), `kibana` (saved
//! objects), `users` (the least-privilege roles and users of the deployment),
//! `retry` (bounded waits for a server that is still starting);
//! this module holds what both clients share: the embedded JSON, the error
//! enum, credentials and the transport.

use std::time::Duration;

use elasticsearch::auth::Credentials as EsCredentials;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, Transport, TransportBuilder};
use elasticsearch::http::{StatusCode, Url};
use serde_json::Value;

mod es;
mod kibana;
mod retry;
pub mod users;

pub use es::Elastic;
pub use kibana::{import_body, ImportSummary, Kibana, MULTIPART_CONTENT_TYPE};
pub use retry::Retry;

/// Data stream Fluentd writes `meshwatch.logs` into.
pub const LOGS_DATA_STREAM: &str = "logs-meshwatch-default";
/// Data stream Fluentd writes `meshwatch.heartbeats` into.
pub const HEARTBEATS_DATA_STREAM: &str = "heartbeats-meshwatch-default";
/// Data stream Fluentd writes `meshwatch.alerts` into.
pub const ALERTS_DATA_STREAM: &str = "alerts-meshwatch-default";
/// Data stream Fluentd writes records it could not index into.
pub const DEADLETTER_DATA_STREAM: &str = "deadletter-meshwatch-default";
/// What `meshctl trace --es` searches.
pub const LOGS_INDEX_PATTERN: &str = "logs-meshwatch-*";
/// Most lines one trace search returns (Elasticsearch's default result window).
pub const MAX_TRACE_LINES: usize = 10_000;
/// Per-request timeout: a hung server must not hang the setup job.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Component templates, installed before the index templates that compose them.
pub const COMPONENT_TEMPLATES: &[(&str, &str)] = &[(
    "meshwatch-ecs@mappings",
    include_str!("../../../elasticsearch/meshwatch-ecs@mappings.json"),
)];

/// Index templates: one data stream family per topic, plus the dead letters.
pub const INDEX_TEMPLATES: &[(&str, &str)] = &[
    (
        "logs-meshwatch",
        include_str!("../../../elasticsearch/logs-meshwatch.json"),
    ),
    (
        "heartbeats-meshwatch",
        include_str!("../../../elasticsearch/heartbeats-meshwatch.json"),
    ),
    (
        "alerts-meshwatch",
        include_str!("../../../elasticsearch/alerts-meshwatch.json"),
    ),
    (
        "deadletter-meshwatch",
        include_str!("../../../elasticsearch/deadletter-meshwatch.json"),
    ),
];

/// Kibana saved objects (data views, the "Request trace" search, the dashboard).
pub const SAVED_OBJECTS: &str = include_str!("../../../kibana/meshwatch.ndjson");

/// Errors talking to Elasticsearch or Kibana; each names the server and what to check.
#[derive(Debug, thiserror::Error)]
pub enum ElasticError {
    #[error("invalid {what} URL {url:?}: {reason}")]
    Url {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("cannot reach {what} at {url}: {reason}")]
    Unreachable {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("{what} answered {status} to {request}: {body}")]
    Status {
        what: &'static str,
        request: String,
        status: u16,
        body: String,
    },
    #[error("{what} at {url} refused the credentials ({status}); check --user/--password (MESHWATCH_ES_USER/MESHWATCH_ES_PASSWORD)")]
    Unauthorized {
        what: &'static str,
        url: String,
        status: u16,
    },
    #[error(
        "{what} at {url} was not ready after {attempts} attempts over {waited:?}; last: {last}"
    )]
    NotReady {
        what: &'static str,
        url: String,
        attempts: u32,
        waited: Duration,
        last: String,
    },
    #[error("{what} sent an unexpected answer to {request}: {reason}")]
    Response {
        what: &'static str,
        request: String,
        reason: String,
    },
    #[error("embedded {name} is not valid JSON: {reason}")]
    Embedded { name: String, reason: String },
    #[error("Kibana rejected {failed} of the saved objects: {errors}")]
    Import { failed: usize, errors: String },
    #[error("unusable CA bundle: {reason}")]
    Ca { reason: String },
}

/// Basic-auth credentials for Elasticsearch and Kibana (one user for both, as
/// Kibana authenticates against Elasticsearch's realm).
#[derive(Clone, Debug, Default)]
pub struct Auth {
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM CA bundle for https:// servers; `None` trusts the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Auth {
    fn credentials(&self) -> Option<EsCredentials> {
        let user = self.user.as_deref().filter(|u| !u.is_empty())?;
        Some(EsCredentials::Basic(
            user.to_owned(),
            self.password.clone().unwrap_or_default(),
        ))
    }
}

pub(crate) fn parse_url(what: &'static str, url: &str) -> Result<Url, ElasticError> {
    let bad = |reason: String| ElasticError::Url {
        what,
        url: url.to_owned(),
        reason,
    };
    let mut parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https".into()));
    }
    // Request paths are joined onto the URL: keep a base path like /kibana.
    if !parsed.path().ends_with('/') {
        let path = format!("{}/", parsed.path());
        parsed.set_path(&path);
    }
    Ok(parsed)
}

pub(crate) fn transport(
    what: &'static str,
    url: &str,
    auth: &Auth,
) -> Result<Transport, ElasticError> {
    let parsed = parse_url(what, url)?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(parsed))
        .timeout(REQUEST_TIMEOUT)
        .enable_meta_header(false);
    if let Some(credentials) = auth.credentials() {
        builder = builder.auth(credentials);
    }
    if let Some(pem) = &auth.ca_pem {
        let ca = elasticsearch::cert::Certificate::from_pem(pem).map_err(|e| ElasticError::Ca {
            reason: e.to_string(),
        })?;
        builder = builder.cert_validation(elasticsearch::cert::CertificateValidation::Full(ca));
    }
    builder.build().map_err(|e| ElasticError::Url {
        what,
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn unreachable(what: &'static str, url: &str, e: &elasticsearch::Error) -> ElasticError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    ElasticError::Unreachable {
        what,
        url: url.to_owned(),
        reason,
    }
}

/// Reads a response: JSON on success, a named error otherwise.
pub(crate) async fn read_json(
    what: &'static str,
    url: &str,
    request: &str,
    response: Response,
) -> Result<Value, ElasticError> {
    let status = response.status_code();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(ElasticError::Unauthorized {
            what,
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let body = response
        .text()
        .await
        .map_err(|e| unreachable(what, url, &e))?;
    if !status.is_success() {
        return Err(ElasticError::Status {
            what,
            request: request.to_owned(),
            status: status.as_u16(),
            body: truncate(&body, 600),
        });
    }
    serde_json::from_str(&body).map_err(|e| ElasticError::Response {
        what,
        request: request.to_owned(),
        reason: format!("not JSON ({e}): {}", truncate(&body, 200)),
    })
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

pub(crate) fn embedded(name: &str, text: &str) -> Result<Value, ElasticError> {
    serde_json::from_str(text).map_err(|e| ElasticError::Embedded {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_is_valid() {
        for (name, text) in COMPONENT_TEMPLATES.iter().chain(INDEX_TEMPLATES) {
            embedded(name, text).unwrap();
        }
        for line in SAVED_OBJECTS.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<Value>(line).unwrap();
        }
    }

    #[test]
    fn urls_keep_a_base_path() {
        assert_eq!(
            parse_url("Kibana", "http://k:5601/kibana")
                .unwrap()
                .as_str(),
            "http://k:5601/kibana/"
        );
        assert_eq!(
            parse_url("Kibana", "http://k:5601").unwrap().as_str(),
            "http://k:5601/"
        );
        assert!(parse_url("Kibana", "k:5601").is_err());
        assert!(parse_url("Kibana", "not a url").is_err());
    }
}

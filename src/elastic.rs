//! Elasticsearch and Kibana: what `meshctl setup` installs (the ECS component
//! template, one data-stream index template per topic with its lifecycle, the
//! Kibana saved objects) and the trace search behind `meshctl trace --es`.
//!
//! The JSON lives in `elasticsearch/` and `kibana/` at the repository root and
//! is compiled in, so the setup job needs nothing but the binary.

use std::time::Duration;

use elasticsearch::auth::Credentials as EsCredentials;
use elasticsearch::cluster::{ClusterHealthParts, ClusterPutComponentTemplateParts};
use elasticsearch::http::headers::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, Transport, TransportBuilder};
use elasticsearch::http::{Method, StatusCode, Url};
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::params::WaitForStatus;
use elasticsearch::{Elasticsearch, SearchParts};
use serde_json::{json, Map, Value};

use crate::ecs::field;

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
    include_str!("../elasticsearch/meshwatch-ecs@mappings.json"),
)];

/// Index templates: one data stream family per topic, plus the dead letters.
pub const INDEX_TEMPLATES: &[(&str, &str)] = &[
    (
        "logs-meshwatch",
        include_str!("../elasticsearch/logs-meshwatch.json"),
    ),
    (
        "heartbeats-meshwatch",
        include_str!("../elasticsearch/heartbeats-meshwatch.json"),
    ),
    (
        "alerts-meshwatch",
        include_str!("../elasticsearch/alerts-meshwatch.json"),
    ),
    (
        "deadletter-meshwatch",
        include_str!("../elasticsearch/deadletter-meshwatch.json"),
    ),
];

/// Kibana saved objects (data views, the "Request trace" search, the dashboard).
pub const SAVED_OBJECTS: &str = include_str!("../kibana/meshwatch.ndjson");

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
}

/// Basic-auth credentials for Elasticsearch and Kibana (one user for both, as
/// Kibana authenticates against Elasticsearch's realm).
#[derive(Clone, Debug, Default)]
pub struct Auth {
    pub user: Option<String>,
    pub password: Option<String>,
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

/// How long to wait for a server that is still starting: `attempts` tries,
/// `interval` apart. Both bounded, so a setup job fails instead of hanging.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub interval: Duration,
}

impl Retry {
    /// Tries every `interval` for about `total`: a first attempt at once,
    /// then one after each whole `interval` within `total` (so `--wait 3s`
    /// with a 2 s interval tries at 0 s and 2 s, not only once).
    pub fn for_about(total: Duration, interval: Duration) -> Self {
        let attempts = total.as_millis() / interval.as_millis().max(1) + 1;
        Self {
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            interval,
        }
    }
}

/// What one readiness probe found.
enum Probe {
    Ready,
    NotYet(String),
}

async fn wait_until<F, Fut>(
    what: &'static str,
    url: &str,
    retry: Retry,
    mut probe: F,
) -> Result<(), ElasticError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Probe, ElasticError>>,
{
    let started = tokio::time::Instant::now();
    // Attempts and total time are both bounded: a server that accepts
    // connections but never answers cannot stretch the wait.
    let budget = retry.interval * retry.attempts.max(1);
    let deadline = started + budget;
    let mut last = String::from("no attempt made");
    let mut attempts = 0;
    while attempts < retry.attempts.max(1) {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining.max(MIN_PROBE_TIME), probe()).await {
            Ok(answer) => match answer? {
                Probe::Ready => return Ok(()),
                Probe::NotYet(why) => last = why,
            },
            Err(_) => last = format!("no answer within {:?}", remaining.max(MIN_PROBE_TIME)),
        }
        if attempts >= retry.attempts || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(retry.interval).await;
    }
    Err(ElasticError::NotReady {
        what,
        url: url.to_owned(),
        attempts,
        waited: started.elapsed(),
        last,
    })
}

/// Even the last attempt gets this long to answer.
const MIN_PROBE_TIME: Duration = Duration::from_secs(1);

fn parse_url(what: &'static str, url: &str) -> Result<Url, ElasticError> {
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

fn transport(what: &'static str, url: &str, auth: &Auth) -> Result<Transport, ElasticError> {
    let parsed = parse_url(what, url)?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(parsed))
        .timeout(REQUEST_TIMEOUT)
        .enable_meta_header(false);
    if let Some(credentials) = auth.credentials() {
        builder = builder.auth(credentials);
    }
    builder.build().map_err(|e| ElasticError::Url {
        what,
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

fn unreachable(what: &'static str, url: &str, e: &elasticsearch::Error) -> ElasticError {
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
async fn read_json(
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

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn embedded(name: &str, text: &str) -> Result<Value, ElasticError> {
    serde_json::from_str(text).map_err(|e| ElasticError::Embedded {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

/// An Elasticsearch cluster, through the official client.
#[derive(Clone, Debug)]
pub struct Elastic {
    client: Elasticsearch,
    url: String,
}

impl Elastic {
    const WHAT: &'static str = "Elasticsearch";

    pub fn connect(url: &str, auth: &Auth) -> Result<Self, ElasticError> {
        Ok(Self {
            client: Elasticsearch::new(transport(Self::WHAT, url, auth)?),
            url: url.to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits until the cluster answers with status yellow or green. Wrong
    /// credentials fail at once: retrying them cannot help.
    pub async fn wait_ready(&self, retry: Retry) -> Result<(), ElasticError> {
        wait_until(Self::WHAT, &self.url, retry, || async {
            let sent = self
                .client
                .cluster()
                .health(ClusterHealthParts::None)
                .wait_for_status(WaitForStatus::Yellow)
                .timeout("5s")
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Probe::NotYet(
                        unreachable(Self::WHAT, &self.url, &e).to_string(),
                    ))
                }
            };
            match read_json(Self::WHAT, &self.url, "GET _cluster/health", response).await {
                Ok(health) => match health.get("status").and_then(Value::as_str) {
                    Some("green" | "yellow") => Ok(Probe::Ready),
                    other => Ok(Probe::NotYet(format!("cluster status {other:?}"))),
                },
                Err(e @ ElasticError::Unauthorized { .. }) => Err(e),
                Err(e) => Ok(Probe::NotYet(e.to_string())),
            }
        })
        .await
    }

    /// Installs (or replaces) every component and index template; returns
    /// their names in install order. Idempotent.
    pub async fn install_templates(&self) -> Result<Vec<String>, ElasticError> {
        let mut installed = Vec::new();
        for (name, text) in COMPONENT_TEMPLATES {
            let body = embedded(name, text)?;
            let response = self
                .client
                .cluster()
                .put_component_template(ClusterPutComponentTemplateParts::Name(name))
                .body(body)
                .send()
                .await
                .map_err(|e| unreachable(Self::WHAT, &self.url, &e))?;
            let request = format!("PUT _component_template/{name}");
            read_json(Self::WHAT, &self.url, &request, response).await?;
            installed.push(format!("component template {name}"));
        }
        for (name, text) in INDEX_TEMPLATES {
            let body = embedded(name, text)?;
            let response = self
                .client
                .indices()
                .put_index_template(IndicesPutIndexTemplateParts::Name(name))
                .body(body)
                .send()
                .await
                .map_err(|e| unreachable(Self::WHAT, &self.url, &e))?;
            let request = format!("PUT _index_template/{name}");
            read_json(Self::WHAT, &self.url, &request, response).await?;
            installed.push(format!("index template {name}"));
        }
        Ok(installed)
    }

    /// The log lines of one trace, oldest first (at most [`MAX_TRACE_LINES`]).
    /// No index yet is not an error: it is an empty answer.
    pub async fn trace_lines(
        &self,
        trace_id: &str,
    ) -> Result<Vec<Map<String, Value>>, ElasticError> {
        let indices = [LOGS_INDEX_PATTERN];
        let response = self
            .client
            .search(SearchParts::Index(&indices))
            .ignore_unavailable(true)
            .allow_no_indices(true)
            .body(json!({
                "query": { "bool": { "filter": [ { "term": { field::TRACE_ID: trace_id } } ] } },
                "sort": [ { field::TIMESTAMP: { "order": "asc" } } ],
                "size": MAX_TRACE_LINES,
            }))
            .send()
            .await
            .map_err(|e| unreachable(Self::WHAT, &self.url, &e))?;
        let request = format!("POST {LOGS_INDEX_PATTERN}/_search");
        let body = read_json(Self::WHAT, &self.url, &request, response).await?;
        let hits = body
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .ok_or_else(|| ElasticError::Response {
                what: Self::WHAT,
                request: request.clone(),
                reason: "no hits.hits array".into(),
            })?;
        Ok(hits
            .iter()
            .filter_map(|hit| match hit.get("_source") {
                Some(Value::Object(source)) => Some(source.clone()),
                _ => None,
            })
            .collect())
    }
}

/// What Kibana said about an import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    pub success_count: u64,
}

/// A Kibana instance. Requests go through the same client transport (auth,
/// timeouts, TLS) with Kibana's own headers.
#[derive(Clone, Debug)]
pub struct Kibana {
    transport: Transport,
    url: String,
}

/// Multipart boundary: a fixed string that cannot occur in our ndjson (it is
/// checked before sending).
const BOUNDARY: &str = "meshwatch-saved-objects-7f3a9c1e5b";

/// The `multipart/form-data` body of a saved-objects import: one `file` part.
pub fn import_body(ndjson: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(ndjson.len() + 256);
    body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
    body.extend_from_slice(
        b"Content-Disposition: form-data; name=\"file\"; filename=\"meshwatch.ndjson\"\r\n",
    );
    body.extend_from_slice(b"Content-Type: application/ndjson\r\n\r\n");
    body.extend_from_slice(ndjson.as_bytes());
    if !ndjson.ends_with('\n') {
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

impl Kibana {
    const WHAT: &'static str = "Kibana";

    pub fn connect(url: &str, auth: &Auth) -> Result<Self, ElasticError> {
        Ok(Self {
            transport: transport(Self::WHAT, url, auth)?,
            url: url.to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn headers(content_type: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        // Kibana refuses state-changing requests without it (CSRF guard).
        headers.insert(
            HeaderName::from_static("kbn-xsrf"),
            HeaderValue::from_static("meshctl"),
        );
        headers
    }

    /// Waits until `GET /api/status` reports the overall level "available".
    pub async fn wait_ready(&self, retry: Retry) -> Result<(), ElasticError> {
        wait_until(Self::WHAT, &self.url, retry, || async {
            let sent = self
                .transport
                .send(
                    Method::Get,
                    "api/status",
                    Self::headers("application/json"),
                    None::<&()>,
                    None::<()>,
                    Some(REQUEST_TIMEOUT),
                )
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Probe::NotYet(
                        unreachable(Self::WHAT, &self.url, &e).to_string(),
                    ))
                }
            };
            match read_json(Self::WHAT, &self.url, "GET /api/status", response).await {
                Ok(status) => match status
                    .pointer("/status/overall/level")
                    .and_then(Value::as_str)
                {
                    Some("available") => Ok(Probe::Ready),
                    other => Ok(Probe::NotYet(format!("overall status {other:?}"))),
                },
                Err(e @ ElasticError::Unauthorized { .. }) => Err(e),
                Err(e) => Ok(Probe::NotYet(e.to_string())),
            }
        })
        .await
    }

    /// Imports saved objects, replacing ones with the same ids.
    pub async fn import_saved_objects(&self, ndjson: &str) -> Result<ImportSummary, ElasticError> {
        let request = "POST /api/saved_objects/_import?overwrite=true";
        if ndjson.contains(BOUNDARY) {
            return Err(ElasticError::Embedded {
                name: "saved objects".into(),
                reason: "contains the multipart boundary".into(),
            });
        }
        let response = self
            .transport
            .send(
                Method::Post,
                "api/saved_objects/_import",
                Self::headers(MULTIPART_CONTENT_TYPE),
                Some(&[("overwrite", "true")]),
                Some(import_body(ndjson)),
                Some(REQUEST_TIMEOUT),
            )
            .await
            .map_err(|e| unreachable(Self::WHAT, &self.url, &e))?;
        let body = read_json(Self::WHAT, &self.url, request, response).await?;
        let success_count = body
            .get("successCount")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if body.get("success").and_then(Value::as_bool) != Some(true) {
            let errors = body
                .get("errors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            return Err(ElasticError::Import {
                failed: errors.len(),
                errors: truncate(&Value::Array(errors).to_string(), 800),
            });
        }
        Ok(ImportSummary { success_count })
    }
}

/// `Content-Type` of the import request, with [`BOUNDARY`].
pub const MULTIPART_CONTENT_TYPE: &str =
    "multipart/form-data; boundary=meshwatch-saved-objects-7f3a9c1e5b";

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
    fn content_type_names_the_boundary() {
        assert!(MULTIPART_CONTENT_TYPE.ends_with(&format!("boundary={BOUNDARY}")));
        assert!(!SAVED_OBJECTS.contains(BOUNDARY));
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

    #[test]
    fn retry_is_bounded() {
        let r = Retry::for_about(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(r.attempts, 6);
        let r = Retry::for_about(Duration::from_secs(3), Duration::from_secs(2));
        assert_eq!(r.attempts, 2, "a wait longer than one interval retries");
        let r = Retry::for_about(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(r.attempts, 1);
        let r = Retry::for_about(Duration::ZERO, Duration::from_secs(2));
        assert_eq!(r.attempts, 1);
        let r = Retry::for_about(Duration::MAX, Duration::from_secs(2));
        assert_eq!(r.attempts, u32::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_gives_up_after_the_attempts() {
        let mut calls = 0;
        let err = wait_until(
            "Elasticsearch",
            "http://x",
            Retry {
                attempts: 3,
                interval: Duration::from_secs(1),
            },
            || {
                calls += 1;
                async { Ok(Probe::NotYet("starting".into())) }
            },
        )
        .await
        .unwrap_err();
        assert_eq!(calls, 3);
        assert!(err.to_string().contains("after 3 attempts"), "{err}");
        assert!(err.to_string().contains("starting"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_cannot_stretch_the_wait() {
        let started = tokio::time::Instant::now();
        let err = wait_until(
            "Kibana",
            "http://x",
            Retry {
                attempts: 100,
                interval: Duration::from_secs(2),
            },
            std::future::pending::<Result<Probe, ElasticError>>,
        )
        .await
        .unwrap_err();
        assert!(
            started.elapsed() <= Duration::from_secs(201),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("no answer within"), "{err}");
    }
}

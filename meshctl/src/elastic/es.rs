//! The Elasticsearch cluster, through the official client: readiness, the
//! templates `meshctl setup` installs, and the trace search.

use elasticsearch::cluster::{ClusterHealthParts, ClusterPutComponentTemplateParts};
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::params::WaitForStatus;
use elasticsearch::{Elasticsearch, SearchParts};
use serde_json::{json, Map, Value};

use meshwatch_ecs::field;

use super::retry::{wait_until, Probe, Retry};
use super::*;

/// An Elasticsearch cluster, through the official client.
#[derive(Clone, Debug)]
pub struct Elastic {
    client: Elasticsearch,
    url: String,
}

impl Elastic {
    pub(crate) const WHAT: &'static str = "Elasticsearch";

    pub fn connect(url: &str, auth: &Auth) -> Result<Self, ElasticError> {
        Ok(Self {
            client: Elasticsearch::new(transport(Self::WHAT, url, auth)?),
            url: url.to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn client(&self) -> &Elasticsearch {
        &self.client
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

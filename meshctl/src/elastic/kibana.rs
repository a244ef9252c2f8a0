//! Kibana: readiness and the import of the saved objects (data views, the
//! "Request trace" search, the dashboard).

use elasticsearch::http::headers::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use elasticsearch::http::transport::Transport;
use elasticsearch::http::Method;
use serde_json::Value;

use super::retry::{wait_until, Probe, Retry};
use super::*;

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
    fn content_type_names_the_boundary() {
        assert!(MULTIPART_CONTENT_TYPE.ends_with(&format!("boundary={BOUNDARY}")));
        assert!(!SAVED_OBJECTS.contains(BOUNDARY));
    }
}

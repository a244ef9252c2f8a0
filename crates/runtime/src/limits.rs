//! Limits every server applies to every request: the largest message it
//! decodes and the RPCs it works on at once. Past the concurrency limit a
//! request is shed at once with RESOURCE_EXHAUSTED (never queued), and a
//! message over the size limit is answered RESOURCE_EXHAUSTED as the gRPC
//! spec asks (tonic itself says OUT_OF_RANGE). Health and reflection are
//! exempt from the concurrency limit, so probes still answer under overload.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

/// Default largest request message a server decodes: 256 KiB, far above the
/// largest valid request of any meshwatch service.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Default RPCs one server works on at once.
pub const DEFAULT_MAX_CONCURRENT_RPCS: usize = 256;

/// The per-server request limits (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request message decoded, in bytes.
    pub max_message_bytes: usize,
    /// RPCs in progress at once; one more is shed with RESOURCE_EXHAUSTED.
    pub max_concurrent_rpcs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_rpcs: DEFAULT_MAX_CONCURRENT_RPCS,
        }
    }
}

/// The layer enforcing [`Limits`] on a server.
#[derive(Clone, Debug)]
pub struct LimitLayer {
    permits: Arc<Semaphore>,
    limits: Limits,
}

impl LimitLayer {
    pub fn new(limits: Limits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_rpcs)),
            limits,
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = LimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitService {
            inner,
            permits: Arc::clone(&self.permits),
            limits: self.limits,
        }
    }
}

/// The service [`LimitLayer`] wraps around a gRPC server.
#[derive(Clone, Debug)]
pub struct LimitService<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limits: Limits,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> Service<Request<B>> for LimitService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let permit = if exempt(req.uri().path()) {
            None
        } else {
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let status = tonic::Status::resource_exhausted(format!(
                        "overloaded: {} RPCs already in progress on this server (its limit); retry with backoff",
                        self.limits.max_concurrent_rpcs
                    ));
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        };
        let max = self.limits.max_message_bytes;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            drop(permit);
            too_large_is_resource_exhausted(&mut response, max);
            Ok(response)
        })
    }
}

/// tonic answers a request message over the decode limit with OUT_OF_RANGE
/// in a trailers-only response; the gRPC spec says RESOURCE_EXHAUSTED.
fn too_large_is_resource_exhausted(response: &mut Response<Body>, max: usize) {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("decoded%20message%20length%20too%20large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        let message = format!("request message larger than this server's limit of {max} bytes");
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert("grpc-message", v);
        }
    }
}

/// gRPC's grpc-message encoding: printable ASCII but `%` as is, the rest
/// percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_follows_grpc_message_rules() {
        assert_eq!(percent_encode("a b%c\n"), "a b%25c%0A");
    }

    #[test]
    fn only_the_decode_limit_error_is_rewritten() {
        let mut r = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        )
        .into_http::<Body>();
        too_large_is_resource_exhausted(&mut r, 4);
        assert_eq!(r.headers()["grpc-status"], "8");
        assert!(r.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("limit of 4 bytes"));
        let mut other = tonic::Status::out_of_range("page 9 of 3").into_http::<Body>();
        too_large_is_resource_exhausted(&mut other, 4);
        assert_eq!(other.headers()["grpc-status"], "11");
    }
}

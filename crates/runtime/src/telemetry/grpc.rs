//! W3C trace context over gRPC. Server side: [`TraceLayer`] extracts
//! `traceparent`, opens the request span and writes one access line per RPC
//! once its final status is known (from the headers of a trailers-only
//! response, from the trailers, or CANCELLED when the client left). Client
//! side: [`InjectTrace`] writes the current span's `traceparent` into every call.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use meshwatch_proto::status::{code_name, is_server_error};

use super::{HeaderExtractor, HeaderInjector};

const CODE_CANCELLED: i32 = 1;
const CODE_UNKNOWN: i32 = 2;

/// What is needed to write the access line of one RPC.
struct Access {
    span: Span,
    start: Instant,
    method: String,
    /// Health checks and reflection: logged at debug, not info.
    quiet: bool,
}

impl Access {
    fn finish(self, code: i32) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let name = code_name(code);
        let millis = nanos as f64 / 1e6;
        let outcome = if code == 0 { "success" } else { "failure" };
        let method = self.method;
        self.span.in_scope(|| {
            if self.quiet {
                tracing::debug!(
                    rpc.grpc.status_code = code,
                    event.duration = nanos,
                    event.outcome = outcome,
                    "{method} {name} in {millis:.2} ms"
                );
            } else if code == 0 {
                tracing::info!(
                    rpc.grpc.status_code = code,
                    event.duration = nanos,
                    event.outcome = outcome,
                    "{method} {name} in {millis:.2} ms"
                );
            } else if is_server_error(code) {
                tracing::error!(
                    rpc.grpc.status_code = code,
                    event.duration = nanos,
                    event.outcome = outcome,
                    "{method} {name} in {millis:.2} ms"
                );
            } else {
                tracing::warn!(
                    rpc.grpc.status_code = code,
                    event.duration = nanos,
                    event.outcome = outcome,
                    "{method} {name} in {millis:.2} ms"
                );
            }
        });
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Server layer: request span from `traceparent`, one access line per RPC.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service [`TraceLayer`] wraps around a gRPC server.
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for TraceService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<AccessBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", path));
        let quiet = service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.");
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            parent.id = tracing::field::Empty,
            order.id = tracing::field::Empty,
        );
        {
            use opentelemetry::trace::TraceContextExt;
            let remote = parent.span();
            let sc = remote.span_context();
            if sc.is_valid() {
                // The caller's span: lets a timeline nest this request under it.
                span.record("parent.id", sc.span_id().to_string());
            }
        }
        // Fails only when the span is disabled by the filter: then there is nothing to link.
        let _ = span.set_parent(parent);
        let access = Access {
            span: span.clone(),
            start: Instant::now(),
            method: method.to_owned(),
            quiet,
        };
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture {
            inner: inner.instrument(span),
            access: Some(access),
        }
    }
}

pin_project! {
    /// Response future of [`TraceService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        access: Option<Access>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<AccessBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let access = this.access.take();
        Poll::Ready(match result {
            Ok(response) => {
                let access = match (grpc_status(response.headers()), access) {
                    // Trailers-only response: the status is already known.
                    (Some(code), Some(access)) => {
                        access.finish(code);
                        None
                    }
                    (_, access) => access,
                };
                Ok(response.map(|inner| AccessBody { inner, access }))
            }
            Err(e) => {
                if let Some(access) = access {
                    access.finish(CODE_UNKNOWN);
                }
                Err(e)
            }
        })
    }
}

pin_project! {
    /// Response body that writes the access line when the trailers pass by,
    /// or when the body is dropped before (the client cancelled).
    pub struct AccessBody<B> {
        #[pin]
        inner: B,
        access: Option<Access>,
    }

    impl<B> PinnedDrop for AccessBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(access) = this.project().access.take() {
                access.finish(CODE_CANCELLED);
            }
        }
    }
}

impl<B: Body> Body for AccessBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(f)) => f
                .trailers_ref()
                .map(|t| grpc_status(t).unwrap_or(CODE_UNKNOWN)),
            Some(Err(_)) | None => Some(CODE_UNKNOWN),
        };
        if let Some(code) = code {
            if let Some(access) = this.access.take() {
                access.finish(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A gRPC channel whose calls carry the current span's `traceparent`.
pub type TracedChannel = InjectTrace<tonic::transport::Channel>;

/// Wraps `channel` so every call made through it propagates the trace context.
pub fn traced_channel(channel: tonic::transport::Channel) -> TracedChannel {
    InjectTrace { inner: channel }
}

/// Client middleware: injects W3C trace context of the current span.
#[derive(Clone, Debug)]
pub struct InjectTrace<S> {
    inner: S,
}

impl<S> InjectTrace<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<http::Request<B>> for InjectTrace<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let cx = Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(req.headers_mut()));
        });
        self.inner.call(req)
    }
}

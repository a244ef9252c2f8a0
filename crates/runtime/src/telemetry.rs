//! Telemetry every meshwatch process shares: `tracing` with
//! tracing-opentelemetry for trace and span ids, a layer that writes each event
//! as one ECS JSON line on stdout, and W3C `traceparent` propagation in gRPC
//! metadata (server side: [`TraceLayer`], client side: [`traced_channel`]).

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use meshwatch_ecs::{self as ecs, field, ServiceIdentity};

mod grpc;
pub use grpc::{
    code_name, is_server_error, traced_channel, AccessBody, InjectTrace, ResponseFuture,
    TraceLayer, TraceService, TracedChannel,
};

/// Default filter when none is configured.
pub const DEFAULT_FILTER: &str = "info";

/// Where finished lines go. Each call gets one complete JSON line, no newline.
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Errors while installing telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("telemetry was already initialised in this process")]
    AlreadyInitialised,
}

/// Keeps the tracer provider alive; dropping it shuts tracing down.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelemetryGuard")
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Nothing is exported, so there is nothing to flush that could fail usefully.
        let _ = self.provider.shutdown();
    }
}

static SINK: OnceLock<LineSink> = OnceLock::new();

/// Writes one line (plus newline) to stdout as a single write, so lines from
/// concurrent tasks never interleave. Blocks when the reader of stdout is slow.
pub fn stdout_line(line: &str) {
    use std::io::Write;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the service down; the line is lost either way.
    let _ = out.write_all(&buf).and_then(|()| out.flush());
}

/// Writes a raw JSON line through the same sink as the log lines (heartbeats
/// use it). Goes to stdout when telemetry was not initialised.
pub fn write_line(line: &str) {
    match SINK.get() {
        Some(sink) => sink(line),
        None => stdout_line(line),
    }
}

/// Installs telemetry for this process: ECS JSON lines on stdout for
/// `identity`, events filtered by `filter` (`RUST_LOG` syntax).
pub fn init(identity: &ServiceIdentity, filter: &str) -> Result<TelemetryGuard, TelemetryError> {
    init_with_sink(identity, filter, Arc::new(stdout_line))
}

/// [`init`] with lines going to `sink` instead of stdout (tests capture them).
pub fn init_with_sink(
    identity: &ServiceIdentity,
    filter: &str,
    sink: LineSink,
) -> Result<TelemetryGuard, TelemetryError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })?;
    SINK.set(Arc::clone(&sink))
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    let (subscriber, guard) = subscriber(identity, env_filter, sink);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(guard)
}

/// The full subscriber stack (filter, OpenTelemetry, ECS lines), not installed.
/// Also sets the global W3C trace-context propagator.
fn subscriber(
    identity: &ServiceIdentity,
    filter: EnvFilter,
    sink: LineSink,
) -> (impl Subscriber + Send + Sync, TelemetryGuard) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("meshwatch");
    let subscriber = Registry::default()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(EcsLayer::new(identity.clone(), sink));
    (subscriber, TelemetryGuard { provider })
}

/// Records `order.id` on the current request span, so every later line of
/// the request, and its access line, carries it. Empty ids are ignored.
pub fn record_order_id(order_id: &str) {
    if !order_id.is_empty() {
        tracing::Span::current().record("order.id", order_id);
    }
}

/// The W3C trace id (32 lower-case hex) of the current span, if one is active.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Fields recorded on a span, kept in its extensions for the lines inside it.
#[derive(Default)]
struct SpanFields(Map<String, Value>);

/// Turns `tracing` field values into JSON values under their (dotted) names.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            // `otel.*` fields steer tracing-opentelemetry; they are not log content.
            name if name.starts_with("otel.") => {}
            // ECS maps `error` as an object (`error.message`, `error.type`):
            // a bare `error` value would send the whole line to the
            // dead-letter index.
            "error" => {
                self.0.insert(field::ERROR_MESSAGE.to_owned(), value);
            }
            name => {
                self.0.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, value.to_string().into());
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, value.to_string().into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// Writes every event as one ECS JSON line: the identity fields, the fields of
/// every enclosing span (outermost first, inner ones win), the event's own
/// fields, and `trace.id`/`span.id` of the span the event belongs to.
pub struct EcsLayer {
    identity: ServiceIdentity,
    dataset: String,
    sink: LineSink,
    /// The dispatcher this layer is part of. `dispatcher::get_default` is no
    /// use inside a callback: while dispatching it returns the no-op one.
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl EcsLayer {
    pub fn new(identity: ServiceIdentity, sink: LineSink) -> Self {
        let dataset = format!("{}.log", identity.name);
        Self {
            identity,
            dataset,
            sink,
            dispatch: OnceLock::new(),
        }
    }
}

impl<S> Layer<S> for EcsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut fields = SpanFields::default();
            attrs.record(&mut JsonVisitor(&mut fields.0));
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(&mut fields.0));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut obj = Map::new();
        obj.insert(
            field::TIMESTAMP.into(),
            ecs::format_timestamp(SystemTime::now()).into(),
        );
        obj.insert(
            field::LOG_LEVEL.into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        obj.insert(field::ECS_VERSION.into(), ecs::ECS_VERSION.into());
        obj.insert(
            field::SERVICE_NAME.into(),
            self.identity.name.clone().into(),
        );
        obj.insert(
            field::SERVICE_INSTANCE_ID.into(),
            self.identity.instance_id.clone().into(),
        );
        obj.insert(
            field::SERVICE_VERSION.into(),
            self.identity.version.clone().into(),
        );
        obj.insert(field::EVENT_DATASET.into(), self.dataset.clone().into());
        obj.insert(field::LOG_LOGGER.into(), event.metadata().target().into());

        let mut span_id = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    obj.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                span_id = Some(span.id());
            }
        }
        event.record(&mut JsonVisitor(&mut obj));
        if !obj.contains_key(field::MESSAGE) {
            obj.insert(field::MESSAGE.into(), Value::String(String::new()));
        }
        if let Some(id) = span_id {
            // No span extensions are borrowed here: get_otel_context locks them.
            let cx = self
                .dispatch
                .get()
                .and_then(tracing::dispatcher::WeakDispatch::upgrade)
                .and_then(|d| tracing_opentelemetry::get_otel_context(&id, &d));
            if let Some(cx) = cx {
                let span = cx.span();
                let sc = span.span_context();
                if sc.is_valid() {
                    obj.insert(field::TRACE_ID.into(), sc.trace_id().to_string().into());
                    obj.insert(field::SPAN_ID.into(), sc.span_id().to_string().into());
                }
            }
        }
        (self.sink)(&Value::Object(obj).to_string());
    }
}

/// Reads `traceparent`/`tracestate` from HTTP/2 headers (gRPC metadata).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes `traceparent`/`tracestate` into HTTP/2 headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests;

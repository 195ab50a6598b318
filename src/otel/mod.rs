//! OpenTelemetry export of the router's spans (feature `otel`).
//!
//! Per request, the router has one SERVER span (`chat openai/gpt-4o-mini`, with the GenAI
//! attributes once the answer is over) and one CLIENT span per upstream attempt. This module
//! ships them to an OpenTelemetry collector over OTLP/HTTP (protobuf), through the crate's own
//! hyper + rustls client (no second TLS stack), in batches, from a thread of its own: a request
//! only queues its work (bounded: dropped when full, and no thread is woken per request), so a
//! slow or dead collector never slows or fails a request. Two ways:
//!
//! - [`OtlpExporter`], the direct exporter (what the gateway uses): an
//!   [`Observer`](crate::observe::Observer) that writes the spans straight from each
//!   request's [`RequestSummary`](crate::observe::RequestSummary), without any `tracing`
//!   subscriber or the OpenTelemetry SDK, at a fraction of the cost. Turn the request's trace
//!   context on and the `tracing` GenAI spans off:
//!   [`SetRequestIdLayer`](crate::request_id::SetRequestIdLayer)`::trace_context(true)` and
//!   `genai_spans(false)`. The context then joins an incoming W3C `traceparent` (or starts a
//!   trace), and [`Resilience`](crate::resilience::Resilience) sends each attempt its own
//!   `traceparent` (and the caller's `tracestate`).
//! - [`OtlpTracing`], the `tracing` layer: for hosts exporting their own spans through one
//!   OpenTelemetry pipeline. The router always describes its work as `tracing` spans (see
//!   [`request_id`] and [`resilience`]); [`OtlpTracing`] builds a tracer provider exporting
//!   them, and [`OtlpTracing::layer`] is the `tracing-subscriber` layer to add to the host's
//!   subscriber. It takes the router's GenAI spans alone (target [`GENAI_TARGET`]); a log layer
//!   beside it should leave that target out (it would format every GenAI field of every
//!   request for nothing). With this feature,
//!   [`SetRequestId`](crate::request_id::SetRequestId) makes the `tracing` request span a child
//!   of an incoming W3C `traceparent` (without it the header is not read), and
//!   [`Resilience`](crate::resilience::Resilience) sends each attempt's own `traceparent` (and
//!   `tracestate`) to the upstream. Only W3C trace context is read and written, whatever
//!   global propagator the host set.
//!
//! Both name the spans and their attributes identically.
//!
//! Semantic conventions: OpenTelemetry GenAI v1.41 (see the README's Telemetry section for
//! every attribute). No message content and no key is ever recorded.
//!
//! # Examples
//! The direct exporter:
//! ```no_run
//! use ai_router::otel::OtlpExporter;
//! use ai_router::request_id::SetRequestIdLayer;
//!
//! # fn demo() -> Result<(), ai_router::BuildError> {
//! let exporter = OtlpExporter::builder("http://127.0.0.1:4318")
//!     .service_name("ai-router")
//!     .build()?;
//! let layer = SetRequestIdLayer::new()
//!     .trace_context(true)
//!     .genai_spans(false)
//!     .observer(exporter.clone());
//! // ... serve with `layer` outermost ...
//! exporter.shutdown(std::time::Duration::from_secs(5));
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! The `tracing` layer:
//! ```no_run
//! use ai_router::otel::OtlpTracing;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//!
//! # fn demo() -> Result<(), ai_router::BuildError> {
//! let tracing = OtlpTracing::builder("http://127.0.0.1:4318")
//!     .service_name("ai-router")
//!     .build()?;
//! tracing_subscriber::registry().with(tracing.layer()).init();
//! // Beside a log layer, filter the GenAI spans out of it:
//! // .with(fmt::layer().with_filter(EnvFilter::new("info,ai_router::genai=off")))
//! // ... serve ...
//! tracing.shutdown(std::time::Duration::from_secs(5));
//! # Ok(()) }
//! ```
//!
//! [`request_id`]: crate::request_id
//! [`resilience`]: crate::resilience

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::error::BuildError;
use crate::request_id::GENAI_TARGET;

mod exporter;
mod proto;

pub use self::exporter::{OtlpExporter, OtlpExporterBuilder};

/// The path OTLP/HTTP collectors take traces at, appended to a base endpoint.
const TRACES_PATH: &str = "/v1/traces";

/// The instrumentation scope the router's spans are exported under.
const SCOPE: &str = "ai-router";

/// A tracer provider exporting the router's spans over OTLP/HTTP. See the [module docs](self).
///
/// Cheap to clone (shared). Keep it for the life of the process and call
/// [`shutdown`](Self::shutdown) before exiting, so the spans still queued are sent.
#[derive(Clone)]
pub struct OtlpTracing {
    provider: SdkTracerProvider,
    endpoint: Arc<str>,
}

impl OtlpTracing {
    /// Starts a configuration exporting to the collector at `endpoint`: a base URL
    /// (`http://127.0.0.1:4318`, `/v1/traces` is appended) or the full traces URL
    /// (ending in `/v1/traces`). `https` works (rustls, webpki roots).
    pub fn builder(endpoint: impl Into<String>) -> OtlpTracingBuilder {
        OtlpTracingBuilder {
            endpoint: endpoint.into(),
            service_name: "ai-router".to_owned(),
            export_timeout: Duration::from_secs(10),
            scheduled_delay: None,
            max_queue_size: None,
        }
    }

    /// The `tracing-subscriber` layer turning the router's GenAI spans (target
    /// [`GENAI_TARGET`], INFO) into OpenTelemetry spans exported by this provider; it sees no
    /// other span or event. Add it to the host's subscriber; the host's own spans, if it wants
    /// them exported too, take a layer of their own made from [`provider`](Self::provider).
    pub fn layer<S>(&self) -> Filtered<OpenTelemetryLayer<S, SdkTracer>, Targets, S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SCOPE))
            // Source locations, targets, thread ids and busy/idle times: noise in a router's trace.
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // No OpenTelemetry context made current on every poll: the router reads its
            // spans' contexts itself (`traceparent` out), and nothing else in it reads the
            // current one.
            .with_context_activation(false)
            .with_filter(Targets::new().with_target(GENAI_TARGET, tracing::Level::INFO))
    }

    /// The underlying provider (to make tracers for the host's own spans, or to flush).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// The URL spans are sent to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends what is still queued and stops exporting, waiting at most `wait` (a dead
    /// collector never holds the caller longer). Returns whether everything was sent in
    /// time. Safe to call from any thread, inside a runtime or not: the export runs on the
    /// exporter's own thread.
    pub fn shutdown(&self, wait: Duration) -> bool {
        let (done, finished) = std::sync::mpsc::channel();
        let provider = self.provider.clone();
        let spawned = std::thread::Builder::new()
            .name("ai-router-otel-shutdown".to_owned())
            .spawn(move || {
                let _ = done.send(provider.shutdown().is_ok());
            });
        spawned.is_ok() && finished.recv_timeout(wait).unwrap_or(false)
    }
}

impl fmt::Debug for OtlpTracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpTracing")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Configures an [`OtlpTracing`]. Environment variables the OpenTelemetry SDK reads still
/// apply where nothing here overrides them (`OTEL_EXPORTER_OTLP_HEADERS` for a collector's
/// credentials, `OTEL_BSP_*` for the batches, `OTEL_RESOURCE_ATTRIBUTES`).
#[derive(Clone, Debug)]
pub struct OtlpTracingBuilder {
    endpoint: String,
    service_name: String,
    export_timeout: Duration,
    scheduled_delay: Option<Duration>,
    max_queue_size: Option<usize>,
}

impl OtlpTracingBuilder {
    /// The `service.name` resource attribute (default `ai-router`).
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// How long one export may take before it is given up (default 10 s).
    #[must_use]
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }

    /// How long finished spans wait to be sent in a batch (the SDK's default: 5 s, or
    /// `OTEL_BSP_SCHEDULE_DELAY`).
    #[must_use]
    pub fn scheduled_delay(mut self, delay: Duration) -> Self {
        self.scheduled_delay = Some(delay);
        self
    }

    /// How many finished spans may wait at most; past it, new ones are dropped (the SDK's
    /// default: 2048, or `OTEL_BSP_MAX_QUEUE_SIZE`).
    #[must_use]
    pub fn max_queue_size(mut self, size: usize) -> Self {
        self.max_queue_size = Some(size);
        self
    }

    /// Builds the provider and starts its export thread. Fails on an endpoint that is not an
    /// `http` or `https` URL.
    pub fn build(self) -> Result<OtlpTracing, BuildError> {
        let endpoint = traces_url(&self.endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http_client(self.export_timeout)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(self.export_timeout)
            .build()
            .map_err(|e| BuildError::new(format!("OTLP exporter: {e}")))?;
        // One export is bounded by the exporter's own timeout.
        let mut batch = BatchConfigBuilder::default();
        if let Some(delay) = self.scheduled_delay {
            batch = batch.with_scheduled_delay(delay);
        }
        if let Some(size) = self.max_queue_size {
            batch = batch.with_max_queue_size(size);
        }
        // The batches are exported from the processor's own thread, which a request never
        // wakes (it wakes on a timer or a full batch); the HTTP client runs on a runtime of
        // the exporter's own, never on the host's.
        let exporter = OwnRuntime::new(exporter)?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                Resource::builder()
                    .with_service_name(self.service_name)
                    .build(),
            )
            .build();
        Ok(OtlpTracing {
            provider,
            endpoint: endpoint.into(),
        })
    }
}

/// The OTLP exporter with the runtime its HTTP client runs on: the batch processor calls
/// [`SpanExporter::export`] on its own thread, outside any runtime, and waits for it; the
/// client's connections are driven by a thread of the runtime's own (so a connection the
/// collector closes between exports is noticed), which ends when the exporter is dropped.
#[derive(Debug)]
struct OwnRuntime {
    exporter: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Handle,
    /// Dropped with the exporter: the runtime's thread then ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OwnRuntime {
    fn new(exporter: opentelemetry_otlp::SpanExporter) -> Result<Self, BuildError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BuildError::new(format!("OTLP exporter runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("ai-router-otlp".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| BuildError::new(format!("OTLP exporter thread: {e}")))?;
        Ok(Self {
            exporter,
            runtime: handle,
            _stop: stop,
        })
    }
}

impl SpanExporter for OwnRuntime {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // The processor's thread is no runtime's: blocking it here is what it expects.
        let result = self.runtime.block_on(self.exporter.export(batch));
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}

/// The full traces URL for `endpoint` (a base URL or the traces URL itself).
fn traces_url(endpoint: &str) -> Result<String, BuildError> {
    // Credentials or a token in the URL are refused, and such a URL is never echoed.
    let shown = if endpoint.contains(['@', '?']) {
        "(not shown)"
    } else {
        endpoint
    };
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| BuildError::new(format!("OTLP endpoint `{shown}`: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(BuildError::new(format!(
            "OTLP endpoint `{shown}`: an http:// or https:// URL is needed"
        )));
    }
    if endpoint.contains(['@', '?']) {
        return Err(BuildError::new(
            "OTLP endpoint: credentials or a query in the URL are not supported (send them as \
             headers, e.g. OTEL_EXPORTER_OTLP_HEADERS)",
        ));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    })
}

/// The SDK exporter's HTTP client: hyper with the rustls connector the providers use.
fn http_client(
    timeout: Duration,
) -> Result<
    HyperClient<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>,
    BuildError,
> {
    Ok(HyperClient::new(https_connector(timeout)?, timeout, None))
}

/// The rustls connector the providers use (HTTP/1.1; `https` or `http`), connecting within
/// `timeout`.
fn https_connector(
    timeout: Duration,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BuildError,
> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    // The crypto provider is passed explicitly, as the providers' client does: no
    // process-wide default is installed.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| BuildError::new(format!("OTLP exporter TLS setup failed: {e}")))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(https)
}

/// Makes `span` a child of the W3C trace context in `headers` (`traceparent`, `tracestate`),
/// if there is one.
pub(crate) fn set_parent_from(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer sees the span: nothing to join then.
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s W3C trace context into `headers` (`traceparent`, and `tracestate` when
/// there is one), replacing what the client sent; leaves them as they are when no
/// OpenTelemetry layer sees the span.
pub(crate) fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    if !span_context.is_valid() {
        return;
    }
    if let Ok(value) = HeaderValue::from_bytes(&traceparent(span_context)) {
        headers.insert(TRACEPARENT, value);
    }
    let state = span_context.trace_state().header();
    match HeaderValue::try_from(state) {
        Ok(value) if !value.is_empty() => {
            headers.insert(TRACESTATE, value);
        }
        // None (or none that can be sent): the client's belonged to its own span.
        _ => {
            headers.remove(TRACESTATE);
        }
    }
}

/// `traceparent`'s name.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`'s name.
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The `traceparent` value of `context`: `00-{trace id}-{span id}-{flags}`, lowercase hex
/// (written here rather than formatted: it is sent with every upstream request).
fn traceparent(context: &SpanContext) -> [u8; 55] {
    fn hex(out: &mut [u8], bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
    }
    let mut value = [b'-'; 55];
    value[..2].copy_from_slice(b"00");
    hex(&mut value[3..35], &context.trace_id().to_bytes());
    hex(&mut value[36..52], &context.span_id().to_bytes());
    let flags = context.trace_flags() & TraceFlags::SAMPLED;
    hex(&mut value[53..55], &[flags.to_u8()]);
    value
}

/// Gives `span` its final name (an OpenTelemetry span is started before the router knows
/// what the request was, so the `otel.name` field alone would come too late) and the
/// attributes `tracing` fields cannot carry (string arrays).
pub(crate) fn finish_request_span(
    span: &Span,
    name: String,
    finish_reasons: impl Iterator<Item = &'static str>,
) {
    let context = span.context();
    let otel_span = context.span();
    if !otel_span.span_context().is_valid() {
        return;
    }
    otel_span.update_name(name);
    let reasons: Vec<opentelemetry::StringValue> = finish_reasons.map(Into::into).collect();
    if !reasons.is_empty() {
        otel_span.set_attribute(KeyValue::new(
            "gen_ai.response.finish_reasons",
            Value::Array(reasons.into()),
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::{SpanId, TraceId, TraceState};

    use super::*;

    #[test]
    fn traceparent_is_what_the_w3c_propagator_writes() {
        for (flags, state) in [
            (TraceFlags::SAMPLED, TraceState::default()),
            (
                TraceFlags::default(),
                TraceState::from_key_value([("vendor", "x1")]).unwrap(),
            ),
        ] {
            let context = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("b7ad6b7169203331").unwrap(),
                flags,
                true,
                state,
            );
            let mut expected = HashMap::new();
            let otel_context =
                opentelemetry::Context::new().with_remote_span_context(context.clone());
            TraceContextPropagator::new().inject_context(&otel_context, &mut expected);
            let ours = traceparent(&context);
            assert_eq!(std::str::from_utf8(&ours).unwrap(), expected["traceparent"]);
        }
    }
}

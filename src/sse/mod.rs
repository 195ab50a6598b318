//! Streaming: event streams passed through event by event, observed, timed and cancelled.
//!
//! [`Sse`] wraps every successful `text/event-stream` answer (chat and completions
//! `data:` + `[DONE]`, Responses API `event:` + `data:`, image and speech streams) in an
//! [`SseBody`]:
//!
//! - **Pass-through.** Each upstream chunk is forwarded when it arrives, bytes unchanged:
//!   no re-framing, no added lines, comments and `[DONE]` kept. The only bytes held back are
//!   the start of an event whose end has not arrived yet (upstreams send whole events, so in
//!   practice nothing waits): the client is then on an event boundary, and a failure frame
//!   never lands inside a half-sent event. (An event over 8 MiB is forwarded as it comes; a
//!   failure inside such an event aborts the response instead of sending a frame.) No task is spawned and no channel used: the
//!   client's read pace is the upstream's read pace.
//! - **Observation.** A scanner finds events across chunk splits (any line ending, multi-line
//!   `data:`), reads usage (chat `usage` chunk, `response.completed` usage) and the time to the
//!   first byte, and reports them once per stream to an [`OnUsage`] hook ([`LogUsage`] by
//!   default), however the stream ends.
//! - **Usage injection (opt-in per provider).** For a streamed chat completion whose client did
//!   not send `stream_options`, the router may add `"stream_options":{"include_usage":true}`
//!   upstream (the only body change besides `model`) so usage can be counted, and then removes
//!   the extra `choices: []` usage chunk from what the client receives. Other chunks then carry
//!   `"usage": null`, which the SDKs accept.
//! - **Headers.** `cache-control: no-cache` and `x-accel-buffering: no` (so a reverse proxy in
//!   front does not buffer); `content-length` is dropped. Upstreams are asked for
//!   `accept-encoding: identity`, so the stream is readable text; tower-http's compression
//!   layer skips `text/event-stream` by default.
//!
//! # Failure contract
//! - The upstream fails **before the first byte** (refused, 4xx/5xx, no response head within the
//!   provider's timeout): a normal HTTP error status with an OpenAI error body, so the SDK raises
//!   the matching exception (502, the upstream's status, 504).
//! - The upstream answered 200 and then **fails mid-stream** (connection reset, malformed
//!   chunked encoding) or **stays silent** longer than the idle timeout: the router sends
//!   `data: {"error":{"message":...,"type":"server_error","param":null,"code":"upstream_stream_error"}}`
//!   (`code: "upstream_idle_timeout"` for silence) and a blank line, then ends the stream; for
//!   the Responses API an `event: error` with `{"type":"error","code","message","param",
//!   "sequence_number"}`. It never makes up a `finish_reason` or a `[DONE]`.
//! - A **non-stream** answer (JSON, audio) whose body stalls for the idle timeout after its
//!   head is aborted (no bytes can be added to it); the SDK raises a connection error.
//! - The **client goes away** (mid-stream, or before a non-streaming answer arrived): the
//!   upstream response is dropped with the body, which closes its connection, so the provider
//!   stops generating; the hook sees [`StreamOutcome::ClientGone`].
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use ai_router::sse::{SseLayer, StreamSettings};
//!
//! let layer = SseLayer::new()
//!     .idle_timeout(Duration::from_secs(120))
//!     .provider("openai", StreamSettings::new().inject_usage(true))
//!     .on_usage(|report: &ai_router::sse::StreamReport| {
//!         println!("{:?} used {:?}", report.target, report.usage);
//!     });
//! # let _ = layer;
//! ```

mod body;
mod idle;
#[cfg(test)]
mod proptests;
mod scanner;
mod usage;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::RouterBody;
use crate::request_id::RequestId;
use crate::route::{Endpoint, RouteTarget};

pub use self::body::SseBody;
use self::body::StreamContext;
pub use self::idle::IdleBody;
pub use self::usage::{LogUsage, OnUsage, StreamOutcome, StreamReport, Usage};

#[cfg(feature = "fuzzing")]
pub(crate) use self::scanner::EventScanner;

/// The default idle timeout: 5 minutes without a byte ends a stream.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Stream settings for one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    idle_timeout: Option<Duration>,
    inject_usage: bool,
}

impl StreamSettings {
    /// The layer's default idle timeout, no usage injection.
    pub fn new() -> Self {
        Self {
            idle_timeout: None,
            inject_usage: false,
        }
    }

    /// Ends a stream that sends nothing for `timeout`.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Asks this provider for usage on chat streams (`stream_options.include_usage`), for
    /// providers that support it.
    #[must_use]
    pub fn inject_usage(mut self, inject: bool) -> Self {
        self.inject_usage = inject;
        self
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct Settings {
    idle_timeout: Duration,
    providers: HashMap<Arc<str>, StreamSettings>,
    hook: Arc<dyn OnUsage>,
}

impl Settings {
    fn for_provider(&self, provider: Option<&str>) -> (Duration, bool) {
        let settings = provider.and_then(|p| self.providers.get(p));
        (
            settings
                .and_then(|s| s.idle_timeout)
                .unwrap_or(self.idle_timeout),
            settings.is_some_and(|s| s.inject_usage),
        )
    }
}

/// Adds [`Sse`]. See the module docs.
#[derive(Clone)]
pub struct SseLayer {
    settings: Arc<Settings>,
}

impl SseLayer {
    /// A layer with the default idle timeout, no injection and [`LogUsage`].
    pub fn new() -> Self {
        Self {
            settings: Arc::new(Settings {
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                providers: HashMap::new(),
                hook: Arc::new(LogUsage),
            }),
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// The idle timeout for providers without their own.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().idle_timeout = timeout;
        self
    }

    /// Settings for one provider.
    #[must_use]
    pub fn provider(mut self, name: impl Into<Arc<str>>, settings: StreamSettings) -> Self {
        self.settings_mut().providers.insert(name.into(), settings);
        self
    }

    /// The hook called once per finished stream.
    #[must_use]
    pub fn on_usage(mut self, hook: impl OnUsage) -> Self {
        self.settings_mut().hook = Arc::new(hook);
        self
    }
}

impl Default for SseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseLayer")
            .field("idle_timeout", &self.settings.idle_timeout)
            .field("providers", &self.settings.providers)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = Sse<S>;

    fn layer(&self, inner: S) -> Sse<S> {
        Sse {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// Wraps event-stream answers in an [`SseBody`]. See the module docs.
#[derive(Clone)]
pub struct Sse<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Sse<S> {
    /// An [`SseLayer`] with defaults.
    pub fn layer() -> SseLayer {
        SseLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Sse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sse")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Bytes>> for Sse<S>
where
    S: Service<Request<Bytes>, Response = Response<RouterBody>>,
{
    type Response = Response<RouterBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Bytes>) -> Self::Future {
        let target = request.extensions().get::<RouteTarget>().cloned();
        let (idle_timeout, inject) = self
            .settings
            .for_provider(target.as_ref().map(RouteTarget::provider));
        let mut strip_usage_chunk = false;
        if let Some(target) = &target {
            let wants = inject
                && target.stream()
                && target.endpoint() == Endpoint::ChatCompletions
                && target.include_usage().is_none();
            if wants {
                if let Some(body) = inject_include_usage(request.body()) {
                    *request.body_mut() = body;
                    strip_usage_chunk = true;
                }
            }
        }
        let context = StreamContext {
            hook: self.settings.hook.clone(),
            request_id: request.extensions().get::<RequestId>().cloned(),
            target,
            start: Instant::now(),
            idle_timeout,
            strip_usage_chunk,
        };
        ResponseFuture {
            inner: self.inner.call(request),
            context: Some(context),
        }
    }
}

/// Adds `"stream_options":{"include_usage":true}` as the body's first member. The body is a
/// JSON object without `stream_options` (route checked both).
fn inject_include_usage(body: &Bytes) -> Option<Bytes> {
    crate::route::insert_first_member(body, br#""stream_options":{"include_usage":true}"#)
}

pin_project! {
    /// Response future of [`Sse`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        context: Option<StreamContext>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RouterBody>, E>>,
{
    type Output = Result<Response<RouterBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let is_stream = response.status().is_success()
            && crate::route::content_type_is(response.headers(), "text/event-stream");
        let Some(context) = this.context.take() else {
            return Poll::Ready(Ok(response));
        };
        if !is_stream {
            // Error answers are read (bounded) by `OpenAiErrors`; a successful JSON or audio
            // answer still may not stall forever after its head.
            if !response.status().is_success() {
                return Poll::Ready(Ok(response));
            }
            let timeout = context.idle_timeout;
            return Poll::Ready(Ok(
                response.map(|body| RouterBody::idle(IdleBody::new(body, timeout)))
            ));
        }
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        parts.headers.insert(
            http::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        let body = RouterBody::sse(SseBody::new(body, context));
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_injected_as_the_first_member() {
        let body = Bytes::from_static(br#"  {"model":"m","stream":true}"#);
        let out = inject_include_usage(&body).unwrap();
        assert_eq!(
            out,
            r#"  {"stream_options":{"include_usage":true},"model":"m","stream":true}"#
        );
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["stream_options"]["include_usage"], true);
        assert!(inject_include_usage(&Bytes::from_static(b"[1]")).is_none());
    }
}

//! Streaming: event streams passed through event by event, observed, timed and cancelled.
//!
//! [`Sse`] wraps every successful `text/event-stream` answer (chat and completions
//! `data:` + `[DONE]`, Responses API `event:` + `data:`, image and speech streams) in an
//! [`SseBody`], and every other successful answer in an [`IdleBody`]; it works in front of any
//! service, e.g. an axum handler answering `axum::response::Sse`:
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
//!   not send `stream_options`, the route layer may add `"stream_options":{"include_usage":true}`
//!   upstream ([`RouteLayer::inject_usage`](crate::route::RouteLayer::inject_usage)) so usage
//!   can be counted; this layer then removes what that changed from what the client receives:
//!   the extra `choices: []` usage chunk, and the `"usage": null` member the provider then adds
//!   to every other chunk (each such event is copied once without it; the stream stays event by
//!   event).
//! - **Headers.** `cache-control: no-cache` and `x-accel-buffering: no` (so a reverse proxy in
//!   front does not buffer); `content-length` is dropped. Upstreams are asked for
//!   `accept-encoding: identity`, so the stream is readable text; tower-http's compression
//!   layer skips `text/event-stream` by default.
//!
//! # Failure contract
//! - The upstream fails **before the first byte** (refused, 4xx/5xx, no response head within the
//!   provider's timeout): a normal HTTP error status with an OpenAI error body, so the SDK raises
//!   the matching exception (502, the upstream's status, 504). A stream request (`"stream":
//!   true`) answered 2xx with something that is not an event stream (an HTML page, JSON) is a
//!   502 `upstream_error` too: an SDK would otherwise read no event and raise nothing.
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
//!     .provider("openai", StreamSettings::new().idle_timeout(Duration::from_secs(600)))
//!     .on_usage(|report: &ai_router::sse::StreamReport| {
//!         println!("{:?} used {:?}", report.target, report.usage);
//!     });
//! # let _ = layer;
//! ```

mod body;
mod idle;
mod injected;
#[cfg(test)]
mod proptests;
mod scanner;
mod stream;
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
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BoxError, Error};
use crate::extensions::{RequestId, RouteTarget};
use crate::media::content_type_is;
use crate::observe::RequestLog;

pub use self::body::ResponseBody;
pub use self::idle::IdleBody;
pub use self::stream::SseBody;
use self::stream::StreamContext;
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
    /// providers that support it. The request side is the route layer's
    /// ([`RouteLayer::inject_usage`](crate::route::RouteLayer::inject_usage));
    /// [`AiRouterBuilder::stream_settings`](crate::AiRouterBuilder::stream_settings) sets both.
    #[must_use]
    pub fn inject_usage(mut self, inject: bool) -> Self {
        self.inject_usage = inject;
        self
    }

    /// Whether usage is asked for on this provider's chat streams.
    pub fn injects_usage(&self) -> bool {
        self.inject_usage
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
    providers: HashMap<Arc<str>, Duration>,
    hook: Arc<dyn OnUsage>,
}

impl Settings {
    fn idle_timeout(&self, provider: Option<&str>) -> Duration {
        if self.providers.is_empty() {
            return self.idle_timeout;
        }
        provider
            .and_then(|p| self.providers.get(p))
            .copied()
            .unwrap_or(self.idle_timeout)
    }
}

/// Adds [`Sse`]. See the module docs.
#[derive(Clone)]
pub struct SseLayer {
    settings: Arc<Settings>,
}

impl SseLayer {
    /// A layer with the default idle timeout and [`LogUsage`].
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

    /// Settings for one provider (its idle timeout, when set; usage injection is applied
    /// by the route layer).
    #[must_use]
    pub fn provider(mut self, name: impl Into<Arc<str>>, settings: StreamSettings) -> Self {
        let name = name.into();
        match settings.idle_timeout {
            Some(timeout) => self.settings_mut().providers.insert(name, timeout),
            None => self.settings_mut().providers.remove(&name),
        };
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

/// Wraps event-stream answers in an [`SseBody`], other answers in an [`IdleBody`]. See the
/// module docs.
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Sse<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions();
        let target = extensions.get::<RouteTarget>().cloned();
        let idle_timeout = self
            .settings
            .idle_timeout(target.as_ref().map(RouteTarget::provider));
        let context = StreamContext {
            hook: self.settings.hook.clone(),
            request_id: extensions.get::<RequestId>().cloned(),
            log: extensions.get::<RequestLog>().cloned(),
            strip_injected_usage: target.as_ref().is_some_and(RouteTarget::usage_injected),
            target,
            start: Instant::now(),
            idle_timeout,
        };
        ResponseFuture {
            inner: self.inner.call(request),
            context: Some(context),
        }
    }
}

pin_project! {
    /// Response future of [`Sse`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        context: Option<StreamContext>,
    }
}

impl<F, E, B> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let Some(context) = this.context.take() else {
            return Poll::Ready(Ok(response.map(ResponseBody::pass_through)));
        };
        // Error answers pass as they are: `OpenAiErrors` reads them (bounded).
        if !response.status().is_success() {
            return Poll::Ready(Ok(response.map(ResponseBody::pass_through)));
        }
        let is_stream = content_type_is(response.headers(), "text/event-stream");
        let asked_for_stream = context.target.as_ref().is_some_and(RouteTarget::stream);
        if asked_for_stream && !is_stream {
            // An HTML page or JSON where events were asked for: the SDK would read no event
            // and raise nothing. Refuse it before the first byte (the upstream is dropped).
            tracing::warn!(
                content_type = ?response.headers().get(header::CONTENT_TYPE),
                "upstream answered a stream request with something that is not an event stream"
            );
            let refusal = Error::upstream_protocol().into_response();
            return Poll::Ready(Ok(refusal.map(ResponseBody::refusal)));
        }
        if !is_stream {
            // A successful JSON or audio answer still may not stall forever after its head.
            let timeout = context.idle_timeout;
            return Poll::Ready(Ok(
                response.map(|body| ResponseBody::idle(IdleBody::new(body, timeout)))
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
        let body = ResponseBody::stream(SseBody::new(body, context));
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

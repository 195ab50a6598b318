//! Request ids, the per-request tracing span, and the observation of every request.
//!
//! [`SetRequestId`] keeps a well-formed incoming `x-request-id` or makes a new one, stores it
//! as the [`RequestId`] request extension, echoes it on every response, and runs the request
//! inside one `request` span (field `id`), which its [`ResponseBody`] carries on: a line
//! logged while a stream is sent still names its request, and the request's own line (from
//! the observer) has the rest, key name included. The spans never carry headers, bodies or
//! keys.
//!
//! Beside it, on its own target [`GENAI_TARGET`], the request's OpenTelemetry SERVER span
//! (`request`, `otel.kind = "server"`, with the `id` too): when the request is over, after the
//! observer, it gets the GenAI semantic-convention fields (v1.41) from the same summary and its
//! name, `{gen_ai.operation.name} {gen_ai.request.model}` (`chat openai/gpt-4o-mini`):
//! operation, provider, request and response model, response id, finish reasons, token usage,
//! request parameters, `enduser.id` and `gen_ai.conversation.id` (the `identity` / `thread`
//! knobs), the key's name (`ai_router.key`), attempts, outcome, status, and `error.type` on
//! failure. A stream's span so ends with the stream. Both are entered while the layers below
//! work, the GenAI one innermost (the upstream attempts' spans are its children); polling the
//! response body enters the `request` span alone (so a line logged mid-stream names its
//! request), and the GenAI span is entered again when the request ends. A log layer should leave
//! [`GENAI_TARGET`] out (`tracing-subscriber`'s `fmt` formats every field of every span it
//! sees, for every request), a trace exporter take it alone. With the `otel` feature, an
//! incoming W3C `traceparent` makes the GenAI span a child of the caller's span (without it,
//! the header is not read).
//!
//! It also puts a [`RequestLog`] in the extensions, which the layers below fill in (key name,
//! endpoint, target, a stream's usage and outcome), and hands a
//! [`RequestSummary`](crate::observe::RequestSummary) to the router's
//! [`Observer`] when the response body ends, fails or is dropped by the client: one line,
//! metric or usage record per request, with the real outcome of a stream. [`LogRequests`] (a `tracing` event) is the default.
//!
//! # Example
//! ```
//! use ai_router::request_id::{RequestId, SetRequestIdLayer};
//! use ai_router::observe::RequestSummary;
//! use tower::{ServiceBuilder, ServiceExt};
//! # async fn demo() -> Result<(), std::convert::Infallible> {
//! let service = ServiceBuilder::new()
//!     .layer(SetRequestIdLayer::new().observer(|summary: &RequestSummary| {
//!         println!("{} {:?} in {:?}", summary.id.as_str(), summary.status, summary.duration);
//!     }))
//!     .service_fn(|request: http::Request<()>| async move {
//!         let id = request.extensions().get::<RequestId>().map(|id| id.as_str().to_owned());
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::from(id.unwrap_or_default())))
//!     });
//! let response = service.oneshot(http::Request::new(())).await?;
//! assert!(response.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
//! # Ok(()) }
//! ```

mod body;
mod future;
mod span;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::observe::{LogRequests, Observer, RequestHead, RequestLog};

pub use self::body::ResponseBody;
use self::future::Observation;
pub use self::future::ResponseFuture;
use self::span::RequestSpans;
use crate::extensions::TracePolicy;
pub use crate::extensions::{RequestId, X_REQUEST_ID};
pub use crate::observe::genai::GENAI_TARGET;

/// Adds [`SetRequestId`]. See the module docs.
#[derive(Clone)]
pub struct SetRequestIdLayer {
    observer: Arc<dyn Observer>,
    genai_spans: bool,
    trace_context: Option<TracePolicy>,
}

impl SetRequestIdLayer {
    /// A new layer, observing with [`LogRequests`].
    pub fn new() -> Self {
        Self {
            observer: Arc::new(LogRequests),
            genai_spans: true,
            trace_context: None,
        }
    }

    /// Whether each request gets its GenAI span and each upstream attempt its own span, on
    /// [`GENAI_TARGET`] (default: yes). Off, only the `request` span with its `id` is opened.
    /// On, they cost nothing more than a callsite check while no subscriber layer enables
    /// their target; a layer that does pays for their fields (a log layer formats them all).
    #[must_use]
    pub fn genai_spans(mut self, on: bool) -> Self {
        self.genai_spans = on;
        self
    }

    /// Whether each request gets a W3C [`TraceContext`](crate::extensions::TraceContext) (default: no): the incoming
    /// `traceparent` joined (or a new trace started), the context put in the request's
    /// extensions and its [`RequestSummary`](crate::observe::RequestSummary), and each
    /// upstream attempt sent its own `traceparent`. What an exporter that writes spans from
    /// the summaries needs (`ai_router::otel::OtlpExporter`, feature `otel`);
    /// it needs no `tracing` span (turn [`genai_spans`](Self::genai_spans) off beside it, or
    /// the two would name different spans upstream).
    #[must_use]
    pub fn trace_context(mut self, on: bool) -> Self {
        self.trace_context = on.then(|| self.trace_context.unwrap_or_default());
        self
    }

    /// Gives each request a W3C [`TraceContext`](crate::extensions::TraceContext) made by `policy` (whether a caller's context
    /// is joined, which share of new traces is sampled): [`trace_context(true)`](Self::trace_context)
    /// with a policy other than the default.
    #[must_use]
    pub fn trace_policy(mut self, policy: TracePolicy) -> Self {
        self.trace_context = Some(policy);
        self
    }

    /// Hands every request's summary to `observer` (replacing [`LogRequests`]).
    #[must_use]
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Arc::new(observer);
        self
    }
}

impl Default for SetRequestIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SetRequestIdLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetRequestIdLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SetRequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId {
            inner,
            observer: self.observer.clone(),
            genai_spans: self.genai_spans,
            trace_context: self.trace_context,
        }
    }
}

/// Sets the [`RequestId`], echoes it, opens the request span and observes the request. See
/// the module docs.
#[derive(Clone)]
pub struct SetRequestId<S> {
    inner: S,
    observer: Arc<dyn Observer>,
    genai_spans: bool,
    trace_context: Option<TracePolicy>,
}

impl<S> SetRequestId<S> {
    /// Wraps `inner`, observing with [`LogRequests`].
    pub fn new(inner: S) -> Self {
        SetRequestIdLayer::new().layer(inner)
    }

    /// A [`SetRequestIdLayer`].
    pub fn layer() -> SetRequestIdLayer {
        SetRequestIdLayer::new()
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

impl<S: fmt::Debug> fmt::Debug for SetRequestId<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetRequestId")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SetRequestId<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let start = tokio::time::Instant::now();
        let id = request
            .headers()
            .get(X_REQUEST_ID)
            .and_then(RequestId::from_incoming)
            .unwrap_or_else(RequestId::generate);
        let spans = RequestSpans::new(&id, self.genai_spans);
        #[cfg(feature = "otel")]
        if self
            .trace_context
            .is_none_or(|policy| policy.joins_incoming())
        {
            crate::otel::set_parent_from(spans.genai(), request.headers());
        }
        let trace = self.trace_context.as_ref().map(|policy| {
            let trace = policy.context_for(request.headers());
            request.extensions_mut().insert(trace.clone());
            trace
        });
        let log = RequestLog::arrived(start, trace);
        let head = RequestHead {
            id: id.clone(),
            method: request.method().clone(),
            uri: request.uri().clone(),
        };
        let extensions = request.extensions_mut();
        extensions.insert(id);
        extensions.insert(log.clone());
        let inner = {
            let _entered = spans.enter();
            self.inner.call(request)
        };
        // After the call: from here the response future reports the end, whatever happens.
        self.observer.on_start();
        ResponseFuture::new(
            inner,
            spans,
            // Boxed: the future and then the answer's body carry a pointer, not the head,
            // through every layer that moves them.
            Box::new(Observation {
                head,
                log,
                observer: self.observer.clone(),
                start,
            }),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Mutex;

    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use tower::{ServiceBuilder, ServiceExt};

    use crate::observe::{Outcome, RequestSummary};

    type Summaries = Arc<Mutex<Vec<RequestSummary>>>;

    fn echo_id(
        summaries: &Summaries,
    ) -> impl Service<
        Request<()>,
        Response = Response<ResponseBody<http_body_util::Full<Bytes>>>,
        Error = Infallible,
        Future = impl Send,
    > {
        let summaries = summaries.clone();
        ServiceBuilder::new()
            .layer(
                SetRequestIdLayer::new().observer(move |s: &RequestSummary| {
                    summaries.lock().unwrap().push(s.clone());
                }),
            )
            .service_fn(|request: Request<()>| async move {
                let id = request.extensions().get::<RequestId>().unwrap();
                assert!(request.extensions().get::<RequestLog>().is_some());
                Ok::<_, Infallible>(Response::new(http_body_util::Full::from(
                    id.as_str().to_owned(),
                )))
            })
    }

    async fn body(response: Response<ResponseBody<http_body_util::Full<Bytes>>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn generates_unique_ids_and_observes_each_request_once() {
        let summaries = Summaries::default();
        let a = echo_id(&summaries).oneshot(Request::new(())).await.unwrap();
        let a_header = a.headers()[X_REQUEST_ID].to_str().unwrap().to_owned();
        let a = body(a).await;
        let b = body(echo_id(&summaries).oneshot(Request::new(())).await.unwrap()).await;
        assert!(a.starts_with("req_"));
        assert_eq!(a_header, a);
        assert_ne!(a, b);
        let summaries = summaries.lock().unwrap();
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].id.as_str(), a);
        assert_eq!(summaries[0].status, Some(http::StatusCode::OK));
        assert_eq!(summaries[0].outcome, Outcome::Completed);
    }

    #[tokio::test]
    async fn keeps_a_valid_incoming_id_and_replaces_an_invalid_one() {
        let summaries = Summaries::default();
        let request = Request::builder()
            .header("x-request-id", "client-42")
            .body(())
            .unwrap();
        let response = echo_id(&summaries).oneshot(request).await.unwrap();
        assert_eq!(response.headers()[X_REQUEST_ID], "client-42");

        let request = Request::builder()
            .header("x-request-id", "bad id with spaces")
            .body(())
            .unwrap();
        let response = echo_id(&summaries).oneshot(request).await.unwrap();
        assert!(body(response).await.starts_with("req_"));
    }

    #[tokio::test]
    async fn a_streamed_body_is_observed_once_at_its_end_with_its_outcome() {
        for (frames, outcome) in [
            (vec![Ok("a"), Ok("b"), Ok("c")], Outcome::Completed),
            (vec![Ok("a"), Err("reset")], Outcome::UpstreamFailed),
        ] {
            let summaries = Summaries::default();
            let seen = summaries.clone();
            let service = ServiceBuilder::new()
                .layer(
                    SetRequestIdLayer::new().observer(move |s: &RequestSummary| {
                        seen.lock().unwrap().push(s.clone());
                    }),
                )
                .service_fn(move |_: Request<()>| {
                    let frames = frames.clone();
                    async move {
                        let frames = frames.into_iter().map(|frame| {
                            frame
                                .map(|data| {
                                    http_body::Frame::data(Bytes::from_static(data.as_bytes()))
                                })
                                .map_err(crate::error::BoxError::from)
                        });
                        let body =
                            http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
            let response = service.oneshot(Request::new(())).await.unwrap();
            let mut body = response.into_body();
            let mut frames = 0;
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
                frames += 1;
                // Not before the body is over.
                assert!(summaries.lock().unwrap().is_empty());
            }
            assert!(frames >= 1);
            drop(body);
            let summaries = summaries.lock().unwrap();
            assert_eq!(summaries.len(), 1, "{outcome:?}");
            assert_eq!(summaries[0].outcome, outcome);
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_a_client_gone() {
        let summaries = Summaries::default();
        let response = echo_id(&summaries).oneshot(Request::new(())).await.unwrap();
        assert!(summaries.lock().unwrap().is_empty());
        drop(response);
        let summaries = summaries.lock().unwrap();
        assert_eq!(summaries[0].outcome, Outcome::ClientGone);
    }
}

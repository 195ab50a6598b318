//! Response future of [`Sse`](super::Sse).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body::Body;
use pin_project_lite::pin_project;

use super::answer::AnswerWatch;
use super::body::ResponseBody;
use super::idle::IdleBody;
use super::stream::{SseBody, StreamContext};
use crate::error::{BoxError, Error};
use crate::extensions::{Endpoint, RouteTarget};
use crate::media::content_type_is;

pin_project! {
    /// Response future of [`Sse`](super::Sse).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        context: Option<StreamContext>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, context: StreamContext) -> Self {
        Self {
            inner,
            context: Some(context),
        }
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
        let Some(mut context) = this.context.take() else {
            return Poll::Ready(Ok(response.map(ResponseBody::pass_through)));
        };
        // The target that answered, when not the first one asked (a fallback): its stream is
        // the one to read.
        if let Some(answered) = response.extensions().get::<RouteTarget>() {
            context.strip_injected_usage = answered.usage_injected();
            if let Some(settings) = &context.per_provider {
                context.idle_timeout = settings.idle_timeout(Some(answered.provider()));
            }
            context.target = Some(answered.clone());
        }
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
            let watch = watch_answer(&response, context);
            return Poll::Ready(Ok(response.map(|body| {
                let body = IdleBody::new(body, timeout);
                ResponseBody::idle(match watch {
                    Some(watch) => body.watching(watch),
                    None => body,
                })
            })));
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

/// A watch over a successful JSON answer of an endpoint whose answers carry usage (chat,
/// completions, embeddings, responses), when there is a log to record into.
fn watch_answer<B>(response: &Response<B>, context: StreamContext) -> Option<AnswerWatch> {
    let target = context.target?;
    let observed = matches!(
        target.endpoint(),
        Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
    );
    if !observed || !content_type_is(response.headers(), "application/json") {
        return None;
    }
    Some(AnswerWatch::new(
        context.log?,
        Some(target.upstream_model_shared().clone()),
    ))
}

//! Response future of [`SetRequestId`](super::SetRequestId).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use super::body::ResponseBody;
use super::span::RequestSpans;
use crate::extensions::X_REQUEST_ID;
use crate::observe::{End, Observer, Outcome, RequestHead, RequestLog};
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Instant;

/// What the layer keeps of a request until it is over.
pub(super) struct Observation {
    pub(super) head: RequestHead,
    pub(super) log: RequestLog,
    pub(super) observer: Arc<dyn Observer>,
    pub(super) start: Instant,
}

impl Observation {
    /// Reports the end of the request: `status` sent (if any), how it ended; fills the
    /// request's GenAI span in.
    pub(super) fn finish(
        &self,
        spans: &RequestSpans,
        status: Option<http::StatusCode>,
        latency: std::time::Duration,
        outcome: Outcome,
    ) {
        let end = End {
            status,
            latency,
            duration: self.start.elapsed(),
            outcome,
        };
        let summary = self.log.summary(&self.head, end);
        self.observer.on_end(&summary);
        // After the observer: a line it logs inside the spans does not repeat every field.
        spans.record(&summary);
    }
}

pin_project! {
    /// Response future of [`SetRequestId`](super::SetRequestId).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        spans: RequestSpans,
        observation: Option<Box<Observation>>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        // Dropped before its response head (the client went away while the upstream was
        // still thinking): the request is over all the same, and is reported once.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(observation) = this.observation.take() {
                let latency = observation.start.elapsed();
                observation.finish(this.spans, None, latency, Outcome::ClientGone);
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, spans: RequestSpans, observation: Box<Observation>) -> Self {
        Self {
            inner,
            spans,
            observation: Some(observation),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.spans.enter();
        let result = ready!(this.inner.poll(cx));
        let Some(observation) = this.observation.take() else {
            // Polled after completion: the answer was handed out already.
            return Poll::Ready(
                result.map(|r| r.map(|b| ResponseBody::new(b, this.spans.clone(), None))),
            );
        };
        let latency = observation.start.elapsed();
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                observation.finish(this.spans, None, latency, Outcome::NoResponse);
                return Poll::Ready(Err(error));
            }
        };
        let (mut parts, body) = response.into_parts();
        parts
            .headers
            .insert(X_REQUEST_ID, observation.head.id.header_value().clone());
        let body = ResponseBody::new(
            body,
            this.spans.clone(),
            Some((observation, parts.status, latency)),
        );
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

//! Response body of [`SetRequestId`](super::SetRequestId): carries the request's spans and
//! reports the request's end.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::future::Observation;
use super::span::RequestSpans;
use crate::observe::Outcome;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The inner service's body, passed through untouched inside the request's spans; when it
    /// ends, fails or is dropped before its end (the client went away), the router's
    /// [`Observer`](crate::observe::Observer) hears of it once. See the [module docs](super).
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        spans: RequestSpans,
        pending: Option<(Box<Observation>, StatusCode, Duration)>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((observation, status, latency)) = this.pending.take() {
                let _entered = this.spans.enter_log();
                observation.finish(this.spans, Some(status), latency, Outcome::ClientGone);
            }
        }
    }
}

impl<B: Body> ResponseBody<B> {
    pub(super) fn new(
        inner: B,
        spans: RequestSpans,
        pending: Option<(Box<Observation>, StatusCode, Duration)>,
    ) -> Self {
        let mut body = Self {
            inner,
            spans,
            pending,
        };
        if body.inner.is_end_stream() {
            // Nothing to send: the server will not poll it, and the request is over.
            body.finish(Outcome::Completed);
        }
        body
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some((observation, status, latency)) = self.pending.take() {
            observation.finish(&self.spans, Some(status), latency, outcome);
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let _entered = this.spans.enter_log();
        let frame = this.inner.as_mut().poll_frame(cx);
        let outcome = match &frame {
            Poll::Ready(None) => Some(Outcome::Completed),
            Poll::Ready(Some(Err(_))) => Some(Outcome::UpstreamFailed),
            // Servers stop polling a body that says it has ended.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Some(Outcome::Completed),
            _ => None,
        };
        if let Some(outcome) = outcome {
            if let Some((observation, status, latency)) = this.pending.take() {
                observation.finish(this.spans, Some(status), latency, outcome);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Response body of [`Resilience`](super::Resilience).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{Full, InnerOrFull};

pin_project! {
    /// The answering upstream's body as it comes, or the layer's own error answer; a stream
    /// whose first event was waited for before its head was let through gives back what it
    /// read first. See the [module docs](super).
    pub struct ResponseBody<B> {
        // What was read while waiting for a stream's first event, sent before the rest.
        held: Option<Frame<Bytes>>,
        #[pin]
        inner: InnerOrFull<B>,
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn direct(body: B) -> Self {
        Self {
            held: None,
            inner: InnerOrFull::inner(body),
        }
    }

    pub(super) fn prefixed(held: Frame<Bytes>, rest: B) -> Self {
        Self {
            held: Some(held),
            inner: InnerOrFull::inner(rest),
        }
    }

    pub(super) fn full(body: Full) -> Self {
        Self {
            held: None,
            inner: InnerOrFull::full(body),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("held", &self.held.is_some())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.held.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => this.inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.held {
            None => self.inner.size_hint(),
            // Streams announce no length.
            Some(_) => SizeHint::default(),
        }
    }
}

//! Response body of [`Auth`](super::Auth): holds the key's concurrency permit until it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{Full, InnerOrFull};

pin_project! {
    /// The inner service's body (or a refusal), holding the key's permit (a concurrency slot)
    /// until it is done with: a stream counts until its last byte. See the
    /// [module docs](super).
    pub struct ResponseBody<B, P> {
        #[pin]
        inner: InnerOrFull<B>,
        permit: Option<P>,
    }
}

impl<B, P> ResponseBody<B, P> {
    pub(super) fn inner(body: B, permit: Option<P>) -> Self {
        Self {
            inner: InnerOrFull::inner(body),
            permit,
        }
    }

    pub(super) fn refusal(body: Full) -> Self {
        Self {
            inner: InnerOrFull::full(body),
            permit: None,
        }
    }
}

impl<B, P> std::fmt::Debug for ResponseBody<B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("holds_permit", &self.permit.is_some())
            .finish()
    }
}

impl<B: Body<Data = Bytes>, P> Body for ResponseBody<B, P> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = frame {
            // Done: the slot is free for the key's next request, even if the body itself is
            // kept around.
            this.permit.take();
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

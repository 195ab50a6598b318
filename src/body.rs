//! Bodies the router writes itself, and the body of a layer that may answer on its own.
//!
//! A leaf: every layer imports it, it imports no layer. Each layer owns the body of its
//! answers (`auth::ResponseBody`, `sse::ResponseBody`, ...); those that either pass the inner
//! service's body through or answer with bytes of their own (an OpenAI error, `GET /models`)
//! use [`InnerOrFull`]. Nothing here collects or boxes a body.
//!
//! # Example
//! ```
//! use ai_router::body::Full;
//! use http_body::Body as _;
//!
//! let body = Full::new("{}");
//! assert_eq!(body.size_hint().exact(), Some(2));
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Bytes held in memory, sent as one frame.
#[derive(Clone, Debug, Default)]
pub struct Full {
    data: Option<Bytes>,
}

impl Full {
    /// A body of these bytes.
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self { data: None }
    }
}

impl Full {
    /// Polls as a body whose error type is `E` (a `Full` never fails): for the bodies that
    /// hold one beside a fallible body.
    pub(crate) fn poll_as<E>(&mut self) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }
}

impl From<Bytes> for Full {
    fn from(data: Bytes) -> Self {
        Self::new(data)
    }
}

impl Body for Full {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

pin_project! {
    /// The body of a layer's answer: the inner service's body passed through, or bytes the
    /// layer wrote itself (a refusal, a listing).
    pub struct InnerOrFull<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { body: Full },
    }
}

impl<B> InnerOrFull<B> {
    /// The inner service's body, passed through.
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// Bytes of the layer's own.
    pub fn full(body: Full) -> Self {
        Self {
            kind: Kind::Full { body },
        }
    }
}

impl<B> std::fmt::Debug for InnerOrFull<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Full { .. } => "Full",
        };
        f.debug_tuple("InnerOrFull").field(&kind).finish()
    }
}

impl<B: Body<Data = Bytes>> Body for InnerOrFull<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { body } => body.poll_as(),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn full_yields_once_then_ends() {
        let mut body = Full::new("abc");
        assert!(!body.is_end_stream());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        assert!(Full::new("").is_end_stream());
    }

    #[tokio::test]
    async fn either_side_streams() {
        let inner = InnerOrFull::inner(http_body_util::Full::new(Bytes::from_static(b"xyz")));
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "xyz");
        let full = InnerOrFull::<http_body_util::Empty<Bytes>>::full(Full::new("ok"));
        assert_eq!(full.size_hint().exact(), Some(2));
        assert_eq!(full.collect().await.unwrap().to_bytes(), "ok");
    }

    #[test]
    fn bodies_are_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Full>();
        assert_send::<InnerOrFull<hyper::body::Incoming>>();
    }
}

pin_project! {
    /// A layer's answer that holds a guard (a concurrency permit, an in-flight slot) until
    /// its body ends: the inner service's body, or the layer's own bytes (which hold none).
    /// Dropped early, the guard goes with it; ended, it is released at once even if the body
    /// is kept around. `auth::ResponseBody` and `in_flight::ResponseBody` are this.
    pub struct Guarded<B, G> {
        #[pin]
        inner: InnerOrFull<B>,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    /// The inner service's body, holding `guard` (if any) until it ends.
    pub(crate) fn inner(body: B, guard: Option<G>) -> Self {
        Self {
            inner: InnerOrFull::inner(body),
            guard,
        }
    }

    /// The layer's own answer: nothing to hold.
    pub(crate) fn full(body: Full) -> Self {
        Self {
            inner: InnerOrFull::full(body),
            guard: None,
        }
    }
}

impl<B, G> std::fmt::Debug for Guarded<B, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("holds_guard", &self.guard.is_some())
            .finish()
    }
}

impl<B: Body<Data = Bytes>, G> Body for Guarded<B, G> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = frame {
            // Done: the slot is free for the next request, even if the body is kept around.
            this.guard.take();
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

//! The response body every router service answers with.
//!
//! One concrete type covers answers the router writes itself (bytes in memory) and answers
//! streamed from an upstream (hyper's `Incoming`, passed through frame by frame, never
//! collected), so the composed service has a single `Response<RouterBody>`.
//!
//! # Example
//! ```
//! use ai_router::RouterBody;
//! use http_body::Body as _;
//!
//! let body = RouterBody::full("{}");
//! assert_eq!(body.size_hint().exact(), Some(2));
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

use crate::auth::ConcurrencyPermit;
use crate::openai_error::BoxError;
use crate::sse::{IdleBody, SseBody};

pin_project! {
    /// A response body: bytes the router made, or an upstream's body streamed through.
    ///
    /// See the module docs.
    pub struct RouterBody {
        #[pin]
        kind: Kind,
        // A key's concurrency slot, held until the body is done with (streams included).
        permit: Option<ConcurrencyPermit>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Full { data: Option<Bytes> },
        Incoming { #[pin] body: hyper::body::Incoming },
        Boxed { #[pin] body: UnsyncBoxBody<Bytes, BoxError> },
        // Boxed: one allocation per stream keeps every other body small.
        Sse { body: Pin<Box<SseBody>> },
        Idle { body: Pin<Box<IdleBody>> },
    }
}

impl RouterBody {
    /// A body of these bytes, sent as one frame.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        let data = (!data.is_empty()).then_some(data);
        Self::of(Kind::Full { data })
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::of(Kind::Full { data: None })
    }

    fn of(kind: Kind) -> Self {
        Self { kind, permit: None }
    }

    /// An event stream wrapped by the [`Sse`](crate::sse::Sse) layer.
    pub(crate) fn sse(body: SseBody) -> Self {
        Self::of(Kind::Sse {
            body: Box::pin(body),
        })
    }

    /// A non-stream upstream answer under an idle timeout.
    pub(crate) fn idle(body: IdleBody) -> Self {
        Self::of(Kind::Idle {
            body: Box::pin(body),
        })
    }

    /// Keeps `permit` until this body is dropped.
    pub(crate) fn hold(mut self, permit: ConcurrencyPermit) -> Self {
        self.permit = Some(permit);
        self
    }

    /// Wraps any other body (boxed once); use it for upstream services that are not a hyper
    /// client, such as an in-process model server.
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::of(Kind::Boxed {
            body: body.map_err(Into::into).boxed_unsync(),
        })
    }
}

impl From<hyper::body::Incoming> for RouterBody {
    fn from(body: hyper::body::Incoming) -> Self {
        Self::of(Kind::Incoming { body })
    }
}

impl From<Bytes> for RouterBody {
    fn from(data: Bytes) -> Self {
        Self::full(data)
    }
}

impl Default for RouterBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for RouterBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "Full",
            Kind::Incoming { .. } => "Incoming",
            Kind::Boxed { .. } => "Boxed",
            Kind::Sse { .. } => "Sse",
            Kind::Idle { .. } => "Idle",
        };
        f.debug_tuple("RouterBody").field(&kind).finish()
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Incoming { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Boxed { body } => body.poll_frame(cx),
            KindProj::Sse { body } => body.as_mut().poll_frame(cx),
            KindProj::Idle { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Incoming { body } => body.is_end_stream(),
            Kind::Boxed { body } => body.is_end_stream(),
            Kind::Sse { body } => body.is_end_stream(),
            Kind::Idle { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Incoming { body } => body.size_hint(),
            Kind::Boxed { body } => body.size_hint(),
            Kind::Sse { body } => body.size_hint(),
            Kind::Idle { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_yields_once_then_ends() {
        let mut body = RouterBody::full("abc");
        assert!(!body.is_end_stream());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn boxed_streams_the_inner_body() {
        let body = RouterBody::new(http_body_util::Full::new(Bytes::from_static(b"xyz")));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "xyz");
    }

    #[test]
    fn body_is_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<RouterBody>();
    }
}

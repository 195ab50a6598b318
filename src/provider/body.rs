//! [`UpstreamBody`]: what a provider answers with.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

use super::translating::TranslatedStream;
use crate::body::Full;
use crate::error::BoxError;

pin_project! {
    /// The body of a provider's answer: hyper's body from an upstream connection, bytes an
    /// in-process provider made, or any other body (boxed once, for providers that are
    /// neither). Streams frame by frame; never collected.
    pub struct UpstreamBody {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Incoming { #[pin] body: hyper::body::Incoming },
        Full { body: Full },
        Boxed { #[pin] body: UnsyncBoxBody<Bytes, BoxError> },
        // Boxed: its translator state (~350 bytes) would otherwise size every answer's body,
        // which each layer moves as it wraps it.
        Translated { body: Pin<Box<TranslatedStream>> },
    }
}

impl UpstreamBody {
    /// Wraps any other body (boxed once): for upstream services that are not a hyper client,
    /// such as a provider that translates another API's stream.
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: Kind::Boxed {
                body: body.map_err(Into::into).boxed_unsync(),
            },
        }
    }

    /// A translated provider stream (boxed: see `Kind::Translated`).
    pub(crate) fn translated(body: TranslatedStream) -> Self {
        Self {
            kind: Kind::Translated {
                body: Box::pin(body),
            },
        }
    }

    /// These bytes, as one frame (no box).
    pub fn full(data: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(data),
            },
        }
    }
}

impl From<hyper::body::Incoming> for UpstreamBody {
    fn from(body: hyper::body::Incoming) -> Self {
        Self {
            kind: Kind::Incoming { body },
        }
    }
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Incoming { .. } => "Incoming",
            Kind::Full { .. } => "Full",
            Kind::Boxed { .. } => "Boxed",
            Kind::Translated { .. } => "Translated",
        };
        f.debug_tuple("UpstreamBody").field(&kind).finish()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Incoming { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
            KindProj::Full { body } => body.poll_as(),
            KindProj::Boxed { body } => body.poll_frame(cx),
            KindProj::Translated { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Incoming { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
            Kind::Boxed { body } => body.is_end_stream(),
            Kind::Translated { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Incoming { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
            Kind::Boxed { body } => body.size_hint(),
            Kind::Translated { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_kind_streams_its_bytes() {
        let full = UpstreamBody::full("abc");
        assert_eq!(full.size_hint().exact(), Some(3));
        assert_eq!(full.collect().await.unwrap().to_bytes(), "abc");
        let boxed = UpstreamBody::new(http_body_util::Full::new(Bytes::from_static(b"xyz")));
        assert_eq!(boxed.collect().await.unwrap().to_bytes(), "xyz");
    }

    #[test]
    fn body_is_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<UpstreamBody>();
    }
}

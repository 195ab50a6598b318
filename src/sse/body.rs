//! Response body of [`Sse`](super::Sse).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::idle::IdleBody;
use super::stream::SseBody;
use crate::body::Full;
use crate::error::BoxError;

pin_project! {
    /// Response body of [`Sse`](super::Sse): an event stream passed through event by event,
    /// another successful answer under an idle timeout, an error answer as it came, or the
    /// layer's own refusal. See the [module docs](super).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        PassThrough { #[pin] body: B },
        // Boxed (one allocation per answer): a stream's scanner and report state, a JSON
        // answer's timer and usage reader would otherwise size every answer's body, which
        // each layer moves as it wraps it.
        Stream { body: Pin<Box<SseBody<B>>> },
        Idle { body: Pin<Box<IdleBody<B>>> },
        Refusal { body: Full },
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn pass_through(body: B) -> Self {
        Self {
            kind: Kind::PassThrough { body },
        }
    }

    pub(super) fn stream(body: SseBody<B>) -> Self {
        Self {
            kind: Kind::Stream {
                body: Box::pin(body),
            },
        }
    }

    pub(super) fn idle(body: IdleBody<B>) -> Self {
        Self {
            kind: Kind::Idle {
                body: Box::pin(body),
            },
        }
    }

    pub(super) fn refusal(body: Full) -> Self {
        Self {
            kind: Kind::Refusal { body },
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::PassThrough { .. } => "PassThrough",
            Kind::Stream { .. } => "Stream",
            Kind::Idle { .. } => "Idle",
            Kind::Refusal { .. } => "Refusal",
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::PassThrough { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
            KindProj::Stream { body } => body.as_mut().poll_frame(cx),
            KindProj::Idle { body } => body.as_mut().poll_frame(cx),
            KindProj::Refusal { body } => body.poll_as(),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::PassThrough { body } => body.is_end_stream(),
            Kind::Stream { body } => body.is_end_stream(),
            Kind::Idle { body } => body.is_end_stream(),
            Kind::Refusal { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::PassThrough { body } => body.size_hint(),
            Kind::Stream { body } => body.size_hint(),
            Kind::Idle { body } => body.size_hint(),
            Kind::Refusal { body } => body.size_hint(),
        }
    }
}

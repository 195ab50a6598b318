//! Response body of [`Resilience`](super::Resilience).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::Full;

pin_project! {
    /// The answering upstream's body: as it comes, or (a stream whose first event was waited
    /// for before its head was let through) that first event and then the rest; or the
    /// layer's own error answer. See the [module docs](super).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Direct { #[pin] body: B },
        Prefixed { first: Option<Frame<Bytes>>, #[pin] rest: B },
        Full { body: Full },
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn direct(body: B) -> Self {
        Self {
            kind: Kind::Direct { body },
        }
    }

    pub(super) fn prefixed(first: Frame<Bytes>, rest: B) -> Self {
        Self {
            kind: Kind::Prefixed {
                first: Some(first),
                rest,
            },
        }
    }

    pub(super) fn full(body: Full) -> Self {
        Self {
            kind: Kind::Full { body },
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Direct { .. } => "Direct",
            Kind::Prefixed { .. } => "Prefixed",
            Kind::Full { .. } => "Full",
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Direct { body } => body.poll_frame(cx),
            KindProj::Prefixed { first, rest } => match first.take() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => rest.poll_frame(cx),
            },
            KindProj::Full { body } => body.poll_as(),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Direct { body } => body.is_end_stream(),
            Kind::Prefixed { first, rest } => first.is_none() && rest.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Direct { body } => body.size_hint(),
            Kind::Prefixed { .. } => SizeHint::default(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}

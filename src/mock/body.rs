//! The response body of the mock: pre-built frames, yielded one per poll.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A response body made of pre-built chunks; each chunk is its own data frame.
#[derive(Debug)]
pub(super) struct MockBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Empty,
    /// A single chunk; its length is announced (`content-length`).
    Full(Bytes),
    /// Several chunks; the length is left unknown (chunked / streamed).
    Frames(std::vec::IntoIter<Bytes>),
}

impl MockBody {
    /// A body of one chunk.
    pub(super) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let kind = if bytes.is_empty() {
            Kind::Empty
        } else {
            Kind::Full(bytes)
        };
        Self { kind }
    }

    /// A streamed body: one data frame per (non-empty) chunk.
    pub(super) fn frames(mut chunks: Vec<Bytes>) -> Self {
        chunks.retain(|chunk| !chunk.is_empty());
        Self {
            kind: Kind::Frames(chunks.into_iter()),
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let next = match &mut this.kind {
            Kind::Empty => None,
            Kind::Full(_) => match std::mem::replace(&mut this.kind, Kind::Empty) {
                Kind::Full(bytes) => Some(bytes),
                _ => None,
            },
            Kind::Frames(chunks) => chunks.next(),
        };
        Poll::Ready(next.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(_) => false,
            Kind::Frames(chunks) => chunks.len() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Frames(_) => SizeHint::default(),
        }
    }
}

//! The response body of the mock: pre-built frames, yielded one per poll, optionally paced
//! (delays, gates) and ended abnormally (reset, stall) for scripted answers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

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
    /// Scripted chunks with pacing and an optional abnormal end; length unknown.
    Paced(Box<Paced>),
}

/// The error a scripted body fails with: hyper then aborts the connection (HTTP/1.1: no
/// final chunk, the socket is closed; HTTP/2: the stream is reset).
#[derive(Debug)]
pub(super) struct ScriptedReset;

impl fmt::Display for ScriptedReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock upstream: scripted connection reset")
    }
}

impl std::error::Error for ScriptedReset {}

/// How a scripted body is paced and how it ends.
#[derive(Clone, Debug, Default)]
pub(super) struct Pacing {
    /// Waited before each chunk after the first.
    pub(super) chunk_delay: Option<Duration>,
    /// Waited before the first chunk (the head is already sent).
    pub(super) first_chunk_delay: Option<Duration>,
    /// `(index, gate)`: chunk `index` is sent only once `gate` is notified.
    pub(super) gates: Vec<(usize, Arc<Notify>)>,
    /// Fail the body (abort the connection) after this many chunks.
    pub(super) reset_after: Option<usize>,
    /// Send nothing more, and never end, after this many chunks.
    pub(super) stall_after: Option<usize>,
}

impl Pacing {
    /// Whether nothing is paced and the body ends normally.
    pub(super) fn is_plain(&self) -> bool {
        self.chunk_delay.is_none()
            && self.first_chunk_delay.is_none()
            && self.gates.is_empty()
            && self.reset_after.is_none()
            && self.stall_after.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Reset,
    Stall,
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The state of a paced body.
struct Paced {
    chunks: Vec<Bytes>,
    /// The index of the next chunk to send.
    next: usize,
    chunk_delay: Option<Duration>,
    first_chunk_delay: Option<Duration>,
    gates: Vec<(usize, Arc<Notify>)>,
    /// The abnormal end, and the chunk index it happens at (at most `chunks.len()`).
    end: Option<(usize, End)>,
    /// The wait (gates, delay) in progress before chunk `next`.
    wait: Option<Wait>,
    /// The chunk index whose wait is over.
    waited: Option<usize>,
    /// The task was given one chance to flush what it wrote before the reset.
    flushed_before_reset: bool,
    finished: bool,
}

impl fmt::Debug for Paced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paced")
            .field("chunks", &self.chunks.len())
            .field("next", &self.next)
            .field("end", &self.end)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Paced {
    fn new(chunks: Vec<Bytes>, pacing: Pacing) -> Self {
        let len = chunks.len();
        // The earliest abnormal end wins; at the same index, the reset.
        let reset = pacing.reset_after.map(|n| (n.min(len), End::Reset));
        let stall = pacing.stall_after.map(|n| (n.min(len), End::Stall));
        let end = match (reset, stall) {
            (Some(r), Some(s)) => Some(if s.0 < r.0 { s } else { r }),
            (r, s) => r.or(s),
        };
        Self {
            chunks,
            next: 0,
            chunk_delay: pacing.chunk_delay,
            first_chunk_delay: pacing.first_chunk_delay,
            gates: pacing.gates,
            end,
            wait: None,
            waited: None,
            flushed_before_reset: false,
            finished: false,
        }
    }

    /// The wait before chunk `index`, if any: its gates in order, then its delay (the
    /// first chunk delay for chunk 0, the chunk delay after).
    fn wait_for(&self, index: usize) -> Option<Wait> {
        let gates: Vec<Arc<Notify>> = self
            .gates
            .iter()
            .filter(|(at, _)| *at == index)
            .map(|(_, gate)| Arc::clone(gate))
            .collect();
        let delay = if index == 0 {
            self.first_chunk_delay
        } else {
            self.chunk_delay
        };
        if gates.is_empty() && delay.is_none() {
            return None;
        }
        Some(Box::pin(async move {
            for gate in gates {
                gate.notified().await;
            }
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
        }))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ScriptedReset>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            let index = self.next;
            match self.end {
                Some((at, End::Reset)) if index >= at => {
                    if !self.flushed_before_reset {
                        // hyper drops what it buffered (the head, the last chunks) when the
                        // body fails in the same poll: yield once so it flushes them first.
                        self.flushed_before_reset = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    self.finished = true;
                    return Poll::Ready(Some(Err(ScriptedReset)));
                }
                // Never woken: the connection ends when the client goes away (or the mock
                // is dropped).
                Some((at, End::Stall)) if index >= at => return Poll::Pending,
                _ => {}
            }
            let Some(chunk) = self.chunks.get(index).cloned() else {
                self.finished = true;
                return Poll::Ready(None);
            };
            if self.waited != Some(index) {
                if self.wait.is_none() {
                    self.wait = self.wait_for(index);
                }
                if let Some(wait) = self.wait.as_mut() {
                    ready!(wait.as_mut().poll(cx));
                }
                self.wait = None;
                self.waited = Some(index);
            }
            self.next += 1;
            if chunk.is_empty() {
                continue;
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || (self.end.is_none() && self.next >= self.chunks.len())
    }
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

    /// A streamed body paced by `pacing`: one data frame per non-empty chunk (empty chunks
    /// still count as indices for the gates, the delay and the abnormal ends).
    pub(super) fn paced(chunks: Vec<Bytes>, pacing: Pacing) -> Self {
        Self {
            kind: Kind::Paced(Box::new(Paced::new(chunks, pacing))),
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = ScriptedReset;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ScriptedReset>>> {
        let this = self.get_mut();
        let next = match &mut this.kind {
            Kind::Empty => None,
            Kind::Full(_) => match std::mem::replace(&mut this.kind, Kind::Empty) {
                Kind::Full(bytes) => Some(bytes),
                _ => None,
            },
            Kind::Frames(chunks) => chunks.next(),
            Kind::Paced(paced) => {
                return paced
                    .poll_next(cx)
                    .map(|item| item.map(|result| result.map(Frame::data)));
            }
        };
        Poll::Ready(next.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(_) => false,
            Kind::Frames(chunks) => chunks.len() == 0,
            Kind::Paced(paced) => paced.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Frames(_) | Kind::Paced(_) => SizeHint::default(),
        }
    }
}

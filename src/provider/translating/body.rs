//! [`TranslatedStream`]: a provider's event stream turned into OpenAI chunks as it arrives.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::ChatTranslator;
use crate::error::BoxError;
use crate::provider::dialect::{StreamError, StreamTranslator as _};
use crate::provider::events::EventSplitter;

/// Sent for a provider's keep-alive event that translates to nothing, so the client's
/// connection and the router's idle timeout see the stream is alive (SDKs skip comments).
const KEEP_ALIVE: &[u8] = b": ping\n\n";
/// The end of a translated stream (written once by its translator).
const DONE: &[u8] = b"data: [DONE]\n\n";

pin_project! {
    /// Each chunk of the provider's stream is split into events and each event translated
    /// at once; a chunk's translation is sent as one frame. Nothing waits for later bytes
    /// except the start of an event cut by a chunk boundary.
    pub(crate) struct TranslatedStream {
        #[pin]
        inner: Incoming,
        splitter: EventSplitter,
        translator: ChatTranslator,
        out: Vec<u8>,
        flow: Flow,
    }
}

enum Flow {
    Streaming,
    /// Send what is translated, then this error (the `Sse` layer writes the error frame).
    Failing(Option<StreamError>),
    Done,
}

impl TranslatedStream {
    pub(crate) fn new(inner: Incoming, translator: ChatTranslator) -> Self {
        Self {
            inner,
            splitter: EventSplitter::default(),
            translator,
            out: Vec::new(),
            flow: Flow::Streaming,
        }
    }
}

impl Body for TranslatedStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            match this.flow {
                Flow::Streaming => {}
                Flow::Failing(error) => {
                    if !this.out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(take(this.out)))));
                    }
                    let error = error.take();
                    *this.flow = Flow::Done;
                    return Poll::Ready(error.map(|error| Err(error.into())));
                }
                Flow::Done => {
                    if !this.out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(take(this.out)))));
                    }
                    return Poll::Ready(None);
                }
            }
            let translator = &mut *this.translator;
            let out = &mut *this.out;
            let mut on_event = |name: &str, data: &[u8]| {
                let before = out.len();
                translator.event(name, data, out)?;
                if out.len() == before && name == "ping" {
                    out.extend_from_slice(KEEP_ALIVE);
                }
                Ok(())
            };
            let result = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.splitter.feed(&data, &mut on_event),
                    // Trailers mean nothing here.
                    Err(_) => Ok(()),
                },
                Some(Err(error)) => {
                    *this.flow = Flow::Done;
                    this.out.clear();
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => {
                    let result = this.splitter.finish(&mut on_event);
                    *this.flow = Flow::Done;
                    result.and_then(|()| this.translator.finish(this.out))
                }
            };
            if let Err(error) = result {
                *this.flow = Flow::Failing(Some(error));
                continue;
            }
            if this.out.ends_with(DONE) {
                // The answer is whole: stop reading, even if the provider keeps the stream
                // open (a client reading to the end would wait for the idle timeout).
                *this.flow = Flow::Done;
            }
            if !this.out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(take(this.out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.flow, Flow::Done) && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn take(out: &mut Vec<u8>) -> Bytes {
    Bytes::from(std::mem::take(out))
}

//! [`IdleBody`]: a non-stream upstream answer (JSON, audio) that may not stall forever.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::answer::AnswerWatch;
use super::stream::idle_elapsed;
use crate::error::BoxError;

pin_project! {
    /// An upstream body passed through untouched, aborted when no bytes arrive for the idle
    /// timeout (nothing can be added to a JSON or audio answer to say why; the client sees a
    /// broken response). See the [module docs](crate::sse).
    pub struct IdleBody<B> {
        // `None` once aborted: dropping the upstream closes its connection.
        #[pin]
        inner: Option<B>,
        // Made the first time the upstream makes us wait: an answer already in the buffer
        // (most JSON answers) costs no clock read and no `Sleep`.
        #[pin]
        idle: Option<Sleep>,
        last_activity: Instant,
        timeout: Duration,
        // Reads a JSON answer's id, model, usage and finish reasons as it passes.
        watch: Option<AnswerWatch>,
    }
}

impl<B> IdleBody<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner: Some(inner),
            idle: None,
            last_activity: Instant::now(),
            timeout,
            watch: None,
        }
    }

    /// Also reads what the answer says about itself (see [`AnswerWatch`]), recorded when it
    /// ends.
    pub(crate) fn watching(mut self, watch: AnswerWatch) -> Self {
        self.watch = Some(watch);
        self
    }
}

impl<B> fmt::Debug for IdleBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<B> Body for IdleBody<B>
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
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.last_activity = Instant::now();
                match &frame {
                    Some(Ok(frame)) => {
                        if let (Some(watch), Some(data)) = (this.watch.as_mut(), frame.data_ref()) {
                            watch.see(data);
                        }
                        // A body of known length is not polled past its last frame.
                        let ended = this
                            .inner
                            .as_ref()
                            .as_pin_ref()
                            .is_none_or(|inner| inner.is_end_stream());
                        if ended {
                            if let Some(watch) = this.watch.take() {
                                watch.finish();
                            }
                        }
                    }
                    // A failed answer says nothing reliable about itself.
                    Some(Err(_)) => *this.watch = None,
                    None => {
                        if let Some(watch) = this.watch.take() {
                            watch.finish();
                        }
                    }
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.idle.is_none() {
                    // No deadline this far off (a huge timeout): never idle.
                    let Some(deadline) = this.last_activity.checked_add(*this.timeout) else {
                        return Poll::Pending;
                    };
                    this.idle.set(Some(tokio::time::sleep_until(deadline)));
                }
                let Some(idle) = this.idle.as_mut().as_pin_mut() else {
                    return Poll::Pending;
                };
                if !idle_elapsed(idle, *this.last_activity, Some(*this.timeout), cx) {
                    return Poll::Pending;
                }
                tracing::warn!("upstream body idle for too long; aborting the answer");
                // Drop the upstream now: its connection closes.
                this.inner.set(None);
                Poll::Ready(Some(Err("upstream body idle for too long".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    struct Stalls(bool);

    impl Body for Stalls {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if std::mem::replace(&mut self.0, false) {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"a\":")))));
            }
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_aborted_after_the_idle_timeout() {
        let body = IdleBody::new(Stalls(true), Duration::from_secs(30));
        let started = Instant::now();
        assert!(body.collect().await.is_err());
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_starts_is_aborted_after_the_idle_timeout() {
        // Pending from its first poll: the timer is made then, and runs from the answer's
        // head (the body's creation), not from that first poll.
        let body = IdleBody::new(Stalls(false), Duration::from_secs(30));
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(body.collect().await.is_err());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
        assert!(waited < Duration::from_secs(31), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_past_the_clock_s_range_never_aborts() {
        let mut body = std::pin::pin!(IdleBody::new(Stalls(false), Duration::MAX));
        let year = Duration::from_secs(86_400 * 365);
        let waited = tokio::time::timeout(year, body.as_mut().frame()).await;
        assert!(
            waited.is_err(),
            "the body ended or failed instead of waiting"
        );
    }

    #[tokio::test]
    async fn a_complete_body_passes_untouched() {
        let body = IdleBody::new(crate::body::Full::new("{}"), Duration::MAX);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
    }
}

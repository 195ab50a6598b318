//! Response future of [`OpenAiErrors`](super::OpenAiErrors).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt as _, Limited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::ResponseBody;
use super::classify::{Verdict, classify, replace, with_body};
use crate::body::Full;
use crate::error::{BoxError, Error, is_rendered};

/// How much of an upstream error body is read to classify it.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// How long reading an upstream error body may take.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

pin_project! {
    /// Response future of [`OpenAiErrors`](super::OpenAiErrors).
    pub struct ResponseFuture<F, B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        // `None` when the request was answered without calling the inner service.
        #[pin]
        inner: Option<F>,
        state: State<B>,
    }
}

/// Where the future stands. Small on purpose: the success path only moves `Done` in.
enum State<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    Waiting,
    Failed(Option<Error>),
    // Boxed: only upstream error answers come here, and the reading state is large.
    Reading(Pin<Box<ReadingError<B>>>),
    Done,
}

pin_project! {
    /// An upstream error answer being read (bounded in size and time) to be classified.
    struct ReadingError<B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        collect: Collect<Limited<B>>,
        #[pin]
        deadline: Sleep,
        parts: Option<http::response::Parts>,
    }
}

impl<F, B> ResponseFuture<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    pub(super) fn new(future: F) -> Self {
        Self {
            inner: Some(future),
            state: State::Waiting,
        }
    }

    pub(super) fn failed(error: Error) -> Self {
        Self {
            inner: None,
            state: State::Failed(Some(error)),
        }
    }
}

impl<F, E, B> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state {
                State::Waiting => {
                    let Some(future) = this.inner.as_mut().as_pin_mut() else {
                        *this.state = State::Failed(Some(Error::internal()));
                        continue;
                    };
                    match ready!(future.poll(cx)) {
                        Ok(response) if !is_error(&response) || is_rendered(&response) => {
                            *this.state = State::Done;
                            return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                        }
                        Ok(response) => {
                            let (parts, body) = response.into_parts();
                            *this.state = State::Reading(Box::pin(ReadingError {
                                collect: Limited::new(body, ERROR_BODY_LIMIT).collect(),
                                deadline: tokio::time::sleep(ERROR_BODY_TIMEOUT),
                                parts: Some(parts),
                            }));
                        }
                        Err(error) => {
                            *this.state = State::Done;
                            return Poll::Ready(Ok(own(render(error.into()))));
                        }
                    }
                }
                State::Reading(reading) => {
                    let reading = reading.as_mut().project();
                    let read = match reading.collect.poll(cx) {
                        Poll::Ready(read) => Some(read),
                        Poll::Pending if reading.deadline.poll(cx).is_ready() => None,
                        Poll::Pending => return Poll::Pending,
                    };
                    let parts = reading.parts.take();
                    *this.state = State::Done;
                    let Some(parts) = parts else {
                        // Unreachable: parts are taken once, and the state moves on.
                        return Poll::Ready(Ok(own(Error::internal().into_response())));
                    };
                    return Poll::Ready(Ok(own(classified(parts, read))));
                }
                State::Failed(error) => {
                    let error = error.take().unwrap_or_else(Error::internal);
                    *this.state = State::Done;
                    return Poll::Ready(Ok(own(render(error.into()))));
                }
                State::Done => {
                    // Polled after completion: answer rather than panic.
                    return Poll::Ready(Ok(own(Error::internal().into_response())));
                }
            }
        }
    }
}

/// The answer for an upstream error whose body was read (`Some`) or timed out (`None`).
fn classified<E: Into<BoxError>>(
    parts: http::response::Parts,
    read: Option<Result<http_body_util::Collected<Bytes>, E>>,
) -> Response<Full> {
    let status = parts.status;
    match read {
        Some(Ok(collected)) => {
            let body = collected.to_bytes();
            match classify(status, &body) {
                Verdict::PassThrough => with_body(parts, body),
                Verdict::Complete(body) => with_body(parts, body),
                Verdict::Replace(error) => {
                    log_upstream_error(status, &body);
                    replace(&parts.headers, error)
                }
            }
        }
        Some(Err(cause)) => {
            let cause: BoxError = cause.into();
            tracing::warn!(%status, %cause, "upstream error body unreadable");
            replace(&parts.headers, Error::upstream_status(status))
        }
        None => {
            tracing::warn!(%status, "upstream error body timed out");
            replace(&parts.headers, Error::upstream_status(status))
        }
    }
}

fn own<B>(response: Response<Full>) -> Response<ResponseBody<B>> {
    response.map(ResponseBody::full)
}

/// Error answers, and redirects: an API client must never be sent to follow an upstream's
/// `Location` (it may point inside the provider's network or carry a token).
fn is_error<B>(response: &Response<B>) -> bool {
    let status = response.status();
    status.is_client_error() || status.is_server_error() || status.is_redirection()
}

/// Renders an inner failure: ours through the table, anything else as a fixed 500.
fn render(error: BoxError) -> Response<Full> {
    let error = match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => Error::internal().with_source(other),
    };
    let status = error.status();
    if status.is_server_error() {
        tracing::warn!(%status, code = error.code(), cause = ?std::error::Error::source(&error), "request failed");
    } else {
        tracing::debug!(%status, code = error.code(), "request refused");
    }
    error.into_response()
}

/// Logs an upstream error we replace. The body is not logged: an upstream may quote part of
/// the provider key in it (and always may in a 401).
fn log_upstream_error(status: http::StatusCode, body: &[u8]) {
    tracing::warn!(%status, body_len = body.len(), "upstream error body replaced by a fixed message");
}

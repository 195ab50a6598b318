//! Response future of [`OpenAiErrors`](super::OpenAiErrors).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt as _, Limited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::classify::{Verdict, classify, replace, with_body};
use crate::body::RouterBody;
use crate::openai_error::{BoxError, Error};

/// How much of an upstream error body is read to classify it.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// How long reading an upstream error body may take.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

pin_project! {
    /// Response future of [`OpenAiErrors`](super::OpenAiErrors).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Failed { error: Option<Error> },
        ReadingError {
            #[pin] collect: Collect<Limited<RouterBody>>,
            #[pin] deadline: Sleep,
            parts: Option<http::response::Parts>,
        },
        Done,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(super) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RouterBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RouterBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future } => match ready!(future.poll(cx)) {
                    Ok(response) if !is_error(&response) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    }
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        this.state.set(State::ReadingError {
                            collect: Limited::new(body, ERROR_BODY_LIMIT).collect(),
                            deadline: tokio::time::sleep(ERROR_BODY_TIMEOUT),
                            parts: Some(parts),
                        });
                    }
                    Err(error) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(render(error.into())));
                    }
                },
                StateProj::ReadingError {
                    collect,
                    deadline,
                    parts,
                } => {
                    let read = match collect.poll(cx) {
                        Poll::Ready(read) => Some(read),
                        Poll::Pending if deadline.poll(cx).is_ready() => None,
                        Poll::Pending => return Poll::Pending,
                    };
                    let Some(parts) = parts.take() else {
                        // Unreachable: parts are taken once, and the state moves on below.
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(Error::internal().into_response()));
                    };
                    this.state.set(State::Done);
                    let status = parts.status;
                    let response = match read {
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
                            tracing::warn!(%status, %cause, "upstream error body unreadable");
                            replace(&parts.headers, Error::upstream_status(status))
                        }
                        None => {
                            tracing::warn!(%status, "upstream error body timed out");
                            replace(&parts.headers, Error::upstream_status(status))
                        }
                    };
                    return Poll::Ready(Ok(response));
                }
                StateProj::Failed { error } => {
                    let error = error.take().unwrap_or_else(Error::internal);
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(render(error.into())));
                }
                StateProj::Done => {
                    // Polled after completion: answer rather than panic.
                    return Poll::Ready(Ok(Error::internal().into_response()));
                }
            }
        }
    }
}

/// Error answers, and redirects: an API client must never be sent to follow an upstream's
/// `Location` (it may point inside the provider's network or carry a token).
fn is_error(response: &Response<RouterBody>) -> bool {
    let status = response.status();
    status.is_client_error() || status.is_server_error() || status.is_redirection()
}

/// Renders an inner failure: ours through the table, anything else as a fixed 500.
fn render(error: BoxError) -> Response<RouterBody> {
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
    tracing::warn!(%status, body_len = body.len(), "upstream error replaced by a fixed message");
}

//! Response future of [`Resilience`](super::Resilience).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use super::body::ResponseBody;
use super::health::Health;
use super::span::AttemptTrace;
use super::walk::retry_after_of;
use super::{answered, failed_response, unanswered};
use crate::error::{Error, retryable_status};
use crate::extensions::RouteTarget;

/// The attempt loop of a planned request.
type Walk<B> = Pin<Box<dyn Future<Output = Response<ResponseBody<B>>> + Send>>;

pin_project! {
    /// Response future of [`Resilience`](super::Resilience).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Direct {
            #[pin] future: F,
            target: Option<RouteTarget>,
            // Set when the target's provider has a cooldown.
            health: Option<Arc<Health>>,
            // The attempt's span and record, closed when the answer (or failure) is in.
            attempt: Option<AttemptTrace>,
        },
        Planned { walk: Walk<B> },
        Failed { error: Option<Error> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn direct(
        future: F,
        target: RouteTarget,
        health: Option<Arc<Health>>,
        attempt: AttemptTrace,
    ) -> Self {
        Self {
            state: State::Direct {
                future,
                target: Some(target),
                health,
                attempt: Some(attempt),
            },
        }
    }

    pub(super) fn planned(walk: Walk<B>) -> Self {
        Self {
            state: State::Planned { walk },
        }
    }

    pub(super) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, B> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, Error>>,
{
    type Output = Result<Response<ResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Direct {
                future,
                target,
                health,
                attempt,
            } => {
                let outcome = {
                    let _entered = attempt.as_ref().map(|a| a.span().enter());
                    ready!(future.poll(cx))
                };
                let Some(target) = target.take() else {
                    // Polled again after it finished.
                    return Poll::Ready(Ok(unanswered(Error::internal())));
                };
                // The attempt is over: its span ends here.
                if let Some(mut attempt) = attempt.take() {
                    match &outcome {
                        Ok(response) => attempt.status(response.status()),
                        Err(error) => attempt.error(error.code().unwrap_or("upstream_error")),
                    }
                    attempt.end(true);
                }
                let response = match outcome {
                    Ok(response) => {
                        if let Some(health) = health {
                            if retryable_status(response.status()) {
                                let wait = (response.status() == StatusCode::TOO_MANY_REQUESTS)
                                    .then(|| retry_after_of(response.headers()))
                                    .flatten();
                                health.failed(&target, wait);
                            } else {
                                health.succeeded(&target);
                            }
                        }
                        let (mut parts, body) = response.into_parts();
                        answered(&mut parts.headers, &target, 1);
                        Response::from_parts(parts, ResponseBody::direct(body))
                    }
                    Err(error) => {
                        if let Some(health) = health.as_ref().filter(|_| error.is_retryable()) {
                            health.failed(&target, None);
                        }
                        failed_response(error, &target, 1)
                    }
                };
                Poll::Ready(Ok(response))
            }
            StateProj::Planned { walk } => walk.as_mut().poll(cx).map(Ok),
            StateProj::Failed { error } => {
                let error = error.take().unwrap_or_else(Error::internal);
                Poll::Ready(Ok(unanswered(error)))
            }
        }
    }
}

//! Response future of [`Auth`](super::Auth): look the key up, admit it, then call inner.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, header};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::body::{KeyGuard, ResponseBody, TokenDebit};
use super::key_store::{ApiKeyDigest, KeyStoreError};
use super::limit::{Admission, KeyLimiter};
use crate::deadline::expired;
use crate::error::Error;
use crate::extensions::Principal;
use crate::observe::RequestLog;

pin_project! {
    /// Response future of [`Auth`](super::Auth).
    pub struct ResponseFuture<S, F, L, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        L: KeyLimiter,
    {
        #[pin]
        state: State<S, F, L, ReqBody>,
        // The inner service's future, boxed: it only exists once the key is admitted, and
        // held inline it would make this future (and every one wrapping it) over a kilobyte
        // larger, copied whole each time the layers above move it. One allocation instead.
        called: Option<Pin<Box<S::Future>>>,
        admission: Option<Admission<L::Permit>>,
        debit: Option<TokenDebit>,
        // Armed only when the store or the limiter does not answer at once (the in-memory
        // ones always do), so a request that is admitted straight away costs no timer.
        deadline: Option<Pin<Box<Sleep>>>,
        wait: Duration,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, L, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        L: KeyLimiter,
    {
        Refused { error: Option<Error> },
        Lookup {
            #[pin] lookup: F,
            digest: ApiKeyDigest,
            limiter: L,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
        },
        Admit {
            #[pin] admit: L::Future,
            // Set for a key with a tokens-per-minute limit (and a request log to read usage
            // from): debits the answer's tokens when it ends.
            debit: Option<TokenDebit>,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
        },
        Called,
    }
}

impl<S, F, L, ReqBody> ResponseFuture<S, F, L, ReqBody>
where
    S: Service<Request<ReqBody>>,
    L: KeyLimiter,
{
    pub(super) fn refused(error: Error) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
            called: None,
            admission: None,
            debit: None,
            deadline: None,
            wait: Duration::ZERO,
        }
    }

    pub(super) fn lookup(
        lookup: F,
        digest: ApiKeyDigest,
        limiter: L,
        wait: Duration,
        request: Request<ReqBody>,
        inner: S,
    ) -> Self {
        Self {
            state: State::Lookup {
                lookup,
                digest,
                limiter,
                request: Some(request),
                inner: Some(inner),
            },
            called: None,
            admission: None,
            debit: None,
            deadline: None,
            wait,
        }
    }
}

impl<S, F, L, ReqBody, ResBody> Future for ResponseFuture<S, F, L, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    F: Future<Output = Result<Option<Principal>, KeyStoreError>>,
    L: KeyLimiter,
{
    type Output = Result<Response<ResponseBody<ResBody, L::Permit>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Refused { error } => {
                    let error = error.take().unwrap_or_else(Error::internal);
                    let response = error.into_response().map(ResponseBody::full);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Lookup {
                    lookup,
                    digest,
                    limiter,
                    request,
                    inner,
                } => {
                    let found = match lookup.poll(cx) {
                        Poll::Ready(found) => found,
                        Poll::Pending if expired(this.deadline, *this.wait, cx) => {
                            tracing::warn!("the key store did not answer in time");
                            this.state.set(State::Refused {
                                error: Some(Error::key_store_unavailable()),
                            });
                            continue;
                        }
                        Poll::Pending => return Poll::Pending,
                    };
                    let (Some(mut request), Some(inner)) = (request.take(), inner.take()) else {
                        this.state.set(State::Refused {
                            error: Some(Error::internal()),
                        });
                        continue;
                    };
                    let principal = match found {
                        Ok(Some(principal)) if principal.is_expired() => {
                            Err(Error::expired_api_key())
                        }
                        Ok(Some(principal)) => Ok(principal),
                        Ok(None) => {
                            let key = super::bearer_key(request.headers()).unwrap_or_default();
                            Err(Error::invalid_api_key(key))
                        }
                        Err(cause) => {
                            tracing::warn!(%cause, "the key store failed");
                            Err(Error::key_store_unavailable().with_source(cause))
                        }
                    };
                    let principal = match principal {
                        Ok(principal) => principal,
                        Err(error) => {
                            this.state.set(State::Refused { error: Some(error) });
                            continue;
                        }
                    };
                    let log = request.extensions().get::<RequestLog>();
                    if let Some(log) = log {
                        log.record_principal(&principal);
                    }
                    let debit = match (log, principal.limits().tpm) {
                        (Some(log), Some(_)) => {
                            let (limiter, digest) = (limiter.clone(), *digest);
                            let principal = principal.clone();
                            Some(TokenDebit::new(log.clone(), move |tokens| {
                                limiter.spend_tokens(&digest, &principal, tokens);
                            }))
                        }
                        _ => None,
                    };
                    // The router key stops here: nothing below may forward it.
                    request.headers_mut().remove(header::AUTHORIZATION);
                    let admit = limiter.admit(digest, &principal);
                    request.extensions_mut().insert(principal);
                    this.state.set(State::Admit {
                        admit,
                        debit,
                        request: Some(request),
                        inner: Some(inner),
                    });
                }
                StateProj::Admit {
                    admit,
                    debit,
                    request,
                    inner,
                } => {
                    let admitted = match admit.poll(cx) {
                        Poll::Ready(admitted) => admitted,
                        Poll::Pending if expired(this.deadline, *this.wait, cx) => {
                            tracing::warn!("the limiter did not answer in time");
                            this.state.set(State::Refused {
                                error: Some(Error::limits_unavailable()),
                            });
                            continue;
                        }
                        Poll::Pending => return Poll::Pending,
                    };
                    let (Some(request), Some(mut inner)) = (request.take(), inner.take()) else {
                        this.state.set(State::Refused {
                            error: Some(Error::internal()),
                        });
                        continue;
                    };
                    match admitted {
                        Ok(admission) => {
                            if admission.is_unchecked() {
                                if let Some(log) = request.extensions().get::<RequestLog>() {
                                    log.record_limits_unchecked();
                                }
                            }
                            // Admitted: the deadline covered the checks, not the answer.
                            *this.deadline = None;
                            *this.called = Some(Box::pin(inner.call(request)));
                            *this.admission = Some(admission);
                            *this.debit = debit.take();
                            this.state.set(State::Called);
                        }
                        Err(error) => this.state.set(State::Refused { error: Some(error) }),
                    }
                }
                StateProj::Called => {
                    let Some(future) = this.called.as_mut() else {
                        this.state.set(State::Refused {
                            error: Some(Error::internal()),
                        });
                        continue;
                    };
                    let response = ready!(future.as_mut().poll(cx))?;
                    let mut admission = this.admission.take().unwrap_or_default();
                    let (mut parts, body) = response.into_parts();
                    admission.write_headers(&mut parts.headers);
                    let guard = KeyGuard::new(admission.take_permit(), this.debit.take());
                    let body = ResponseBody::inner(body, guard);
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
            }
        }
    }
}

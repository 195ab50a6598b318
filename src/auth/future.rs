//! Response future of [`Auth`](super::Auth): look the key up, admit it, then call inner.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use http::{Request, Response, header};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::bearer_key;
use super::key_store::{ApiKeyDigest, KeyStoreError};
use super::limit::{Admission, KeyLimiter};
use super::principal::Principal;
use crate::body::RouterBody;
use crate::openai_error::{BoxError, Error};

pin_project! {
    /// Response future of [`Auth`](super::Auth).
    pub struct ResponseFuture<S, F, L, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        L: KeyLimiter,
    {
        #[pin]
        state: State<S, F, L, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, L, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        L: KeyLimiter,
    {
        Failed { error: Option<Error> },
        Lookup {
            #[pin] lookup: F,
            digest: ApiKeyDigest,
            limiter: L,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
        },
        Admit {
            #[pin] admit: L::Future,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
        },
        Inner { #[pin] future: S::Future, admission: Admission },
    }
}

impl<S, F, L, ReqBody> ResponseFuture<S, F, L, ReqBody>
where
    S: Service<Request<ReqBody>>,
    L: KeyLimiter,
{
    pub(super) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }

    pub(super) fn lookup(
        lookup: F,
        digest: ApiKeyDigest,
        limiter: L,
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
        }
    }
}

impl<S, F, L, ReqBody> Future for ResponseFuture<S, F, L, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<RouterBody>>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<Option<Principal>, KeyStoreError>>,
    L: KeyLimiter,
{
    type Output = Result<Response<RouterBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Failed { error } => {
                    let error = error.take().unwrap_or_else(Error::internal);
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Lookup {
                    lookup,
                    digest,
                    limiter,
                    request,
                    inner,
                } => {
                    let found = ready!(lookup.poll(cx));
                    let (Some(mut request), Some(inner)) = (request.take(), inner.take()) else {
                        this.state.set(State::Failed {
                            error: Some(Error::internal()),
                        });
                        continue;
                    };
                    let principal = match found {
                        Ok(Some(principal)) if principal.is_expired_at(SystemTime::now()) => {
                            Err(Error::expired_api_key())
                        }
                        Ok(Some(principal)) => Ok(principal),
                        Ok(None) => {
                            let key = bearer_key(request.headers()).unwrap_or_default();
                            Err(Error::invalid_api_key(key))
                        }
                        Err(cause) => Err(Error::key_store_unavailable().with_source(cause)),
                    };
                    let principal = match principal {
                        Ok(principal) => principal,
                        Err(error) => {
                            this.state.set(State::Failed { error: Some(error) });
                            continue;
                        }
                    };
                    tracing::Span::current().record("key", principal.name());
                    // The router key stops here: nothing below may forward it.
                    request.headers_mut().remove(header::AUTHORIZATION);
                    let admit = limiter.admit(digest, &principal);
                    request.extensions_mut().insert(principal);
                    this.state.set(State::Admit {
                        admit,
                        request: Some(request),
                        inner: Some(inner),
                    });
                }
                StateProj::Admit {
                    admit,
                    request,
                    inner,
                } => {
                    let admitted = ready!(admit.poll(cx));
                    let (Some(request), Some(mut inner)) = (request.take(), inner.take()) else {
                        this.state.set(State::Failed {
                            error: Some(Error::internal()),
                        });
                        continue;
                    };
                    match admitted {
                        Ok(admission) => {
                            let future = inner.call(request);
                            this.state.set(State::Inner { future, admission });
                        }
                        Err(error) => this.state.set(State::Failed { error: Some(error) }),
                    }
                }
                StateProj::Inner { future, admission } => {
                    let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                    admission.write_headers(response.headers_mut());
                    if let Some(permit) = admission.take_permit() {
                        response = response.map(|body| body.hold(permit));
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

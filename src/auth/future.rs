//! Response future of [`Auth`](super::Auth): look the key up, then call the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response, header};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::bearer_key;
use super::key_store::{KeyStoreError, Principal};
use crate::openai_error::{BoxError, Error};

pin_project! {
    /// Response future of [`Auth`](super::Auth).
    pub struct ResponseFuture<S, L, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, L, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, L, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Failed { error: Option<Error> },
        Lookup {
            #[pin] lookup: L,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
        },
        Inner { #[pin] future: S::Future },
    }
}

impl<S, L, ReqBody> ResponseFuture<S, L, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }

    pub(super) fn lookup(lookup: L, request: Request<ReqBody>, inner: S) -> Self {
        Self {
            state: State::Lookup {
                lookup,
                request: Some(request),
                inner: Some(inner),
            },
        }
    }
}

impl<S, L, ReqBody, ResBody> Future for ResponseFuture<S, L, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    L: Future<Output = Result<Option<Principal>, KeyStoreError>>,
{
    type Output = Result<Response<ResBody>, BoxError>;

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
                    request,
                    inner,
                } => {
                    let found = ready!(lookup.poll(cx));
                    let (Some(mut request), Some(mut inner)) = (request.take(), inner.take())
                    else {
                        this.state.set(State::Failed {
                            error: Some(Error::internal()),
                        });
                        continue;
                    };
                    let principal = match found {
                        Ok(Some(principal)) => principal,
                        Ok(None) => {
                            let key = bearer_key(request.headers()).unwrap_or_default();
                            let error = Error::invalid_api_key(key);
                            this.state.set(State::Failed { error: Some(error) });
                            continue;
                        }
                        Err(cause) => {
                            let error = Error::key_store_unavailable().with_source(cause);
                            this.state.set(State::Failed { error: Some(error) });
                            continue;
                        }
                    };
                    tracing::Span::current().record("key", principal.name());
                    // The router key stops here: nothing below may forward it.
                    request.headers_mut().remove(header::AUTHORIZATION);
                    request.extensions_mut().insert(principal);
                    let future = inner.call(request);
                    this.state.set(State::Inner { future });
                }
                StateProj::Inner { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
            }
        }
    }
}

//! Response future of [`Route`](super::Route): read the body, resolve, then call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::layer::Settings;
use super::prepare::prepare;
use super::{ResponseBody, json_response};
use crate::body::Full;
use crate::deadline::expired;
use crate::error::{BoxError, Error};
use crate::extensions::Endpoint;
use crate::media::ContentType;

pin_project! {
    /// Response future of [`Route`](super::Route).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<Bytes>>,
        ReqBody: Body,
        ReqBody::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, ReqBody>,
        // The inner service's future, kept out of `state`: leaving the (large) reading state
        // then copies nothing of it.
        #[pin]
        called: Option<S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<Bytes>>,
        ReqBody: Body,
        ReqBody::Error: Into<BoxError>,
    {
        Answer { response: Option<Response<Full>> },
        Reading {
            #[pin] collect: Collect<Limited<ReqBody>>,
            // Armed only if the body is not all there on the first poll.
            deadline: Option<Pin<Box<Sleep>>>,
            parts: Option<http::request::Parts>,
            endpoint: Endpoint,
            content_type: ContentType,
            inner: Option<S>,
            settings: Arc<Settings>,
        },
        Calling,
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<Bytes>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    fn answer(response: Response<Full>) -> Self {
        Self {
            state: State::Answer {
                response: Some(response),
            },
            called: None,
        }
    }

    /// Answers with JSON of the layer's own (a listing).
    pub(super) fn json(body: Bytes) -> Self {
        Self::answer(json_response(body))
    }

    /// Answers with a refusal.
    pub(super) fn error(error: Error) -> Self {
        Self::answer(error.into_response())
    }

    pub(super) fn read_body(
        request: Request<ReqBody>,
        endpoint: Endpoint,
        content_type: ContentType,
        inner: S,
        settings: Arc<Settings>,
    ) -> Self {
        let (parts, body) = request.into_parts();
        Self {
            state: State::Reading {
                collect: Limited::new(body, settings.body_limit(endpoint)).collect(),
                deadline: None,
                parts: Some(parts),
                endpoint,
                content_type,
                inner: Some(inner),
                settings,
            },
            called: None,
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<Bytes>, Response = Response<ResBody>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Answer { response } => {
                    let response = response
                        .take()
                        .unwrap_or_else(|| Error::internal().into_response());
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
                StateProj::Reading {
                    collect,
                    deadline,
                    parts,
                    endpoint,
                    content_type,
                    inner,
                    settings,
                } => {
                    let read = match collect.poll(cx) {
                        Poll::Ready(read) => read,
                        Poll::Pending if expired(deadline, settings.body_timeout, cx) => {
                            this.state.set(Self::error(Error::body_timeout()).state);
                            continue;
                        }
                        Poll::Pending => return Poll::Pending,
                    };
                    let (Some(parts), Some(mut inner)) = (parts.take(), inner.take()) else {
                        this.state.set(Self::error(Error::internal()).state);
                        continue;
                    };
                    let prepared = read
                        .map_err(|error| read_error(error, settings.body_limit(*endpoint)))
                        .and_then(|collected| {
                            let body = collected.to_bytes();
                            prepare(parts, body, *endpoint, *content_type, settings)
                        });
                    match prepared {
                        Ok(request) => {
                            this.called.set(Some(inner.call(request)));
                            this.state.set(State::Calling);
                        }
                        Err(error) => this.state.set(Self::error(error).state),
                    }
                }
                StateProj::Calling => {
                    let Some(future) = this.called.as_mut().as_pin_mut() else {
                        this.state.set(Self::error(Error::internal()).state);
                        continue;
                    };
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
            }
        }
    }
}

/// A body read failure: over the limit (413) or the client's stream broke (400).
fn read_error(error: BoxError, limit: usize) -> Error {
    if error.is::<LengthLimitError>() {
        Error::payload_too_large(limit)
    } else {
        Error::body_read().with_source(error)
    }
}

//! [`Sse`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use super::layer::{Settings, SseLayer};
use super::stream::StreamContext;
use crate::error::BoxError;
use crate::extensions::{RequestId, RouteTarget};
use crate::observe::RequestLog;

/// Wraps event-stream answers in an [`SseBody`](super::SseBody), other answers in an
/// [`IdleBody`](super::IdleBody). See the [module docs](super).
#[derive(Clone)]
pub struct Sse<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Sse<S> {
    pub(super) fn from_settings(inner: S, settings: Arc<Settings>) -> Self {
        Self { inner, settings }
    }

    /// An [`SseLayer`] with defaults.
    pub fn layer() -> SseLayer {
        SseLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Sse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sse")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Sse<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions();
        let target = extensions.get::<RouteTarget>().cloned();
        let idle_timeout = self
            .settings
            .idle_timeout(target.as_ref().map(RouteTarget::provider));
        let context = StreamContext {
            hook: self.settings.hook.clone(),
            request_id: extensions.get::<RequestId>().cloned(),
            log: extensions.get::<RequestLog>().cloned(),
            strip_injected_usage: target.as_ref().is_some_and(RouteTarget::usage_injected),
            target,
            start: Instant::now(),
            idle_timeout,
            per_provider: self
                .settings
                .varies_by_provider()
                .then(|| self.settings.clone()),
        };
        ResponseFuture::new(self.inner.call(request), context)
    }
}

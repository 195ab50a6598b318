//! [`Resilience`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::health::Health;
use super::span::AttemptTrace;
use super::walk::walk;
use crate::error::{BoxError, Error};
use crate::extensions::{RoutePlan, RouteTarget};

/// Walks each request's [`RoutePlan`]: fallbacks, retries, cooldowns. See the
/// [module docs](super).
#[derive(Clone, Debug)]
pub struct Resilience<S> {
    inner: S,
    health: Arc<Health>,
}

impl<S> Resilience<S> {
    pub(super) fn from_parts(inner: S, health: Arc<Health>) -> Self {
        Self { inner, health }
    }

    #[cfg(test)]
    pub(super) fn health(&self) -> &Arc<Health> {
        &self.health
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

impl<S, B> Service<Request<Bytes>> for Resilience<S>
where
    S: Service<Request<Bytes>, Response = Response<B>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<super::ResponseBody<B>>;
    type Error = std::convert::Infallible;
    type Future = ResponseFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Failing to become ready is answered per request (the attempt fails), never here.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut request: Request<Bytes>) -> Self::Future {
        let Some(target) = request.extensions().get::<RouteTarget>().cloned() else {
            // No route: a stack assembled without `Route` above.
            return ResponseFuture::failed(Error::internal());
        };
        let Some(plan) = request.extensions_mut().remove::<RoutePlan>() else {
            // One target, one attempt: the common case, kept to a plain call.
            let health = self.health.is_active().then(|| self.health.clone());
            let attempt = AttemptTrace::start(&target, 1, &mut request);
            let future = attempt.span().in_scope(|| self.inner.call(request));
            return ResponseFuture::direct(future, target, health, attempt);
        };
        let (parts, body) = request.into_parts();
        let walked = walk(
            self.inner.clone(),
            parts,
            body,
            target,
            plan,
            self.health.clone(),
        );
        ResponseFuture::planned(Box::pin(walked))
    }
}

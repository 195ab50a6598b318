//! A cap on the requests a router handles at once, answered with 503 `overloaded` past it.
//!
//! [`InFlightLimit`] takes a slot for each request and holds it until the response body has
//! ended (a stream counts until its last byte), so a burst of slow streams cannot take every
//! socket and buffer the process has. Past the cap a request is not queued: it is answered at
//! once with 503 `overloaded` and `retry-after: 1`, which the OpenAI SDKs retry, so a
//! fleet's load balancer or the client's backoff moves the load elsewhere (load shedding).
//! tower's `ConcurrencyLimit` waits instead, and frees its slot when the response head
//! leaves, not when a stream ends.
//!
//! # Example
//! ```
//! use ai_router::in_flight::InFlightLimitLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//! # async fn demo() -> Result<(), std::convert::Infallible> {
//! let service = ServiceBuilder::new()
//!     .layer(InFlightLimitLayer::new(1))
//!     .service_fn(|_: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::from("ok")))
//!     });
//! let first = service.clone().oneshot(http::Request::new(())).await?;
//! // The first answer's body is still held: no slot for a second request.
//! let second = service.clone().oneshot(http::Request::new(())).await?;
//! assert_eq!(second.status(), 503);
//! drop(first);
//! assert_eq!(service.oneshot(http::Request::new(())).await?.status(), 200);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::Error;

/// Adds [`InFlightLimit`]. See the module docs.
#[derive(Clone, Debug)]
pub struct InFlightLimitLayer {
    /// `None`: no cap (the router's default), every request passes.
    slots: Option<Arc<Semaphore>>,
    max: usize,
}

impl InFlightLimitLayer {
    /// At most `max` requests in flight at once, across every clone of the service.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Some(Arc::new(Semaphore::new(max))),
            max,
        }
    }

    /// No cap: every request passes (what a router built without
    /// [`max_in_flight`](crate::AiRouterBuilder::max_in_flight) does).
    pub fn unlimited() -> Self {
        Self {
            slots: None,
            max: usize::MAX,
        }
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit {
            inner,
            slots: self.slots.clone(),
            max: self.max,
        }
    }
}

/// Caps the requests in flight; sheds the rest with 503 `overloaded`. See the module docs.
#[derive(Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    slots: Option<Arc<Semaphore>>,
    max: usize,
}

impl<S> InFlightLimit<S> {
    /// How many requests are in flight now (0 when there is no cap to count against).
    pub fn in_flight(&self) -> usize {
        self.slots.as_ref().map_or(0, |slots| {
            self.max.saturating_sub(slots.available_permits())
        })
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

impl<S: fmt::Debug> fmt::Debug for InFlightLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightLimit")
            .field("inner", &self.inner)
            .field("max", &self.max)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InFlightLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let permit = match &self.slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::warn!(max = self.max, "requests in flight at the cap; shedding");
                    return ResponseFuture { state: State::Shed };
                }
            },
        };
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(request),
                permit,
            },
        }
    }
}

pin_project! {
    /// Response future of [`InFlightLimit`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F, permit: Option<OwnedSemaphorePermit> },
        Shed,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future, permit } => {
                let response = ready!(future.poll(cx))?;
                let permit = permit.take();
                Poll::Ready(Ok(response.map(|body| ResponseBody::inner(body, permit))))
            }
            StateProj::Shed => {
                let response = Error::overloaded().into_response();
                Poll::Ready(Ok(response.map(ResponseBody::full)))
            }
        }
    }
}

/// Response body of [`InFlightLimit`]: the inner body holding its slot until it ends, or the
/// 503. See the module docs.
pub type ResponseBody<B> = crate::body::Guarded<B, OwnedSemaphorePermit>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn slots_are_held_until_the_body_ends_and_shed_past_the_cap() {
        let layer = InFlightLimitLayer::new(2);
        let service = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(http_body_util::Full::<Bytes>::from("ok")))
            });
        let a = service.clone().oneshot(Request::new(())).await.unwrap();
        let b = service.clone().oneshot(Request::new(())).await.unwrap();
        let shed = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.headers()["retry-after"], "1");
        let json: serde_json::Value =
            serde_json::from_slice(&shed.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(json["error"]["code"], "overloaded");
        // Reading one answer to its end frees its slot, even before it is dropped.
        let mut a = a.into_body();
        while a.frame().await.is_some() {}
        let c = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(c.status(), 200);
        drop((b, c, a));
        assert_eq!(
            service.oneshot(Request::new(())).await.unwrap().status(),
            200
        );
    }
}

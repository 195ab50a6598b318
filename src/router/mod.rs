//! [`AiRouter`]: the composed stack, and the builder that is the only place knowing its order.
//!
//! Outer to inner:
//!
//! | layer | adds / reads | answers on its own |
//! |---|---|---|
//! | [`SetRequestId`] | adds [`RequestId`] and [`RequestLog`]; opens the request span; observes each request to its end | - |
//! | [`InFlightLimit`] | - | 503 `overloaded` past [`max_in_flight`](AiRouterBuilder::max_in_flight) (off by default) |
//! | [`OpenAiErrors`] | - | renders every failure below as an OpenAI error; `Error = Infallible` |
//! | [`Auth`] | adds [`Principal`]; removes `Authorization`; per-key limits | 401, 429, 503 (key store, limiter) |
//! | [`Route`] | reads the body (bounded), adds [`RouteTarget`], rewrites `model`, enforces the allow-list | `GET /models`, 400, 403, 404, 405, 408, 413 |
//! | [`Sse`] | reads `RouteTarget`; wraps event streams (pass-through, usage, idle timeout, error frame) | 502 (a stream request answered without a stream) |
//! | [`Resilience`] | reads `RouteTarget`, `RoutePlan`; walks the plan: fallbacks, retries, cooldowns, before the first byte | the last failure, when every attempt fails |
//! | [`Providers`] | reads `RouteTarget`; calls the provider's upstream | 502, 503, 504 (as errors `OpenAiErrors` renders) |
//!
//! Auth runs before the body is read, so a rejected request costs no buffering. The request
//! body is kept as `Bytes` below `Route`, so retries and fallbacks can resend it. Each layer
//! answers its own refusals from the error table and owns the body of its answers; the
//! composed body is [`RouterBody`]. Bodies are never boxed on the way (the large state inside
//! some is, once per request, so that the answers and futures each layer moves stay small);
//! services are, once, in the provider set.
//!
//! [`RequestId`]: crate::extensions::RequestId
//! [`RequestLog`]: crate::observe::RequestLog
//! [`Principal`]: crate::extensions::Principal
//! [`RouteTarget`]: crate::extensions::RouteTarget
//!
//! # Example
//! ```no_run
//! use ai_router::AiRouter;
//! use ai_router::auth::{MemoryKeyStore, Principal};
//! use ai_router::provider::HttpProvider;
//!
//! # fn demo() -> Result<(), ai_router::BuildError> {
//! let router = AiRouter::builder()
//!     .mount_path("/v3/router")
//!     .keys(MemoryKeyStore::new().with_key("sk-router-dev", Principal::new("dev")))
//!     .provider("openai", HttpProvider::builder("https://api.openai.com/v1").api_key("sk-...").build()?)
//!     .models("openai", ["gpt-4o-mini"])
//!     .alias("fast", ["openai/gpt-4o-mini"])
//!     .build()?;
//! # let _ = router; Ok(()) }
//! ```

mod builder;
mod reload;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_service::Service;

pub use self::builder::AiRouterBuilder;
pub use self::reload::{ReloadHandle, ReloadableRouter};
use crate::auth::{self, Auth, ConcurrencyPermit, InProcessLimiter, KeyLimiter, KeyStore};
use crate::error::BoxError;
pub use crate::error::BuildError;
use crate::in_flight::{self, InFlightLimit};
use crate::openai_errors::{self, OpenAiErrors};
use crate::provider::{Providers, UpstreamBody};
use crate::request_id::{self, SetRequestId};
use crate::resilience::{self, Resilience};
use crate::route::{self, Route};
use crate::sse::{self, Sse};

type Stack<K, L> =
    SetRequestId<InFlightLimit<OpenAiErrors<Auth<Route<Sse<Resilience<Providers>>>, K, L>>>>;

/// The composed body, layer by layer from the outside in.
type StackBody<P> = request_id::ResponseBody<
    in_flight::ResponseBody<
        openai_errors::ResponseBody<
            auth::ResponseBody<
                route::ResponseBody<sse::ResponseBody<resilience::ResponseBody<UpstreamBody>>>,
                P,
            >,
        >,
    >,
>;

pin_project! {
    /// The response body of [`AiRouter`]: answers the router wrote itself, and upstream
    /// answers streamed through frame by frame (never collected). `P` is the limiter's permit,
    /// held until the body ends.
    pub struct RouterBody<P = ConcurrencyPermit> {
        #[pin]
        inner: StackBody<P>,
    }
}

impl<P> fmt::Debug for RouterBody<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBody").finish_non_exhaustive()
    }
}

impl<P> Body for RouterBody<P> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The OpenAI-compatible router: a `Service` for any hyper/axum/tonic host.
///
/// `Clone + Send + Sync`, `Error = Infallible`; takes any request body and answers
/// `Response<RouterBody>`. Build it with [`AiRouter::builder`]. See the module docs.
pub struct AiRouter<K = crate::auth::MemoryKeyStore, L = InProcessLimiter> {
    stack: Stack<K, L>,
}

impl<K: Clone, L: Clone> Clone for AiRouter<K, L> {
    fn clone(&self) -> Self {
        Self {
            stack: self.stack.clone(),
        }
    }
}

impl<K, L> fmt::Debug for AiRouter<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AiRouter").finish_non_exhaustive()
    }
}

impl AiRouter {
    /// A builder with no keys, providers or aliases yet.
    pub fn builder() -> AiRouterBuilder<(), InProcessLimiter> {
        AiRouterBuilder::new()
    }
}

impl<K, L, B> Service<Request<B>> for AiRouter<K, L>
where
    K: KeyStore,
    L: KeyLimiter,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<RouterBody<L::Permit>>;
    type Error = Infallible;
    type Future = ResponseFuture<K, L, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<B>>::poll_ready(&mut self.stack, cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.stack.call(request),
        }
    }
}

type StackFuture<K, L, B> = request_id::ResponseFuture<
    in_flight::ResponseFuture<
        openai_errors::ResponseFuture<
            auth::ResponseFuture<Route<Sse<Resilience<Providers>>>, <K as KeyStore>::Future, L, B>,
            auth::ResponseBody<
                route::ResponseBody<sse::ResponseBody<resilience::ResponseBody<UpstreamBody>>>,
                <L as KeyLimiter>::Permit,
            >,
        >,
    >,
>;

pin_project! {
    /// Response future of [`AiRouter`].
    pub struct ResponseFuture<K, L, B>
    where
        K: KeyStore,
        L: KeyLimiter,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        inner: StackFuture<K, L, B>,
    }
}

impl<K, L, B> Future for ResponseFuture<K, L, B>
where
    K: KeyStore,
    L: KeyLimiter,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<RouterBody<L::Permit>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map(|result| result.map(|response| response.map(|inner| RouterBody { inner })))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::MemoryKeyStore;

    #[test]
    fn the_router_and_its_future_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        fn assert_send<T: Send + 'static>() {}
        assert_send_sync::<AiRouter>();
        assert_send::<ResponseFuture<MemoryKeyStore, InProcessLimiter, http_body_util::Full<Bytes>>>(
        );
        assert_send::<ResponseFuture<MemoryKeyStore, InProcessLimiter, hyper::body::Incoming>>();
        assert_send::<RouterBody>();
    }

    #[test]
    fn the_future_and_the_answer_each_layer_moves_stay_small() {
        // Each layer moves them whole as it wraps them (a kilobyte more is a kilobyte more to
        // copy several times per request): large state inside is boxed. 712 and 424 bytes
        // when written; the bounds leave room for the toolchain's layout choices.
        type Future = ResponseFuture<MemoryKeyStore, InProcessLimiter, hyper::body::Incoming>;
        let future = std::mem::size_of::<Future>();
        let answer = std::mem::size_of::<Response<RouterBody>>();
        assert!(future <= 1024, "the router's future is {future} bytes");
        assert!(answer <= 640, "the router's answer is {answer} bytes");
    }

    #[tokio::test]
    async fn routers_built_with_one_in_flight_layer_share_its_slots() {
        use tower::ServiceExt as _;
        let limit = crate::in_flight::InFlightLimitLayer::new(1);
        let build = || {
            AiRouter::builder()
                .keys(MemoryKeyStore::new())
                .in_flight_limit(limit.clone())
                .build()
                .unwrap()
        };
        let (old, new) = (build(), build());
        let request = || http::Request::new(http_body_util::Empty::<Bytes>::new());
        // A 401 whose body is not read yet is still in flight on the old router.
        let held = old.oneshot(request()).await.unwrap();
        assert_eq!(held.status(), 401);
        let shed = new.clone().oneshot(request()).await.unwrap();
        assert_eq!(shed.status(), 503);
        drop(held);
        let served = new.oneshot(request()).await.unwrap();
        assert_eq!(served.status(), 401);
    }

    #[test]
    fn models_for_unknown_providers_are_refused() {
        let error = AiRouter::builder()
            .keys(MemoryKeyStore::new())
            .models("ghost", ["m"])
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("ghost"));
    }
}

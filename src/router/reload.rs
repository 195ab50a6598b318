//! [`ReloadableRouter`]: an [`AiRouter`] whose configuration is swapped while it serves, and
//! its [`ReloadHandle`].

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{AiRouter, ResponseFuture, RouterBody};
use crate::auth::{InProcessLimiter, KeyLimiter, KeyStore, MemoryKeyStore};
use crate::error::BoxError;

/// An [`AiRouter`] that can be replaced while it serves: a `Service` with the same requests,
/// answers and future, which hands each request to the router current at its call.
///
/// `Clone + Send + Sync`; clones serve the same (swappable) router. Swap it through a
/// [`ReloadHandle`] ([`handle`](Self::handle)).
///
/// Keys, aliases, providers and limits change without a restart and without dropping
/// traffic: build a new [`AiRouter`] and hand it to [`ReloadHandle::reload`]. The swap is one
/// atomic store (`arc-swap`); each request loads the router serving at that moment once, at
/// its [`call`](tower_service::Service::call), and is served by it to its end: a request or a
/// stream in flight finishes on the configuration it started with, while the next request,
/// on the same keep-alive connection or another, gets the new one. The old router is dropped
/// when its last request ends.
///
/// # Limiter state
///
/// Each [`AiRouterBuilder`](crate::AiRouterBuilder) makes a fresh [`InProcessLimiter`]: a
/// router built with it starts every key's `rpm` window anew and forgets the concurrency slots
/// held. To keep them across a reload, build every router with the same limiter instance
/// ([`limiter(limiter.clone())`](crate::AiRouterBuilder::limiter)): clones of an
/// [`InProcessLimiter`] share their state, kept by key digest, and a key whose limits changed
/// keeps the part that did not change (a new `max_concurrent` keeps the `rpm` window). A key
/// removed by a reload is refused from then on; its state stays in the limiter.
///
/// What else lives in a router starts anew with it: provider cooldowns, round-robin turns and
/// the connection pools. Share the in-flight cap the same way
/// ([`in_flight_limit`](crate::AiRouterBuilder::in_flight_limit) with clones of one
/// [`InFlightLimitLayer`](crate::in_flight::InFlightLimitLayer); with
/// [`max_in_flight`](crate::AiRouterBuilder::max_in_flight), each router counts its own
/// requests), and an [`Observer`](crate::observe::Observer) to keep one set of metrics.
///
/// # Readiness
///
/// Every layer of [`AiRouter`] is always ready (the provider set drives each provider's
/// readiness per call), so [`ReloadableRouter`] is too: it calls the router it loads without
/// polling it ready first. A test keeps that true.
///
/// # Example
/// ```
/// use ai_router::auth::{InProcessLimiter, MemoryKeyStore, Principal};
/// use ai_router::{AiRouter, ReloadableRouter};
/// use tower::ServiceExt as _;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// // One limiter for every router this process builds: rpm windows survive reloads.
/// let limiter = InProcessLimiter::new();
/// let build = |keys: MemoryKeyStore| {
///     AiRouter::builder().keys(keys).limiter(limiter.clone()).build()
/// };
/// let router = ReloadableRouter::new(build(
///     MemoryKeyStore::new().with_key("sk-team-a", Principal::new("team-a").rpm(1)),
/// )?);
/// let handle = router.handle(); // e.g. moved into a SIGHUP task
///
/// let request = |key: &str| {
///     http::Request::get("/models")
///         .header("authorization", format!("Bearer {key}"))
///         .body(http_body_util::Empty::<bytes::Bytes>::new())
/// };
/// assert_eq!(router.clone().oneshot(request("sk-team-a")?).await?.status(), 200);
///
/// // team-a's allow-list changes, and team-b arrives.
/// handle.reload(build(
///     MemoryKeyStore::new()
///         .with_key("sk-team-a", Principal::new("team-a").rpm(1).allow_models(["fast"]))
///         .with_key("sk-team-b", Principal::new("team-b")),
/// )?);
/// assert_eq!(router.clone().oneshot(request("sk-team-b")?).await?.status(), 200);
/// // team-a spent its one request a minute before the reload.
/// assert_eq!(router.clone().oneshot(request("sk-team-a")?).await?.status(), 429);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub struct ReloadableRouter<K = MemoryKeyStore, L = InProcessLimiter> {
    current: Arc<ArcSwap<AiRouter<K, L>>>,
}

impl<K, L> ReloadableRouter<K, L> {
    /// Serves `router` until a reload replaces it.
    pub fn new(router: AiRouter<K, L>) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(router)),
        }
    }

    /// A handle that swaps the router these clones serve.
    pub fn handle(&self) -> ReloadHandle<K, L> {
        ReloadHandle {
            current: self.current.clone(),
        }
    }
}

impl<K, L> Clone for ReloadableRouter<K, L> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
        }
    }
}

impl<K, L> fmt::Debug for ReloadableRouter<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableRouter").finish_non_exhaustive()
    }
}

impl<K, L, B> Service<Request<B>> for ReloadableRouter<K, L>
where
    K: KeyStore,
    L: KeyLimiter,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<RouterBody<L::Permit>>;
    type Error = Infallible;
    type Future = ResponseFuture<K, L, B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every router is always ready (see `# Readiness` above): nothing to wait for, whichever
        // serves the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // One load per request; the future owns what it needs of that router from here on,
        // so a reload cannot reach it.
        let mut router = AiRouter::clone(&self.current.load());
        router.call(request)
    }
}

/// Swaps the router a [`ReloadableRouter`] (and its clones) serves. Cheap to clone,
/// `Send + Sync`.
pub struct ReloadHandle<K = MemoryKeyStore, L = InProcessLimiter> {
    current: Arc<ArcSwap<AiRouter<K, L>>>,
}

impl<K, L> ReloadHandle<K, L> {
    /// Serves `router` from the next request on; requests already called finish on the one
    /// they started with. Build it with the running router's limiter to keep its state (see
    /// [`ReloadableRouter`]).
    pub fn reload(&self, router: AiRouter<K, L>) {
        self.current.store(Arc::new(router));
    }
}

impl<K, L> Clone for ReloadHandle<K, L> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
        }
    }
}

impl<K, L> fmt::Debug for ReloadHandle<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadHandle").finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::task::Waker;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Empty};
    use tower::ServiceExt as _;

    use super::*;
    use crate::auth::Principal;

    fn keys(name: &str) -> MemoryKeyStore {
        MemoryKeyStore::new().with_key(&format!("sk-{name}"), Principal::new(name))
    }

    fn models(key: &str) -> Request<Empty<Bytes>> {
        Request::get("/models")
            .header("authorization", format!("Bearer sk-{key}"))
            .body(Empty::new())
            .unwrap()
    }

    #[test]
    fn the_reloadable_router_and_its_handle_are_send_sync_and_clone() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<ReloadableRouter>();
        assert_send_sync::<ReloadHandle>();
    }

    #[test]
    fn every_router_is_ready_at_once() {
        // `ReloadableRouter::call` relies on it: a layer that can be pending would need its
        // router polled ready in the future instead.
        let mut router = AiRouter::builder().keys(keys("a")).build().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let ready = Service::<Request<Empty<Bytes>>>::poll_ready(&mut router, &mut cx);
        assert!(matches!(ready, Poll::Ready(Ok(()))));
        let limited = AiRouter::builder()
            .keys(keys("a"))
            .max_in_flight(1)
            .build()
            .unwrap();
        let ready = Service::<Request<Empty<Bytes>>>::poll_ready(&mut limited.clone(), &mut cx);
        assert!(matches!(ready, Poll::Ready(Ok(()))));
    }

    #[tokio::test]
    async fn a_reload_serves_the_next_call_and_not_one_already_made() {
        let router = ReloadableRouter::new(AiRouter::builder().keys(keys("a")).build().unwrap());
        let handle = router.handle();
        // Called before the reload, awaited after it: served by the first router.
        let called = router.clone().call(models("a"));
        handle.reload(AiRouter::builder().keys(keys("b")).build().unwrap());
        assert_eq!(called.await.unwrap().status(), 200);
        let after = router.clone().oneshot(models("a")).await.unwrap();
        assert_eq!(after.status(), 401);
        let after = router.clone().oneshot(models("b")).await.unwrap();
        assert_eq!(after.status(), 200);
        let body = after.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(br#"{"object":"list""#), "{body:?}");
    }

    #[tokio::test]
    async fn the_shared_limiter_keeps_a_key_window_across_reloads() {
        let limiter = InProcessLimiter::new();
        let build = |principal: Principal| {
            AiRouter::builder()
                .keys(MemoryKeyStore::new().with_key("sk-a", principal))
                .limiter(limiter.clone())
                .build()
                .unwrap()
        };
        let router = ReloadableRouter::new(build(Principal::new("a").rpm(1)));
        let first = router.clone().oneshot(models("a")).await.unwrap();
        assert_eq!(first.status(), 200);
        router
            .handle()
            .reload(build(Principal::new("a").rpm(1).allow_models(["x/*"])));
        let second = router.clone().oneshot(models("a")).await.unwrap();
        assert_eq!(second.status(), 429);
        // A fresh limiter (the builder's default) would have forgotten the window.
        router.handle().reload(
            AiRouter::builder()
                .keys(MemoryKeyStore::new().with_key("sk-a", Principal::new("a").rpm(1)))
                .build()
                .unwrap(),
        );
        let fresh = router.clone().oneshot(models("a")).await.unwrap();
        assert_eq!(fresh.status(), 200);
    }
}

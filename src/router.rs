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
//! | [`Providers`] | reads `RouteTarget`; calls the provider's upstream | 502, 503, 504 (as errors `OpenAiErrors` renders) |
//!
//! Auth runs before the body is read, so a rejected request costs no buffering. The request
//! body is kept as `Bytes` below `Route`, so retries and fallbacks can resend it. Each layer
//! answers its own refusals from the error table and owns the body of its answers; the
//! composed body is [`RouterBody`]. Bodies are never boxed on the way; services are, once, in
//! the provider set.
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

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer as _;
use tower_service::Service;

use crate::auth::{
    self, Auth, AuthLayer, ConcurrencyPermit, InProcessLimiter, KeyLimiter, KeyStore,
};
use crate::error::BoxError;
pub use crate::error::BuildError;
use crate::extensions::Endpoint;
use crate::in_flight::{self, InFlightLimit, InFlightLimitLayer};
use crate::observe::Observer;
use crate::openai_errors::{self, OpenAiErrors, OpenAiErrorsLayer};
use crate::provider::{Providers, UpstreamBody};
use crate::request_id::{self, SetRequestId, SetRequestIdLayer};
use crate::route::{self, Route, RouteLayer, RouteTable, RouteTableBuilder};
use crate::sse::{self, OnUsage, Sse, SseLayer, StreamSettings};

type Stack<K, L> = SetRequestId<InFlightLimit<OpenAiErrors<Auth<Route<Sse<Providers>>, K, L>>>>;

/// The composed body, layer by layer from the outside in.
type StackBody<P> = request_id::ResponseBody<
    in_flight::ResponseBody<
        openai_errors::ResponseBody<
            auth::ResponseBody<route::ResponseBody<sse::ResponseBody<UpstreamBody>>, P>,
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
        AiRouterBuilder {
            keys: (),
            limiter: InProcessLimiter::new(),
            check_deadline: None,
            providers: Providers::new(),
            table: RouteTable::builder(),
            default_models: Vec::new(),
            endpoint_limits: Vec::new(),
            inject_usage: Vec::new(),
            body_limit: None,
            body_timeout: None,
            mount_path: None,
            streams: SseLayer::new(),
            observe: SetRequestIdLayer::new(),
            in_flight: InFlightLimitLayer::unlimited(),
        }
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
            auth::ResponseFuture<Route<Sse<Providers>>, <K as KeyStore>::Future, L, B>,
            auth::ResponseBody<
                route::ResponseBody<sse::ResponseBody<UpstreamBody>>,
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

/// Builds an [`AiRouter`]; `K` is the key store once [`keys`](AiRouterBuilder::keys) is set,
/// `L` the limiter ([`InProcessLimiter`] unless [`limiter`](AiRouterBuilder::limiter) says
/// otherwise).
#[must_use]
pub struct AiRouterBuilder<K, L = InProcessLimiter> {
    keys: K,
    limiter: L,
    check_deadline: Option<Duration>,
    providers: Providers,
    table: RouteTableBuilder,
    default_models: Vec<(Endpoint, String)>,
    endpoint_limits: Vec<(Endpoint, usize)>,
    inject_usage: Vec<(String, bool)>,
    body_limit: Option<usize>,
    body_timeout: Option<Duration>,
    mount_path: Option<String>,
    streams: SseLayer,
    observe: SetRequestIdLayer,
    in_flight: InFlightLimitLayer,
}

impl<K, L> AiRouterBuilder<K, L> {
    /// The router keys: a [`MemoryKeyStore`](crate::auth::MemoryKeyStore) or any [`KeyStore`].
    pub fn keys<K2: KeyStore>(self, keys: K2) -> AiRouterBuilder<K2, L> {
        AiRouterBuilder {
            keys,
            limiter: self.limiter,
            check_deadline: self.check_deadline,
            providers: self.providers,
            table: self.table,
            default_models: self.default_models,
            endpoint_limits: self.endpoint_limits,
            inject_usage: self.inject_usage,
            body_limit: self.body_limit,
            body_timeout: self.body_timeout,
            mount_path: self.mount_path,
            streams: self.streams,
            observe: self.observe,
            in_flight: self.in_flight,
        }
    }

    /// The per-key limiter ([`InProcessLimiter`] by default): any [`KeyLimiter`], e.g. one
    /// shared by a fleet of routers.
    pub fn limiter<L2: KeyLimiter>(self, limiter: L2) -> AiRouterBuilder<K, L2> {
        AiRouterBuilder {
            keys: self.keys,
            limiter,
            check_deadline: self.check_deadline,
            providers: self.providers,
            table: self.table,
            default_models: self.default_models,
            endpoint_limits: self.endpoint_limits,
            inject_usage: self.inject_usage,
            body_limit: self.body_limit,
            body_timeout: self.body_timeout,
            mount_path: self.mount_path,
            streams: self.streams,
            observe: self.observe,
            in_flight: self.in_flight,
        }
    }

    /// How long the key lookup and the limit check may take together (default 5 s); past it,
    /// 503.
    pub fn check_deadline(mut self, deadline: Duration) -> Self {
        self.check_deadline = Some(deadline);
        self
    }

    /// Adds a provider: model ids `name/...` go to `service` (usually an
    /// [`HttpProvider`](crate::provider::HttpProvider)).
    pub fn provider<S>(mut self, name: impl Into<String>, service: S) -> Self
    where
        S: Service<Request<Bytes>, Response = Response<UpstreamBody>, Error = crate::Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let name = name.into();
        self.providers = self.providers.with(name.as_str(), service);
        self.table = self.table.provider(name, [] as [String; 0]);
        self
    }

    /// The models `GET /models` lists for provider `name` (as `name/<id>`).
    pub fn models<I, M>(mut self, provider: impl Into<String>, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.table = self.table.models(provider, models);
        self
    }

    /// An alias with its ordered `provider/model` targets.
    pub fn alias<I, M>(mut self, name: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.table = self.table.alias(name, targets);
        self
    }

    /// Whether provider `name` routes any model id (the default) or only its listed
    /// [`models`](Self::models); unlisted ids are then 404 `model_not_found`.
    pub fn allow_any_model(mut self, provider: impl Into<String>, allow: bool) -> Self {
        self.table = self.table.allow_any_model(provider, allow);
        self
    }

    /// The model (an alias or `provider/model`) used when a request to `endpoint` has none;
    /// only for endpoints where OpenAI makes `model` optional (images, moderations,
    /// responses). Without one, such a request is a 400 naming `model`.
    pub fn default_model(mut self, endpoint: Endpoint, model: impl Into<String>) -> Self {
        self.default_models.push((endpoint, model.into()));
        self
    }

    /// The largest request body read, in bytes, for every endpoint without its own limit
    /// (defaults: 32 MiB, 64 MiB for image uploads); larger ones get 413.
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = Some(limit);
        self
    }

    /// How long a client has to send its whole request body (default 5 minutes); past it,
    /// 408 `request_timeout`.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = Some(timeout);
        self
    }

    /// The largest request body read for one endpoint.
    pub fn endpoint_body_limit(mut self, endpoint: Endpoint, limit: usize) -> Self {
        self.endpoint_limits.push((endpoint, limit));
        self
    }

    /// How long a stream may send nothing before the router ends it with an error frame
    /// (default 5 minutes), for providers without their own [`StreamSettings`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.streams = self.streams.idle_timeout(timeout);
        self
    }

    /// Stream settings for provider `name`: its idle timeout, and whether usage is asked for
    /// on its chat streams.
    pub fn stream_settings(mut self, name: impl Into<String>, settings: StreamSettings) -> Self {
        let name = name.into();
        self.inject_usage
            .push((name.clone(), settings.injects_usage()));
        self.streams = self.streams.provider(name, settings);
        self
    }

    /// At most `max` requests in flight at once (a stream counts until its last byte); past it,
    /// requests are shed at once with 503 `overloaded` and `retry-after` (see
    /// [`in_flight`](mod@crate::in_flight)). Default: no cap.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.in_flight = InFlightLimitLayer::new(max);
        self
    }

    /// Hands a summary of every request to `observer` when its response head leaves and when
    /// it is over (default: [`LogRequests`](crate::observe::LogRequests), a `tracing` event):
    /// an [`AccessLog`](crate::observe::AccessLog), metrics, usage records.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observe = self.observe.observer(observer);
        self
    }

    /// The hook called once per finished stream with its usage and outcome (default: a log
    /// line).
    pub fn on_usage(mut self, hook: impl OnUsage) -> Self {
        self.streams = self.streams.on_usage(hook);
        self
    }

    /// The path the router is served under, e.g. `/v3/router`: stripped when a request path
    /// starts with it (plain hyper), and still right when the host strips it (axum
    /// `nest_service`).
    pub fn mount_path(mut self, mount: impl Into<String>) -> Self {
        self.mount_path = Some(mount.into());
        self
    }
}

impl<K: KeyStore, L: KeyLimiter> AiRouterBuilder<K, L> {
    /// Checks the configuration and composes the stack.
    pub fn build(self) -> Result<AiRouter<K, L>, BuildError> {
        let table = self.table.build()?;
        let mut route = RouteLayer::new(table);
        if let Some(limit) = self.body_limit {
            route = route.body_limit(limit);
        }
        if let Some(timeout) = self.body_timeout {
            route = route.body_timeout(timeout);
        }
        for (endpoint, limit) in self.endpoint_limits {
            route = route.endpoint_body_limit(endpoint, limit);
        }
        for (endpoint, model) in self.default_models {
            route = route.default_model(endpoint, model)?;
        }
        if let Some(mount) = self.mount_path {
            route = route.mount_path(mount);
        }
        for (provider, inject) in self.inject_usage {
            route = route.inject_usage(provider, inject);
        }
        let mut auth = AuthLayer::new(self.keys).limiter(self.limiter);
        if let Some(deadline) = self.check_deadline {
            auth = auth.deadline(deadline);
        }
        let stack = self.observe.layer(
            self.in_flight.layer(
                OpenAiErrorsLayer::new()
                    .layer(auth.layer(route.layer(self.streams.layer(self.providers)))),
            ),
        );
        Ok(AiRouter { stack })
    }
}

impl<K, L> fmt::Debug for AiRouterBuilder<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AiRouterBuilder")
            .field("providers", &self.providers)
            .field("body_limit", &self.body_limit)
            .field("mount_path", &self.mount_path)
            .finish_non_exhaustive()
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
    fn models_for_unknown_providers_are_refused() {
        let error = AiRouter::builder()
            .keys(MemoryKeyStore::new())
            .models("ghost", ["m"])
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("ghost"));
    }
}

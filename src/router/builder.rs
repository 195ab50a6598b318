//! [`AiRouterBuilder`]: the one place that puts the layers in their order.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer as _;
use tower_service::Service;

use super::AiRouter;
use crate::auth::{AuthLayer, InProcessLimiter, KeyLimiter, KeyStore};
use crate::error::BuildError;
use crate::extensions::Endpoint;
use crate::in_flight::InFlightLimitLayer;
use crate::observe::Observer;
use crate::openai_errors::OpenAiErrorsLayer;
use crate::provider::{Providers, UpstreamBody};
use crate::request_id::SetRequestIdLayer;
use crate::resilience::{Cooldown, ResilienceLayer};
use crate::route::{AliasPolicy, RouteLayer, RouteTable, RouteTableBuilder};
use crate::sse::{OnUsage, SseLayer, StreamSettings};

/// Builds an [`AiRouter`]; `K` is the key store once [`keys`](AiRouterBuilder::keys) is set,
/// `L` the limiter ([`InProcessLimiter`] unless [`limiter`](AiRouterBuilder::limiter) says
/// otherwise).
#[must_use]
pub struct AiRouterBuilder<K, L = InProcessLimiter> {
    keys: K,
    limiter: L,
    /// Everything that does not change the builder's type.
    rest: Rest,
}

/// The builder's settings besides the key store and the limiter (so the methods that change
/// those carry the rest over in one move).
struct Rest {
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
    resilience: ResilienceLayer,
}

impl AiRouterBuilder<(), InProcessLimiter> {
    pub(super) fn new() -> Self {
        Self {
            keys: (),
            limiter: InProcessLimiter::new(),
            rest: Rest {
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
                resilience: ResilienceLayer::new(),
            },
        }
    }
}

impl<K, L> AiRouterBuilder<K, L> {
    /// The router keys: a [`MemoryKeyStore`](crate::auth::MemoryKeyStore) or any [`KeyStore`].
    pub fn keys<K2: KeyStore>(self, keys: K2) -> AiRouterBuilder<K2, L> {
        AiRouterBuilder {
            keys,
            limiter: self.limiter,
            rest: self.rest,
        }
    }

    /// The per-key limiter ([`InProcessLimiter`] by default): any [`KeyLimiter`], e.g. one
    /// shared by a fleet of routers.
    pub fn limiter<L2: KeyLimiter>(self, limiter: L2) -> AiRouterBuilder<K, L2> {
        AiRouterBuilder {
            keys: self.keys,
            limiter,
            rest: self.rest,
        }
    }

    /// How long the key lookup and the limit check may take together (default 5 s); past it,
    /// 503.
    pub fn check_deadline(mut self, deadline: Duration) -> Self {
        self.rest.check_deadline = Some(deadline);
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
        self.rest.providers = self.rest.providers.with(name.as_str(), service);
        self.rest.table = self.rest.table.provider(name, [] as [String; 0]);
        self
    }

    /// The models `GET /models` lists for provider `name` (as `name/<id>`).
    pub fn models<I, M>(mut self, provider: impl Into<String>, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.rest.table = self.rest.table.models(provider, models);
        self
    }

    /// An alias with its ordered `provider/model` targets.
    pub fn alias<I, M>(mut self, name: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.rest.table = self.rest.table.alias(name, targets);
        self
    }

    /// Whether provider `name` routes any model id (the default) or only its listed
    /// [`models`](Self::models); unlisted ids are then 404 `model_not_found`.
    pub fn allow_any_model(mut self, provider: impl Into<String>, allow: bool) -> Self {
        self.rest.table = self.rest.table.allow_any_model(provider, allow);
        self
    }

    /// The model (an alias or `provider/model`) used when a request to `endpoint` has none;
    /// only for endpoints where OpenAI makes `model` optional (images, moderations,
    /// responses). Without one, such a request is a 400 naming `model`.
    pub fn default_model(mut self, endpoint: Endpoint, model: impl Into<String>) -> Self {
        self.rest.default_models.push((endpoint, model.into()));
        self
    }

    /// The largest request body read, in bytes, for every endpoint without its own limit
    /// (defaults: 32 MiB, 64 MiB for image uploads); larger ones get 413.
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.rest.body_limit = Some(limit);
        self
    }

    /// How long a client has to send its whole request body (default 5 minutes); past it,
    /// 408 `request_timeout`.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.rest.body_timeout = Some(timeout);
        self
    }

    /// The largest request body read for one endpoint.
    pub fn endpoint_body_limit(mut self, endpoint: Endpoint, limit: usize) -> Self {
        self.rest.endpoint_limits.push((endpoint, limit));
        self
    }

    /// How long a stream may send nothing before the router ends it with an error frame
    /// (default 5 minutes), for providers without their own [`StreamSettings`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.rest.streams = self.rest.streams.idle_timeout(timeout);
        self
    }

    /// Stream settings for provider `name`: its idle timeout, and whether usage is asked for
    /// on its chat streams.
    pub fn stream_settings(mut self, name: impl Into<String>, settings: StreamSettings) -> Self {
        let name = name.into();
        self.rest
            .inject_usage
            .push((name.clone(), settings.injects_usage()));
        self.rest.streams = self.rest.streams.provider(name, settings);
        self
    }

    /// The policy of alias `name`: how its targets are ordered (fallback, weighted, round
    /// robin), retries of each, timeouts per attempt and to a stream's first event.
    pub fn alias_policy(mut self, name: impl Into<String>, policy: AliasPolicy) -> Self {
        self.rest.table = self.rest.table.alias_policy(name, policy);
        self
    }

    /// Cools down the targets of provider `name` that keep failing: skipped for a while after
    /// `cooldown.failures` failures in a row, or for a 429's `retry-after` (see
    /// [`resilience`](crate::resilience)). Default: no cooldown.
    pub fn cooldown(mut self, name: impl Into<String>, cooldown: Cooldown) -> Self {
        self.rest.resilience = self.rest.resilience.cooldown(name.into(), cooldown);
        self
    }

    /// At most `max` requests in flight at once (a stream counts until its last byte); past it,
    /// requests are shed at once with 503 `overloaded` and `retry-after` (see
    /// [`in_flight`](mod@crate::in_flight)). Default: no cap.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.rest.in_flight = InFlightLimitLayer::new(max);
        self
    }

    /// The in-flight cap as a layer: routers built with clones of one
    /// [`InFlightLimitLayer`] share its slots, so a router swapped in by a reload (see
    /// [`ReloadableRouter`](crate::ReloadableRouter)) counts the requests still in flight on
    /// the one it replaced. Replaces [`max_in_flight`](Self::max_in_flight).
    pub fn in_flight_limit(mut self, limit: InFlightLimitLayer) -> Self {
        self.rest.in_flight = limit;
        self
    }

    /// Whether requests get GenAI spans (default: yes): the request span carries the
    /// OpenTelemetry GenAI attributes, each upstream attempt a child span. See
    /// [`SetRequestIdLayer::genai_spans`]: turn it off when nothing exports traces and the
    /// subscriber formats every span's fields.
    pub fn genai_spans(mut self, on: bool) -> Self {
        self.rest.observe = self.rest.observe.genai_spans(on);
        self
    }

    /// Whether each request gets a W3C trace context (default: no): the incoming `traceparent`
    /// joined or a new trace started, each upstream attempt sent its own, and the summaries
    /// carry it with every attempt's span id. See [`SetRequestIdLayer::trace_context`]: what
    /// an exporter writing spans from the summaries needs (`ai_router::otel::OtlpExporter`).
    pub fn trace_context(mut self, on: bool) -> Self {
        self.rest.observe = self.rest.observe.trace_context(on);
        self
    }

    /// Gives each request a W3C trace context made by `policy`: whether a caller's
    /// `traceparent` is joined, which share of new traces is sampled. See
    /// [`SetRequestIdLayer::trace_policy`].
    pub fn trace_policy(mut self, policy: crate::extensions::TracePolicy) -> Self {
        self.rest.observe = self.rest.observe.trace_policy(policy);
        self
    }

    /// Hands a summary of every request to `observer` when its response head leaves and when
    /// it is over (default: [`LogRequests`](crate::observe::LogRequests), a `tracing` event):
    /// an [`AccessLog`](crate::observe::AccessLog), metrics, usage records.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.rest.observe = self.rest.observe.observer(observer);
        self
    }

    /// The hook called once per finished stream with its usage and outcome (default: a log
    /// line).
    pub fn on_usage(mut self, hook: impl OnUsage) -> Self {
        self.rest.streams = self.rest.streams.on_usage(hook);
        self
    }

    /// The path the router is served under, e.g. `/v3/router`: stripped when a request path
    /// starts with it (plain hyper), and still right when the host strips it (axum
    /// `nest_service`).
    pub fn mount_path(mut self, mount: impl Into<String>) -> Self {
        self.rest.mount_path = Some(mount.into());
        self
    }
}

impl<K: KeyStore, L: KeyLimiter> AiRouterBuilder<K, L> {
    /// Checks the configuration and composes the stack.
    pub fn build(self) -> Result<AiRouter<K, L>, BuildError> {
        let table = self.rest.table.build()?;
        let mut route = RouteLayer::new(table);
        if let Some(limit) = self.rest.body_limit {
            route = route.body_limit(limit);
        }
        if let Some(timeout) = self.rest.body_timeout {
            route = route.body_timeout(timeout);
        }
        for (endpoint, limit) in self.rest.endpoint_limits {
            route = route.endpoint_body_limit(endpoint, limit);
        }
        for (endpoint, model) in self.rest.default_models {
            route = route.default_model(endpoint, model)?;
        }
        if let Some(mount) = self.rest.mount_path {
            route = route.mount_path(mount);
        }
        for (provider, inject) in self.rest.inject_usage {
            route = route.inject_usage(provider, inject);
        }
        let mut auth = AuthLayer::new(self.keys).limiter(self.limiter);
        if let Some(deadline) = self.rest.check_deadline {
            auth = auth.deadline(deadline);
        }
        let resilient = self.rest.resilience.layer(self.rest.providers);
        let stack = self.rest.observe.layer(
            self.rest.in_flight.layer(
                OpenAiErrorsLayer::new()
                    .layer(auth.layer(route.layer(self.rest.streams.layer(resilient)))),
            ),
        );
        Ok(AiRouter { stack })
    }
}

impl<K, L> fmt::Debug for AiRouterBuilder<K, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AiRouterBuilder")
            .field("providers", &self.rest.providers)
            .field("body_limit", &self.rest.body_limit)
            .field("mount_path", &self.rest.mount_path)
            .finish_non_exhaustive()
    }
}

//! Resilience: fallbacks, retries and cooldowns across targets, before the first byte.
//!
//! [`Resilience`] sits below [`Route`](crate::route::Route), which resolves where a request
//! may go: its first [`RouteTarget`], and when there is more than one way (an alias with
//! several targets or a policy, or the request's own `fallbacks`, `retry`, `timeout` or
//! `load_balancer` knobs), a [`RoutePlan`]. A request without a plan gets one attempt, at the
//! cost of nothing but its answer's two headers. With one, this layer walks it:
//!
//! - **Triggers.** An attempt that cannot reach its upstream (refused, reset), times out
//!   (`timeout` per attempt: no response head in time), is answered 429, 5xx (529 included),
//!   401 or 403 (the provider refused the router's credential), or whose provider is not
//!   configured, moves on. Never a 400, 404, 413 or 422: the request itself is wrong, and the
//!   client gets that answer at once.
//! - **Retries** of one target (`count`, up to 5) on the statuses of `on_codes`, and on the
//!   failures without a status; between them an exponential backoff from 250 ms with jitter,
//!   or the upstream's `retry-after-ms` / `retry-after` up to 10 s (past that, the next target
//!   instead of a long sleep).
//! - **Cooldowns** (per provider, opt-in): a target that failed `failures` times in a row, or
//!   answered 429 with a `retry-after`, is skipped for a while; when every candidate is
//!   cooling down, they are tried anyway, in order.
//! - **Streams.** The response head of a stream waits for its first event: a failure before
//!   it (or silence past `first_byte_timeout`) falls back like any other. After it, the
//!   streaming failure contract of [`sse`](crate::sse) stands: one upstream per answer, never
//!   a mix.
//! - **Answers.** Every answer carries `x-ai-router-model` (the `provider/model` that answered)
//!   and `x-ai-router-attempts` (attempts made; targets skipped for a cooldown or the
//!   allow-list do not count). When every attempt fails, the client gets the last upstream
//!   error (in OpenAI's shape, from the errors layer above) with its status.
//!
//! The body is `Bytes` here, so each attempt resends it; a target other than the first gets
//! its own body from the plan (only `model` differs; a form is re-encoded). The attempt loop
//! of a planned request is one boxed future: the one allocation a plan costs.
//!
//! **Spans.** Every attempt, a request without a plan's single call included, runs in an
//! INFO span `attempt`, a child of the request span, of OpenTelemetry kind CLIENT and named
//! `{gen_ai.operation.name} {upstream model}` (`chat gpt-4o-mini`): `gen_ai.operation.name`,
//! `gen_ai.provider.name` (the provider's configured name), `gen_ai.request.model` (the
//! upstream model), `ai_router.attempt.number`, `ai_router.attempt.outcome` (`answered`: its
//! answer went to the client; `failed`: another attempt may follow),
//! `http.response.status_code`, and on failure `error.type` (the upstream's status, or the
//! router's error code: `upstream_unreachable`, `upstream_timeout`, `upstream_error`, ...)
//! with `otel.status_code = "error"`. The span lasts as long as the attempt: to the response
//! head, or a stream's first event. With the `otel` feature, the upstream request carries the
//! attempt's W3C `traceparent`. A warning is logged per failed attempt.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use ai_router::resilience::{Cooldown, ResilienceLayer};
//!
//! let layer = ResilienceLayer::new().cooldown("openai", Cooldown::new(3, Duration::from_secs(30)));
//! # let _ = layer;
//! ```

mod body;
mod future;
mod health;
mod layer;
mod service;
mod span;
mod walk;

use http::{HeaderMap, HeaderName, HeaderValue, Response};

use crate::error::Error;
use crate::extensions::RouteTarget;

pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::health::Cooldown;
pub use self::layer::ResilienceLayer;
pub use self::service::Resilience;
pub use self::walk::{BACKOFF_BASE, FIRST_EVENT_HOLD, RETRY_AFTER_CAP};
pub use crate::extensions::{Retry, RoutePlan};

/// The `provider/model` that answered.
pub const X_AI_ROUTER_MODEL: HeaderName = HeaderName::from_static("x-ai-router-model");
/// How many upstream attempts the answer took.
pub const X_AI_ROUTER_ATTEMPTS: HeaderName = HeaderName::from_static("x-ai-router-attempts");

/// Marks an answer with the target that gave it and the attempts it took.
fn answered(headers: &mut HeaderMap, target: &RouteTarget, attempts: u32) {
    headers.insert(X_AI_ROUTER_MODEL, target.label());
    let attempts = match attempts {
        1 => HeaderValue::from_static("1"),
        n => HeaderValue::from(n),
    };
    headers.insert(X_AI_ROUTER_ATTEMPTS, attempts);
}

/// The layer's own answer for a request that never had a target (no answer headers).
fn unanswered<B>(error: Error) -> Response<ResponseBody<B>> {
    let (parts, body) = error.into_response().into_parts();
    Response::from_parts(parts, ResponseBody::full(body))
}

/// The layer's own answer for a failure: the error table's, with the answer headers.
fn failed_response<B>(
    error: Error,
    target: &RouteTarget,
    attempts: u32,
) -> Response<ResponseBody<B>> {
    let status = error.status();
    if status.is_server_error() {
        tracing::warn!(%status, code = error.code(), cause = ?std::error::Error::source(&error), "request failed");
    }
    let (mut parts, body) = error.into_response().into_parts();
    answered(&mut parts.headers, target, attempts);
    Response::from_parts(parts, ResponseBody::full(body))
}

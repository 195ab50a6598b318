//! The typed request extensions that pass between layers.
//!
//! Each is created by one layer and read by the layers below it (and by any handler a layer
//! wraps, e.g. as axum's `Extension<Principal>`):
//!
//! | extension | set by | read by |
//! |---|---|---|
//! | [`RequestId`] | [`SetRequestId`](crate::request_id::SetRequestId) | providers (sent upstream), handlers |
//! | [`RequestLog`](crate::observe::RequestLog) | [`SetRequestId`](crate::request_id::SetRequestId) | every layer records into it |
//! | [`Principal`] | [`Auth`](crate::auth::Auth) | [`Route`](crate::route::Route) (allow-list), handlers |
//! | [`RouteTarget`] | [`Route`](crate::route::Route) | [`Sse`](crate::sse::Sse), providers |
//! | [`TraceContext`] | [`SetRequestId`](crate::request_id::SetRequestId), when asked | [`Resilience`](crate::resilience::Resilience) (sent upstream) |
//! | [`RoutePlan`] | [`Route`](crate::route::Route), when there is more than one way | [`Resilience`](crate::resilience::Resilience) |
//!
//! A leaf module: it imports no layer, so layers can depend on it without depending on each
//! other.

mod endpoint;
mod plan;
mod principal;
mod request_id;
mod target;
mod trace;

pub use self::endpoint::Endpoint;
pub use self::plan::{BodyForModel, MAX_RETRIES, Retry, RoutePlan};
pub use self::principal::{KeyLimits, Principal};
pub use self::request_id::{RequestId, X_REQUEST_ID};
pub use self::target::RouteTarget;
pub use self::trace::{MAX_TRACE_STATE, TRACEPARENT, TRACESTATE, TraceContext, TracePolicy};

pub(crate) use self::endpoint::{Accepts, Matched, match_path};

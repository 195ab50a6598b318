//! [`RoutePlan`]: where a request may go besides its first target, and how hard to try.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use super::target::RouteTarget;
use crate::error::Error;

/// The most retries of one target a policy may ask for.
pub const MAX_RETRIES: u8 = 5;

/// How often one target is tried again, and on which upstream statuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    count: u8,
    /// `None` for none: no retries must cost no allocation.
    on_codes: Option<Arc<[u16]>>,
}

impl Retry {
    /// No retries (the default): a failed attempt moves on to the next target.
    pub fn none() -> Self {
        Self {
            count: 0,
            on_codes: None,
        }
    }

    /// Up to `count` more attempts at the same target (at most [`MAX_RETRIES`]) when it
    /// answers one of `on_codes`, or cannot be reached, or times out.
    pub fn new(count: u8, on_codes: impl IntoIterator<Item = u16>) -> Self {
        Self {
            count: count.min(MAX_RETRIES),
            on_codes: Some(on_codes.into_iter().collect()),
        }
    }

    /// How many more attempts one target gets.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// Whether an answer of `status` is tried again at the same target.
    pub fn on(&self, status: u16) -> bool {
        self.on_codes().contains(&status)
    }

    /// The statuses tried again.
    pub fn on_codes(&self) -> &[u16] {
        self.on_codes.as_deref().unwrap_or_default()
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::none()
    }
}

/// Makes the request body for another target: the client's bytes with only `model` changed
/// (and usage asked for, when the router does that for the target's provider); a form
/// re-encoded with a new boundary, with the `Content-Type` to send.
pub trait BodyForModel: Send + Sync + 'static {
    /// The body for `target`, and the `Content-Type` it needs when that changed.
    fn body_for(&self, target: &RouteTarget) -> Result<(Bytes, Option<HeaderValue>), Error>;
}

/// Where a request may go besides its first target, and how hard to try: set by
/// [`Route`](crate::route::Route) as a request extension when the model is an alias with
/// several targets or a policy, or when the request asks for fallbacks, retries or a
/// timeout; walked by [`Resilience`](crate::resilience::Resilience). A request without one
/// gets one attempt at its [`RouteTarget`].
#[derive(Clone)]
pub struct RoutePlan {
    pub(crate) fallbacks: Vec<RouteTarget>,
    pub(crate) retry: Retry,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) first_byte_timeout: Option<Duration>,
    pub(crate) body: Arc<dyn BodyForModel>,
}

impl RoutePlan {
    /// A plan with `fallbacks` tried in order after the first target, whose bodies `body`
    /// makes.
    pub fn new(fallbacks: Vec<RouteTarget>, body: Arc<dyn BodyForModel>) -> Self {
        Self {
            fallbacks,
            retry: Retry::none(),
            attempt_timeout: None,
            first_byte_timeout: None,
            body,
        }
    }

    /// Retries of each target.
    #[must_use]
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// How long each attempt may wait for its response head before the next one.
    #[must_use]
    pub fn with_attempt_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// For streams: how long each attempt may wait for its first event before the next one
    /// (the response head is held until then).
    #[must_use]
    pub fn with_first_byte_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.first_byte_timeout = timeout;
        self
    }

    /// The targets tried after the first, in order.
    pub fn fallbacks(&self) -> &[RouteTarget] {
        &self.fallbacks
    }

    /// The retries of each target.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }
}

impl fmt::Debug for RoutePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutePlan")
            .field("fallbacks", &self.fallbacks)
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .finish_non_exhaustive()
    }
}

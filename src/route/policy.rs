//! [`AliasPolicy`]: how an alias spreads requests over its targets and how hard it tries.

use std::time::Duration;

use crate::extensions::Retry;

/// How an alias orders its targets for each request: the first is tried first, the rest
/// follow as fallbacks.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Strategy {
    /// The configured order, every time (the default).
    #[default]
    Fallback,
    /// The first target picked at random with these weights (one per target, normalised);
    /// the others follow in configured order.
    Weighted(Vec<f64>),
    /// The first target taken in turn; the others follow in configured order, wrapping.
    RoundRobin,
}

/// How an alias routes: its [`Strategy`], retries of each target, and timeouts per attempt.
/// The default: configured order, no retries, no timeouts beyond the provider's own.
///
/// ```
/// use std::time::Duration;
/// use ai_router::extensions::Retry;
/// use ai_router::route::{AliasPolicy, Strategy};
///
/// let policy = AliasPolicy::new()
///     .strategy(Strategy::Weighted(vec![0.7, 0.3]))
///     .retry(Retry::new(2, [429, 500, 502, 503, 504]))
///     .timeout(Duration::from_secs(30))
///     .first_byte_timeout(Duration::from_secs(5));
/// # let _ = policy;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct AliasPolicy {
    pub(crate) strategy: Strategy,
    pub(crate) retry: Retry,
    pub(crate) timeout: Option<Duration>,
    pub(crate) first_byte_timeout: Option<Duration>,
}

impl AliasPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// How targets are ordered.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Retries of each target.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// How long an attempt may wait for its response head before the next one.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// For streams: how long an attempt may wait for its first event before the next one
    /// (the response head is held until the first event arrives).
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.first_byte_timeout = Some(timeout);
        self
    }

    /// Whether the policy asks for nothing beyond a first attempt and fallbacks in order.
    pub(crate) fn is_plain(&self) -> bool {
        *self == Self::default()
    }
}

//! [`AuthLayer`].

use std::time::Duration;

use tower_layer::Layer;

use super::limit::InProcessLimiter;
use super::service::Auth;

/// How long a key store lookup and a limiter check may take together before the request is
/// answered 503 (a stalled store must not hang clients): 5 seconds.
pub const DEFAULT_CHECK_DEADLINE: Duration = Duration::from_secs(5);

/// Adds [`Auth`]. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct AuthLayer<K, L = InProcessLimiter> {
    keys: K,
    limiter: L,
    deadline: Duration,
}

impl<K> AuthLayer<K> {
    /// A layer checking keys against `keys`, with per-key limits kept in this process.
    pub fn new(keys: K) -> Self {
        Self {
            keys,
            limiter: InProcessLimiter::new(),
            deadline: DEFAULT_CHECK_DEADLINE,
        }
    }
}

impl<K, L> AuthLayer<K, L> {
    /// Uses `limiter` for per-key limits (e.g. a shared backend for a fleet).
    pub fn limiter<L2>(self, limiter: L2) -> AuthLayer<K, L2> {
        AuthLayer {
            keys: self.keys,
            limiter,
            deadline: self.deadline,
        }
    }

    /// How long the key lookup and the limit check may take together (default
    /// [`DEFAULT_CHECK_DEADLINE`]); past it, 503 `key_store_unavailable` or
    /// `limits_unavailable`.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

impl<S, K: Clone, L: Clone> Layer<S> for AuthLayer<K, L> {
    type Service = Auth<S, K, L>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth::from_parts(
            inner,
            self.keys.clone(),
            self.limiter.clone(),
            self.deadline,
        )
    }
}

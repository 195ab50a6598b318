//! [`ResilienceLayer`].

use std::collections::HashMap;
use std::sync::Arc;

use tower_layer::Layer;

use super::health::{Cooldown, Health};
use super::service::Resilience;

/// Adds [`Resilience`]. See the [module docs](super).
///
/// Every service this layer makes shares one cooldown table (and so do clones of them).
#[derive(Clone, Debug)]
pub struct ResilienceLayer {
    health: Arc<Health>,
}

impl Default for ResilienceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ResilienceLayer {
    /// No cooldowns.
    pub fn new() -> Self {
        Self {
            health: Arc::new(Health::new(HashMap::new())),
        }
    }

    /// Cools down the targets of `provider` that keep failing (see [`Cooldown`]).
    #[must_use]
    pub fn cooldown(self, provider: impl Into<Arc<str>>, cooldown: Cooldown) -> Self {
        let mut cooldowns = self.health.cooldowns().clone();
        cooldowns.insert(provider.into(), cooldown);
        Self {
            health: Arc::new(Health::new(cooldowns)),
        }
    }
}

impl<S> Layer<S> for ResilienceLayer {
    type Service = Resilience<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Resilience::from_parts(inner, self.health.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_service_of_a_layer_shares_one_cooldown_table() {
        let layer = ResilienceLayer::new().cooldown("a", Cooldown::new(1, Duration::from_secs(1)));
        let (one, two) = (layer.layer(()), layer.clone().layer(()));
        assert!(Arc::ptr_eq(one.health(), two.health()));
    }
}

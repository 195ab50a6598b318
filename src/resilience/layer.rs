//! [`ResilienceLayer`].

use std::collections::HashMap;
use std::sync::Arc;

use tower_layer::Layer;

use super::health::{Cooldown, Health};
use super::service::Resilience;

/// Adds [`Resilience`]. See the [module docs](super).
#[derive(Clone, Debug, Default)]
pub struct ResilienceLayer {
    cooldowns: HashMap<Arc<str>, Cooldown>,
    /// Made when the first service is, and shared by every service this layer makes.
    health: Option<Arc<Health>>,
}

impl ResilienceLayer {
    /// No cooldowns.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cools down the targets of `provider` that keep failing (see [`Cooldown`]).
    #[must_use]
    pub fn cooldown(mut self, provider: impl Into<Arc<str>>, cooldown: Cooldown) -> Self {
        self.cooldowns.insert(provider.into(), cooldown);
        self.health = None;
        self
    }

    fn health(&self) -> Arc<Health> {
        match &self.health {
            Some(health) => health.clone(),
            None => Arc::new(Health::new(self.cooldowns.clone())),
        }
    }

    /// Freezes the cooldown table so that every service made from this layer shares it.
    #[must_use]
    pub(crate) fn shared(mut self) -> Self {
        self.health = Some(self.health());
        self
    }
}

impl<S> Layer<S> for ResilienceLayer {
    type Service = Resilience<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Resilience::from_parts(inner, self.health())
    }
}

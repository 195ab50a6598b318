//! [`SseLayer`], its settings, and [`StreamSettings`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::service::Sse;
use super::usage::{LogUsage, OnUsage};

/// The default idle timeout: 5 minutes without a byte ends a stream.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Stream settings for one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    idle_timeout: Option<Duration>,
    inject_usage: bool,
}

impl StreamSettings {
    /// The layer's default idle timeout, no usage injection.
    pub fn new() -> Self {
        Self {
            idle_timeout: None,
            inject_usage: false,
        }
    }

    /// Ends a stream that sends nothing for `timeout`.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Asks this provider for usage on chat streams (`stream_options.include_usage`), for
    /// providers that support it. The request side is the route layer's
    /// ([`RouteLayer::inject_usage`](crate::route::RouteLayer::inject_usage));
    /// [`AiRouterBuilder::stream_settings`](crate::AiRouterBuilder::stream_settings) sets both.
    #[must_use]
    pub fn inject_usage(mut self, inject: bool) -> Self {
        self.inject_usage = inject;
        self
    }

    /// Whether usage is asked for on this provider's chat streams.
    pub fn injects_usage(&self) -> bool {
        self.inject_usage
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
pub(super) struct Settings {
    pub(super) idle_timeout: Duration,
    pub(super) providers: HashMap<Arc<str>, Duration>,
    pub(super) hook: Arc<dyn OnUsage>,
}

impl Settings {
    /// Whether some provider has an idle timeout of its own.
    pub(super) fn varies_by_provider(&self) -> bool {
        !self.providers.is_empty()
    }

    pub(super) fn idle_timeout(&self, provider: Option<&str>) -> Duration {
        if self.providers.is_empty() {
            return self.idle_timeout;
        }
        provider
            .and_then(|p| self.providers.get(p))
            .copied()
            .unwrap_or(self.idle_timeout)
    }
}

/// Adds [`Sse`]. See the module docs.
#[derive(Clone)]
pub struct SseLayer {
    settings: Arc<Settings>,
}

impl SseLayer {
    /// A layer with the default idle timeout and [`LogUsage`].
    pub fn new() -> Self {
        Self {
            settings: Arc::new(Settings {
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                providers: HashMap::new(),
                hook: Arc::new(LogUsage),
            }),
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// The idle timeout for providers without their own.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().idle_timeout = timeout;
        self
    }

    /// Settings for one provider (its idle timeout, when set; usage injection is applied
    /// by the route layer).
    #[must_use]
    pub fn provider(mut self, name: impl Into<Arc<str>>, settings: StreamSettings) -> Self {
        let name = name.into();
        match settings.idle_timeout {
            Some(timeout) => self.settings_mut().providers.insert(name, timeout),
            None => self.settings_mut().providers.remove(&name),
        };
        self
    }

    /// The hook called once per finished stream.
    #[must_use]
    pub fn on_usage(mut self, hook: impl OnUsage) -> Self {
        self.settings_mut().hook = Arc::new(hook);
        self
    }
}

impl Default for SseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseLayer")
            .field("idle_timeout", &self.settings.idle_timeout)
            .field("providers", &self.settings.providers)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = Sse<S>;

    fn layer(&self, inner: S) -> Sse<S> {
        Sse::from_settings(inner, self.settings.clone())
    }
}

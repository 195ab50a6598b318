//! [`RouteLayer`] and the settings every clone of a [`Route`] shares.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower_layer::Layer;

use super::service::Route;
use super::table::RouteTable;
use super::{DEFAULT_BODY_TIMEOUT, Endpoint};

/// Settings shared by every clone of a [`Route`].
#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) table: RouteTable,
    /// Overrides every endpoint's default limit, unless the endpoint has its own.
    pub(super) body_limit: Option<usize>,
    pub(super) endpoint_limits: HashMap<Endpoint, usize>,
    pub(super) default_models: HashMap<Endpoint, String>,
    pub(super) mount_path: Option<String>,
    pub(super) body_timeout: Duration,
    /// Providers asked for usage on chat streams whose client did not ask.
    pub(super) inject_usage: HashSet<Arc<str>>,
    /// Whose turn it is for requests' own round-robin balancers; shared by every clone.
    turn: Arc<AtomicUsize>,
}

impl Settings {
    /// The next turn for a request's round-robin balancer.
    pub(super) fn turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn body_limit(&self, endpoint: Endpoint) -> usize {
        if self.endpoint_limits.is_empty() {
            return self
                .body_limit
                .unwrap_or_else(|| endpoint.default_body_limit());
        }
        self.endpoint_limits
            .get(&endpoint)
            .copied()
            .or(self.body_limit)
            .unwrap_or_else(|| endpoint.default_body_limit())
    }
}

/// Adds [`Route`]. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct RouteLayer {
    settings: Arc<Settings>,
}

impl RouteLayer {
    /// Routes with `table`, the endpoints' default body limits (32 MiB for JSON, 64 MiB for
    /// image uploads), no default models and no mount path.
    pub fn new(table: RouteTable) -> Self {
        Self {
            settings: Arc::new(Settings {
                table,
                body_limit: None,
                endpoint_limits: HashMap::new(),
                default_models: HashMap::new(),
                mount_path: None,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                inject_usage: HashSet::new(),
                turn: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Sets the largest request body read, in bytes, for every endpoint without its own
    /// [`endpoint_body_limit`](Self::endpoint_body_limit).
    #[must_use]
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.settings_mut().body_limit = Some(limit);
        self
    }

    /// Sets the largest request body read for one endpoint.
    #[must_use]
    pub fn endpoint_body_limit(mut self, endpoint: Endpoint, limit: usize) -> Self {
        self.settings_mut().endpoint_limits.insert(endpoint, limit);
        self
    }

    /// The model used when a request to `endpoint` has none (only where OpenAI makes `model`
    /// optional: images, moderations, responses). The id must resolve in the table.
    pub fn default_model(
        mut self,
        endpoint: Endpoint,
        model: impl Into<String>,
    ) -> Result<Self, crate::error::BuildError> {
        let model = model.into();
        if !endpoint.model_optional() {
            return Err(crate::error::BuildError::new(format!(
                "endpoint `{}` requires a model; it takes no default",
                endpoint.name()
            )));
        }
        self.settings.table.resolve(&model, endpoint).map_err(|_| {
            crate::error::BuildError::new(format!(
                "default model `{model}` for `{}` is not a configured alias or provider model",
                endpoint.name()
            ))
        })?;
        self.settings_mut().default_models.insert(endpoint, model);
        Ok(self)
    }

    /// How long a client has to send its whole request body (default 5 minutes): past it,
    /// 408 `request_timeout`, so a stalled upload holds no memory or key slot for long.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().body_timeout = timeout;
        self
    }

    /// Sets the mount path (e.g. `/v3/router`): stripped from request paths that start with
    /// it, and shown in "Invalid URL" messages when a host stripped it already.
    #[must_use]
    pub fn mount_path(mut self, mount: impl Into<String>) -> Self {
        self.settings_mut().mount_path = normalize_mount(mount.into());
        self
    }

    /// Asks `provider` for usage on chat streams whose client did not
    /// (`"stream_options":{"include_usage":true}` added as the body's first member, the only
    /// change besides `model`), so every stream's tokens are counted. The request is marked
    /// ([`RouteTarget::usage_injected`](crate::extensions::RouteTarget::usage_injected)), and
    /// the [`Sse`](crate::sse::Sse) layer takes what that adds out of the stream again.
    #[must_use]
    pub fn inject_usage(mut self, provider: impl Into<Arc<str>>, inject: bool) -> Self {
        let provider = provider.into();
        if inject {
            self.settings_mut().inject_usage.insert(provider);
        } else {
            self.settings_mut().inject_usage.remove(&provider);
        }
        self
    }
}

/// `"/v3/router/"` -> `Some("/v3/router")`; `""` or `"/"` -> `None`.
fn normalize_mount(mount: String) -> Option<String> {
    let trimmed = mount.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    Some(if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    })
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route::from_settings(inner, self.settings.clone())
    }
}

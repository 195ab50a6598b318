//! [`RouteTarget`]: where a request goes.

use std::sync::Arc;

use http::HeaderValue;

use super::endpoint::Endpoint;

/// Where a request goes: set by [`Route`](crate::route::Route) as a request extension and read
/// by the stream layer and the provider services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    provider: Arc<str>,
    upstream_model: Arc<str>,
    endpoint: Endpoint,
    stream: bool,
    include_usage: Option<bool>,
    usage_injected: bool,
    /// `provider/model` as a header value, when made cheaply ahead (see [`Self::label`]).
    label: Option<HeaderValue>,
}

impl RouteTarget {
    /// A target; the route layer makes these, tests and custom stacks may too.
    pub fn new(
        provider: impl Into<Arc<str>>,
        upstream_model: impl Into<Arc<str>>,
        endpoint: Endpoint,
    ) -> Self {
        Self {
            provider: provider.into(),
            upstream_model: upstream_model.into(),
            endpoint,
            stream: false,
            include_usage: None,
            usage_injected: false,
            label: None,
        }
    }

    /// Gives the target its `provider/model` label ahead (an alias's, made once; a client's
    /// model id, taken from its body without a copy), so answering with it costs nothing.
    #[must_use]
    pub fn with_label(mut self, label: HeaderValue) -> Self {
        self.label = Some(label);
        self
    }

    /// Whether the label was given ahead.
    pub(crate) fn has_label(&self) -> bool {
        self.label.is_some()
    }

    /// `provider/model`, as the `x-ai-router-model` header of an answer shows it.
    pub fn label(&self) -> HeaderValue {
        match &self.label {
            Some(label) => label.clone(),
            None => HeaderValue::try_from(format!("{}/{}", self.provider, self.upstream_model))
                .unwrap_or(HeaderValue::from_static("unknown")),
        }
    }

    /// Marks the request as streaming (`"stream": true`), with the client's
    /// `stream_options.include_usage` if it sent `stream_options`.
    #[must_use]
    pub fn with_stream(mut self, stream: bool, include_usage: Option<bool>) -> Self {
        self.stream = stream;
        self.include_usage = include_usage;
        self
    }

    /// Marks the request as one the router asked usage for on the client's behalf
    /// (`stream_options.include_usage` added upstream): what that adds to the stream is taken
    /// out again before the client sees it.
    #[must_use]
    pub fn with_usage_injected(mut self, injected: bool) -> Self {
        self.usage_injected = injected;
        self
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The client's `stream_options.include_usage`, if it sent `stream_options`.
    pub fn include_usage(&self) -> Option<bool> {
        self.include_usage
    }

    /// Whether the router asked the upstream for usage the client did not ask for.
    pub fn usage_injected(&self) -> bool {
        self.usage_injected
    }

    /// The provider's name, e.g. `openai`.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The provider's name, shared.
    pub fn provider_shared(&self) -> &Arc<str> {
        &self.provider
    }

    /// The model id the provider gets, e.g. `gpt-4o-mini`.
    pub fn upstream_model(&self) -> &str {
        &self.upstream_model
    }

    /// The model id the provider gets, shared.
    pub fn upstream_model_shared(&self) -> &Arc<str> {
        &self.upstream_model
    }

    /// The endpoint called.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }
}

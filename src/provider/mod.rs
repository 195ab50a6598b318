//! Upstream services: the provider set at the bottom of the stack.
//!
//! [`Providers`] maps each provider name to a service and sends each request to the one named
//! by its [`RouteTarget`]. Most providers are an
//! [`HttpProvider`] (a pooled hyper client: base URL join, credential swap, header hygiene,
//! response head timeout); any `Service<Request<Bytes>>` answering `Response<UpstreamBody>`
//! can stand in, e.g. an in-process model server or, later, a provider that translates another
//! API. This is the one place where services are boxed, so providers of different types fit
//! in one map; their bodies are not (an [`UpstreamBody`] holds hyper's body or bytes as they
//! are, and boxes only a body of another type).
//!
//! Upstream failures: a refused or failed connection is 502 `upstream_unreachable`, no
//! response head within the provider's timeout is 504 `upstream_timeout`, a broken exchange is
//! 502, and a provider without its key is 503 `provider_unavailable`.
//!
//! # Example
//! ```
//! use ai_router::provider::{HttpProvider, Providers};
//!
//! let providers = Providers::new()
//!     .with("openai", HttpProvider::builder("https://api.openai.com/v1").api_key("sk-...").build()?);
//! assert!(providers.contains("openai"));
//! # Ok::<(), ai_router::BuildError>(())
//! ```

mod body;
mod client;
pub(crate) mod dialect;
mod events;
mod headers;
mod http;
mod translating;
mod transport;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::http::{Request, Response};
use bytes::Bytes;
use pin_project_lite::pin_project;
use tower::ServiceExt as _;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower_service::Service;

use crate::error::Error;
use crate::extensions::RouteTarget;

pub use self::body::UpstreamBody;
pub use self::client::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_POOL_MAX_IDLE_PER_HOST, HttpClient,
    HttpClientBuilder,
};
pub use self::http::{HttpProvider, HttpProviderBuilder, ResponseFuture as HttpResponseFuture};
pub use self::translating::{
    AnthropicProvider, AnthropicProviderBuilder, GeminiProvider, GeminiProviderBuilder,
    ResponseFuture as TranslatedResponseFuture,
};
pub use self::transport::{DEFAULT_TIMEOUT, ProviderAuth};

type BoxedProvider = BoxCloneSyncService<Request<Bytes>, Response<UpstreamBody>, Error>;

/// The provider set: one upstream service per provider name. See the module docs.
#[derive(Clone, Default)]
pub struct Providers {
    services: Arc<HashMap<Arc<str>, BoxedProvider>>,
}

impl Providers {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the service for provider `name`.
    #[must_use]
    pub fn with<S>(mut self, name: impl Into<Arc<str>>, service: S) -> Self
    where
        S: Service<Request<Bytes>, Response = Response<UpstreamBody>, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Arc::make_mut(&mut self.services).insert(name.into(), BoxCloneSyncService::new(service));
        self
    }

    /// Whether a provider of this name is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.services.contains_key(name)
    }
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Providers")
            .field("names", &self.services.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Service<Request<Bytes>> for Providers {
    type Response = Response<UpstreamBody>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Readiness is per provider: each call drives its provider's readiness (`Oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> ResponseFuture {
        let service = request
            .extensions()
            .get::<RouteTarget>()
            .and_then(|target| self.services.get(target.provider()));
        let state = match service {
            Some(service) => State::Calling {
                future: service.clone().oneshot(request),
            },
            None => {
                // The builder checks that every routable provider has a service; this is a
                // stack assembled by hand without `Route` above.
                tracing::error!("no provider service for this request's route");
                State::Failed {
                    error: Some(Error::internal()),
                }
            }
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// Response future of [`Providers`].
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Failed { error: Option<Error> },
        Calling { #[pin] future: Oneshot<BoxedProvider, Request<Bytes>> },
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<UpstreamBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Failed { error } => {
                Poll::Ready(Err(error.take().unwrap_or_else(Error::internal)))
            }
            StateProj::Calling { future } => future.poll(cx),
        }
    }
}

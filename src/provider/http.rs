//! [`HttpProvider`]: an OpenAI-compatible upstream reached over HTTP(S).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::UpstreamBody;
use super::client::HttpClient;
use super::headers;
use super::transport::{ProviderAuth, SendFuture, Transport, TransportBuilder};
use crate::error::BuildError;
use crate::error::Error;
use crate::extensions::{Endpoint, RequestId, RouteTarget, X_REQUEST_ID};

/// An OpenAI-compatible upstream over HTTP(S): joins its base URL with the endpoint path,
/// replaces the client's credentials with the provider's, strips hop-by-hop headers both ways
/// and streams the answer back.
///
/// ```
/// use ai_router::provider::{HttpProvider, ProviderAuth};
///
/// let groq = HttpProvider::builder("https://api.groq.com/openai/v1")
///     .api_key("gsk-...")
///     .build()?;
/// let ollama = HttpProvider::builder("http://127.0.0.1:11434/v1")
///     .auth(ProviderAuth::None)
///     .build()?;
/// assert!(!format!("{groq:?}").contains("gsk"));
/// # Ok::<(), ai_router::BuildError>(())
/// ```
#[derive(Clone)]
pub struct HttpProvider {
    transport: Arc<Transport>,
    /// The upstream URL of every endpoint, made once (indexed by [`Endpoint::index`]).
    uris: Arc<[Uri]>,
}

impl HttpProvider {
    /// A builder for the provider at `base_url` (which may carry a path, e.g.
    /// `https://api.groq.com/openai/v1`).
    pub fn builder(base_url: impl Into<String>) -> HttpProviderBuilder {
        HttpProviderBuilder {
            transport: TransportBuilder::new(base_url.into(), ProviderAuth::Bearer),
            paths: HashMap::new(),
        }
    }

    fn prepare(&self, request: Request<Bytes>) -> Result<Request<Full<Bytes>>, Error> {
        self.transport.check_credential()?;
        let (mut parts, body) = request.into_parts();
        let endpoint = parts
            .extensions
            .get::<RouteTarget>()
            .map(RouteTarget::endpoint)
            .ok_or_else(Error::internal)?;
        parts.uri = self
            .uris
            .get(endpoint.index())
            .cloned()
            .ok_or_else(Error::internal)?;
        // The upstream connection is ours: HTTP/1.1 or HTTP/2 as negotiated, not the client's.
        parts.version = http::Version::HTTP_11;
        headers::to_upstream(&mut parts.headers);
        // The router's id, so upstream logs can be matched with ours.
        if let Some(id) = parts.extensions.get::<RequestId>() {
            parts
                .headers
                .insert(X_REQUEST_ID, id.header_value().clone());
        }
        self.transport.add_headers(&mut parts.headers);
        self.transport.record_server(&parts.extensions);
        parts.extensions.clear();
        Ok(Request::from_parts(parts, Full::new(body)))
    }
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("base_url", &format_args!("{}", self.transport.shown()))
            .field("credential", &self.transport.credential_state())
            .field("timeout", &self.transport.timeout)
            .finish()
    }
}

impl Service<Request<Bytes>> for HttpProvider {
    type Response = Response<UpstreamBody>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // hyper's pooled client is always ready; it queues on the pool itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> ResponseFuture {
        let state = match self.prepare(request) {
            Ok(request) => State::Waiting {
                future: self.transport.send(request),
            },
            Err(error) => State::Failed { error: Some(error) },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// Response future of [`HttpProvider`].
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Failed { error: Option<Error> },
        Waiting { #[pin] future: SendFuture },
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<UpstreamBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Failed { error } => {
                Poll::Ready(Err(error.take().unwrap_or_else(Error::internal)))
            }
            StateProj::Waiting { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(UpstreamBody::from)))
            }
        }
    }
}

/// Builds an [`HttpProvider`]. See [`HttpProvider`].
#[must_use]
pub struct HttpProviderBuilder {
    transport: TransportBuilder,
    paths: HashMap<Endpoint, String>,
}

impl HttpProviderBuilder {
    /// How the key is sent (default [`ProviderAuth::Bearer`]).
    pub fn auth(mut self, auth: ProviderAuth) -> Self {
        self.transport.auth = auth;
        self
    }

    /// The provider's API key. Without one (and unless the auth is [`ProviderAuth::None`]),
    /// calls answer 503 `provider_unavailable` with `x-should-retry: false`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.transport.api_key = Some(key.into());
        self
    }

    /// A static header added to every upstream request (e.g. `HTTP-Referer` for OpenRouter).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.transport.headers.push((name.into(), value.into()));
        self
    }

    /// How long the upstream has to send its response head (default 10 minutes): past it,
    /// 504 `upstream_timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.transport.timeout = timeout;
        self
    }

    /// Serves `endpoint` at `path` below the base URL instead of OpenAI's path, e.g.
    /// `/v2/rerank` for Cohere or `/rerank` vs `/v1/rerank` for vLLM and Jina.
    pub fn endpoint_path(mut self, endpoint: Endpoint, path: impl Into<String>) -> Self {
        let path = path.into();
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        self.paths.insert(endpoint, path);
        self
    }

    /// Uses this client (and its pool) instead of the process-wide one.
    pub fn client(mut self, client: HttpClient) -> Self {
        self.transport.client = Some(client);
        self
    }

    /// Checks the URL and headers and builds the provider.
    pub fn build(self) -> Result<HttpProvider, BuildError> {
        for path in self.paths.values() {
            PathAndQuery::try_from(path.as_str()).map_err(|_| {
                BuildError::new(format!("endpoint path `{path}` is not a valid path"))
            })?;
        }
        let transport = self.transport.build()?;
        let uris = Endpoint::ALL
            .into_iter()
            .map(|endpoint| {
                let path = self
                    .paths
                    .get(&endpoint)
                    .map_or(endpoint.upstream_path(), String::as_str);
                transport.uri(path).map_err(|_| {
                    BuildError::new(format!("endpoint path `{path}` is not a valid path"))
                })
            })
            .collect::<Result<Arc<[Uri]>, BuildError>>()?;
        Ok(HttpProvider {
            transport: Arc::new(transport),
            uris,
        })
    }
}

impl fmt::Debug for HttpProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProviderBuilder")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn prepared(base: &str, auth: ProviderAuth, uri: &str) -> Request<Full<Bytes>> {
        let provider = HttpProvider::builder(base)
            .auth(auth)
            .api_key("sk-provider")
            .header("x-static", "1")
            .build()
            .unwrap();
        let mut request = Request::post(uri)
            .header("authorization", "Bearer sk-router")
            .header("openai-project", "p")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        request
            .extensions_mut()
            .insert(RouteTarget::new("p", "m", Endpoint::ChatCompletions));
        provider.prepare(request).unwrap()
    }

    #[tokio::test]
    async fn joins_base_paths_and_queries() {
        let r = prepared(
            "https://api.groq.com/openai/v1/",
            ProviderAuth::Bearer,
            "/v3/router/chat/completions",
        );
        assert_eq!(r.uri(), "https://api.groq.com/openai/v1/chat/completions");
        let r = prepared(
            "http://127.0.0.1:11434/v1",
            ProviderAuth::None,
            "/chat/completions?x=1",
        );
        assert_eq!(r.uri(), "http://127.0.0.1:11434/v1/chat/completions");
        let r = prepared(
            "https://h.example/openai?api-version=2024",
            ProviderAuth::Bearer,
            "/c?x=1",
        );
        assert_eq!(
            r.uri(),
            "https://h.example/openai/chat/completions?api-version=2024"
        );
    }

    #[tokio::test]
    async fn swaps_credentials() {
        let r = prepared("http://h/v1", ProviderAuth::Bearer, "/chat/completions");
        assert_eq!(r.headers()["authorization"], "Bearer sk-provider");
        assert!(r.headers()["authorization"].is_sensitive());
        assert!(r.headers().get("openai-project").is_none());
        assert_eq!(r.headers()["x-static"], "1");
        let r = prepared(
            "http://h/v1",
            ProviderAuth::Header(HeaderName::from_static("api-key")),
            "/x",
        );
        assert_eq!(r.headers()["api-key"], "sk-provider");
        assert!(r.headers().get("authorization").is_none());
        let r = prepared("http://h/v1", ProviderAuth::None, "/x");
        assert!(r.headers().get("authorization").is_none());
    }

    #[tokio::test]
    async fn endpoint_paths_can_be_overridden() {
        let provider = HttpProvider::builder("https://api.cohere.com")
            .api_key("k")
            .endpoint_path(Endpoint::Rerank, "/v2/rerank")
            .build()
            .unwrap();
        let mut request = Request::post("/rerank").body(Bytes::new()).unwrap();
        request.extensions_mut().insert(RouteTarget::new(
            "cohere",
            "rerank-v3.5",
            Endpoint::Rerank,
        ));
        assert_eq!(
            provider.prepare(request).unwrap().uri(),
            "https://api.cohere.com/v2/rerank"
        );
    }

    #[test]
    fn url_queries_never_reach_messages_or_debug() {
        let builder = HttpProvider::builder("https://gemini.example/v1?key=sk-in-query");
        assert!(!format!("{builder:?}").contains("sk-in-query"));
        let error = HttpProvider::builder("ftp://h/v1?key=sk-in-query")
            .build()
            .unwrap_err();
        assert!(!error.to_string().contains("sk-in-query"), "{error}");
        let provider = HttpProvider::builder("https://h/v1?key=sk-in-query")
            .build()
            .unwrap();
        assert!(!format!("{provider:?}").contains("sk-in-query"));
    }

    #[test]
    fn bad_urls_do_not_build() {
        for url in [
            "",
            "ftp://x/v1",
            "/v1",
            "http://user:pw@host/v1",
            "not a url",
        ] {
            assert!(HttpProvider::builder(url).build().is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn missing_key_is_provider_unavailable() {
        let provider = HttpProvider::builder("http://h/v1").build().unwrap();
        let mut request = Request::new(Bytes::new());
        request
            .extensions_mut()
            .insert(RouteTarget::new("p", "m", Endpoint::ChatCompletions));
        let error = provider.prepare(request).unwrap_err();
        assert_eq!(error.code(), Some("provider_unavailable"));
    }
}

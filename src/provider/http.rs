//! [`HttpProvider`]: an OpenAI-compatible upstream reached over HTTP(S).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tower_service::Service;

use super::body::UpstreamBody;
use super::client::HttpClient;
use super::headers;
use crate::error::BuildError;
use crate::error::Error;
use crate::extensions::{Endpoint, RequestId, RouteTarget, X_REQUEST_ID};

/// The default time an upstream has to send its response head: 10 minutes, as the OpenAI
/// SDKs allow (a non-streaming answer arrives only when the whole generation is done).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How a provider's API key is sent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProviderAuth {
    /// `Authorization: Bearer <key>` (OpenAI, Groq, OpenRouter, vLLM, ...).
    #[default]
    Bearer,
    /// The key alone in this header, e.g. `api-key` (Azure OpenAI).
    Header(HeaderName),
    /// No credential (a local Ollama or vLLM).
    None,
}

/// The credential added to each upstream request.
#[derive(Clone)]
enum Credential {
    /// Nothing to add.
    None,
    /// This header, its value marked sensitive.
    Header(HeaderName, HeaderValue),
    /// A key is needed but was not given: calls answer 503 `provider_unavailable`.
    Missing,
}

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
    settings: Arc<Settings>,
    client: HttpClient,
}

struct Settings {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without a trailing `/`, e.g. `/openai/v1`.
    base_path: String,
    credential: Credential,
    headers: HeaderMap,
    timeout: Duration,
    /// The upstream URL of every endpoint, made once (indexed by [`Endpoint::index`]).
    uris: Vec<Uri>,
}

impl HttpProvider {
    /// A builder for the provider at `base_url` (which may carry a path, e.g.
    /// `https://api.groq.com/openai/v1`).
    pub fn builder(base_url: impl Into<String>) -> HttpProviderBuilder {
        HttpProviderBuilder {
            base_url: base_url.into(),
            auth: ProviderAuth::Bearer,
            api_key: None,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            client: None,
            paths: HashMap::new(),
        }
    }

    fn prepare(&self, request: Request<Bytes>) -> Result<Request<Full<Bytes>>, Error> {
        let settings = &self.settings;
        let credential = match &settings.credential {
            Credential::Missing => return Err(Error::provider_unavailable()),
            credential => credential,
        };
        let (mut parts, body) = request.into_parts();
        let endpoint = parts
            .extensions
            .get::<RouteTarget>()
            .map(RouteTarget::endpoint)
            .ok_or_else(Error::internal)?;
        parts.uri = settings
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
        for (name, value) in &settings.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        if let Credential::Header(name, value) = credential {
            parts.headers.insert(name.clone(), value.clone());
        }
        parts.extensions.clear();
        Ok(Request::from_parts(parts, Full::new(body)))
    }
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.settings;
        let credential = match &settings.credential {
            Credential::None => "none",
            Credential::Header(..) => "set",
            Credential::Missing => "missing",
        };
        f.debug_struct("HttpProvider")
            .field(
                "base_url",
                &format_args!(
                    "{}://{}{}",
                    settings.scheme, settings.authority, settings.base_path
                ),
            )
            .field("credential", &credential)
            .field("timeout", &settings.timeout)
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
        match self.prepare(request) {
            Ok(request) => ResponseFuture {
                state: State::Waiting {
                    future: tokio::time::timeout(
                        self.settings.timeout,
                        self.client.inner.request(request),
                    ),
                },
            },
            Err(error) => ResponseFuture {
                state: State::Failed { error: Some(error) },
            },
        }
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
        Waiting { #[pin] future: Timeout<hyper_util::client::legacy::ResponseFuture> },
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
                let response = match ready!(future.poll(cx)) {
                    Err(elapsed) => {
                        return Poll::Ready(Err(Error::upstream_timeout().with_source(elapsed)));
                    }
                    Ok(Err(error)) if error.is_connect() => {
                        return Poll::Ready(Err(Error::upstream_unreachable().with_source(error)));
                    }
                    Ok(Err(error)) => {
                        return Poll::Ready(Err(Error::upstream_protocol().with_source(error)));
                    }
                    Ok(Ok(response)) => response,
                };
                let (mut parts, body) = response.into_parts();
                headers::to_client(&mut parts.headers);
                Poll::Ready(Ok(Response::from_parts(parts, UpstreamBody::from(body))))
            }
        }
    }
}

/// Builds an [`HttpProvider`]. See [`HttpProvider`].
#[must_use]
pub struct HttpProviderBuilder {
    base_url: String,
    auth: ProviderAuth,
    api_key: Option<String>,
    headers: Vec<(String, String)>,
    timeout: Duration,
    client: Option<HttpClient>,
    paths: HashMap<Endpoint, String>,
}

impl HttpProviderBuilder {
    /// How the key is sent (default [`ProviderAuth::Bearer`]).
    pub fn auth(mut self, auth: ProviderAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The provider's API key. Without one (and unless the auth is [`ProviderAuth::None`]),
    /// calls answer 503 `provider_unavailable` with `x-should-retry: false`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// A static header added to every upstream request (e.g. `HTTP-Referer` for OpenRouter).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How long the upstream has to send its response head (default 10 minutes): past it,
    /// 504 `upstream_timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
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
        self.client = Some(client);
        self
    }

    /// Checks the URL and headers and builds the provider.
    pub fn build(self) -> Result<HttpProvider, BuildError> {
        let url = self.base_url.trim();
        // Messages show the URL without its query, which may hold a key (`?key=`).
        let shown = without_query(url);
        let uri: Uri = url
            .parse()
            .map_err(|_| BuildError::new(format!("base_url `{shown}` is not a valid URL")))?;
        let scheme = uri
            .scheme()
            .filter(|s| **s == Scheme::HTTP || **s == Scheme::HTTPS)
            .cloned()
            .ok_or_else(|| {
                BuildError::new(format!(
                    "base_url `{shown}` must start with http:// or https://"
                ))
            })?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| BuildError::new(format!("base_url `{shown}` has no host")))?;
        if authority.as_str().contains('@') {
            return Err(BuildError::new(format!(
                "base_url for host `{}` must not carry credentials; use api_key",
                authority.host()
            )));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let base_query = uri.query().map(str::to_owned);
        let credential = match (&self.auth, self.api_key) {
            (ProviderAuth::None, _) => Credential::None,
            (_, None) => Credential::Missing,
            (auth, Some(key)) => {
                let (name, text) = match auth {
                    ProviderAuth::Header(name) => (name.clone(), key),
                    _ => (header::AUTHORIZATION, format!("Bearer {key}")),
                };
                let mut value = HeaderValue::try_from(text).map_err(|_| {
                    BuildError::new("api_key holds characters a header cannot carry")
                })?;
                value.set_sensitive(true);
                Credential::Header(name, value)
            }
        };
        for path in self.paths.values() {
            PathAndQuery::try_from(path.as_str()).map_err(|_| {
                BuildError::new(format!("endpoint path `{path}` is not a valid path"))
            })?;
        }
        let uris = Endpoint::ALL
            .into_iter()
            .map(|endpoint| {
                let path = self
                    .paths
                    .get(&endpoint)
                    .map_or(endpoint.upstream_path(), String::as_str);
                upstream_uri(&scheme, &authority, &base_path, base_query.as_deref(), path)
                    .map_err(|_| BuildError::new(format!("base_url `{shown}` is not a valid URL")))
            })
            .collect::<Result<Vec<Uri>, BuildError>>()?;
        let mut headers = HeaderMap::new();
        for (name, value) in self.headers {
            let header_name = HeaderName::try_from(name.as_str())
                .map_err(|_| BuildError::new(format!("header name `{name}` is invalid")))?;
            let value = HeaderValue::try_from(value)
                .map_err(|_| BuildError::new(format!("header `{name}` has an invalid value")))?;
            headers.insert(header_name, value);
        }
        let client = match self.client {
            Some(client) => client,
            None => HttpClient::shared()?,
        };
        Ok(HttpProvider {
            settings: Arc::new(Settings {
                scheme,
                authority,
                base_path,
                credential,
                headers,
                timeout: self.timeout,
                uris,
            }),
            client,
        })
    }
}

/// The upstream URL for an endpoint path: the base URL's path and query, never the client's
/// query (a client must not set or override, say, Azure's `api-version`).
fn upstream_uri(
    scheme: &Scheme,
    authority: &Authority,
    base_path: &str,
    base_query: Option<&str>,
    path: &str,
) -> Result<Uri, http::Error> {
    let query = base_query.filter(|q| !q.is_empty());
    let mut path_and_query =
        String::with_capacity(base_path.len() + path.len() + query.map_or(0, str::len) + 1);
    path_and_query.push_str(base_path);
    path_and_query.push_str(path);
    if let Some(query) = query {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
}

/// `url` up to its query: what may be shown in logs and messages.
fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or_default()
}

impl fmt::Debug for HttpProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProviderBuilder")
            .field("base_url", &without_query(&self.base_url))
            .field("auth", &self.auth)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

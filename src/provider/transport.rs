//! The transport every HTTP provider shares, whatever API it speaks: the base URL, the
//! credential, static headers, the response head timeout and the pooled client, and how a
//! failed exchange becomes an [`Error`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::time::Timeout;

use super::client::HttpClient;
use super::headers;
use crate::error::{BuildError, Error};
use crate::observe::{RequestLog, ServerAddress};

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
    /// The key alone in this header, e.g. `api-key` (Azure OpenAI), `x-api-key` (Anthropic)
    /// or `x-goog-api-key` (Gemini).
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

/// Where and how to reach one provider. Shared (in an `Arc`) by its service's clones.
pub(crate) struct Transport {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without a trailing `/`, e.g. `/openai/v1`.
    base_path: String,
    /// The base URL's query (e.g. Azure's `api-version`), never the client's.
    base_query: Option<String>,
    credential: Credential,
    headers: HeaderMap,
    pub(crate) timeout: Duration,
    client: HttpClient,
    /// The upstream's host and port, as an attempt record names them.
    server: ServerAddress,
}

impl Transport {
    /// The upstream URL of `path` (which may carry its own query) below the base URL.
    pub(crate) fn uri(&self, path: &str) -> Result<Uri, http::Error> {
        let query = self.base_query.as_deref().filter(|q| !q.is_empty());
        let mut path_and_query = String::with_capacity(
            self.base_path.len() + path.len() + query.map_or(0, str::len) + 1,
        );
        path_and_query.push_str(&self.base_path);
        path_and_query.push_str(path);
        if let Some(query) = query {
            path_and_query.push(if path.contains('?') { '&' } else { '?' });
            path_and_query.push_str(query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// Fails when the provider needs a key it was not given (503 `provider_unavailable`).
    pub(crate) fn check_credential(&self) -> Result<(), Error> {
        match self.credential {
            Credential::Missing => Err(Error::provider_unavailable()),
            _ => Ok(()),
        }
    }

    /// Adds the static headers and the credential (last, so nothing overrides it).
    pub(crate) fn add_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Credential::Header(name, value) = &self.credential {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Sends `request`, waiting at most the provider's timeout for the response head. The
    /// current span (an attempt's, when the resilience layer is above) gets the upstream's
    /// `server.address` and `server.port`, if it declares them.
    pub(crate) fn send(&self, request: Request<Full<Bytes>>) -> SendFuture {
        if crate::observe::genai::spans_wanted() {
            let span = tracing::Span::current();
            if !span.is_disabled() {
                span.record("server.address", &*self.server.host);
                span.record("server.port", i64::from(self.server.port));
            }
        }
        SendFuture {
            future: tokio::time::timeout(self.timeout, self.client.inner.request(request)),
        }
    }

    /// Records the upstream's address on the attempt under way, in the request's log (the
    /// client request's `extensions`), if it has one.
    pub(crate) fn record_server(&self, extensions: &http::Extensions) {
        if let Some(log) = extensions.get::<RequestLog>() {
            log.record_server(&self.server);
        }
    }

    /// The base URL without its query (which may hold a key), for `Debug`.
    pub(crate) fn shown(&self) -> impl fmt::Display + '_ {
        struct Shown<'a>(&'a Transport);
        impl fmt::Display for Shown<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let t = self.0;
                write!(f, "{}://{}{}", t.scheme, t.authority, t.base_path)
            }
        }
        Shown(self)
    }

    /// `"none"`, `"set"` or `"missing"`, for `Debug`.
    pub(crate) fn credential_state(&self) -> &'static str {
        match self.credential {
            Credential::None => "none",
            Credential::Header(..) => "set",
            Credential::Missing => "missing",
        }
    }
}

pin_project! {
    /// An upstream exchange up to its response head, failures mapped to [`Error`]s and the
    /// head's headers cleaned for the client.
    pub(crate) struct SendFuture {
        #[pin]
        future: Timeout<hyper_util::client::legacy::ResponseFuture>,
    }
}

impl Future for SendFuture {
    type Output = Result<Response<hyper::body::Incoming>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().future.poll(cx)) {
            Err(elapsed) => Err(Error::upstream_timeout().with_source(elapsed)),
            Ok(Err(error)) if error.is_connect() => {
                Err(Error::upstream_unreachable().with_source(error))
            }
            Ok(Err(error)) => Err(Error::upstream_protocol().with_source(error)),
            Ok(Ok(mut response)) => {
                headers::to_client(response.headers_mut());
                Ok(response)
            }
        })
    }
}

/// The settings a transport is built from; each provider's builder holds one.
pub(crate) struct TransportBuilder {
    pub(crate) base_url: String,
    pub(crate) auth: ProviderAuth,
    pub(crate) api_key: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) client: Option<HttpClient>,
}

impl TransportBuilder {
    /// Defaults for `base_url` sending the key as `auth` says.
    pub(crate) fn new(base_url: String, auth: ProviderAuth) -> Self {
        Self {
            base_url,
            auth,
            api_key: None,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            client: None,
        }
    }

    /// Checks the URL, key and headers.
    pub(crate) fn build(self) -> Result<Transport, BuildError> {
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
        let server = ServerAddress {
            // `[::1]` is `::1` as `server.address`.
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .into(),
            port: authority
                .port_u16()
                .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 }),
        };
        let transport = Transport {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            base_query: uri.query().map(str::to_owned),
            credential,
            headers,
            timeout: self.timeout,
            client,
            server,
        };
        // Every path a provider joins is checked once here rather than per request.
        transport
            .uri("/")
            .map_err(|_| BuildError::new(format!("base_url `{shown}` is not a valid URL")))?;
        Ok(transport)
    }
}

impl fmt::Debug for TransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportBuilder")
            .field("base_url", &without_query(&self.base_url))
            .field("auth", &self.auth)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// `url` up to its query: what may be shown in logs and messages.
pub(crate) fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or_default()
}

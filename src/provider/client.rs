//! [`HttpClient`]: the pooled HTTPS client providers share.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::BuildError;

/// The default time to open a TCP connection to an upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Connector = HttpsConnector<HttpConnector>;

/// A pooled HTTPS client (rustls with the `ring` provider and the webpki roots), HTTP/1.1 by
/// default.
///
/// Why HTTP/1.1: hyper's pool opens one HTTP/2 connection per host and multiplexes every
/// request on it, so past the provider's `SETTINGS_MAX_CONCURRENT_STREAMS` (often 100-256)
/// new requests would wait silently behind long streams. HTTP/1.1 opens a connection per
/// request in flight and keeps up to [`DEFAULT_POOL_MAX_IDLE_PER_HOST`] of them idle for
/// reuse. [`HttpClientBuilder::http2`] offers HTTP/2 by ALPN for providers known to allow
/// enough streams.
///
/// Cheap to clone; clones share one connection pool. Providers built without
/// [`HttpProviderBuilder::client`](super::HttpProviderBuilder::client) share one process-wide
/// client with the defaults.
#[derive(Clone)]
pub struct HttpClient {
    pub(super) inner: Client<Connector, Full<Bytes>>,
}

/// How long an idle pooled upstream connection is kept: 30 s, below most servers' keep-alive
/// so the router rarely reuses a connection the server is closing.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many idle connections are kept per upstream host: 128 (a burst of more is closed as it
/// ends instead of lingering).
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 128;

impl HttpClient {
    /// A new client with its own pool and the defaults.
    pub fn new() -> Result<Self, BuildError> {
        Self::builder().build()
    }

    /// A builder with the defaults: HTTP/1.1, [`DEFAULT_CONNECT_TIMEOUT`],
    /// [`DEFAULT_POOL_IDLE_TIMEOUT`], [`DEFAULT_POOL_MAX_IDLE_PER_HOST`].
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            http2: false,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
        }
    }

    pub(super) fn shared() -> Result<Self, BuildError> {
        static SHARED: OnceLock<HttpClient> = OnceLock::new();
        if let Some(client) = SHARED.get() {
            return Ok(client.clone());
        }
        let client = Self::new()?;
        Ok(SHARED.get_or_init(|| client).clone())
    }
}

/// Builds an [`HttpClient`]. See [`HttpClient`].
#[derive(Clone, Debug)]
#[must_use]
pub struct HttpClientBuilder {
    connect_timeout: Duration,
    http2: bool,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
}

impl HttpClientBuilder {
    /// How long a TCP connect may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Offers HTTP/2 by ALPN (default off). All requests to one host then share one
    /// connection: only for providers that allow more concurrent streams than the router
    /// will send.
    pub fn http2(mut self, enable: bool) -> Self {
        self.http2 = enable;
        self
    }

    /// How long an idle connection is kept for reuse (default 30 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per host (default 128).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<HttpClient, BuildError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        // Small request/response writes must not wait for Nagle.
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        // The crypto provider is passed explicitly: no process-wide default is installed, so
        // a host using another provider cannot clash with ours.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|e| BuildError::new(format!("TLS setup failed: {e}")))?
            .https_or_http();
        let https = if self.http2 {
            https.enable_http1().enable_http2().wrap_connector(http)
        } else {
            https.enable_http1().wrap_connector(http)
        };
        // The pool timer closes idle connections when they expire, not only when the pool is
        // next asked for one.
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(https);
        Ok(HttpClient { inner })
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

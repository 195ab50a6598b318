//! Serving: the accept loop (socket options, connection cap, header timeout, graceful
//! shutdown) and the gateway's service (the router under the mount, `/health` and `/ready`
//! beside it, `/metrics` too unless it has its own listener, OpenAI-shaped 404s elsewhere).
//!
//! Served with hyper directly (no web framework): the gateway routes three fixed paths, and
//! every microsecond spent around the router is the gateway's to account for.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use ai_router::RouterBody;
use ai_router::auth::KeyLimiter;
use ai_router::body::Full;
use ai_router::observe::Metrics;
use ai_router::request_id::{self, SetRequestId, SetRequestIdLayer};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::{Layer as _, Service};

use crate::config::ServerConfig;
use crate::{GatewayLimiter, GatewayRouter};

/// What the serving code counts, for `/health` and for tests.
#[derive(Debug, Default)]
pub(crate) struct ServerState {
    /// Connections accepted.
    pub(crate) accepted: AtomicU64,
    /// Accepted connections whose `TCP_NODELAY` was read back set.
    pub(crate) nodelay: AtomicU64,
    /// Connections that ended.
    pub(crate) closed: AtomicU64,
    /// Set when shutdown starts: `/ready` answers 503 so a load balancer stops sending.
    pub(crate) draining: AtomicBool,
}

impl ServerState {
    fn open_connections(&self) -> u64 {
        let accepted = self.accepted.load(Ordering::Relaxed);
        accepted.saturating_sub(self.closed.load(Ordering::Relaxed))
    }
}

/// The gateway's service. Cheap to clone (one per connection, and one per request).
#[derive(Clone)]
pub(crate) struct App {
    /// The configured router, swapped on reload: each request is served by the one current
    /// when it arrives.
    router: GatewayRouter,
    outside: SetRequestId<Outside>,
    /// The mount without a trailing `/` (empty: the router takes every other path).
    mount: Arc<str>,
    /// Whether `GET /metrics` is served here (beside `/health`).
    serves_metrics: bool,
}

impl App {
    /// The router at `mount`; answers outside it get a request id and go to `observe`, and
    /// `metrics` (if any) are served at `/metrics`.
    pub(crate) fn new(
        router: GatewayRouter,
        mount: &str,
        observe: SetRequestIdLayer,
        state: Arc<ServerState>,
        metrics: Option<Metrics>,
    ) -> Self {
        Self {
            router,
            serves_metrics: metrics.is_some(),
            outside: observe.layer(Outside::new(state).metrics(metrics)),
            mount: mount.trim_end_matches('/').into(),
        }
    }

    fn is_mounted(&self, path: &str) -> bool {
        match path.strip_prefix(&*self.mount) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// The body of the gateway's answers.
pub(crate) type AppBody =
    Either<RouterBody<<GatewayLimiter as KeyLimiter>::Permit>, request_id::ResponseBody<Full>>;

impl Service<Request<Incoming>> for App {
    type Response = Response<AppBody>;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both inner services are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> AppFuture {
        let path = request.uri().path();
        let outside = matches!(path, "/health" | "/ready")
            || (self.serves_metrics && path == "/metrics")
            || !self.is_mounted(path);
        if outside {
            AppFuture::Outside {
                future: self.outside.call(request),
            }
        } else {
            AppFuture::Router {
                future: self.router.call(request),
            }
        }
    }
}

type RouterFuture = <GatewayRouter as Service<Request<Incoming>>>::Future;
type OutsideFuture = <SetRequestId<Outside> as Service<Request<Incoming>>>::Future;

pin_project! {
    /// Response future of [`App`].
    #[project = AppFutureProj]
    pub(crate) enum AppFuture {
        Router { #[pin] future: RouterFuture },
        Outside { #[pin] future: OutsideFuture },
    }
}

impl Future for AppFuture {
    type Output = Result<Response<AppBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AppFutureProj::Router { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Either::Left))),
            AppFutureProj::Outside { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Either::Right))),
        }
    }
}

/// What the gateway answers outside the mount: `/health`, `/ready`, `/metrics` when given
/// metrics, and 404s.
#[derive(Clone)]
pub(crate) struct Outside {
    state: Arc<ServerState>,
    metrics: Option<Metrics>,
}

impl Outside {
    pub(crate) fn new(state: Arc<ServerState>) -> Self {
        Self {
            state,
            metrics: None,
        }
    }

    /// Serves `metrics` at `GET /metrics`.
    pub(crate) fn metrics(mut self, metrics: Option<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

impl<B> Service<Request<B>> for Outside {
    type Response = Response<Full>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method();
        let path = request.uri().path();
        if let (Some(metrics), "/metrics") = (&self.metrics, path) {
            return std::future::ready(Ok(metrics_answer(metrics, method)));
        }
        let response = match (path, method) {
            ("/health" | "/ready", &Method::GET) => {
                let draining = self.state.draining.load(Ordering::Relaxed);
                let (status, word) = match (path, draining) {
                    ("/ready", true) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
                    ("/ready", false) => (StatusCode::OK, "ready"),
                    _ => (StatusCode::OK, "ok"),
                };
                let body = format!(
                    r#"{{"status":"{word}","connections":{}}}"#,
                    self.state.open_connections()
                );
                let mut response = Response::new(Full::new(body));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            ("/health" | "/ready", _) => {
                ai_router::Error::method_not_allowed("GET").into_response()
            }
            _ => ai_router::Error::unknown_url(method, path).into_response(),
        };
        std::future::ready(Ok(response))
    }
}

/// `/metrics`: Prometheus text to a `GET`, 405 otherwise.
fn metrics_answer(metrics: &Metrics, method: &Method) -> Response<Full> {
    if method != Method::GET {
        return ai_router::Error::method_not_allowed("GET").into_response();
    }
    let mut response = Response::new(Full::new(metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(Metrics::CONTENT_TYPE),
    );
    response
}

/// The metrics listener's service: `GET /metrics`, 404 elsewhere.
#[derive(Clone)]
struct MetricsOnly(Metrics);

impl<B> Service<Request<B>> for MetricsOnly {
    type Response = Response<Full>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (method, path) = (request.method(), request.uri().path());
        std::future::ready(Ok(if path == "/metrics" {
            metrics_answer(&self.0, method)
        } else {
            ai_router::Error::unknown_url(method, path).into_response()
        }))
    }
}

/// Serves `metrics` at `/metrics` on `listener` (its own port, e.g. for Prometheus only)
/// until the future is dropped.
pub(crate) fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    settings: &ServerConfig,
) -> impl Future<Output = ()> + Send + 'static {
    let builder = connection_builder(settings);
    let service = MetricsOnly(metrics);
    async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed on the metrics listener");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let connection = builder
                .serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service.clone()),
                )
                .into_owned();
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "metrics connection ended with an error");
                }
            });
        }
    }
}

/// Sets the options every accepted socket gets, and reads `TCP_NODELAY` back.
fn configure(stream: &TcpStream, state: &ServerState) {
    // Without it, the last small write of every answer (a stream's final events, `[DONE]`)
    // waits for the client's delayed ACK: ~40 ms per stream.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "cannot set TCP_NODELAY on an accepted connection");
    }
    if stream.nodelay().unwrap_or(false) {
        state.nodelay.fetch_add(1, Ordering::Relaxed);
    }
}

/// The hyper server settings: HTTP/1.1 (what the OpenAI SDKs speak; put a TLS proxy in front
/// for HTTP/2), with a timer so the header read timeout runs from a connection's first
/// moment: a client that sends nothing, or half a head, is closed when it expires. (Detecting
/// HTTP/2 by its preface would first wait for bytes with no deadline at all.)
fn connection_builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(settings.header_read_timeout_secs))
        .keep_alive(true);
    builder
}

/// Accepts connections on `listener` and serves `app` on each until `shutdown` resolves; then
/// stops accepting, lets open connections finish their requests for `grace`, and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    settings: &ServerConfig,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let builder = connection_builder(settings);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's listen queue.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // e.g. EMFILE: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        state.accepted.fetch_add(1, Ordering::Relaxed);
        configure(&stream, &state);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            state.closed.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    state.draining.store(true, Ordering::Relaxed);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; exiting");
        }
    }
}

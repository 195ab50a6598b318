//! A ready AI gateway: ai-router served by hyper, configured by a TOML file.
//!
//! ```sh
//! cargo run --release --example gateway -- --config examples/gateway.toml
//! ```
//!
//! Serves the router under the configured mount (default `/v3/router`), and `GET /health` and
//! `GET /ready` beside it (`/ready` answers 503 once shutdown has begun). Providers with
//! `mock = true` are served by the repo's mock OpenAI upstream, started in-process on a
//! loopback port, so the shipped config answers offline. Ctrl-C or SIGTERM stops accepting
//! connections and lets in-flight requests finish for `shutdown_grace_secs`.
//!
//! Logs go to stderr through a non-blocking writer, in batches (a slow terminal never holds a
//! request, and a request's line costs no system call), with colours only on a terminal: one
//! access line per request (`[telemetry] access_log`: `text`, `json` or `off`) and diagnostics
//! filtered by `RUST_LOG` (default `info`).
//!
//! Prometheus metrics of the router's requests are served at `GET /metrics`, on
//! `[telemetry] metrics_listen` when set, else beside `/health` (no key needed: firewall it).
//!
//! Traces (one span per request, one per upstream attempt) go to the OTLP/HTTP collector at
//! `[telemetry] otlp_endpoint` when the gateway is built with the `otel` feature
//! (`cargo run --example gateway --features otel`); built without it, the setting is ignored,
//! with a warning at start.
//!
//! SIGHUP (Unix) reloads the config file: keys, providers, aliases and the other routing
//! settings change without dropping traffic (requests in flight finish on the config they
//! started with), and the key limits keep their state (one limiter for the gateway's life).
//! A file that fails to load is logged and the running config keeps serving. `listen`,
//! `mount`, `shutdown_grace_secs`, `[server]`, `[telemetry]` and `[limits]` need a restart: a
//! reload keeps their running values, with a warning if the file changed them.
//!
//! Per-key limits are kept in the process, or in Redis for a fleet (`[limits] backend =
//! "redis"`, built with `--features redis`).

mod config;
mod limits;
mod log;
mod log_writer;
#[cfg(all(test, feature = "otel"))]
mod otel_tests;
/// The Redis test harness of `tests/redis` (a real `redis-server` on a free port).
#[cfg(all(test, feature = "redis"))]
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]
#[path = "../../tests/redis/server.rs"]
mod redis_server;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod reload_tests;
mod serve;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ai_router::auth::MemoryKeyStore;
use ai_router::in_flight::InFlightLimitLayer;
use ai_router::mock::MockUpstream;
use ai_router::observe::{AccessLog, AccessLogFormat, Metrics, Observer, RequestSummary};
use ai_router::request_id::SetRequestIdLayer;
use ai_router::{AiRouter, ReloadHandle, ReloadableRouter};
use tokio::net::TcpListener;

use crate::config::{
    AccessLogConfig, Config, ConfigError, MetricNames, ProviderKind, RestartOnly, TelemetryConfig,
};
use crate::log_writer::{Batching, LogWriter};
use crate::serve::{App, ServerState};

/// The key the in-process mock upstream expects: the router swaps it in, as it would a real
/// provider's key.
const DEMO_UPSTREAM_KEY: &str = "sk-demo-upstream";

/// mimalloc: a request allocates a few dozen times (headers, bodies, futures, the log line);
/// it does each in fewer instructions than glibc's allocator and never consolidates on the
/// request path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let loaded = config_path().and_then(|path| Config::load(&path).map(|config| (path, config)));
    let (path, config) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Lines are written by a thread of their own, in batches (at most 10 ms late).
    let (writer, _flush_on_exit) = match LogWriter::start(std::io::stderr(), Batching::default()) {
        Ok(started) => started,
        Err(error) => {
            eprintln!("error: cannot start the log writer: {error}");
            return ExitCode::FAILURE;
        }
    };
    log::init(config.telemetry.access_log, writer.clone());
    if cfg!(not(feature = "otel")) && config.telemetry.otlp_endpoint.is_some() {
        tracing::warn!(
            "`[telemetry] otlp_endpoint` is set, but this gateway was built without the `otel` \
             feature: no traces are exported (cargo run --example gateway --features otel)"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, path, writer)) {
        Ok(traces) => {
            stop_traces(traces);
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The exporter of the gateway's traces (feature `otel`): spans written from each request's
/// summary, no `tracing` span involved.
#[cfg(feature = "otel")]
type Traces = ai_router::otel::OtlpExporter;
/// Built without the `otel` feature, the gateway has no exporter (no value of this type).
#[cfg(not(feature = "otel"))]
#[derive(Clone)]
enum Traces {}

/// Starts exporting traces when `[telemetry] otlp_endpoint` is set (and the `otel` feature
/// is on).
fn start_traces(telemetry: &TelemetryConfig) -> Result<Option<Traces>, ConfigError> {
    #[cfg(feature = "otel")]
    if let Some(endpoint) = &telemetry.otlp_endpoint {
        let service = telemetry.service_name.as_deref().unwrap_or("ai-router");
        return ai_router::otel::OtlpExporter::builder(endpoint.as_str())
            .service_name(service)
            .build()
            .map(Some)
            .map_err(|e| ConfigError(format!("invalid config: [telemetry] otlp_endpoint: {e}")));
    }
    let _ = telemetry;
    Ok(None)
}

/// Sends the spans still queued, waiting at most 5 s for the collector.
fn stop_traces(traces: Option<Traces>) {
    #[cfg(feature = "otel")]
    if let Some(traces) = traces {
        if !traces.shutdown(Duration::from_secs(5)) {
            eprintln!("warning: not every span could be sent to the OTLP collector");
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = traces;
}

/// `--config PATH` (default `examples/gateway.toml`).
fn config_path() -> Result<PathBuf, ConfigError> {
    let mut args = std::env::args().skip(1);
    let mut path = PathBuf::from("examples/gateway.toml");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                path = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| ConfigError("--config needs a path".into()))?;
            }
            "--help" | "-h" => {
                println!("usage: gateway [--config PATH]");
                std::process::exit(0);
            }
            other => {
                return Err(ConfigError(format!(
                    "unknown argument `{other}` (try --help)"
                )));
            }
        }
    }
    Ok(path)
}

/// Serves until a shutdown signal; returns the trace exporter, to send what it still holds.
async fn run(
    config: Config,
    path: PathBuf,
    log: impl std::io::Write + Send + 'static,
) -> Result<Option<Traces>, ConfigError> {
    let gateway = Gateway::start(config, log).await?.reloads_from(path);
    let traces = gateway.traces.clone();
    #[cfg(unix)]
    match reload_on_hangup(gateway.reloader()) {
        Ok(reloads) => {
            tokio::spawn(reloads);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: the config will not be reloaded");
        }
    }
    tracing::info!(
        "ai-router listening on http://{}{}",
        gateway.addr,
        gateway.mount
    );
    let metrics = gateway.metrics_addr.unwrap_or(gateway.addr);
    tracing::info!("metrics at http://{metrics}/metrics");
    gateway.serve(shutdown_signal()).await;
    Ok(traces)
}

/// The limiter of the gateway's routers: one instance, made in [`Gateway::start`] from
/// `[limits]` and shared by every router a reload builds, so rpm windows, token budgets and
/// concurrency slots survive reloads.
pub(crate) use crate::limits::GatewayLimiter;

/// One router built from a config file.
type ConfiguredRouter = AiRouter<MemoryKeyStore, GatewayLimiter>;

/// What the gateway serves under its mount: the configured router, swapped on reload.
pub(crate) type GatewayRouter = ReloadableRouter<MemoryKeyStore, GatewayLimiter>;

/// A gateway ready to serve: its listener bound, its router built.
pub(crate) struct Gateway {
    listener: TcpListener,
    pub(crate) addr: SocketAddr,
    pub(crate) mount: String,
    app: App,
    config: Config,
    pub(crate) state: Arc<ServerState>,
    /// The router's metrics.
    pub(crate) metrics: Metrics,
    /// The metrics' own listener (`[telemetry] metrics_listen`), and its address.
    metrics_listener: Option<TcpListener>,
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Reloads the config file into the router served.
    reloader: Reloader,
    /// The trace exporter (`[telemetry] otlp_endpoint`, feature `otel`).
    pub(crate) traces: Option<Traces>,
    /// Kept alive as long as the gateway serves.
    _mock: Option<MockUpstream>,
}

impl Gateway {
    /// Builds the router from `config` (starting the demo mock if a provider wants it) and
    /// binds the listener. The access log goes to `log`.
    pub(crate) async fn start(
        config: Config,
        log: impl std::io::Write + Send + 'static,
    ) -> Result<Self, ConfigError> {
        let mock = if config.providers.values().any(|p| p.mock) {
            let mock = MockUpstream::builder()
                .api_key(DEMO_UPSTREAM_KEY)
                .keep_requests(0)
                .start()
                .await
                .map_err(|e| ConfigError(format!("cannot start the demo mock upstream: {e}")))?;
            tracing::info!(base_url = %mock.base_url(), "demo mock upstream started");
            Some(mock)
        } else {
            None
        };
        let mock_origin = mock.as_ref().map(MockUpstream::origin);

        // One access log for the router and for the answers outside its mount.
        let access_log: Option<Arc<dyn Observer>> = match config.telemetry.access_log {
            AccessLogConfig::Text => Some(Arc::new(AccessLog::new(AccessLogFormat::Text, log))),
            AccessLogConfig::Json => Some(Arc::new(AccessLog::new(AccessLogFormat::Json, log))),
            AccessLogConfig::Off => None,
        };
        let metrics = config.metrics();
        let traces = start_traces(&config.telemetry)?;
        let telemetry = Telemetry {
            metrics: metrics.clone(),
            access_log: access_log.clone(),
            traces: traces.clone(),
        };
        // Answers outside the mount are logged, not counted.
        let on_end = move |summary: &RequestSummary| {
            if let Some(log) = &access_log {
                log.on_end(summary);
            }
        };

        // Traces are written from the summaries: each request needs its trace context, and
        // no GenAI `tracing` span (the log's formatter would format their every field).
        // Without export, the policy still matters when clients' context is refused: their
        // `traceparent` must not reach the upstreams then.
        let refuses_clients = config.telemetry.join_client_traces == Some(false);
        let trace_policy =
            (traces.is_some() || refuses_clients).then(|| config.telemetry.trace_policy());
        let parts = RouterParts {
            limiter: GatewayLimiter::new(&config.limits, |var| std::env::var(var).ok())?,
            telemetry,
            mock_origin,
            trace_policy,
            mount: config.mount.clone(),
            in_flight: InFlightLimitLayer::new(config.server.max_in_flight),
        };
        let router = GatewayRouter::new(parts.build(&config)?);
        let reloader = Reloader::new(parts, router.handle(), &config);

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ConfigError(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ConfigError(format!("cannot read the listening address: {e}")))?;
        let (metrics_listener, metrics_addr) = match config.telemetry.metrics_listen {
            Some(at) => {
                let listener = TcpListener::bind(at)
                    .await
                    .map_err(|e| ConfigError(format!("cannot listen for metrics on {at}: {e}")))?;
                let addr = listener.local_addr().map_err(|e| {
                    ConfigError(format!("cannot read the metrics listening address: {e}"))
                })?;
                (Some(listener), Some(addr))
            }
            None => (None, None),
        };
        let mount = config.mount.trim_end_matches('/').to_owned();
        let state = Arc::new(ServerState::default());
        let observe = SetRequestIdLayer::new().genai_spans(false).observer(on_end);
        let beside = metrics_listener.is_none().then(|| metrics.clone());
        let app = App::new(router, &mount, observe, state.clone(), beside);
        Ok(Self {
            listener,
            addr,
            mount,
            app,
            config,
            state,
            metrics,
            metrics_listener,
            metrics_addr,
            reloader,
            traces,
            _mock: mock,
        })
    }

    /// Reloads read `path` (the file `config` came from).
    pub(crate) fn reloads_from(mut self, path: PathBuf) -> Self {
        self.reloader.path = Some(path.into());
        self
    }

    /// What reloads the config file into this gateway (on SIGHUP, or in a test).
    pub(crate) fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves until `shutdown` resolves, then drains for `shutdown_grace_secs`.
    pub(crate) async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let settings = &self.config.server;
        let metrics = self
            .metrics_listener
            .map(|listener| tokio::spawn(serve::serve_metrics(listener, self.metrics, settings)));
        serve::serve(
            self.listener,
            self.app,
            settings,
            self.state,
            shutdown,
            grace,
        )
        .await;
        if let Some(metrics) = metrics {
            metrics.abort();
        }
    }
}

/// The router's observer: its metrics, the access log, the trace exporter.
#[derive(Clone)]
struct Telemetry {
    metrics: Metrics,
    access_log: Option<Arc<dyn Observer>>,
    #[cfg_attr(not(feature = "otel"), allow(dead_code))] // Read with the `otel` feature only.
    traces: Option<Traces>,
}

impl Observer for Telemetry {
    fn on_start(&self) {
        self.metrics.on_start();
    }

    fn on_end(&self, summary: &RequestSummary) {
        self.metrics.on_end(summary);
        if let Some(log) = &self.access_log {
            log.on_end(summary);
        }
        #[cfg(feature = "otel")]
        if let Some(traces) = &self.traces {
            traces.on_end(summary);
        }
    }
}

/// What every router of a gateway is built with besides its config file's routing settings:
/// made once at start, kept across reloads.
#[derive(Clone)]
struct RouterParts {
    /// One limiter for the gateway's life.
    limiter: GatewayLimiter,
    /// The metrics and the access log.
    telemetry: Telemetry,
    /// The demo mock's origin, if one was started.
    mock_origin: Option<String>,
    /// How requests get their trace context (only when traces are exported).
    trace_policy: Option<ai_router::extensions::TracePolicy>,
    /// The mount, read at start (a reload cannot change it).
    mount: String,
    /// The in-flight cap: one for the gateway's life, so requests still in flight on a
    /// router a reload replaced keep counting.
    in_flight: InFlightLimitLayer,
}

impl RouterParts {
    /// Builds the router `config` describes (its keys, providers, aliases and body settings;
    /// the rest is `self`'s), at start and on each reload.
    fn build(&self, config: &Config) -> Result<ConfiguredRouter, ConfigError> {
        let invalid = |e: &dyn std::fmt::Display| ConfigError(format!("invalid config: {e}"));
        let env = |var: &str| std::env::var(var).ok();
        if self.mock_origin.is_none() {
            if let Some(name) = config
                .providers
                .iter()
                .find_map(|(n, p)| p.mock.then_some(n))
            {
                return Err(ConfigError(format!(
                    "providers.{name}: `mock = true` needs the demo mock upstream, started only \
                     when the gateway starts with a mock provider: restart the gateway"
                )));
            }
        }
        let mut builder = AiRouter::builder()
            .genai_spans(false)
            .mount_path(self.mount.as_str())
            .keys(config.key_store(env)?)
            .limiter(self.limiter.clone())
            .in_flight_limit(self.in_flight.clone())
            .observer(self.telemetry.clone());
        if let Some(policy) = self.trace_policy {
            builder = builder.trace_policy(policy);
        }
        for (name, provider) in &config.providers {
            let mock = self
                .mock_origin
                .as_deref()
                .map(|url| (url, DEMO_UPSTREAM_KEY));
            builder = match provider.kind {
                ProviderKind::Openai => builder.provider(
                    name.as_str(),
                    config
                        .http_provider(name, provider, mock, env)
                        .map_err(|e| invalid(&e))?,
                ),
                ProviderKind::Anthropic => builder.provider(
                    name.as_str(),
                    config
                        .anthropic_provider(name, provider, mock, env)
                        .map_err(|e| invalid(&e))?,
                ),
                ProviderKind::Gemini => builder.provider(
                    name.as_str(),
                    config
                        .gemini_provider(name, provider, mock, env)
                        .map_err(|e| invalid(&e))?,
                ),
            };
            if let Some(cooldown) = &provider.cooldown {
                // Checked when the config was read.
                let cooldown = cooldown.cooldown().map_err(ConfigError)?;
                builder = builder.cooldown(name.as_str(), cooldown);
            }
            builder = builder
                .stream_settings(name.as_str(), Config::stream_settings(provider))
                .allow_any_model(name.as_str(), provider.allow_any_model)
                .models(name.as_str(), provider.models.iter().cloned());
        }
        for (key, model) in &config.default_models {
            builder =
                builder.default_model(config::endpoint("default_models", key)?, model.as_str());
        }
        for (key, limit) in &config.body_limits {
            builder = builder.endpoint_body_limit(config::endpoint("body_limits", key)?, *limit);
        }
        for (name, alias) in &config.models {
            // Checked when the config was read.
            let policy = alias.policy().map_err(ConfigError)?;
            builder = builder
                .alias(name.as_str(), alias.targets.iter().cloned())
                .alias_policy(name.as_str(), policy);
        }
        if let Some(limit) = config.body_limit {
            builder = builder.body_limit(limit);
        }
        builder.build().map_err(|e| invalid(&e))
    }
}

/// Re-reads the gateway's config file and swaps the router it describes in, on SIGHUP or when
/// a test asks. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Reloader {
    /// The file the gateway was started with (none: started from text, nothing to re-read).
    path: Option<Arc<Path>>,
    inner: Arc<ReloaderInner>,
}

/// What every clone of a [`Reloader`] shares.
struct ReloaderInner {
    parts: RouterParts,
    handle: ReloadHandle<MemoryKeyStore, GatewayLimiter>,
    /// The restart-only settings the gateway runs with.
    started: RestartOnly,
    /// The names the metrics know (from the config at start).
    metric_names: MetricNames,
    /// One reload at a time: the last file read is the one that serves.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    fn new(
        parts: RouterParts,
        handle: ReloadHandle<MemoryKeyStore, GatewayLimiter>,
        started: &Config,
    ) -> Self {
        Self {
            path: None,
            inner: Arc::new(ReloaderInner {
                parts,
                handle,
                started: started.restart_only(),
                metric_names: started.metric_names(),
                one_at_a_time: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Reads the config file again, builds its router (same limiter, metrics, access log and
    /// demo mock) and serves it from the next request on. A file that fails to read, parse,
    /// check or build is logged and returned, and the running config keeps serving.
    pub(crate) async fn reload(&self) -> Result<(), ConfigError> {
        let reloaded = self.try_reload().await;
        if let Err(error) = &reloaded {
            tracing::error!("config not reloaded, the running one keeps serving: {error}");
        }
        reloaded
    }

    async fn try_reload(&self) -> Result<(), ConfigError> {
        let Some(path) = self.path.clone() else {
            return Err(ConfigError(
                "the gateway was not started from a config file: nothing to reload".into(),
            ));
        };
        let inner = &*self.inner;
        let _one_at_a_time = inner.one_at_a_time.lock().await;
        let file = path.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&file))
            .await
            .map_err(|e| ConfigError(format!("cannot read config `{}`: {e}", path.display())))??;
        let router = inner.parts.build(&config)?;
        for setting in inner.started.changed(&config.restart_only()) {
            tracing::warn!(
                setting,
                "changed in the config file, but only a restart applies it: the running value is kept"
            );
        }
        if config.metric_names().adds_to(&inner.metric_names) {
            tracing::warn!(
                "the config names keys, providers or models unknown when the gateway started: \
                 metrics count them as `other` until a restart"
            );
        }
        inner.handle.reload(router);
        tracing::info!(
            path = %path.display(),
            keys = config.keys.len(),
            providers = config.providers.len(),
            aliases = config.models.len(),
            "config reloaded"
        );
        Ok(())
    }
}

/// Reloads the config on every SIGHUP, for as long as the returned future runs. The handler is
/// installed before this returns: from then on, a SIGHUP reloads instead of ending the process.
#[cfg(unix)]
pub(crate) fn reload_on_hangup(
    reloader: Reloader,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            // Logged by `reload`; the running config keeps serving on an error.
            let _ = reloader.reload().await;
        }
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

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
//! Logs go to stderr through a non-blocking writer (a slow terminal never holds a request),
//! with colours only on a terminal: one access line per request (`[telemetry] access_log`:
//! `text`, `json` or `off`) and diagnostics filtered by `RUST_LOG` (default `info`).
//!
//! Prometheus metrics of the router's requests are served at `GET /metrics`, on
//! `[telemetry] metrics_listen` when set, else beside `/health` (no key needed: firewall it).
//!
//! Traces (one span per request, one per upstream attempt) go to the OTLP/HTTP collector at
//! `[telemetry] otlp_endpoint` when the gateway is built with the `otel` feature
//! (`cargo run --example gateway --features otel`); built without it, the setting is ignored,
//! with a warning at start.

mod config;
mod serve;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ai_router::AiRouter;
use ai_router::mock::MockUpstream;
use ai_router::observe::{AccessLog, AccessLogFormat, Metrics, Observer, RequestSummary};
use ai_router::request_id::SetRequestIdLayer;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{AccessLogConfig, Config, ConfigError, ProviderKind, TelemetryConfig};
use crate::serve::{App, ServerState};

/// The key the in-process mock upstream expects: the router swaps it in, as it would a real
/// provider's key.
const DEMO_UPSTREAM_KEY: &str = "sk-demo-upstream";

fn main() -> ExitCode {
    let config = match config_path().and_then(|path| Config::load(&path)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let traces = match start_traces(&config.telemetry) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    init_logging(config.telemetry.access_log, writer.clone(), traces.as_ref());
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
    let code = match runtime.block_on(run(config, writer)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    };
    stop_traces(traces);
    code
}

/// The exporter of the gateway's traces (feature `otel`).
#[cfg(feature = "otel")]
type Traces = ai_router::otel::OtlpTracing;
/// Built without the `otel` feature, the gateway has no exporter.
#[cfg(not(feature = "otel"))]
type Traces = std::convert::Infallible;

/// Starts exporting traces when `[telemetry] otlp_endpoint` is set (and the `otel` feature
/// is on).
fn start_traces(telemetry: &TelemetryConfig) -> Result<Option<Traces>, ConfigError> {
    #[cfg(feature = "otel")]
    if let Some(endpoint) = &telemetry.otlp_endpoint {
        let service = telemetry.service_name.as_deref().unwrap_or("ai-router");
        return ai_router::otel::OtlpTracing::builder(endpoint.as_str())
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

/// Diagnostics to `writer`, filtered by `RUST_LOG` (default `info`); JSON when the access log
/// is JSON, colours only on a terminal. With `traces`, the router's spans (INFO and up,
/// whatever `RUST_LOG` says) are exported too.
fn init_logging(
    format: AccessLogConfig,
    writer: tracing_appender::non_blocking::NonBlocking,
    traces: Option<&Traces>,
) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = if format == AccessLogConfig::Json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    #[cfg(feature = "otel")]
    let exported = traces.map(|traces| {
        traces.layer().with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("ai_router", tracing::Level::INFO),
        )
    });
    #[cfg(not(feature = "otel"))]
    let exported: Option<tracing_subscriber::layer::Identity> = traces.map(|never| match *never {});
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(exported)
        .init();
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

async fn run(config: Config, log: impl std::io::Write + Send + 'static) -> Result<(), ConfigError> {
    let gateway = Gateway::start(config, log).await?;
    tracing::info!(
        "ai-router listening on http://{}{}",
        gateway.addr,
        gateway.mount
    );
    let metrics = gateway.metrics_addr.unwrap_or(gateway.addr);
    tracing::info!("metrics at http://{metrics}/metrics");
    gateway.serve(shutdown_signal()).await;
    Ok(())
}

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
        let invalid = |e: &dyn std::fmt::Display| ConfigError(format!("invalid config: {e}"));
        let env = |var: &str| std::env::var(var).ok();
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
        let telemetry = Telemetry {
            metrics: metrics.clone(),
            access_log: access_log.clone(),
        };
        // Answers outside the mount are logged, not counted.
        let on_end = move |summary: &RequestSummary| {
            if let Some(log) = &access_log {
                log.on_end(summary);
            }
        };

        // GenAI spans only when they are exported: the log's formatter would otherwise
        // format every span's fields for nothing (tens of µs per request).
        let genai_spans = cfg!(feature = "otel") && config.telemetry.otlp_endpoint.is_some();
        let mut builder = AiRouter::builder()
            .genai_spans(genai_spans)
            .mount_path(config.mount.as_str())
            .keys(config.key_store(env)?)
            .max_in_flight(config.server.max_in_flight)
            .observer(telemetry);
        for (name, provider) in &config.providers {
            let mock = mock_origin.as_deref().map(|url| (url, DEMO_UPSTREAM_KEY));
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
        let router = builder.build().map_err(|e| invalid(&e))?;

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
        let observe = SetRequestIdLayer::new()
            .genai_spans(genai_spans)
            .observer(on_end);
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
            _mock: mock,
        })
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

/// The router's observer: its metrics, then the access log.
struct Telemetry {
    metrics: Metrics,
    access_log: Option<Arc<dyn Observer>>,
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
    }
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

//! A ready AI gateway: ai-router behind axum, configured by a TOML file.
//!
//! ```sh
//! cargo run --example gateway -- --config examples/gateway.toml
//! ```
//!
//! Serves the router under the configured mount (default `/v3/router`) and `GET /health`
//! outside it. Providers with `mock = true` are served by the repo's mock OpenAI upstream,
//! started in-process on a loopback port, so the shipped config answers offline. Ctrl-C or
//! SIGTERM stops accepting connections and lets in-flight requests finish for
//! `shutdown_grace_secs`. Logs go to stderr; the level comes from `RUST_LOG` (default `info`).

mod config;

use std::future::IntoFuture as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ai_router::AiRouter;
use ai_router::mock::MockUpstream;
use ai_router::request_id::SetRequestIdLayer;
use axum::routing::get;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigError};

/// The key the in-process mock upstream expects: the router swaps it in, as it would a real
/// provider's key.
const DEMO_UPSTREAM_KEY: &str = "sk-demo-upstream";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
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

async fn run() -> Result<(), ConfigError> {
    let path = config_path()?;
    let config = Config::load(&path)?;
    let invalid = |e: &dyn std::fmt::Display| {
        ConfigError(format!("invalid config `{}`: {e}", path.display()))
    };
    let env = |var: &str| std::env::var(var).ok();

    let mock = if config.providers.values().any(|p| p.mock) {
        let mock = MockUpstream::builder()
            .api_key(DEMO_UPSTREAM_KEY)
            .start()
            .await
            .map_err(|e| ConfigError(format!("cannot start the demo mock upstream: {e}")))?;
        tracing::info!(base_url = %mock.base_url(), "demo mock upstream started");
        Some(mock)
    } else {
        None
    };
    let mock_url = mock.as_ref().map(MockUpstream::base_url);

    let mut builder = AiRouter::builder()
        .mount_path(config.mount.as_str())
        .keys(config.key_store(env));
    for (name, provider) in &config.providers {
        let mock = mock_url.as_deref().map(|url| (url, DEMO_UPSTREAM_KEY));
        let service = config
            .http_provider(name, provider, mock, env)
            .map_err(|e| invalid(&e))?;
        builder = builder
            .provider(name.as_str(), service)
            .stream_settings(name.as_str(), Config::stream_settings(provider))
            .allow_any_model(name.as_str(), provider.allow_any_model)
            .models(name.as_str(), provider.models.iter().cloned());
    }
    for (key, model) in &config.default_models {
        builder = builder.default_model(config::endpoint("default_models", key)?, model.as_str());
    }
    for (key, limit) in &config.body_limits {
        builder = builder.endpoint_body_limit(config::endpoint("body_limits", key)?, *limit);
    }
    for (name, alias) in &config.models {
        builder = builder.alias(name.as_str(), alias.targets.iter().cloned());
    }
    if let Some(limit) = config.body_limit {
        builder = builder.body_limit(limit);
    }
    let router = builder.build().map_err(|e| invalid(&e))?;

    let mount = config.mount.trim_end_matches('/');
    // Outside the mount: `/health`, and OpenAI-shaped 404s for every other path; these get a
    // request id of their own (the router sets its own inside the mount).
    let app = axum::Router::new()
        .route(
            "/health",
            get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"ok"}"#,
                )
            }),
        )
        .fallback(|method: http::Method, uri: http::Uri| async move {
            ai_router::Error::unknown_url(&method, uri.path()).into_response()
        })
        .layer(SetRequestIdLayer::new());
    let app = if mount.is_empty() {
        app.fallback_service(router)
    } else {
        app.nest_service(mount, router)
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ConfigError(format!("cannot listen on {}: {e}", config.listen)))?;
    tracing::info!("ai-router listening on http://{}{mount}", config.listen);

    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(true);
    });
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let deadline = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server.into_future() => {
            result.map_err(|e| ConfigError(format!("server error: {e}")))?;
        }
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; exiting");
        }
    }
    drop(mock);
    Ok(())
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

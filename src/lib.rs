//! # ai-router
//!
//! Tower layers that turn any hyper, axum or tonic host into an OpenAI-compatible AI router.
//! A client keeps its OpenAI SDK, points `base_url` at the router and authenticates with a
//! router key; the router checks the key, reads `model` (`openai/gpt-4o-mini` or an alias),
//! swaps in the provider's credentials, forwards the call and streams the answer back. Every
//! error, the router's or an upstream's, has OpenAI's shape and status.
//!
//! Each layer works alone in a `tower::ServiceBuilder`; [`AiRouter::builder`] composes them in
//! their one order (see [`router`]).
//!
//! # Mounting in axum
//! ```no_run
//! use ai_router::AiRouter;
//! use ai_router::auth::{MemoryKeyStore, Principal};
//! use ai_router::provider::HttpProvider;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let router = AiRouter::builder()
//!     .keys(MemoryKeyStore::new().with_key("sk-router-dev", Principal::new("dev")))
//!     .provider("openai", HttpProvider::builder("https://api.openai.com/v1").api_key("sk-...").build()?)
//!     .mount_path("/v3/router")
//!     .build()?;
//! let app = axum::Router::new().nest_service("/v3/router", router);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Serving with plain hyper
//! The prefix is not stripped by hyper; `mount_path` strips it.
//! ```no_run
//! # use ai_router::AiRouter;
//! # use ai_router::auth::MemoryKeyStore;
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::service::TowerToHyperService;
//!
//! # async fn demo(router: AiRouter<MemoryKeyStore>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let service = TowerToHyperService::new(router.clone());
//!     tokio::spawn(async move {
//!         let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
//!         let _ = builder.serve_connection(TokioIo::new(stream), service).await;
//!     });
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod auth;
pub mod body;
mod deadline;
pub mod error;
pub mod extensions;
pub mod in_flight;
mod media;
mod members;
pub mod observe;
pub mod openai_errors;
pub mod provider;
pub mod request_id;
pub mod resilience;
pub mod route;
pub mod router;
pub mod sse;

#[cfg(feature = "mock")]
pub mod mock;

#[cfg(feature = "otel")]
pub mod otel;

/// Wrappers for the fuzz targets in `fuzz/`: not a public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzzing.rs"]
pub mod __fuzz;

pub use crate::auth::AuthLayer;
pub use crate::error::{BoxError, Error};
pub use crate::in_flight::InFlightLimitLayer;
pub use crate::openai_errors::OpenAiErrorsLayer;
pub use crate::request_id::SetRequestIdLayer;
pub use crate::resilience::ResilienceLayer;
pub use crate::route::RouteLayer;
pub use crate::router::{AiRouter, AiRouterBuilder, BuildError, RouterBody};
pub use crate::router::{ReloadHandle, ReloadableRouter};
pub use crate::sse::SseLayer;

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

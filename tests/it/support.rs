//! Shared setup: a mock upstream, a router in front of it, and clients for both.

use std::net::SocketAddr;

use ai_router::AiRouter;
use ai_router::auth::{MemoryKeyStore, Principal};
use ai_router::mock::MockUpstream;
use ai_router::provider::HttpProvider;
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub const ROUTER_KEY: &str = "sk-router-test-key";
pub const PROVIDER_KEY: &str = "sk-mock-upstream";
pub const MOUNT: &str = "/v3/router";

/// A mock upstream and a router serving over TCP in front of it.
pub struct Harness {
    pub upstream: MockUpstream,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::with(|builder| builder).await
    }

    /// Starts with the default configuration, changed by `configure`.
    pub async fn with(
        configure: impl FnOnce(
            ai_router::AiRouterBuilder<MemoryKeyStore>,
        ) -> ai_router::AiRouterBuilder<MemoryKeyStore>,
    ) -> Self {
        let upstream = MockUpstream::builder()
            .api_key(PROVIDER_KEY)
            .start()
            .await
            .unwrap();
        let provider = HttpProvider::builder(upstream.base_url())
            .api_key(PROVIDER_KEY)
            .build()
            .unwrap();
        let builder = AiRouter::builder()
            .mount_path(MOUNT)
            .keys(MemoryKeyStore::new().with_key(ROUTER_KEY, Principal::new("test")))
            .provider("mock", provider)
            .models("mock", ["gpt-4o-mini", "text-embedding-3-small"])
            .alias("fast", ["mock/gpt-4o-mini"]);
        let router = configure(builder).build().unwrap();
        let (addr, server) = serve(router).await;
        Self {
            upstream,
            addr,
            server,
        }
    }

    /// The base URL an OpenAI client uses.
    pub fn base_url(&self) -> String {
        format!("http://{}{MOUNT}", self.addr)
    }

    /// An async-openai client with the router key.
    pub fn client(&self) -> Client<OpenAIConfig> {
        Client::with_config(
            OpenAIConfig::new()
                .with_api_base(self.base_url())
                .with_api_key(ROUTER_KEY),
        )
    }
}

/// Serves `router` with plain hyper on 127.0.0.1:0.
pub async fn serve(router: AiRouter<MemoryKeyStore>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(router.clone());
            connections.spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, server)
}

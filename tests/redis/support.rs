//! Two routers over TCP, each with its own `RedisLimiter` on one Redis, in front of one mock
//! upstream; raw HTTP exchanges and an async-openai client (the helpers of `tests/it`, cut
//! down).

use std::net::SocketAddr;
use std::time::Duration;

use ai_router::AiRouter;
use ai_router::auth::{ApiKeyDigest, MemoryKeyStore, Principal, RedisLimiter, RedisLimiterBuilder};
use ai_router::mock::MockUpstream;
use ai_router::provider::HttpProvider;
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::server::RedisServer;

pub const ROUTER_KEY: &str = "sk-router-fleet-key";
pub const PROVIDER_KEY: &str = "sk-mock-upstream";
pub const MOUNT: &str = "/v3/router";
pub const CHAT: &str =
    r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// How long any single exchange may take before the test fails: far above the limiter's
/// timeout, so a hang shows as a failure, never as a stuck test.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The limiters' timeout in the tests.
pub const LIMITER_TIMEOUT: Duration = Duration::from_secs(1);

/// One router serving on a loopback port.
pub struct Router {
    pub addr: SocketAddr,
    pub limiter: RedisLimiter,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Two routers sharing limits through one Redis, in front of one mock upstream.
pub struct Fleet {
    pub upstream: MockUpstream,
    pub routers: [Router; 2],
}

impl Fleet {
    /// Two routers whose one key ([`ROUTER_KEY`]) is `principal`, each limiter built from
    /// `configure(RedisLimiter::builder(redis.url()).timeout(LIMITER_TIMEOUT))`.
    pub async fn start(
        redis: &RedisServer,
        principal: Principal,
        configure: impl Fn(RedisLimiterBuilder) -> RedisLimiterBuilder,
    ) -> Self {
        Self::start_at(&redis.url(), principal, configure).await
    }

    /// [`Fleet::start`] on the Redis at `url` (which may not be up yet).
    pub async fn start_at(
        url: &str,
        principal: Principal,
        configure: impl Fn(RedisLimiterBuilder) -> RedisLimiterBuilder,
    ) -> Self {
        let upstream = MockUpstream::builder()
            .api_key(PROVIDER_KEY)
            .start()
            .await
            .unwrap();
        let mut routers = Vec::new();
        for _ in 0..2 {
            // A timeout well above a loaded CI machine's slowest answer: a spurious timeout would
            // admit unchecked and fail an exact count.
            let limiter = configure(RedisLimiter::builder(url).timeout(LIMITER_TIMEOUT))
                .build()
                .unwrap();
            let router = AiRouter::builder()
                .mount_path(MOUNT)
                .keys(MemoryKeyStore::new().with_key(ROUTER_KEY, principal.clone()))
                .limiter(limiter.clone())
                .provider(
                    "mock",
                    HttpProvider::builder(upstream.base_url())
                        .api_key(PROVIDER_KEY)
                        .build()
                        .unwrap(),
                )
                .models("mock", ["gpt-4o-mini"])
                .build()
                .unwrap();
            let (addr, server) = serve(router).await;
            routers.push(Router {
                addr,
                limiter,
                server,
            });
        }
        let Ok(routers) = <[Router; 2]>::try_from(routers) else {
            unreachable!()
        };
        Self { upstream, routers }
    }

    /// `POST /chat/completions` on router `i` with the router key.
    pub async fn chat(&self, i: usize) -> RawResponse {
        send(chat_request(self.routers[i].addr)).await
    }

    /// An async-openai client of router `i` (it retries 429s: only for answers expected to
    /// pass).
    pub fn client(&self, i: usize) -> Client<OpenAIConfig> {
        Client::with_config(
            OpenAIConfig::new()
                .with_api_base(format!("http://{}{MOUNT}", self.routers[i].addr))
                .with_api_key(ROUTER_KEY),
        )
    }
}

/// The digest the routers keep the key's state under.
pub fn digest() -> ApiKeyDigest {
    ApiKeyDigest::of(ROUTER_KEY)
}

/// A chat request with the router key for the router at `addr`.
pub fn chat_request(addr: SocketAddr) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{MOUNT}/chat/completions"))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap()
}

/// Serves `router` with plain hyper on 127.0.0.1:0.
async fn serve(
    router: AiRouter<MemoryKeyStore, RedisLimiter>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
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

/// A whole HTTP answer.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// A header's value as a number.
    pub fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no `{name}` in {:?}", self.headers))
            .parse()
            .unwrap()
    }

    /// Asserts an OpenAI error answer with this status and code; returns its `error` object.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let error = self.json()["error"].clone();
        assert_eq!(error["code"], code, "{error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        error
    }
}

/// Sends one request with a fresh hyper client and reads the whole answer, within
/// [`EXCHANGE_TIMEOUT`].
pub async fn send(request: Request<Full<Bytes>>) -> RawResponse {
    send_within(request, EXCHANGE_TIMEOUT).await
}

/// [`send`], for an answer held back on purpose for up to `limit`.
pub async fn send_within(request: Request<Full<Bytes>>, limit: Duration) -> RawResponse {
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let exchange = async {
        let response = client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        RawResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .expect("the exchange timed out: a limiter call hangs")
}

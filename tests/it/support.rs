//! Shared setup: a mock upstream, a router in front of it, and clients for both.

use std::net::SocketAddr;
use std::time::Duration;

use ai_router::auth::{MemoryKeyStore, Principal};
use ai_router::mock::{MockUpstream, RecordedRequest};
use ai_router::provider::HttpProvider;
use ai_router::{AiRouter, AiRouterBuilder};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub const ROUTER_KEY: &str = "sk-router-test-key";
pub const PROVIDER_KEY: &str = "sk-mock-upstream";
pub const MOUNT: &str = "/v3/router";

/// How long any single exchange in a test may take before the test fails.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The provider `mock`, pointing at `upstream` with the right key.
pub fn mock_provider(upstream: &MockUpstream) -> HttpProvider {
    HttpProvider::builder(upstream.base_url())
        .api_key(PROVIDER_KEY)
        .build()
        .unwrap()
}

/// The default configuration without a mount path: router key, provider `mock`, its listed
/// models and the alias `fast`.
pub fn base_builder(upstream: &MockUpstream) -> AiRouterBuilder<MemoryKeyStore> {
    AiRouter::builder()
        .keys(MemoryKeyStore::new().with_key(ROUTER_KEY, Principal::new("test")))
        .provider("mock", mock_provider(upstream))
        .models("mock", ["gpt-4o-mini", "text-embedding-3-small"])
        .alias("fast", ["mock/gpt-4o-mini"])
}

/// Starts a mock upstream expecting [`PROVIDER_KEY`].
pub async fn start_upstream() -> MockUpstream {
    MockUpstream::builder()
        .api_key(PROVIDER_KEY)
        .start()
        .await
        .unwrap()
}

impl Harness {
    pub async fn start() -> Self {
        Self::with(|builder| builder).await
    }

    /// Starts with the default configuration, changed by `configure`.
    pub async fn with(
        configure: impl FnOnce(AiRouterBuilder<MemoryKeyStore>) -> AiRouterBuilder<MemoryKeyStore>,
    ) -> Self {
        Self::with_upstream(|builder, _| configure(builder)).await
    }

    /// Like [`Harness::with`], but `configure` also sees the mock upstream (to add providers
    /// pointing at it).
    pub async fn with_upstream(
        configure: impl FnOnce(
            AiRouterBuilder<MemoryKeyStore>,
            &MockUpstream,
        ) -> AiRouterBuilder<MemoryKeyStore>,
    ) -> Self {
        let upstream = start_upstream().await;
        let builder = base_builder(&upstream).mount_path(MOUNT);
        let router = configure(builder, &upstream).build().unwrap();
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

    /// The full URL of `path` below the mount point.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// An async-openai client with the router key.
    pub fn client(&self) -> Client<OpenAIConfig> {
        client_for(&self.base_url(), ROUTER_KEY)
    }

    /// `POST <mount><path>` with the router key and a JSON body.
    pub async fn post_json(&self, path: &str, body: impl Into<Bytes>) -> RawResponse {
        let request = Request::post(self.url(path))
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        send(request).await
    }

    /// `GET <mount><path>` with the router key.
    pub async fn get(&self, path: &str) -> RawResponse {
        let request = Request::get(self.url(path))
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(request).await
    }

    /// A request builder for `method <mount><path>`, without any header.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder().method(method).uri(self.url(path))
    }

    /// The only request the mock received.
    pub fn only_upstream_request(&self) -> RecordedRequest {
        let requests = self.upstream.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one upstream request, got {:?}",
            requests.iter().map(|r| &r.path).collect::<Vec<_>>()
        );
        requests.into_iter().next().unwrap()
    }
}

/// An async-openai client for `base_url` with `key`.
pub fn client_for(base_url: &str, key: &str) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(base_url)
            .with_api_key(key),
    )
}

/// Serves `router` with plain hyper on 127.0.0.1:0.
pub async fn serve(router: AiRouter<MemoryKeyStore>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    serve_service(router).await
}

/// Serves any tower service (a router with another key store or limiter, a layer alone) with
/// plain hyper on 127.0.0.1:0.
pub async fn serve_service<S, B>(service: S) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    S: tower::Service<
            Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(service.clone());
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

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

/// A whole HTTP answer.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts an OpenAI error answer and returns its `error` object.
    pub fn assert_error(&self, status: u16, code: Option<&str>) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error content-type"
        );
        assert_openai_error(&self.body, code)
    }
}

/// Sends one request with a fresh hyper client (HTTP/1.1) and reads the whole answer.
pub async fn send(request: Request<Full<Bytes>>) -> RawResponse {
    send_within(request, EXCHANGE_TIMEOUT).await
}

/// [`send`], for an exchange that may take up to `limit` (on a paused clock, say).
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
        .expect("the exchange timed out")
}

/// Checks `{"error":{"message","type","param","code"}}` with exactly these four keys, a
/// non-empty message and a string type; returns the `error` object.
pub fn assert_openai_error(body: &[u8], code: Option<&str>) -> Value {
    let error = assert_openai_error_shape(body);
    match code {
        Some(code) => assert_eq!(error["code"], code, "{error}"),
        None => assert!(error["code"].is_null(), "{error}"),
    }
    error
}

/// Checks the four-key error shape (`code` a string or null); returns the `error` object.
pub fn assert_openai_error_shape(body: &[u8]) -> Value {
    let json: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let envelope = json.as_object().expect("error body is an object");
    assert_eq!(envelope.len(), 1, "only `error` at the top: {json}");
    let error = json["error"].as_object().expect("`error` is an object");
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{json}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    assert!(error["type"].is_string(), "{json}");
    assert!(
        error["param"].is_null() || error["param"].is_string(),
        "{json}"
    );
    assert!(
        error["code"].is_null() || error["code"].is_string(),
        "{json}"
    );
    json["error"].clone()
}

/// `body` with its one top-level `"model":"from"` replaced by `"model":"to"` (as serde_json
/// writes it: no spaces).
pub fn with_model(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(body).unwrap();
    let needle = format!("\"model\":{}", serde_json::to_string(from).unwrap());
    assert_eq!(
        text.matches(&needle).count(),
        1,
        "`{needle}` once in {text}"
    );
    text.replacen(
        &needle,
        &format!("\"model\":{}", serde_json::to_string(to).unwrap()),
        1,
    )
    .into_bytes()
}

/// Asserts the request the upstream got: `POST path`, exactly `body`, the provider key and
/// never the router key.
pub fn assert_forwarded(seen: &RecordedRequest, path: &str, body: &[u8]) {
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, path);
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        String::from_utf8_lossy(body),
        "the upstream body differs from the client's beyond `model`"
    );
    assert_provider_key_only(seen);
}

/// The upstream saw the provider key as its bearer, and the router key in no header.
pub fn assert_provider_key_only(seen: &RecordedRequest) {
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    for (name, value) in &seen.headers {
        assert!(
            !contains(value.as_bytes(), ROUTER_KEY.as_bytes()),
            "router key leaked upstream in `{name}`"
        );
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes `request` as-is on a new TCP connection, reads until the server closes (send
/// `Connection: close`) and parses the answer (Content-Length or chunked body).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        bytes
    };
    let bytes = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .expect("the raw exchange timed out");
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> RawResponse {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).unwrap();
    let rest = &bytes[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_str().unwrap().eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        decode_chunked(rest)
    } else if let Some(length) = headers.get("content-length") {
        let length: usize = length.to_str().unwrap().parse().unwrap();
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    RawResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body: Bytes::from(body),
    }
}

fn decode_chunked(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    // Each round consumes one chunk; the input is finite, so the loop is bounded.
    for _ in 0..=rest.len() {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&rest[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    panic!("unterminated chunked body");
}

/// Drains an async-openai stream without the `futures` crate (not a dev-dependency): the
/// methods of a trait object are callable without importing their trait. Bounded by
/// [`EXCHANGE_TIMEOUT`].
pub async fn collect_stream<T>(
    mut stream: async_openai::types::stream::StreamResponse<T>,
) -> Vec<Result<T, async_openai::error::OpenAIError>> {
    let drain = async {
        let mut items = Vec::new();
        while let Some(item) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            items.push(item);
        }
        items
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, drain)
        .await
        .expect("the stream did not end in time")
}

/// A body fed frame by frame from a channel: `Err` items break the stream.
pub struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, String>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(http_body::Frame::data).map_err(Into::into)))
    }
}

/// An upstream over real TCP whose one answer (200, `text/event-stream`) is streamed from
/// [`SlowUpstream::frames`] as the test sends them.
pub struct SlowUpstream {
    pub addr: SocketAddr,
    /// Send `Ok(bytes)` for a frame, `Err(..)` to break the connection; drop to end cleanly.
    pub frames: tokio::sync::mpsc::Sender<Result<Bytes, String>>,
    /// Every request received: its head and body.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<(http::request::Parts, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlowUpstream {
    pub async fn start() -> Self {
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frames, receiver) = tokio::sync::mpsc::channel(16);
        let receiver = Arc::new(Mutex::new(Some(receiver)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let receiver = Arc::clone(&receiver);
                    let seen = Arc::clone(&seen);
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let receiver = Arc::clone(&receiver);
                            let seen = Arc::clone(&seen);
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                seen.lock().unwrap().push((parts, body));
                                let receiver = receiver.lock().unwrap().take();
                                let response = match receiver {
                                    Some(receiver) => http::Response::builder()
                                        .header("content-type", "text/event-stream")
                                        .body(ChannelBody(receiver).boxed())
                                        .unwrap(),
                                    None => http::Response::builder()
                                        .status(500)
                                        .body(
                                            Full::new(Bytes::from_static(b"one answer only"))
                                                .map_err(Into::into)
                                                .boxed(),
                                        )
                                        .unwrap(),
                                };
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    connections.spawn(async move {
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            frames,
            seen,
            task,
        }
    }

    /// Its OpenAI base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

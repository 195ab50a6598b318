//! A scriptable, OpenAI-compatible mock upstream served over real TCP.
//!
//! [`MockUpstream`] binds `127.0.0.1:0` (by default), speaks HTTP/1.1 and h2c,
//! records the requests it receives ([`RecordedRequest`]) and answers the
//! common OpenAI endpoints under `/v1` with small, deterministic bodies that
//! the official client types deserialize: chat completions (plain and SSE),
//! legacy completions, embeddings, moderations, rerank, responses (plain and
//! SSE), image generation, image edits (multipart or JSON) and variations,
//! speech, transcriptions (JSON, text, subtitles, verbose JSON or SSE),
//! translations and models. Form answers in JSON carry a `mock_received`
//! member describing the parts that arrived (names in order, and each file's
//! name, file name, content type, length and SHA-256); malformed forms are
//! answered 400, never a panic. It keeps the latest 1000 requests by default
//! ([`MockUpstreamBuilder::keep_requests`]). Any request can instead be
//! answered with a queued [`ScriptedResponse`] (errors, odd headers, delays,
//! a connection closed before any answer, and event streams sent chunk by
//! chunk, paced, gated, reset or stalled).
//!
//! It also speaks the two APIs the router translates to (their exact rules are documented at
//! the top of `src/mock/anthropic.rs` and `src/mock/gemini.rs`):
//! - the Anthropic Messages API, `POST /v1/messages` (plain and SSE): the key is expected as
//!   `x-api-key` (401 `authentication_error` otherwise) beside an `anthropic-version` header;
//! - the Gemini API (`v1beta`), `POST /v1beta/models/{model}:generateContent`,
//!   `:streamGenerateContent` (`?alt=sse`: SSE; without: a JSON array), `:embedContent` and
//!   `:batchEmbedContents`: the key is expected as `x-goog-api-key` or `?key=` (a wrong one is
//!   Google's 400 `API_KEY_INVALID`).
//!
//! Both validate requests the way the real APIs do (required fields, roles and their order,
//! unknown fields, tool call / result pairing, …) and answer in their own error shapes; their
//! deterministic answers call the declared tools (two in parallel when the last user text says
//! `parallel`), answer tool results, honour JSON schemas, token limits and stop sequences,
//! report cached tokens, and stream realistic event sequences one event per body frame. Point an
//! Anthropic or Gemini provider at [`MockUpstream::origin`].
//!
//! Scripts can also target one model ([`MockUpstream::script_for`]), so a test of
//! fallbacks can fail the primary model and let the next one answer; the requests
//! received for a model are listed and counted apart
//! ([`MockUpstream::requests_for`], [`MockUpstream::request_count_for`]). A request's
//! model is the top-level `"model"` string of its JSON body, or the `model` part of its
//! `multipart/form-data` body; for Gemini, the `{model}` of its path.
//!
//! Dropping the [`MockUpstream`] stops the server and its connections.
//!
//! Only compiled with the crate feature `mock`.
//!
//! ```no_run
//! use ai_router::mock::{MockUpstream, ScriptedResponse};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let upstream = MockUpstream::builder().api_key("sk-test").start().await?;
//! println!("point the router at {}", upstream.base_url());
//!
//! // The next request (whatever its path) gets a 429 instead of the normal answer.
//! upstream.script(ScriptedResponse::openai_error(
//!     429,
//!     "Rate limit reached",
//!     "requests",
//!     Some("rate_limit_exceeded"),
//! ));
//!
//! // The next request for `gpt-primary` finds its connection closed; other models
//! // are answered as usual.
//! upstream.script_for("gpt-primary", ScriptedResponse::reset_before_head());
//!
//! // ... drive traffic through the router, then inspect what the upstream saw:
//! if let Some(request) = upstream.last_request() {
//!     assert_eq!(request.header("authorization"), Some("Bearer sk-test"));
//! }
//! println!("{} request(s) for gpt-primary", upstream.request_count_for("gpt-primary"));
//! # Ok(())
//! # }
//! ```

mod anthropic;
mod body;
mod endpoints;
mod forms;
mod gemini;
#[cfg(test)]
mod provider_tests;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};

/// The API key the mock expects unless [`MockUpstreamBuilder::api_key`] says otherwise.
const DEFAULT_API_KEY: &str = "sk-mock-upstream";

/// A running mock upstream: OpenAI-compatible, and also Anthropic and Gemini (see the
/// [module docs](self)).
///
/// Created with [`MockUpstream::start`] or [`MockUpstream::builder`]; must be
/// started from within a Tokio runtime. Dropping it stops the accept loop and
/// aborts every open connection.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Returns a builder with the defaults: key `sk-mock-upstream` expected as
    /// `Authorization: Bearer …`, bound to `127.0.0.1:0`.
    pub fn builder() -> MockUpstreamBuilder {
        MockUpstreamBuilder::default()
    }

    /// Starts a mock upstream with the [builder](MockUpstream::builder) defaults.
    pub async fn start() -> std::io::Result<MockUpstream> {
        Self::builder().start().await
    }

    /// The address the server is listening on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL of this server, e.g. `http://127.0.0.1:41234/v1`: the
    /// [`origin`](Self::origin) followed by `/v1`.
    ///
    /// An unspecified bind address (`0.0.0.0` / `::`) is reported as loopback.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.origin())
    }

    /// The origin of this server, without any path, e.g. `http://127.0.0.1:41234`: the base
    /// URL of an Anthropic provider (which calls `{origin}/v1/messages`) or a Gemini one
    /// (`{origin}/v1beta/models/…`).
    ///
    /// An unspecified bind address (`0.0.0.0` / `::`) is reported as loopback.
    pub fn origin(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{addr}")
    }

    /// The requests received so far, in arrival order (including rejected and scripted
    /// ones): the last [`keep_requests`](MockUpstreamBuilder::keep_requests) of them.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let recorded = self.shared.recorded();
        recorded
            .kept
            .iter()
            .map(|kept| kept.request.clone())
            .collect()
    }

    /// The kept requests for `model` (see [`script_for`](Self::script_for) for how a
    /// request's model is read), in arrival order: the ones among
    /// [`requests`](Self::requests) that named this model. For asserting which upstream
    /// model a router tried, and with what.
    pub fn requests_for(&self, model: &str) -> Vec<RecordedRequest> {
        let key = ModelKey::of(model);
        let recorded = self.shared.recorded();
        recorded
            .kept
            .iter()
            .filter(|kept| kept.model == Some(key))
            .map(|kept| kept.request.clone())
            .collect()
    }

    /// The most recently received request, if it is kept.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared
            .recorded()
            .kept
            .back()
            .map(|kept| kept.request.clone())
    }

    /// How many requests have been received so far (kept or not).
    pub fn request_count(&self) -> usize {
        self.shared.recorded().count
    }

    /// How many requests for `model` have been received so far (kept or not; see
    /// [`script_for`](Self::script_for) for how a request's model is read). For asserting
    /// how many times a router tried an upstream model, retries included.
    ///
    /// The counts are bounded: once 10,000 distinct models have been seen, requests for
    /// models not seen before are no longer counted apart (this returns 0 for them), so
    /// clients sending ever-new model names cannot grow the mock's memory without bound.
    /// They are still counted by [`request_count`](Self::request_count).
    pub fn request_count_for(&self, model: &str) -> usize {
        let recorded = self.shared.recorded();
        recorded
            .per_model
            .get(&ModelKey::of(model))
            .copied()
            .unwrap_or(0)
    }

    /// Queues a response (FIFO): the next request, whatever its path, gets
    /// it instead of the normal answer. The request is still recorded, and
    /// the credential is not checked for scripted answers.
    pub fn script(&self, response: ScriptedResponse) {
        self.shared.scripts().push_back(response);
    }

    /// Queues a response (FIFO, one queue per model) for the next request whose model is
    /// exactly `model`. For failing one upstream model while the others answer (retries,
    /// fallbacks).
    ///
    /// A request's model is the `{model}` of a Gemini path (`/v1beta/models/{model}:…`), else
    /// the top-level `"model"` string of its JSON body, or the text of the first `model` part
    /// of its `multipart/form-data` body; other requests have none.
    /// Each request gets the first script queued for its model, else the first of the
    /// [`script`](Self::script) queue, else the normal answer. As with
    /// [`script`](Self::script), the request is still recorded and the credential is not
    /// checked for a scripted answer.
    pub fn script_for(&self, model: &str, response: ScriptedResponse) {
        self.shared
            .model_scripts()
            .entry(model.to_owned())
            .or_default()
            .push_back(response);
    }

    /// Waits until at least `n` requests have been received (and recorded), or `timeout`
    /// passes. Returns whether `n` was reached. Useful to know a request reached the mock
    /// while its scripted answer is still delayed, gated or stalled.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        let mut received = self.shared.received.subscribe();
        let reached = tokio::time::timeout(timeout, received.wait_for(|&count| count >= n)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// How many client connections have ended so far.
    pub fn connections_closed(&self) -> usize {
        *self.shared.connections_closed.borrow()
    }

    /// Waits until at least `n` client connections have ended
    /// ([`connections_closed`](Self::connections_closed) `>= n`), or `timeout` passes.
    /// Returns whether `n` was reached. Wakes up on each connection end (no polling loop).
    pub async fn wait_connections_closed(&self, n: usize, timeout: Duration) -> bool {
        let mut closed = self.shared.connections_closed.subscribe();
        // `wait_for` checks the current value first, then every change; it only fails if
        // the sender is gone, which `self` (holding `shared`) rules out.
        let reached = tokio::time::timeout(timeout, closed.wait_for(|&count| count >= n)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a `JoinSet`), so
        // aborting it also aborts every connection.
        self.task.abort();
    }
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("request_count", &self.request_count())
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`MockUpstream`].
#[derive(Debug, Clone)]
pub struct MockUpstreamBuilder {
    api_key: String,
    api_key_header: Option<HeaderName>,
    no_auth: bool,
    bind: SocketAddr,
    keep_requests: usize,
}

/// How many received requests a mock keeps unless told otherwise.
const DEFAULT_KEEP_REQUESTS: usize = 1000;

impl Default for MockUpstreamBuilder {
    fn default() -> Self {
        Self {
            api_key: DEFAULT_API_KEY.to_owned(),
            api_key_header: None,
            no_auth: false,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            keep_requests: DEFAULT_KEEP_REQUESTS,
        }
    }
}

impl MockUpstreamBuilder {
    /// The key expected as `Authorization: Bearer <key>` (default `sk-mock-upstream`).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = key.into();
        self
    }

    /// Also accepts the key, raw, in this header (Azure style `api-key`).
    /// Default: none. An invalid header name is ignored (with a warning).
    #[must_use]
    pub fn api_key_header(mut self, name: &'static str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => self.api_key_header = Some(name),
            Err(_) => tracing::warn!(name, "mock upstream: ignoring invalid api key header name"),
        }
        self
    }

    /// Accepts any credential, or none.
    #[must_use]
    pub fn no_auth(mut self) -> Self {
        self.no_auth = true;
        self
    }

    /// The address to listen on (default `127.0.0.1:0`, an ephemeral port).
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// How many of the latest requests are kept for [`MockUpstream::requests`] (default 1000;
    /// older ones are dropped, so a long-running mock uses bounded memory). `0` keeps none
    /// (a demo or a bench); [`MockUpstream::request_count`] counts them all either way.
    #[must_use]
    pub fn keep_requests(mut self, n: usize) -> Self {
        self.keep_requests = n;
        self
    }

    /// Binds the listener and spawns the server on the current Tokio runtime.
    pub async fn start(self) -> std::io::Result<MockUpstream> {
        let listener = tokio::net::TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let auth = if self.no_auth {
            Auth::None
        } else {
            Auth::Key {
                key: self.api_key,
                header: self.api_key_header,
            }
        };
        let shared = Arc::new(Shared {
            auth,
            recorded: Mutex::new(Recorded {
                kept: VecDeque::new(),
                keep: self.keep_requests,
                count: 0,
                per_model: HashMap::new(),
            }),
            scripts: Mutex::new(VecDeque::new()),
            model_scripts: Mutex::new(HashMap::new()),
            connections_closed: tokio::sync::watch::Sender::new(0),
            received: tokio::sync::watch::Sender::new(0),
        });
        let task = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared)));
        Ok(MockUpstream { addr, shared, task })
    }
}

/// One request as the mock upstream received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The request method.
    pub method: Method,
    /// The path and query, as received (e.g. `/v1/chat/completions?x=1`).
    pub path: String,
    /// All request headers.
    pub headers: HeaderMap,
    /// The whole request body (empty if it exceeded the 64 MiB cap or failed to arrive).
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body parsed as JSON, if it is valid JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first value of header `name` (case-insensitive), if present and
    /// valid visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// A canned answer for the next request; queue it with [`MockUpstream::script`] (any
/// request) or [`MockUpstream::script_for`] (a request for one model).
///
/// The body is a list of chunks. [`new`](Self::new) + [`body`](Self::body) send it in one
/// frame with a `content-length`; [`stream`](Self::stream) sends each chunk as its own frame
/// (chunked), and the pacing builders ([`chunk_delay`](Self::chunk_delay),
/// [`first_chunk_delay`](Self::first_chunk_delay), [`gate_before`](Self::gate_before))
/// and abnormal ends ([`reset_after`](Self::reset_after),
/// [`stall_after`](Self::stall_after)) apply to those chunks; with any of them the length is
/// never announced. Chunk indices start at 0; an empty chunk sends no frame but still counts.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ai_router::mock::ScriptedResponse;
///
/// let gate = Arc::new(tokio::sync::Notify::new());
/// let answer = ScriptedResponse::stream([
///     "data: {\"a\":1}\n\n",
///     "data: {\"a\":2}\n\n",
///     "data: [DONE]\n\n",
/// ])
/// .gate_before(1, Arc::clone(&gate)) // chunk 1 waits for `gate.notify_one()`
/// .chunk_delay(Duration::from_millis(10))
/// .reset_after(2); // `[DONE]` is never sent: the connection is aborted instead
/// # let _ = answer;
/// ```
#[derive(Clone, Debug)]
pub struct ScriptedResponse {
    status: StatusCode,
    headers: HeaderMap,
    /// The body chunks.
    chunks: Vec<Bytes>,
    /// Each chunk is its own frame and the length is not announced.
    streamed: bool,
    /// The `content-type` unless a scripted header says otherwise.
    default_content_type: Option<HeaderValue>,
    delay: Option<Duration>,
    pacing: body::Pacing,
    /// Close the connection (HTTP/2: reset the stream) instead of answering.
    reset_before_head: bool,
}

impl ScriptedResponse {
    /// An empty response with this status (an invalid code becomes 500).
    pub fn new(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or_else(|_| {
            tracing::warn!(status, "mock upstream: invalid scripted status, using 500");
            StatusCode::INTERNAL_SERVER_ERROR
        });
        Self {
            status,
            headers: HeaderMap::new(),
            chunks: Vec::new(),
            streamed: false,
            default_content_type: None,
            delay: None,
            pacing: body::Pacing::default(),
            reset_before_head: false,
        }
    }

    /// No answer at all: after any [`delay`](Self::delay), the mock closes the connection
    /// without sending a response head (HTTP/1.1; over HTTP/2 it resets the request's
    /// stream), so the client sees a connection error, not a status. For the upstream
    /// that drops the connection before answering, which a router may retry on another
    /// connection or model. Anything else set on this answer is ignored.
    #[must_use]
    pub fn reset_before_head() -> Self {
        // The status is never sent.
        let mut response = Self::new(502);
        response.reset_before_head = true;
        response
    }

    /// A `200` `text/event-stream` answer whose body is sent as these chunks, one data frame
    /// each, with no `content-length`. Otherwise like [`new`](Self::new): the standard mock
    /// headers are added, and [`header`](Self::header) can replace the `content-type`.
    #[must_use]
    pub fn stream(chunks: impl IntoIterator<Item = impl Into<Bytes>>) -> Self {
        let mut response = Self::new(200);
        response.chunks = chunks.into_iter().map(Into::into).collect();
        response.streamed = true;
        response.default_content_type = Some(HeaderValue::from_static("text/event-stream"));
        response
    }

    /// Adds a response header (appended; it replaces a default header of the
    /// same name). Invalid names or values are ignored with a warning.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => tracing::warn!(name, "mock upstream: ignoring invalid scripted header"),
        }
        self
    }

    /// Sets the response body: one chunk, sent with its `content-length` unless the answer
    /// was made with [`stream`](Self::stream) or is paced.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.chunks = vec![body.into()];
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    #[must_use]
    pub fn json(mut self, value: serde_json::Value) -> Self {
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.chunks = vec![Bytes::from(serde_json::to_vec(&value).unwrap_or_default())];
        self
    }

    /// Waits this long before sending the response head (or, for
    /// [`reset_before_head`](Self::reset_before_head), before closing the connection).
    #[must_use]
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// Waits `d` before each chunk after the first (after any [`gate_before`] of that
    /// chunk has opened).
    ///
    /// [`gate_before`]: Self::gate_before
    #[must_use]
    pub fn chunk_delay(mut self, d: Duration) -> Self {
        self.pacing.chunk_delay = Some(d);
        self
    }

    /// Sends the response head at once, then waits `d` before the first chunk (after any
    /// [`gate_before`] of chunk 0 has opened). For an event stream whose first event is
    /// late (a time-to-first-token timeout) while its status is already `200`, unlike
    /// [`delay`](Self::delay), which holds back the head too.
    ///
    /// [`gate_before`]: Self::gate_before
    #[must_use]
    pub fn first_chunk_delay(mut self, d: Duration) -> Self {
        self.pacing.first_chunk_delay = Some(d);
        self
    }

    /// Before sending chunk `index` (0-based), waits until `gate` is notified. Open it with
    /// [`Notify::notify_one`](tokio::sync::Notify::notify_one): a permit stored before the
    /// body reaches the gate is not lost (`notify_waiters` would be). Several gates may be
    /// set, on the same or different chunks; one gate serves one chunk.
    #[must_use]
    pub fn gate_before(mut self, index: usize, gate: Arc<tokio::sync::Notify>) -> Self {
        self.pacing.gates.push((index, gate));
        self
    }

    /// After sending `n` chunks (or all of them, if fewer), aborts the connection: the body
    /// fails, so hyper closes the socket without ending the chunked body (HTTP/2: resets the
    /// stream), and the client sees a broken body, not a clean end. With
    /// [`stall_after`](Self::stall_after) too, the smaller count wins.
    #[must_use]
    pub fn reset_after(mut self, n: usize) -> Self {
        self.pacing.reset_after = Some(n);
        self
    }

    /// After sending `n` chunks (or all of them, if fewer), sends nothing more and never
    /// ends the body: the connection stays open until the client goes away or the mock is
    /// dropped.
    #[must_use]
    pub fn stall_after(mut self, n: usize) -> Self {
        self.pacing.stall_after = Some(n);
        self
    }

    /// An OpenAI-shaped error:
    /// `{"error":{"message":…,"type":…,"param":null,"code":…}}`.
    pub fn openai_error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Self {
        Self::new(status).json(serde_json::json!({
            "error": {"message": message, "type": kind, "param": null, "code": code}
        }))
    }

    /// An Anthropic-shaped error: `{"type":"error","error":{"type":…,"message":…}}`, e.g.
    /// `anthropic_error(529, "overloaded_error", "Overloaded")` or
    /// `anthropic_error(429, "rate_limit_error", …)` (add a `retry-after` with
    /// [`header`](Self::header)).
    pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Self {
        Self::new(status).json(serde_json::json!({
            "type": "error",
            "error": {"type": kind, "message": message},
        }))
    }

    /// A Google-shaped error: `{"error":{"code":…,"message":…,"status":…}}` with the status
    /// name Google pairs with the HTTP status (`429` → `RESOURCE_EXHAUSTED`, `503` →
    /// `UNAVAILABLE`, …).
    pub fn gemini_error(status: u16, message: &str) -> Self {
        let response = Self::new(status);
        let name = gemini::status_name(response.status);
        let code = response.status.as_u16();
        response.json(serde_json::json!({
            "error": {"code": code, "message": message, "status": name}
        }))
    }
}

/// How requests are authenticated.
#[derive(Debug)]
enum Auth {
    /// `no_auth`: anything goes.
    None,
    /// `Authorization: Bearer <key>`, or `<header>: <key>` when configured.
    Key {
        key: String,
        header: Option<HeaderName>,
    },
}

impl Auth {
    /// `Ok` if the request carries the expected key; otherwise the 401 message.
    fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Auth::Key { key, header } = self else {
            return Ok(());
        };
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .unwrap_or(v)
                    .trim()
            });
        let raw = header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        if bearer == Some(key.as_str()) || raw == Some(key.as_str()) {
            return Ok(());
        }
        let provided = bearer.or(raw).unwrap_or("");
        let prefix: String = provided.chars().take(3).collect();
        Err(format!("Incorrect API key provided: {prefix}***."))
    }
}

/// State shared between the handle and the server tasks.
#[derive(Debug)]
struct Shared {
    auth: Auth,
    recorded: Mutex<Recorded>,
    scripts: Mutex<VecDeque<ScriptedResponse>>,
    /// The per-model queues; a queue is removed once empty.
    model_scripts: Mutex<HashMap<String, VecDeque<ScriptedResponse>>>,
    /// How many connections have ended; bumped by each connection task as it ends.
    connections_closed: tokio::sync::watch::Sender<usize>,
    /// How many requests have been recorded.
    received: tokio::sync::watch::Sender<usize>,
}

/// The requests received: the latest few, and how many in all and per model.
#[derive(Debug)]
struct Recorded {
    kept: VecDeque<Kept>,
    keep: usize,
    count: usize,
    /// Requests per model; at most [`MAX_COUNTED_MODELS`] entries.
    per_model: HashMap<ModelKey, usize>,
}

/// A kept request and its model.
#[derive(Debug)]
struct Kept {
    model: Option<ModelKey>,
    request: RecordedRequest,
}

/// How many distinct models [`Recorded::per_model`] counts; requests for models seen
/// after that are not counted apart, so the map stays bounded whatever clients send.
const MAX_COUNTED_MODELS: usize = 10_000;

/// A model name, as its SHA-256: the same small size whatever the length of the name a
/// client sent, so the bounded count map is also bounded in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ModelKey([u8; 32]);

impl ModelKey {
    fn of(model: &str) -> Self {
        Self(Sha256::digest(model.as_bytes()).into())
    }
}

impl Shared {
    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn scripts(&self) -> MutexGuard<'_, VecDeque<ScriptedResponse>> {
        self.scripts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn model_scripts(&self) -> MutexGuard<'_, HashMap<String, VecDeque<ScriptedResponse>>> {
        self.model_scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a request for `model` (if it names one) and returns its 1-based sequence
    /// number.
    fn record(&self, request: RecordedRequest, model: Option<&str>) -> u64 {
        let model = model.map(ModelKey::of);
        let count = {
            let mut recorded = self.recorded();
            if recorded.keep > 0 {
                if recorded.kept.len() == recorded.keep {
                    recorded.kept.pop_front();
                }
                recorded.kept.push_back(Kept { model, request });
            }
            recorded.count += 1;
            if let Some(model) = model {
                let counted = recorded.per_model.len();
                if let Some(count) = recorded.per_model.get_mut(&model) {
                    *count += 1;
                } else if counted < MAX_COUNTED_MODELS {
                    recorded.per_model.insert(model, 1);
                }
            }
            recorded.count
        };
        self.received
            .send_modify(|received| *received = (*received).max(count));
        count as u64
    }

    /// The scripted answer for a request for `model`, if any: the first queued for that
    /// model, else the first queued for any request.
    fn next_script(&self, model: Option<&str>) -> Option<ScriptedResponse> {
        if let Some(model) = model {
            let mut model_scripts = self.model_scripts();
            if let Some(queue) = model_scripts.get_mut(model) {
                let next = queue.pop_front();
                if queue.is_empty() {
                    model_scripts.remove(model);
                }
                if next.is_some() {
                    return next;
                }
            }
        }
        self.scripts().pop_front()
    }
}

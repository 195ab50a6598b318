//! Fixtures shared by the bench targets: keys, chat bodies, the in-memory provider and the
//! router built in front of it. Each bench target includes this file as `mod common;`.

pub(crate) mod gateway;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use ai_router::auth::{MemoryKeyStore, Principal};
use ai_router::provider::UpstreamBody;
use ai_router::route::RouteTable;
use ai_router::{AiRouter, BuildError, Error};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tower::Service;

/// The router key clients present.
pub(crate) const ROUTER_KEY: &str = "sk-router-bench-key";
/// The key the mock upstream expects (its default).
pub(crate) const PROVIDER_KEY: &str = "sk-mock-upstream";
/// Where the router is served.
pub(crate) const MOUNT: &str = "/v3/router";
/// 1 KiB.
pub(crate) const KIB: usize = 1024;

/// What the in-memory provider answers to a non-streaming chat: the shape of a real (short)
/// OpenAI chat completion.
pub(crate) const CHAT_COMPLETION: &str = r#"{"id":"chatcmpl-bench-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Packets hop along, a router hums in the dark, no token is lost.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":256,"completion_tokens":16,"total_tokens":272}}"#;

/// The last user message of every chat body: what the mock echoes back (about 20 words, so a
/// streamed answer has about 25 chunks).
const QUESTION: &str = "Write a haiku about a router that forwards requests quickly and never \
     drops a single token on the floor of the data center.";

/// A chat request body of `size` bytes (at least the fixed part): a system prompt padded
/// with filler (the conversation history), the short question, then `model` and `stream`.
/// `messages` comes before `model`, as the OpenAI SDKs serialise it, so routing has to read
/// past the whole history to find the model.
pub(crate) fn chat_body(model: &str, size: usize, stream: bool) -> Bytes {
    let head = r#"{"messages":[{"role":"system","content":"You are a helpful assistant. "#;
    let tail = format!(
        r#""}},{{"role":"user","content":"{QUESTION}"}}],"model":{},"stream":{stream}}}"#,
        serde_json::to_string(model).unwrap_or_default()
    );
    let filler_len = size.saturating_sub(head.len() + tail.len());
    let words = "the quick brown fox jumps over the lazy dog ";
    let mut body = String::with_capacity(size.max(head.len() + tail.len()));
    body.push_str(head);
    while body.len() < head.len() + filler_len {
        let room = head.len() + filler_len - body.len();
        body.push_str(&words[..room.min(words.len())]);
    }
    body.push_str(&tail);
    debug_assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
    Bytes::from(body)
}

/// A chat completion request of `size` bytes for `mock/gpt-4o-mini`, as a client sends it
/// to the router (plain hyper: the mount path is in the path).
pub(crate) fn chat_request(size: usize, stream: bool) -> Request<Full<Bytes>> {
    router_request(
        "/v3/router/chat/completions",
        chat_body("mock/gpt-4o-mini", size, stream),
    )
}

/// A `POST` with the router key and a JSON body, as a client sends it to the router.
///
/// The body is shared the way hyper hands one over (a slice of its read buffer, reference
/// counted), not a `Vec` a first clone would have to move into a shared allocation: what a
/// server's requests cost, not an artefact of building them in a bench.
pub(crate) fn router_request(path: &str, body: Bytes) -> Request<Full<Bytes>> {
    let body = bytes::BytesMut::from(&body[..]).split().freeze();
    Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {ROUTER_KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .unwrap_or_default()
}

/// A streamed response body made of pre-built chunks, one data frame per poll (what an SSE
/// answer from an in-process model server looks like).
#[derive(Debug)]
pub(crate) struct Frames {
    chunks: std::vec::IntoIter<Bytes>,
}

impl Frames {
    /// `count` SSE chunks and the final `[DONE]`.
    pub(crate) fn sse(count: usize) -> Self {
        let mut chunks: Vec<Bytes> = (0..count)
            .map(|i| {
                Bytes::from(format!(
                    "data: {{\"id\":\"chatcmpl-bench-1\",\"object\":\"chat.completion.chunk\",\
                     \"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\
                     \"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\
                     \"finish_reason\":null}}]}}\n\n"
                ))
            })
            .collect();
        chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
        Self {
            chunks: chunks.into_iter(),
        }
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().chunks.next().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The in-memory provider's answer: a JSON chat completion, or an SSE stream of `chunks`
/// chunks when the (already routed) body asks for `"stream":true`.
pub(crate) fn provider_answer(request: &Request<Bytes>, chunks: usize) -> Response<UpstreamBody> {
    if !request.body().ends_with(br#""stream":true}"#) {
        return ok_answer();
    }
    let mut response = Response::new(UpstreamBody::new(Frames::sse(chunks)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// The in-memory upstream's answer to a non-streaming chat: a 200 JSON chat completion.
pub(crate) fn ok_answer() -> Response<UpstreamBody> {
    let mut response = Response::new(UpstreamBody::full(Bytes::from_static(
        CHAT_COMPLETION.as_bytes(),
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The key store with the one router key.
pub(crate) fn keys() -> MemoryKeyStore {
    MemoryKeyStore::new().with_key(ROUTER_KEY, Principal::new("bench"))
}

/// Provider `mock` (listing `gpt-4o-mini`) and the alias `fast` for `mock/gpt-4o-mini`.
pub(crate) fn table() -> Result<RouteTable, BuildError> {
    RouteTable::builder()
        .provider("mock", ["gpt-4o-mini"])
        .alias("fast", ["mock/gpt-4o-mini"])
        .build()
}

/// An in-memory provider: answers every request at once, with no I/O.
pub(crate) fn in_memory_provider() -> impl Service<
    Request<Bytes>,
    Response = Response<UpstreamBody>,
    Error = Error,
    Future = impl Future<Output = Result<Response<UpstreamBody>, Error>> + Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|request: Request<Bytes>| async move { Ok(provider_answer(&request, 24)) })
}

/// The whole `AiRouter` (mounted at [`MOUNT`]) in front of the in-memory provider `mock`.
pub(crate) fn in_memory_router() -> Result<AiRouter<MemoryKeyStore>, BuildError> {
    AiRouter::builder()
        .mount_path(MOUNT)
        .keys(keys())
        .provider("mock", in_memory_provider())
        .models("mock", ["gpt-4o-mini"])
        // A plan: two targets, the first answering (what a fallback costs when unused).
        .alias("resilient", ["mock/gpt-4o-mini", "mock/gpt-4o"])
        .build()
}

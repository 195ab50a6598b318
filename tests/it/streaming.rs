//! Streams end to end over real TCP: a client (async-openai, or a raw socket reading as bytes
//! arrive) -> the router -> the scripted mock upstream. Covers pass-through without buffering,
//! byte-exact framing, the failure contract (mid-stream reset, idle timeout, head timeout,
//! client gone), usage injection, the Responses API and speech streams.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ai_router::mock::ScriptedResponse;
use ai_router::provider::HttpProvider;
use ai_router::sse::{StreamOutcome, StreamReport, StreamSettings};
use async_openai::types::chat::{CreateChatCompletionRequest, FinishReason};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::support::{
    EXCHANGE_TIMEOUT, Harness, MOUNT, PROVIDER_KEY, ROUTER_KEY, RawResponse, assert_openai_error,
    collect_stream, send,
};

// ------------------------------------------------------------------ helpers

/// How a raw response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The framing said so: the last chunk of a chunked body, or the whole content-length.
    Clean,
    /// The connection closed before that.
    Eof,
}

/// One HTTP/1.1 exchange on a raw socket, read as the bytes arrive (chunked decoding by hand,
/// so nothing between the router and the test buffers).
struct RawStream {
    socket: TcpStream,
    /// Received bytes not decoded yet.
    pending: Vec<u8>,
    status: u16,
    headers: HeaderMap,
    chunked: bool,
    content_length: Option<usize>,
    /// The decoded body so far.
    body: Vec<u8>,
    end: Option<End>,
}

impl RawStream {
    /// Sends `POST <MOUNT><path>` with the router key and `body`, and reads the response head.
    async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Self {
        let head = format!(
            "POST {MOUNT}{path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ROUTER_KEY}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut socket = tokio::time::timeout(EXCHANGE_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(body).await.unwrap();
        let mut stream = Self {
            socket,
            pending: Vec::new(),
            status: 0,
            headers: HeaderMap::new(),
            chunked: false,
            content_length: None,
            body: Vec::new(),
            end: None,
        };
        let head_end = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            loop {
                if let Some(at) = stream.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at;
                }
                assert!(
                    stream.read_some().await,
                    "the connection closed before a head"
                );
            }
        })
        .await
        .expect("a response head in time");
        stream.parse_head(head_end);
        stream.decode();
        stream
    }

    fn parse_head(&mut self, end: usize) {
        let head = String::from_utf8(self.pending[..end].to_vec()).unwrap();
        self.pending.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        self.status = status_line[9..12].parse().unwrap();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap();
            self.headers.append(
                http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                http::HeaderValue::from_str(value.trim()).unwrap(),
            );
        }
        self.chunked = self
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        self.content_length = self.header("content-length").map(|v| v.parse().unwrap());
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Reads once from the socket; `false` at EOF.
    async fn read_some(&mut self) -> bool {
        let mut buffer = [0u8; 16 * 1024];
        let read = tokio::time::timeout(EXCHANGE_TIMEOUT, self.socket.read(&mut buffer))
            .await
            .expect("bytes in time");
        // A reset after the data is an end too.
        let n = read.unwrap_or(0);
        self.pending.extend_from_slice(&buffer[..n]);
        n > 0
    }

    /// Moves every complete piece of `pending` into `body`.
    fn decode(&mut self) {
        if self.end.is_some() {
            return;
        }
        if !self.chunked {
            self.body.append(&mut self.pending);
            if self
                .content_length
                .is_some_and(|len| self.body.len() >= len)
            {
                self.end = Some(End::Clean);
            }
            return;
        }
        // Each round consumes one chunk of a finite buffer.
        loop {
            let Some(line_end) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = std::str::from_utf8(&self.pending[..line_end]).unwrap();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
            let needed = line_end + 2 + size + 2;
            if self.pending.len() < needed {
                return;
            }
            if size == 0 {
                // No trailers are expected: `0\r\n\r\n`.
                assert_eq!(&self.pending[line_end + 2..needed], b"\r\n");
                self.pending.drain(..needed);
                self.end = Some(End::Clean);
                return;
            }
            self.body
                .extend_from_slice(&self.pending[line_end + 2..line_end + 2 + size]);
            assert_eq!(&self.pending[needed - 2..needed], b"\r\n", "chunk end");
            self.pending.drain(..needed);
        }
    }

    /// Reads until the decoded body holds `needle` (panics if the body ends first).
    async fn read_until(&mut self, needle: &[u8]) {
        tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            while !self.body.windows(needle.len()).any(|w| w == needle) {
                assert!(
                    self.end.is_none(),
                    "the body ended without {:?}: {:?}",
                    String::from_utf8_lossy(needle),
                    self.text()
                );
                if !self.read_some().await {
                    self.end = Some(End::Eof);
                }
                self.decode();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {:?} in time", String::from_utf8_lossy(needle)));
    }

    /// Reads until the body ends; returns how.
    async fn read_to_end(&mut self) -> End {
        tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            loop {
                if let Some(end) = self.end {
                    return end;
                }
                if !self.read_some().await {
                    self.decode();
                    if self.end.is_none() {
                        self.end = Some(if self.chunked || self.content_length.is_some() {
                            End::Eof
                        } else {
                            End::Clean
                        });
                    }
                }
                self.decode();
            }
        })
        .await
        .expect("the body ended in time")
    }
}

/// A stream hook sending every report to the returned receiver.
fn report_channel() -> (
    impl Fn(&StreamReport) + Send + Sync + 'static,
    UnboundedReceiver<StreamReport>,
) {
    let (sender, receiver) = unbounded_channel();
    let hook = move |report: &StreamReport| {
        let _ = sender.send(report.clone());
    };
    (hook, receiver)
}

/// The next stream report, waited for at most [`EXCHANGE_TIMEOUT`].
async fn next_report(reports: &mut UnboundedReceiver<StreamReport>) -> StreamReport {
    tokio::time::timeout(EXCHANGE_TIMEOUT, reports.recv())
        .await
        .expect("a stream report in time")
        .expect("the hook is alive")
}

/// A chat chunk frame with one choice.
fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    let chunk = json!({
        "id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    });
    format!("data: {chunk}\n\n")
}

fn content_chunk(text: &str) -> String {
    chunk(json!({"content": text}), None)
}

const DONE: &str = "data: [DONE]\n\n";

fn stream_body(model: &str, text: &str) -> String {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": text}]})
        .to_string()
}

/// The SSE frames of `text` (split on blank `\n\n` lines; the scripts here use `\n` only).
fn frames(text: &str) -> Vec<&str> {
    text.split_inclusive("\n\n").collect()
}

/// The JSON of a `data: {...}\n\n` frame.
fn frame_json(frame: &str) -> Value {
    let data = frame
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("not a data frame: {frame:?}"));
    serde_json::from_str(data.trim_end()).unwrap_or_else(|e| panic!("{e}: {frame:?}"))
}

/// Calls the mock directly (no router) with `body`.
async fn direct_to_mock(harness: &Harness, path: &str, body: Bytes) -> RawResponse {
    let request = Request::post(format!("{}{path}", harness.upstream.base_url()))
        .header("authorization", format!("Bearer {PROVIDER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    send(request).await
}

/// Asserts the chat error frame that ends a failed stream, and returns its `error` object.
fn assert_error_frame(frame: &str, code: &str) -> Value {
    assert!(frame.ends_with("\n\n"), "{frame:?}");
    let data = frame
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("not a data frame: {frame:?}"));
    let error = assert_openai_error(data.trim_end().as_bytes(), Some(code));
    assert_eq!(error["type"], "server_error", "{frame}");
    assert!(error["param"].is_null(), "{frame}");
    error
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn async_openai_rebuilds_tool_calls_from_streamed_deltas() {
    let harness = Harness::start().await;
    let script = [
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                "id": "call_weather", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_time", "type": "function",
                "function": {"name": "get_time", "arguments": "{\"tz\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "\"CET\"}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        DONE.to_owned(),
    ];
    // Upstream frames that do not match events: two events in one frame, one event split
    // over two frames mid-JSON.
    let all = script.concat();
    let cut_1 = script[..3].concat().len();
    let cut_2 = cut_1 + script[3].len() / 2;
    let chunks = [
        Bytes::from(script[..1].concat()),
        Bytes::from(all[script[0].len()..cut_1].to_owned()),
        Bytes::from(all[cut_1..cut_2].to_owned()),
        Bytes::from(all[cut_2..].to_owned()),
    ];
    harness.upstream.script(ScriptedResponse::stream(chunks));

    let tools = json!([
        {"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
    ]);
    let request: CreateChatCompletionRequest = serde_json::from_value(json!({
        "model": "mock/gpt-4o-mini",
        "messages": [{"role": "user", "content": "weather and time in Paris?"}],
        "tools": tools,
        "stream": true,
    }))
    .unwrap();
    let stream = harness
        .client()
        .chat()
        .create_stream(request)
        .await
        .unwrap();
    let chunks: Vec<_> = collect_stream(stream)
        .await
        .into_iter()
        .map(|item| item.expect("every chunk parses"))
        .collect();
    assert_eq!(
        chunks.len(),
        script.len() - 1,
        "one item per chunk, [DONE] ends"
    );

    // index -> (id, name, arguments)
    let mut calls: BTreeMap<u32, (Option<String>, Option<String>, String)> = BTreeMap::new();
    for chunk in &chunks {
        assert_eq!(chunk.id, "chatcmpl-script");
        for call in chunk
            .choices
            .iter()
            .flat_map(|c| c.delta.tool_calls.iter().flatten())
        {
            let entry = calls.entry(call.index).or_default();
            if let Some(id) = &call.id {
                assert!(entry.0.replace(id.clone()).is_none(), "id sent twice");
            }
            if let Some(function) = &call.function {
                if let Some(name) = &function.name {
                    assert!(entry.1.replace(name.clone()).is_none(), "name sent twice");
                }
                entry
                    .2
                    .push_str(function.arguments.as_deref().unwrap_or(""));
            }
        }
    }
    let expected: BTreeMap<u32, (Option<String>, Option<String>, String)> = [
        (0, ("call_weather", "get_weather", r#"{"city":"Paris"}"#)),
        (1, ("call_time", "get_time", r#"{"tz":"CET"}"#)),
    ]
    .into_iter()
    .map(|(i, (id, name, args))| (i, (Some(id.into()), Some(name.into()), args.into())))
    .collect();
    assert_eq!(calls, expected);
    let finish: Vec<_> = chunks
        .iter()
        .flat_map(|c| c.choices.iter().filter_map(|choice| choice.finish_reason))
        .collect();
    assert_eq!(finish, [FinishReason::ToolCalls]);
    assert_eq!(
        chunks[0].choices[0].delta.role,
        Some(async_openai::types::chat::Role::Assistant)
    );

    let seen = harness.only_upstream_request();
    let seen = seen.json().unwrap();
    assert_eq!(seen["model"], "gpt-4o-mini");
    assert_eq!(seen["stream"], true);
    assert_eq!(seen["tools"], tools);
}

#[tokio::test]
async fn the_first_event_reaches_the_client_before_the_second_is_sent() {
    let harness = Harness::start().await;
    let gate = Arc::new(Notify::new());
    let (first, second) = (content_chunk("first"), content_chunk(" second"));
    harness.upstream.script(
        ScriptedResponse::stream([first.clone(), second.clone(), DONE.to_owned()])
            .gate_before(1, Arc::clone(&gate)),
    );
    let body = stream_body("mock/gpt-4o-mini", "hi");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.status, 200, "{}", raw.text());

    // The mock cannot send the second chunk yet: the first must arrive on its own.
    raw.read_until(first.as_bytes()).await;
    assert_eq!(raw.text(), first);
    assert_eq!(raw.end, None);

    gate.notify_one();
    assert_eq!(raw.read_to_end().await, End::Clean);
    assert_eq!(raw.text(), [first, second, DONE.to_owned()].concat());
}

#[tokio::test]
async fn framing_is_kept_byte_for_byte_with_stream_headers() {
    let harness = Harness::start().await;
    let chunks: Vec<&'static str> = vec![
        ": keep-alive\n\n",
        "id: 1\r\ndata: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\r\n\r\n",
        ": keep-alive\r\n\r\n",
        "event: message\nid: 2\nretry: 1000\ndata: {\"id\":\"c\",\n",
        "data: \"choices\":[]}\n\n: trailing comment\n\n",
        "id: 3\rdata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\r",
        "data: [DONE]\r\n\r\n",
    ];
    harness
        .upstream
        .script(ScriptedResponse::stream(chunks.clone()));
    let body = stream_body("mock/gpt-4o-mini", "hi");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean);
    assert_eq!(raw.status, 200);
    assert_eq!(raw.text(), chunks.concat());

    assert_eq!(raw.header("content-type"), Some("text/event-stream"));
    assert_eq!(raw.header("cache-control"), Some("no-cache"));
    assert_eq!(raw.headers.get_all("cache-control").iter().count(), 1);
    assert_eq!(raw.header("x-accel-buffering"), Some("no"));
    assert!(raw.header("content-length").is_none());
    let request_id = raw.header("x-request-id").expect("x-request-id");
    assert!(!request_id.is_empty() && request_id != "mock-req-1");
    assert_eq!(raw.header("x-upstream-request-id"), Some("mock-req-1"));

    // A last event the upstream never terminated is still delivered as it was sent.
    let unterminated = [content_chunk("last"), "data: [DONE]\n".to_owned()];
    harness
        .upstream
        .script(ScriptedResponse::stream(unterminated.clone()));
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean);
    assert_eq!(raw.text(), unterminated.concat());
}

#[tokio::test]
async fn a_mid_stream_reset_ends_with_an_error_frame_and_no_done() {
    let (hook, mut reports) = report_channel();
    let harness = Harness::with(|builder| builder.on_usage(hook)).await;
    let script = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        content_chunk("partial"),
        content_chunk(" never sent"),
        chunk(json!({}), Some("stop")),
        DONE.to_owned(),
    ];
    harness
        .upstream
        .script(ScriptedResponse::stream(script.clone()).reset_after(2));
    let body = stream_body("mock/gpt-4o-mini", "hi");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.read_to_end().await, End::Clean, "{}", raw.text());
    let text = raw.text();
    let sent = script[..2].concat();
    assert!(text.starts_with(&sent), "{text}");
    let rest = frames(&text[sent.len()..]);
    assert_eq!(rest.len(), 1, "exactly one frame after the data: {text}");
    let error = assert_error_frame(rest[0], "upstream_stream_error");
    assert!(!error["message"].as_str().unwrap().contains("127.0.0.1"));
    assert!(!text.contains("[DONE]"), "{text}");
    for frame in frames(&text) {
        let json = frame_json(frame);
        for choice in json["choices"].as_array().into_iter().flatten() {
            assert!(choice["finish_reason"].is_null(), "made-up finish: {frame}");
        }
    }
    let report = next_report(&mut reports).await;
    assert_eq!(report.outcome, StreamOutcome::UpstreamFailed);

    // async-openai surfaces the frame as an error item, after the good chunks.
    harness
        .upstream
        .script(ScriptedResponse::stream(script.clone()).reset_after(2));
    let request: CreateChatCompletionRequest =
        serde_json::from_str(&stream_body("mock/gpt-4o-mini", "hi")).unwrap();
    let stream = harness
        .client()
        .chat()
        .create_stream(request)
        .await
        .unwrap();
    let items = collect_stream(stream).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items[..2].iter().all(Result::is_ok), "{items:?}");
    let error = items[2].as_ref().expect_err("the error frame is an error");
    assert!(
        error.to_string().contains("upstream_stream_error"),
        "{error}"
    );
    assert_eq!(
        next_report(&mut reports).await.outcome,
        StreamOutcome::UpstreamFailed
    );
}

#[tokio::test]
async fn a_reset_inside_an_event_never_sends_its_first_half() {
    let harness = Harness::start().await;
    let whole = content_chunk("whole");
    let broken = content_chunk("broken in two");
    let half = broken[..broken.len() / 2].to_owned();
    harness
        .upstream
        .script(ScriptedResponse::stream([whole.clone(), half.clone()]).reset_after(2));
    let body = stream_body("mock/gpt-4o-mini", "hi");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean, "{}", raw.text());
    let text = raw.text();
    assert!(text.starts_with(&whole), "{text}");
    // The error frame comes right after the last whole event: the client's parser is on a
    // boundary and never sees the half event.
    let rest = frames(&text[whole.len()..]);
    assert_eq!(rest.len(), 1, "{text}");
    assert_error_frame(rest[0], "upstream_stream_error");
    assert!(!text.contains("broken"), "{text}");
}

#[tokio::test]
async fn a_silent_upstream_ends_with_an_idle_timeout_frame() {
    let (hook, mut reports) = report_channel();
    let harness = Harness::with(|builder| {
        builder
            .idle_timeout(Duration::from_millis(300))
            .on_usage(hook)
    })
    .await;
    let first = content_chunk("then silence");
    harness.upstream.script(
        ScriptedResponse::stream([first.clone(), content_chunk("never"), DONE.to_owned()])
            .stall_after(1),
    );
    let body = stream_body("mock/gpt-4o-mini", "hi");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    raw.read_until(first.as_bytes()).await;
    let silent_since = Instant::now();
    assert_eq!(raw.read_to_end().await, End::Clean, "{}", raw.text());
    let silence = silent_since.elapsed();
    assert!(silence >= Duration::from_millis(250), "{silence:?}");
    let text = raw.text();
    let rest = frames(&text[first.len()..]);
    assert_eq!(rest.len(), 1, "{text}");
    assert_error_frame(rest[0], "upstream_idle_timeout");
    assert!(!text.contains("[DONE]"), "{text}");

    assert_eq!(
        next_report(&mut reports).await.outcome,
        StreamOutcome::IdleTimeout
    );
    // The router let go of the stalled upstream connection.
    assert!(
        harness
            .upstream
            .wait_connections_closed(1, Duration::from_secs(2))
            .await
    );
}

#[tokio::test]
async fn a_stalled_json_answer_is_aborted_not_left_hanging() {
    let harness = Harness::with(|builder| builder.idle_timeout(Duration::from_millis(300))).await;
    harness.upstream.script(
        ScriptedResponse::stream(["{\"id\":\"chatcmpl-1\",", "\"never\":1}"])
            .header("content-type", "application/json")
            .stall_after(1),
    );
    let body = r#"{"model":"mock/gpt-4o-mini","messages":[]}"#;
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.status, 200);
    let stalled_since = Instant::now();
    let end = raw.read_to_end().await;
    assert_ne!(
        end,
        End::Clean,
        "a cut JSON answer must not look complete: {}",
        raw.text()
    );
    assert!(stalled_since.elapsed() >= Duration::from_millis(250));
    assert!(!raw.text().contains("never"));
    assert!(
        harness
            .upstream
            .wait_connections_closed(1, Duration::from_secs(2))
            .await
    );
}

#[tokio::test]
async fn the_idle_timeout_counts_from_the_last_chunk_not_the_start() {
    let (hook, mut reports) = report_channel();
    let harness = Harness::with(|builder| {
        builder
            .idle_timeout(Duration::from_millis(400))
            .on_usage(hook)
    })
    .await;
    // 8 chunks 100 ms apart: 700 ms in all, never 400 ms of silence.
    let mut script: Vec<String> = (0..7).map(|i| content_chunk(&format!("w{i} "))).collect();
    script.push(DONE.to_owned());
    harness
        .upstream
        .script(ScriptedResponse::stream(script.clone()).chunk_delay(Duration::from_millis(100)));
    let started = Instant::now();
    let body = stream_body("mock/gpt-4o-mini", "hi");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean);
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(raw.text(), script.concat());
    assert_eq!(
        next_report(&mut reports).await.outcome,
        StreamOutcome::Completed
    );

    // Silent from the head on: the error frame is all the client gets.
    harness
        .upstream
        .script(ScriptedResponse::stream([DONE]).stall_after(0));
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.read_to_end().await, End::Clean);
    let text = raw.text();
    let frames = frames(&text);
    assert_eq!(frames.len(), 1, "{text}");
    assert_error_frame(frames[0], "upstream_idle_timeout");
    let report = next_report(&mut reports).await;
    assert_eq!(report.outcome, StreamOutcome::IdleTimeout);
    assert_eq!(report.first_byte, None);
}

#[tokio::test]
async fn no_response_head_in_time_is_a_504_before_any_byte() {
    let harness = Harness::with_upstream(|builder, upstream| {
        builder.provider(
            "timed",
            HttpProvider::builder(upstream.base_url())
                .api_key(PROVIDER_KEY)
                .timeout(Duration::from_millis(200))
                .build()
                .unwrap(),
        )
    })
    .await;
    harness.upstream.script(
        ScriptedResponse::stream([content_chunk("too late"), DONE.to_owned()])
            .delay(Duration::from_secs(3)),
    );
    let started = Instant::now();
    let body = stream_body("timed/gpt-4o-mini", "hi");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean);
    let elapsed = started.elapsed();
    // The first bytes the client got are an error head, not a 200 + event stream.
    assert_eq!(raw.status, 504, "{}", raw.text());
    assert_eq!(raw.header("content-type"), Some("application/json"));
    let error = assert_openai_error(&raw.body, Some("upstream_timeout"));
    assert_eq!(error["type"], "timeout_error");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn a_client_leaving_drops_the_upstream_connection() {
    let (hook, mut reports) = report_channel();
    let harness = Harness::with(|builder| builder.on_usage(hook)).await;
    let first = content_chunk("hello");
    harness.upstream.script(
        ScriptedResponse::stream([first.clone(), content_chunk("never"), DONE.to_owned()])
            .stall_after(1),
    );
    let body = stream_body("mock/gpt-4o-mini", "hi");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    raw.read_until(first.as_bytes()).await;
    let request_id = raw.header("x-request-id").unwrap().to_owned();
    assert_eq!(harness.upstream.connections_closed(), 0);

    drop(raw);
    assert!(
        harness
            .upstream
            .wait_connections_closed(1, Duration::from_secs(2))
            .await,
        "the upstream connection is still open"
    );
    let report = next_report(&mut reports).await;
    assert_eq!(report.outcome, StreamOutcome::ClientGone);
    assert_eq!(
        report.request_id.as_ref().map(|id| id.as_str()),
        Some(request_id.as_str())
    );
    assert!(report.first_byte.is_some());
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn a_client_leaving_before_the_head_drops_the_upstream_connection() {
    let harness = Harness::start().await;
    harness.upstream.script(
        ScriptedResponse::stream([content_chunk("too late"), DONE.to_owned()])
            .delay(Duration::from_secs(3)),
    );
    let started = Instant::now();
    let body = stream_body("mock/gpt-4o-mini", "hi");
    let head = format!(
        "POST {MOUNT}/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ROUTER_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut socket = TcpStream::connect(harness.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    assert!(
        harness.upstream.wait_requests(1, EXCHANGE_TIMEOUT).await,
        "the request never reached the upstream"
    );
    assert_eq!(harness.upstream.connections_closed(), 0);
    drop(socket);
    assert!(
        harness
            .upstream
            .wait_connections_closed(1, Duration::from_secs(2))
            .await,
        "the upstream connection is still open"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The mock's answer to `body` sent directly, with its ids made those of request 1.
async fn direct_stream(harness: &Harness, path: &str, body: Bytes) -> String {
    let direct = direct_to_mock(harness, path, body).await;
    assert_eq!(direct.status, 200, "{}", direct.text());
    let n = harness.upstream.request_count();
    direct.text().replace(&format!("-mock-{n}\""), "-mock-1\"")
}

#[tokio::test]
async fn injected_usage_is_counted_and_hidden_from_the_client() {
    let (hook, mut reports) = report_channel();
    let harness = Harness::with(|builder| {
        builder
            .stream_settings("mock", StreamSettings::new().inject_usage(true))
            .on_usage(hook)
    })
    .await;
    let body = stream_body("mock/gpt-4o-mini", "count my tokens");
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean);
    assert_eq!(raw.status, 200);
    let text = raw.text();

    // The mock was asked for usage.
    let seen = harness.only_upstream_request();
    let seen_json = seen.json().unwrap();
    assert_eq!(seen_json["stream_options"]["include_usage"], true);
    assert_eq!(seen_json["model"], "gpt-4o-mini");

    // What the mock sent, less its usage chunk and the `"usage":null` on every other chunk
    // (OpenAI adds both only when asked for usage), is what the client got.
    let upstream = direct_stream(&harness, "/chat/completions", seen.body.clone()).await;
    let usage_frame = frames(&upstream)
        .into_iter()
        .find(|f| f.starts_with("data: {") && frame_json(f)["choices"] == json!([]))
        .expect("the mock sent a usage chunk")
        .to_owned();
    assert!(upstream.contains(r#","usage":null}"#), "{upstream}");
    assert_eq!(
        text,
        upstream
            .replace(&usage_frame, "")
            .replace(r#","usage":null}"#, "}")
    );
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(text.ends_with(DONE), "{text}");
    for frame in frames(&text).into_iter().filter(|f| *f != DONE) {
        assert_ne!(frame_json(frame)["choices"], json!([]), "{frame}");
    }

    // The hook got the usage the mock sent.
    let report = next_report(&mut reports).await;
    assert_eq!(report.outcome, StreamOutcome::Completed);
    let usage = report.usage.expect("usage reported");
    let sent = &frame_json(&usage_frame)["usage"];
    assert_eq!(usage.input_tokens, sent["prompt_tokens"].as_u64().unwrap());
    assert_eq!(
        usage.output_tokens,
        sent["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(usage.total_tokens, sent["total_tokens"].as_u64().unwrap());
    assert!(usage.total_tokens > 0);
}

#[tokio::test]
async fn a_usage_chunk_the_client_asked_for_reaches_it_unchanged() {
    for inject in [false, true] {
        let (hook, mut reports) = report_channel();
        let harness = Harness::with(|builder| {
            builder
                .stream_settings("mock", StreamSettings::new().inject_usage(inject))
                .on_usage(hook)
        })
        .await;
        let body = json!({"model": "mock/gpt-4o-mini", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "mine"}]})
        .to_string();
        let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
        assert_eq!(raw.read_to_end().await, End::Clean);
        let text = raw.text();

        let seen = harness.only_upstream_request();
        assert_eq!(
            seen.body,
            body.replace("mock/gpt-4o-mini", "gpt-4o-mini"),
            "inject={inject}: the body is only changed in `model`"
        );
        let upstream = direct_stream(&harness, "/chat/completions", seen.body.clone()).await;
        assert_eq!(text, upstream, "inject={inject}");
        // The client asked for usage: its `"usage":null` members are its own to keep.
        assert!(
            text.contains(r#","usage":null}"#),
            "inject={inject}: {text}"
        );
        let usage_frames: Vec<Value> = frames(&text)
            .into_iter()
            .filter(|f| *f != DONE)
            .map(frame_json)
            .filter(|json| json["choices"] == json!([]))
            .collect();
        assert_eq!(usage_frames.len(), 1, "inject={inject}: {text}");
        let report = next_report(&mut reports).await;
        assert_eq!(
            report.usage.map(|u| u.total_tokens),
            usage_frames[0]["usage"]["total_tokens"].as_u64()
        );
    }
}

#[tokio::test]
async fn responses_streams_keep_every_event_and_get_no_done() {
    let (hook, mut reports) = report_channel();
    let harness = Harness::with(|builder| builder.on_usage(hook)).await;
    let body = r#"{"model":"mock/gpt-4o-mini","input":"one two three","stream":true}"#;
    let mut raw = RawStream::post(harness.addr, "/responses", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean);
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some("text/event-stream"));
    let text = raw.text();

    let seen = harness.only_upstream_request();
    assert_eq!(seen.path, "/v1/responses");
    let upstream = direct_stream(&harness, "/responses", seen.body.clone()).await;
    assert_eq!(text, upstream);
    assert!(!text.contains("[DONE]"), "{text}");

    let events = frames(&text);
    assert!(events.len() >= 5, "{text}");
    let mut names = Vec::new();
    for (sequence, event) in events.iter().enumerate() {
        let (event_line, data) = event.split_once('\n').unwrap();
        let name = event_line
            .strip_prefix("event: ")
            .unwrap_or_else(|| panic!("no event line: {event:?}"));
        let json = frame_json(data);
        assert_eq!(json["type"], name, "{event}");
        assert_eq!(json["sequence_number"], sequence as u64, "{event}");
        names.push(name);
    }
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert!(deltas >= 1, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("response.") && *n != "done"),
        "{names:?}"
    );
    let report = next_report(&mut reports).await;
    assert_eq!(report.outcome, StreamOutcome::Completed);
    let completed = frame_json(events.last().unwrap().split_once('\n').unwrap().1);
    assert_eq!(
        report.usage.map(|u| u.total_tokens),
        completed["response"]["usage"]["total_tokens"].as_u64()
    );
}

#[tokio::test]
async fn a_responses_stream_reset_ends_with_an_error_event() {
    let harness = Harness::start().await;
    let event = |name: &str, sequence: u64, extra: Value| {
        let mut data = json!({"type": name, "sequence_number": sequence});
        data.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        format!("event: {name}\ndata: {data}\n\n")
    };
    let script = [
        event(
            "response.created",
            0,
            json!({"response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}}),
        ),
        event(
            "response.output_text.delta",
            1,
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi"}),
        ),
        event(
            "response.output_text.delta",
            2,
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": " there"}),
        ),
    ];
    harness
        .upstream
        .script(ScriptedResponse::stream(script.clone()).reset_after(2));
    let body = r#"{"model":"mock/gpt-4o-mini","input":"hi","stream":true}"#;
    let mut raw = RawStream::post(harness.addr, "/responses", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean, "{}", raw.text());
    let text = raw.text();
    let sent = script[..2].concat();
    assert!(text.starts_with(&sent), "{text}");
    let rest = frames(&text[sent.len()..]);
    assert_eq!(rest.len(), 1, "{text}");
    let data = rest[0]
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("not an error event: {:?}", rest[0]));
    let error: Value = serde_json::from_str(data.trim_end()).unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "upstream_stream_error", "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(error["param"].is_null(), "{error}");
    assert_eq!(error["sequence_number"], 2, "{error}");
    assert!(!text.contains("[DONE]"), "{text}");
}

#[tokio::test]
async fn speech_sse_streams_pass_through_byte_for_byte() {
    let harness = Harness::start().await;
    let delta = |audio: &str| {
        format!(
            "event: speech.audio.delta\ndata: {}\n\n",
            json!({"type": "speech.audio.delta", "audio": audio})
        )
    };
    let script = vec![
        delta("SUQzBAAAAAAA"),
        delta("//uQxAAAAAAA"),
        delta("AAAASW5mbwAA"),
        format!(
            "event: speech.audio.done\ndata: {}\n\n",
            json!({"type": "speech.audio.done",
                "usage": {"input_tokens": 5, "output_tokens": 12, "total_tokens": 17}})
        ),
    ];
    harness
        .upstream
        .script(ScriptedResponse::stream(script.clone()));
    let body = r#"{"model":"mock/gpt-4o-mini-tts","input":"Hello there","voice":"alloy","stream_format":"sse"}"#;
    let mut raw = RawStream::post(harness.addr, "/audio/speech", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean);
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.header("content-type"), Some("text/event-stream"));
    assert_eq!(raw.text(), script.concat());

    let seen = harness.only_upstream_request();
    assert_eq!(seen.path, "/v1/audio/speech");
    assert_eq!(
        seen.body,
        body.replace("mock/gpt-4o-mini-tts", "gpt-4o-mini-tts")
    );
}

/// A client may send `"stream_options": null` (the default, spelled out). Injecting usage must
/// not then add a second `stream_options` member: strict JSON parsers (serde, like the mock)
/// reject duplicate keys, and lenient ones keep the last value (`null`).
#[tokio::test]
async fn usage_injection_never_duplicates_a_null_stream_options() {
    let (hook, mut reports) = report_channel();
    let harness = Harness::with(|builder| {
        builder
            .stream_settings("mock", StreamSettings::new().inject_usage(true))
            .on_usage(hook)
    })
    .await;
    let body = r#"{"model":"mock/gpt-4o-mini","stream":true,"stream_options":null,"messages":[{"role":"user","content":"x"}]}"#;
    let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
    assert_eq!(raw.read_to_end().await, End::Clean);

    let seen = harness.only_upstream_request();
    let upstream_body = String::from_utf8_lossy(&seen.body).into_owned();
    assert_eq!(
        upstream_body.matches("\"stream_options\"").count(),
        1,
        "one `stream_options` member upstream: {upstream_body}"
    );
    assert_eq!(raw.status, 200, "{}", raw.text());
    let text = raw.text();
    assert!(text.ends_with(DONE), "{text}");
    assert!(
        frames(&text)
            .into_iter()
            .filter(|f| *f != DONE)
            .all(|f| frame_json(f)["choices"] != json!([])),
        "{text}"
    );
    assert_eq!(
        next_report(&mut reports).await.outcome,
        StreamOutcome::Completed
    );
}

/// A stream request answered 200 with a page (a captive portal, a misrouted proxy): the SDK
/// would read no event and raise nothing, so it gets a 502 before the first byte instead.
#[tokio::test]
async fn a_stream_request_answered_without_an_event_stream_is_a_502() {
    let harness = Harness::start().await;
    for (content_type, body) in [
        ("text/html", "<html>Sign in to the Wi-Fi</html>"),
        ("application/json", r#"{"id":"chatcmpl-1","choices":[]}"#),
    ] {
        harness.upstream.script(
            ScriptedResponse::new(200)
                .header("content-type", content_type)
                .body(body),
        );
        let response = harness
            .post_json("/chat/completions", stream_body("mock/gpt-4o-mini", "hi"))
            .await;
        let error = response.assert_error(502, Some("upstream_error"));
        assert!(!error.to_string().contains("Wi-Fi"), "{content_type}");
    }
    // The same JSON answer to a request that did not ask for a stream passes.
    harness.upstream.script(
        ScriptedResponse::new(200)
            .header("content-type", "application/json")
            .body(r#"{"ok":true}"#),
    );
    let plain = harness
        .post_json(
            "/chat/completions",
            r#"{"model":"mock/gpt-4o-mini","messages":[]}"#,
        )
        .await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, r#"{"ok":true}"#);
}

/// What a log subscriber wrote.
#[derive(Clone, Default)]
struct LogLines(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A warning logged while a stream is being sent (the upstream broke mid-way) is inside the
/// request's span: it names the request id the client got.
#[tokio::test]
async fn a_line_logged_mid_stream_carries_the_request_id() {
    let lines = LogLines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test runtime has one thread: the router's tasks log through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let harness = Harness::start().await;
    // Tests on other threads may have registered the router's callsites while this
    // subscriber was being set (tracing caches each callsite's interest once, globally): a
    // registration that read the subscriber list just before this one joined would stay
    // "never". Rebuilding the cache now, after the fact, closes that window.
    tracing::callsite::rebuild_interest_cache();
    // tracing caches each callsite's interest globally; under parallel tests a cache rebuild
    // racing with this thread-local subscriber can still drop one line (seen 1 run in 4):
    // up to 3 failed streams, each with its own id, and the line of one of them must carry it.
    let mut found = None;
    for _ in 0..3 {
        harness.upstream.script(
            ScriptedResponse::stream([content_chunk("partial"), content_chunk(" lost")])
                .reset_after(1),
        );
        let body = stream_body("mock/gpt-4o-mini", "hi");
        let mut raw = RawStream::post(harness.addr, "/chat/completions", body.as_bytes()).await;
        assert_eq!(raw.read_to_end().await, End::Clean);
        let id = raw.headers["x-request-id"].to_str().unwrap().to_owned();
        let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        if let Some(line) = logged
            .lines()
            .find(|line| line.contains("upstream stream failed mid-way") && line.contains(&id))
        {
            found = Some((id, line.to_owned()));
            break;
        }
        tracing::callsite::rebuild_interest_cache();
    }
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let (id, line) =
        found.unwrap_or_else(|| panic!("no mid-stream warning with its id in:\n{logged}"));
    // The log line's span is the small `request{id}` one (the GenAI span has its own target).
    assert!(line.contains(&format!("request{{id={id}}}")), "{line}");
}

//! The gateway's traces over real OTLP/HTTP (feature `otel`): an async-openai client -> the
//! gateway over TCP (built by `Gateway::start` from config text with `[telemetry]
//! otlp_endpoint`) -> a mock upstream over TCP, every span sent by the gateway's
//! `OtlpExporter` to the in-process receiver of `tests/otel`, which decodes the protobuf.
//!
//! The config has no export delay (the exporter waits 5 s between exports): each test stops
//! the gateway the way `run()` does (serving ends, in-flight requests finish), then shuts the
//! exporter down, which sends what is queued, and reads what the receiver got.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The OTLP/HTTP receiver of `tests/otel` (decodes each export, keeps its spans).
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]
#[path = "../../tests/otel/receiver.rs"]
mod receiver;

use std::net::SocketAddr;

use ai_router::mock::MockUpstream;
use ai_router::otel::OtlpExporter;
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use self::receiver::{Attr, CLIENT, ExportedSpan, Receiver, SERVER, STATUS_UNSET};
use super::Gateway;
use crate::config::Config;
use crate::tests::PATIENCE;

/// The router key of `[[keys]] name = "demo"` (its SHA-256 is in the config).
const ROUTER_KEY: &str = "sk-router-demo";
/// The first hex digits of that key's SHA-256.
const ROUTER_KEY_DIGEST: &str = "536358db99f32f74";
/// The upstream's key, sent by the gateway as a static `authorization` header.
const PROVIDER_KEY: &str = "sk-upstream-otel-secret";
/// A key the gateway does not know.
const WRONG_KEY: &str = "sk-wrong-otel-secret";
/// `[telemetry] service_name`.
const SERVICE: &str = "gateway-otel-test";
/// What the client asks (the mock echoes it back).
const PROMPT: &str = "the secret recipe is 42 anchovies";

/// A gateway exporting its traces to a receiver, in front of a mock upstream.
struct Running {
    addr: SocketAddr,
    upstream: MockUpstream,
    receiver: Receiver,
    /// A clone of the gateway's exporter, shut down once serving has ended.
    traces: OtlpExporter,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts the receiver, the upstream (which wants [`PROVIDER_KEY`]) and a gateway
    /// exporting to the receiver, serving on a loopback port.
    async fn start() -> Self {
        let receiver = Receiver::start().await;
        let telemetry = format!(
            "otlp_endpoint = \"{}\"\nservice_name = \"{SERVICE}\"",
            receiver.endpoint()
        );
        let (upstream, gateway) = start_gateway(&telemetry).await;
        let traces = gateway
            .traces
            .clone()
            .expect("`otlp_endpoint` starts an exporter");
        let (addr, stop, task) = serve(gateway);
        Self {
            addr,
            upstream,
            receiver,
            traces,
            stop,
            task,
        }
    }

    /// An async-openai client of the gateway, with `key`, sending `traceparent`.
    fn client(&self, key: &str, traceparent: &str) -> Client<OpenAIConfig> {
        Client::with_config(
            OpenAIConfig::new()
                .with_api_base(format!("http://{}/v3/router", self.addr))
                .with_api_key(key)
                .with_header("traceparent", traceparent)
                .unwrap(),
        )
    }

    /// Stops serving (what is in flight finishes, so every request has ended), then shuts
    /// the exporter down as `run()` does, which sends what it still queues; returns every
    /// span the receiver got.
    async fn stop_and_flush(self) -> (Vec<ExportedSpan>, MockUpstream) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the gateway stopped in time")
            .unwrap();
        let traces = self.traces;
        let delivered = tokio::task::spawn_blocking(move || traces.shutdown(PATIENCE))
            .await
            .unwrap();
        assert!(delivered, "the exporter sent what it held on shutdown");
        (self.receiver.spans(), self.upstream)
    }
}

/// A W3C `traceparent` (sampled).
fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

fn s(value: &str) -> Attr {
    Attr::Str(value.to_owned())
}

fn chat_request(stream: bool) -> CreateChatCompletionRequest {
    let mut request = CreateChatCompletionRequestArgs::default()
        .model("up/gpt-4o-mini")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(PROMPT)
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    if stream {
        request.stream = Some(true);
        request.stream_options = Some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        });
    }
    request
}

/// The spans of trace `trace_id`: its one SERVER span and its CLIENT spans.
fn trace<'a>(
    spans: &'a [ExportedSpan],
    trace_id: &str,
) -> (&'a ExportedSpan, Vec<&'a ExportedSpan>) {
    let of_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let servers: Vec<_> = of_trace.iter().filter(|s| s.kind == SERVER).collect();
    let clients: Vec<_> = of_trace
        .iter()
        .copied()
        .filter(|s| s.kind == CLIENT)
        .collect();
    assert_eq!(servers.len(), 1, "{spans:#?}");
    assert_eq!(servers.len() + clients.len(), of_trace.len(), "{spans:#?}");
    (servers[0], clients)
}

/// No span name, attribute or resource of `spans` holds a key or the prompt.
fn assert_nothing_secret(spans: &[ExportedSpan]) {
    for span in spans {
        let texts = span
            .attributes
            .values()
            .flat_map(Attr::strings)
            .chain([span.name.as_str(), span.scope.as_str()])
            .chain(span.service_name.as_deref());
        for text in texts {
            for secret in [
                ROUTER_KEY,
                ROUTER_KEY_DIGEST,
                PROVIDER_KEY,
                WRONG_KEY,
                "otel-secret",
                PROMPT,
                "anchovies",
            ] {
                assert!(
                    !text.contains(secret),
                    "`{text}` of `{}` holds `{secret}`",
                    span.name
                );
            }
        }
    }
}

/// Sends `request` raw on a new connection and reads until the gateway closes it.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(PATIENCE, run).await.unwrap()
}

#[tokio::test]
async fn a_chat_through_the_gateway_is_a_server_span_under_the_callers_and_a_client_span_the_upstream_joins()
 {
    let gateway = Running::start().await;
    let (trace_id, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let answer = gateway
        .client(ROUTER_KEY, &traceparent(trace_id, caller_span))
        .chat()
        .create(chat_request(false))
        .await
        .unwrap();
    let usage = answer.usage.clone().unwrap();
    // A wrong key: refused, its span names no key.
    let (refused_trace, refused_caller) = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174");
    let refused = gateway
        .client(WRONG_KEY, &traceparent(refused_trace, refused_caller))
        .chat()
        .create(chat_request(false))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // Outside the mount: no trace at all.
    let health = exchange(
        gateway.addr,
        "GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let (spans, upstream) = gateway.stop_and_flush().await;
    let (request, attempts) = trace(&spans, trace_id);
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(request.name, "chat up/gpt-4o-mini");
    assert_eq!(request.status_code, STATUS_UNSET);
    assert_eq!(request.service_name.as_deref(), Some(SERVICE));
    for (key, value) in [
        ("ai_router.key", s("demo")),
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.provider.name", s("up")),
        ("gen_ai.request.model", s("up/gpt-4o-mini")),
        ("gen_ai.response.id", s(&answer.id)),
        ("http.response.status_code", Attr::Int(200)),
        ("url.path", s("/v3/router/chat/completions")),
        ("ai_router.attempts", Attr::Int(1)),
        (
            "gen_ai.usage.input_tokens",
            Attr::Int(i64::from(usage.prompt_tokens)),
        ),
        (
            "gen_ai.usage.output_tokens",
            Attr::Int(i64::from(usage.completion_tokens)),
        ),
    ] {
        assert_eq!(request.attr(key), &value, "{key}");
    }

    assert_eq!(attempts.len(), 1, "{spans:#?}");
    let attempt = attempts[0];
    assert_eq!(attempt.parent_span_id, request.span_id);
    assert_eq!(attempt.name, "chat gpt-4o-mini");
    assert_eq!(attempt.service_name.as_deref(), Some(SERVICE));
    assert_eq!(attempt.attr("http.response.status_code"), &Attr::Int(200));
    assert_eq!(
        attempt.attr("server.port"),
        &Attr::Int(i64::from(upstream.addr().port()))
    );
    assert!(attempt.start >= request.start && attempt.end <= request.end);
    // The upstream joined the trace under the attempt's span, not the caller's.
    let seen = upstream.last_request().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(traceparent(trace_id, &attempt.span_id).as_str())
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "the refused request went nowhere"
    );

    // The refused request: a SERVER span in its caller's trace, no attempt, no key.
    let (refused, refused_attempts) = trace(&spans, refused_trace);
    assert_eq!(refused.parent_span_id, refused_caller);
    assert_eq!(refused.attr("http.response.status_code"), &Attr::Int(401));
    assert!(!refused.has("ai_router.key"), "{refused:#?}");
    assert!(refused_attempts.is_empty());

    // Those two requests' spans and nothing else (`/health` made none).
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert_nothing_secret(&spans);
}

#[tokio::test]
async fn a_streamed_chat_through_the_gateway_has_the_streams_usage_on_its_server_span() {
    let gateway = Running::start().await;
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut stream = gateway
        .client(ROUTER_KEY, &traceparent(trace_id, caller_span))
        .chat()
        .create_stream(chat_request(true))
        .await
        .unwrap();
    let drain = async {
        let mut chunks = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            chunks.push(chunk.unwrap());
        }
        chunks
    };
    let chunks = tokio::time::timeout(PATIENCE, drain).await.unwrap();
    let usage = chunks.last().unwrap().usage.clone().unwrap();
    assert!(usage.completion_tokens > 0, "{usage:?}");

    let (spans, upstream) = gateway.stop_and_flush().await;
    let (request, attempts) = trace(&spans, trace_id);
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(request.name, "chat up/gpt-4o-mini");
    assert_eq!(request.service_name.as_deref(), Some(SERVICE));
    // Known once the stream's last events passed.
    for (key, value) in [
        (
            "gen_ai.usage.input_tokens",
            Attr::Int(i64::from(usage.prompt_tokens)),
        ),
        (
            "gen_ai.usage.output_tokens",
            Attr::Int(i64::from(usage.completion_tokens)),
        ),
        ("gen_ai.response.id", s(&chunks[0].id)),
        ("ai_router.outcome", s("completed")),
        ("ai_router.key", s("demo")),
        ("http.response.status_code", Attr::Int(200)),
    ] {
        assert_eq!(request.attr(key), &value, "{key}");
    }
    assert_eq!(attempts.len(), 1, "{spans:#?}");
    let attempt = attempts[0];
    assert_eq!(attempt.parent_span_id, request.span_id);
    assert!(attempt.end <= request.end);
    let seen = upstream.last_request().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(traceparent(trace_id, &attempt.span_id).as_str())
    );
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_nothing_secret(&spans);
}

/// A mock upstream wanting [`PROVIDER_KEY`], and a gateway in front of it (provider `up`,
/// key `demo`, access log off) with `telemetry` added to its `[telemetry]` table.
async fn start_gateway(telemetry: &str) -> (MockUpstream, Gateway) {
    let upstream = MockUpstream::builder()
        .api_key(PROVIDER_KEY)
        .start()
        .await
        .unwrap();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
shutdown_grace_secs = 5
[[keys]]
name = "demo"
key_sha256 = "536358db99f32f74c819f261b16d778ab5f05118e8548f4bb21c0a53991aee35"
[providers.up]
base_url = "{base_url}"
auth = "none"
headers = {{ authorization = "Bearer {PROVIDER_KEY}" }}
stream_usage = true
[telemetry]
access_log = "off"
{telemetry}
"#,
        base_url = upstream.base_url(),
    );
    let config = Config::parse(&text).unwrap();
    let gateway = Gateway::start(config, std::io::sink()).await.unwrap();
    (upstream, gateway)
}

/// Serves `gateway` until the sender is used: its address, the sender, the serving task.
fn serve(gateway: Gateway) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let addr = gateway.addr;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// `join_client_traces = false` keeps a client's trace context from the upstreams even when
/// nothing is exported: the upstream gets the router's own `traceparent`, in a trace of its
/// own, and no `tracestate`.
#[tokio::test]
async fn refused_client_traces_never_reach_the_upstream_even_without_export() {
    let (upstream, gateway) = start_gateway("join_client_traces = false").await;
    assert!(gateway.traces.is_none());
    let (addr, stop, task) = serve(gateway);
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://{addr}/v3/router"))
            .with_api_key(ROUTER_KEY)
            .with_header(
                "traceparent",
                format!("00-{caller_trace}-b7ad6b7169203331-01"),
            )
            .unwrap()
            .with_header("tracestate", "vendor=x1")
            .unwrap(),
    );
    tokio::time::timeout(PATIENCE, client.chat().create(chat_request(false)))
        .await
        .unwrap()
        .unwrap();
    let seen = upstream.last_request().unwrap();
    let sent = seen
        .header("traceparent")
        .expect("the router's own traceparent");
    assert!(
        sent.starts_with("00-") && !sent.contains(caller_trace),
        "{sent}"
    );
    assert_eq!(seen.header("tracestate"), None);
    let _ = stop.send(());
    let _ = tokio::time::timeout(PATIENCE, task).await;
}

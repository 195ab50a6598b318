//! The router's spans exported over real OTLP/HTTP (feature `otel`): an async-openai client ->
//! the router over TCP -> the mock upstream, every span sent to an in-process receiver that
//! decodes the protobuf, by either exporter: `ai_router::otel::OtlpTracing` (the router's
//! GenAI `tracing` spans through its subscriber layer) or `ai_router::otel::OtlpExporter`
//! (spans written from each request's summary). Each span test runs once per exporter
//! (modules `tracing_layer` and `direct`): the same names, kinds, GenAI attributes,
//! parentage, `traceparent` in and out, and nothing secret or said in them; and a dead or
//! hanging collector never fails a request.
//!
//! One global subscriber and one direct exporter send to one receiver for the whole binary;
//! each test finds its own spans by trace id (it sends its own `traceparent`, or reads the
//! request id).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

mod receiver;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ai_router::AiRouterBuilder;
use ai_router::auth::MemoryKeyStore;
use ai_router::mock::ScriptedResponse;
use ai_router::otel::{OtlpExporter, OtlpTracing};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{Layer as _, filter::Targets};

use receiver::{Attr, CLIENT, ExportedSpan, Receiver, SERVER, STATUS_ERROR, STATUS_UNSET};
use support::{Harness, MOUNT, PROVIDER_KEY, ROUTER_KEY, collect_stream, mock_provider, send};

const SERVICE: &str = "ai-router-otel-test";
const PROMPT: &str = "the secret recipe is 42 anchovies";

/// The receiver every test's spans go to, and the two exporters sending them.
struct Telemetry {
    receiver: Receiver,
    _tracing: OtlpTracing,
    direct: OtlpExporter,
}

/// How a test's router exports its spans.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// GenAI `tracing` spans, through the global subscriber's `OtlpTracing::layer()`.
    TracingLayer,
    /// Spans written from each request's summary by `OtlpExporter` (the router's observer),
    /// no `tracing` span at all.
    Direct,
}

impl Mode {
    /// `builder` set up to export this way.
    fn configure(
        self,
        builder: AiRouterBuilder<MemoryKeyStore>,
    ) -> AiRouterBuilder<MemoryKeyStore> {
        match self {
            Self::TracingLayer => builder,
            Self::Direct => builder
                .genai_spans(false)
                .trace_context(true)
                .observer(telemetry().direct.clone()),
        }
    }

    /// The default harness, exporting this way.
    async fn harness(self) -> Harness {
        Harness::with(|builder| self.configure(builder)).await
    }
}

/// Starts the receiver (on a runtime of its own, alive as long as the binary) and installs the
/// global subscriber exporting to it, once.
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let (started, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                started.send(Receiver::start().await).unwrap();
                std::future::pending::<()>().await;
            });
        });
        let receiver = receiver.recv().unwrap();
        let tracing = OtlpTracing::builder(receiver.endpoint())
            .service_name(SERVICE)
            .scheduled_delay(Duration::from_millis(20))
            .build()
            .unwrap();
        let subscriber = tracing_subscriber::registry().with(
            tracing
                .layer()
                .with_filter(Targets::new().with_target("ai_router", tracing::Level::INFO)),
        );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        let direct = OtlpExporter::builder(receiver.endpoint())
            .service_name(SERVICE)
            .scheduled_delay(Duration::from_millis(20))
            .build()
            .unwrap();
        Telemetry {
            receiver,
            _tracing: tracing,
            direct,
        }
    })
}

/// Installs the subscriber before a test makes spans. tracing caches each callsite's interest
/// globally: a callsite another test registered while the subscriber was being set could stay
/// "never"; rebuilding the cache after the fact closes that window.
fn setup() {
    telemetry();
    tracing::callsite::rebuild_interest_cache();
}

/// A fresh W3C trace id and parent span id (hex), unique within the run.
fn fresh_ids() -> (String, String) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (
        format!("{nanos:016x}{n:016x}"),
        format!("{:016x}", nanos ^ n),
    )
}

fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// An async-openai client for `harness` sending `traceparent`.
fn client_with_traceparent(harness: &Harness, traceparent: &str) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(harness.base_url())
            .with_api_key(ROUTER_KEY)
            .with_header("traceparent", traceparent)
            .unwrap(),
    )
}

fn chat_request(model: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(PROMPT)
            .build()
            .unwrap()
            .into()])
        .max_completion_tokens(64u32)
        .temperature(0.5)
        .top_p(0.75)
        .build()
        .unwrap()
}

/// The spans of trace `trace_id`, once its SERVER span (the last to end) has arrived.
async fn trace(trace_id: &str) -> Vec<ExportedSpan> {
    let receiver = &telemetry().receiver;
    for _ in 0..500 {
        let spans: Vec<ExportedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|span| span.trace_id == trace_id)
            .collect();
        if spans.iter().any(|span| span.kind == SERVER) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no server span of trace {trace_id} arrived");
}

/// The one SERVER span and the CLIENT spans (by attempt number) of `spans`.
fn split(spans: &[ExportedSpan]) -> (&ExportedSpan, Vec<&ExportedSpan>) {
    let servers: Vec<_> = spans.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(servers.len(), 1, "{spans:#?}");
    let mut clients: Vec<_> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    clients.sort_by_key(|s| match s.attr("ai_router.attempt.number") {
        Attr::Int(n) => *n,
        other => panic!("attempt number {other:?}"),
    });
    assert_eq!(servers.len() + clients.len(), spans.len(), "{spans:#?}");
    (servers[0], clients)
}

fn s(value: &str) -> Attr {
    Attr::Str(value.to_owned())
}

/// No attribute of `spans` holds the prompt, the answer, or a key.
fn assert_nothing_secret(spans: &[ExportedSpan]) {
    for span in spans {
        for (key, value) in &span.attributes {
            for text in value.strings() {
                for secret in [PROMPT, "anchovies", "mock reply", ROUTER_KEY, PROVIDER_KEY] {
                    assert!(
                        !text.contains(secret),
                        "`{key}` of `{}` holds `{secret}`",
                        span.name
                    );
                }
            }
        }
    }
}

async fn a_chat_request_is_a_server_span_with_one_client_attempt_joined_to_the_callers_trace(
    mode: Mode,
) {
    setup();
    let harness = mode.harness().await;
    let (trace_id, caller_span) = fresh_ids();
    let client = client_with_traceparent(&harness, &traceparent(&trace_id, &caller_span));
    let answer = client
        .chat()
        .create(chat_request("mock/gpt-4o-mini"))
        .await
        .unwrap();
    let usage = answer.usage.clone().unwrap();

    let spans = trace(&trace_id).await;
    let (request, attempts) = split(&spans);
    // The request span joined the caller's trace, under the caller's span.
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(request.name, "chat mock/gpt-4o-mini");
    assert_eq!(request.status_code, STATUS_UNSET);
    assert_eq!(request.service_name.as_deref(), Some(SERVICE));
    assert_eq!(request.scope, "ai-router");
    for (key, value) in [
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.provider.name", s("mock")),
        ("gen_ai.request.model", s("mock/gpt-4o-mini")),
        ("gen_ai.response.model", s(&answer.model)),
        ("gen_ai.response.id", s(&answer.id)),
        (
            "gen_ai.response.finish_reasons",
            Attr::Array(vec![s("stop")]),
        ),
        (
            "gen_ai.usage.input_tokens",
            Attr::Int(i64::from(usage.prompt_tokens)),
        ),
        (
            "gen_ai.usage.output_tokens",
            Attr::Int(i64::from(usage.completion_tokens)),
        ),
        ("gen_ai.request.max_tokens", Attr::Int(64)),
        ("gen_ai.request.temperature", Attr::Double(0.5)),
        ("gen_ai.request.top_p", Attr::Double(0.75)),
        ("http.response.status_code", Attr::Int(200)),
        ("http.request.method", s("POST")),
        ("url.path", s(&format!("{MOUNT}/chat/completions"))),
        ("ai_router.key", s("test")),
        ("ai_router.attempts", Attr::Int(1)),
        ("ai_router.outcome", s("completed")),
    ] {
        assert_eq!(request.attr(key), &value, "{key}");
    }
    assert!(!request.has("error.type"));
    assert!(!request.has("enduser.id") && !request.has("gen_ai.conversation.id"));

    // One attempt, a CLIENT child of the request span.
    assert_eq!(attempts.len(), 1, "{spans:#?}");
    let attempt = attempts[0];
    assert_eq!(attempt.parent_span_id, request.span_id);
    assert_eq!(attempt.name, "chat gpt-4o-mini");
    assert_eq!(attempt.status_code, STATUS_UNSET);
    for (key, value) in [
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.provider.name", s("mock")),
        ("gen_ai.request.model", s("gpt-4o-mini")),
        ("http.response.status_code", Attr::Int(200)),
        ("ai_router.attempt.outcome", s("answered")),
        ("server.address", s("127.0.0.1")),
        (
            "server.port",
            Attr::Int(i64::from(harness.upstream.addr().port())),
        ),
    ] {
        assert_eq!(attempt.attr(key), &value, "{key}");
    }
    assert!(attempt.start >= request.start && attempt.end <= request.end);

    // The upstream got the attempt's own context.
    let seen = harness.upstream.last_request().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(traceparent(&trace_id, &attempt.span_id).as_str())
    );
    assert_nothing_secret(&spans);
}

async fn a_fallback_shows_two_attempts_each_propagated_to_its_upstream(mode: Mode) {
    setup();
    let harness = Harness::with_upstream(|builder, upstream| {
        mode.configure(
            builder
                .provider("backup", mock_provider(upstream))
                .alias("smart", ["mock/gpt-a", "backup/gpt-b"]),
        )
    })
    .await;
    harness.upstream.script_for(
        "gpt-a",
        ScriptedResponse::openai_error(503, "down", "server_error", Some("a_down")),
    );
    let (trace_id, caller_span) = fresh_ids();
    let client = client_with_traceparent(&harness, &traceparent(&trace_id, &caller_span));
    let answer = client.chat().create(chat_request("smart")).await.unwrap();
    assert_eq!(answer.model, "gpt-b");

    let spans = trace(&trace_id).await;
    let (request, attempts) = split(&spans);
    assert_eq!(request.name, "chat backup/gpt-b");
    assert_eq!(request.attr("gen_ai.provider.name"), &s("backup"));
    assert_eq!(request.attr("ai_router.attempts"), &Attr::Int(2));
    assert_eq!(request.attr("http.response.status_code"), &Attr::Int(200));
    assert_eq!(request.status_code, STATUS_UNSET);

    assert_eq!(attempts.len(), 2, "{spans:#?}");
    let (first, second) = (attempts[0], attempts[1]);
    for attempt in [first, second] {
        assert_eq!(attempt.parent_span_id, request.span_id);
    }
    assert_eq!(first.name, "chat gpt-a");
    assert_eq!(first.attr("gen_ai.provider.name"), &s("mock"));
    assert_eq!(first.attr("http.response.status_code"), &Attr::Int(503));
    assert_eq!(first.attr("error.type"), &s("503"));
    assert_eq!(first.attr("ai_router.attempt.outcome"), &s("failed"));
    assert_eq!(first.status_code, STATUS_ERROR);
    assert_eq!(second.name, "chat gpt-b");
    assert_eq!(second.attr("gen_ai.provider.name"), &s("backup"));
    assert_eq!(second.attr("http.response.status_code"), &Attr::Int(200));
    assert_eq!(second.attr("ai_router.attempt.outcome"), &s("answered"));
    assert!(!second.has("error.type"));
    assert!(first.end <= second.start);

    // Each upstream request carried its own attempt's context.
    let seen = harness.upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header("traceparent"),
        Some(traceparent(&trace_id, &first.span_id).as_str())
    );
    assert_eq!(
        seen[1].header("traceparent"),
        Some(traceparent(&trace_id, &second.span_id).as_str())
    );
    assert_nothing_secret(&spans);
}

async fn a_stream_span_ends_with_its_body_and_carries_the_streams_usage(mode: Mode) {
    setup();
    let harness = mode.harness().await;
    let (trace_id, caller_span) = fresh_ids();
    let client = client_with_traceparent(&harness, &traceparent(&trace_id, &caller_span));
    let mut request = chat_request("mock/gpt-4o-mini");
    request.stream = Some(true);
    request.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    });
    let stream = client.chat().create_stream(request).await.unwrap();
    let chunks: Vec<_> = collect_stream(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let usage = chunks.last().unwrap().usage.clone().unwrap();

    let spans = trace(&trace_id).await;
    let (request, attempts) = split(&spans);
    assert_eq!(request.name, "chat mock/gpt-4o-mini");
    // Known only once the stream's last events passed: recorded when the body ended.
    assert_eq!(
        request.attr("gen_ai.usage.output_tokens"),
        &Attr::Int(i64::from(usage.completion_tokens))
    );
    assert_eq!(
        request.attr("gen_ai.response.finish_reasons"),
        &Attr::Array(vec![s("stop")])
    );
    assert_eq!(request.attr("gen_ai.response.id"), &s(&chunks[0].id));
    assert_eq!(request.attr("ai_router.outcome"), &s("completed"));
    // The attempt ended at the stream's first event; the request with its last.
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].end <= request.end);
    assert_nothing_secret(&spans);
}

async fn without_a_traceparent_the_request_starts_a_trace_the_upstream_joins(mode: Mode) {
    setup();
    let harness = mode.harness().await;
    let body = format!(
        r#"{{"model":"mock/gpt-4o-mini","messages":[{{"role":"user","content":"{PROMPT}"}}],"identity":{{"id":"user-7"}},"thread":{{"id":"conv-9"}}}}"#
    );
    let response = harness.post_json("/chat/completions", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let request_id = response.header("x-request-id").unwrap().to_owned();

    // Found by the request id the client got.
    let receiver = &telemetry().receiver;
    let mut found = None;
    for _ in 0..500 {
        found = receiver
            .spans()
            .into_iter()
            .find(|span| span.attributes.get("id") == Some(&s(&request_id)));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = found.expect("the request span arrived");
    assert_eq!(request.kind, SERVER);
    assert_eq!(request.parent_span_id, "");
    assert_eq!(request.attr("enduser.id"), &s("user-7"));
    assert_eq!(request.attr("gen_ai.conversation.id"), &s("conv-9"));
    let spans = trace(&request.trace_id).await;
    let (_, attempts) = split(&spans);
    assert_eq!(attempts.len(), 1);
    let seen = harness.upstream.last_request().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(traceparent(&request.trace_id, &attempts[0].span_id).as_str())
    );
    assert_nothing_secret(&spans);
}

async fn a_failed_request_has_its_error_type_on_both_spans(mode: Mode) {
    setup();
    let harness = mode.harness().await;
    harness.upstream.script(ScriptedResponse::openai_error(
        500,
        "boom",
        "server_error",
        Some("internal"),
    ));
    let (trace_id, caller_span) = fresh_ids();
    let request = Request::post(harness.url("/chat/completions"))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .header("traceparent", traceparent(&trace_id, &caller_span))
        .body(Full::new(Bytes::from(
            r#"{"model":"mock/gpt-4o-mini","messages":[]}"#,
        )))
        .unwrap();
    let response = send(request).await;
    assert_eq!(response.status, 500, "{}", response.text());

    let spans = trace(&trace_id).await;
    let (request, attempts) = split(&spans);
    assert_eq!(request.attr("error.type"), &s("500"));
    assert_eq!(request.attr("http.response.status_code"), &Attr::Int(500));
    assert_eq!(request.status_code, STATUS_ERROR);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attr("error.type"), &s("500"));
    assert_eq!(attempts[0].status_code, STATUS_ERROR);
}

/// Each span test, once per way of exporting.
macro_rules! each_mode {
    ($($name:ident),* $(,)?) => {
        mod tracing_layer {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Mode::TracingLayer).await;
            })*
        }
        mod direct {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Mode::Direct).await;
            })*
        }
    };
}

each_mode!(
    a_chat_request_is_a_server_span_with_one_client_attempt_joined_to_the_callers_trace,
    a_fallback_shows_two_attempts_each_propagated_to_its_upstream,
    a_stream_span_ends_with_its_body_and_carries_the_streams_usage,
    without_a_traceparent_the_request_starts_a_trace_the_upstream_joins,
    a_failed_request_has_its_error_type_on_both_spans,
);

/// An unsampled request (the caller's `traceparent` says `00`, or a policy sampling no new
/// trace) is not exported by the direct exporter; a sampled one beside it is.
#[tokio::test]
async fn unsampled_requests_are_not_exported_directly() {
    use ai_router::extensions::TracePolicy;
    setup();
    let unsampled = Harness::with(|builder| {
        Mode::Direct
            .configure(builder)
            .trace_policy(TracePolicy::new().sample_ratio(0.0))
    })
    .await;
    // The caller's choice (not sampled) stands.
    let (caller_trace, caller_span) = fresh_ids();
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(unsampled.base_url())
            .with_api_key(ROUTER_KEY)
            .with_header("traceparent", format!("00-{caller_trace}-{caller_span}-00"))
            .unwrap(),
    );
    client
        .chat()
        .create(chat_request("mock/gpt-4o-mini"))
        .await
        .unwrap();
    // A new trace, not sampled by the policy.
    let response = unsampled
        .post_json(
            "/chat/completions",
            r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(response.status, 200);
    let new_trace = unsampled.upstream.last_request().unwrap();
    let new_trace = new_trace.header("traceparent").unwrap().to_owned();
    assert!(new_trace.ends_with("-00"), "{new_trace}");
    let new_trace_id = new_trace[3..35].to_owned();

    // A sampled request through a router exporting to the same receiver, after them.
    let sampled = Mode::Direct.harness().await;
    let (trace_id, caller_span) = fresh_ids();
    client_with_traceparent(&sampled, &traceparent(&trace_id, &caller_span))
        .chat()
        .create(chat_request("mock/gpt-4o-mini"))
        .await
        .unwrap();
    trace(&trace_id).await;
    // Exported in the same batches as the sampled one, if at all: give them one more delay.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans = telemetry().receiver.spans();
    assert!(
        !spans
            .iter()
            .any(|s| s.trace_id == caller_trace || s.trace_id == new_trace_id)
    );
}

/// Twenty chats through `harness`, each answered.
async fn twenty_chats(harness: &Harness) {
    for _ in 0..20 {
        let answer = harness
            .client()
            .chat()
            .create(chat_request("mock/gpt-4o-mini"))
            .await
            .unwrap();
        assert_eq!(answer.model, "gpt-4o-mini");
    }
}

/// Two dead collectors, each with the export timeout to use: a port that refuses
/// connections, and one that accepts them and never reads or answers (held by the task).
async fn dead_collectors() -> ([(String, Duration); 2], tokio::task::JoinHandle<()>) {
    let closed = format!("http://127.0.0.1:{}", support::closed_port().await);
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}", hanging.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            open.push(stream);
        }
    });
    (
        [
            (closed, Duration::from_secs(5)),
            (hanging_url, Duration::from_secs(60)),
        ],
        held,
    )
}

/// A collector that refuses connections, or accepts them and never answers, costs requests
/// nothing: each gets its answer while the spans wait (and fail) on the exporter's thread.
#[tokio::test]
async fn a_dead_or_hanging_collector_never_fails_a_request() {
    let (collectors, held) = dead_collectors().await;
    for (endpoint, export_timeout) in collectors {
        let dead = OtlpTracing::builder(endpoint)
            .export_timeout(export_timeout)
            // Spans wait in the queue until the shutdown below sends them.
            .scheduled_delay(Duration::from_secs(3600))
            .build()
            .unwrap();
        // This test's runtime has one thread: the router's tasks report to this subscriber.
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(
                dead.layer()
                    .with_filter(Targets::new().with_target("ai_router", tracing::Level::INFO)),
            ),
        );
        tracing::callsite::rebuild_interest_cache();
        let harness = Harness::start().await;
        twenty_chats(&harness).await;
        drop(harness);
        drop(guard);
        // The queued spans were tried and could not be delivered (an empty queue would have
        // "succeeded"); the shutdown gives up after its wait.
        let delivered =
            tokio::task::spawn_blocking(move || dead.shutdown(Duration::from_millis(500)))
                .await
                .unwrap();
        assert!(!delivered);
    }
    held.abort();
}

#[test]
fn the_traces_path_is_appended_to_a_base_endpoint_once() {
    for (given, used) in [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("https://otel.example/", "https://otel.example/v1/traces"),
        ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
    ] {
        let tracing = OtlpTracing::builder(given).build().unwrap();
        assert_eq!(tracing.endpoint(), used);
        assert!(tracing.shutdown(Duration::from_secs(5)), "{given}");
    }
    for wrong in ["127.0.0.1:4318", "ftp://c/", ""] {
        let error = OtlpTracing::builder(wrong).build().unwrap_err();
        assert!(error.to_string().contains("OTLP endpoint"), "{error}");
    }
}

/// The same for the direct exporter: requests are answered while its spans wait (and fail)
/// on its own thread, and its shutdown gives up after its wait.
#[tokio::test]
async fn a_dead_or_hanging_collector_never_fails_a_request_exported_directly() {
    let (collectors, held) = dead_collectors().await;
    for (endpoint, export_timeout) in collectors {
        let dead = OtlpExporter::builder(endpoint)
            .export_timeout(export_timeout)
            .scheduled_delay(Duration::from_secs(3600))
            .build()
            .unwrap();
        let observer = dead.clone();
        let harness = Harness::with(move |builder| {
            builder
                .genai_spans(false)
                .trace_context(true)
                .observer(observer)
        })
        .await;
        twenty_chats(&harness).await;
        drop(harness);
        let delivered =
            tokio::task::spawn_blocking(move || dead.shutdown(Duration::from_millis(500)))
                .await
                .unwrap();
        assert!(!delivered);
    }
    held.abort();
}

#[test]
fn the_direct_exporter_appends_the_traces_path_once_and_refuses_a_bad_endpoint() {
    for (given, used) in [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://c:4318/v1/traces/", "http://c:4318/v1/traces"),
    ] {
        let exporter = OtlpExporter::builder(given).build().unwrap();
        assert_eq!(exporter.endpoint(), used);
        assert!(exporter.shutdown(Duration::from_secs(5)), "{given}");
    }
    for wrong in [
        "127.0.0.1:4318",
        "ftp://c/",
        "",
        "http://user:secret-pw@c:4318",
        "http://c:4318/?token=secret-pw",
    ] {
        let error = OtlpExporter::builder(wrong).build().unwrap_err();
        assert!(error.to_string().contains("OTLP endpoint"), "{error}");
        assert!(!error.to_string().contains("secret-pw"), "{error}");
    }
}

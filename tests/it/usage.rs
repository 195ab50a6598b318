//! Usage records over TCP: one [`RequestSummary`] per request, with what the answer said
//! (usage, id, model, finish reasons, read as the body passed), what the request asked
//! (parameters, the `identity` / `thread` knobs) and where it went (target, attempts).
//!
//! Each record is compared with what the client itself received, so the router's reading of
//! the answer is checked against the answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_router::AiRouterBuilder;
use ai_router::auth::MemoryKeyStore;
use ai_router::extensions::Endpoint;
use ai_router::mock::ScriptedResponse;
use ai_router::observe::{AttemptOutcome, FinishReason, Outcome, RequestParams, RequestSummary};
use ai_router::sse::StreamSettings;
use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionStreamResponse};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use async_openai::types::responses::CreateResponseArgs;
use serde_json::{Value, json};

use crate::support::{EXCHANGE_TIMEOUT, Harness, collect_stream, mock_provider};

/// The summaries the router's observer got, in order.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<RequestSummary>>>);

impl Records {
    fn observer(&self) -> impl Fn(&RequestSummary) + Send + Sync + 'static {
        let records = self.0.clone();
        move |summary: &RequestSummary| records.lock().unwrap().push(summary.clone())
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Waits until there are `n` records (the observer runs when the server has sent the
    /// body's end, which may be just after the client read it).
    async fn wait(&self, n: usize) -> Vec<RequestSummary> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            while self.len() < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} records, got {}", self.len()));
        self.0.lock().unwrap().clone()
    }

    /// The one record of the request just made: a `GET /models` after it gets the next one,
    /// so a second record of the first would show.
    async fn only(&self, harness: &Harness) -> RequestSummary {
        let before = self.wait(1).await;
        assert_eq!(before.len(), 1, "one record per request");
        assert_eq!(harness.get("/models").await.status, 200);
        let records = self.wait(2).await;
        assert_eq!(records.len(), 2, "one record per request");
        assert_eq!(records[1].endpoint, Some(Endpoint::ListModels));
        records[0].clone()
    }
}

/// The default harness observed by `records`, changed by `configure`; provider `backup` (the
/// same mock) and the alias `smart` (`mock/gpt-a`, then `backup/gpt-b`) are there too.
async fn harness_with(
    records: &Records,
    configure: impl FnOnce(AiRouterBuilder<MemoryKeyStore>) -> AiRouterBuilder<MemoryKeyStore>,
) -> Harness {
    let observer = records.observer();
    Harness::with_upstream(|builder, upstream| {
        configure(
            builder
                .provider("backup", mock_provider(upstream))
                .alias("smart", ["mock/gpt-a", "backup/gpt-b"])
                .observer(observer),
        )
    })
    .await
}

async fn harness(records: &Records) -> Harness {
    harness_with(records, |builder| builder).await
}

fn chat_request(value: Value) -> CreateChatCompletionRequest {
    serde_json::from_value(value).unwrap()
}

/// The finish reasons of a record, by name.
fn reasons(summary: &RequestSummary) -> Vec<&'static str> {
    summary
        .finish_reasons
        .iter()
        .map(FinishReason::as_str)
        .collect()
}

#[tokio::test]
async fn a_plain_chat_records_its_answer_and_parameters() {
    let records = Records::default();
    let harness = harness(&records).await;
    let request = chat_request(json!({
        "model": "mock/gpt-4o-mini",
        "messages": [{"role": "user", "content": "count my tokens please"}],
        "max_completion_tokens": 50,
        "temperature": 0.25,
        "top_p": 0.5,
    }));
    let response = harness.client().chat().create(request).await.unwrap();
    let summary = records.only(&harness).await;

    let usage = summary.usage.expect("usage recorded");
    let sent = response.usage.expect("the mock reports usage");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        (
            u64::from(sent.prompt_tokens),
            u64::from(sent.completion_tokens),
            u64::from(sent.total_tokens)
        )
    );
    assert!(usage.output_tokens > 0);
    assert_eq!(usage.cached_tokens, 0);
    assert_eq!(summary.response_id.as_deref(), Some(response.id.as_str()));
    assert_eq!(summary.response_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(reasons(&summary), ["stop"]);
    assert_eq!(
        summary.request,
        RequestParams {
            max_tokens: Some(50),
            temperature: Some(0.25),
            top_p: Some(0.5),
            stream: false,
        }
    );
    assert_eq!(summary.status.map(|s| s.as_u16()), Some(200));
    assert_eq!(summary.endpoint, Some(Endpoint::ChatCompletions));
    assert_eq!(summary.key.as_deref(), Some("test"));
    assert_eq!(summary.provider.as_deref(), Some("mock"));
    assert_eq!(summary.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(summary.attempts, 1);
    assert_eq!(summary.outcome, Outcome::Completed);
    assert_eq!(
        summary.first_byte, None,
        "time to first token is for streams"
    );
    assert_eq!(
        (summary.identity.as_deref(), summary.thread.as_deref()),
        (None, None)
    );
}

#[tokio::test]
async fn a_scripted_answer_gives_cached_tokens_and_every_choice_s_finish_reason() {
    let records = Records::default();
    let harness = harness(&records).await;
    // Long content: usage and the finish reasons lie far from the head. In OpenAI's member
    // order (`json!` would sort the keys).
    let long = "x".repeat(40 * 1024);
    let body = format!(
        concat!(
            r#"{{"id":"chatcmpl-scripted","object":"chat.completion","created":1,"#,
            r#""model":"gpt-4o-mini-2024-07-18","choices":["#,
            r#"{{"index":0,"message":{{"role":"assistant","content":"{long}"}},"finish_reason":"length"}},"#,
            r#"{{"index":1,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":30,"completion_tokens":9000,"total_tokens":9030,"#,
            r#""prompt_tokens_details":{{"cached_tokens":24}}}},"system_fingerprint":"fp_1"}}"#
        ),
        long = long
    );
    harness.upstream.script(
        ScriptedResponse::new(200)
            .header("content-type", "application/json")
            .body(body),
    );
    let response = harness
        .post_json(
            "/chat/completions",
            r#"{"model":"mock/gpt-4o-mini","n":2,"max_tokens":9000,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_eq!(response.status, 200);
    let summary = records.only(&harness).await;
    let usage = summary.usage.unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.cached_tokens),
        (30, 9000, 24)
    );
    assert_eq!(summary.response_id.as_deref(), Some("chatcmpl-scripted"));
    assert_eq!(
        summary.response_model.as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(reasons(&summary), ["length", "stop"]);
    assert_eq!(summary.request.max_tokens, Some(9000));
}

/// Streams a chat; the chunks the client got.
async fn stream_chat(harness: &Harness, body: Value) -> Vec<CreateChatCompletionStreamResponse> {
    let stream = harness
        .client()
        .chat()
        .create_stream(chat_request(body))
        .await
        .unwrap();
    collect_stream(stream)
        .await
        .into_iter()
        .map(|chunk| chunk.expect("every chunk parses"))
        .collect()
}

#[tokio::test]
async fn a_streamed_chat_without_usage_records_its_id_model_and_finish_reason() {
    let records = Records::default();
    let harness = harness(&records).await;
    let chunks = stream_chat(
        &harness,
        json!({"model": "fast", "stream": true, "temperature": 1,
               "messages": [{"role": "user", "content": "stream to me"}]}),
    )
    .await;
    let summary = records.only(&harness).await;
    assert_eq!(summary.usage, None, "nobody asked for usage");
    assert_eq!(summary.response_id.as_deref(), Some(chunks[0].id.as_str()));
    assert_eq!(summary.response_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(reasons(&summary), ["stop"]);
    assert_eq!(
        summary.request,
        RequestParams {
            temperature: Some(1.0),
            stream: true,
            ..RequestParams::default()
        }
    );
    assert!(summary.first_byte.is_some());
    assert_eq!(summary.outcome, Outcome::Completed);
    assert_eq!(summary.attempts, 1);
}

#[tokio::test]
async fn a_streamed_chat_asking_for_usage_records_the_usage_the_client_got() {
    let records = Records::default();
    let harness = harness(&records).await;
    let chunks = stream_chat(
        &harness,
        json!({"model": "mock/gpt-4o-mini", "stream": true,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "count these words for me"}]}),
    )
    .await;
    let sent = chunks
        .iter()
        .find_map(|chunk| chunk.usage.clone())
        .expect("the client got a usage chunk");
    let summary = records.only(&harness).await;
    let usage = summary.usage.unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        (
            u64::from(sent.prompt_tokens),
            u64::from(sent.completion_tokens),
            u64::from(sent.total_tokens)
        )
    );
    assert!(usage.output_tokens > 0);
    assert_eq!(reasons(&summary), ["stop"]);
    assert_eq!(summary.response_id.as_deref(), Some(chunks[0].id.as_str()));
}

#[tokio::test]
async fn injected_usage_is_recorded_though_the_client_never_sees_it() {
    let records = Records::default();
    let harness = harness_with(&records, |builder| {
        builder.stream_settings("mock", StreamSettings::new().inject_usage(true))
    })
    .await;
    let chunks = stream_chat(
        &harness,
        json!({"model": "mock/gpt-4o-mini", "stream": true,
               "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert!(chunks.iter().all(|chunk| chunk.usage.is_none()));
    let summary = records.only(&harness).await;
    let usage = summary.usage.expect("the usage the router asked for");
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0);
    assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);
    assert_eq!(reasons(&summary), ["stop"]);
}

#[tokio::test]
async fn an_embeddings_call_records_its_usage_and_model() {
    let records = Records::default();
    let harness = harness(&records).await;
    let request = CreateEmbeddingRequestArgs::default()
        .model("mock/text-embedding-3-small")
        .input(["first text", "second, longer text"])
        .dimensions(512u32)
        .build()
        .unwrap();
    let response = harness.client().embeddings().create(request).await.unwrap();
    let summary = records.only(&harness).await;
    let usage = summary.usage.unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        (
            u64::from(response.usage.prompt_tokens),
            0,
            u64::from(response.usage.total_tokens)
        )
    );
    assert!(usage.input_tokens > 0);
    assert_eq!(
        summary.response_model.as_deref(),
        Some(response.model.as_str())
    );
    assert_eq!(summary.response_id, None, "embeddings have no id");
    assert!(summary.finish_reasons.is_empty());
    assert_eq!(summary.endpoint, Some(Endpoint::Embeddings));
}

#[tokio::test]
async fn a_responses_call_records_input_and_output_tokens() {
    let records = Records::default();
    let harness = harness(&records).await;
    let request = CreateResponseArgs::default()
        .model("mock/gpt-4o-mini")
        .input("hello responses")
        .max_output_tokens(64u32)
        .build()
        .unwrap();
    let response = harness.client().responses().create(request).await.unwrap();
    let summary = records.only(&harness).await;
    let usage = summary.usage.unwrap();
    let sent = response.usage.expect("the mock reports usage");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (u64::from(sent.input_tokens), u64::from(sent.output_tokens))
    );
    assert_eq!(summary.response_id.as_deref(), Some(response.id.as_str()));
    assert_eq!(summary.request.max_tokens, Some(64));
    assert_eq!(summary.endpoint, Some(Endpoint::Responses));
}

#[tokio::test]
async fn a_failed_request_records_its_status_and_no_usage() {
    let records = Records::default();
    let harness = harness(&records).await;
    harness.upstream.script(ScriptedResponse::openai_error(
        500,
        "scripted failure",
        "server_error",
        None,
    ));
    let response = harness
        .post_json(
            "/chat/completions",
            r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_eq!(response.status, 500);
    let summary = records.only(&harness).await;
    assert_eq!(summary.status.map(|s| s.as_u16()), Some(500));
    assert_eq!(summary.usage, None);
    assert_eq!(summary.response_id, None);
    assert!(summary.finish_reasons.is_empty());
    assert_eq!(summary.provider.as_deref(), Some("mock"));
    assert_eq!(summary.attempts, 1);
}

#[tokio::test]
async fn a_fallback_records_two_attempts_and_the_target_that_answered() {
    let records = Records::default();
    let harness = harness(&records).await;
    harness.upstream.script_for(
        "gpt-a",
        ScriptedResponse::openai_error(503, "down", "server_error", Some("overloaded")),
    );
    let response = harness
        .post_json(
            "/chat/completions",
            r#"{"model":"smart","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(response.status, 200);
    let answer = response.json();
    let summary = records.only(&harness).await;
    assert_eq!(summary.attempts, 2);
    assert_eq!(summary.provider.as_deref(), Some("backup"));
    assert_eq!(summary.model.as_deref(), Some("gpt-b"));
    assert_eq!(summary.response_model.as_deref(), Some("gpt-b"));
    assert_eq!(summary.response_id.as_deref(), answer["id"].as_str());
    assert_eq!(
        summary.usage.map(|u| u.output_tokens),
        answer["usage"]["completion_tokens"].as_u64()
    );
    assert_eq!(summary.status.map(|s| s.as_u16()), Some(200));
}

#[tokio::test]
async fn identity_and_thread_knobs_are_recorded_and_not_forwarded() {
    let records = Records::default();
    let harness = harness(&records).await;
    let response = harness
        .post_json(
            "/chat/completions",
            r#"{"model":"mock/gpt-4o-mini","identity":{"id":"user-7","email":"u@example.com"},"thread":{"id":"conv-1"},"max_tokens":12,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_eq!(response.status, 200);
    let seen = harness.only_upstream_request().json().unwrap();
    assert!(seen.get("identity").is_none() && seen.get("thread").is_none());
    let summary = records.only(&harness).await;
    assert_eq!(summary.identity.as_deref(), Some("user-7"));
    assert_eq!(summary.thread.as_deref(), Some("conv-1"));
    assert_eq!(summary.request.max_tokens, Some(12));

    // A refused request still says who asked.
    let response = harness
        .post_json(
            "/chat/completions",
            r#"{"model":"nobody/no-such-model","identity":{"id":"user-8"},"messages":[]}"#,
        )
        .await;
    assert_eq!(response.status, 404);
    let records = records.wait(3).await;
    assert_eq!(records[2].identity.as_deref(), Some("user-8"));
    assert_eq!(records[2].attempts, 0);
}

/// The records and the metrics, both observing.
struct Both(Records, ai_router::observe::Metrics);

impl ai_router::observe::Observer for Both {
    fn on_start(&self) {
        self.1.on_start();
    }

    fn on_end(&self, summary: &RequestSummary) {
        self.1.on_end(summary);
        self.0.observer()(summary);
    }
}

#[tokio::test]
async fn a_request_whose_client_leaves_before_the_answer_is_recorded_once_as_client_gone() {
    let records = Records::default();
    let metrics = ai_router::observe::Metrics::builder().build();
    let both = Both(records.clone(), metrics.clone());
    let harness = Harness::with_upstream(move |builder, _| builder.observer(both)).await;
    // The upstream takes its time to answer; the client gives up before.
    harness.upstream.script(
        ScriptedResponse::openai_error(500, "late", "server_error", None)
            .delay(Duration::from_secs(3)),
    );
    let request = chat_request(
        json!({"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    );
    let client = harness.client();
    let pending =
        tokio::time::timeout(Duration::from_millis(300), client.chat().create(request)).await;
    assert!(pending.is_err(), "the answer should still be pending");
    let records = records.wait(1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::ClientGone);
    assert_eq!(records[0].status, None);
    assert_eq!(records[0].provider.as_deref(), Some("mock"));
    assert_eq!(metrics.in_flight(), 0);
}

/// A chat for `model` with the router key and `headers`, sent over TCP.
async fn chat_with_headers(harness: &Harness, model: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = http::Request::post(harness.url("/chat/completions"))
        .header(
            "authorization",
            format!("Bearer {}", crate::support::ROUTER_KEY),
        )
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    crate::support::send(request).await.status.as_u16()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// A chat with the caller's `traceparent` (`CALLER_TRACE`, `CALLER_SPAN`) and `tracestate`
/// `vendor=x1`; its record.
async fn chat_from_caller(harness: &Harness, records: &Records) -> RequestSummary {
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let status = chat_with_headers(
        harness,
        "mock/gpt-4o-mini",
        &[("traceparent", &traceparent), ("tracestate", "vendor=x1")],
    )
    .await;
    assert_eq!(status, 200);
    records.only(harness).await
}

#[tokio::test]
async fn a_traced_request_joins_the_callers_trace_and_records_its_attempt() {
    let records = Records::default();
    let harness = harness_with(&records, |builder| builder.trace_context(true)).await;
    let summary = chat_from_caller(&harness, &records).await;
    let trace = summary.trace.clone().expect("a trace context");
    assert_eq!(hex(&trace.trace_id()), CALLER_TRACE);
    assert_eq!(
        trace.parent_span_id().map(|id| hex(&id)).as_deref(),
        Some(CALLER_SPAN)
    );
    assert!(trace.is_sampled());

    assert_eq!(summary.attempt_records.len(), 1);
    let attempt = &summary.attempt_records[0];
    assert_eq!(attempt.number, 1);
    assert_eq!(&*attempt.provider, "mock");
    assert_eq!(&*attempt.model, "gpt-4o-mini");
    assert_eq!(attempt.endpoint, Endpoint::ChatCompletions);
    assert_eq!(attempt.outcome, AttemptOutcome::Answered);
    assert_eq!(attempt.status.map(|s| s.as_u16()), Some(200));
    assert_eq!(attempt.error_type(), None);
    let server = attempt.server.clone().expect("the upstream's address");
    assert_eq!(&*server.host, "127.0.0.1");
    assert_eq!(server.port, harness.upstream.addr().port());
    assert!(attempt.start + attempt.duration <= summary.duration);

    // The upstream got the attempt's own span, in the caller's trace, and the caller's state.
    let span_id = attempt.span_id.expect("a span id");
    assert_ne!(span_id, trace.span_id());
    let seen = harness.upstream.last_request().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{CALLER_TRACE}-{}-01", hex(&span_id)).as_str())
    );
    assert_eq!(seen.header("tracestate"), Some("vendor=x1"));
}

#[tokio::test]
async fn a_fallback_records_each_attempt_with_its_own_span_and_outcome() {
    let records = Records::default();
    let harness = harness_with(&records, |builder| builder.trace_context(true)).await;
    // No traceparent, and one not sampled.
    for (headers, flags) in [
        (vec![], "01"),
        (
            vec![(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203332-00",
            )],
            "00",
        ),
    ] {
        harness.upstream.script_for(
            "gpt-a",
            ScriptedResponse::openai_error(503, "down", "server_error", Some("overloaded")),
        );
        let before = harness.upstream.requests().len();
        assert_eq!(chat_with_headers(&harness, "smart", &headers).await, 200);
        let summary = records.wait(1).await.remove(0);
        records.0.lock().unwrap().clear();
        let trace = summary.trace.clone().unwrap();
        assert_eq!(trace.is_sampled(), flags == "01");
        assert_eq!(trace.parent_span_id().is_some(), !headers.is_empty());
        let [first, second] = &summary.attempt_records[..] else {
            panic!("two attempts: {:?}", summary.attempt_records);
        };
        assert_eq!((&*first.provider, &*first.model), ("mock", "gpt-a"));
        assert_eq!(first.outcome, AttemptOutcome::Failed);
        assert_eq!(first.status.map(|s| s.as_u16()), Some(503));
        assert_eq!(first.error_type(), Some("503"));
        assert_eq!((&*second.provider, &*second.model), ("backup", "gpt-b"));
        assert_eq!(second.outcome, AttemptOutcome::Answered);
        assert_eq!(second.number, 2);
        assert!(first.start + first.duration <= second.start);
        assert_ne!(first.span_id, second.span_id);
        let seen = harness.upstream.requests();
        assert_eq!(seen.len(), before + 2);
        for (request, attempt) in seen[before..].iter().zip([first, second]) {
            let expected = format!(
                "00-{}-{}-{flags}",
                hex(&trace.trace_id()),
                hex(&attempt.span_id.unwrap())
            );
            assert_eq!(request.header("traceparent"), Some(expected.as_str()));
            assert_eq!(request.header("tracestate"), None);
        }
    }
}

#[tokio::test]
async fn an_untraced_router_records_attempts_without_spans_and_passes_traceparent_on() {
    let records = Records::default();
    let harness = harness(&records).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let status = chat_with_headers(
        &harness,
        "mock/gpt-4o-mini",
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200);
    let summary = records.only(&harness).await;
    assert!(summary.trace.is_none());
    assert_eq!(summary.attempt_records.len(), 1);
    assert_eq!(summary.attempt_records[0].span_id, None);
    assert_eq!(summary.attempt_records[0].outcome, AttemptOutcome::Answered);
    // Nobody opened a span of the router's: the caller's context goes on as it came.
    let seen = harness.upstream.last_request().unwrap();
    assert_eq!(seen.header("traceparent"), Some(traceparent.as_str()));
}

#[tokio::test]
async fn a_policy_can_refuse_the_callers_trace_and_leave_new_traces_unsampled() {
    use ai_router::extensions::TracePolicy;
    let records = Records::default();
    let harness = harness_with(&records, |builder| {
        builder.trace_policy(TracePolicy::new().join_incoming(false).sample_ratio(0.0))
    })
    .await;
    let summary = chat_from_caller(&harness, &records).await;
    let trace = summary.trace.clone().unwrap();
    // A trace of its own, not recorded: the upstream is told so, and hears nothing of the
    // caller's.
    assert_eq!(trace.parent_span_id(), None);
    assert_ne!(hex(&trace.trace_id()), CALLER_TRACE);
    assert!(!trace.is_sampled());
    let span_id = summary.attempt_records[0].span_id.unwrap();
    let seen = harness.upstream.last_request().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{}-{}-00", hex(&trace.trace_id()), hex(&span_id)).as_str())
    );
    assert_eq!(seen.header("tracestate"), None);
}

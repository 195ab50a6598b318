//! Translated providers over real TCP: an OpenAI client (async-openai, or raw JSON) -> the
//! router -> `AnthropicProvider` / `GeminiProvider` -> the mock upstream speaking Anthropic's
//! Messages API and Gemini's `v1beta` API. Each test checks what the client got and what the
//! mock received (the translated JSON, the path, the provider's credential headers).
//!
//! Providers: `anthropic` and `gemini` (both at the mock's origin, with the right key) beside
//! the OpenAI-compatible `mock`; tests that need other settings add providers of their own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ai_router::AiRouterBuilder;
use ai_router::auth::MemoryKeyStore;
use ai_router::mock::{MockUpstream, RecordedRequest, ScriptedResponse};
use ai_router::provider::{
    AnthropicProvider, AnthropicProviderBuilder, GeminiProvider, GeminiProviderBuilder,
};
use ai_router::sse::{StreamOutcome, StreamReport, StreamSettings};
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, CreateChatCompletionRequest, CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse, FinishReason, Role,
};
use async_openai::types::embeddings::{CreateEmbeddingRequest, CreateEmbeddingResponse};
use http::Method;
use serde_json::{Value, json};

use crate::support::{
    EXCHANGE_TIMEOUT, Harness, PROVIDER_KEY, ROUTER_KEY, RawResponse, assert_openai_error,
    collect_stream, contains,
};

const CLAUDE: &str = "anthropic/claude-haiku-4-5";
const CLAUDE_MODEL: &str = "claude-haiku-4-5";
const GEMINI: &str = "gemini/gemini-2.5-flash";
const GEMINI_MODEL: &str = "gemini-2.5-flash";
const EMBEDDER: &str = "gemini/text-embedding-004";
const EMBED_MODEL: &str = "text-embedding-004";
const OPENAI: &str = "mock/gpt-4o-mini";
const OPENAI_MODEL: &str = "gpt-4o-mini";

// ------------------------------------------------------------------ setup

fn anthropic(upstream: &MockUpstream) -> AnthropicProviderBuilder {
    AnthropicProvider::builder(upstream.origin()).api_key(PROVIDER_KEY)
}

fn gemini(upstream: &MockUpstream) -> GeminiProviderBuilder {
    GeminiProvider::builder(upstream.origin()).api_key(PROVIDER_KEY)
}

/// The default harness plus providers `anthropic` and `gemini`, changed by `configure`.
async fn harness_with(
    configure: impl FnOnce(
        AiRouterBuilder<MemoryKeyStore>,
        &MockUpstream,
    ) -> AiRouterBuilder<MemoryKeyStore>,
) -> Harness {
    Harness::with_upstream(|builder, upstream| {
        let builder = builder
            .provider("anthropic", anthropic(upstream).build().unwrap())
            .provider("gemini", gemini(upstream).build().unwrap());
        configure(builder, upstream)
    })
    .await
}

async fn harness() -> Harness {
    harness_with(|builder, _| builder).await
}

/// The two translated chat models, for tests that run the same client side on both.
const CHAT_MODELS: [(&str, &str); 2] = [(CLAUDE, CLAUDE_MODEL), (GEMINI, GEMINI_MODEL)];

// ------------------------------------------------------------------ client side

fn typed(body: Value) -> CreateChatCompletionRequest {
    serde_json::from_value(body).unwrap()
}

/// `client.chat().create(body)`, bounded in time.
async fn create(harness: &Harness, body: Value) -> CreateChatCompletionResponse {
    tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        harness.client().chat().create(typed(body)),
    )
    .await
    .expect("the chat completion timed out")
    .unwrap()
}

/// `client.chat().create_stream(body)`, drained (bounded in time).
async fn create_stream(
    harness: &Harness,
    body: Value,
) -> Vec<Result<CreateChatCompletionStreamResponse, OpenAIError>> {
    let stream = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        harness.client().chat().create_stream(typed(body)),
    )
    .await
    .expect("the stream head timed out")
    .unwrap();
    collect_stream(stream).await
}

/// The chunks of a stream that must not fail.
async fn stream_ok(harness: &Harness, body: Value) -> Vec<CreateChatCompletionStreamResponse> {
    create_stream(harness, body)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

async fn embed(harness: &Harness, body: Value) -> CreateEmbeddingResponse {
    let request: CreateEmbeddingRequest = serde_json::from_value(body).unwrap();
    tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        harness.client().embeddings().create(request),
    )
    .await
    .expect("the embeddings call timed out")
    .unwrap()
}

async fn post(harness: &Harness, path: &str, body: &Value) -> RawResponse {
    harness.post_json(path, body.to_string()).await
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [user(text)]})
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The first choice's text.
fn content(response: &CreateChatCompletionResponse) -> &str {
    response.choices[0].message.content.as_deref().unwrap_or("")
}

/// `(id, name, arguments as JSON)` of each tool call of the first choice.
fn tool_calls(response: &CreateChatCompletionResponse) -> Vec<(String, String, Value)> {
    response.choices[0]
        .message
        .tool_calls
        .iter()
        .flatten()
        .map(|call| match call {
            ChatCompletionMessageToolCalls::Function(call) => (
                call.id.clone(),
                call.function.name.clone(),
                serde_json::from_str(&call.function.arguments).unwrap_or_else(|e| {
                    panic!("arguments are not JSON ({e}): {}", call.function.arguments)
                }),
            ),
            other => panic!("not a function call: {other:?}"),
        })
        .collect()
}

/// The streamed text of choice 0.
fn streamed_text(chunks: &[CreateChatCompletionStreamResponse]) -> String {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|choice| choice.index == 0)
        .filter_map(|choice| choice.delta.content.as_deref())
        .collect()
}

/// Every finish reason of a stream, in order.
fn finish_reasons(chunks: &[CreateChatCompletionStreamResponse]) -> Vec<FinishReason> {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|choice| choice.finish_reason)
        .collect()
}

/// A stream's chunks share one `chatcmpl-` id and the model; the first one is the role.
fn assert_chunk_envelope(chunks: &[CreateChatCompletionStreamResponse], model: &str) {
    let first = chunks.first().expect("at least one chunk");
    assert!(first.id.starts_with("chatcmpl-"), "{}", first.id);
    assert_eq!(first.choices[0].delta.role, Some(Role::Assistant));
    for chunk in chunks {
        assert_eq!(chunk.id, first.id);
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!(chunk.model, model);
        assert!(u64::from(chunk.created).abs_diff(now()) < 60);
    }
}

/// The `data:` payloads of an SSE body (comments and blank lines left out).
fn data_frames(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .collect()
}

/// `(x-ai-router-model, x-ai-router-attempts)`.
fn answered_by(response: &RawResponse) -> (&str, &str) {
    (
        response.header("x-ai-router-model").unwrap_or("-"),
        response.header("x-ai-router-attempts").unwrap_or("-"),
    )
}

// ------------------------------------------------------------------ upstream side

/// Nothing of the router's own credential reached the provider, nor an `authorization`.
fn assert_no_router_key(seen: &RecordedRequest) {
    assert!(seen.header("authorization").is_none(), "{:?}", seen.headers);
    for (name, value) in &seen.headers {
        assert!(
            !contains(value.as_bytes(), ROUTER_KEY.as_bytes()),
            "router key leaked upstream in `{name}`"
        );
    }
    assert!(!seen.path.contains(ROUTER_KEY));
    assert!(!contains(&seen.body, ROUTER_KEY.as_bytes()));
}

/// A Messages call with the provider's key and version; its JSON body.
fn anthropic_call(seen: &RecordedRequest) -> Value {
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_no_router_key(seen);
    seen.json().expect("a JSON body")
}

/// A Gemini call of `method` on `model` with the provider's key; its JSON body.
fn gemini_call(seen: &RecordedRequest, model: &str, method: &str) -> Value {
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, format!("/v1beta/models/{model}:{method}"));
    assert_eq!(seen.header("x-goog-api-key"), Some(PROVIDER_KEY));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert!(
        !seen.path.contains("key="),
        "the key is a header: {}",
        seen.path
    );
    assert_no_router_key(seen);
    seen.json().expect("a JSON body")
}

/// The mock's prompt count: a token per 4 bytes of the request body.
fn mock_prompt_tokens(seen: &RecordedRequest) -> u32 {
    u32::try_from(seen.body.len() / 4).unwrap().max(1)
}

/// The mock's output count: a token per word.
fn words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap()
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city"]
            }
        }},
        {"type": "function", "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}
        }}
    ])
}

/// The arguments the mocks build from [`weather_tools`]' schemas.
fn weather_args() -> Value {
    json!({"city": "mock-city", "unit": "celsius"})
}

fn time_args() -> Value {
    json!({"zone": "mock-zone"})
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
        "required": ["city", "temp"],
        "additionalProperties": false
    })
}

fn conversation(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        user("Hello"),
        {"role": "assistant", "content": "Hi there"},
        user("How are you?"),
        user("Answer!"),
    ]})
}

// ------------------------------------------------------------------ 1. plain chat

#[tokio::test]
async fn anthropic_plain_chat_places_system_and_merges_turns() {
    let harness = harness().await;
    let response = create(&harness, conversation(CLAUDE)).await;

    let seen = harness.only_upstream_request();
    let sent = anthropic_call(&seen);
    assert_eq!(
        sent,
        json!({
            "model": CLAUDE_MODEL,
            "max_tokens": 4096,
            "system": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Answer in English."}
            ],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi there"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "How are you?"},
                    {"type": "text", "text": "Answer!"}
                ]}
            ],
            "stream": false
        })
    );

    assert_eq!(response.id, "chatcmpl-msg_mock_1");
    assert_eq!(response.object, "chat.completion");
    assert!(u64::from(response.created).abs_diff(now()) < 60);
    assert_eq!(response.model, CLAUDE_MODEL);
    assert_eq!(response.choices.len(), 1);
    assert_eq!(response.choices[0].index, 0);
    assert_eq!(response.choices[0].message.role, Role::Assistant);
    let text = "mock reply to: How are you? Answer!";
    assert_eq!(content(&response), text);
    assert!(response.choices[0].message.tool_calls.is_none());
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    let usage = response.usage.unwrap();
    assert_eq!(usage.prompt_tokens, mock_prompt_tokens(&seen));
    assert_eq!(usage.completion_tokens, words(text));
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, Some(0));
}

#[tokio::test]
async fn gemini_plain_chat_places_system_and_merges_turns() {
    let harness = harness().await;
    let response = create(&harness, conversation(GEMINI)).await;

    let seen = harness.only_upstream_request();
    let sent = gemini_call(&seen, GEMINI_MODEL, "generateContent");
    assert_eq!(
        sent,
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Hello"}]},
                {"role": "model", "parts": [{"text": "Hi there"}]},
                {"role": "user", "parts": [{"text": "How are you?"}, {"text": "Answer!"}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]}
        })
    );

    assert_eq!(response.id, "chatcmpl-mock-response-1");
    assert_eq!(response.object, "chat.completion");
    assert!(u64::from(response.created).abs_diff(now()) < 60);
    assert_eq!(response.model, GEMINI_MODEL);
    assert_eq!(response.choices.len(), 1);
    let text = "mock reply to: How are you? Answer!";
    assert_eq!(content(&response), text);
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    let usage = response.usage.unwrap();
    assert_eq!(usage.prompt_tokens, mock_prompt_tokens(&seen));
    assert_eq!(usage.completion_tokens, words(text));
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, Some(0));
}

#[tokio::test]
async fn anthropic_cache_reads_count_in_prompt_tokens_and_as_cached_tokens() {
    let harness = harness().await;
    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::new(200).json(json!({
            "id": "msg_cached",
            "type": "message",
            "role": "assistant",
            "model": CLAUDE_MODEL,
            "content": [{"type": "text", "text": "From the cache."}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 300,
                "output_tokens": 4
            }
        })),
    );
    let response = create(&harness, chat_body(CLAUDE, "hi")).await;
    assert_eq!(response.id, "chatcmpl-msg_cached");
    assert_eq!(content(&response), "From the cache.");
    let usage = response.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 310);
    assert_eq!(usage.completion_tokens, 4);
    assert_eq!(usage.total_tokens, 314);
    assert_eq!(
        usage.prompt_tokens_details.unwrap().cached_tokens,
        Some(300)
    );
    anthropic_call(&harness.only_upstream_request());
}

#[tokio::test]
async fn gemini_cached_tokens_are_reported() {
    let harness = harness().await;
    // At least 1024 prompt tokens (4 bytes each): the mock serves three quarters from its cache.
    let long = "lorem ipsum ".repeat(400);
    let response = create(&harness, chat_body(GEMINI, &long)).await;
    let seen = harness.only_upstream_request();
    gemini_call(&seen, GEMINI_MODEL, "generateContent");
    let prompt = mock_prompt_tokens(&seen);
    assert!(prompt >= 1024, "{prompt}");
    let usage = response.usage.unwrap();
    assert_eq!(usage.prompt_tokens, prompt);
    assert_eq!(
        usage.prompt_tokens_details.unwrap().cached_tokens,
        Some(prompt * 3 / 4)
    );
}

// ------------------------------------------------------------------ 2. images and files

const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
const PDF_BASE64: &str = "JVBERi0xLjQKJcTl8uXrp/Og0MTGCjEgMCBvYmoKPDwvVHlwZS9DYXRhbG9nPj4KZW5kb2JqCnRyYWlsZXIKPDwvUm9vdCAxIDAgUj4+CiUlRU9GCg==";
const IMAGE_URL: &str = "https://example.com/images/cat.png";

fn media_request(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe these"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG_BASE64}")}},
        {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "high"}},
        {"type": "file", "file": {
            "filename": "report.pdf",
            "file_data": format!("data:application/pdf;base64,{PDF_BASE64}")
        }}
    ]}]})
}

#[tokio::test]
async fn anthropic_gets_images_by_value_and_by_url_and_pdfs_as_documents() {
    let harness = harness().await;
    let response = create(&harness, media_request(CLAUDE)).await;
    assert_eq!(content(&response), "mock reply to: Describe these");

    let seen = harness.only_upstream_request();
    let sent = anthropic_call(&seen);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "Describe these"},
            {"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": PNG_BASE64
            }},
            {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
            {"type": "document", "source": {
                "type": "base64", "media_type": "application/pdf", "data": PDF_BASE64
            }, "title": "report.pdf"}
        ]}])
    );
    // The URL went by reference: the router fetched nothing, the mock got one request.
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn gemini_gets_images_inline_and_by_uri_and_pdfs_inline() {
    let harness = harness().await;
    let response = create(&harness, media_request(GEMINI)).await;
    assert_eq!(content(&response), "mock reply to: Describe these");

    let seen = harness.only_upstream_request();
    let sent = gemini_call(&seen, GEMINI_MODEL, "generateContent");
    assert_eq!(
        sent["contents"],
        json!([{"role": "user", "parts": [
            {"text": "Describe these"},
            {"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}},
            {"fileData": {"mimeType": "image/png", "fileUri": IMAGE_URL}},
            {"inlineData": {"mimeType": "application/pdf", "data": PDF_BASE64}}
        ]}])
    );
    assert_eq!(harness.upstream.request_count(), 1);
}

// ------------------------------------------------------------------ 3. tools

fn tools_request(model: &str, text: &str, choice: Option<Value>) -> Value {
    let mut body = chat_body(model, text);
    body["tools"] = weather_tools();
    if let Some(choice) = choice {
        body["tool_choice"] = choice;
    }
    body
}

fn named(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name}})
}

#[tokio::test]
async fn anthropic_tool_choice_auto_none_required_and_named() {
    let harness = harness().await;
    let cases = [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            named("get_time"),
            json!({"type": "tool", "name": "get_time"}),
        ),
    ];
    for (n, (choice, expected)) in cases.into_iter().enumerate() {
        let label = choice.to_string();
        let response = create(
            &harness,
            tools_request(CLAUDE, "What is the weather?", Some(choice)),
        )
        .await;
        let seen = harness.upstream.last_request().unwrap();
        let sent = anthropic_call(&seen);
        assert_eq!(sent["tool_choice"], expected, "{label}");
        assert_eq!(
            sent["tools"],
            json!([
                {"name": "get_weather", "description": "Weather of a city",
                 "input_schema": weather_tools()[0]["function"]["parameters"]},
                {"name": "get_time",
                 "input_schema": weather_tools()[1]["function"]["parameters"]}
            ]),
            "{label}"
        );
        let calls = tool_calls(&response);
        let id = |i: usize| format!("toolu_mock_{}_{i}", n + 1);
        match label.as_str() {
            "\"auto\"" => {
                // Claude's text before the call is kept beside it.
                assert_eq!(content(&response), "I'll use get_weather.");
                assert_eq!(calls, [(id(0), "get_weather".into(), weather_args())]);
            }
            "\"none\"" => {
                assert_eq!(content(&response), "mock reply to: What is the weather?");
                assert!(calls.is_empty(), "{calls:?}");
            }
            "\"required\"" => {
                assert_eq!(content(&response), "");
                assert_eq!(calls, [(id(0), "get_weather".into(), weather_args())]);
            }
            _ => assert_eq!(calls, [(id(0), "get_time".into(), time_args())]),
        }
        let finish = if calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        assert_eq!(response.choices[0].finish_reason, Some(finish), "{label}");
    }
}

#[tokio::test]
async fn gemini_tool_choice_auto_none_required_and_named() {
    let harness = harness().await;
    let mode = |mode: &str| json!({"functionCallingConfig": {"mode": mode}});
    let cases = [
        (json!("auto"), mode("AUTO")),
        (json!("none"), mode("NONE")),
        (json!("required"), mode("ANY")),
        (
            named("get_time"),
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}),
        ),
    ];
    for (choice, expected) in cases {
        let label = choice.to_string();
        let response = create(
            &harness,
            tools_request(GEMINI, "What is the weather?", Some(choice)),
        )
        .await;
        let seen = harness.upstream.last_request().unwrap();
        let sent = gemini_call(&seen, GEMINI_MODEL, "generateContent");
        assert_eq!(sent["toolConfig"], expected, "{label}");
        assert_eq!(
            sent["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather of a city",
                 "parametersJsonSchema": weather_tools()[0]["function"]["parameters"]},
                {"name": "get_time",
                 "parametersJsonSchema": weather_tools()[1]["function"]["parameters"]}
            ]}]),
            "{label}"
        );
        let calls = tool_calls(&response);
        for (id, _, _) in &calls {
            assert!(id.starts_with("call_"), "{id}");
        }
        let calls: Vec<(String, Value)> = calls.into_iter().map(|(_, n, a)| (n, a)).collect();
        match label.as_str() {
            "\"none\"" => {
                assert_eq!(content(&response), "mock reply to: What is the weather?");
                assert!(calls.is_empty(), "{calls:?}");
            }
            "\"auto\"" | "\"required\"" => {
                assert_eq!(calls, [("get_weather".into(), weather_args())], "{label}");
            }
            _ => assert_eq!(calls, [("get_time".into(), time_args())]),
        }
        let finish = if calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        assert_eq!(response.choices[0].finish_reason, Some(finish), "{label}");
    }
}

/// The second turn: the first request, the assistant's answer with its calls, and a result
/// for each call.
fn second_turn(first: &Value, answer: &CreateChatCompletionResponse, results: &[&str]) -> Value {
    let mut body = first.clone();
    let calls = answer.choices[0].message.tool_calls.clone().unwrap();
    let mut assistant = json!({"role": "assistant", "tool_calls": calls});
    if let Some(text) = answer.choices[0].message.content.as_deref() {
        assistant["content"] = json!(text);
    }
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(assistant);
    for (call, result) in calls.iter().zip(results) {
        let ChatCompletionMessageToolCalls::Function(call) = call else {
            panic!("a function call");
        };
        messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": result}));
    }
    body
}

#[tokio::test]
async fn anthropic_parallel_tool_calls_and_their_results() {
    let harness = harness().await;
    let first = tools_request(CLAUDE, "Use both tools in parallel", Some(json!("auto")));
    let answer = create(&harness, first.clone()).await;
    assert_eq!(
        tool_calls(&answer),
        [
            (
                "toolu_mock_1_0".into(),
                "get_weather".into(),
                weather_args()
            ),
            ("toolu_mock_1_1".into(), "get_time".into(), time_args())
        ]
    );
    assert_eq!(
        answer.choices[0].finish_reason,
        Some(FinishReason::ToolCalls)
    );

    let results = ["Sunny, 21C", "14:05"];
    let response = create(&harness, second_turn(&first, &answer, &results)).await;
    assert_eq!(
        content(&response),
        "mock reply to tool result: Sunny, 21C | 14:05"
    );
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));

    let sent = anthropic_call(&harness.upstream.last_request().unwrap());
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Use both tools in parallel"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "I'll use get_weather and get_time."},
                {"type": "tool_use", "id": "toolu_mock_1_0", "name": "get_weather", "input": weather_args()},
                {"type": "tool_use", "id": "toolu_mock_1_1", "name": "get_time", "input": time_args()}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_mock_1_0", "content": "Sunny, 21C"},
                {"type": "tool_result", "tool_use_id": "toolu_mock_1_1", "content": "14:05"}
            ]}
        ])
    );
}

#[tokio::test]
async fn gemini_parallel_tool_calls_and_their_results() {
    let harness = harness().await;
    let first = tools_request(GEMINI, "Use both tools in parallel", None);
    let answer = create(&harness, first.clone()).await;
    let calls = tool_calls(&answer);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        (calls[0].1.as_str(), &calls[0].2),
        ("get_weather", &weather_args())
    );
    assert_eq!(
        (calls[1].1.as_str(), &calls[1].2),
        ("get_time", &time_args())
    );
    assert_ne!(calls[0].0, calls[1].0, "distinct call ids");
    assert_eq!(
        answer.choices[0].finish_reason,
        Some(FinishReason::ToolCalls)
    );

    let results = ["Sunny, 21C", r#"{"time":"14:05"}"#];
    let response = create(&harness, second_turn(&first, &answer, &results)).await;
    assert_eq!(
        content(&response),
        r#"mock reply to function result: get_weather: {"content":"Sunny, 21C"} | get_time: {"time":"14:05"}"#
    );
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));

    let sent = gemini_call(
        &harness.upstream.last_request().unwrap(),
        GEMINI_MODEL,
        "generateContent",
    );
    assert_eq!(
        sent["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Use both tools in parallel"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": weather_args()}},
                {"functionCall": {"name": "get_time", "args": time_args()}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"content": "Sunny, 21C"}}},
                {"functionResponse": {"name": "get_time", "response": {"time": "14:05"}}}
            ]}
        ])
    );
}

// ------------------------------------------------------------------ 4. streams

#[tokio::test]
async fn streamed_text_is_the_plain_answer_s_text() {
    let harness = harness().await;
    for (model, upstream_model) in CHAT_MODELS {
        let body = chat_body(model, "tell me something in several words please");
        let plain = create(&harness, body.clone()).await;
        let chunks = stream_ok(&harness, body).await;
        assert_chunk_envelope(&chunks, upstream_model);
        assert_eq!(streamed_text(&chunks), content(&plain), "{model}");
        let pieces = chunks
            .iter()
            .flat_map(|c| &c.choices)
            .filter(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()))
            .count();
        assert!(
            pieces > 1,
            "{model}: the text arrives in pieces, got {pieces}"
        );
        assert_eq!(finish_reasons(&chunks), [FinishReason::Stop], "{model}");
        assert!(
            chunks.iter().all(|c| c.usage.is_none()),
            "{model}: no usage unasked"
        );

        let seen = harness.upstream.last_request().unwrap();
        if model == CLAUDE {
            assert_eq!(anthropic_call(&seen)["stream"], true);
        } else {
            let sent = gemini_call(&seen, GEMINI_MODEL, "streamGenerateContent?alt=sse");
            assert!(sent.get("stream").is_none(), "{sent}");
        }
        assert_eq!(seen.header("accept"), Some("text/event-stream"), "{model}");
    }
}

#[tokio::test]
async fn a_usage_chunk_with_no_choices_ends_the_stream_when_asked() {
    let harness = harness().await;
    for (model, upstream_model) in CHAT_MODELS {
        let mut body = chat_body(model, "count my tokens please");
        body["stream_options"] = json!({"include_usage": true});
        let chunks = stream_ok(&harness, body).await;
        assert_chunk_envelope(&chunks, upstream_model);
        let seen = harness.upstream.last_request().unwrap();
        assert!(seen.json().unwrap().get("stream_options").is_none());

        let (last, rest) = chunks.split_last().unwrap();
        assert!(last.choices.is_empty(), "{model}: {last:?}");
        let usage = last.usage.as_ref().expect("usage in the last chunk");
        let text = streamed_text(rest);
        assert_eq!(text, "mock reply to: count my tokens please", "{model}");
        assert_eq!(usage.prompt_tokens, mock_prompt_tokens(&seen), "{model}");
        assert_eq!(usage.completion_tokens, words(&text), "{model}");
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );
        assert!(rest.iter().all(|c| c.usage.is_none()), "{model}");
        assert!(rest.iter().all(|c| !c.choices.is_empty()), "{model}");
    }
}

/// The tool-call deltas of a stream: per `index`, the id and name first seen and the
/// argument pieces in order.
fn streamed_calls(
    chunks: &[CreateChatCompletionStreamResponse],
) -> Vec<(u32, String, String, Vec<String>)> {
    let mut calls: Vec<(u32, String, String, Vec<String>)> = Vec::new();
    for delta in chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|choice| choice.delta.tool_calls.iter().flatten())
    {
        let function = delta.function.as_ref();
        let piece = function
            .and_then(|f| f.arguments.clone())
            .unwrap_or_default();
        match calls.iter_mut().find(|(index, ..)| *index == delta.index) {
            Some(call) => {
                assert!(delta.id.is_none(), "the id comes once: {delta:?}");
                if !piece.is_empty() {
                    call.3.push(piece);
                }
            }
            None => {
                let id = delta
                    .id
                    .clone()
                    .expect("the first delta of a call has its id");
                let name = function.and_then(|f| f.name.clone()).expect("and its name");
                let pieces = if piece.is_empty() {
                    vec![]
                } else {
                    vec![piece]
                };
                calls.push((delta.index, id, name, pieces));
            }
        }
    }
    calls
}

#[tokio::test]
async fn anthropic_streamed_tool_calls_keep_their_index_and_stream_arguments_in_pieces() {
    let harness = harness().await;
    let body = tools_request(CLAUDE, "Use both tools in parallel", None);
    let chunks = stream_ok(&harness, body).await;
    assert_chunk_envelope(&chunks, CLAUDE_MODEL);
    assert_eq!(streamed_text(&chunks), "I'll use get_weather and get_time.");
    let calls = streamed_calls(&chunks);
    assert_eq!(calls.len(), 2, "{calls:?}");
    let expected = [
        (0, "toolu_mock_1_0", "get_weather", weather_args()),
        (1, "toolu_mock_1_1", "get_time", time_args()),
    ];
    for ((index, id, name, pieces), (e_index, e_id, e_name, e_args)) in calls.iter().zip(expected) {
        assert_eq!(
            (*index, id.as_str(), name.as_str()),
            (e_index, e_id, e_name)
        );
        assert!(pieces.len() > 1, "{name}: arguments in pieces: {pieces:?}");
        // Cut mid-JSON: a piece alone is not JSON, the pieces together are.
        assert!(
            pieces
                .iter()
                .any(|p| serde_json::from_str::<Value>(p).is_err()),
            "{pieces:?}"
        );
        let whole: Value = serde_json::from_str(&pieces.concat()).unwrap();
        assert_eq!(whole, e_args, "{name}");
    }
    assert_eq!(finish_reasons(&chunks), [FinishReason::ToolCalls]);
}

#[tokio::test]
async fn gemini_streamed_tool_calls_keep_their_index() {
    let harness = harness().await;
    let body = tools_request(GEMINI, "Use both tools in parallel", None);
    let chunks = stream_ok(&harness, body).await;
    assert_chunk_envelope(&chunks, GEMINI_MODEL);
    let calls = streamed_calls(&chunks);
    assert_eq!(calls.len(), 2, "{calls:?}");
    let expected = [
        (0, "get_weather", weather_args()),
        (1, "get_time", time_args()),
    ];
    for ((index, id, name, pieces), (e_index, e_name, e_args)) in calls.iter().zip(expected) {
        assert_eq!((*index, name.as_str()), (e_index, e_name));
        assert!(id.starts_with("call_"), "{id}");
        let whole: Value = serde_json::from_str(&pieces.concat()).unwrap();
        assert_eq!(whole, e_args, "{name}");
    }
    assert_ne!(calls[0].1, calls[1].1);
    assert_eq!(finish_reasons(&chunks), [FinishReason::ToolCalls]);
}

fn anthropic_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// A Messages stream with pings that says `Hello there` and then fails with an `error` event.
fn failing_anthropic_stream() -> Vec<String> {
    let ping = anthropic_event("ping", &json!({"type": "ping"}));
    let text = |text: &str| {
        anthropic_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
        )
    };
    vec![
        anthropic_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": "msg_failing", "type": "message", "role": "assistant",
                "model": CLAUDE_MODEL, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}
            }}),
        ),
        ping.clone(),
        anthropic_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
        ),
        text("Hello"),
        ping,
        text(" there"),
        anthropic_event(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]
}

/// A raw stream that failed: its text so far in chunks, then the router's error frame, no
/// `[DONE]` and no made-up finish reason.
fn assert_failed_stream(response: &RawResponse, expected_text: &str) {
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let text = response.text();
    assert!(!text.contains("[DONE]"), "{text}");
    let frames = data_frames(&text);
    let (error, chunks) = frames.split_last().unwrap();
    let error = assert_openai_error(error.as_bytes(), Some("upstream_stream_error"));
    assert_eq!(error["type"], "server_error");
    let mut said = String::new();
    for chunk in chunks {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        for choice in chunk["choices"].as_array().unwrap() {
            assert!(choice["finish_reason"].is_null(), "made-up finish: {chunk}");
            said.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(said, expected_text);
}

/// The same through async-openai: the chunks, then one error item naming the code.
async fn assert_failed_client_stream(harness: &Harness, body: Value, expected_text: &str) {
    let items = create_stream(harness, body).await;
    let (last, good) = items.split_last().unwrap();
    let chunks: Vec<_> = good.iter().map(|c| c.as_ref().unwrap().clone()).collect();
    assert_eq!(streamed_text(&chunks), expected_text);
    assert!(finish_reasons(&chunks).is_empty());
    let error = last.as_ref().expect_err("the error frame is an error");
    assert!(
        error.to_string().contains("upstream_stream_error"),
        "{error}"
    );
}

#[tokio::test]
async fn an_anthropic_error_event_mid_stream_ends_with_the_router_s_error_frame() {
    let harness = harness().await;
    let mut body = chat_body(CLAUDE, "hi");
    body["stream"] = json!(true);

    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::stream(failing_anthropic_stream()),
    );
    let response = post(&harness, "/chat/completions", &body).await;
    assert_failed_stream(&response, "Hello there");
    // The pings went on as comments (keep-alives), which SDKs skip.
    assert!(
        response.text().contains("\n\n: ping\n\n"),
        "{}",
        response.text()
    );

    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::stream(failing_anthropic_stream()),
    );
    assert_failed_client_stream(&harness, body, "Hello there").await;
    assert_eq!(harness.upstream.request_count(), 2);
    for seen in harness.upstream.requests() {
        assert_eq!(anthropic_call(&seen)["stream"], true);
    }
}

fn gemini_chunk(text: &str, finish: Option<&str>) -> String {
    let mut candidate =
        json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    let chunk = json!({
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
        "modelVersion": GEMINI_MODEL,
        "responseId": "scripted-1"
    });
    format!("data: {chunk}\r\n\r\n")
}

#[tokio::test]
async fn a_gemini_stream_cut_before_its_finish_reason_ends_with_the_error_frame() {
    let harness = harness().await;
    let mut body = chat_body(GEMINI, "hi");
    body["stream"] = json!(true);
    let cut =
        || ScriptedResponse::stream([gemini_chunk("Hello", None), gemini_chunk(" there", None)]);

    // Ended cleanly, but without a finish reason.
    harness.upstream.script_for(GEMINI_MODEL, cut());
    let response = post(&harness, "/chat/completions", &body).await;
    assert_failed_stream(&response, "Hello there");

    // Broken off.
    harness
        .upstream
        .script_for(GEMINI_MODEL, cut().reset_after(2));
    let response = post(&harness, "/chat/completions", &body).await;
    assert_failed_stream(&response, "Hello there");

    harness.upstream.script_for(GEMINI_MODEL, cut());
    assert_failed_client_stream(&harness, body, "Hello there").await;
    assert_eq!(harness.upstream.request_count(), 3);
    for seen in harness.upstream.requests() {
        gemini_call(&seen, GEMINI_MODEL, "streamGenerateContent?alt=sse");
    }
}

// ------------------------------------------------------------------ 5. structured output

fn json_schema_format() -> Value {
    json!({"type": "json_schema", "json_schema": {
        "name": "weather", "schema": weather_schema(), "strict": true
    }})
}

#[tokio::test]
async fn anthropic_json_schema_is_a_forced_tool_answered_as_content() {
    let harness = harness().await;
    let mut body = chat_body(CLAUDE, "Weather in Paris as JSON");
    body["response_format"] = json_schema_format();
    let response = create(&harness, body.clone()).await;
    let answer: Value = serde_json::from_str(content(&response)).unwrap();
    assert_eq!(answer, json!({"city": "mock-city", "temp": 1}));
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    assert!(response.choices[0].message.tool_calls.is_none());

    let sent = anthropic_call(&harness.only_upstream_request());
    assert_eq!(
        sent["tools"],
        json!([{"name": "weather", "description": "Give the answer as JSON matching this schema.",
                "input_schema": weather_schema()}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "weather"})
    );
    assert!(sent.get("response_format").is_none());

    // Streamed: the tool's input pieces are the content.
    let chunks = stream_ok(&harness, body).await;
    let streamed: Value = serde_json::from_str(&streamed_text(&chunks)).unwrap();
    assert_eq!(streamed, answer);
    assert_eq!(finish_reasons(&chunks), [FinishReason::Stop]);
    assert!(streamed_calls(&chunks).is_empty());

    // json_object: a forced tool taking any object.
    let mut body = chat_body(CLAUDE, "Any JSON");
    body["response_format"] = json!({"type": "json_object"});
    let response = create(&harness, body).await;
    let answer: Value = serde_json::from_str(content(&response)).unwrap();
    assert!(answer.is_object(), "{answer}");
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    let sent = anthropic_call(&harness.upstream.last_request().unwrap());
    assert_eq!(sent["tools"][0]["input_schema"], json!({"type": "object"}));
    let forced = sent["tools"][0]["name"].clone();
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": forced}));
}

#[tokio::test]
async fn gemini_json_schema_is_a_response_schema() {
    let harness = harness().await;
    let mut body = chat_body(GEMINI, "Weather in Paris as JSON");
    body["response_format"] = json_schema_format();
    let response = create(&harness, body).await;
    let answer: Value = serde_json::from_str(content(&response)).unwrap();
    assert_eq!(answer, json!({"city": "mock-city", "temp": 1}));
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    let sent = gemini_call(
        &harness.only_upstream_request(),
        GEMINI_MODEL,
        "generateContent",
    );
    assert_eq!(
        sent["generationConfig"],
        json!({"responseMimeType": "application/json", "responseJsonSchema": weather_schema()})
    );

    let mut body = chat_body(GEMINI, "Any JSON");
    body["response_format"] = json!({"type": "json_object"});
    let response = create(&harness, body).await;
    let answer: Value = serde_json::from_str(content(&response)).unwrap();
    assert_eq!(answer, json!({"reply": "mock reply to: Any JSON"}));
    let sent = gemini_call(
        &harness.upstream.last_request().unwrap(),
        GEMINI_MODEL,
        "generateContent",
    );
    assert_eq!(
        sent["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
}

// ------------------------------------------------------------------ 6. generation settings

fn settings_request(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [user("say STOPHERE now")],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["STOPHERE", "NEVER"],
        "max_tokens": 50,
        "max_completion_tokens": 60,
        "user": "user-42"
    })
}

#[tokio::test]
async fn anthropic_generation_settings_are_mapped() {
    let harness = harness().await;
    let response = create(&harness, settings_request(CLAUDE)).await;
    // The mock stopped at the stop sequence: the text before it, finish `stop`.
    assert_eq!(content(&response), "mock reply to: say ");
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));

    let sent = anthropic_call(&harness.only_upstream_request());
    assert_eq!(sent["temperature"], json!(0.5));
    assert_eq!(sent["top_p"], json!(0.9));
    assert_eq!(sent["stop_sequences"], json!(["STOPHERE", "NEVER"]));
    assert_eq!(sent["max_tokens"], 60, "max_completion_tokens wins");
    assert_eq!(sent["metadata"], json!({"user_id": "user-42"}));
    for key in ["stop", "user", "top_k", "max_completion_tokens"] {
        assert!(sent.get(key).is_none(), "{key}: {sent}");
    }

    let mut body = settings_request(CLAUDE);
    body.as_object_mut()
        .unwrap()
        .remove("max_completion_tokens");
    create(&harness, body).await;
    let sent = anthropic_call(&harness.upstream.last_request().unwrap());
    assert_eq!(sent["max_tokens"], 50);
}

#[tokio::test]
async fn gemini_generation_settings_are_mapped() {
    let harness = harness().await;
    let response = create(&harness, settings_request(GEMINI)).await;
    assert_eq!(content(&response), "mock reply to: say ");
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));

    let seen = harness.only_upstream_request();
    let sent = gemini_call(&seen, GEMINI_MODEL, "generateContent");
    assert_eq!(
        sent["generationConfig"],
        json!({
            "temperature": 0.5,
            "topP": 0.9,
            "stopSequences": ["STOPHERE", "NEVER"],
            "maxOutputTokens": 60
        })
    );
    // Gemini has no end-user field: `user` is left out.
    assert!(!contains(&seen.body, b"user-42"));

    let mut body = settings_request(GEMINI);
    body.as_object_mut()
        .unwrap()
        .remove("max_completion_tokens");
    create(&harness, body).await;
    let seen = harness.upstream.last_request().unwrap();
    let sent = gemini_call(&seen, GEMINI_MODEL, "generateContent");
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 50);
}

#[tokio::test]
async fn anthropic_max_tokens_defaults_to_4096_or_the_builder_s_setting() {
    let harness = harness_with(|builder, upstream| {
        builder.provider(
            "short",
            anthropic(upstream).default_max_tokens(123).build().unwrap(),
        )
    })
    .await;
    create(&harness, chat_body(CLAUDE, "hi")).await;
    let sent = anthropic_call(&harness.upstream.last_request().unwrap());
    assert_eq!(sent["max_tokens"], 4096);

    create(&harness, chat_body("short/claude-haiku-4-5", "hi")).await;
    let sent = anthropic_call(&harness.upstream.last_request().unwrap());
    assert_eq!(sent["max_tokens"], 123);
    assert_eq!(sent["model"], CLAUDE_MODEL);

    // The client's own value still wins.
    let mut body = chat_body("short/claude-haiku-4-5", "hi");
    body["max_completion_tokens"] = json!(7);
    create(&harness, body).await;
    let sent = anthropic_call(&harness.upstream.last_request().unwrap());
    assert_eq!(sent["max_tokens"], 7);
}

// ------------------------------------------------------------------ 7. finish reasons

#[tokio::test]
async fn a_token_limit_is_finish_reason_length() {
    let harness = harness().await;
    for (model, _) in CHAT_MODELS {
        let mut body = chat_body(model, "Tell me a long story about routers");
        body["max_tokens"] = json!(3);
        let response = create(&harness, body.clone()).await;
        assert_eq!(content(&response), "mock reply to:", "{model}");
        assert_eq!(
            response.choices[0].finish_reason,
            Some(FinishReason::Length),
            "{model}"
        );
        assert_eq!(response.usage.unwrap().completion_tokens, 3, "{model}");

        let chunks = stream_ok(&harness, body).await;
        assert_eq!(streamed_text(&chunks), "mock reply to:", "{model}");
        assert_eq!(finish_reasons(&chunks), [FinishReason::Length], "{model}");
    }
    let requests = harness.upstream.requests();
    assert_eq!(anthropic_call(&requests[0])["max_tokens"], 3);
    let sent = gemini_call(&requests[2], GEMINI_MODEL, "generateContent");
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 3);
}

#[tokio::test]
async fn gemini_safety_is_finish_reason_content_filter() {
    let harness = harness().await;
    harness.upstream.script_for(
        GEMINI_MODEL,
        ScriptedResponse::new(200).json(json!({
            "candidates": [{
                "content": {"parts": [{"text": "I cannot"}], "role": "model"},
                "finishReason": "SAFETY",
                "index": 0,
                "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]
            }],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7},
            "modelVersion": GEMINI_MODEL,
            "responseId": "safety-1"
        })),
    );
    let response = create(&harness, chat_body(GEMINI, "something dangerous")).await;
    assert_eq!(response.id, "chatcmpl-safety-1");
    assert_eq!(content(&response), "I cannot");
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::ContentFilter)
    );
    let usage = response.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (5, 2, 7)
    );

    harness.upstream.script_for(
        GEMINI_MODEL,
        ScriptedResponse::stream([
            gemini_chunk("I can", None),
            gemini_chunk("not", Some("SAFETY")),
        ]),
    );
    let mut body = chat_body(GEMINI, "something dangerous");
    body["stream"] = json!(true);
    let chunks = stream_ok(&harness, body).await;
    assert_eq!(streamed_text(&chunks), "I cannot");
    assert_eq!(finish_reasons(&chunks), [FinishReason::ContentFilter]);
}

// ------------------------------------------------------------------ 8. errors

#[tokio::test]
async fn an_anthropic_invalid_request_is_400_with_its_message() {
    let harness = harness().await;
    // Passed on as sent; Anthropic's range is 0..=1.
    let mut body = chat_body(CLAUDE, "hi");
    body["temperature"] = json!(1.5);
    let response = post(&harness, "/chat/completions", &body).await;
    let error = response.assert_error(400, None);
    assert_eq!(error["type"], "invalid_request_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("temperature"), "{message}");
    assert_eq!(
        anthropic_call(&harness.only_upstream_request())["temperature"],
        1.5
    );
}

#[tokio::test]
async fn a_refused_anthropic_key_is_502_provider_auth_failed() {
    let harness = harness_with(|builder, upstream| {
        builder.provider(
            "wrongkey",
            AnthropicProvider::builder(upstream.origin())
                .api_key("sk-ant-wrong-key")
                .build()
                .unwrap(),
        )
    })
    .await;
    let response = post(
        &harness,
        "/chat/completions",
        &chat_body("wrongkey/claude-haiku-4-5", "hi"),
    )
    .await;
    let error = response.assert_error(502, Some("provider_auth_failed"));
    assert!(!response.text().contains("wrong-key"), "{error}");
    let seen = harness.only_upstream_request();
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-wrong-key"));
    assert_no_router_key(&seen);
}

#[tokio::test]
async fn an_anthropic_rate_limit_is_429_with_retry_after_kept() {
    let harness = harness().await;
    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::anthropic_error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        )
        .header("retry-after", "7"),
    );
    let response = post(&harness, "/chat/completions", &chat_body(CLAUDE, "hi")).await;
    let error = response.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(response.header("retry-after"), Some("7"));
    assert_eq!(error["type"], "requests");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("per-minute rate limit"),
        "{error}"
    );
}

#[tokio::test]
async fn anthropic_overloaded_529_is_503() {
    let harness = harness().await;
    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::anthropic_error(529, "overloaded_error", "Overloaded"),
    );
    let response = post(&harness, "/chat/completions", &chat_body(CLAUDE, "hi")).await;
    let error = response.assert_error(503, Some("overloaded"));
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["message"], "Overloaded");

    // A stream request failing before its first event gets the same JSON error.
    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::anthropic_error(529, "overloaded_error", "Overloaded"),
    );
    let response = post(&harness, "/chat/completions", &stream_body(CLAUDE, "hi")).await;
    response.assert_error(503, Some("overloaded"));
    assert_eq!(harness.upstream.request_count(), 2);
}

#[tokio::test]
async fn a_gemini_invalid_argument_is_400_with_its_message() {
    let harness = harness().await;
    // Gemini answers at most 8 candidates.
    let mut body = chat_body(GEMINI, "hi");
    body["n"] = json!(9);
    let response = post(&harness, "/chat/completions", &body).await;
    let error = response.assert_error(400, None);
    assert_eq!(error["type"], "invalid_request_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.to_lowercase().contains("candidate"), "{message}");
    let sent = gemini_call(
        &harness.only_upstream_request(),
        GEMINI_MODEL,
        "generateContent",
    );
    assert_eq!(sent["generationConfig"]["candidateCount"], 9);
}

#[tokio::test]
async fn anthropic_streamed_usage_includes_cache_reads() {
    let harness = harness().await;
    let mut events = failing_anthropic_stream();
    events.pop();
    events[0] = anthropic_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": "msg_cached", "type": "message", "role": "assistant",
            "model": CLAUDE_MODEL, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 300, "output_tokens": 1}
        }}),
    );
    events.push(anthropic_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(anthropic_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 2}}),
    ));
    events.push(anthropic_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    harness
        .upstream
        .script_for(CLAUDE_MODEL, ScriptedResponse::stream(events));
    let mut body = chat_body(CLAUDE, "hi");
    body["stream_options"] = json!({"include_usage": true});
    let chunks = stream_ok(&harness, body).await;
    assert_eq!(streamed_text(&chunks), "Hello there");
    assert_eq!(finish_reasons(&chunks), [FinishReason::Stop]);
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    assert_eq!(last.id, "chatcmpl-msg_cached");
    let usage = last.usage.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (310, 2, 312)
    );
    assert_eq!(
        usage.prompt_tokens_details.as_ref().unwrap().cached_tokens,
        Some(300)
    );
}

#[tokio::test]
async fn a_refused_gemini_key_is_502_provider_auth_failed() {
    let harness = harness_with(|builder, upstream| {
        builder.provider(
            "wrongkey",
            GeminiProvider::builder(upstream.origin())
                .api_key("AIza-wrong-key")
                .build()
                .unwrap(),
        )
    })
    .await;
    let response = post(
        &harness,
        "/chat/completions",
        &chat_body("wrongkey/gemini-2.5-flash", "hi"),
    )
    .await;
    response.assert_error(502, Some("provider_auth_failed"));
    assert!(!response.text().contains("wrong-key"));
    let seen = harness.only_upstream_request();
    assert_eq!(seen.header("x-goog-api-key"), Some("AIza-wrong-key"));
    assert_no_router_key(&seen);
}

#[tokio::test]
async fn gemini_resource_exhausted_is_429_with_retry_after_from_retry_info() {
    let harness = harness().await;
    harness.upstream.script_for(
        GEMINI_MODEL,
        ScriptedResponse::new(429).json(json!({"error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
            ]
        }})),
    );
    let response = post(&harness, "/chat/completions", &chat_body(GEMINI, "hi")).await;
    let error = response.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(response.header("retry-after"), Some("17"));
    assert!(
        error["message"].as_str().unwrap().contains("exhausted"),
        "{error}"
    );
}

// ------------------------------------------------------------------ 9. refusals

fn assert_unsupported_parameter(response: &RawResponse, param: &str) {
    let error = response.assert_error(400, Some("unsupported_parameter"));
    assert_eq!(error["param"], param, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&format!("`{param}`")), "{message}");
}

#[tokio::test]
async fn anthropic_refuses_n_and_logprobs_unless_told_to_drop_them() {
    let harness = harness_with(|builder, upstream| {
        builder.provider(
            "lenient",
            anthropic(upstream).drop_params(true).build().unwrap(),
        )
    })
    .await;
    let cases = [("n", json!(2)), ("logprobs", json!(true))];
    for (param, value) in &cases {
        let mut body = chat_body(CLAUDE, "hi");
        body[*param] = value.clone();
        let response = post(&harness, "/chat/completions", &body).await;
        assert_unsupported_parameter(&response, param);
        assert!(response.text().contains("Anthropic"), "{}", response.text());
    }
    assert_eq!(harness.upstream.request_count(), 0, "nothing went upstream");

    for (param, value) in cases {
        let mut body = chat_body("lenient/claude-haiku-4-5", "hi");
        body[param] = value;
        let response = create(&harness, body).await;
        assert_eq!(content(&response), "mock reply to: hi");
        let sent = anthropic_call(&harness.upstream.last_request().unwrap());
        assert!(sent.get(param).is_none(), "{param}: {sent}");
    }
}

#[tokio::test]
async fn gemini_refuses_logprobs_unless_told_to_drop_them_and_maps_n() {
    let harness = harness_with(|builder, upstream| {
        builder.provider(
            "lenient",
            gemini(upstream).drop_params(true).build().unwrap(),
        )
    })
    .await;
    let mut body = chat_body(GEMINI, "hi");
    body["logprobs"] = json!(true);
    let response = post(&harness, "/chat/completions", &body).await;
    assert_unsupported_parameter(&response, "logprobs");
    assert_eq!(harness.upstream.request_count(), 0);

    body["model"] = json!("lenient/gemini-2.5-flash");
    let response = create(&harness, body).await;
    assert_eq!(content(&response), "mock reply to: hi");
    let seen = harness.only_upstream_request();
    gemini_call(&seen, GEMINI_MODEL, "generateContent");
    assert!(!contains(&seen.body, b"logprobs"), "{:?}", seen.body);

    // `n` is Gemini's candidate count.
    let mut body = chat_body(GEMINI, "hi");
    body["n"] = json!(2);
    let response = create(&harness, body).await;
    let texts: Vec<(u32, Option<&str>)> = response
        .choices
        .iter()
        .map(|c| (c.index, c.message.content.as_deref()))
        .collect();
    assert_eq!(
        texts,
        [
            (0, Some("mock reply to: hi")),
            (1, Some("mock reply to: hi (candidate 1)"))
        ]
    );
    let sent = gemini_call(
        &harness.upstream.last_request().unwrap(),
        GEMINI_MODEL,
        "generateContent",
    );
    assert_eq!(sent["generationConfig"], json!({"candidateCount": 2}));
}

#[tokio::test]
async fn anthropic_has_no_images_audio_or_embeddings() {
    let harness = harness().await;
    let cases = [
        (
            "/images/generations",
            json!({"model": CLAUDE, "prompt": "a cat"}),
        ),
        (
            "/audio/speech",
            json!({"model": CLAUDE, "input": "hello", "voice": "alloy"}),
        ),
        ("/embeddings", json!({"model": CLAUDE, "input": "hello"})),
    ];
    for (path, body) in cases {
        let response = post(&harness, path, &body).await;
        let error = response.assert_error(400, Some("unsupported_endpoint"));
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(CLAUDE), "{path}: {message}");
        assert!(message.contains(path), "{path}: {message}");
    }
    // async-openai sees the same refusal.
    let request: CreateEmbeddingRequest =
        serde_json::from_value(json!({"model": CLAUDE, "input": "hello"})).unwrap();
    let error = harness
        .client()
        .embeddings()
        .create(request)
        .await
        .unwrap_err();
    let OpenAIError::ApiError(error) = error else {
        panic!("an API error: {error:?}");
    };
    assert_eq!(error.status_code.as_u16(), 400);
    assert_eq!(
        error.api_error.code.as_deref(),
        Some("unsupported_endpoint")
    );
    assert_eq!(harness.upstream.request_count(), 0, "nothing went upstream");
}

// ------------------------------------------------------------------ 10. embeddings

fn batch_request(model: &str, inputs: &[&str]) -> Value {
    json!({"model": model, "input": inputs})
}

#[tokio::test]
async fn gemini_embeds_one_input_alone_and_a_list_in_one_batch_call() {
    let harness = harness().await;
    let one = embed(&harness, json!({"model": EMBEDDER, "input": "hello world"})).await;
    assert_eq!(one.object, "list");
    assert_eq!(one.model, EMBED_MODEL);
    assert_eq!(one.data.len(), 1);
    assert_eq!(
        (one.data[0].index, one.data[0].object.as_str()),
        (0, "embedding")
    );
    let single = &one.data[0].embedding;
    assert_eq!(single.len(), 768);
    let norm: f32 = single.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    let sent = gemini_call(
        &harness.only_upstream_request(),
        EMBED_MODEL,
        "embedContent",
    );
    assert_eq!(
        sent,
        json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello world"}]}})
    );

    let inputs = ["hello world", "second", "third"];
    let many = embed(&harness, batch_request(EMBEDDER, &inputs)).await;
    let requests = harness.upstream.requests();
    assert_eq!(requests.len(), 2, "one call for the whole list");
    let sent = gemini_call(&requests[1], EMBED_MODEL, "batchEmbedContents");
    let expected: Vec<Value> = inputs
        .iter()
        .map(|text| {
            json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": text}]}})
        })
        .collect();
    assert_eq!(sent, json!({"requests": expected}));
    let indices: Vec<u32> = many.data.iter().map(|e| e.index).collect();
    assert_eq!(indices, [0, 1, 2]);
    assert_eq!(&many.data[0].embedding, single, "same text, same vector");
    assert_ne!(many.data[1].embedding, many.data[2].embedding);
    assert!(many.data.iter().all(|e| e.embedding.len() == 768));
}

#[tokio::test]
async fn gemini_embeddings_in_base64_and_with_dimensions() {
    let harness = harness().await;
    let inputs = ["alpha", "beta"];
    let floats = embed(&harness, batch_request(EMBEDDER, &inputs)).await;

    let mut body = batch_request(EMBEDDER, &inputs);
    body["encoding_format"] = json!("base64");
    let request: CreateEmbeddingRequest = serde_json::from_value(body.clone()).unwrap();
    let encoded = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        harness.client().embeddings().create_base64(request),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(encoded.data.len(), 2);
    for (encoded, float) in encoded.data.into_iter().zip(&floats.data) {
        assert_eq!(encoded.index, float.index);
        let decoded: Vec<f32> = encoded.embedding.into();
        assert_eq!(
            &decoded, &float.embedding,
            "little-endian f32 of the same values"
        );
    }
    let sent = gemini_call(
        &harness.upstream.last_request().unwrap(),
        EMBED_MODEL,
        "batchEmbedContents",
    );
    assert!(!sent.to_string().contains("base64"), "{sent}");

    // The raw answer is OpenAI's base64 string.
    let raw = post(&harness, "/embeddings", &body).await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert!(raw.json()["data"][0]["embedding"].is_string());

    let mut body = batch_request(EMBEDDER, &inputs);
    body["dimensions"] = json!(256);
    let short = embed(&harness, body).await;
    assert_eq!(short.data.len(), 2);
    assert!(short.data.iter().all(|e| e.embedding.len() == 256));
    let sent = gemini_call(
        &harness.upstream.last_request().unwrap(),
        EMBED_MODEL,
        "batchEmbedContents",
    );
    assert_eq!(sent["requests"].as_array().unwrap().len(), 2);
    for request in sent["requests"].as_array().unwrap() {
        assert_eq!(request["outputDimensionality"], 256, "{sent}");
    }
    let one = embed(
        &harness,
        json!({"model": EMBEDDER, "input": "alpha", "dimensions": 64}),
    )
    .await;
    assert_eq!(one.data[0].embedding.len(), 64);
    let sent = gemini_call(
        &harness.upstream.last_request().unwrap(),
        EMBED_MODEL,
        "embedContent",
    );
    assert_eq!(sent["outputDimensionality"], 64);
}

// ------------------------------------------------------------------ 11. fallbacks

fn stream_body(model: &str, text: &str) -> Value {
    let mut body = chat_body(model, text);
    body["stream"] = json!(true);
    body
}

/// The streamed text of a raw SSE answer, checking every chunk names `model` and the stream
/// ends with `[DONE]`.
fn raw_streamed_text(response: &RawResponse, model: &str) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    let frames = data_frames(&text);
    let (done, chunks) = frames.split_last().unwrap();
    assert_eq!(*done, "[DONE]", "{text}");
    let mut said = String::new();
    for chunk in chunks {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        assert_eq!(chunk["model"], model, "one upstream per answer: {chunk}");
        for choice in chunk["choices"].as_array().unwrap() {
            said.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    said
}

#[tokio::test]
async fn an_overloaded_anthropic_model_falls_back_to_an_openai_one() {
    let harness = harness_with(|builder, _| builder.alias("claude-first", [CLAUDE, OPENAI])).await;
    let overloaded = || ScriptedResponse::anthropic_error(529, "overloaded_error", "Overloaded");

    harness.upstream.script_for(CLAUDE_MODEL, overloaded());
    let response = post(
        &harness,
        "/chat/completions",
        &chat_body("claude-first", "hi"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(answered_by(&response), (OPENAI, "2"));
    let json = response.json();
    assert_eq!(json["model"], OPENAI_MODEL);
    assert_eq!(json["choices"][0]["message"]["content"], "mock reply: hi");

    harness.upstream.script_for(CLAUDE_MODEL, overloaded());
    let response = post(
        &harness,
        "/chat/completions",
        &stream_body("claude-first", "hi"),
    )
    .await;
    assert_eq!(answered_by(&response), (OPENAI, "2"));
    assert_eq!(raw_streamed_text(&response, OPENAI_MODEL), "mock reply: hi");

    let tried = harness.upstream.requests_for(CLAUDE_MODEL);
    assert_eq!(tried.len(), 2);
    for seen in &tried {
        assert_eq!(
            anthropic_call(seen)["messages"][0]["content"][0]["text"],
            "hi"
        );
    }
    let served = harness.upstream.requests_for(OPENAI_MODEL);
    assert_eq!(served.len(), 2);
    for seen in &served {
        assert_eq!(seen.path, "/v1/chat/completions");
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {PROVIDER_KEY}").as_str())
        );
        assert!(seen.header("x-api-key").is_none());
        assert_eq!(seen.json().unwrap()["messages"], json!([user("hi")]));
    }
}

#[tokio::test]
async fn a_failing_openai_model_falls_back_to_gemini() {
    let harness = harness_with(|builder, _| builder.alias("openai-first", [OPENAI, GEMINI])).await;
    let unavailable =
        || ScriptedResponse::openai_error(503, "The server is overloaded", "server_error", None);

    harness.upstream.script_for(OPENAI_MODEL, unavailable());
    let response = post(
        &harness,
        "/chat/completions",
        &chat_body("openai-first", "hi"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(answered_by(&response), (GEMINI, "2"));
    let json = response.json();
    assert_eq!(json["model"], GEMINI_MODEL);
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "mock reply to: hi"
    );

    harness.upstream.script_for(OPENAI_MODEL, unavailable());
    let response = post(
        &harness,
        "/chat/completions",
        &stream_body("openai-first", "hi"),
    )
    .await;
    assert_eq!(answered_by(&response), (GEMINI, "2"));
    assert_eq!(
        raw_streamed_text(&response, GEMINI_MODEL),
        "mock reply to: hi"
    );

    assert_eq!(harness.upstream.requests_for(OPENAI_MODEL).len(), 2);
    let served = harness.upstream.requests_for(GEMINI_MODEL);
    assert_eq!(served.len(), 2);
    gemini_call(&served[0], GEMINI_MODEL, "generateContent");
    let sent = gemini_call(&served[1], GEMINI_MODEL, "streamGenerateContent?alt=sse");
    assert_eq!(
        sent["contents"],
        json!([{"role": "user", "parts": [{"text": "hi"}]}])
    );
}

// ------------------------------------------------------------------ 12. models

#[tokio::test]
async fn models_lists_the_translated_providers_models() {
    let harness = harness_with(|builder, _| {
        builder
            .models("anthropic", ["claude-haiku-4-5", "claude-sonnet-4-5"])
            .models("gemini", ["gemini-2.5-flash", "text-embedding-004"])
    })
    .await;
    let list = tokio::time::timeout(Duration::from_secs(5), harness.client().models().list())
        .await
        .unwrap()
        .unwrap();
    let listed: Vec<(&str, &str)> = list
        .data
        .iter()
        .map(|m| (m.id.as_str(), m.owned_by.as_str()))
        .collect();
    for expected in [
        (CLAUDE, "anthropic"),
        ("anthropic/claude-sonnet-4-5", "anthropic"),
        (GEMINI, "gemini"),
        (EMBEDDER, "gemini"),
        (OPENAI, "mock"),
    ] {
        assert!(listed.contains(&expected), "{expected:?} in {listed:?}");
    }
    assert_eq!(
        harness.upstream.request_count(),
        0,
        "the list is the router's"
    );
}

// ------------------------------------------------------------------ stream observation

/// A hook sending each stream report to the returned receiver.
fn report_channel() -> (
    impl Fn(&StreamReport) + Send + Sync + 'static,
    tokio::sync::mpsc::UnboundedReceiver<StreamReport>,
) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let hook = move |report: &StreamReport| {
        let _ = sender.send(report.clone());
    };
    (hook, receiver)
}

async fn next_report(
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<StreamReport>,
) -> StreamReport {
    tokio::time::timeout(EXCHANGE_TIMEOUT, reports.recv())
        .await
        .expect("a stream report in time")
        .expect("the hook is alive")
}

#[tokio::test]
async fn injected_usage_is_counted_and_kept_from_the_client() {
    let (hook, mut reports) = report_channel();
    let harness = harness_with(|builder, _| {
        builder
            .on_usage(hook)
            .stream_settings("anthropic", StreamSettings::new().inject_usage(true))
            .stream_settings("gemini", StreamSettings::new().inject_usage(true))
    })
    .await;
    for (model, upstream_model) in CHAT_MODELS {
        let response = post(
            &harness,
            "/chat/completions",
            &stream_body(model, "count me quietly"),
        )
        .await;
        assert_eq!(
            raw_streamed_text(&response, upstream_model),
            "mock reply to: count me quietly"
        );
        let text = response.text();
        assert!(!text.contains("usage"), "{model}: usage leaked: {text}");
        for chunk in &data_frames(&text)[..data_frames(&text).len() - 1] {
            let chunk: Value = serde_json::from_str(chunk).unwrap();
            assert!(!chunk["choices"].as_array().unwrap().is_empty(), "{chunk}");
        }

        let seen = harness.upstream.last_request().unwrap();
        let report = next_report(&mut reports).await;
        assert_eq!(report.outcome, StreamOutcome::Completed, "{model}");
        assert!(report.first_byte.is_some(), "{model}");
        let usage = report.usage.expect("usage counted");
        assert_eq!(
            usage.input_tokens,
            u64::from(mock_prompt_tokens(&seen)),
            "{model}"
        );
        assert_eq!(usage.output_tokens, 6, "{model}");
        assert_eq!(usage.total_tokens, usage.input_tokens + 6, "{model}");
    }
}

#[tokio::test]
async fn a_stalled_translated_stream_ends_with_the_idle_timeout_frame() {
    let (hook, mut reports) = report_channel();
    let idle = || StreamSettings::new().idle_timeout(Duration::from_millis(300));
    let harness = harness_with(|builder, _| {
        builder
            .on_usage(hook)
            .stream_settings("anthropic", idle())
            .stream_settings("gemini", idle())
    })
    .await;
    // Anthropic: the text so far, then silence (a ping would count as activity).
    let mut events = failing_anthropic_stream();
    events.pop();
    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::stream(events).stall_after(6),
    );
    harness.upstream.script_for(
        GEMINI_MODEL,
        ScriptedResponse::stream([gemini_chunk("Hello", None), gemini_chunk(" there", None)])
            .stall_after(2),
    );
    for (model, _) in CHAT_MODELS {
        let response = post(&harness, "/chat/completions", &stream_body(model, "hi")).await;
        assert_eq!(response.status, 200);
        let text = response.text();
        assert!(!text.contains("[DONE]"), "{text}");
        let frames = data_frames(&text);
        let (error, chunks) = frames.split_last().unwrap();
        assert_openai_error(error.as_bytes(), Some("upstream_idle_timeout"));
        let said: String = chunks
            .iter()
            .map(|c| serde_json::from_str::<Value>(c).unwrap())
            .flat_map(|c| c["choices"].as_array().unwrap().clone())
            .filter_map(|choice| choice["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(said, "Hello there", "{model}");
        let report = next_report(&mut reports).await;
        assert_eq!(report.outcome, StreamOutcome::IdleTimeout, "{model}");
    }
}

// ------------------------------------------------------------------ tool-call ids across turns

#[tokio::test]
async fn gemini_call_ids_and_signatures_come_back_and_suit_anthropic() {
    let harness = harness().await;
    let signature = "c2lnbmF0dXJlLW9mLXRoZS10aG91Z2h0Pz8/Pw==";
    harness.upstream.script_for(
        GEMINI_MODEL,
        ScriptedResponse::new(200).json(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"functionCall": {"id": "gem-call-7", "name": "get_weather", "args": {"city": "Paris"}},
                     "thoughtSignature": signature}
                ]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8},
            "modelVersion": GEMINI_MODEL,
            "responseId": "signed-1"
        })),
    );
    let first = tools_request(GEMINI, "Weather in Paris?", None);
    let answer = create(&harness, first.clone()).await;
    let calls = tool_calls(&answer);
    assert_eq!(calls.len(), 1);
    let (id, name, args) = &calls[0];
    assert_eq!(
        (name.as_str(), args),
        ("get_weather", &json!({"city": "Paris"}))
    );
    assert!(id.starts_with("call_"), "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{id}"
    );
    assert_eq!(
        answer.choices[0].finish_reason,
        Some(FinishReason::ToolCalls)
    );

    // Back to Gemini: the call keeps its id and signature, the result names the call.
    let second = second_turn(&first, &answer, &["Sunny"]);
    let response = create(&harness, second.clone()).await;
    assert_eq!(
        content(&response),
        r#"mock reply to function result: get_weather: {"content":"Sunny"}"#
    );
    let sent = gemini_call(
        &harness.upstream.last_request().unwrap(),
        GEMINI_MODEL,
        "generateContent",
    );
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [{
            "functionCall": {"id": "gem-call-7", "name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": signature
        }]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {
            "id": "gem-call-7", "name": "get_weather", "response": {"content": "Sunny"}
        }}]})
    );

    // The same history on Anthropic: the id is a valid `tool_use` id there too.
    let mut on_claude = second;
    on_claude["model"] = json!(CLAUDE);
    let response = create(&harness, on_claude).await;
    assert_eq!(content(&response), "mock reply to tool result: Sunny");
    let sent = anthropic_call(&harness.upstream.last_request().unwrap());
    assert_eq!(sent["messages"][1]["content"][0]["id"], json!(id));
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], json!(id));
}

/// A whole Messages stream saying `Hi` (start, one text delta, stop).
fn whole_anthropic_stream() -> Vec<String> {
    vec![
        anthropic_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": "msg_whole", "type": "message", "role": "assistant",
                "model": CLAUDE_MODEL, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ),
        anthropic_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
        ),
        anthropic_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "Hi"}}),
        ),
        anthropic_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ),
        anthropic_event(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                    "stop_sequence": null}, "usage": {"output_tokens": 1}}),
        ),
        anthropic_event("message_stop", &json!({"type": "message_stop"})),
    ]
}

#[tokio::test]
async fn a_translated_stream_ends_at_its_last_event_even_if_the_provider_keeps_it_open() {
    let harness = harness().await;
    let mut body = chat_body(CLAUDE, "hi");
    body["stream"] = json!(true);
    // Everything, then the connection stays open and silent.
    let events = whole_anthropic_stream();
    let count = events.len();
    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::stream(events).stall_after(count),
    );
    let response = post(&harness, "/chat/completions", &body).await;
    let text = response.text();
    assert_eq!(response.status, 200, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    assert!(text.contains("\"content\":\"Hi\""), "{text}");
}

#[tokio::test]
async fn a_stream_answered_with_json_is_refused_before_the_first_byte() {
    let harness = harness().await;
    let mut body = chat_body(CLAUDE, "hi");
    body["stream"] = json!(true);
    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::new(200).json(json!({"type": "message", "content": []})),
    );
    let response = post(&harness, "/chat/completions", &body).await;
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "upstream_error");
}

#[tokio::test]
async fn an_error_answer_too_large_to_read_keeps_its_status_and_retry_after() {
    let harness = harness().await;
    let body = chat_body(CLAUDE, "hi");
    let huge = format!(
        r#"{{"type":"error","error":{{"type":"rate_limit_error","message":"{}"}}}}"#,
        "x".repeat(1024 * 1024 + 1024)
    );
    harness.upstream.script_for(
        CLAUDE_MODEL,
        ScriptedResponse::new(429)
            .header("retry-after", "7")
            .header("content-type", "application/json")
            .body(huge),
    );
    let response = post(&harness, "/chat/completions", &body).await;
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.headers["retry-after"], "7");
    let error = &response.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded", "{error}");
}

/// A traced request to a translated provider: the provider gets the attempt's `traceparent`
/// (in the caller's trace) though nothing else of the client's headers, and the attempt is
/// recorded with the provider's address.
#[tokio::test]
async fn translated_providers_get_the_attempts_trace_context() {
    let summaries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = summaries.clone();
    let harness = harness_with(move |builder, _| {
        builder
            .trace_context(true)
            .observer(move |s: &ai_router::observe::RequestSummary| {
                seen.lock().unwrap().push(s.clone());
            })
    })
    .await;
    for (model, path) in [(CLAUDE, "/v1/messages"), (GEMINI, ":generateContent")] {
        let before = harness.upstream.requests().len();
        let request = http::Request::post(harness.url("/chat/completions"))
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .header("content-type", "application/json")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("tracestate", "vendor=x1")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                chat_body(model, "hi").to_string(),
            )))
            .unwrap();
        assert_eq!(crate::support::send(request).await.status, 200, "{model}");
        let requests = harness.upstream.requests();
        assert_eq!(requests.len(), before + 1);
        let sent = &requests[before];
        assert!(sent.path.contains(path), "{}", sent.path);
        let summary = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            loop {
                if let Some(summary) = summaries.lock().unwrap().pop() {
                    return summary;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap();
        let attempt = &summary.attempt_records[0];
        let span_id: String = attempt
            .span_id
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            sent.header("traceparent"),
            Some(format!("00-0af7651916cd43dd8448eb211c80319c-{span_id}-01").as_str()),
            "{model}"
        );
        assert_eq!(sent.header("tracestate"), Some("vendor=x1"));
        let server = attempt.server.as_ref().unwrap();
        assert_eq!(server.port, harness.upstream.addr().port());
    }
}

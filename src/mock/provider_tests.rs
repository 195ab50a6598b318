//! Tests of the Anthropic and Gemini APIs of the mock, over TCP (raw HTTP with hyper).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{MockUpstream, ScriptedResponse};

const KEY: &str = "sk-mock-upstream";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as received, one entry per data frame.
    frames: Vec<Bytes>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8(self.frames.concat()).expect("utf-8 body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.frames.concat()).expect("json body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends `POST path` with these headers and body.
async fn send(mock: &MockUpstream, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", mock.origin()))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = Full::new(Bytes::copy_from_slice(body.as_bytes()));
    let response = client
        .request(request.body(body).unwrap())
        .await
        .expect("request");
    let (parts, mut body) = response.into_parts();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            frames.push(data);
        }
    }
    Answer {
        status: parts.status,
        headers: parts.headers,
        frames,
    }
}

// ------------------------------------------------------------- anthropic

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

async fn claude(mock: &MockUpstream, body: &Value) -> Answer {
    send(
        mock,
        "/v1/messages",
        &[("x-api-key", KEY), VERSION],
        &body.to_string(),
    )
    .await
}

/// A valid request with `messages` and `max_tokens: 256`.
fn claude_request(messages: Value) -> Value {
    json!({"model": "claude-x", "max_tokens": 256, "messages": messages})
}

fn weather_tools() -> Value {
    json!([
        {"name": "get_weather", "description": "Weather", "input_schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["c", "f"]}
            },
            "required": ["city"]
        }},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}}
    ])
}

/// The events of an Anthropic stream: `(event name, data)`, one per frame.
fn claude_events(answer: &Answer) -> Vec<(String, Value)> {
    answer
        .frames
        .iter()
        .map(|frame| {
            let frame = std::str::from_utf8(frame).unwrap();
            let frame = frame.strip_suffix("\n\n").expect("one event per frame");
            let (event, data) = frame.split_once('\n').unwrap();
            let name = event.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str(), "the data type names the event");
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn anthropic_credentials_and_version() {
    let mock = MockUpstream::builder().api_key("k").start().await.unwrap();
    let body = claude_request(json!([{"role": "user", "content": "hi"}])).to_string();
    let unauthorized = json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}});
    for headers in [
        &[("x-api-key", "wrong"), VERSION][..],
        &[VERSION][..],
        &[("authorization", "Bearer k"), VERSION][..],
    ] {
        let answer = send(&mock, "/v1/messages", headers, &body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        let mut json = answer.json();
        assert!(json["request_id"].as_str().unwrap().starts_with("req_"));
        json.as_object_mut().unwrap().remove("request_id");
        assert_eq!(json, unauthorized);
    }
    let answer = send(&mock, "/v1/messages", &[("x-api-key", "k")], &body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    assert_eq!(
        answer.json()["error"]["message"],
        "anthropic-version: header is required"
    );
    let answer = send(&mock, "/v1/messages", &[("x-api-key", "k"), VERSION], &body).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(mock.request_count_for("claude-x"), 5);

    // no_auth: any key, but the version is still required.
    let open = MockUpstream::builder().no_auth().start().await.unwrap();
    assert_eq!(
        send(&open, "/v1/messages", &[VERSION], &body).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&open, "/v1/messages", &[], &body).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn anthropic_validation() {
    let mock = MockUpstream::start().await.unwrap();
    let user = |content: Value| json!({"role": "user", "content": content});
    let with = |mut base: Value, key: &str, value: Value| {
        base[key] = value;
        base
    };
    let hi = json!([{"role": "user", "content": "hi"}]);
    let tool_turns = |result_id: &str| {
        json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": result_id, "content": "sunny"}]}
        ])
    };
    let png = |media_type: &str, data: &str| json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}]}]);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"max_tokens": 5, "messages": hi}),
            "model: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 5}),
            "messages: Field required",
        ),
        (
            json!({"model": "m", "messages": hi}),
            "max_tokens: Field required",
        ),
        (
            with(claude_request(hi.clone()), "max_tokens", json!(0)),
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            with(claude_request(hi.clone()), "max_tokens", json!("ten")),
            "max_tokens: Input should be a valid integer",
        ),
        (
            with(claude_request(hi.clone()), "n", json!(2)),
            "n: Extra inputs are not permitted",
        ),
        (
            with(
                claude_request(hi.clone()),
                "output_format",
                json!({"type": "json_schema", "schema": {}}),
            ),
            "output_format: Extra inputs are not permitted",
        ),
        (
            claude_request(json!([])),
            "messages: at least one message is required",
        ),
        (
            claude_request(json!([{"role": "system", "content": "x"}])),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            claude_request(json!([{"role": "user", "content": "x", "name": "bob"}])),
            "messages.0.name: Extra inputs are not permitted",
        ),
        (
            claude_request(json!([{"role": "assistant", "content": "x"}, user(json!("y"))])),
            "messages: first message must use the \"user\" role",
        ),
        (
            claude_request(json!([user(json!(""))])),
            "messages: all messages must have non-empty content except for the optional final assistant message",
        ),
        (
            claude_request(json!([user(json!([{"type": "text", "text": ""}]))])),
            "messages: text content blocks must be non-empty",
        ),
        (
            claude_request(json!([user(json!([{"type": "text", "text": " \n"}]))])),
            "messages: text content blocks must contain non-whitespace text",
        ),
        (
            claude_request(json!([user(
                json!([{"type": "image_url", "image_url": {}}])
            )])),
            "messages.0.content.0: Input tag 'image_url' found using 'type'",
        ),
        (
            claude_request(json!([user(json!([{"text": "no type"}]))])),
            "messages.0.content.0: Unable to extract tag",
        ),
        (
            claude_request(png("image/bmp", "AAAA")),
            "messages.0.content.0.source.base64.media_type: Input should be",
        ),
        (
            claude_request(png("image/png", "data:image/png;base64,AAAA")),
            "messages.0.content.0.source.base64.data: The data is not valid base64.",
        ),
        (
            claude_request(json!([user(
                json!([{"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}])
            )])),
            "media_type: Input should be 'application/pdf'",
        ),
        (
            claude_request(tool_turns("toolu_other")),
            "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_other.",
        ),
        (
            claude_request(json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": "and?"}
            ])),
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1.",
        ),
        (
            claude_request(json!([user(
                json!([{"type": "tool_use", "id": "t", "name": "x", "input": {}}])
            )])),
            "`tool_use` blocks can only be in `assistant` messages",
        ),
        (
            with(claude_request(hi.clone()), "system", json!(7)),
            "system: Input should be a valid string",
        ),
        (
            with(
                claude_request(hi.clone()),
                "system",
                json!([{"type": "text", "text": ""}]),
            ),
            "system: text content blocks must be non-empty",
        ),
        (
            with(
                with(claude_request(hi.clone()), "tools", weather_tools()),
                "tool_choice",
                json!({"type": "required"}),
            ),
            "tool_choice: Input tag 'required' found using 'type'",
        ),
        (
            with(
                with(claude_request(hi.clone()), "tools", weather_tools()),
                "tool_choice",
                json!({"type": "tool"}),
            ),
            "tool_choice.tool.name: Field required",
        ),
        (
            with(
                with(claude_request(hi.clone()), "tools", weather_tools()),
                "tool_choice",
                json!({"type": "tool", "name": "nope"}),
            ),
            "Tool 'nope' not found",
        ),
        (
            with(
                claude_request(hi.clone()),
                "tool_choice",
                json!({"type": "any"}),
            ),
            "tool_choice may only be specified while providing tools",
        ),
        (
            with(claude_request(hi.clone()), "tools", json!([{"name": "x"}])),
            "tools.0.custom.input_schema: Field required",
        ),
        (
            with(
                claude_request(hi.clone()),
                "tools",
                json!([{"name": "a b", "input_schema": {"type": "object"}}]),
            ),
            "tools.0.custom.name: String should match pattern",
        ),
        (
            with(claude_request(hi.clone()), "temperature", json!(1.5)),
            "temperature: Input should be less than or equal to 1",
        ),
        (
            with(claude_request(hi.clone()), "top_p", json!(-0.1)),
            "top_p: Input should be greater than or equal to 0",
        ),
        (
            with(
                claude_request(hi.clone()),
                "thinking",
                json!({"type": "enabled", "budget_tokens": 1024}),
            ),
            "`max_tokens` must be greater than `thinking.budget_tokens`",
        ),
        (
            with(
                claude_request(hi.clone()),
                "thinking",
                json!({"type": "enabled", "budget_tokens": 100}),
            ),
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
        ),
        (
            with(claude_request(hi.clone()), "metadata", json!({"user": "x"})),
            "metadata.user: Extra inputs are not permitted",
        ),
        (
            with(
                claude_request(hi.clone()),
                "messages",
                json!([user(
                    json!([{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}])
                )]),
            ),
            "cache_control.type: Input should be 'ephemeral'",
        ),
    ];
    for (body, expected) in &cases {
        let answer = claude(&mock, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let json = answer.json();
        assert_eq!(json["type"], "error");
        assert_eq!(json["error"]["type"], "invalid_request_error");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let broken = send(&mock, "/v1/messages", &[("x-api-key", KEY), VERSION], "{").await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert_eq!(broken.json()["error"]["type"], "invalid_request_error");

    // Accepted shapes.
    let valid = [
        claude_request(tool_turns("toolu_1")),
        claude_request(png("image/png", "iVBORw0KGgo=")),
        claude_request(json!([user(json!([
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}, "title": "a.pdf"},
            {"type": "text", "text": "describe", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ]))])),
        with(
            claude_request(json!([user(json!("hi")), {"role": "assistant", "content": "Sure,"}])),
            "system",
            json!([{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]),
        ),
        json!({"model": "m", "max_tokens": 2048, "messages": hi, "temperature": 1, "top_p": 0.5, "top_k": 3,
               "stop_sequences": ["END"], "metadata": {"user_id": "u"}, "stream": false,
               "thinking": {"type": "enabled", "budget_tokens": 1024},
               "tools": [{"type": "web_search_20250305", "name": "web_search"}],
               "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
    ];
    for body in &valid {
        let answer = claude(&mock, body).await;
        assert_eq!(answer.status, StatusCode::OK, "{body}: {}", answer.text());
    }
    // `output_format` with the structured outputs beta header.
    let beta = with(
        claude_request(hi),
        "output_format",
        json!({"type": "json_schema", "schema": {"type": "object"}}),
    );
    let answer = send(
        &mock,
        "/v1/messages",
        &[
            ("x-api-key", KEY),
            VERSION,
            ("anthropic-beta", "structured-outputs-2025-11-13"),
        ],
        &beta.to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn anthropic_text_answer() {
    let mock = MockUpstream::start().await.unwrap();
    let request = claude_request(json!([
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}]}
    ]));
    let answer = claude(&mock, &request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/json");
    let body = answer.json();
    assert_eq!(body["id"], "msg_mock_1");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-x");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "mock reply to: hello there"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["stop_sequence"].is_null());
    let usage = &body["usage"];
    assert_eq!(usage["output_tokens"], 5);
    assert_eq!(usage["input_tokens"], request.to_string().len() as u64 / 4);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert_eq!(mock.requests_for("claude-x").len(), 1);
    assert_eq!(mock.last_request().unwrap().header("x-api-key"), Some(KEY));

    // cache_control anywhere: three quarters of the prompt read from the cache.
    let mut cached = request.clone();
    cached["system"] =
        json!([{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}]);
    let usage = claude(&mock, &cached).await.json()["usage"].clone();
    let prompt = cached.to_string().len() as u64 / 4;
    assert_eq!(usage["cache_read_input_tokens"], prompt * 3 / 4);
    assert_eq!(usage["input_tokens"], prompt - prompt * 3 / 4);
    assert_eq!(usage["cache_creation_input_tokens"], 0);

    // max_tokens cuts the text.
    let mut short = request.clone();
    short["max_tokens"] = json!(2);
    let body = claude(&mock, &short).await.json();
    assert_eq!(body["content"][0]["text"], "mock reply");
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 2);

    // A stop sequence cuts before it.
    let mut stopped = request.clone();
    stopped["stop_sequences"] = json!(["zzz", " there"]);
    let body = claude(&mock, &stopped).await.json();
    assert_eq!(body["content"][0]["text"], "mock reply to: hello");
    assert_eq!(body["stop_reason"], "stop_sequence");
    assert_eq!(body["stop_sequence"], " there");

    // Structured output: a JSON object built from the schema.
    let mut structured = request;
    structured["output_config"] = json!({"format": {"type": "json_schema", "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}, "ok": {"type": ["boolean", "null"]}},
        "required": ["name"], "additionalProperties": false
    }}});
    let body = claude(&mock, &structured).await.json();
    let text = body["content"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        parsed,
        json!({"name": "mock-name", "age": 1, "tags": ["mock-tags"], "ok": true})
    );
    assert_eq!(body["stop_reason"], "end_turn");
}

#[tokio::test]
async fn anthropic_tool_answers() {
    let mock = MockUpstream::start().await.unwrap();
    let ask = |text: &str, choice: Option<Value>| {
        let mut request = claude_request(json!([{"role": "user", "content": text}]));
        request["tools"] = weather_tools();
        if let Some(choice) = choice {
            request["tool_choice"] = choice;
        }
        request
    };
    let input = json!({"city": "mock-city", "days": 1, "metric": true, "unit": "c"});

    // auto: a short text, then the first tool.
    let body = claude(&mock, &ask("weather?", None)).await.json();
    assert_eq!(body["stop_reason"], "tool_use");
    let content = body["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "I'll use get_weather."})
    );
    assert_eq!(content[1]["type"], "tool_use");
    assert_eq!(content[1]["id"], "toolu_mock_1_0");
    assert_eq!(content[1]["name"], "get_weather");
    assert_eq!(content[1]["input"], input);

    // parallel: the next tool too.
    let body = claude(&mock, &ask("two in parallel please", None))
        .await
        .json();
    let names: Vec<&str> = body["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(body["content"][2]["input"], json!({"zone": "mock-zone"}));
    assert_eq!(body["content"][2]["id"], "toolu_mock_2_1");

    // ... unless parallel tool use is disabled.
    let body = claude(
        &mock,
        &ask(
            "parallel",
            Some(json!({"type": "auto", "disable_parallel_tool_use": true})),
        ),
    )
    .await
    .json();
    assert_eq!(body["content"].as_array().unwrap().len(), 2);

    // any / tool: no text, the named tool.
    let body = claude(
        &mock,
        &ask("hi", Some(json!({"type": "tool", "name": "get_time"}))),
    )
    .await
    .json();
    assert_eq!(
        body["content"],
        json!([{"type": "tool_use", "id": "toolu_mock_4_0", "name": "get_time", "input": {"zone": "mock-zone"}}])
    );
    let body = claude(&mock, &ask("hi", Some(json!({"type": "any"}))))
        .await
        .json();
    assert_eq!(body["content"][0]["name"], "get_weather");

    // none: text.
    let body = claude(&mock, &ask("hi", Some(json!({"type": "none"}))))
        .await
        .json();
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "mock reply to: hi"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");

    // After the tool result: text that mentions it.
    let mut answered = claude_request(json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": [{"type": "text", "text": "noon"}]}
        ]}
    ]));
    answered["tools"] = weather_tools();
    let body = claude(&mock, &answered).await.json();
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "mock reply to tool result: sunny | noon"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    // A forced tool still calls.
    answered["tool_choice"] = json!({"type": "any"});
    assert_eq!(
        claude(&mock, &answered).await.json()["stop_reason"],
        "tool_use"
    );

    // Thinking: a thinking block first.
    let mut thinking = ask("hi", None);
    thinking["max_tokens"] = json!(4096);
    thinking["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
    let body = claude(&mock, &thinking).await.json();
    assert_eq!(body["content"][0]["type"], "thinking");
    assert_eq!(body["content"][0]["thinking"], "mock thinking about: hi");
    assert!(
        body["content"][0]["signature"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(body["content"][2]["type"], "tool_use");
}

#[tokio::test]
async fn anthropic_streams() {
    let mock = MockUpstream::start().await.unwrap();
    let mut request = claude_request(json!([{"role": "user", "content": "hello world"}]));
    let plain = claude(&mock, &request).await.json();
    request["stream"] = json!(true);
    let answer = claude(&mock, &request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .header("content-type")
            .starts_with("text/event-stream")
    );
    let events = claude_events(&answer);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let words = 5; // "mock reply to: hello world"
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", words));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let start = &events[0].1["message"];
    assert_eq!(start["id"], "msg_mock_2");
    assert_eq!(start["model"], "claude-x");
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null());
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| {
            assert_eq!(data["delta"]["type"], "text_delta");
            data["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap());
    let delta = &events[events.len() - 2].1;
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(delta["usage"]["output_tokens"], words);

    // Tools: the text block, then the tool input in pieces cut through the JSON.
    request["tools"] = weather_tools();
    request["messages"] = json!([{"role": "user", "content": "weather in parallel"}]);
    let events = claude_events(&claude(&mock, &request).await);
    let tool_starts: Vec<&Value> = events
        .iter()
        .filter(|(name, data)| {
            name == "content_block_start" && data["content_block"]["type"] == "tool_use"
        })
        .map(|(_, data)| data)
        .collect();
    assert_eq!(tool_starts.len(), 2);
    assert_eq!(tool_starts[0]["index"], 1);
    assert_eq!(tool_starts[0]["content_block"]["input"], json!({}));
    assert_eq!(tool_starts[1]["index"], 2);
    let pieces: Vec<&str> = events
        .iter()
        .filter(|(_, data)| data["index"] == 1 && data["delta"]["type"] == "input_json_delta")
        .map(|(_, data)| data["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(pieces[0], "", "an empty piece first");
    assert!(pieces.len() > 3);
    assert!(
        pieces[1..]
            .iter()
            .any(|p| serde_json::from_str::<Value>(p).is_err()),
        "pieces are cut mid-JSON"
    );
    let input: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(
        input,
        json!({"city": "mock-city", "days": 1, "metric": true, "unit": "c"})
    );
    let stops = events
        .iter()
        .filter(|(name, _)| name == "content_block_stop")
        .count();
    assert_eq!(stops, 3);
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );

    // Thinking: thinking deltas, then the signature.
    request["max_tokens"] = json!(4096);
    request["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let events = claude_events(&claude(&mock, &request).await);
    assert_eq!(events[1].1["content_block"]["type"], "thinking");
    assert_eq!(events[3].1["delta"]["type"], "thinking_delta");
    assert!(
        events
            .iter()
            .any(|(_, data)| data["delta"]["type"] == "signature_delta")
    );
}

#[tokio::test]
async fn anthropic_scripts() {
    let mock = MockUpstream::start().await.unwrap();
    let request = claude_request(json!([{"role": "user", "content": "hi"}]));
    mock.script_for(
        "claude-x",
        ScriptedResponse::anthropic_error(529, "overloaded_error", "Overloaded"),
    );
    mock.script_for(
        "claude-x",
        ScriptedResponse::stream([
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ]),
    );
    let answer = claude(&mock, &request).await;
    assert_eq!(answer.status.as_u16(), 529);
    assert_eq!(
        answer.json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    let answer = claude(&mock, &request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.frames.len(), 2);
    assert!(answer.text().contains("event: error"));
    assert_eq!(claude(&mock, &request).await.status, StatusCode::OK);
    assert_eq!(mock.request_count_for("claude-x"), 3);
}

// ---------------------------------------------------------------- gemini

async fn gemini(mock: &MockUpstream, call: &str, body: &Value) -> Answer {
    send(
        mock,
        &format!("/v1beta/models/{call}"),
        &[("x-goog-api-key", KEY)],
        &body.to_string(),
    )
    .await
}

fn gemini_request(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

fn gemini_tools() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather", "parameters": {
            "type": "OBJECT",
            "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}, "metric": {"type": "BOOLEAN"}},
            "required": ["city"]
        }},
        {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {"zone": {"type": "string"}}, "additionalProperties": false}}
    ]}])
}

/// The chunks of an `alt=sse` stream, one per frame.
fn gemini_chunks(answer: &Answer) -> Vec<Value> {
    answer
        .frames
        .iter()
        .map(|frame| {
            let frame = std::str::from_utf8(frame).unwrap();
            let data = frame
                .strip_prefix("data: ")
                .and_then(|f| f.strip_suffix("\r\n\r\n"))
                .expect("one `data:` event per frame, ended by CRLF CRLF");
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

fn google_error(answer: &Answer) -> (u64, String, String) {
    let json = answer.json();
    (
        json["error"]["code"].as_u64().unwrap(),
        json["error"]["message"].as_str().unwrap().to_owned(),
        json["error"]["status"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn gemini_credentials() {
    let mock = MockUpstream::builder().api_key("k").start().await.unwrap();
    let body = gemini_request("hi").to_string();
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let answer = send(&mock, path, &[("x-goog-api-key", "wrong")], &body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let json = answer.json();
    assert_eq!(json["error"]["code"], 400);
    assert_eq!(
        json["error"]["message"],
        "API key not valid. Please pass a valid API key."
    );
    assert_eq!(json["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(
        json["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(json["error"]["details"][0]["reason"], "API_KEY_INVALID");
    assert_eq!(json["error"]["details"][0]["domain"], "googleapis.com");
    let answer = send(&mock, &format!("{path}?key=wrong"), &[], &body).await;
    assert_eq!(
        answer.json()["error"]["details"][0]["reason"],
        "API_KEY_INVALID"
    );
    for headers in [&[][..], &[("authorization", "Bearer k")][..]] {
        let answer = send(&mock, path, headers, &body).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(google_error(&answer).2, "PERMISSION_DENIED");
    }
    assert_eq!(
        send(&mock, path, &[("x-goog-api-key", "k")], &body)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&mock, &format!("{path}?key=k"), &[], &body)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(mock.request_count_for("gemini-2.5-flash"), 6);

    let open = MockUpstream::builder().no_auth().start().await.unwrap();
    assert_eq!(send(&open, path, &[], &body).await.status, StatusCode::OK);
}

#[tokio::test]
async fn gemini_validation() {
    let mock = MockUpstream::start().await.unwrap();
    let with = |mut base: Value, key: &str, value: Value| {
        base[key] = value;
        base
    };
    let contents = |contents: Value| json!({ "contents": contents });
    let call_turns = json!([
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}]}
    ]);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({}),
            "* GenerateContentRequest.contents: contents is not specified",
        ),
        (
            contents(json!([])),
            "* GenerateContentRequest.contents: contents is not specified",
        ),
        (
            with(gemini_request("hi"), "messages", json!([])),
            "Invalid JSON payload received. Unknown name \"messages\": Cannot find field.",
        ),
        (
            with(
                gemini_request("hi"),
                "generationConfig",
                json!({"max_tokens": 5}),
            ),
            "Unknown name \"max_tokens\" at 'generation_config': Cannot find field.",
        ),
        (
            with(
                gemini_request("hi"),
                "generationConfig",
                json!({"thinkingConfig": {"budget": 5}}),
            ),
            "Unknown name \"budget\" at 'generation_config.thinking_config'",
        ),
        (
            contents(json!([{"role": "assistant", "parts": [{"text": "x"}]}])),
            "Please use a valid role: user, model.",
        ),
        (
            contents(json!([{"role": "user", "parts": []}])),
            "contents[0].parts: contents.parts must not be empty.",
        ),
        (
            contents(json!([{"role": "user", "content": "x"}])),
            "Unknown name \"content\" at 'contents[0]'",
        ),
        (
            contents(json!([{"role": "user", "parts": [{"text": ""}]}])),
            "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must have one initialized field",
        ),
        (
            contents(json!([{"role": "user", "parts": [{"image_url": "x"}]}])),
            "Unknown name \"image_url\" at 'contents[0].parts[0]'",
        ),
        (
            contents(
                json!([{"role": "user", "parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}]),
            ),
            "oneof field 'data' is already set",
        ),
        (
            contents(
                json!([{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}]}]),
            ),
            "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 decoding failed",
        ),
        (
            contents(json!([{"role": "user", "parts": [{"fileData": {"mimeType": "image/png"}}]}])),
            "file_uri must not be empty",
        ),
        (
            contents(
                json!([{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]),
            ),
            "Please ensure that function response turn comes immediately after a function call turn.",
        ),
        (
            contents(json!([
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "a"}}, {"functionCall": {"name": "b"}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]}
            ])),
            "the number of function response parts is equal to the number of function call parts",
        ),
        (
            contents(json!([
                {"role": "user", "parts": [{"text": "a"}]},
                {"role": "model", "parts": [{"text": "b"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f"}}]}
            ])),
            "Please ensure that function call turn comes immediately after a user turn or after a function response turn.",
        ),
        (
            with(
                gemini_request("hi"),
                "generationConfig",
                json!({"candidateCount": 9}),
            ),
            "candidate_count must be in the range [1, 8]",
        ),
        (
            with(
                gemini_request("hi"),
                "generationConfig",
                json!({"temperature": 2.5}),
            ),
            "temperature must be in the range [0.0, 2.0]",
        ),
        (
            with(
                gemini_request("hi"),
                "generationConfig",
                json!({"responseMimeType": "text/html"}),
            ),
            "allowed mimetypes are",
        ),
        (
            with(
                gemini_request("hi"),
                "generationConfig",
                json!({"responseSchema": {"type": "OBJECT"}}),
            ),
            "When response_schema is set, response_mime_type must be one of",
        ),
        (
            with(
                gemini_request("hi"),
                "generationConfig",
                json!({"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "additionalProperties": false}}),
            ),
            "Unknown name \"additionalProperties\" at 'generation_config.response_schema'",
        ),
        (
            with(
                gemini_request("hi"),
                "tools",
                json!([{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {"a": {"type": "STRING", "$schema": "x"}}}}]}]),
            ),
            "Unknown name \"$schema\" at 'tools[0].function_declarations[0].parameters.properties[a].value'",
        ),
        (
            with(
                gemini_request("hi"),
                "tools",
                json!([{"functionDeclarations": [{"name": "1bad name"}]}]),
            ),
            "Invalid function name.",
        ),
        (
            with(
                gemini_request("hi"),
                "tools",
                json!([{"function_declarations": [], "retrieval": {}}]),
            ),
            "Unknown name \"retrieval\" at 'tools[0]'",
        ),
        (
            with(
                gemini_request("hi"),
                "toolConfig",
                json!({"functionCallingConfig": {"mode": "REQUIRED"}}),
            ),
            "Invalid value at 'tool_config.function_calling_config.mode'",
        ),
        (
            with(
                gemini_request("hi"),
                "toolConfig",
                json!({"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}}),
            ),
            "allowed_function_names may only be set when mode is ANY",
        ),
    ];
    for (body, expected) in &cases {
        let answer = gemini(&mock, "gemini-2.5-flash:generateContent", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let (code, message, status) = google_error(&answer);
        assert_eq!((code, status.as_str()), (400, "INVALID_ARGUMENT"));
        assert!(message.contains(expected), "{body}: {message}");
    }
    // Unknown fields name themselves as a field violation.
    let answer = gemini(
        &mock,
        "m:generateContent",
        &with(gemini_request("hi"), "foo", json!(1)),
    )
    .await;
    assert_eq!(
        answer.json()["error"]["details"][0]["fieldViolations"][0]["field"],
        "foo"
    );
    let broken = send(
        &mock,
        "/v1beta/models/m:generateContent",
        &[("x-goog-api-key", KEY)],
        "{",
    )
    .await;
    assert_eq!(google_error(&broken).0, 400);

    let valid = [
        contents(call_turns),
        // snake_case is accepted, as Google's parser does.
        json!({"contents": [{"parts": [{"text": "hi"}, {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}}]}],
               "system_instruction": {"parts": [{"text": "be brief"}]},
               "generation_config": {"max_output_tokens": 50, "top_p": 0.5, "stop_sequences": ["x"], "thinking_config": {"thinking_budget": 0}},
               "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]}),
        json!({"contents": [{"role": "user", "parts": [{"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/a.pdf"}}]}],
               "tools": gemini_tools(), "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
               "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object", "additionalProperties": false}}}),
    ];
    for body in &valid {
        let answer = gemini(&mock, "gemini-2.5-flash:generateContent", body).await;
        assert_eq!(answer.status, StatusCode::OK, "{body}: {}", answer.text());
    }
    // An unknown method is Google's 404.
    let answer = gemini(&mock, "gemini-2.5-flash:predict", &gemini_request("hi")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(google_error(&answer).2, "NOT_FOUND");
}

#[tokio::test]
async fn gemini_text_answer() {
    let mock = MockUpstream::start().await.unwrap();
    let request = json!({"contents": [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "ok"}]},
        {"role": "user", "parts": [{"text": "hello"}, {"text": "there"}]}
    ]});
    let answer = gemini(&mock, "gemini-2.5-flash:generateContent", &request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .header("content-type")
            .starts_with("application/json")
    );
    let body = answer.json();
    assert_eq!(
        body["candidates"],
        json!([{"content": {"parts": [{"text": "mock reply to: hello there"}], "role": "model"}, "finishReason": "STOP", "index": 0}])
    );
    let usage = &body["usageMetadata"];
    let prompt = request.to_string().len() as u64 / 4;
    assert_eq!(usage["promptTokenCount"], prompt);
    assert_eq!(usage["candidatesTokenCount"], 5);
    assert_eq!(usage["totalTokenCount"], prompt + 5);
    assert!(usage.get("cachedContentTokenCount").is_none());
    assert!(usage.get("thoughtsTokenCount").is_none());
    assert_eq!(body["modelVersion"], "gemini-2.5-flash");
    assert_eq!(body["responseId"], "mock-response-1");
    // The model comes from the path.
    assert_eq!(mock.requests_for("gemini-2.5-flash").len(), 1);
    assert_eq!(mock.request_count_for("gemini-2.5-flash"), 1);

    // Several candidates.
    let mut two = request.clone();
    two["generationConfig"] = json!({"candidateCount": 2});
    let body = gemini(&mock, "gemini-2.5-flash:generateContent", &two)
        .await
        .json();
    assert_eq!(body["candidates"][1]["index"], 1);
    assert_eq!(
        body["candidates"][1]["content"]["parts"][0]["text"],
        "mock reply to: hello there (candidate 1)"
    );
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 12);

    // maxOutputTokens and stop sequences.
    let mut short = request.clone();
    short["generationConfig"] = json!({"maxOutputTokens": 2});
    let body = gemini(&mock, "m:generateContent", &short).await.json();
    assert_eq!(
        body["candidates"][0]["content"]["parts"][0]["text"],
        "mock reply"
    );
    assert_eq!(body["candidates"][0]["finishReason"], "MAX_TOKENS");
    let mut stopped = request.clone();
    stopped["generationConfig"] = json!({"stopSequences": [" there"]});
    let body = gemini(&mock, "m:generateContent", &stopped).await.json();
    assert_eq!(
        body["candidates"][0]["content"]["parts"][0]["text"],
        "mock reply to: hello"
    );
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");

    // JSON: built from the schema (OpenAPI or JSON Schema), or {"reply": …}.
    let mut structured = request.clone();
    structured["generationConfig"] = json!({"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"name": {"type": "STRING"}, "score": {"type": "NUMBER"}, "kind": {"type": "STRING", "enum": ["a", "b"]}}
    }});
    let body = gemini(&mock, "m:generateContent", &structured).await.json();
    let text = body["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"name": "mock-name", "score": 1, "kind": "a"})
    );
    structured["generationConfig"] = json!({"responseMimeType": "application/json"});
    let body = gemini(&mock, "m:generateContent", &structured).await.json();
    let text = body["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"reply": "mock reply to: hello there"})
    );

    // Cached tokens: with a cachedContent, or a long prompt (implicit caching).
    let mut cached = request.clone();
    cached["cachedContent"] = json!("cachedContents/abc");
    let usage = gemini(&mock, "m:generateContent", &cached).await.json()["usageMetadata"].clone();
    let prompt = cached.to_string().len() as u64 / 4;
    assert_eq!(usage["promptTokenCount"], prompt);
    assert_eq!(usage["cachedContentTokenCount"], prompt * 3 / 4);
    let long = gemini_request(&"word ".repeat(1000));
    let usage = gemini(&mock, "m:generateContent", &long).await.json()["usageMetadata"].clone();
    assert!(usage["cachedContentTokenCount"].as_u64().unwrap() > 0);

    // Thinking: a thought part, and its tokens counted apart.
    let mut thinking = request;
    thinking["generationConfig"] =
        json!({"thinkingConfig": {"includeThoughts": true, "thinkingBudget": 1024}});
    let body = gemini(&mock, "m:generateContent", &thinking).await.json();
    let parts = &body["candidates"][0]["content"]["parts"];
    assert_eq!(
        parts[0],
        json!({"text": "mock thinking about: hello there", "thought": true})
    );
    assert_eq!(parts[1]["text"], "mock reply to: hello there");
    let usage = &body["usageMetadata"];
    let thoughts = usage["thoughtsTokenCount"].as_u64().unwrap();
    assert_eq!(thoughts, 5);
    assert_eq!(
        usage["totalTokenCount"].as_u64().unwrap(),
        usage["promptTokenCount"].as_u64().unwrap() + 5 + thoughts
    );
}

#[tokio::test]
async fn gemini_function_calls() {
    let mock = MockUpstream::start().await.unwrap();
    let ask = |text: &str, config: Option<Value>| {
        let mut request = gemini_request(text);
        request["tools"] = gemini_tools();
        if let Some(config) = config {
            request["toolConfig"] = json!({ "functionCallingConfig": config });
        }
        request
    };
    let body = gemini(&mock, "m:generateContent", &ask("weather?", None))
        .await
        .json();
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(
        candidate["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {"city": "mock-city", "days": 1, "metric": true}}}])
    );
    let body = gemini(&mock, "m:generateContent", &ask("both in parallel", None))
        .await
        .json();
    assert_eq!(
        body["candidates"][0]["content"]["parts"][1],
        json!({"functionCall": {"name": "get_time", "args": {"zone": "mock-zone"}}})
    );
    let body = gemini(
        &mock,
        "m:generateContent",
        &ask(
            "hi",
            Some(json!({"mode": "ANY", "allowedFunctionNames": ["get_time"]})),
        ),
    )
    .await
    .json();
    assert_eq!(
        body["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_time"
    );
    let body = gemini(
        &mock,
        "m:generateContent",
        &ask("hi", Some(json!({"mode": "NONE"}))),
    )
    .await
    .json();
    assert_eq!(
        body["candidates"][0]["content"]["parts"],
        json!([{"text": "mock reply to: hi"}])
    );

    // After the function response: text that mentions it (AUTO), a call again (ANY).
    let mut answered = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 20}}}]}
    ], "tools": gemini_tools()});
    let body = gemini(&mock, "m:generateContent", &answered).await.json();
    assert_eq!(
        body["candidates"][0]["content"]["parts"],
        json!([{"text": "mock reply to function result: get_weather: {\"temp\":20}"}])
    );
    answered["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
    let body = gemini(&mock, "m:generateContent", &answered).await.json();
    assert!(
        body["candidates"][0]["content"]["parts"][0]
            .get("functionCall")
            .is_some()
    );

    // With thinking, the first call carries a thought signature; a tiny maxOutputTokens
    // leaves the candidate without parts.
    let mut thinking = ask("parallel", None);
    thinking["generationConfig"] = json!({"thinkingConfig": {"thinkingBudget": -1}});
    let body = gemini(&mock, "m:generateContent", &thinking).await.json();
    let parts = &body["candidates"][0]["content"]["parts"];
    assert!(parts[0]["thoughtSignature"].is_string());
    assert!(parts[1].get("thoughtSignature").is_none());
    assert!(
        body["usageMetadata"]["thoughtsTokenCount"]
            .as_u64()
            .unwrap()
            > 0
    );
    let mut tiny = ask("hi", None);
    tiny["generationConfig"] = json!({"maxOutputTokens": 1});
    let body = gemini(&mock, "m:generateContent", &tiny).await.json();
    assert_eq!(
        body["candidates"][0],
        json!({"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0})
    );
}

#[tokio::test]
async fn gemini_streams() {
    let mock = MockUpstream::start().await.unwrap();
    let request = gemini_request("tell me a longer story please");
    let whole = gemini(&mock, "gemini-2.5-flash:generateContent", &request)
        .await
        .json();
    let text = whole["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    let answer = gemini(
        &mock,
        "gemini-2.5-flash:streamGenerateContent?alt=sse",
        &request,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "text/event-stream");
    let chunks = gemini_chunks(&answer);
    assert_eq!(chunks.len(), 3, "three words a chunk");
    let streamed: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(streamed, text);
    for (k, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk["modelVersion"], "gemini-2.5-flash");
        assert_eq!(chunk["responseId"], "mock-response-2");
        let last = k + 1 == chunks.len();
        assert_eq!(chunk["candidates"][0].get("finishReason").is_some(), last);
        assert_eq!(
            chunk["usageMetadata"].get("candidatesTokenCount").is_some(),
            last
        );
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"], whole["usageMetadata"]);

    // Function calls come whole, in one chunk.
    let mut tools = gemini_request("parallel");
    tools["tools"] = gemini_tools();
    let chunks = gemini_chunks(&gemini(&mock, "m:streamGenerateContent?alt=sse", &tools).await);
    assert_eq!(chunks.len(), 1);
    let parts = chunks[0]["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["functionCall"]["args"]["city"], "mock-city");
    assert_eq!(chunks[0]["candidates"][0]["finishReason"], "STOP");

    // Thoughts stream first.
    let mut thinking = request.clone();
    thinking["generationConfig"] = json!({"thinkingConfig": {"includeThoughts": true}});
    let chunks = gemini_chunks(&gemini(&mock, "m:streamGenerateContent?alt=sse", &thinking).await);
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["thought"],
        true
    );

    // Without alt=sse: a JSON array, sent in several frames.
    let answer = gemini(&mock, "m:streamGenerateContent", &request).await;
    assert!(
        answer
            .header("content-type")
            .starts_with("application/json")
    );
    assert_eq!(answer.frames.len(), 3);
    let array = answer.json();
    assert_eq!(array.as_array().unwrap().len(), 3);
    assert_eq!(array[2]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn gemini_embeddings() {
    let mock = MockUpstream::start().await.unwrap();
    let content = |text: &str| json!({"parts": [{"text": text}]});
    let answer = gemini(
        &mock,
        "text-embedding-004:embedContent",
        &json!({"content": content("hello")}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let values: Vec<f64> =
        serde_json::from_value(answer.json()["embedding"]["values"].clone()).unwrap();
    assert_eq!(values.len(), 768);
    let norm: f64 = values.iter().map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-3);

    let body = json!({"content": content("hello"), "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 16});
    let one = gemini(&mock, "text-embedding-004:embedContent", &body)
        .await
        .json()["embedding"]["values"]
        .clone();
    assert_eq!(one.as_array().unwrap().len(), 16);
    // The same vector as the OpenAI embeddings mock gives the same text.
    let openai = send(
        &mock,
        "/v1/embeddings",
        &[("authorization", &format!("Bearer {KEY}"))],
        &json!({"model": "e", "input": "hello", "dimensions": 16}).to_string(),
    )
    .await
    .json();
    assert_eq!(openai["data"][0]["embedding"], one);

    let batch = json!({"requests": [
        {"model": "models/text-embedding-004", "content": content("hello"), "outputDimensionality": 16},
        {"model": "models/text-embedding-004", "content": content("world"), "outputDimensionality": 16}
    ]});
    let answer = gemini(&mock, "text-embedding-004:batchEmbedContents", &batch).await;
    assert_eq!(answer.status, StatusCode::OK);
    let embeddings = answer.json()["embeddings"].clone();
    assert_eq!(embeddings.as_array().unwrap().len(), 2);
    assert_eq!(embeddings[0]["values"], one);
    assert_ne!(embeddings[1]["values"], one);
    assert_eq!(mock.request_count_for("text-embedding-004"), 3);

    let refused = [
        (
            json!({"requests": [{"content": content("x")}]}),
            "model is required",
        ),
        (
            json!({"requests": [{"model": "models/other", "content": content("x")}]}),
            "must be the model of the batch",
        ),
        (json!({"requests": []}), "requests must not be empty"),
        (json!({"input": "x"}), "Unknown name \"input\""),
    ];
    for (body, expected) in &refused {
        let answer = gemini(&mock, "text-embedding-004:batchEmbedContents", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            google_error(&answer).1.contains(expected),
            "{body}: {}",
            answer.text()
        );
    }
    for (body, expected) in [
        (json!({}), "content is not specified"),
        (
            json!({"content": content("x"), "taskType": "SEARCH"}),
            "TaskType",
        ),
        (
            json!({"content": content("x"), "outputDimensionality": 0}),
            "output_dimensionality must be in the range",
        ),
        (
            json!({"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}}),
            "only non-empty text parts",
        ),
    ] {
        let answer = gemini(&mock, "text-embedding-004:embedContent", &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            google_error(&answer).1.contains(expected),
            "{body}: {}",
            answer.text()
        );
    }
}

#[tokio::test]
async fn gemini_scripts_match_the_path_model() {
    let mock = MockUpstream::start().await.unwrap();
    assert_eq!(format!("{}/v1", mock.origin()), mock.base_url());
    mock.script_for(
        "gemini-2.5-flash",
        ScriptedResponse::gemini_error(429, "Resource has been exhausted (e.g. check quota).")
            .header("retry-after", "7"),
    );
    let request = gemini_request("hi");
    // Another model is answered as usual; the scripted one gets the script once.
    let other = gemini(&mock, "gemini-2.5-pro:generateContent", &request).await;
    assert_eq!(other.status, StatusCode::OK);
    let answer = gemini(
        &mock,
        "gemini-2.5-flash:streamGenerateContent?alt=sse",
        &request,
    )
    .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.header("retry-after"), "7");
    assert_eq!(
        answer.json(),
        json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}})
    );
    assert_eq!(
        gemini(&mock, "gemini-2.5-flash:generateContent", &request)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(mock.request_count_for("gemini-2.5-flash"), 2);
    assert_eq!(mock.request_count_for("gemini-2.5-pro"), 1);
    // A percent-encoded model is decoded.
    mock.script_for(
        "my model",
        ScriptedResponse::gemini_error(503, "The model is overloaded."),
    );
    let answer = gemini(&mock, "my%20model:generateContent", &request).await;
    assert_eq!(
        google_error(&answer),
        (
            503,
            "The model is overloaded.".to_owned(),
            "UNAVAILABLE".to_owned()
        )
    );
}

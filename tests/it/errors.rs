//! Failures: the router's own refusals and upstream errors, in OpenAI's shape and status,
//! plus the header rules (request ids, credentials, hop-by-hop).

use std::time::{Duration, Instant};

use ai_router::mock::ScriptedResponse;
use ai_router::provider::HttpProvider;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use serde_json::json;

use crate::support::{
    Harness, MOUNT, PROVIDER_KEY, ROUTER_KEY, RawResponse, assert_forwarded,
    assert_openai_error_shape, assert_provider_key_only, closed_port, contains, raw_exchange, send,
    with_model,
};

const CHAT: &str = r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn chat_request(model: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

/// `POST <mount>/chat/completions` with `model` and the router key.
fn chat_body(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

// ------------------------------------------------------------------ upstream errors

#[tokio::test]
async fn upstream_openai_errors_pass_through_with_their_retry_headers() {
    let harness = Harness::start().await;
    let scripted = ScriptedResponse::openai_error(
        429,
        "Rate limit reached for gpt-4o-mini in organization org-x on requests per min.",
        "requests",
        Some("rate_limit_exceeded"),
    )
    .header("retry-after", "2")
    .header("retry-after-ms", "1500")
    .header("x-ratelimit-remaining-requests", "0")
    .header("x-request-id", "req_upstream_429");
    harness.upstream.script(scripted);
    let response = harness.post_json("/chat/completions", CHAT).await;
    let error = response.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(
        error["message"],
        "Rate limit reached for gpt-4o-mini in organization org-x on requests per min."
    );
    assert_eq!(error["type"], "requests");
    assert_eq!(response.header("retry-after"), Some("2"));
    assert_eq!(response.header("retry-after-ms"), Some("1500"));
    assert_eq!(response.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(
        response.header("x-upstream-request-id"),
        Some("req_upstream_429")
    );
    let id = response.header("x-request-id").unwrap();
    assert_ne!(id, "req_upstream_429");

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(CHAT.as_bytes(), "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
}

#[tokio::test]
async fn an_http_date_retry_after_is_passed_on_unchanged() {
    let harness = Harness::start().await;
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    harness.upstream.script(
        ScriptedResponse::openai_error(429, "slow down", "requests", Some("rate_limit_exceeded"))
            .header("retry-after", date),
    );
    let response = harness.post_json("/chat/completions", CHAT).await;
    response.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(response.header("retry-after"), Some(date));
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn openai_shaped_4xx_and_5xx_keep_status_and_body() {
    let harness = Harness::start().await;
    // A 400 through async-openai (4xx other than 429 is not retried by the SDK).
    harness
        .upstream
        .script(ScriptedResponse::new(400).json(json!({"error": {
            "message": "Invalid 'messages[0].content': string too long.",
            "type": "invalid_request_error",
            "param": "messages[0].content",
            "code": "string_above_max_length",
        }})));
    match harness
        .client()
        .chat()
        .create(chat_request("mock/gpt-4o-mini"))
        .await
    {
        Err(OpenAIError::ApiError(error)) => {
            assert_eq!(error.status_code, 400);
            let api = error.api_error;
            assert_eq!(
                api.message,
                "Invalid 'messages[0].content': string too long."
            );
            assert_eq!(api.r#type.as_deref(), Some("invalid_request_error"));
            assert_eq!(api.param.as_deref(), Some("messages[0].content"));
            assert_eq!(api.code.as_deref(), Some("string_above_max_length"));
        }
        other => panic!("expected the upstream's 400, got {other:?}"),
    }

    // An OpenAI-shaped 500 passes through byte for byte (raw: the SDK would retry it).
    let body = r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#;
    harness.upstream.script(
        ScriptedResponse::new(500)
            .header("content-type", "application/json")
            .body(body),
    );
    let response = harness.post_json("/chat/completions", CHAT).await;
    response.assert_error(500, None);
    assert_eq!(response.body, body);
    assert_eq!(harness.upstream.request_count(), 2);
}

#[tokio::test]
async fn partial_openai_errors_get_all_four_keys() {
    let harness = Harness::start().await;
    harness.upstream.script(
        ScriptedResponse::new(404).json(json!({"error": {"message": "No such deployment"}})),
    );
    let response = harness.post_json("/chat/completions", CHAT).await;
    let error = response.assert_error(404, None);
    assert_eq!(error["message"], "No such deployment");
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["param"].is_null());
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn upstream_401_is_a_502_without_the_upstream_message() {
    let harness = Harness::with_upstream(|builder, upstream| {
        builder.provider(
            "badkey",
            HttpProvider::builder(upstream.base_url())
                .api_key("sk-wrong-provider-key-1234")
                .build()
                .unwrap(),
        )
    })
    .await;
    let response = harness
        .post_json("/chat/completions", chat_body("badkey/gpt-4o-mini"))
        .await;
    let error = response.assert_error(502, Some("provider_auth_failed"));
    assert_eq!(error["type"], "server_error");
    let text = response.text();
    assert!(!text.contains("Incorrect API key"), "{text}");
    assert!(!text.contains("sk-"), "{text}");
    assert!(response.header("x-request-id").is_some());

    // The mock did refuse the wrong provider key (and never saw the router key).
    let seen = harness.only_upstream_request();
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-wrong-provider-key-1234")
    );
    assert!(
        !seen
            .headers
            .values()
            .any(|v| contains(v.as_bytes(), ROUTER_KEY.as_bytes()))
    );
}

#[tokio::test]
async fn scripted_upstream_401_quoting_the_key_is_hidden() {
    let harness = Harness::start().await;
    harness.upstream.script(ScriptedResponse::openai_error(
        401,
        "Incorrect API key provided: sk-mock-*******ream.",
        "invalid_request_error",
        Some("invalid_api_key"),
    ));
    let response = harness.post_json("/chat/completions", CHAT).await;
    let error = response.assert_error(502, Some("provider_auth_failed"));
    assert!(!error["message"].as_str().unwrap().contains("sk-mock"));
    assert!(!response.text().contains("Incorrect API key"));
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn a_refused_provider_key_tells_sdks_not_to_retry() {
    // A wrong provider key is permanent: the SDKs retry every 5xx unless told not to.
    let harness = Harness::start().await;
    harness.upstream.script(ScriptedResponse::openai_error(
        401,
        "Incorrect API key provided.",
        "invalid_request_error",
        Some("invalid_api_key"),
    ));
    let response = harness.post_json("/chat/completions", CHAT).await;
    response.assert_error(502, Some("provider_auth_failed"));
    assert_eq!(
        response.header("x-should-retry"),
        Some("false"),
        "a 502 provider_auth_failed must carry `x-should-retry: false`"
    );
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn a_non_openai_429_is_still_a_rate_limit_error() {
    let harness = Harness::start().await;
    harness.upstream.script(
        ScriptedResponse::new(429)
            .header("content-type", "text/html")
            .header("retry-after", "4")
            .body("<html><body>Too Many Requests (edge-7)</body></html>"),
    );
    let response = harness.post_json("/chat/completions", CHAT).await;
    // The wire table: a 429 is `rate_limit_exceeded`, whatever the upstream's body was.
    response.assert_error(429, Some("rate_limit_exceeded"));
    assert!(!response.text().contains("edge-7"));
    assert_eq!(response.header("retry-after"), Some("4"));
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn an_html_500_becomes_a_502_with_a_fixed_message() {
    let harness = Harness::start().await;
    harness.upstream.script(
        ScriptedResponse::new(500)
            .header("content-type", "text/html")
            .header("retry-after", "3")
            .header("retry-after-ms", "2500")
            .body("<html><body><h1>500</h1>Traceback at /srv/app/handler.py line 42</body></html>"),
    );
    let response = harness.post_json("/chat/completions", CHAT).await;
    let error = response.assert_error(502, Some("upstream_error"));
    assert_eq!(
        error["message"],
        "The upstream provider returned an error (HTTP 500)."
    );
    assert_eq!(error["type"], "server_error");
    let text = response.text();
    assert!(
        !text.contains("<html") && !text.contains("handler.py"),
        "{text}"
    );
    assert_eq!(response.header("retry-after"), Some("3"));
    assert_eq!(response.header("retry-after-ms"), Some("2500"));
    assert_eq!(response.header("x-ratelimit-limit-requests"), Some("10000"));
    assert_eq!(response.header("x-upstream-request-id"), Some("mock-req-1"));
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn a_plain_text_503_stays_a_503() {
    let harness = Harness::start().await;
    let date = "Fri, 31 Dec 1999 23:59:59 GMT";
    harness.upstream.script(
        ScriptedResponse::new(503)
            .header("content-type", "text/plain")
            .header("retry-after", date)
            .body("upstream overloaded, node eu-3"),
    );
    let response = harness
        .post_json("/embeddings", r#"{"model":"mock/e","input":"x"}"#)
        .await;
    let error = response.assert_error(503, Some("upstream_error"));
    assert_eq!(error["type"], "service_unavailable_error");
    assert!(!response.text().contains("overloaded"));
    assert_eq!(response.header("retry-after"), Some(date));
    assert_eq!(harness.only_upstream_request().path, "/v1/embeddings");
}

#[tokio::test]
async fn a_foreign_json_422_is_normalised() {
    let harness = Harness::start().await;
    harness.upstream.script(
        ScriptedResponse::new(422)
            .json(json!({"detail": [{"loc": ["body", "x"], "msg": "field required secret-x"}]})),
    );
    let response = harness.post_json("/chat/completions", CHAT).await;
    let error = response.assert_error(422, Some("upstream_error"));
    assert_eq!(error["type"], "invalid_request_error");
    assert!(!response.text().contains("secret-x"));
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn a_refused_upstream_is_a_502_unreachable() {
    let port = closed_port().await;
    let harness = Harness::with(|builder| {
        builder.provider(
            "dead",
            HttpProvider::builder(format!("http://127.0.0.1:{port}/v1"))
                .api_key("sk-dead")
                .build()
                .unwrap(),
        )
    })
    .await;
    let response = harness
        .post_json("/chat/completions", chat_body("dead/gpt-4o-mini"))
        .await;
    let error = response.assert_error(502, Some("upstream_unreachable"));
    assert_eq!(error["type"], "server_error");
    let text = response.text();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("refused"),
        "{text}"
    );
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let harness = Harness::with_upstream(|builder, upstream| {
        builder.provider(
            "slow",
            HttpProvider::builder(upstream.base_url())
                .api_key(PROVIDER_KEY)
                .timeout(Duration::from_millis(200))
                .build()
                .unwrap(),
        )
    })
    .await;
    harness
        .upstream
        .script(ScriptedResponse::new(200).delay(Duration::from_secs(2)));
    let started = Instant::now();
    let response = harness
        .post_json("/chat/completions", chat_body("slow/gpt-4o-mini"))
        .await;
    let elapsed = started.elapsed();
    let error = response.assert_error(504, Some("upstream_timeout"));
    assert_eq!(error["type"], "timeout_error");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    let seen = harness.only_upstream_request();
    assert_provider_key_only(&seen);
}

#[tokio::test]
async fn a_provider_without_key_is_a_503_not_to_retry() {
    let harness = Harness::with_upstream(|builder, upstream| {
        builder.provider(
            "nokey",
            HttpProvider::builder(upstream.base_url()).build().unwrap(),
        )
    })
    .await;
    let response = harness
        .post_json("/chat/completions", chat_body("nokey/gpt-4o-mini"))
        .await;
    let error = response.assert_error(503, Some("provider_unavailable"));
    assert_eq!(error["type"], "service_unavailable_error");
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(harness.upstream.request_count(), 0);
}

// ------------------------------------------------------------------ request refusals

#[tokio::test]
async fn invalid_json_is_a_400() {
    let harness = Harness::start().await;
    for body in [
        r#"{"model":"mock/gpt-4o-mini","#,
        "not json",
        "",
        r#"{"model":"mock/gpt-4o-mini"} trailing"#,
    ] {
        let response = harness.post_json("/chat/completions", body).await;
        let error = response.assert_error(400, None);
        assert_eq!(error["type"], "invalid_request_error");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .starts_with("We could not parse the JSON body of your request."),
            "{body:?}: {error}"
        );
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn a_missing_model_is_a_400_naming_it() {
    let harness = Harness::start().await;
    for (path, body) in [
        ("/chat/completions", r#"{"messages":[]}"#),
        ("/chat/completions", r#"{"model":null,"messages":[]}"#),
        (
            "/embeddings",
            r#"{"input":"x","metadata":{"model":"mock/x"}}"#,
        ),
        // Optional for OpenAI, but no default route is configured.
        ("/moderations", r#"{"input":"x"}"#),
        ("/images/generations", r#"{"prompt":"a cat"}"#),
    ] {
        let response = harness.post_json(path, body).await;
        let error = response.assert_error(400, None);
        assert_eq!(error["param"], "model", "{path} {body}");
        assert!(error["message"].as_str().unwrap().contains("model"));
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn unknown_models_are_404_model_not_found() {
    let harness = Harness::start().await;
    for model in ["nope/gpt-4o", "gpt-4o", "slow-alias"] {
        match harness.client().chat().create(chat_request(model)).await {
            Err(OpenAIError::ApiError(error)) => {
                assert_eq!(error.status_code, 404, "{model}");
                let api = error.api_error;
                assert_eq!(api.code.as_deref(), Some("model_not_found"));
                assert_eq!(api.param.as_deref(), Some("model"));
                assert_eq!(api.r#type.as_deref(), Some("invalid_request_error"));
                assert_eq!(
                    api.message,
                    format!("The model `{model}` does not exist or you do not have access to it.")
                );
            }
            other => panic!("{model}: expected a 404, got {other:?}"),
        }
    }
    let response = harness
        .post_json("/chat/completions", chat_body("nope/gpt-4o"))
        .await;
    response.assert_error(404, Some("model_not_found"));
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn malformed_model_ids_are_400() {
    let harness = Harness::start().await;
    for model in [
        "mock/a\u{0}b",
        "mock/a\nb",
        "mock/\u{7f}",
        "mock/../secret",
        "mock/./x",
        "../mock/x",
        "mock//x",
        "mock/a?b",
        "mock/a#b",
        "mock/a%2e%2e",
    ] {
        let response = harness
            .post_json("/chat/completions", chat_body(model))
            .await;
        let error = response.assert_error(400, Some("invalid_model"));
        assert_eq!(error["param"], "model", "{model:?}");
    }
    // An empty model is refused as missing or as invalid, naming `model` either way.
    let response = harness.post_json("/chat/completions", chat_body("")).await;
    assert_eq!(response.status, 400, "{}", response.text());
    let error = assert_openai_error_shape(&response.body);
    assert_eq!(error["param"], "model");
    // A wrong type, or two `model`s (the upstream might read the other one), are refused too.
    for body in [
        r#"{"model":42,"messages":[]}"#,
        r#"{"model":["mock/gpt-4o-mini"],"messages":[]}"#,
        r#"{"model":"mock/gpt-4o-mini","messages":[],"model":"mock/o1"}"#,
        r#"[{"model":"mock/gpt-4o-mini"}]"#,
    ] {
        let response = harness.post_json("/chat/completions", body).await;
        let error = response.assert_error(400, None);
        assert_eq!(error["type"], "invalid_request_error", "{body}");
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn an_oversized_body_is_413_and_never_forwarded() {
    let harness = Harness::with(|builder| builder.body_limit(1024)).await;
    let big = json!({"model": "mock/gpt-4o-mini", "input": "a".repeat(2000)}).to_string();
    let response = harness.post_json("/embeddings", big.clone()).await;
    let error = response.assert_error(413, Some("request_too_large"));
    assert!(error["message"].as_str().unwrap().contains("1024"));
    assert!(response.header("x-request-id").is_some());

    // The same body without a declared length (chunked) is cut off while reading.
    let (first, second) = big.as_bytes().split_at(700);
    let mut request = format!(
        "POST {MOUNT}/embeddings HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ROUTER_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        harness.addr
    )
    .into_bytes();
    for chunk in [first, second] {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw_exchange(harness.addr, &request).await;
    response.assert_error(413, Some("request_too_large"));
    assert_eq!(harness.upstream.request_count(), 0);

    // Under the limit, the same endpoint works.
    let small = json!({"model": "mock/gpt-4o-mini", "input": "a".repeat(900)}).to_string();
    assert!(small.len() < 1024);
    let response = harness.post_json("/embeddings", small.clone()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/embeddings",
        &with_model(small.as_bytes(), "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
}

#[tokio::test]
async fn a_body_exactly_at_the_limit_is_read() {
    let harness = Harness::with(|builder| builder.body_limit(1024)).await;
    let body_of = |len: usize| {
        let empty = json!({"model": "mock/gpt-4o-mini", "input": ""}).to_string();
        json!({"model": "mock/gpt-4o-mini", "input": "b".repeat(len - empty.len())}).to_string()
    };
    let at_limit = body_of(1024);
    assert_eq!(at_limit.len(), 1024);
    let response = harness.post_json("/embeddings", at_limit.clone()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/embeddings",
        &with_model(at_limit.as_bytes(), "mock/gpt-4o-mini", "gpt-4o-mini"),
    );

    let over = body_of(1025);
    let response = harness.post_json("/embeddings", over).await;
    response.assert_error(413, Some("request_too_large"));
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn multipart_on_a_json_endpoint_is_unsupported_content_type() {
    let harness = Harness::start().await;
    let body = "--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmock/gpt-4o-mini\r\n--xyz--\r\n";
    let request = harness
        .request(Method::POST, "/chat/completions")
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = send(request).await;
    let error = response.assert_error(400, Some("unsupported_content_type"));
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn json_without_a_json_content_type_is_accepted() {
    let harness = Harness::start().await;
    let expected = with_model(CHAT.as_bytes(), "mock/gpt-4o-mini", "gpt-4o-mini");
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ] {
        let mut request = harness
            .request(Method::POST, "/chat/completions")
            .header("authorization", format!("Bearer {ROUTER_KEY}"));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = send(request.body(Full::new(Bytes::from(CHAT))).unwrap()).await;
        assert_eq!(
            response.status,
            200,
            "{content_type:?}: {}",
            response.text()
        );
        assert_eq!(
            response.json()["choices"][0]["message"]["content"],
            "mock reply: hi"
        );
        let seen = harness.upstream.last_request().unwrap();
        assert_forwarded(&seen, "/v1/chat/completions", &expected);
        assert_eq!(
            seen.header("content-type"),
            Some("application/json"),
            "{content_type:?}"
        );
    }
    assert_eq!(harness.upstream.request_count(), 3);
}

#[tokio::test]
async fn unknown_paths_are_404_with_the_full_path() {
    let harness = Harness::start().await;
    let response = harness.post_json("/nope", CHAT).await;
    let error = response.assert_error(404, None);
    assert_eq!(error["message"], "Invalid URL (POST /v3/router/nope)");
    assert_eq!(error["type"], "invalid_request_error");

    let response = harness.get("/chat").await;
    let error = response.assert_error(404, None);
    assert_eq!(error["message"], "Invalid URL (GET /v3/router/chat)");

    let response = harness.post_json("/v1/chat/completions", CHAT).await;
    let error = response.assert_error(404, None);
    assert_eq!(
        error["message"],
        "Invalid URL (POST /v3/router/v1/chat/completions)"
    );
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let harness = Harness::start().await;
    for (method, path, allow) in [
        (Method::GET, "/chat/completions", "POST"),
        (Method::PUT, "/embeddings", "POST"),
        (Method::GET, "/audio/speech", "POST"),
        (Method::POST, "/models", "GET"),
    ] {
        let request = harness
            .request(method.clone(), path)
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(CHAT)))
            .unwrap();
        let response = send(request).await;
        response.assert_error(405, Some("method_not_allowed"));
        assert_eq!(response.header("allow"), Some(allow), "{method} {path}");
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

// ------------------------------------------------------------------ headers

fn is_generated_id(id: &str) -> bool {
    id.starts_with("req_")
        && id.len() > 8
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let harness = Harness::start().await;
    harness.upstream.script(
        ScriptedResponse::new(500)
            .header("content-type", "text/html")
            .body("<html/>"),
    );
    let upstream_error = harness.post_json("/chat/completions", CHAT).await;
    let success = harness.post_json("/chat/completions", CHAT).await;
    let bad_json = harness.post_json("/chat/completions", "{").await;
    let not_found = harness.post_json("/nope", CHAT).await;
    let models = harness.get("/models").await;
    let unauthorized = send(
        harness
            .request(Method::POST, "/chat/completions")
            .body(Full::new(Bytes::from(CHAT)))
            .unwrap(),
    )
    .await;
    let responses: [(&str, &RawResponse, u16); 6] = [
        ("upstream error", &upstream_error, 502),
        ("success", &success, 200),
        ("bad json", &bad_json, 400),
        ("not found", &not_found, 404),
        ("models", &models, 200),
        ("unauthorized", &unauthorized, 401),
    ];
    let mut ids = Vec::new();
    for (what, response, status) in responses {
        assert_eq!(response.status, status, "{what}");
        let id = response
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{what}: no id"));
        assert!(is_generated_id(id), "{what}: {id}");
        ids.push(id.to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "ids are unique");
    assert_eq!(harness.upstream.request_count(), 2);
}

#[tokio::test]
async fn a_valid_incoming_request_id_is_kept_and_an_invalid_one_replaced() {
    let harness = Harness::start().await;
    for (incoming, body, status) in [
        ("client-req_42:a.b", CHAT, 200),
        ("client-req-43", "{", 400),
    ] {
        let request = harness
            .request(Method::POST, "/chat/completions")
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .header("content-type", "application/json")
            .header("x-request-id", incoming)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = send(request).await;
        assert_eq!(response.status, status);
        assert_eq!(response.header("x-request-id"), Some(incoming));
    }
    let too_long = "x".repeat(200);
    for incoming in ["has space", "semi;colon", too_long.as_str()] {
        let request = harness
            .request(Method::POST, "/chat/completions")
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .header("x-request-id", incoming)
            .body(Full::new(Bytes::from(CHAT)))
            .unwrap();
        let response = send(request).await;
        assert_eq!(response.status, 200);
        let id = response.header("x-request-id").unwrap();
        assert!(is_generated_id(id), "{incoming:?} -> {id}");
    }
    assert_eq!(harness.upstream.request_count(), 4);
}

#[tokio::test]
async fn the_upstream_request_id_comes_back_as_x_upstream_request_id() {
    let harness = Harness::start().await;
    let response = harness.post_json("/chat/completions", CHAT).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-upstream-request-id"), Some("mock-req-1"));
    let id = response.header("x-request-id").unwrap();
    assert!(is_generated_id(id), "{id}");
    assert_eq!(response.headers.get_all("x-request-id").iter().count(), 1);
    // The upstream's useful headers are forwarded.
    assert_eq!(response.header("openai-processing-ms"), Some("1"));
    assert_eq!(response.header("x-ratelimit-limit-requests"), Some("10000"));
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn client_account_headers_are_never_forwarded() {
    let harness = Harness::start().await;
    let client = async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(harness.base_url())
            .with_api_key(ROUTER_KEY)
            .with_org_id("org-client-123")
            .with_project_id("proj_client_456")
            .with_header("api-key", "sk-client-api-key")
            .unwrap()
            .with_header("x-client-trace", "trace-789")
            .unwrap(),
    );
    let request = chat_request("mock/gpt-4o-mini");
    let sent = serde_json::to_vec(&request).unwrap();
    let response = client.chat().create(request).await.unwrap();
    assert_eq!(response.model, "gpt-4o-mini");

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(&sent, "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
    for name in ["openai-organization", "openai-project", "api-key"] {
        assert!(seen.headers.get(name).is_none(), "{name} was forwarded");
    }
    for value in ["org-client-123", "proj_client_456", "sk-client-api-key"] {
        assert!(
            !seen
                .headers
                .values()
                .any(|v| contains(v.as_bytes(), value.as_bytes())),
            "{value} was forwarded"
        );
    }
    // Other client headers do travel.
    assert_eq!(seen.header("x-client-trace"), Some("trace-789"));
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let harness = Harness::start().await;
    let request = format!(
        "POST {MOUNT}/chat/completions HTTP/1.1\r\n\
         Host: {}\r\n\
         Authorization: Bearer {ROUTER_KEY}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: close, x-hop-secret\r\n\
         X-Hop-Secret: hop-value\r\n\
         Keep-Alive: timeout=5, max=100\r\n\
         TE: trailers\r\n\
         Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n\
         Proxy-Connection: keep-alive\r\n\
         Accept-Encoding: gzip, br\r\n\
         X-End-To-End: e2e-value\r\n\r\n{CHAT}",
        harness.addr,
        CHAT.len()
    );
    let response = raw_exchange(harness.addr, request.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "mock reply: hi"
    );

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(CHAT.as_bytes(), "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
    for name in [
        "x-hop-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(seen.headers.get(name).is_none(), "{name} was forwarded");
    }
    if let Some(connection) = seen.header("connection") {
        assert!(!connection.contains("x-hop-secret"), "{connection}");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("e2e-value"));
    // The upstream is addressed as itself, and asked for an uncompressed answer.
    assert_eq!(
        seen.header("host"),
        Some(harness.upstream.addr().to_string().as_str())
    );
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_returned() {
    let harness = Harness::start().await;
    harness.upstream.script(
        ScriptedResponse::new(200)
            .header("content-type", "application/json")
            .header("connection", "x-up-hop")
            .header("x-up-hop", "hop-value")
            .header("keep-alive", "timeout=99")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("x-up-end-to-end", "kept")
            .body(r#"{"ok":true}"#),
    );
    let response = harness.post_json("/chat/completions", CHAT).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, r#"{"ok":true}"#);
    for name in ["x-up-hop", "keep-alive", "proxy-authenticate"] {
        assert!(response.headers.get(name).is_none(), "{name} was returned");
    }
    if let Some(connection) = response.header("connection") {
        assert!(!connection.contains("x-up-hop"), "{connection}");
    }
    assert_eq!(response.header("x-up-end-to-end"), Some("kept"));
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn provider_account_headers_and_cookies_never_reach_the_client() {
    let harness = Harness::start().await;
    harness.upstream.script(
        ScriptedResponse::new(200)
            .header("content-type", "application/json")
            .header("openai-organization", "org-provider-account")
            .header("openai-project", "proj_provider")
            .header("set-cookie", "__cf_bm=provider-session; path=/")
            .header("alt-svc", "h3=\":443\"")
            .header("strict-transport-security", "max-age=31536000")
            .header("openai-processing-ms", "12")
            .body(r#"{"ok":true}"#),
    );
    let response = harness.post_json("/chat/completions", CHAT).await;
    assert_eq!(response.status, 200);
    for name in [
        "openai-organization",
        "openai-project",
        "set-cookie",
        "alt-svc",
        "strict-transport-security",
    ] {
        assert!(
            response.headers.get(name).is_none(),
            "{name} reached the client"
        );
    }
    // What is useful to clients still is.
    assert_eq!(response.header("openai-processing-ms"), Some("12"));
}

#[tokio::test]
async fn a_body_that_never_arrives_is_a_408_and_never_forwarded() {
    let harness = Harness::with(|builder| builder.body_timeout(Duration::from_millis(300))).await;
    // Announces 1000 bytes, sends 10, then waits: a stalled upload.
    let request = format!(
        "POST {MOUNT}/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {ROUTER_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":",
        harness.addr
    );
    let started = Instant::now();
    let response = raw_exchange(harness.addr, request.as_bytes()).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    response.assert_error(408, Some("request_timeout"));
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn host_headers_and_the_client_query_stay_home_and_the_router_id_goes_upstream() {
    let harness = Harness::start().await;
    let request = harness
        .request(Method::POST, "/chat/completions?api-version=evil")
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("cookie", "session=host-secret")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-api-key", "sk-other")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"mock/gpt-4o-mini","messages":[]}"#,
        )))
        .unwrap();
    let response = send(request).await;
    assert_eq!(response.status, 200);
    let seen = harness.only_upstream_request();
    assert_eq!(seen.path, "/v1/chat/completions");
    for name in ["cookie", "x-forwarded-for", "x-api-key"] {
        assert!(seen.header(name).is_none(), "{name} was forwarded");
    }
    assert_eq!(seen.header("x-request-id"), response.header("x-request-id"));
}

#[tokio::test]
async fn a_multipart_type_other_than_form_data_is_unsupported() {
    let harness = Harness::start().await;
    for path in ["/audio/transcriptions", "/embeddings"] {
        let request = harness
            .request(Method::POST, path)
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .header("content-type", "multipart/mixed; boundary=b")
            .body(Full::new(Bytes::from_static(b"--b\r\n\r\nx\r\n--b--\r\n")))
            .unwrap();
        send(request)
            .await
            .assert_error(400, Some("unsupported_content_type"));
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

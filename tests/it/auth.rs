//! Router keys: every refusal is a 401 `invalid_api_key` that never reaches the upstream and
//! never echoes the key.

use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use bytes::Bytes;
use http::Method;
use http_body_util::Full;

use crate::support::{
    Harness, ROUTER_KEY, RawResponse, assert_provider_key_only, client_for, send,
};

const CHAT: &str = r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

async fn chat_with_authorization(harness: &Harness, authorization: Option<&str>) -> RawResponse {
    let mut request = harness
        .request(Method::POST, "/chat/completions")
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    send(request.body(Full::new(Bytes::from(CHAT))).unwrap()).await
}

/// A 401 `invalid_api_key` with an id, whose body does not contain `secret`.
fn assert_unauthorized(response: &RawResponse, secret: &str) -> String {
    let error = response.assert_error(401, Some("invalid_api_key"));
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["param"].is_null());
    assert!(response.header("x-request-id").is_some());
    assert!(
        !response.text().contains(secret),
        "the key `{secret}` is echoed: {}",
        response.text()
    );
    error["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_missing_authorization_header_is_401() {
    let harness = Harness::start().await;
    let response = chat_with_authorization(&harness, None).await;
    let message = assert_unauthorized(&response, ROUTER_KEY);
    assert!(message.contains("didn't provide an API key"), "{message}");

    // The router's own endpoints are protected too.
    let response = send(
        harness
            .request(Method::GET, "/models")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_unauthorized(&response, ROUTER_KEY);
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn a_wrong_scheme_is_401() {
    let harness = Harness::start().await;
    for value in [
        format!("Basic {ROUTER_KEY}"),
        format!("Token {ROUTER_KEY}"),
        ROUTER_KEY.to_owned(),
        format!("Bearer:{ROUTER_KEY}"),
    ] {
        let response = chat_with_authorization(&harness, Some(&value)).await;
        let message = assert_unauthorized(&response, ROUTER_KEY);
        assert!(message.contains("Bearer"), "{value}: {message}");
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn an_empty_key_is_401() {
    let harness = Harness::start().await;
    for value in ["Bearer", "Bearer ", "Bearer    ", "bearer\t"] {
        let response = chat_with_authorization(&harness, Some(value)).await;
        assert_unauthorized(&response, ROUTER_KEY);
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn an_unknown_key_is_401_and_shown_masked_at_most() {
    let harness = Harness::start().await;
    let wrong = "sk-wrong-secret-key-0123456789";
    let request = CreateChatCompletionRequestArgs::default()
        .model("mock/gpt-4o-mini")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let client = client_for(&harness.base_url(), wrong);
    match client.chat().create(request).await {
        Err(OpenAIError::ApiError(error)) => {
            assert_eq!(error.status_code, 401);
            let api = error.api_error;
            assert_eq!(api.code.as_deref(), Some("invalid_api_key"));
            assert_eq!(api.r#type.as_deref(), Some("invalid_request_error"));
            assert!(api.message.contains("sk-w***"), "{}", api.message);
            assert!(!api.message.contains("wrong"), "{}", api.message);
            assert!(!api.message.contains("0123456789"), "{}", api.message);
        }
        other => panic!("expected a 401, got {other:?}"),
    }

    // A key close to the real one, and a short one: neither is echoed beyond a prefix.
    let near = format!("{ROUTER_KEY}-but-longer");
    let response = chat_with_authorization(&harness, Some(&format!("Bearer {near}"))).await;
    let message = assert_unauthorized(&response, &near);
    assert!(!message.contains("router-test"), "{message}");
    let response = chat_with_authorization(&harness, Some("Bearer abc123")).await;
    let message = assert_unauthorized(&response, "abc123");
    assert!(!message.contains("abc"), "{message}");
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn keys_are_checked_before_the_body_and_the_path() {
    let harness = Harness::with(|builder| builder.body_limit(64)).await;
    for (path, body) in [
        ("/chat/completions", "{not json".to_owned()),
        (
            "/chat/completions",
            format!("{{\"input\":\"{}\"}}", "a".repeat(500)),
        ),
        ("/nope", CHAT.to_owned()),
    ] {
        let request = harness
            .request(Method::POST, path)
            .header("authorization", "Bearer sk-unknown-key-000000")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = send(request).await;
        assert_unauthorized(&response, "sk-unknown-key-000000");
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_spaces_are_tolerated() {
    let harness = Harness::start().await;
    for value in [
        format!("bearer {ROUTER_KEY}"),
        format!("BEARER   {ROUTER_KEY}  "),
    ] {
        let response = chat_with_authorization(&harness, Some(&value)).await;
        assert_eq!(response.status, 200, "{value}: {}", response.text());
        let seen = harness.upstream.last_request().unwrap();
        assert_provider_key_only(&seen);
    }
    assert_eq!(harness.upstream.request_count(), 2);
}

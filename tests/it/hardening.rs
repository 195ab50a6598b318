//! Hardening (issue 16): bad input never reaches a provider. Each test sends what an attacker
//! or a broken client would, over TCP, and asserts both the client's answer and what the mock
//! upstream received (nothing, or exactly the right bytes).

use ai_router::route::Endpoint;

use crate::support::{Harness, ROUTER_KEY, assert_forwarded, raw_exchange};

/// A harness with a default model for every endpoint where `model` is optional.
async fn with_defaults() -> Harness {
    Harness::with(|builder| {
        builder
            .default_model(Endpoint::Moderations, "mock/omni-moderation-latest")
            .default_model(Endpoint::Responses, "mock/gpt-4o-mini")
            .default_model(Endpoint::ImagesGenerations, "mock/gpt-image-1")
            .default_model(Endpoint::ImagesEdits, "mock/gpt-image-1")
            .default_model(Endpoint::ImagesVariations, "mock/dall-e-2")
    })
    .await
}

// ------------------------------------------------------- 1: empty or null model

#[tokio::test]
async fn an_empty_or_null_model_is_replaced_in_place_never_duplicated() {
    let harness = with_defaults().await;
    let cases = [
        (
            "/moderations",
            r#"{"model":"","input":"hello"}"#,
            r#"{"model":"omni-moderation-latest","input":"hello"}"#,
        ),
        (
            "/moderations",
            r#"{ "input":"hello", "model" : null }"#,
            r#"{ "input":"hello", "model" : "omni-moderation-latest" }"#,
        ),
        (
            "/responses",
            r#"{"model":null,"input":"hi"}"#,
            r#"{"model":"gpt-4o-mini","input":"hi"}"#,
        ),
        (
            "/images/generations",
            r#"{"prompt":"a cat","model":""}"#,
            r#"{"prompt":"a cat","model":"gpt-image-1"}"#,
        ),
    ];
    for (i, (path, sent, forwarded)) in cases.into_iter().enumerate() {
        let response = harness.post_json(path, sent).await;
        assert_eq!(response.status, 200, "{path} {sent}: {}", response.text());
        let seen = harness.upstream.last_request().unwrap();
        assert_eq!(harness.upstream.request_count(), i + 1);
        assert_forwarded(&seen, &format!("/v1{path}"), forwarded.as_bytes());
    }
}

#[tokio::test]
async fn an_empty_or_null_model_without_a_default_is_400_naming_model() {
    let harness = Harness::start().await;
    for body in [
        r#"{"model":"","input":"hello"}"#,
        r#"{"model":null,"input":"hello"}"#,
    ] {
        let response = harness.post_json("/moderations", body).await;
        assert_eq!(response.assert_error(400, None)["param"], "model");
        let response = harness.post_json("/chat/completions", body).await;
        assert_eq!(response.assert_error(400, None)["param"], "model");
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

// --------------------------------------------------------- 4: invalid UTF-8

/// A raw HTTP/1.1 chat request with `body`, closing the connection after the answer.
fn raw_chat(harness: &Harness, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v3/router/chat/completions HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {ROUTER_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        harness.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test]
async fn invalid_utf8_in_json_strings_is_400_invalid_json() {
    let harness = Harness::start().await;
    for bad in [
        &b"a\xffb"[..],
        b"\xc0\xaf",         // overlong `/`
        b"\xed\xa0\x80",     // a UTF-16 surrogate
        b"\xe2\x82",         // truncated sequence
        b"\xf4\x90\x80\x80", // past U+10FFFF
    ] {
        let mut body =
            br#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":""#.to_vec();
        body.extend_from_slice(bad);
        body.extend_from_slice(br#""}],"metadata":{"k":"v"}}"#);
        let response = raw_exchange(harness.addr, &raw_chat(&harness, &body)).await;
        let error = response.assert_error(400, None);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("parse the JSON"),
            "{error}"
        );
        // In a key, and in an ignored nested value.
        let mut body = br#"{"model":"mock/gpt-4o-mini","messages":[],"x":{""#.to_vec();
        body.extend_from_slice(bad);
        body.extend_from_slice(br#"":1}}"#);
        let response = raw_exchange(harness.addr, &raw_chat(&harness, &body)).await;
        response.assert_error(400, None);
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

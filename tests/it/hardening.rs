//! Hardening (issue 16): bad input never reaches a provider. Each test sends what an attacker
//! or a broken client would, over TCP, and asserts both the client's answer and what the mock
//! upstream received (nothing, or exactly the right bytes).

use ai_router::route::Endpoint;
use bytes::Bytes;
use http::Method;
use http_body_util::Full;

use crate::support::{
    Harness, ROUTER_KEY, RawResponse, assert_forwarded, assert_openai_error, raw_exchange, send,
};

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

/// `POST <mount><path>` with the router key, `content_type` and `body`.
async fn post(harness: &Harness, path: &str, content_type: &str, body: Vec<u8>) -> RawResponse {
    let request = harness
        .request(Method::POST, path)
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(request).await
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

// ------------------------------------------------- 2: ambiguous form dispositions

/// A transcription form whose `prompt` part is headed by `disposition`.
fn form_with_disposition(disposition: &str) -> Vec<u8> {
    format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmock/whisper-1\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
         Content-Type: audio/wav\r\n\r\nRIFF....WAVE\r\n\
         --b0undary\r\nContent-Disposition: {disposition}\r\n\r\nexpensive/model\r\n\
         --b0undary--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_form_part_with_an_ambiguous_disposition_is_400() {
    let harness = Harness::start().await;
    let content_type = "multipart/form-data; boundary=b0undary";
    for disposition in [
        // Read as `prompt` by one parser, as a second `model` by one taking the last name.
        r#"form-data; name="prompt"; name="model""#,
        r#"form-data; name="prompt"; NAME="model""#,
        r#"form-data; name="prompt"; name*=UTF-8''model"#,
        r#"form-data; name*=UTF-8''model; name="prompt""#,
        r#"form-data; name="prompt"; filename="a.txt"; filename="model""#,
        r#"attachment; name="prompt""#,
        r#"form-data; name="prompt" name="model""#,
        r#"form-data; name="prompt"; filename="a\"; name=\"model""#,
        r#"form-data; name="prompt"; filename="; name=model""#,
        r#"form-data; name="prompt"#,
        r#"form-data; name="%6Dodel""#,
        "form-data; name=\"MODEL\"",
    ] {
        let response = post(
            &harness,
            "/audio/transcriptions",
            content_type,
            form_with_disposition(disposition),
        )
        .await;
        let error = response.assert_error(400, None);
        assert_eq!(error["type"], "invalid_request_error", "{disposition}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("Content-Disposition"),
            "{disposition}: {error}"
        );
    }
    assert_eq!(harness.upstream.request_count(), 0);

    // The ordinary spellings still pass, and the part reaches the upstream as sent.
    for disposition in [
        r#"form-data; name="prompt""#,
        "form-data; name=prompt",
        r#"Form-Data; name="prompt""#,
        r#"form-data; name="prompt"; filename="notes;v2.txt""#,
        r#"form-data;name="prompt";filename="n.txt""#,
    ] {
        let response = post(
            &harness,
            "/audio/transcriptions",
            content_type,
            form_with_disposition(disposition),
        )
        .await;
        assert_eq!(response.status, 200, "{disposition}: {}", response.text());
        let seen = harness.upstream.last_request().unwrap();
        let text = String::from_utf8_lossy(&seen.body);
        assert!(
            text.contains(&format!("content-disposition: {disposition}\r\n")),
            "{disposition}: {text}"
        );
    }
}

// --------------------------------------------------- 3: forms without their file

/// A form under `boundary` written as RFC 2046 says: `--<boundary>` delimiter lines.
fn form(boundary: &str, parts: &[(&str, Option<&str>, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, filename, data) in parts {
        out.push_str(&format!("--{boundary}\r\n"));
        match filename {
            Some(filename) => out.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )),
            None => out.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            )),
        }
        out.push_str(data);
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

#[tokio::test]
async fn forms_without_their_file_are_400_naming_it_whatever_the_boundary() {
    let harness = with_defaults().await;
    for boundary in ["--xyz", "----", "plain-boundary", "'()+_,-./:=?"] {
        let content_type = format!("multipart/form-data; boundary=\"{boundary}\"");
        let model_only = form(
            boundary,
            &[
                ("model", None, "mock/gpt-image-1"),
                ("prompt", None, "a hat"),
            ],
        );
        for (path, param) in [
            ("/images/edits", "image"),
            ("/images/variations", "image"),
            ("/audio/transcriptions", "file"),
            ("/audio/translations", "file"),
        ] {
            let response = post(&harness, path, &content_type, model_only.clone()).await;
            let error = response.assert_error(400, None);
            assert_eq!(error["param"], param, "{boundary} {path}: {error}");
        }
        // With its image, the same form passes.
        let with_image = form(
            boundary,
            &[
                ("prompt", None, "a hat"),
                ("image[]", Some("cat.png"), "PNG-BYTES"),
            ],
        );
        let response = post(&harness, "/images/edits", &content_type, with_image).await;
        assert_eq!(response.status, 200, "{boundary}: {}", response.text());
    }
    assert_eq!(harness.upstream.request_count(), 4);
}

#[tokio::test]
async fn forms_that_parse_as_empty_are_400() {
    let harness = with_defaults().await;
    let content_type = "multipart/form-data; boundary=--xyz";
    let image_part = "----xyz\r\nContent-Disposition: form-data; name=\"image\"; \
                      filename=\"cat.png\"\r\nContent-Type: image/png\r\n\r\nPNG\r\n----xyz--\r\n";
    for body in [
        // One dash pair too many: `----xyz` is found inside the line, followed by `--`, which
        // a parser searching for the delimiter anywhere reads as the end of an empty form.
        format!("------xyz--\r\n{image_part}"),
        format!("preamble ----xyz--\r\n{image_part}"),
        // An empty form, written correctly.
        "----xyz--\r\n".to_owned(),
    ] {
        let response = post(&harness, "/images/edits", content_type, body.into_bytes()).await;
        let error = response.assert_error(400, None);
        assert_eq!(error["type"], "invalid_request_error");
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

// ------------------------------------------------------ 6: Content-Encoding

#[tokio::test]
async fn compressed_request_bodies_are_refused_with_400() {
    let harness = Harness::start().await;
    let chat = r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    for encoding in [
        "gzip",
        "deflate",
        "br",
        "zstd",
        "GZIP",
        "identity, gzip",
        "x-gzip",
    ] {
        let request = harness
            .request(Method::POST, "/chat/completions")
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(Full::new(Bytes::from(chat)))
            .unwrap();
        let response = send(request).await;
        let error = response.assert_error(400, Some("unsupported_content_encoding"));
        assert_eq!(error["type"], "invalid_request_error", "{encoding}");
        assert!(
            error["message"].as_str().unwrap().contains("uncompressed"),
            "{error}"
        );
    }
    // Two headers, the second one compressed; and a form.
    let request = harness
        .request(Method::POST, "/audio/transcriptions")
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .header("content-encoding", "identity")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from(form_with_disposition(
            r#"form-data; name="prompt""#,
        ))))
        .unwrap();
    send(request)
        .await
        .assert_error(400, Some("unsupported_content_encoding"));
    assert_eq!(harness.upstream.request_count(), 0);

    // `identity` is no encoding at all: accepted, and not forwarded.
    let request = harness
        .request(Method::POST, "/chat/completions")
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .header("content-encoding", "Identity")
        .body(Full::new(Bytes::from(chat)))
        .unwrap();
    let response = send(request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = harness.only_upstream_request();
    assert!(
        seen.header("content-encoding").is_none(),
        "{:?}",
        seen.headers
    );
}

// ------------------------------------------------ 8: duplicate Authorization

#[tokio::test]
async fn duplicate_authorization_headers_are_401() {
    let harness = Harness::start().await;
    let chat = r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let good = format!("Bearer {ROUTER_KEY}");
    for (first, second) in [
        (good.as_str(), good.as_str()),
        (good.as_str(), "Bearer sk-someone-else"),
        ("Bearer sk-someone-else", good.as_str()),
    ] {
        let request = format!(
            "POST /v3/router/chat/completions HTTP/1.1\r\nHost: {}\r\n\
             Authorization: {first}\r\nContent-Type: application/json\r\n\
             Authorization: {second}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{chat}",
            harness.addr,
            chat.len()
        );
        let response = raw_exchange(harness.addr, request.as_bytes()).await;
        assert_eq!(response.status, 401, "{}", response.text());
        let error = assert_openai_error(&response.body, Some("invalid_api_key"));
        assert!(error["param"].is_null());
        assert!(
            !response.text().contains(ROUTER_KEY),
            "the key is echoed: {}",
            response.text()
        );
        assert!(
            error["message"].as_str().unwrap().contains("one"),
            "{error}"
        );
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

// ------------------------------------------ found by fuzzing: array bodies

#[tokio::test]
async fn a_json_array_body_is_400_never_read_positionally() {
    let harness = Harness::start().await;
    // serde reads a struct from an array: this was routed on `mock/gpt-4o-mini` and
    // forwarded as an array.
    for body in [
        r#"["mock/gpt-4o-mini", true]"#,
        r#"["mock/gpt-4o-mini"]"#,
        "[]",
    ] {
        let response = harness.post_json("/chat/completions", body).await;
        let error = response.assert_error(400, None);
        assert!(
            error["message"].as_str().unwrap().contains("JSON object"),
            "{body}: {error}"
        );
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

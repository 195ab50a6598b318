//! `POST /chat/completions`: plain, streamed, aliased, byte-exact forwarding.

use ai_router::provider::HttpProvider;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::support::{
    EXCHANGE_TIMEOUT, Harness, PROVIDER_KEY, ROUTER_KEY, SlowUpstream, assert_forwarded,
    assert_openai_error_shape, collect_stream, with_model,
};
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};

fn chat_request(model: &str, text: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(text)
            .build()
            .unwrap()
            .into()])
        .temperature(0.25)
        .build()
        .unwrap()
}

#[tokio::test]
async fn chat_goes_through_with_the_provider_key_and_upstream_model() {
    let harness = Harness::start().await;
    let request = chat_request("mock/gpt-4o-mini", "hello router");
    let sent = serde_json::to_vec(&request).unwrap();
    let response = harness.client().chat().create(request).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some("mock reply: hello router")
    );
    assert_eq!(response.model, "gpt-4o-mini");
    assert_eq!(response.id, "chatcmpl-mock-1");

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(&sent, "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
}

#[tokio::test]
async fn chat_alias_resolves_to_its_upstream_model() {
    let harness = Harness::start().await;
    let request = chat_request("fast", "via alias");
    let sent = serde_json::to_vec(&request).unwrap();
    let response = harness.client().chat().create(request).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some("mock reply: via alias")
    );
    assert_eq!(response.model, "gpt-4o-mini");

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(&sent, "fast", "gpt-4o-mini"),
    );
}

#[tokio::test]
async fn chat_stream_arrives_chunk_by_chunk_with_usage() {
    let harness = Harness::start().await;
    let mut request = chat_request("mock/gpt-4o-mini", "stream me please");
    request.stream = Some(true);
    request.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    });
    let sent = serde_json::to_vec(&request).unwrap();
    let stream = harness
        .client()
        .chat()
        .create_stream(request)
        .await
        .unwrap();
    let chunks = collect_stream(stream).await;
    let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
    assert!(chunks.len() > 3, "{} chunks", chunks.len());
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|choice| choice.delta.content.clone())
        .collect();
    assert_eq!(text, "mock reply: stream me please");
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    assert!(last.usage.is_some());
    assert!(chunks.iter().all(|c| c.model == "gpt-4o-mini"));

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(&sent, "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
}

#[tokio::test]
async fn chat_stream_bytes_are_plain_data_frames_ending_in_done() {
    let harness = Harness::start().await;
    let body = r#"{"model":"mock/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a b c"}]}"#;
    let response = harness.post_json("/chat/completions", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert!(response.header("x-request-id").is_some());
    let text = response.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert!(frames.len() >= 5, "{text}");
    for frame in &frames {
        assert!(frame.starts_with("data: "), "{frame:?}");
        assert!(!frame.contains("event:"), "{frame:?}");
    }
    for frame in &frames[..frames.len() - 1] {
        let json: serde_json::Value = serde_json::from_str(&frame["data: ".len()..]).unwrap();
        assert_eq!(json["object"], "chat.completion.chunk");
        assert_eq!(json["model"], "gpt-4o-mini");
    }

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(body.as_bytes(), "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
}

#[tokio::test]
async fn chat_body_bytes_survive_except_the_model_value() {
    let harness = Harness::start().await;
    // Odd spacing, escapes, a non-ASCII string, a nested `model` key and a number whose
    // spelling a re-serialization would change.
    let body = "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"caf\\u00e9 \u{2603} \\\"q\\\"\"} ],\n  \
                \"metadata\":{\"model\":\"keep-me\"},  \"model\"  :  \"mock\\/gpt-4o-mini\" , \"temperature\":1.50 }";
    let expected = body.replace("\"mock\\/gpt-4o-mini\"", "\"gpt-4o-mini\"");
    assert_ne!(expected, body);
    let response = harness.post_json("/chat/completions", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "mock reply: café \u{2603} \"q\""
    );

    let seen = harness.only_upstream_request();
    assert_forwarded(&seen, "/v1/chat/completions", expected.as_bytes());
    assert_eq!(seen.header("content-type"), Some("application/json"));
}

/// A router whose provider `slow` is a [`SlowUpstream`].
async fn slow_harness() -> (Harness, SlowUpstream) {
    let slow = SlowUpstream::start().await;
    let base_url = slow.base_url();
    let harness = Harness::with(|builder| {
        builder.provider(
            "slow",
            HttpProvider::builder(base_url)
                .api_key(PROVIDER_KEY)
                .build()
                .unwrap(),
        )
    })
    .await;
    (harness, slow)
}

fn chunk_frame(text: &str) -> Bytes {
    let chunk = json!({
        "id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

const SLOW_CHAT: &str =
    r#"{"model":"slow/m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// Posts a streaming request to the router and returns the response with its body unread.
async fn start_stream(
    harness: &Harness,
    path: &str,
    body: &'static str,
) -> http::Response<hyper::body::Incoming> {
    let request = Request::post(harness.url(path))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    tokio::time::timeout(EXCHANGE_TIMEOUT, client.request(request))
        .await
        .unwrap()
        .unwrap()
}

/// The next data frame of `body`, or `None` at its end; `Err` when the stream broke.
async fn next_data(body: &mut hyper::body::Incoming) -> Result<Option<Bytes>, String> {
    // Skips non-data frames (trailers); each round consumes one frame of a finite stream.
    for _ in 0..64 {
        let frame = tokio::time::timeout(EXCHANGE_TIMEOUT, body.frame())
            .await
            .map_err(|_| "no frame in time".to_owned())?;
        match frame {
            None => return Ok(None),
            Some(Err(error)) => return Err(error.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
    Err("too many frames".to_owned())
}

#[tokio::test]
async fn chat_streams_are_passed_on_frame_by_frame() {
    let (harness, slow) = slow_harness().await;
    slow.frames.send(Ok(chunk_frame("first"))).await.unwrap();
    let response = start_stream(&harness, "/chat/completions", SLOW_CHAT).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();

    // The first frame arrives while the upstream has not sent anything else: not buffered.
    let first = next_data(&mut body).await.unwrap().unwrap();
    assert_eq!(first, chunk_frame("first"));

    slow.frames.send(Ok(chunk_frame(" second"))).await.unwrap();
    let second = next_data(&mut body).await.unwrap().unwrap();
    assert_eq!(second, chunk_frame(" second"));
    slow.frames
        .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
        .await
        .unwrap();
    let done = next_data(&mut body).await.unwrap().unwrap();
    assert_eq!(done, "data: [DONE]\n\n");

    let seen = slow.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (parts, received) = &seen[0];
    assert_eq!(parts.uri.path(), "/v1/chat/completions");
    assert_eq!(
        parts.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str()
    );
    assert_eq!(
        received,
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
    );
}

#[tokio::test]
async fn an_upstream_failure_mid_stream_ends_with_an_error_frame() {
    let (harness, slow) = slow_harness().await;
    slow.frames.send(Ok(chunk_frame("partial"))).await.unwrap();
    let response = start_stream(&harness, "/chat/completions", SLOW_CHAT).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = next_data(&mut body).await.unwrap().unwrap();
    assert_eq!(first, chunk_frame("partial"));

    // The upstream connection breaks after the 200 was sent.
    slow.frames
        .send(Err("upstream crashed: secret internal detail".to_owned()))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let end = loop {
        match next_data(&mut body).await {
            Ok(Some(data)) => rest.extend_from_slice(&data),
            other => break other,
        }
        assert!(rest.len() < 64 * 1024, "runaway stream");
    };
    let rest = String::from_utf8_lossy(&rest).into_owned();
    // OpenAI's rule: the status cannot change any more, so an SSE error frame with the
    // four keys is sent, then the stream ends cleanly.
    assert_eq!(
        end,
        Ok(None),
        "the stream must end cleanly; got so far: {rest:?}"
    );
    let frame = rest
        .split("\n\n")
        .find(|f| f.starts_with("data: {\"error\""))
        .unwrap_or_else(|| panic!("no error frame in {rest:?}"));
    let error = assert_openai_error_shape(&frame.as_bytes()["data: ".len()..]);
    assert_eq!(error["type"], "server_error", "{frame}");
    assert!(!rest.contains("secret internal detail"), "{rest}");
    assert!(!rest.contains("event:"), "{rest}");
}

#[tokio::test]
async fn a_responses_stream_failing_midway_ends_with_an_error_event() {
    let (harness, slow) = slow_harness().await;
    let created = json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}});
    let created = Bytes::from(format!("event: response.created\ndata: {created}\n\n"));
    slow.frames.send(Ok(created.clone())).await.unwrap();
    let body = r#"{"model":"slow/m","stream":true,"input":"hi"}"#;
    let response = start_stream(&harness, "/responses", body).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    assert_eq!(next_data(&mut body).await.unwrap().unwrap(), created);

    slow.frames
        .send(Err("upstream crashed: secret internal detail".to_owned()))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let end = loop {
        match next_data(&mut body).await {
            Ok(Some(data)) => rest.extend_from_slice(&data),
            other => break other,
        }
        assert!(rest.len() < 64 * 1024, "runaway stream");
    };
    let rest = String::from_utf8_lossy(&rest).into_owned();
    assert_eq!(
        end,
        Ok(None),
        "the stream must end cleanly; got so far: {rest:?}"
    );
    assert!(
        rest.split("\n\n")
            .any(|f| f.starts_with("event: error\ndata: {")),
        "no `error` event in {rest:?}"
    );
    assert!(!rest.contains("secret internal detail"), "{rest}");
    assert!(!rest.contains("[DONE]"), "{rest}");
    let seen = slow.seen.lock().unwrap();
    assert_eq!(seen[0].0.uri.path(), "/v1/responses");
    assert_eq!(seen[0].1, r#"{"model":"m","stream":true,"input":"hi"}"#);
}

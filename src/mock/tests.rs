#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
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
    fn body(&self) -> Vec<u8> {
        self.frames.concat()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body()).expect("json body")
    }

    fn text(&self) -> String {
        String::from_utf8(self.body()).expect("utf-8 body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn call_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    mock: &MockUpstream,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: impl Into<Bytes>,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{}", mock.addr(), path))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
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

async fn post(mock: &MockUpstream, path: &str, body: Value) -> Answer {
    call_with(
        &client(),
        mock,
        Method::POST,
        path,
        Some(KEY),
        body.to_string(),
    )
    .await
}

/// The `data:` payloads of an SSE body.
fn sse_data(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect()
}

#[tokio::test]
async fn chat_completion_shape_and_recording() {
    let mock = MockUpstream::start().await.unwrap();
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    assert!(mock.base_url().ends_with("/v1"));
    let request = json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello \"world\""}
        ]
    });
    let answer = post(&mock, "/v1/chat/completions?trace=1", request.clone()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/json");
    assert_eq!(answer.header("x-request-id"), "mock-req-1");
    assert_eq!(answer.header("openai-processing-ms"), "1");
    assert_eq!(answer.header("x-ratelimit-limit-requests"), "10000");
    assert_eq!(answer.header("x-ratelimit-remaining-requests"), "9999");
    let body = answer.json();
    assert_eq!(body["id"], "chatcmpl-mock-1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["created"], 1_700_000_000);
    assert_eq!(body["model"], "gpt-test");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "mock reply: hello \"world\"");
    assert!(choice["message"]["refusal"].is_null());
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 4);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + 4
    );

    assert_eq!(mock.request_count(), 1);
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.method, Method::POST);
    assert_eq!(recorded.path, "/v1/chat/completions?trace=1");
    assert_eq!(
        recorded.header("authorization"),
        Some("Bearer sk-mock-upstream")
    );
    assert_eq!(recorded.header("Content-Type"), Some("application/json"));
    assert_eq!(recorded.json(), Some(request));

    let second = post(
        &mock,
        "/v1/chat/completions",
        json!({"model": "m", "messages": []}),
    )
    .await;
    assert_eq!(second.json()["id"], "chatcmpl-mock-2");
    assert_eq!(
        second.json()["choices"][0]["message"]["content"],
        "mock reply: "
    );
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(mock.requests()[0].path, "/v1/chat/completions?trace=1");
}

#[tokio::test]
async fn wrong_or_missing_key_is_401() {
    let mock = MockUpstream::builder()
        .api_key("sk-right")
        .start()
        .await
        .unwrap();
    let body = json!({"model": "m", "messages": []}).to_string();
    let client = client();
    let wrong = call_with(
        &client,
        &mock,
        Method::POST,
        "/v1/chat/completions",
        Some("sk-wrong"),
        body.clone(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.header("content-type"), "application/json");
    assert_eq!(
        wrong.json(),
        json!({"error": {
            "message": "Incorrect API key provided: sk-***.",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key"
        }})
    );
    let missing = call_with(&client, &mock, Method::GET, "/v1/models", None, "").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    let right = call_with(
        &client,
        &mock,
        Method::GET,
        "/v1/models",
        Some("sk-right"),
        "",
    )
    .await;
    assert_eq!(right.status, StatusCode::OK);
    // Rejected requests are recorded too.
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn api_key_header_and_no_auth() {
    let mock = MockUpstream::builder()
        .api_key("azure-key")
        .api_key_header("api-key")
        .start()
        .await
        .unwrap();
    let request = |key: &str| {
        Request::get(format!("http://{}/v1/models", mock.addr()))
            .header("api-key", key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let client = client();
    let ok = client.request(request("azure-key")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let bad = client.request(request("nope")).await.unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

    let open = MockUpstream::builder().no_auth().start().await.unwrap();
    let answer = call_with(&client, &open, Method::GET, "/v1/models", None, "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["data"][0]["id"], "mock-model");
}

#[tokio::test]
async fn scripted_response_is_consumed_once() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        ScriptedResponse::openai_error(429, "slow down", "requests", Some("rate_limit_exceeded"))
            .header("retry-after", "1")
            .header("x-request-id", "scripted-id"),
    );
    mock.script(
        ScriptedResponse::new(200)
            .body("plain")
            .delay(Duration::from_millis(50)),
    );
    let client = client();
    // Scripted answers skip the key check and ignore the path.
    let first = call_with(&client, &mock, Method::POST, "/anything", Some("bad"), "{").await;
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.header("retry-after"), "1");
    assert_eq!(first.header("x-request-id"), "scripted-id");
    assert_eq!(first.header("content-type"), "application/json");
    assert_eq!(
        first.json(),
        json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
    );

    let started = Instant::now();
    let second = call_with(&client, &mock, Method::GET, "/v1/models", None, "").await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.text(), "plain");
    assert_eq!(second.header("x-request-id"), "mock-req-2");

    let third = post(
        &mock,
        "/v1/chat/completions",
        json!({"model": "m", "messages": []}),
    )
    .await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(third.json()["object"], "chat.completion");
    assert_eq!(mock.request_count(), 3);
    assert_eq!(mock.requests()[0].path, "/anything");
}

#[tokio::test]
async fn streaming_chat_sends_frames_and_done() {
    let mock = MockUpstream::start().await.unwrap();
    let answer = post(
        &mock,
        "/v1/chat/completions",
        json!({
            "model": "gpt-stream",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "one two"}]
        }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "text/event-stream");
    let text = answer.text();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let data = sse_data(&text);
    // role, 4 words ("mock", " reply:", " one", " two"), stop, usage, [DONE]
    assert_eq!(data.len(), 8);
    let chunks: Vec<Value> = data[..7]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["id"] == "chatcmpl-mock-1"
        && c["model"] == "gpt-stream"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "mock reply: one two");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 4);

    // Without include_usage: no usage chunk.
    let plain = post(
        &mock,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let text = plain.text();
    assert_eq!(sse_data(&text).len(), 1 + 3 + 1 + 1);
}

#[tokio::test]
async fn errors_not_found_and_bad_json() {
    let mock = MockUpstream::start().await.unwrap();
    let client = client();
    let missing = call_with(&client, &mock, Method::POST, "/v1/nope", Some(KEY), "{}").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json(),
        json!({"error": {"message": "Invalid URL (POST /v1/nope)", "type": "invalid_request_error", "param": null, "code": null}})
    );
    let wrong_method = call_with(
        &client,
        &mock,
        Method::GET,
        "/v1/chat/completions",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(wrong_method.status, StatusCode::NOT_FOUND);
    for body in ["{not json", "", "[1,2"] {
        let bad = call_with(
            &client,
            &mock,
            Method::POST,
            "/v1/chat/completions",
            Some(KEY),
            body,
        )
        .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    }
    let wrong_shape = call_with(
        &client,
        &mock,
        Method::POST,
        "/v1/embeddings",
        Some(KEY),
        r#"{"model":"m"}"#,
    )
    .await;
    assert_eq!(wrong_shape.status, StatusCode::BAD_REQUEST);
    assert_eq!(mock.request_count(), 6);
}

#[tokio::test]
async fn oversized_body_is_413_and_not_scripted() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(ScriptedResponse::new(204));
    let body = Bytes::from(vec![b' '; 64 * 1024 * 1024 + 1]);
    let answer = call_with(
        &client(),
        &mock,
        Method::POST,
        "/v1/embeddings",
        Some(KEY),
        body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(mock.request_count(), 1);
    assert!(mock.last_request().unwrap().body.is_empty());
    let next = call_with(&client(), &mock, Method::GET, "/v1/models", None, "").await;
    assert_eq!(next.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn other_endpoints() {
    let mock = MockUpstream::start().await.unwrap();

    let completion = post(
        &mock,
        "/v1/completions",
        json!({"model": "c", "prompt": "hi"}),
    )
    .await;
    let body = completion.json();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["id"], "cmpl-mock-1");
    assert_eq!(body["choices"][0]["text"], "mock completion");
    assert!(body["usage"]["total_tokens"].is_u64());

    let embeddings = post(
        &mock,
        "/v1/embeddings",
        json!({"model": "e", "input": ["a", "b", [1, 2, 3]]}),
    )
    .await
    .json();
    assert_eq!(embeddings["object"], "list");
    assert_eq!(embeddings["data"].as_array().unwrap().len(), 3);
    assert_eq!(embeddings["data"][2]["index"], 2);
    assert_eq!(
        embeddings["data"][0]["embedding"].as_array().unwrap().len(),
        8
    );
    let again = post(&mock, "/v1/embeddings", json!({"model": "e", "input": "a"}))
        .await
        .json();
    assert_eq!(
        again["data"][0]["embedding"],
        embeddings["data"][0]["embedding"]
    );
    assert_ne!(
        embeddings["data"][1]["embedding"],
        embeddings["data"][0]["embedding"]
    );
    let tokens = post(
        &mock,
        "/v1/embeddings",
        json!({"model": "e", "input": [1, 2]}),
    )
    .await
    .json();
    assert_eq!(tokens["data"].as_array().unwrap().len(), 1);
    assert_eq!(tokens["usage"]["prompt_tokens"], 2);

    let rerank = post(
        &mock,
        "/v1/rerank",
        json!({
            "model": "r",
            "query": "red apple",
            "documents": ["blue sky", {"text": "a red apple"}, "red car"],
            "top_n": 2,
            "return_documents": true
        }),
    )
    .await
    .json();
    let results = rerank["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["index"], 1);
    assert_eq!(results[0]["relevance_score"], 1.0);
    assert_eq!(results[0]["document"]["text"], "a red apple");
    assert_eq!(results[1]["index"], 2);
    assert!(rerank["id"].as_str().unwrap().starts_with("rerank-mock-"));
    let bare = post(
        &mock,
        "/v1/rerank",
        json!({"model": "r", "query": "x", "documents": ["x"]}),
    )
    .await
    .json();
    assert!(bare["results"][0].get("document").is_none());

    let images = post(
        &mock,
        "/v1/images/generations",
        json!({"prompt": "p", "n": 2}),
    )
    .await;
    let images = images.json();
    assert_eq!(images["created"], 1_700_000_000);
    assert_eq!(images["data"].as_array().unwrap().len(), 2);
    assert!(images["data"][0]["b64_json"].is_string());
    let urls = post(
        &mock,
        "/v1/images/generations",
        json!({"prompt": "p", "response_format": "url"}),
    )
    .await
    .json();
    assert!(urls["data"][0]["url"].is_string());

    let speech = post(
        &mock,
        "/v1/audio/speech",
        json!({"model": "tts", "input": "hello", "voice": "alloy", "response_format": "wav"}),
    )
    .await;
    assert_eq!(speech.status, StatusCode::OK);
    assert_eq!(speech.header("content-type"), "audio/wav");
    let audio = speech.body();
    assert!(audio.starts_with(b"ID3hellohello"));
    assert!(audio.len() >= 1024);
    let mp3 = post(
        &mock,
        "/v1/audio/speech",
        json!({"model": "tts", "input": "x"}),
    )
    .await;
    assert_eq!(mp3.header("content-type"), "audio/mpeg");

    let model = call_with(
        &client(),
        &mock,
        Method::GET,
        "/v1/models/gpt-x",
        Some(KEY),
        "",
    )
    .await
    .json();
    assert_eq!(
        model,
        json!({"id": "gpt-x", "object": "model", "created": 1_700_000_000, "owned_by": "mock"})
    );
}

#[tokio::test]
async fn audio_arrives_in_several_frames() {
    let mock = MockUpstream::start().await.unwrap();
    let speech = post(
        &mock,
        "/v1/audio/speech",
        json!({"model": "tts", "input": "hi"}),
    )
    .await;
    // Frame boundaries on the client side are not guaranteed, but the body is
    // streamed (chunked), not length-delimited.
    assert!(speech.headers.get("content-length").is_none());
    assert!(!speech.frames.is_empty());
}

#[tokio::test]
async fn responses_plain_and_streaming() {
    let mock = MockUpstream::start().await.unwrap();
    let plain = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-r", "input": "hi there"}),
    )
    .await
    .json();
    assert_eq!(plain["id"], "resp-mock-1");
    assert_eq!(plain["object"], "response");
    assert_eq!(plain["status"], "completed");
    assert_eq!(plain["model"], "gpt-r");
    assert_eq!(
        plain["output"][0]["content"][0]["text"],
        "mock reply: hi there"
    );

    let stream = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-r", "input": [{"role": "user", "content": "a b"}], "stream": true}),
    )
    .await;
    assert_eq!(stream.header("content-type"), "text/event-stream");
    let text = stream.text();
    assert!(!text.contains("[DONE]"));
    let events: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], i);
    }
    assert!(text.starts_with("event: response.created\ndata: "));
    assert_eq!(
        events[events.len() - 1]["response"]["output"][0]["content"][0]["text"],
        "mock reply: a b"
    );
}

#[tokio::test]
async fn h2c_is_served() {
    let mock = MockUpstream::start().await.unwrap();
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let answer = call_with(
        &client,
        &mock,
        Method::POST,
        "/v1/chat/completions",
        Some(KEY),
        json!({"model": "h2", "stream": true, "messages": []}).to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(mock.last_request().unwrap().path, "/v1/chat/completions");
}

#[tokio::test]
async fn closed_connections_are_counted_and_drop_stops_the_server() {
    let mock = MockUpstream::start().await.unwrap();
    let addr = mock.addr();
    {
        let client = client();
        let answer = call_with(&client, &mock, Method::GET, "/v1/models", Some(KEY), "").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(mock.connections_closed(), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.connections_closed() < 1 {
        assert!(Instant::now() < deadline, "connection close not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.connections_closed(), 1);

    drop(mock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "server still accepting after drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The bodies deserialize into the official client's types.
mod async_openai_types {
    use super::*;
    use async_openai::types::{chat, completions, embeddings, models, moderations, responses};

    fn parse<T: serde::de::DeserializeOwned>(answer: &Answer) -> T {
        serde_json::from_slice(&answer.body())
            .unwrap_or_else(|err| panic!("{err}: {}", answer.text()))
    }

    #[tokio::test]
    async fn bodies_deserialize() {
        let mock = MockUpstream::start().await.unwrap();

        let chat = post(
            &mock,
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let chat: chat::CreateChatCompletionResponse = parse(&chat);
        assert_eq!(
            chat.choices[0].message.content.as_deref(),
            Some("mock reply: hi")
        );

        let stream = post(
            &mock,
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let text = stream.text();
        for data in sse_data(&text).into_iter().filter(|d| *d != "[DONE]") {
            let _chunk: chat::CreateChatCompletionStreamResponse =
                serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {data}"));
        }

        let completion = post(
            &mock,
            "/v1/completions",
            json!({"model": "m", "prompt": "x"}),
        )
        .await;
        let completion: completions::CreateCompletionResponse = parse(&completion);
        assert_eq!(completion.choices[0].text, "mock completion");

        let emb = post(
            &mock,
            "/v1/embeddings",
            json!({"model": "m", "input": ["a", "b"]}),
        )
        .await;
        let emb: embeddings::CreateEmbeddingResponse = parse(&emb);
        assert_eq!(emb.data.len(), 2);
        assert_eq!(emb.data[0].embedding.len(), 8);
        let b64 = post(
            &mock,
            "/v1/embeddings",
            json!({"model": "m", "input": "a", "encoding_format": "base64", "dimensions": 4}),
        )
        .await;
        let b64: embeddings::CreateBase64EmbeddingResponse = parse(&b64);
        assert_eq!(b64.data[0].embedding.0.len(), 24); // 16 bytes → 24 base64 chars

        for input in [json!("x"), json!(["x", "y"])] {
            let moderation = post(&mock, "/v1/moderations", json!({"input": input})).await;
            let moderation: moderations::CreateModerationResponse = parse(&moderation);
            assert!(moderation.results.iter().all(|r| !r.flagged));
        }
        let multimodal = post(
            &mock,
            "/v1/moderations",
            json!({"model": "omni", "input": [
                {"type": "text", "text": "x"},
                {"type": "image_url", "image_url": {"url": "data:,"}}
            ]}),
        )
        .await;
        let multimodal: moderations::CreateModerationResponse = parse(&multimodal);
        assert_eq!(multimodal.results.len(), 1);
        assert_eq!(
            multimodal.results[0]
                .category_applied_input_types
                .violence
                .len(),
            2
        );

        let response = post(&mock, "/v1/responses", json!({"model": "m", "input": "hi"})).await;
        let response: responses::Response = parse(&response);
        assert_eq!(response.status, responses::Status::Completed);
        assert_eq!(response.usage.map(|u| u.output_tokens), Some(3));

        let stream = post(
            &mock,
            "/v1/responses",
            json!({"model": "m", "input": "hi", "stream": true}),
        )
        .await;
        let text = stream.text();
        let events: Vec<responses::ResponseStreamEvent> = sse_data(&text)
            .into_iter()
            .map(|data| serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {data}")))
            .collect();
        assert!(matches!(
            events.last(),
            Some(responses::ResponseStreamEvent::ResponseCompleted(_))
        ));

        let list = call_with(&client(), &mock, Method::GET, "/v1/models", Some(KEY), "").await;
        let list: models::ListModelResponse = parse(&list);
        assert_eq!(list.data[0].id, "mock-model");
        let one = call_with(&client(), &mock, Method::GET, "/v1/models/x", Some(KEY), "").await;
        let one: models::Model = parse(&one);
        assert_eq!(one.id, "x");
    }
}

#[tokio::test]
async fn client_disconnect_during_delay_is_counted() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(ScriptedResponse::new(200).delay(Duration::from_secs(3)));
    let started = Instant::now();
    {
        let client = client();
        let pending = call_with(&client, &mock, Method::GET, "/v1/models", None, "");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), pending)
                .await
                .is_err()
        );
    }
    while mock.connections_closed() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "disconnect not noticed before the delay ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.request_count(), 1);
}

/// Scripted streams: chunks, pacing, gates and abnormal ends, over TCP.
mod scripted_streams {
    use std::sync::Arc;

    use hyper::body::Incoming;
    use tokio::sync::Notify;

    use super::*;

    /// Sends a request to the mock and returns the response with its body unread.
    async fn start(mock: &MockUpstream) -> http::Response<Incoming> {
        let request = Request::post(format!("http://{}/v1/chat/completions", mock.addr()))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), client().request(request))
            .await
            .expect("response head in time")
            .expect("response")
    }

    /// The next data frame: `Ok(None)` at the end, `Err` when the body broke, and a panic
    /// when nothing comes within `wait`.
    async fn next(body: &mut Incoming, wait: Duration) -> Result<Option<Bytes>, hyper::Error> {
        let frame = tokio::time::timeout(wait, body.frame())
            .await
            .expect("a frame in time");
        match frame {
            None => Ok(None),
            Some(Err(error)) => Err(error),
            Some(Ok(frame)) => Ok(Some(frame.into_data().expect("a data frame"))),
        }
    }

    /// Whether no frame arrives within `wait` (the body is held back).
    async fn nothing_within(body: &mut Incoming, wait: Duration) -> bool {
        tokio::time::timeout(wait, body.frame()).await.is_err()
    }

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn stream_sends_one_frame_per_chunk_as_an_event_stream() {
        let mock = MockUpstream::start().await.unwrap();
        let chunks = ["data: 1\n\n", "", "data: 2\n\n", "data: [DONE]\n\n"];
        mock.script(ScriptedResponse::stream(chunks));
        let answer = call_with(&client(), &mock, Method::POST, "/x", None, "").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-type"), "text/event-stream");
        assert!(answer.headers.get("content-length").is_none());
        assert_eq!(answer.header("transfer-encoding"), "chunked");
        assert_eq!(answer.header("x-request-id"), "mock-req-1");
        // Empty chunks send no frame.
        assert_eq!(
            answer.frames,
            ["data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"]
        );

        // The content type can be replaced, once.
        mock.script(
            ScriptedResponse::stream([Bytes::from_static(b"abc")])
                .header("content-type", "audio/mpeg"),
        );
        let answer = call_with(&client(), &mock, Method::POST, "/x", None, "").await;
        assert_eq!(answer.headers.get_all("content-type").iter().count(), 1);
        assert_eq!(answer.header("content-type"), "audio/mpeg");
        assert_eq!(answer.text(), "abc");

        // A plain scripted body still announces its length.
        mock.script(ScriptedResponse::new(201).body("plain"));
        let answer = call_with(&client(), &mock, Method::POST, "/x", None, "").await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(answer.header("content-length"), "5");
        assert!(answer.headers.get("content-type").is_none());
    }

    #[tokio::test]
    async fn chunk_delay_spaces_the_chunks_after_the_first() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script(
            ScriptedResponse::stream(["a", "b", "c"]).chunk_delay(Duration::from_millis(60)),
        );
        let started = Instant::now();
        let response = start(&mock).await;
        let mut body = response.into_body();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "a");
        let first = started.elapsed();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "b");
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "c");
        assert!(next(&mut body, LONG).await.unwrap().is_none());
        let total = started.elapsed();
        assert!(total >= Duration::from_millis(120), "{total:?}");
        // The mock's clock starts when it sends `a`, a little before it reaches us.
        assert!(
            total - first >= Duration::from_millis(100),
            "{first:?} {total:?}"
        );
    }

    #[tokio::test]
    async fn a_gate_holds_its_chunk_until_notified() {
        let mock = MockUpstream::start().await.unwrap();
        let gate = Arc::new(Notify::new());
        mock.script(ScriptedResponse::stream(["a", "b", "c"]).gate_before(1, Arc::clone(&gate)));
        let mut body = start(&mock).await.into_body();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "a");
        assert!(nothing_within(&mut body, Duration::from_millis(150)).await);
        gate.notify_one();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "b");
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "c");
        assert!(next(&mut body, LONG).await.unwrap().is_none());

        // A notification given before the body reaches the gate is kept (a permit), also
        // for a gate on the first chunk.
        let early = Arc::new(Notify::new());
        early.notify_one();
        mock.script(ScriptedResponse::stream(["x", "y"]).gate_before(0, Arc::clone(&early)));
        let answer = call_with(&client(), &mock, Method::POST, "/x", None, "").await;
        assert_eq!(answer.text(), "xy");
    }

    #[tokio::test]
    async fn reset_after_breaks_the_body_and_the_connection() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script(ScriptedResponse::stream(["a", "b", "c"]).reset_after(2));
        let mut body = start(&mock).await.into_body();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "a");
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "b");
        let broken = next(&mut body, LONG).await;
        assert!(broken.is_err(), "expected a broken body, got {broken:?}");
        assert!(mock.wait_connections_closed(1, LONG).await);

        // Fewer chunks than `n`: the reset comes after the last one, never a clean end.
        mock.script(ScriptedResponse::stream(["only"]).reset_after(5));
        let mut body = start(&mock).await.into_body();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "only");
        assert!(next(&mut body, LONG).await.is_err());

        // Right after the head.
        mock.script(ScriptedResponse::stream(["never"]).reset_after(0));
        let response = start(&mock).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        assert!(next(&mut body, LONG).await.is_err());
        assert!(mock.wait_connections_closed(3, LONG).await);
    }

    #[tokio::test]
    async fn reset_after_over_h2_resets_the_stream() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script(ScriptedResponse::stream(["a", "b"]).reset_after(1));
        let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let request = Request::post(format!("http://{}/v1/x", mock.addr()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = h2.request(request).await.unwrap();
        let mut body = response.into_body();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "a");
        assert!(next(&mut body, LONG).await.is_err());
    }

    #[tokio::test]
    async fn stall_after_holds_the_stream_open_until_the_client_leaves() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script(ScriptedResponse::stream(["a", "b"]).stall_after(1));
        let mut body = start(&mock).await.into_body();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "a");
        assert!(nothing_within(&mut body, Duration::from_millis(150)).await);
        assert_eq!(mock.connections_closed(), 0);
        // The client goes away: the connection ends.
        drop(body);
        assert!(mock.wait_connections_closed(1, LONG).await);
        assert_eq!(mock.connections_closed(), 1);
    }

    #[tokio::test]
    async fn the_earlier_abnormal_end_wins() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script(
            ScriptedResponse::stream(["a", "b", "c"])
                .stall_after(2)
                .reset_after(1),
        );
        let mut body = start(&mock).await.into_body();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "a");
        assert!(next(&mut body, LONG).await.is_err());
    }

    /// The hyper error behind a client error, if any.
    fn hyper_error(error: &hyper_util::client::legacy::Error) -> Option<&hyper::Error> {
        let mut source = std::error::Error::source(error);
        while let Some(error) = source {
            if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
                return Some(hyper);
            }
            source = error.source();
        }
        None
    }

    #[tokio::test]
    async fn reset_before_head_is_a_connection_error() {
        let mock = MockUpstream::start().await.unwrap();
        let client = client();
        let request = || {
            Request::post(format!("http://{}/v1/chat/completions", mock.addr()))
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap()
        };
        // A first, normal exchange leaves a pooled keep-alive connection: the reset also
        // reaches a client that reuses one.
        let first = client.request(request()).await.unwrap();
        assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
        first.into_body().collect().await.unwrap();
        mock.script(ScriptedResponse::reset_before_head().delay(Duration::from_millis(50)));
        let started = Instant::now();
        let error = tokio::time::timeout(LONG, client.request(request()))
            .await
            .expect("an answer in time")
            .expect_err("no response, only a closed connection");
        assert!(started.elapsed() >= Duration::from_millis(50));
        // HTTP/1.1: the connection closed while the client waited for the head.
        let hyper = hyper_error(&error).expect("a hyper error");
        assert!(hyper.is_incomplete_message(), "{hyper:?}");
        assert!(mock.wait_connections_closed(1, LONG).await);
        assert_eq!(mock.request_count(), 2);

        // The next request gets a fresh connection and the normal answer.
        let response = client.request(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(mock.request_count(), 3);
    }

    #[tokio::test]
    async fn reset_before_head_over_h2_resets_the_stream() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script(ScriptedResponse::reset_before_head());
        let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let request = || {
            Request::post(format!("http://{}/v1/x", mock.addr()))
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        let error = tokio::time::timeout(LONG, h2.request(request()))
            .await
            .expect("an answer in time")
            .expect_err("no response, only a reset stream");
        // HTTP/2: the stream is reset (`INTERNAL_ERROR`).
        let hyper = hyper_error(&error).expect("a hyper error");
        assert!(format!("{hyper:?}").contains("INTERNAL_ERROR"), "{hyper:?}");
        // Only the stream: the connection still serves the next request.
        let response = h2.request(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(mock.connections_closed(), 0);
    }

    #[tokio::test]
    async fn first_chunk_delay_sends_the_head_first() {
        let mock = MockUpstream::start().await.unwrap();
        // The head comes at once, however long the first chunk waits.
        mock.script(
            ScriptedResponse::stream(["data: 1\n\n"]).first_chunk_delay(Duration::from_secs(3600)),
        );
        let response = start(&mock).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();
        assert!(nothing_within(&mut body, Duration::from_millis(100)).await);
        drop(body);

        // The first chunk comes after the delay; the others are not held back by it.
        mock.script(
            ScriptedResponse::stream(["a", "b", "c"]).first_chunk_delay(Duration::from_millis(150)),
        );
        let started = Instant::now();
        let response = start(&mock).await;
        let mut body = response.into_body();
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "a");
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "b");
        assert_eq!(next(&mut body, LONG).await.unwrap().unwrap(), "c");
        assert!(next(&mut body, LONG).await.unwrap().is_none());

        // A plain body with a first chunk delay is paced too: its length is not announced.
        mock.script(
            ScriptedResponse::new(200)
                .body("late")
                .first_chunk_delay(Duration::from_millis(10)),
        );
        let answer = call_with(&client(), &mock, Method::POST, "/x", None, "").await;
        assert!(answer.headers.get("content-length").is_none());
        assert_eq!(answer.text(), "late");
    }

    /// The pacing itself, on the paused clock: the first chunk waits its own delay, the
    /// others the chunk delay.
    #[tokio::test(start_paused = true)]
    async fn first_chunk_delay_and_chunk_delay_on_the_paused_clock() {
        use tokio::time::Instant;

        let scripted = ScriptedResponse::stream(["a", "b"])
            .first_chunk_delay(Duration::from_secs(20))
            .chunk_delay(Duration::from_secs(3));
        let mut body = super::super::body::MockBody::paced(scripted.chunks, scripted.pacing);
        let mut at = Instant::now();
        for (chunk, waited) in [("a", 20), ("b", 3)] {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(frame, chunk);
            let elapsed = at.elapsed();
            assert!(
                elapsed >= Duration::from_secs(waited)
                    && elapsed < Duration::from_secs(waited) + Duration::from_millis(5),
                "{chunk}: {elapsed:?}"
            );
            at = Instant::now();
        }
        assert!(body.frame().await.is_none());
        assert_eq!(at.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn wait_connections_closed_is_bounded() {
        let mock = MockUpstream::start().await.unwrap();
        // Already reached.
        assert!(mock.wait_connections_closed(0, Duration::ZERO).await);
        // Not reached: gives up after the timeout.
        let started = Instant::now();
        assert!(
            !mock
                .wait_connections_closed(1, Duration::from_millis(100))
                .await
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
        // Reached while waiting.
        let waiting = mock.wait_connections_closed(1, LONG);
        let connect = async {
            let stream = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
            drop(stream);
        };
        let (reached, ()) = tokio::join!(waiting, connect);
        assert!(reached);
    }

    #[tokio::test]
    async fn wait_requests_sees_a_request_whose_answer_is_delayed() {
        let mock = MockUpstream::start().await.unwrap();
        assert!(mock.wait_requests(0, Duration::ZERO).await);
        assert!(!mock.wait_requests(1, Duration::from_millis(50)).await);
        mock.script(ScriptedResponse::new(200).delay(Duration::from_secs(3)));
        let request = Request::get(format!("http://{}/v1/models", mock.addr()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let client = client();
        let pending = client.request(request);
        // The request is recorded before its (delayed) answer.
        let (reached, answered) = tokio::join!(mock.wait_requests(1, LONG), async {
            tokio::time::timeout(Duration::from_millis(500), pending)
                .await
                .is_ok()
        });
        assert!(reached);
        assert!(!answered);
        assert_eq!(mock.request_count(), 1);
    }
}

/// The form endpoints: image edits and variations, transcriptions and translations.
mod forms {
    use super::*;
    use async_openai::types::audio::{
        CreateTranscriptionResponseJson, CreateTranscriptionResponseStreamEvent,
        CreateTranscriptionResponseVerboseJson, CreateTranslationResponseJson,
    };

    const BOUNDARY: &str = "mock-test-boundary";

    /// One form part: `(name, Some((filename, content type)) for a file, bytes)`.
    type FormPart<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u8]);

    fn form(parts: &[FormPart<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, file, data) in parts {
            out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            match file {
                Some((filename, content_type)) => out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        out
    }

    async fn post_form(
        mock: &MockUpstream,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Answer {
        let request = Request::post(format!("http://{}{path}", mock.addr()))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", content_type)
            .body(Full::new(body.into()))
            .unwrap();
        let response = client().request(request).await.expect("request");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            frames: vec![body],
        }
    }

    fn multipart() -> String {
        format!("multipart/form-data; boundary={BOUNDARY}")
    }

    fn audio_form(format: Option<&str>, extra: &[FormPart<'_>]) -> Vec<u8> {
        let wav = [7u8; 64_000];
        let mut parts: Vec<FormPart<'_>> = vec![
            ("file", Some(("a.wav", "audio/wav")), &wav),
            ("model", None, b"whisper-1"),
        ];
        if let Some(format) = format {
            parts.push(("response_format", None, format.as_bytes()));
        }
        parts.extend_from_slice(extra);
        form(&parts)
    }

    fn parse<T: serde::de::DeserializeOwned>(answer: &Answer) -> T {
        serde_json::from_slice(&answer.body())
            .unwrap_or_else(|err| panic!("{err}: {}", answer.text()))
    }

    fn assert_error(answer: &Answer, param: Option<&str>, code: Option<&str>) {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
        assert_eq!(answer.header("content-type"), "application/json");
        let error = &answer.json()["error"];
        assert_eq!(error["type"], "invalid_request_error", "{error}");
        assert_eq!(error["param"], json!(param), "{error}");
        assert_eq!(error["code"], json!(code), "{error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    const TEXT: &str = "mock transcript of a.wav (64000 bytes)";

    #[tokio::test]
    async fn transcriptions_in_every_format() {
        let mock = MockUpstream::start().await.unwrap();
        let path = "/v1/audio/transcriptions";

        let json = post_form(&mock, path, &multipart(), audio_form(None, &[])).await;
        assert_eq!(json.status, StatusCode::OK);
        assert_eq!(json.header("content-type"), "application/json");
        let value = json.json();
        assert_eq!(value["text"], TEXT);
        assert_eq!(value["mock_received"]["model"], "whisper-1");
        assert_eq!(value["mock_received"]["parts"], json!(["file", "model"]));
        let file = &value["mock_received"]["files"][0];
        assert_eq!(file["name"], "file");
        assert_eq!(file["filename"], "a.wav");
        assert_eq!(file["content_type"], "audio/wav");
        assert_eq!(file["len"], 64_000);
        assert_eq!(file["sha256"].as_str().unwrap().len(), 64);
        let typed: CreateTranscriptionResponseJson = parse(&json);
        assert_eq!(typed.text, TEXT);
        let recorded = mock.last_request().unwrap();
        assert_eq!(recorded.path, path);
        assert_eq!(recorded.header("content-type"), Some(multipart().as_str()));

        let text = post_form(&mock, path, &multipart(), audio_form(Some("text"), &[])).await;
        assert_eq!(text.status, StatusCode::OK);
        assert_eq!(text.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(text.text(), TEXT);

        let srt = post_form(&mock, path, &multipart(), audio_form(Some("srt"), &[])).await;
        assert_eq!(srt.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(
            srt.text(),
            format!("1\n00:00:00,000 --> 00:00:02,000\n{TEXT}\n\n")
        );
        let vtt = post_form(&mock, path, &multipart(), audio_form(Some("vtt"), &[])).await;
        assert_eq!(
            vtt.text(),
            format!("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n{TEXT}\n\n")
        );

        let verbose = post_form(
            &mock,
            path,
            &multipart(),
            audio_form(
                Some("verbose_json"),
                &[
                    ("language", None, b"fr"),
                    ("timestamp_granularities[]", None, b"word"),
                    ("timestamp_granularities[]", None, b"segment"),
                ],
            ),
        )
        .await;
        let typed: CreateTranscriptionResponseVerboseJson = parse(&verbose);
        assert_eq!(typed.text, TEXT);
        assert_eq!(typed.language, "fr");
        assert!((typed.duration - 2.0).abs() < 1e-6);
        assert_eq!(typed.segments.map(|s| s.len()), Some(0));
        assert_eq!(typed.words.map(|w| w.len()), Some(6));

        let odd = post_form(&mock, path, &multipart(), audio_form(Some("mp3"), &[])).await;
        assert_error(&odd, Some("response_format"), None);
    }

    #[tokio::test]
    async fn streamed_transcription_is_sse() {
        let mock = MockUpstream::start().await.unwrap();
        let answer = post_form(
            &mock,
            "/v1/audio/transcriptions",
            &multipart(),
            audio_form(None, &[("stream", None, b"true")]),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-type"), "text/event-stream");
        let text = answer.text();
        let events: Vec<CreateTranscriptionResponseStreamEvent> = sse_data(&text)
            .into_iter()
            .map(|data| serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {data}")))
            .collect();
        let mut deltas = String::new();
        for event in &events[..events.len() - 1] {
            match event {
                CreateTranscriptionResponseStreamEvent::TranscriptTextDelta(delta) => {
                    deltas.push_str(&delta.delta);
                }
                other => panic!("not a delta: {other:?}"),
            }
        }
        assert_eq!(deltas, TEXT);
        match events.last() {
            Some(CreateTranscriptionResponseStreamEvent::TranscriptTextDone(done)) => {
                assert_eq!(done.text, TEXT);
            }
            other => panic!("not a done event: {other:?}"),
        }
        assert!(!text.contains("[DONE]"));
    }

    #[tokio::test]
    async fn translations() {
        let mock = MockUpstream::start().await.unwrap();
        let path = "/v1/audio/translations";
        let json = post_form(&mock, path, &multipart(), audio_form(None, &[])).await;
        let typed: CreateTranslationResponseJson = parse(&json);
        assert_eq!(typed.text, "mock translation of a.wav (64000 bytes)");
        assert_eq!(json.json()["mock_received"]["model"], "whisper-1");
        // `stream` is a transcription feature: a translation answers JSON.
        let not_streamed = post_form(
            &mock,
            path,
            &multipart(),
            audio_form(None, &[("stream", None, b"true")]),
        )
        .await;
        assert_eq!(not_streamed.header("content-type"), "application/json");
        let verbose = post_form(
            &mock,
            path,
            &multipart(),
            audio_form(Some("verbose_json"), &[]),
        )
        .await
        .json();
        assert_eq!(verbose["task"], "translate");
        assert_eq!(verbose["language"], "english");
        assert_eq!(verbose["duration"], 2.0);
        assert_eq!(verbose["segments"], json!([]));
    }

    #[tokio::test]
    async fn audio_refusals_are_openai_errors() {
        let mock = MockUpstream::start().await.unwrap();
        let path = "/v1/audio/transcriptions";
        let no_file = form(&[("model", None, b"whisper-1")]);
        let answer = post_form(&mock, path, &multipart(), no_file).await;
        assert_error(&answer, Some("file"), None);
        let no_model = form(&[("file", Some(("a.wav", "audio/wav")), b"RIFF")]);
        let answer = post_form(&mock, path, &multipart(), no_model.clone()).await;
        assert_error(&answer, Some("model"), None);
        let empty_model = form(&[
            ("file", Some(("a.wav", "audio/wav")), b"RIFF"),
            ("model", None, b""),
        ]);
        let answer = post_form(&mock, path, &multipart(), empty_model).await;
        assert_error(&answer, Some("model"), None);

        let answer = post_form(&mock, path, "application/json", r#"{"model":"m"}"#).await;
        assert_error(&answer, None, Some("unsupported_content_type"));
        let answer = post_form(&mock, path, "multipart/form-data", no_model.clone()).await;
        assert_error(&answer, None, None);
        let whole = audio_form(None, &[]);
        let truncated = whole[..whole.len() - 10].to_vec();
        let answer = post_form(&mock, path, &multipart(), truncated).await;
        assert_error(&answer, None, None);
        let answer = post_form(&mock, path, &multipart(), "garbage").await;
        assert_error(&answer, None, None);
        let answer = post_form(&mock, "/v1/audio/translations", &multipart(), "").await;
        assert_error(&answer, None, None);
        // Every refused request was still recorded.
        assert_eq!(mock.request_count(), 8);
    }

    #[tokio::test]
    async fn image_edits_and_variations() {
        let mock = MockUpstream::start().await.unwrap();
        let png_a = [1u8; 300];
        let png_b = [2u8; 500];
        let edit = form(&[
            ("image[]", Some(("a.png", "image/png")), &png_a),
            ("image[]", Some(("b.png", "image/png")), &png_b),
            ("prompt", None, b"add a hat"),
            ("n", None, b"2"),
            ("model", None, b"gpt-image-1"),
        ]);
        let answer = post_form(&mock, "/v1/images/edits", &multipart(), edit).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let value = answer.json();
        assert_eq!(value["created"], 1_700_000_000);
        assert_eq!(value["data"].as_array().unwrap().len(), 2);
        assert!(value["data"][0]["b64_json"].is_string());
        let received = &value["mock_received"];
        assert_eq!(received["model"], "gpt-image-1");
        assert_eq!(
            received["parts"],
            json!(["image[]", "image[]", "prompt", "n", "model"])
        );
        assert_eq!(received["files"][0]["filename"], "a.png");
        assert_eq!(received["files"][0]["len"], 300);
        assert_eq!(received["files"][1]["filename"], "b.png");
        assert_eq!(received["files"][1]["len"], 500);
        assert_ne!(
            received["files"][0]["sha256"],
            received["files"][1]["sha256"]
        );

        let json_edit = post(
            &mock,
            "/v1/images/edits",
            json!({"prompt": "p", "images": [{"image_url": "data:image/png;base64,AAAA"}],
                   "response_format": "url"}),
        )
        .await;
        assert_eq!(json_edit.status, StatusCode::OK, "{}", json_edit.text());
        let value = json_edit.json();
        assert!(value["data"][0]["url"].is_string());
        assert_eq!(value["mock_received"]["model"], Value::Null);
        assert_eq!(value["mock_received"]["images"], 1);

        let variation = form(&[("image", Some(("a.png", "image/png")), &png_a)]);
        let answer = post_form(&mock, "/v1/images/variations", &multipart(), variation).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.json()["mock_received"]["model"], Value::Null);
        assert_eq!(answer.json()["mock_received"]["files"][0]["len"], 300);

        let no_image = form(&[("prompt", None, b"p")]);
        let answer = post_form(&mock, "/v1/images/edits", &multipart(), no_image.clone()).await;
        assert_error(&answer, Some("image"), None);
        let answer = post_form(&mock, "/v1/images/variations", &multipart(), no_image).await;
        assert_error(&answer, Some("image"), None);
        let no_prompt = form(&[("image", Some(("a.png", "image/png")), &png_a)]);
        let answer = post_form(&mock, "/v1/images/edits", &multipart(), no_prompt).await;
        assert_error(&answer, Some("prompt"), None);
        let bad_n = form(&[
            ("image", Some(("a.png", "image/png")), &png_a),
            ("n", None, b"two"),
        ]);
        let answer = post_form(&mock, "/v1/images/variations", &multipart(), bad_n).await;
        assert_error(&answer, Some("n"), None);
        let answer = post(&mock, "/v1/images/edits", json!({"prompt": "p"})).await;
        assert_error(&answer, Some("images"), None);
        let answer = post_form(&mock, "/v1/images/variations", "application/json", "{}").await;
        assert_error(&answer, None, Some("unsupported_content_type"));
    }

    #[tokio::test]
    async fn forms_are_matched_by_their_model_part() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script_for(
            "whisper-1",
            ScriptedResponse::openai_error(503, "overloaded", "server_error", None),
        );
        mock.script_for(
            "dall-e-2",
            ScriptedResponse::openai_error(429, "slow down", "requests", None),
        );
        let transcriptions = "/v1/audio/transcriptions";
        // The `model` part comes after the file part.
        let answer = post_form(&mock, transcriptions, &multipart(), audio_form(None, &[])).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        // Its queue is empty now: the normal answer.
        let answer = post_form(&mock, transcriptions, &multipart(), audio_form(None, &[])).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());

        // A form without a `model` part, and one naming another model, are not matched.
        let png = [1u8; 10];
        let no_model = form(&[("image", Some(("a.png", "image/png")), &png)]);
        let answer = post_form(&mock, "/v1/images/variations", &multipart(), no_model).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let other = form(&[
            ("model", None, b"dall-e-3"),
            ("image", Some(("a.png", "image/png")), &png),
        ]);
        let answer = post_form(&mock, "/v1/images/variations", &multipart(), other).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let matched = form(&[
            ("model", None, b"dall-e-2"),
            ("image", Some(("a.png", "image/png")), &png),
        ]);
        let answer = post_form(&mock, "/v1/images/variations", &multipart(), matched).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);

        assert_eq!(mock.request_count(), 5);
        assert_eq!(mock.request_count_for("whisper-1"), 2);
        assert_eq!(mock.request_count_for("dall-e-2"), 1);
        assert_eq!(mock.request_count_for("dall-e-3"), 1);
        let whisper = mock.requests_for("whisper-1");
        assert_eq!(whisper.len(), 2);
        assert!(whisper.iter().all(|r| r.path == transcriptions));
        assert_eq!(
            mock.requests_for("dall-e-2")[0].path,
            "/v1/images/variations"
        );
    }
}

#[tokio::test]
async fn only_the_latest_requests_are_kept() {
    let mock = MockUpstream::builder()
        .keep_requests(2)
        .start()
        .await
        .unwrap();
    for n in 0..5 {
        post(&mock, "/v1/embeddings", json!({"model": "m", "input": n})).await;
    }
    assert_eq!(mock.request_count(), 5);
    let kept: Vec<Value> = mock
        .requests()
        .iter()
        .map(|r| r.json().unwrap()["input"].clone())
        .collect();
    assert_eq!(kept, [json!(3), json!(4)]);

    let none = MockUpstream::builder()
        .keep_requests(0)
        .start()
        .await
        .unwrap();
    post(&none, "/v1/embeddings", json!({"model": "m", "input": "x"})).await;
    assert_eq!(none.request_count(), 1);
    assert!(none.requests().is_empty() && none.last_request().is_none());
}

/// Scripts and records per upstream model.
mod per_model {
    use super::*;

    /// Sends a chat completion for `model` with `key`; returns the status and the error
    /// message, if any.
    async fn chat(mock: &MockUpstream, model: &str, key: &str) -> (StatusCode, String) {
        let body = json!({"model": model, "messages": []}).to_string();
        let answer = call_with(
            &client(),
            mock,
            Method::POST,
            "/v1/chat/completions",
            Some(key),
            body,
        )
        .await;
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (answer.status, message)
    }

    fn error(status: u16, message: &str) -> ScriptedResponse {
        ScriptedResponse::openai_error(status, message, "server_error", None)
    }

    #[tokio::test]
    async fn model_scripts_answer_only_their_model_then_the_global_queue() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script_for("a", error(500, "a1"));
        mock.script_for("b", error(503, "b1"));
        mock.script_for("a", error(429, "a2"));
        mock.script(error(502, "global1"));
        mock.script(error(504, "global2"));

        // Interleaved: each model gets its own queue in order; the credential is not
        // checked for a scripted answer.
        assert_eq!(
            chat(&mock, "b", "bad").await,
            (StatusCode::SERVICE_UNAVAILABLE, "b1".into())
        );
        assert_eq!(
            chat(&mock, "a", "bad").await,
            (StatusCode::INTERNAL_SERVER_ERROR, "a1".into())
        );
        // A model with no script of its own takes the global queue.
        assert_eq!(
            chat(&mock, "c", KEY).await,
            (StatusCode::BAD_GATEWAY, "global1".into())
        );
        assert_eq!(
            chat(&mock, "a", KEY).await,
            (StatusCode::TOO_MANY_REQUESTS, "a2".into())
        );
        // Its own queue empty, `b` falls back to the global queue, then to the normal answer.
        assert_eq!(
            chat(&mock, "b", KEY).await,
            (StatusCode::GATEWAY_TIMEOUT, "global2".into())
        );
        assert_eq!(chat(&mock, "b", KEY).await, (StatusCode::OK, String::new()));
        // Not scripted: the credential is checked again.
        assert_eq!(chat(&mock, "a", "bad").await.0, StatusCode::UNAUTHORIZED);

        // A per-model script never answers a request for another model, nor one without a
        // model.
        mock.script_for("a", error(500, "a3"));
        let models = call_with(&client(), &mock, Method::GET, "/v1/models", Some(KEY), "").await;
        assert_eq!(models.status, StatusCode::OK);
        assert_eq!(chat(&mock, "A", KEY).await.0, StatusCode::OK);
        assert_eq!(chat(&mock, "a ", KEY).await.0, StatusCode::OK);
        assert_eq!(
            chat(&mock, "a", KEY).await,
            (StatusCode::INTERNAL_SERVER_ERROR, "a3".into())
        );

        // Every request was recorded, scripted or not.
        assert_eq!(mock.request_count(), 11);
        assert_eq!(mock.request_count_for("a"), 4);
        assert_eq!(mock.request_count_for("b"), 3);
        assert_eq!(mock.request_count_for("c"), 1);
        assert_eq!(mock.request_count_for("A"), 1);
        assert_eq!(mock.request_count_for("nobody"), 0);
        let keys: Vec<String> = mock
            .requests_for("a")
            .iter()
            .map(|r| r.header("authorization").unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "Bearer bad",
                format!("Bearer {KEY}").as_str(),
                "Bearer bad",
                format!("Bearer {KEY}").as_str()
            ]
        );
        assert!(
            mock.requests_for("b")
                .iter()
                .all(|r| r.json().unwrap()["model"] == "b")
        );
    }

    #[tokio::test]
    async fn only_a_top_level_model_string_counts() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script_for("m", error(500, "m"));
        for body in [
            json!({"model": 7, "messages": []}),
            json!({"input": {"model": "m"}}),
            json!([{"model": "m"}]),
            json!({"model": null}),
        ] {
            let answer = post(&mock, "/v1/chat/completions", body.clone()).await;
            assert_ne!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        }
        assert_eq!(mock.request_count_for("m"), 0);
        assert!(mock.requests_for("m").is_empty());
        // Escapes are decoded: this is model `m`.
        let answer = call_with(
            &client(),
            &mock,
            Method::POST,
            "/v1/embeddings",
            Some(KEY),
            r#"{"input": "x", "model": "\u006d"}"#,
        )
        .await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(mock.request_count_for("m"), 1);
    }

    #[tokio::test]
    async fn per_model_counts_are_kept_beyond_the_kept_requests() {
        let mock = MockUpstream::builder()
            .keep_requests(2)
            .start()
            .await
            .unwrap();
        for (model, input) in [("a", 1), ("b", 2), ("a", 3), ("a", 4)] {
            post(
                &mock,
                "/v1/embeddings",
                json!({"model": model, "input": input}),
            )
            .await;
        }
        assert_eq!(mock.request_count_for("a"), 3);
        assert_eq!(mock.request_count_for("b"), 1);
        let kept: Vec<Value> = mock
            .requests_for("a")
            .iter()
            .map(|r| r.json().unwrap()["input"].clone())
            .collect();
        assert_eq!(kept, [json!(3), json!(4)]);
        assert!(mock.requests_for("b").is_empty());

        let none = MockUpstream::builder()
            .keep_requests(0)
            .start()
            .await
            .unwrap();
        none.script_for("a", error(500, "a"));
        for model in ["a", "a", "b"] {
            post(
                &none,
                "/v1/embeddings",
                json!({"model": model, "input": "x"}),
            )
            .await;
        }
        assert_eq!(none.request_count(), 3);
        assert_eq!(none.request_count_for("a"), 2);
        assert_eq!(none.request_count_for("b"), 1);
        assert!(none.requests_for("a").is_empty());
    }

    #[tokio::test]
    async fn per_model_counts_stop_at_ten_thousand_models() {
        let mock = MockUpstream::builder()
            .keep_requests(0)
            .start()
            .await
            .unwrap();
        let request = || super::super::RecordedRequest {
            method: Method::POST,
            path: "/v1/embeddings".to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        for n in 0..super::super::MAX_COUNTED_MODELS {
            mock.shared.record(request(), Some(&format!("model-{n}")));
        }
        // A new model is not counted apart; the models already seen still are.
        mock.shared.record(request(), Some("one-too-many"));
        mock.shared.record(request(), Some("model-0"));
        assert_eq!(mock.request_count_for("one-too-many"), 0);
        assert_eq!(mock.request_count_for("model-0"), 2);
        assert_eq!(mock.request_count_for("model-9999"), 1);
        assert_eq!(mock.request_count(), 10_002);
        assert_eq!(mock.shared.recorded().per_model.len(), 10_000);
    }

    #[tokio::test]
    async fn a_model_can_be_reset_before_the_head() {
        let mock = MockUpstream::start().await.unwrap();
        mock.script_for("primary", ScriptedResponse::reset_before_head());
        let client = client();
        let send = |model: &str| {
            let request = Request::post(format!("http://{}/v1/chat/completions", mock.addr()))
                .header("authorization", format!("Bearer {KEY}"))
                .body(Full::new(Bytes::from(
                    json!({"model": model, "messages": []}).to_string(),
                )))
                .unwrap();
            client.request(request)
        };
        assert!(send("primary").await.is_err());
        assert_eq!(send("fallback").await.unwrap().status(), StatusCode::OK);
        assert_eq!(send("primary").await.unwrap().status(), StatusCode::OK);
        assert_eq!(mock.request_count_for("primary"), 2);
        assert_eq!(mock.request_count_for("fallback"), 1);
    }
}

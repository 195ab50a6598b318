//! Every endpoint besides chat: the client's answer, and what the upstream received.

use async_openai::error::OpenAIError;
use async_openai::types::audio::{
    CreateSpeechRequest, CreateSpeechRequestArgs, SpeechModel, SpeechResponseFormat, Voice,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use async_openai::types::moderations::CreateModerationRequestArgs;
use async_openai::types::responses::CreateResponseArgs;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{
    Harness, PROVIDER_KEY, RawResponse, assert_forwarded, assert_openai_error, collect_stream,
    send, with_model,
};

#[tokio::test]
async fn embeddings_are_forwarded_and_answered() {
    let harness = Harness::start().await;
    let request = CreateEmbeddingRequestArgs::default()
        .model("mock/text-embedding-3-small")
        .input(["first text", "second text"])
        .dimensions(4u32)
        .build()
        .unwrap();
    let sent = serde_json::to_vec(&request).unwrap();
    let response = harness.client().embeddings().create(request).await.unwrap();
    assert_eq!(response.model, "text-embedding-3-small");
    assert_eq!(response.data.len(), 2);
    assert!(response.data.iter().all(|e| e.embedding.len() == 4));
    assert_ne!(response.data[0].embedding, response.data[1].embedding);

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/embeddings",
        &with_model(
            &sent,
            "mock/text-embedding-3-small",
            "text-embedding-3-small",
        ),
    );
}

#[tokio::test]
async fn completions_are_forwarded_and_answered() {
    let harness = Harness::start().await;
    let request = CreateCompletionRequestArgs::default()
        .model("mock/gpt-3.5-turbo-instruct")
        .prompt("Say this is a test")
        .max_tokens(7u32)
        .build()
        .unwrap();
    let sent = serde_json::to_vec(&request).unwrap();
    let response = harness
        .client()
        .completions()
        .create(request)
        .await
        .unwrap();
    assert_eq!(response.model, "gpt-3.5-turbo-instruct");
    assert_eq!(response.choices[0].text, "mock completion");

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/completions",
        &with_model(
            &sent,
            "mock/gpt-3.5-turbo-instruct",
            "gpt-3.5-turbo-instruct",
        ),
    );
}

#[tokio::test]
async fn completion_streams_end_cleanly() {
    let harness = Harness::start().await;
    let mut request = CreateCompletionRequestArgs::default()
        .model("fast")
        .prompt("stream it")
        .build()
        .unwrap();
    request.stream = Some(true);
    let sent = serde_json::to_vec(&request).unwrap();
    let stream = harness
        .client()
        .completions()
        .create_stream(request)
        .await
        .unwrap();
    let chunks: Vec<_> = collect_stream(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter().map(|choice| choice.text.as_str()))
        .collect();
    assert_eq!(text, "mock completion");

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/completions",
        &with_model(&sent, "fast", "gpt-4o-mini"),
    );
}

#[tokio::test]
async fn moderations_are_forwarded_and_answered() {
    let harness = Harness::start().await;
    let request = CreateModerationRequestArgs::default()
        .model("mock/omni-moderation-latest")
        .input(["is this fine?", "and this?"])
        .build()
        .unwrap();
    let sent = serde_json::to_vec(&request).unwrap();
    let response = harness
        .client()
        .moderations()
        .create(request)
        .await
        .unwrap();
    assert_eq!(response.model, "omni-moderation-latest");
    assert_eq!(response.results.len(), 2);
    assert!(response.results.iter().all(|r| !r.flagged));

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/moderations",
        &with_model(
            &sent,
            "mock/omni-moderation-latest",
            "omni-moderation-latest",
        ),
    );
}

#[tokio::test]
async fn responses_are_forwarded_and_answered() {
    let harness = Harness::start().await;
    let request = CreateResponseArgs::default()
        .model("mock/gpt-4o-mini")
        .input("hello responses")
        .max_output_tokens(64u32)
        .build()
        .unwrap();
    let sent = serde_json::to_vec(&request).unwrap();
    let response = harness.client().responses().create(request).await.unwrap();
    assert_eq!(response.model, "gpt-4o-mini");
    assert_eq!(
        response.output_text().as_deref(),
        Some("mock reply: hello responses")
    );

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/responses",
        &with_model(&sent, "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
}

#[tokio::test]
async fn response_streams_are_typed_events_without_done() {
    let harness = Harness::start().await;
    let mut request = CreateResponseArgs::default()
        .model("fast")
        .input("one two three")
        .build()
        .unwrap();
    request.stream = Some(true);
    let sent = serde_json::to_vec(&request).unwrap();
    let stream = harness
        .client()
        .responses()
        .create_stream(request)
        .await
        .unwrap();
    let events: Vec<Value> = collect_stream(stream)
        .await
        .into_iter()
        .map(|event| serde_json::to_value(event.unwrap()).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "mock reply: one two three");
    let sequence: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(sequence, (0..events.len() as u64).collect::<Vec<_>>());

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/responses",
        &with_model(&sent, "fast", "gpt-4o-mini"),
    );

    // On the wire: `event:` + `data:` frames and no `[DONE]`.
    let body = r#"{"model":"mock/gpt-4o-mini","input":"raw","stream":true}"#;
    let raw = harness.post_json("/responses", body).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some("text/event-stream"));
    let text = raw.text();
    assert!(
        text.starts_with("event: response.created\ndata: {"),
        "{text}"
    );
    assert!(text.contains("event: response.completed\n"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
}

#[tokio::test]
async fn rerank_is_forwarded_and_answered() {
    let harness = Harness::start().await;
    let body = r#"{"model":"mock/rerank-english-v3.0","query":"red apple","documents":["green pear","a red apple pie",{"text":"apple"}],"top_n":2,"return_documents":true}"#;
    let response = harness.post_json("/rerank", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json = response.json();
    assert_eq!(json["model"], "rerank-english-v3.0");
    assert_eq!(
        json["results"],
        json!([
            {"index": 1, "relevance_score": 1.0, "document": {"text": "a red apple pie"}},
            {"index": 2, "relevance_score": 0.5, "document": {"text": "apple"}},
        ])
    );
    assert!(json["usage"].is_object());

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/rerank",
        &with_model(
            body.as_bytes(),
            "mock/rerank-english-v3.0",
            "rerank-english-v3.0",
        ),
    );
}

fn speech_request(format: SpeechResponseFormat) -> CreateSpeechRequest {
    CreateSpeechRequestArgs::default()
        .model(SpeechModel::Other("mock/tts-1".into()))
        .input("The quick brown fox jumped over the lazy dog.")
        .voice(Voice::Alloy)
        .response_format(format)
        .build()
        .unwrap()
}

/// Calls the mock directly (no router) with `body`.
async fn direct_to_mock(harness: &Harness, path: &str, body: Vec<u8>) -> RawResponse {
    let request = Request::post(format!("{}{path}", harness.upstream.base_url()))
        .header("authorization", format!("Bearer {PROVIDER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(request).await
}

#[tokio::test]
async fn speech_bytes_are_the_upstream_audio_unchanged() {
    let harness = Harness::start().await;
    let request = speech_request(SpeechResponseFormat::Wav);
    let sent = serde_json::to_vec(&request).unwrap();
    let audio = harness
        .client()
        .audio()
        .speech()
        .create(request)
        .await
        .unwrap();
    let forwarded = with_model(&sent, "mock/tts-1", "tts-1");
    let seen = harness.only_upstream_request();
    assert_forwarded(&seen, "/v1/audio/speech", &forwarded);

    let direct = direct_to_mock(&harness, "/audio/speech", forwarded).await;
    assert_eq!(direct.status, 200);
    assert!(direct.body.len() > 1024, "several chunks of audio");
    assert_eq!(audio.bytes, direct.body);
}

#[tokio::test]
async fn speech_keeps_the_upstream_content_type_on_both_paths() {
    let harness = Harness::start().await;
    for (format, content_type) in [
        (SpeechResponseFormat::Wav, "audio/wav"),
        (SpeechResponseFormat::Mp3, "audio/mpeg"),
        (SpeechResponseFormat::Flac, "audio/flac"),
    ] {
        let sent = serde_json::to_vec(&speech_request(format)).unwrap();
        let forwarded = with_model(&sent, "mock/tts-1", "tts-1");
        let long = harness.post_json("/audio/speech", sent.clone()).await;
        let short = harness.post_json("/speech", sent.clone()).await;
        let direct = direct_to_mock(&harness, "/audio/speech", forwarded.clone()).await;
        for response in [&long, &short] {
            assert_eq!(response.status, 200, "{}", response.text());
            assert_eq!(response.header("content-type"), Some(content_type));
            assert_eq!(response.body, direct.body);
        }
        // Router calls and the direct call, in that order: both router paths went to
        // `/v1/audio/speech` with the same rewritten body.
        let requests = harness.upstream.requests();
        let router_calls = &requests[requests.len() - 3..requests.len() - 1];
        for seen in router_calls {
            assert_forwarded(seen, "/v1/audio/speech", &forwarded);
        }
    }
    assert_eq!(harness.upstream.request_count(), 9);
}

#[tokio::test]
async fn image_generations_are_forwarded_and_answered() {
    let harness = Harness::start().await;
    let body = r#"{"prompt":"a white siamese cat","model":"mock/dall-e-3","n":2,"size":"1024x1024","response_format":"url"}"#;
    let response = harness.post_json("/images/generations", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data.iter().all(|d| d["url"].as_str().is_some()));

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/images/generations",
        &with_model(body.as_bytes(), "mock/dall-e-3", "dall-e-3"),
    );
}

#[tokio::test]
async fn models_are_listed_by_the_router_in_openai_shape() {
    let harness = Harness::start().await;
    let list = harness.client().models().list().await.unwrap();
    assert_eq!(list.object, "list");
    let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        ["mock/gpt-4o-mini", "mock/text-embedding-3-small", "fast"]
    );
    for model in &list.data {
        assert_eq!(model.object, "model");
        assert!(model.created > 0);
        assert!(!model.owned_by.is_empty());
    }
    assert_eq!(list.data[0].owned_by, "mock");

    let raw = harness.get("/models").await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some("application/json"));
    assert!(raw.header("x-request-id").is_some());
    assert_eq!(raw.json()["object"], "list");
    // The list is the router's: the upstream is never asked.
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn a_model_is_retrieved_with_slashes_in_its_id() {
    let harness = Harness::start().await;
    let client = harness.client();
    let model = client.models().retrieve("mock/gpt-4o-mini").await.unwrap();
    assert_eq!(model.id, "mock/gpt-4o-mini");
    assert_eq!(model.object, "model");
    assert_eq!(model.owned_by, "mock");

    let alias = client.models().retrieve("fast").await.unwrap();
    assert_eq!(alias.id, "fast");
    assert_eq!(alias.object, "model");

    for path in [
        "/models/mock%2Ftext-embedding-3-small",
        "/models/mock%2ftext-embedding-3-small",
        "/models/mock/text-embedding-3-small",
    ] {
        let raw = harness.get(path).await;
        assert_eq!(raw.status, 200, "{path}: {}", raw.text());
        let json = raw.json();
        assert_eq!(json["id"], "mock/text-embedding-3-small", "{path}");
        assert_eq!(json["object"], "model");
    }

    match client.models().retrieve("mock/not-listed").await {
        Err(OpenAIError::ApiError(error)) => {
            assert_eq!(error.status_code, 404);
            assert_eq!(error.api_error.code.as_deref(), Some("model_not_found"));
            assert!(error.api_error.message.contains("mock/not-listed"));
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    let raw = harness.get("/models/ghost%2Fx").await;
    raw.assert_error(404, Some("model_not_found"));
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn retrieve_model_answers_get_only() {
    let harness = Harness::start().await;
    let request = harness
        .request(Method::DELETE, "/models/mock/gpt-4o-mini")
        .header(
            "authorization",
            format!("Bearer {}", crate::support::ROUTER_KEY),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(request).await;
    response.assert_error(405, Some("method_not_allowed"));
    assert_eq!(response.header("allow"), Some("GET"));
    assert_openai_error(&response.body, Some("method_not_allowed"));
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn model_ids_with_colons_are_retrieved_whole() {
    let harness =
        Harness::with(|builder| builder.models("mock", ["ft:gpt-4o:org::id", "llama3.1:8b"])).await;
    let client = harness.client();
    for id in ["mock/ft:gpt-4o:org::id", "mock/llama3.1:8b"] {
        let model = client.models().retrieve(id).await.unwrap();
        assert_eq!(model.id, id);
        assert_eq!(model.owned_by, "mock");
    }
    let list = client.models().list().await.unwrap();
    assert!(list.data.iter().any(|m| m.id == "mock/ft:gpt-4o:org::id"));

    // And such an id routes, reaching the upstream whole.
    let body = r#"{"model":"mock/ft:gpt-4o:org::id","messages":[{"role":"user","content":"x"}]}"#;
    let response = harness.post_json("/chat/completions", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "ft:gpt-4o:org::id");
    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(
            body.as_bytes(),
            "mock/ft:gpt-4o:org::id",
            "ft:gpt-4o:org::id",
        ),
    );
}

#[tokio::test]
async fn retrieve_refuses_malformed_ids() {
    let harness = Harness::start().await;
    for path in [
        "/models/mock%2F..%2Fsecret",
        "/models/mock/../secret",
        "/models/mock%2Fa%00b",
        "/models/mock%2Fa%0Ab",
    ] {
        let response = harness.get(path).await;
        let error = response.assert_error(400, Some("invalid_model"));
        assert_eq!(error["param"], "model", "{path}");
    }
    assert_eq!(harness.upstream.request_count(), 0);
}

//! Multipart endpoints (transcriptions, translations, image edits and variations) and the
//! optional-model defaults, over real TCP: what the client got, and what the mock received
//! (the form re-parsed: `model` rewritten, every other part kept, in order, under a new
//! boundary).

#![allow(deprecated)] // async-openai marks the translation API deprecated.

use std::convert::Infallible;

use ai_router::mock::RecordedRequest;
use ai_router::provider::HttpProvider;
use ai_router::route::Endpoint;
use async_openai::types::audio::{
    AudioInput, AudioResponseFormat, CreateTranscriptionRequest, CreateTranscriptionRequestArgs,
    CreateTranscriptionResponseStreamEvent, CreateTranslationRequestArgs, TimestampGranularity,
};
use bytes::Bytes;
use http::{Method, Request};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support::{
    EXCHANGE_TIMEOUT, Harness, PROVIDER_KEY, ROUTER_KEY, RawResponse, assert_forwarded,
    assert_provider_key_only, client_for, collect_stream, mock_provider, send, with_model,
};
use ai_router::mock::ScriptedResponse;

/// The boundary of the forms the tests write by hand.
const CLIENT_BOUNDARY: &str = "client-boundary-7MA4YWxkTrZu0gW";

/// One form part as a client sends it and the upstream receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FormPart {
    name: Option<String>,
    filename: Option<String>,
    content_type: Option<String>,
    data: Bytes,
}

impl FormPart {
    fn text(name: &str, value: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            filename: None,
            content_type: None,
            data: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn file(name: &str, filename: &str, content_type: &str, data: impl Into<Bytes>) -> Self {
        Self {
            name: Some(name.to_owned()),
            filename: Some(filename.to_owned()),
            content_type: Some(content_type.to_owned()),
            data: data.into(),
        }
    }

    fn is(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }
}

/// `multipart/form-data; boundary=<boundary>`.
fn form_type(boundary: &str) -> String {
    format!("multipart/form-data; boundary={boundary}")
}

/// Writes a form by hand, curl style: `Content-Disposition` then `Content-Type` per part.
fn encode(boundary: &str, parts: &[FormPart]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let name = part.name.as_deref().unwrap_or("");
        match &part.filename {
            Some(filename) => out.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                )
                .as_bytes(),
            ),
            None => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n").as_bytes(),
            ),
        }
        if let Some(content_type) = &part.content_type {
            out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&part.data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// Parses a whole form with multer (panics when it is not one).
async fn parse_form(content_type: &str, body: Bytes) -> Vec<FormPart> {
    let boundary = multer::parse_boundary(content_type).unwrap();
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.unwrap() {
        let name = field.name().map(str::to_owned);
        let filename = field.file_name().map(str::to_owned);
        let content_type = field
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let data = field.bytes().await.unwrap();
        parts.push(FormPart {
            name,
            filename,
            content_type,
            data,
        });
    }
    parts
}

/// `parts` with the value of the (first) `model` part replaced by `model`.
fn with_model_part(parts: &[FormPart], model: &str) -> Vec<FormPart> {
    let mut parts = parts.to_vec();
    let part = parts
        .iter_mut()
        .find(|p| p.is("model"))
        .expect("a model part");
    part.data = Bytes::copy_from_slice(model.as_bytes());
    parts
}

/// The boundary of a recorded multipart request.
fn boundary_of(seen: &RecordedRequest) -> String {
    multer::parse_boundary(seen.header("content-type").expect("a content-type")).unwrap()
}

/// Asserts the upstream got `POST path` with the provider key, a multipart body under a
/// boundary other than `client_boundary`, and exactly the parts `expected`, in order.
async fn assert_forwarded_form(
    seen: &RecordedRequest,
    path: &str,
    client_boundary: &str,
    expected: &[FormPart],
) {
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, path);
    assert_provider_key_only(seen);
    let content_type = seen.header("content-type").expect("a content-type");
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
    let boundary = boundary_of(seen);
    assert_ne!(
        boundary, client_boundary,
        "the form keeps the client's boundary"
    );
    let parts = parse_form(content_type, seen.body.clone()).await;
    assert_eq!(parts.len(), expected.len(), "{parts:#?}");
    for (got, want) in parts.iter().zip(expected) {
        assert_eq!(got, want);
    }
}

/// `POST <mount><path>` through the router with the router key and a multipart body.
async fn post_form(
    harness: &Harness,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> RawResponse {
    let request = Request::post(harness.url(path))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap();
    send(request).await
}

/// `POST /v1<path>` on the mock directly, with the provider key.
async fn post_form_direct(
    harness: &Harness,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> RawResponse {
    let request = Request::post(format!("{}{path}", harness.upstream.base_url()))
        .header("authorization", format!("Bearer {PROVIDER_KEY}"))
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap();
    send(request).await
}

/// `len` bytes of a deterministic, non-repeating-looking pattern.
fn audio_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A transcription form (file first, as curl examples send it).
fn transcription_parts(model: &str, extra: &[FormPart]) -> Vec<FormPart> {
    let mut parts = vec![
        FormPart::file("file", "speech.wav", "audio/wav", audio_bytes(4096)),
        FormPart::text("model", model),
    ];
    parts.extend_from_slice(extra);
    parts
}

fn transcription_request(model: &str, audio: &[u8]) -> CreateTranscriptionRequest {
    CreateTranscriptionRequestArgs::default()
        .file(AudioInput::from_vec_u8("speech.wav".into(), audio.to_vec()))
        .model(model)
        .language("en")
        .prompt("a calm voice")
        .build()
        .unwrap()
}

// ------------------------------------------------------------- transcriptions

#[tokio::test]
async fn transcription_via_async_openai_reaches_the_mock_with_the_upstream_model() {
    let harness = Harness::start().await;
    let audio = audio_bytes(3000);
    // The same request straight to the mock first: the form exactly as the client writes it.
    let direct = client_for(&harness.upstream.base_url(), PROVIDER_KEY)
        .audio()
        .transcription()
        .create(transcription_request("mock/whisper-1", &audio))
        .await
        .unwrap();
    assert_eq!(direct.text, "mock transcript of speech.wav (3000 bytes)");
    let client_request = harness.upstream.last_request().unwrap();
    let client_type = client_request.header("content-type").unwrap().to_owned();
    let client_parts = parse_form(&client_type, client_request.body.clone()).await;
    assert_eq!(
        client_parts
            .iter()
            .map(|p| p.name.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["file", "model", "language", "prompt"],
        "async-openai sends the file first"
    );

    let response = harness
        .client()
        .audio()
        .transcription()
        .create(transcription_request("mock/whisper-1", &audio))
        .await
        .unwrap();
    assert_eq!(response.text, "mock transcript of speech.wav (3000 bytes)");

    let requests = harness.upstream.requests();
    assert_eq!(requests.len(), 2);
    let seen = &requests[1];
    assert_forwarded_form(
        seen,
        "/v1/audio/transcriptions",
        &boundary_of(&client_request),
        &with_model_part(&client_parts, "whisper-1"),
    )
    .await;
    assert_eq!(client_parts[0].data, audio);
}

#[tokio::test]
async fn transcription_text_format_passes_through_as_text_plain() {
    let harness = Harness::start().await;
    let parts = transcription_parts(
        "mock/whisper-1",
        &[FormPart::text("response_format", "text")],
    );
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &parts),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        response.text(),
        "mock transcript of speech.wav (4096 bytes)"
    );
    let seen = harness.only_upstream_request();
    assert_forwarded_form(
        &seen,
        "/v1/audio/transcriptions",
        CLIENT_BOUNDARY,
        &with_model_part(&parts, "whisper-1"),
    )
    .await;

    // The same through async-openai's raw call: the bytes, unchanged.
    let mut request = transcription_request("mock/whisper-1", &audio_bytes(10));
    request.response_format = Some(AudioResponseFormat::Text);
    let bytes = harness
        .client()
        .audio()
        .transcription()
        .create_raw(request)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"mock transcript of speech.wav (10 bytes)");
}

#[tokio::test]
async fn verbose_json_transcription_is_typed() {
    let harness = Harness::start().await;
    let mut request = transcription_request("mock/whisper-1", &audio_bytes(64_000));
    request.response_format = Some(AudioResponseFormat::VerboseJson);
    request.timestamp_granularities = Some(vec![
        TimestampGranularity::Word,
        TimestampGranularity::Segment,
    ]);
    let response = harness
        .client()
        .audio()
        .transcription()
        .create_verbose_json(request)
        .await
        .unwrap();
    assert_eq!(response.text, "mock transcript of speech.wav (64000 bytes)");
    assert_eq!(response.language, "en");
    assert!((response.duration - 2.0).abs() < 1e-6);
    assert_eq!(response.segments.map(|s| s.len()), Some(0));
    assert_eq!(response.words.map(|w| w.len()), Some(6));

    let seen = harness.only_upstream_request();
    let parts = parse_form(seen.header("content-type").unwrap(), seen.body.clone()).await;
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "file",
            "model",
            "language",
            "prompt",
            "response_format",
            "timestamp_granularities[]",
            "timestamp_granularities[]",
        ]
    );
    assert_eq!(parts[1].data, "whisper-1");
    assert_eq!(parts[5].data, "word");
    assert_eq!(parts[6].data, "segment");
}

#[tokio::test]
async fn translation_via_async_openai_is_rewritten() {
    let harness = Harness::start().await;
    let audio = audio_bytes(2048);
    let request = CreateTranslationRequestArgs::default()
        .file(AudioInput::from_vec_u8("french.mp3".into(), audio.clone()))
        .model("mock/whisper-1")
        .prompt("merci")
        .build()
        .unwrap();
    let response = harness
        .client()
        .audio()
        .translation()
        .create(request)
        .await
        .unwrap();
    assert_eq!(response.text, "mock translation of french.mp3 (2048 bytes)");

    let seen = harness.only_upstream_request();
    assert_eq!(seen.path, "/v1/audio/translations");
    assert_provider_key_only(&seen);
    let parts = parse_form(seen.header("content-type").unwrap(), seen.body.clone()).await;
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["file", "model", "prompt"]);
    assert_eq!(parts[0].filename.as_deref(), Some("french.mp3"));
    assert_eq!(parts[0].data, audio);
    assert_eq!(parts[1].data, "whisper-1");
    assert_eq!(parts[2].data, "merci");
}

#[tokio::test]
async fn model_first_or_last_is_rewritten_and_the_order_kept() {
    let harness = Harness::start().await;
    let audio = audio_bytes(5000);
    let file = FormPart::file("file", "résumé vocal.m4a", "audio/mp4", audio.clone());
    let model = FormPart::text("model", "mock/whisper-1");
    let fields = [
        FormPart::text("language", "fr"),
        // Text that looks like a delimiter line, but is not one.
        FormPart::text("prompt", "line one\r\n--client-boundary\r\nline two"),
        FormPart::text("timestamp_granularities[]", "segment"),
    ];
    let mut python_order = vec![model.clone()];
    python_order.extend_from_slice(&fields);
    python_order.push(file.clone());
    let mut curl_order = vec![file];
    curl_order.extend_from_slice(&fields);
    curl_order.push(model);

    for (parts, content_type) in [
        (python_order, form_type(CLIENT_BOUNDARY)),
        // A quoted boundary, as some clients send it.
        (
            curl_order,
            format!("multipart/form-data; boundary=\"{CLIENT_BOUNDARY}\""),
        ),
    ] {
        let before = harness.upstream.request_count();
        let response = post_form(
            &harness,
            "/audio/transcriptions",
            &content_type,
            encode(CLIENT_BOUNDARY, &parts),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        let json = response.json();
        assert_eq!(
            json["text"],
            "mock transcript of résumé vocal.m4a (5000 bytes)"
        );
        let received = &json["mock_received"];
        assert_eq!(received["model"], "whisper-1");
        let names: Vec<Value> = parts.iter().map(|p| json!(p.name)).collect();
        assert_eq!(received["parts"], Value::Array(names));
        assert_eq!(received["files"][0]["sha256"], sha256_hex(&audio));

        assert_eq!(harness.upstream.request_count(), before + 1);
        let seen = harness.upstream.last_request().unwrap();
        assert_forwarded_form(
            &seen,
            "/v1/audio/transcriptions",
            CLIENT_BOUNDARY,
            &with_model_part(&parts, "whisper-1"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_10_mib_file_arrives_intact() {
    let harness = Harness::start().await;
    let audio = audio_bytes(10 * 1024 * 1024);
    let digest = sha256_hex(&audio);
    let parts = vec![
        FormPart::text("model", "mock/whisper-1"),
        FormPart::file("file", "long.flac", "audio/flac", audio),
    ];
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &parts),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    assert_eq!(
        json["text"],
        format!("mock transcript of long.flac ({} bytes)", 10 * 1024 * 1024)
    );
    assert_eq!(json["mock_received"]["files"][0]["sha256"], digest);

    let seen = harness.only_upstream_request();
    let forwarded = parse_form(seen.header("content-type").unwrap(), seen.body.clone()).await;
    assert_eq!(forwarded.len(), 2);
    assert_eq!(forwarded[0].data, "whisper-1");
    assert_eq!(forwarded[1].data.len(), 10 * 1024 * 1024);
    assert_eq!(sha256_hex(&forwarded[1].data), digest);
    assert_eq!(forwarded[1].content_type.as_deref(), Some("audio/flac"));
}

#[tokio::test]
async fn a_streamed_transcription_passes_through_byte_for_byte() {
    let harness = Harness::start().await;
    let parts = transcription_parts("mock/whisper-1", &[FormPart::text("stream", "true")]);
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &parts),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let seen = harness.only_upstream_request();
    let upstream_parts = with_model_part(&parts, "whisper-1");
    assert_forwarded_form(
        &seen,
        "/v1/audio/transcriptions",
        CLIENT_BOUNDARY,
        &upstream_parts,
    )
    .await;

    let direct = post_form_direct(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &upstream_parts),
    )
    .await;
    assert_eq!(direct.status, 200);
    assert_eq!(direct.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        response.text(),
        direct.text(),
        "the router changed the event stream"
    );
    assert!(response.text().contains("transcript.text.done"));

    // async-openai's typed stream through the router.
    let stream = harness
        .client()
        .audio()
        .transcription()
        .create_stream(transcription_request("mock/whisper-1", &audio_bytes(100)))
        .await
        .unwrap();
    let events: Vec<_> = collect_stream(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut deltas = String::new();
    let mut done = None;
    for event in events {
        match event {
            CreateTranscriptionResponseStreamEvent::TranscriptTextDelta(delta) => {
                deltas.push_str(&delta.delta);
            }
            CreateTranscriptionResponseStreamEvent::TranscriptTextDone(event) => {
                done = Some(event.text);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(deltas, "mock transcript of speech.wav (100 bytes)");
    assert_eq!(done.as_deref(), Some(deltas.as_str()));
    let seen = harness.upstream.last_request().unwrap();
    let parts = parse_form(seen.header("content-type").unwrap(), seen.body.clone()).await;
    let stream_part = parts.iter().find(|p| p.is("stream")).unwrap();
    assert_eq!(stream_part.data, "true");
}

// --------------------------------------------------------------------- images

#[tokio::test]
async fn image_edits_with_two_images_and_the_model_last() {
    let harness = Harness::start().await;
    let first = audio_bytes(7000);
    let second = audio_bytes(9000);
    let parts = vec![
        FormPart::file("image[]", "body-lotion.png", "image/png", first.clone()),
        FormPart::file("image[]", "soap.webp", "image/webp", second.clone()),
        FormPart::text("prompt", "A gift basket with these items"),
        FormPart::text("n", "2"),
        FormPart::text("model", "mock/gpt-image-1"),
    ];
    let response = post_form(
        &harness,
        "/images/edits",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &parts),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    assert_eq!(json["data"].as_array().unwrap().len(), 2);
    assert!(json["data"][0]["b64_json"].is_string());
    let received = &json["mock_received"];
    assert_eq!(received["model"], "gpt-image-1");
    assert_eq!(
        received["parts"],
        json!(["image[]", "image[]", "prompt", "n", "model"])
    );
    assert_eq!(received["files"][0]["filename"], "body-lotion.png");
    assert_eq!(received["files"][0]["sha256"], sha256_hex(&first));
    assert_eq!(received["files"][1]["content_type"], "image/webp");
    assert_eq!(received["files"][1]["sha256"], sha256_hex(&second));

    let seen = harness.only_upstream_request();
    assert_forwarded_form(
        &seen,
        "/v1/images/edits",
        CLIENT_BOUNDARY,
        &with_model_part(&parts, "gpt-image-1"),
    )
    .await;
}

#[tokio::test]
async fn image_edits_as_json_are_rewritten_as_json() {
    let harness = Harness::start().await;
    let body = r#"{"model":"mock/gpt-image-1","prompt":"add a hat","images":[{"image_url":"data:image/png;base64,iVBORw0KGgo="}],"response_format":"url"}"#;
    let response = harness.post_json("/images/edits", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    assert!(json["data"][0]["url"].is_string());
    assert_eq!(json["mock_received"]["model"], "gpt-image-1");
    assert_eq!(json["mock_received"]["images"], 1);

    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/images/edits",
        &with_model(body.as_bytes(), "mock/gpt-image-1", "gpt-image-1"),
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn image_variations_are_forwarded() {
    let harness = Harness::start().await;
    let image = audio_bytes(1234);
    let parts = vec![
        FormPart::text("model", "mock/dall-e-2"),
        FormPart::file("image", "otter.png", "image/png", image.clone()),
        FormPart::text("n", "3"),
        FormPart::text("size", "256x256"),
    ];
    let response = post_form(
        &harness,
        "/images/variations",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &parts),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    assert_eq!(json["data"].as_array().unwrap().len(), 3);
    assert_eq!(json["mock_received"]["model"], "dall-e-2");
    assert_eq!(
        json["mock_received"]["files"][0]["sha256"],
        sha256_hex(&image)
    );

    let seen = harness.only_upstream_request();
    assert_forwarded_form(
        &seen,
        "/v1/images/variations",
        CLIENT_BOUNDARY,
        &with_model_part(&parts, "dall-e-2"),
    )
    .await;
}

#[tokio::test]
async fn requests_without_model_use_the_configured_defaults() {
    let harness = Harness::with(|builder| {
        builder
            .default_model(Endpoint::ImagesEdits, "mock/gpt-image-1")
            .default_model(Endpoint::Moderations, "mock/omni-moderation-latest")
    })
    .await;

    // Multipart image edits: the model part is added, first; the client's parts follow.
    let parts = vec![
        FormPart::file("image", "cat.png", "image/png", audio_bytes(800)),
        FormPart::text("prompt", "a cat wearing a hat"),
    ];
    let response = post_form(
        &harness,
        "/images/edits",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &parts),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["mock_received"]["model"], "gpt-image-1");
    let mut expected = vec![FormPart::text("model", "gpt-image-1")];
    expected.extend_from_slice(&parts);
    let seen = harness.only_upstream_request();
    assert_forwarded_form(&seen, "/v1/images/edits", CLIENT_BOUNDARY, &expected).await;

    // JSON image edits: `"model"` is inserted as the first member.
    let body = r#"{"prompt":"a hat","images":[{"image_url":"data:image/png;base64,AAAA"}]}"#;
    let response = harness.post_json("/images/edits", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = harness.upstream.last_request().unwrap();
    assert_forwarded(
        &seen,
        "/v1/images/edits",
        format!(r#"{{"model":"gpt-image-1",{}"#, &body[1..]).as_bytes(),
    );

    // A JSON moderation without model: every other byte unchanged.
    let body = "{ \"input\" : [\"is this fine?\", \"and this?\"] }";
    let response = harness.post_json("/moderations", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "omni-moderation-latest");
    assert_eq!(response.json()["results"].as_array().unwrap().len(), 2);
    let seen = harness.upstream.last_request().unwrap();
    assert_forwarded(
        &seen,
        "/v1/moderations",
        format!("{{\"model\":\"omni-moderation-latest\",{}", &body[1..]).as_bytes(),
    );

    // No default for variations: a 400 naming `model`, and the mock is not called.
    let parts = vec![FormPart::file(
        "image",
        "cat.png",
        "image/png",
        audio_bytes(10),
    )];
    let response = post_form(
        &harness,
        "/images/variations",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &parts),
    )
    .await;
    assert_eq!(response.assert_error(400, None)["param"], "model");
    assert_eq!(harness.upstream.request_count(), 3);
}

#[tokio::test]
async fn optional_models_without_a_default_are_400_naming_model() {
    let harness = Harness::start().await;
    let parts = vec![
        FormPart::file("image", "cat.png", "image/png", audio_bytes(10)),
        FormPart::text("prompt", "a hat"),
    ];
    let response = post_form(
        &harness,
        "/images/edits",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &parts),
    )
    .await;
    assert_eq!(response.assert_error(400, None)["param"], "model");
    let response = harness
        .post_json(
            "/images/edits",
            r#"{"prompt":"a hat","images":[{"image_url":"data:,"}]}"#,
        )
        .await;
    assert_eq!(response.assert_error(400, None)["param"], "model");
    let response = harness.post_json("/moderations", r#"{"input":"x"}"#).await;
    assert_eq!(response.assert_error(400, None)["param"], "model");
    assert_eq!(harness.upstream.request_count(), 0);
}

// --------------------------------------------------------------------- errors

#[tokio::test]
async fn refusals_never_reach_the_mock() {
    let harness = Harness::start().await;
    let good = encode(CLIENT_BOUNDARY, &transcription_parts("mock/whisper-1", &[]));

    let response = harness
        .post_json("/audio/transcriptions", r#"{"model":"mock/whisper-1"}"#)
        .await;
    response.assert_error(400, Some("unsupported_content_type"));
    let response = harness
        .post_json("/audio/translations", r#"{"model":"mock/whisper-1"}"#)
        .await;
    response.assert_error(400, Some("unsupported_content_type"));
    let response = harness
        .post_json("/images/variations", r#"{"model":"mock/dall-e-2"}"#)
        .await;
    response.assert_error(400, Some("unsupported_content_type"));

    // Two `model` parts: which one the upstream would read is unknowable.
    let mut twice = transcription_parts("mock/whisper-1", &[]);
    twice.push(FormPart::text("model", "mock/other"));
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        encode(CLIENT_BOUNDARY, &twice),
    )
    .await;
    let error = response.assert_error(400, None);
    assert!(error["message"].as_str().unwrap().contains("more than one"));

    let embeddings = encode(
        CLIENT_BOUNDARY,
        &[
            FormPart::text("model", "mock/text-embedding-3-small"),
            FormPart::text("input", "hello"),
        ],
    );
    let response = post_form(
        &harness,
        "/embeddings",
        &form_type(CLIENT_BOUNDARY),
        embeddings,
    )
    .await;
    response.assert_error(400, Some("unsupported_content_type"));

    let response = post_form(
        &harness,
        "/audio/transcriptions",
        "multipart/form-data",
        good.clone(),
    )
    .await;
    let error = response.assert_error(400, None);
    assert!(
        error["message"].as_str().unwrap().contains("boundary"),
        "{error}"
    );

    // The closing delimiter cut off; then the file part cut in the middle.
    for cut in [12, good.len() / 2] {
        let truncated = good[..good.len() - cut].to_vec();
        let response = post_form(
            &harness,
            "/audio/transcriptions",
            &form_type(CLIENT_BOUNDARY),
            truncated,
        )
        .await;
        response.assert_error(400, None);
    }
    // A boundary that is not the body's.
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type("another-boundary"),
        good.clone(),
    )
    .await;
    response.assert_error(400, None);

    let no_file = encode(
        CLIENT_BOUNDARY,
        &[
            FormPart::text("model", "mock/whisper-1"),
            FormPart::text("language", "en"),
        ],
    );
    for path in ["/audio/transcriptions", "/audio/translations"] {
        let response =
            post_form(&harness, path, &form_type(CLIENT_BOUNDARY), no_file.clone()).await;
        assert_eq!(response.assert_error(400, None)["param"], "file", "{path}");
    }
    let no_model = encode(
        CLIENT_BOUNDARY,
        &[FormPart::file(
            "file",
            "a.wav",
            "audio/wav",
            audio_bytes(64),
        )],
    );
    for path in ["/audio/transcriptions", "/audio/translations"] {
        let response = post_form(
            &harness,
            path,
            &form_type(CLIENT_BOUNDARY),
            no_model.clone(),
        )
        .await;
        assert_eq!(response.assert_error(400, None)["param"], "model", "{path}");
    }
    let no_image = encode(CLIENT_BOUNDARY, &[FormPart::text("model", "mock/dall-e-2")]);
    let response = post_form(
        &harness,
        "/images/variations",
        &form_type(CLIENT_BOUNDARY),
        no_image,
    )
    .await;
    assert_eq!(response.assert_error(400, None)["param"], "image");

    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn over_the_endpoint_limit_is_413_and_never_forwarded() {
    const LIMIT: usize = 64 * 1024;
    let harness =
        Harness::with(|builder| builder.endpoint_body_limit(Endpoint::AudioTranscriptions, LIMIT))
            .await;
    let big = encode(
        CLIENT_BOUNDARY,
        &[
            FormPart::text("model", "mock/whisper-1"),
            FormPart::file("file", "a.wav", "audio/wav", audio_bytes(LIMIT)),
        ],
    );

    // With a declared length.
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        big.clone(),
    )
    .await;
    response.assert_error(413, Some("request_too_large"));

    // Chunked, without a declared length: found while reading.
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = big
        .chunks(16 * 1024)
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    let request = Request::post(harness.url("/audio/transcriptions"))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", form_type(CLIENT_BOUNDARY))
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<BoxBody<Bytes, Infallible>>();
    let exchange = async {
        let response = client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        RawResponse {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    };
    let response = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .expect("the exchange timed out");
    response.assert_error(413, Some("request_too_large"));
    assert_eq!(harness.upstream.request_count(), 0);

    // The limit is the transcriptions' only: the same form is a translation.
    let response = post_form(
        &harness,
        "/audio/translations",
        &form_type(CLIENT_BOUNDARY),
        big,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    // And a small transcription still goes through.
    let small = encode(CLIENT_BOUNDARY, &transcription_parts("mock/whisper-1", &[]));
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        small,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(harness.upstream.request_count(), 2);
}

// ------------------------------------------------------------------ providers

#[tokio::test]
async fn a_provider_limited_to_its_listed_models() {
    let harness = Harness::with(|builder| {
        builder
            .models("mock", ["whisper-1"])
            .allow_any_model("mock", false)
    })
    .await;
    let listed = encode(CLIENT_BOUNDARY, &transcription_parts("mock/whisper-1", &[]));
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        listed,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["mock_received"]["model"], "whisper-1");

    let unlisted = encode(CLIENT_BOUNDARY, &transcription_parts("mock/whisper-2", &[]));
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        unlisted,
    )
    .await;
    let error = response.assert_error(404, Some("model_not_found"));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("mock/whisper-2"),
        "{error}"
    );
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn rerank_goes_to_the_provider_endpoint_path() {
    let harness = Harness::with_upstream(|builder, upstream| {
        builder.provider(
            "cohere",
            HttpProvider::builder(upstream.base_url())
                .api_key(PROVIDER_KEY)
                .endpoint_path(Endpoint::Rerank, "/v2/rerank")
                .build()
                .unwrap(),
        )
    })
    .await;
    let body = r#"{"model":"cohere/rerank-v3.5","query":"red apple","documents":["a red apple"]}"#;
    let response = harness.post_json("/rerank", body).await;
    // The mock serves no `/v1/v2/rerank`: its OpenAI-shaped 404 comes back as it is.
    let error = response.assert_error(404, None);
    assert_eq!(error["message"], "Invalid URL (POST /v1/v2/rerank)");
    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/v2/rerank",
        &with_model(body.as_bytes(), "cohere/rerank-v3.5", "rerank-v3.5"),
    );
}

#[tokio::test]
async fn every_part_header_is_kept() {
    let harness = Harness::start().await;
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"model\"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nmock/whisper-1\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\nX-Part-Id: 42\r\nContent-Transfer-Encoding: binary\r\n\r\nRIFF....WAVE\r\n\
         --{b}--\r\n",
        b = CLIENT_BOUNDARY
    );
    let response = post_form(
        &harness,
        "/audio/transcriptions",
        &form_type(CLIENT_BOUNDARY),
        body,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = harness.only_upstream_request();
    let text = String::from_utf8(seen.body.to_vec()).unwrap();
    let boundary = boundary_of(&seen);
    let parts: Vec<Vec<String>> = text
        .split(&format!("--{boundary}"))
        .filter(|p| p.starts_with("\r\n"))
        .map(|p| {
            let head = &p[2..p.find("\r\n\r\n").unwrap()];
            head.split("\r\n").map(str::to_ascii_lowercase).collect()
        })
        .collect();
    assert_eq!(
        parts,
        [
            vec![
                "content-disposition: form-data; name=\"model\"",
                "content-type: text/plain; charset=utf-8",
            ],
            vec![
                "content-disposition: form-data; name=\"file\"; filename=\"a.wav\"",
                "content-type: audio/wav",
                "x-part-id: 42",
                "content-transfer-encoding: binary",
            ],
        ]
    );
    assert!(text.contains("\r\n\r\nwhisper-1\r\n"));
    assert!(text.contains("\r\n\r\nRIFF....WAVE\r\n"));
    assert!(text.ends_with(&format!("--{boundary}--\r\n")));
}

// ------------------------------------------------------------------- fallback

#[tokio::test]
async fn a_form_falls_back_to_the_next_target_with_the_same_file_bytes() {
    let harness = Harness::with_upstream(|builder, upstream| {
        builder
            .provider("backup", mock_provider(upstream))
            .alias("ears", ["mock/whisper-a", "backup/whisper-b"])
    })
    .await;
    harness.upstream.script_for(
        "whisper-a",
        ScriptedResponse::openai_error(503, "busy", "server_error", Some("overloaded")),
    );
    // Bytes that look like boundaries and line ends inside the file.
    let mut audio = audio_bytes(200_000);
    audio.extend_from_slice(b"\r\n--client-boundary\r\n\r\n");
    let response = harness
        .client()
        .audio()
        .transcription()
        .create(transcription_request("ears", &audio))
        .await
        .unwrap();
    assert_eq!(
        response.text,
        format!("mock transcript of speech.wav ({} bytes)", audio.len())
    );
    let first = harness.upstream.requests_for("whisper-a");
    let second = harness.upstream.requests_for("whisper-b");
    assert_eq!((first.len(), second.len()), (1, 1));
    let first_parts = parse_form(
        first[0].header("content-type").unwrap(),
        first[0].body.clone(),
    )
    .await;
    assert_forwarded_form(
        &second[0],
        "/v1/audio/transcriptions",
        &boundary_of(&first[0]),
        &with_model_part(&first_parts, "whisper-b"),
    )
    .await;
    let file = first_parts.iter().find(|p| p.is("file")).unwrap();
    assert_eq!(sha256_hex(&file.data), sha256_hex(&audio));
}

//! The default answers of the mock upstream, one function per endpoint.
//!
//! Everything here is a pure function of the request body and the request
//! number `n`, so answers are deterministic.

use std::borrow::Cow;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::body::MockBody;
use super::forms::{self, Task};

/// The `created` timestamp of every object.
pub(super) const CREATED: u64 = 1_700_000_000;
/// Used when a request names no model.
const DEFAULT_MODEL: &str = "mock-model";
pub(super) const JSON: &str = "application/json";
pub(super) const EVENT_STREAM: &str = "text/event-stream";
const INVALID_JSON: &str = "We could not parse the JSON body of your request. (HINT: This likely \
     means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
     but what was sent was not valid JSON.)";
/// A 1x1 transparent PNG, base64.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
const MODEL_LIST: &str = r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}"#;

/// What an endpoint answers (the server adds the standard headers).
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) content_type: &'static str,
    pub(super) body: MockBody,
}

impl Reply {
    pub(super) fn json<T: Serialize>(value: &T) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: JSON,
            body: MockBody::full(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    pub(super) fn event_stream(frames: Vec<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: EVENT_STREAM,
            body: MockBody::frames(frames),
        }
    }
}

/// Routes a (recorded, authenticated) request to its endpoint; `content_type` is the
/// request's `Content-Type` (the form endpoints need its boundary).
pub(super) fn route(
    method: &Method,
    path: &str,
    content_type: Option<&str>,
    body: &Bytes,
    n: u64,
) -> Reply {
    if method == Method::POST {
        match path {
            "/v1/chat/completions" => chat_completions(body, n),
            "/v1/completions" => completions(body, n),
            "/v1/embeddings" => embeddings(body),
            "/v1/moderations" => moderations(body, n),
            "/v1/rerank" => rerank(body, n),
            "/v1/responses" => responses(body, n),
            "/v1/images/generations" => images(body, n),
            "/v1/audio/speech" => speech(body),
            "/v1/images/edits" => forms::image_edits(content_type, body, n),
            "/v1/images/variations" => forms::image_variations(content_type, body, n),
            "/v1/audio/transcriptions" => forms::audio(content_type, body, Task::Transcribe),
            "/v1/audio/translations" => forms::audio(content_type, body, Task::Translate),
            _ => not_found(method, path),
        }
    } else if method == Method::GET {
        match path.strip_prefix("/v1/models") {
            Some("") => Reply {
                status: StatusCode::OK,
                content_type: JSON,
                body: MockBody::full(Bytes::from_static(MODEL_LIST.as_bytes())),
            },
            Some(rest) => match rest.strip_prefix('/') {
                Some(id) if !id.is_empty() => retrieve_model(id),
                _ => not_found(method, path),
            },
            None => not_found(method, path),
        }
    } else {
        not_found(method, path)
    }
}

/// An OpenAI-shaped error reply.
pub(super) fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Reply {
    error_with_param(status, message, kind, None, code)
}

/// An OpenAI-shaped error reply whose `param` names the offending parameter.
pub(super) fn error_with_param(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Reply {
    // The router's own renderer: one definition of the four-key shape.
    let body = crate::error::render_body(message, kind, param, code);
    Reply {
        status,
        content_type: JSON,
        body: MockBody::full(body),
    }
}

pub(super) fn bad_request(message: &str) -> Reply {
    error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        None,
    )
}

fn not_found(method: &Method, path: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {path})"),
        "invalid_request_error",
        None,
    )
}

/// Parses a request body; invalid JSON or a wrong shape becomes a 400 reply.
pub(super) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|err| match err.classify() {
        serde_json::error::Category::Data => bad_request(&format!("Invalid request body: {err}")),
        _ => bad_request(INVALID_JSON),
    })
}

fn model_or_default<'a>(model: &'a Option<Cow<'_, str>>) -> &'a str {
    model.as_deref().unwrap_or(DEFAULT_MODEL)
}

/// A rough, deterministic token count for a text: a token per 4 bytes.
fn tokens_of(len: usize) -> u64 {
    len.div_ceil(4) as u64
}

// ---------------------------------------------------------------- chat

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: (),
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless the client asked for usage; then `null` on every chunk but the usage one,
    /// as OpenAI sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// `POST /v1/chat/completions`: echoes the model, replies
/// `mock reply: <last message text>`; SSE when `stream: true`.
fn chat_completions(body: &[u8], n: u64) -> Reply {
    let request: ChatRequest<'_> = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let model = model_or_default(&request.model);
    let last = request
        .messages
        .as_deref()
        .and_then(<[_]>::last)
        .map_or(Cow::Borrowed(""), |message| message_text(message));
    let mut reply = String::with_capacity(12 + last.len());
    reply.push_str("mock reply: ");
    reply.push_str(&last);
    let id = format!("chatcmpl-mock-{n}");
    let usage = Usage::new((body.len() / 4) as u64, word_chunks(&reply).count() as u64);

    if request.stream != Some(true) {
        return Reply::json(&ChatCompletion {
            id: &id,
            object: "chat.completion",
            created: CREATED,
            model,
            choices: [ChatChoice {
                index: 0,
                message: ChatMessage {
                    role: "assistant",
                    content: &reply,
                    refusal: (),
                },
                logprobs: (),
                finish_reason: "stop",
            }],
            usage,
        });
    }

    let wants_usage = include_usage(request.stream_options.as_ref());
    let chunk = |delta: Delta<'_>, finish_reason: Option<&'static str>| {
        sse_data(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created: CREATED,
            model,
            choices: &[ChunkChoice {
                index: 0,
                delta,
                logprobs: (),
                finish_reason,
            }],
            usage: wants_usage.then_some(None),
        })
    };
    let mut frames = Vec::with_capacity(usage.completion_tokens as usize + 4);
    frames.push(chunk(
        Delta {
            role: Some("assistant"),
            content: Some(""),
        },
        None,
    ));
    for word in word_chunks(&reply) {
        frames.push(chunk(
            Delta {
                role: None,
                content: Some(word),
            },
            None,
        ));
    }
    frames.push(chunk(
        Delta {
            role: None,
            content: None,
        },
        Some("stop"),
    ));
    if wants_usage {
        frames.push(sse_data(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created: CREATED,
            model,
            choices: &[],
            usage: Some(Some(usage)),
        }));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::event_stream(frames)
}

fn include_usage(options: Option<&StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage) == Some(true)
}

/// The `content` of a chat message if it is a string, else `""`.
fn message_text(message: &RawValue) -> Cow<'_, str> {
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow, default)]
        content: Option<&'a RawValue>,
    }
    match serde_json::from_str::<Message<'_>>(message.get()) {
        Ok(Message {
            content: Some(content),
        }) => json_string(content),
        _ => Cow::Borrowed(""),
    }
}

/// A raw JSON value as a string, if it is one (borrowed when unescaped).
fn json_string(raw: &RawValue) -> Cow<'_, str> {
    let text = raw.get();
    if !text.starts_with('"') {
        return Cow::Borrowed("");
    }
    if let Ok(s) = serde_json::from_str::<&str>(text) {
        return Cow::Borrowed(s);
    }
    serde_json::from_str::<String>(text).map_or(Cow::Borrowed(""), Cow::Owned)
}

/// Splits text into "words" that concatenate back to it: each chunk is a
/// word with its leading whitespace (`"a b  c"` → `"a"`, `" b"`, `"  c"`).
pub(super) fn word_chunks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let word_start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        let end = rest[word_start..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| word_start + i);
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

/// One SSE frame: `data: <json>\n\n`.
pub(super) fn sse_data<T: Serialize>(value: &T) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        buf.truncate(6);
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// One named SSE frame: `event: <name>\ndata: <json>\n\n`.
fn sse_event(name: &str, value: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

// ---------------------------------------------------------- completions

#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

/// `POST /v1/completions`: a `text_completion` with text `mock completion`
/// (SSE chunks per word when `stream: true`).
fn completions(body: &[u8], n: u64) -> Reply {
    const TEXT: &str = "mock completion";
    let request: CompletionRequest<'_> = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let model = model_or_default(&request.model);
    let id = format!("cmpl-mock-{n}");
    let usage = Usage::new((body.len() / 4) as u64, word_chunks(TEXT).count() as u64);
    let completion = |text: &str, finish_reason: Option<&str>, usage: Option<Usage>| {
        let choices = if usage.is_some() && finish_reason.is_none() {
            json!([])
        } else {
            json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}])
        };
        let mut value = json!({
            "id": id,
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": choices,
        });
        if let (Some(usage), Some(object)) = (usage, value.as_object_mut()) {
            object.insert("usage".to_owned(), json!(usage));
        }
        value
    };

    if request.stream != Some(true) {
        return Reply::json(&completion(TEXT, Some("stop"), Some(usage)));
    }
    let mut frames: Vec<Bytes> = word_chunks(TEXT)
        .map(|word| sse_data(&completion(word, None, None)))
        .collect();
    frames.push(sse_data(&completion("", Some("stop"), None)));
    if include_usage(request.stream_options.as_ref()) {
        frames.push(sse_data(&completion("", None, Some(usage))));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::event_stream(frames)
}

// ----------------------------------------------------------- embeddings

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    input: Value,
    #[serde(borrow, default)]
    encoding_format: Option<Cow<'a, str>>,
    #[serde(default)]
    dimensions: Option<u32>,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingVector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// `POST /v1/embeddings`: one deterministic unit vector (8 dimensions, or
/// `dimensions`) per input; base64 little-endian f32 when
/// `encoding_format: "base64"`.
fn embeddings(body: &[u8]) -> Reply {
    let request: EmbeddingsRequest<'_> = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    // (seed bytes, token count) per input.
    let inputs: Vec<(Cow<'_, [u8]>, u64)> = match &request.input {
        Value::String(text) => vec![(Cow::Borrowed(text.as_bytes()), tokens_of(text.len()))],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            vec![(json_seed(&request.input), items.len() as u64)]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => (Cow::Borrowed(text.as_bytes()), tokens_of(text.len())),
                Value::Array(tokens) => (json_seed(item), tokens.len() as u64),
                other => (json_seed(other), 1),
            })
            .collect(),
        _ => {
            return bad_request(
                "Invalid type for 'input': expected a string, an array of strings or an array of token arrays.",
            );
        }
    };
    let dims = request.dimensions.map_or(8, |d| d.clamp(1, 4096)) as usize;
    let base64 = request.encoding_format.as_deref() == Some("base64");
    let prompt_tokens = inputs.iter().map(|(_, tokens)| tokens).sum();
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, (seed, _))| {
            let values = embedding_values(seed, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64_encode(&bytes))
            } else {
                EmbeddingVector::Float(values)
            };
            EmbeddingItem {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Reply::json(&EmbeddingList {
        object: "list",
        data,
        model: model_or_default(&request.model),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

fn json_seed(value: &Value) -> Cow<'static, [u8]> {
    Cow::Owned(serde_json::to_vec(value).unwrap_or_default())
}

/// A deterministic unit vector derived from `seed` (FNV-1a + splitmix64).
pub(super) fn embedding_values(seed: &[u8], dims: usize) -> Vec<f32> {
    let mut state = fnv1a(seed);
    let mut values: Vec<f32> = (0..dims)
        .map(|_| {
            state = splitmix64(state);
            // 24 random bits → [-1, 1)
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for v in &mut values {
            *v /= norm;
        }
    }
    values
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let triple = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(
                    ALPHABET[((triple >> (18 - 6 * i)) & 0x3f) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------- moderations

const MODERATION_CATEGORIES: [&str; 13] = [
    "hate",
    "hate/threatening",
    "harassment",
    "harassment/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

#[derive(Deserialize)]
struct ModerationRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    input: Value,
}

/// `POST /v1/moderations`: nothing flagged; one result per string input
/// (one for a multi-modal array).
fn moderations(body: &[u8], n: u64) -> Reply {
    let request: ModerationRequest<'_> = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    // The applied input types of each result.
    let results: Vec<Vec<&str>> = match &request.input {
        Value::String(_) => vec![vec!["text"]],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            vec![vec!["text"]; items.len()]
        }
        Value::Array(parts) => {
            let mut types = Vec::new();
            for kind in ["text", "image"] {
                let wanted = if kind == "text" { "text" } else { "image_url" };
                if parts
                    .iter()
                    .any(|p| p.get("type").and_then(Value::as_str) == Some(wanted))
                {
                    types.push(kind);
                }
            }
            vec![types]
        }
        _ => {
            return bad_request(
                "Invalid type for 'input': expected a string, an array of strings or an array of content parts.",
            );
        }
    };
    let results: Vec<Value> = results
        .into_iter()
        .map(|types| {
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            let mut applied = serde_json::Map::new();
            for name in MODERATION_CATEGORIES {
                categories.insert(name.to_owned(), Value::Bool(false));
                scores.insert(name.to_owned(), json!(0.0001));
                applied.insert(name.to_owned(), json!(types));
            }
            json!({
                "flagged": false,
                "categories": categories,
                "category_scores": scores,
                "category_applied_input_types": applied,
            })
        })
        .collect();
    Reply::json(&json!({
        "id": format!("modr-mock-{n}"),
        "model": request.model.as_deref().unwrap_or("omni-moderation-latest"),
        "results": results,
    }))
}

// --------------------------------------------------------------- rerank

#[derive(Deserialize)]
struct RerankRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    query: String,
    documents: Vec<Value>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: Option<bool>,
}

/// `POST /v1/rerank`: score = share of the query's words found in the
/// document; sorted by score (ties by index), truncated to `top_n`.
fn rerank(body: &[u8], n: u64) -> Reply {
    let request: RerankRequest<'_> = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let query_words = lower_words(&request.query);
    let texts: Vec<&str> = request
        .documents
        .iter()
        .map(|doc| match doc {
            Value::String(text) => text.as_str(),
            other => other.get("text").and_then(Value::as_str).unwrap_or(""),
        })
        .collect();
    let mut scored: Vec<(usize, f64)> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let doc_words = lower_words(text);
            let found = query_words
                .iter()
                .filter(|word| doc_words.contains(word))
                .count();
            let score = if query_words.is_empty() {
                0.0
            } else {
                found as f64 / query_words.len() as f64
            };
            (index, score)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(request.top_n.unwrap_or(usize::MAX));
    let return_documents = request.return_documents == Some(true);
    let results: Vec<Value> = scored
        .into_iter()
        .map(|(index, score)| {
            let mut result = json!({"index": index, "relevance_score": score});
            if let (true, Some(object)) = (return_documents, result.as_object_mut()) {
                let text = texts.get(index).copied().unwrap_or("");
                object.insert("document".to_owned(), json!({"text": text}));
            }
            result
        })
        .collect();
    let total_len = request.query.len() + texts.iter().map(|t| t.len()).sum::<usize>();
    Reply::json(&json!({
        "id": format!("rerank-mock-{n}"),
        "model": model_or_default(&request.model),
        "results": results,
        "usage": {"total_tokens": tokens_of(total_len)},
    }))
}

fn lower_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

// ------------------------------------------------------------ responses

#[derive(Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
}

/// `POST /v1/responses`: a completed `response` whose single message says
/// `mock reply: <input text>`; SSE (created, one delta per word, completed)
/// when `stream: true`.
fn responses(body: &[u8], n: u64) -> Reply {
    let request: ResponsesRequest<'_> = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let model = model_or_default(&request.model);
    let reply = format!(
        "mock reply: {}",
        request.input.as_ref().map_or("", responses_input_text)
    );
    let id = format!("resp-mock-{n}");
    let message_id = format!("msg-mock-{n}");
    let input_tokens = (body.len() / 4) as u64;
    let output_tokens = word_chunks(&reply).count() as u64;
    let completed = response_object(&id, model, Some((&message_id, &reply)), {
        Some(json!({
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }))
    });
    if request.stream != Some(true) {
        return Reply::json(&completed);
    }

    let mut sequence = 0u64;
    let mut next = || {
        let current = sequence;
        sequence += 1;
        current
    };
    let mut frames = Vec::with_capacity(output_tokens as usize + 7);
    let created = response_object(&id, model, None, None);
    frames.push(sse_event(
        "response.created",
        &json!({"type": "response.created", "sequence_number": next(), "response": created}),
    ));
    // The official SDKs' stream helpers build the answer from these events: an item and its
    // content part are announced before any delta, and closed after the last one.
    let item = |text: &str, status: &str| {
        json!({
            "id": message_id, "type": "message", "status": status, "role": "assistant",
            "content": if text.is_empty() { json!([]) } else {
                json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
            },
        })
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
    frames.push(sse_event(
        "response.output_item.added",
        &json!({"type": "response.output_item.added", "sequence_number": next(),
                "output_index": 0, "item": item("", "in_progress")}),
    ));
    frames.push(sse_event(
        "response.content_part.added",
        &json!({"type": "response.content_part.added", "sequence_number": next(),
                "item_id": message_id, "output_index": 0, "content_index": 0, "part": part("")}),
    ));
    for word in word_chunks(&reply) {
        frames.push(sse_event(
            "response.output_text.delta",
            &json!({
                "type": "response.output_text.delta",
                "sequence_number": next(),
                "item_id": message_id,
                "output_index": 0,
                "content_index": 0,
                "delta": word,
                "logprobs": [],
            }),
        ));
    }
    frames.push(sse_event(
        "response.output_text.done",
        &json!({"type": "response.output_text.done", "sequence_number": next(),
                "item_id": message_id, "output_index": 0, "content_index": 0,
                "text": reply, "logprobs": []}),
    ));
    frames.push(sse_event(
        "response.content_part.done",
        &json!({"type": "response.content_part.done", "sequence_number": next(),
                "item_id": message_id, "output_index": 0, "content_index": 0,
                "part": part(&reply)}),
    ));
    frames.push(sse_event(
        "response.output_item.done",
        &json!({"type": "response.output_item.done", "sequence_number": next(),
                "output_index": 0, "item": item(&reply, "completed")}),
    ));
    frames.push(sse_event(
        "response.completed",
        &json!({"type": "response.completed", "sequence_number": next(), "response": completed}),
    ));
    Reply::event_stream(frames)
}

/// The text of a Responses `input`: the string itself, or the last item's
/// string content / last text part.
fn responses_input_text(input: &Value) -> &str {
    match input {
        Value::String(text) => text,
        Value::Array(items) => items
            .last()
            .and_then(|item| match item.get("content") {
                Some(Value::String(text)) => Some(text.as_str()),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .rev()
                    .find_map(|part| part.get("text").and_then(Value::as_str)),
                _ => None,
            })
            .unwrap_or(""),
        _ => "",
    }
}

/// A `response` object: completed with one message when `message` is given,
/// otherwise in progress with no output.
fn response_object(
    id: &str,
    model: &str,
    message: Option<(&str, &str)>,
    usage: Option<Value>,
) -> Value {
    let (status, output) = match message {
        Some((message_id, text)) => (
            "completed",
            json!([{
                "type": "message",
                "id": message_id,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
            }]),
        ),
        None => ("in_progress", json!([])),
    };
    let mut value = json!({
        "id": id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "temperature": 1.0,
        "top_p": 1.0,
        "tools": [],
        "metadata": {},
        "usage": usage,
    });
    if let (Some(_), Some(object)) = (message, value.as_object_mut()) {
        object.insert("completed_at".to_owned(), json!(CREATED));
    }
    value
}

// --------------------------------------------------------------- images

#[derive(Deserialize)]
struct ImagesRequest<'a> {
    #[serde(default)]
    n: Option<u32>,
    #[serde(borrow, default)]
    response_format: Option<Cow<'a, str>>,
}

/// `POST /v1/images/generations`: `n` (1–10) copies of a 1x1 PNG, as
/// `b64_json` or as a (fake) `url` when `response_format: "url"`.
fn images(body: &[u8], n: u64) -> Reply {
    let request: ImagesRequest<'_> = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let data = image_data(request.n, request.response_format.as_deref(), n);
    Reply::json(&json!({"created": CREATED, "data": data}))
}

/// The `data` of an images answer: `n` (1–10, default 1) copies of a 1x1 PNG, as `b64_json`
/// or as a (fake) `url` when `response_format` is `url`.
pub(super) fn image_data(count: Option<u32>, response_format: Option<&str>, n: u64) -> Vec<Value> {
    let count = count.unwrap_or(1).clamp(1, 10);
    let url = response_format == Some("url");
    (0..count)
        .map(|i| {
            if url {
                json!({"url": format!("https://mock.invalid/images/mock-{n}-{i}.png")})
            } else {
                json!({"b64_json": PNG_B64})
            }
        })
        .collect()
}

// ---------------------------------------------------------------- audio

#[derive(Deserialize)]
struct SpeechRequest<'a> {
    #[serde(borrow, default)]
    input: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    response_format: Option<Cow<'a, str>>,
}

/// `POST /v1/audio/speech`: `ID3` + the input repeated to ≥ 1 KiB, in
/// 512-byte chunks, typed after `response_format`.
fn speech(body: &[u8]) -> Reply {
    const MIN_LEN: usize = 1024;
    const CHUNK: usize = 512;
    let request: SpeechRequest<'_> = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let content_type = match request.response_format.as_deref().unwrap_or("mp3") {
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "opus" => "audio/ogg",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "pcm" => "audio/pcm",
        other => {
            return bad_request(&format!(
                "Invalid value for 'response_format': '{other}'. Supported values are: 'mp3', 'opus', 'aac', 'flac', 'wav', and 'pcm'."
            ));
        }
    };
    let input = match request.input.as_deref() {
        Some(text) if !text.is_empty() => text.as_bytes(),
        _ => b"mock",
    };
    let mut audio = Vec::with_capacity(MIN_LEN + input.len());
    audio.extend_from_slice(b"ID3");
    while audio.len() < MIN_LEN {
        audio.extend_from_slice(input);
    }
    let audio = Bytes::from(audio);
    let chunks = (0..audio.len())
        .step_by(CHUNK)
        .map(|start| audio.slice(start..audio.len().min(start + CHUNK)))
        .collect();
    Reply {
        status: StatusCode::OK,
        content_type,
        body: MockBody::frames(chunks),
    }
}

// --------------------------------------------------------------- models

/// `GET /v1/models/{id}`: the mock model object under that id.
fn retrieve_model(id: &str) -> Reply {
    Reply::json(&json!({
        "id": id,
        "object": "model",
        "created": CREATED,
        "owned_by": "mock",
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod unit_tests {
    use super::*;

    #[test]
    fn word_chunks_concatenate_back() {
        let text = "mock reply:  hello\nworld ";
        let chunks: Vec<&str> = word_chunks(text).collect();
        assert_eq!(chunks, ["mock", " reply:", "  hello", "\nworld", " "]);
        assert_eq!(chunks.concat(), text);
        assert_eq!(word_chunks("").count(), 0);
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding_values(b"hello", 8);
        assert_eq!(a, embedding_values(b"hello", 8));
        assert_ne!(a, embedding_values(b"world", 8));
        let norm: f32 = a.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

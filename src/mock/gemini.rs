//! The Gemini API of the mock upstream (Google AI, `generativelanguage.googleapis.com`, API
//! version `v1beta`): `POST /v1beta/models/{model}:{method}` for `generateContent`,
//! `streamGenerateContent` (`?alt=sse`: an event stream; without it: a JSON array sent in
//! pieces, as the real API does), `embedContent` and `batchEmbedContents`.
//!
//! **Credentials.** `x-goog-api-key: <key>` or `?key=<key>` (the
//! [builder](super::MockUpstreamBuilder::api_key)'s key; anything with `no_auth`). A wrong key
//! is the real 400 `INVALID_ARGUMENT` with an `API_KEY_INVALID` `ErrorInfo`; no key at all is
//! the real 403 `PERMISSION_DENIED` ("unregistered callers").
//!
//! **Validation** (400 `INVALID_ARGUMENT`, `{"error":{"code","message","status"}}`, with the
//! real API's messages where known). Field names are accepted in lowerCamelCase or snake_case,
//! as Google's JSON parser does; an unknown field is `Invalid JSON payload received. Unknown
//! name "<field>" at '<path>': Cannot find field.` (at the top level, in contents, parts,
//! `generationConfig`, `thinkingConfig`, tools, function declarations, their `parameters`
//! schemas, `toolConfig`). `contents` is required and non-empty; roles are `user` / `model`;
//! each content has parts, each part exactly one data field (`text` (non-empty), `inlineData`
//! (valid base64), `fileData`, `functionCall`, `functionResponse`, `executableCode`,
//! `codeExecutionResult`) beside `thought` / `thoughtSignature`; a function call turn follows a
//! user turn, a function response turn follows a function call turn with as many parts;
//! `generationConfig` checks `candidateCount` (1..=8), `temperature` (0..=2), `topP`
//! (0..=1), `responseMimeType` and that a response schema comes with a JSON MIME type;
//! `toolConfig.functionCallingConfig.mode` is `AUTO` / `ANY` / `NONE` / `VALIDATED`.
//!
//! **Answers** are pure functions of the request and its number `n`:
//! - text `mock reply to: <text of the last user turn>` (candidate `i > 0` adds
//!   ` (candidate i)`), or after function responses `mock reply to function result:
//!   <name>: <response JSON>` (several joined by ` | `); with `responseMimeType:
//!   application/json` a JSON object built from `responseSchema` / `responseJsonSchema` (see
//!   [`example_of`]), or `{"reply": …}` without a schema;
//! - function calls when the request declares functions, the mode is not `NONE`, and the last
//!   turn is not a function response (mode `ANY` always calls): the first allowed
//!   (`allowedFunctionNames`) or declared function, with `args` built from its `parameters` /
//!   `parametersJsonSchema`; two calls (the next function) when the last user text contains
//!   `parallel`. Like the Developer API's `generateContent`, the calls carry no `id` (clients
//!   match responses by name and order); with thinking on, the first call part carries a
//!   `thoughtSignature`;
//! - thinking is on when `thinkingConfig` sets `includeThoughts`, a `thinkingBudget` > 0 or a
//!   `thinkingLevel`: `thoughtsTokenCount` is reported, and with `includeThoughts` a
//!   `thought: true` text part comes first;
//! - `finishReason` `STOP` (also for function calls and stop sequences, which cut the text),
//!   or `MAX_TOKENS` when the answer exceeds `maxOutputTokens` (a token per word, per 4 bytes
//!   of call JSON): the text is cut, calls are dropped (a candidate `content` without parts);
//! - `usageMetadata`: `promptTokenCount` a token per 4 bytes of the request body;
//!   `cachedContentTokenCount` (three quarters of it, with `cacheTokensDetails`) when the
//!   request names a `cachedContent` or the prompt reaches 1024 tokens (implicit caching);
//!   `candidatesTokenCount` (all candidates), `thoughtsTokenCount`, `totalTokenCount`;
//!   `modelVersion` is the path's model, `responseId` `mock-response-<n>`.
//!
//! **Streams** send one chunk (a whole `GenerateContentResponse`) per body frame: a thought
//! part, then the text three words at a time, or all function calls in one chunk; the last
//! chunk also carries `finishReason` and the full `usageMetadata` (earlier ones carry only the
//! prompt count, as Google's do). With `alt=sse` each is `data: <json>\r\n\r\n`, as Google
//! sends them.
//!
//! **Embeddings**: deterministic unit vectors (the OpenAI embeddings mock's, seeded by the
//! text of the parts), 768 dimensions unless `outputDimensionality` (1..=3072) says otherwise;
//! each request of a batch must name `models/<the path's model>`.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::Auth;
use super::anthropic::{cut_at_stop_sequence, example_of};
use super::body::MockBody;
use super::endpoints::{Reply, embedding_values, word_chunks};

/// The `content-type` of JSON answers, as Google writes it.
const JSON: &str = "application/json; charset=UTF-8";
/// The `content-type` of `alt=sse` streams.
const EVENT_STREAM: &str = "text/event-stream";
const API_KEY_INVALID: &str = "API key not valid. Please pass a valid API key.";
/// Words per streamed text chunk.
const WORDS_PER_CHUNK: usize = 3;
/// Embedding dimensions unless `outputDimensionality` says otherwise.
const DEFAULT_DIMENSIONS: usize = 768;
/// Prompts of at least this many tokens are (partly) served from the implicit cache.
const IMPLICIT_CACHE_TOKENS: u64 = 1024;

const REQUEST_FIELDS: &[&str] = &[
    "model",
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
];
const CONFIG_FIELDS: &[&str] = &[
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "mediaResolution",
    "imageConfig",
];
/// The part fields of the `data` oneof.
const PART_DATA: &[&str] = &[
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
];
/// The other part fields.
const PART_META: &[&str] = &[
    "thought",
    "thoughtSignature",
    "videoMetadata",
    "partMetadata",
    "mediaResolution",
];
const TOOL_FIELDS: &[&str] = &[
    "functionDeclarations",
    "googleSearch",
    "googleSearchRetrieval",
    "codeExecution",
    "urlContext",
    "computerUse",
    "fileSearch",
    "googleMaps",
];
const DECLARATION_FIELDS: &[&str] = &[
    "name",
    "description",
    "parameters",
    "parametersJsonSchema",
    "response",
    "responseJsonSchema",
    "behavior",
];
/// The fields of the OpenAPI-style `Schema` message (`parameters`, `responseSchema`).
const SCHEMA_FIELDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];
const MIME_TYPES: &[&str] = &[
    "text/plain",
    "application/json",
    "application/xml",
    "application/yaml",
    "text/x.enum",
];
const TASK_TYPES: &[&str] = &[
    "TASK_TYPE_UNSPECIFIED",
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
];
const CALL_AFTER_USER: &str = "Please ensure that function call turn comes immediately after a user turn or after a function response turn.";
const RESPONSE_AFTER_CALL: &str =
    "Please ensure that function response turn comes immediately after a function call turn.";

/// A Gemini call: the model and the method of `/v1beta/models/{model}:{method}`.
#[derive(Debug)]
pub(super) struct Call<'a> {
    /// The model, percent-decoded.
    pub(super) model: Cow<'a, str>,
    method: &'a str,
}

impl<'a> Call<'a> {
    /// The call a path names, if it is `/v1beta/models/{model}:{method}`.
    pub(super) fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/v1beta/models/")?;
        let (model, method) = rest.rsplit_once(':')?;
        if model.is_empty() || model.contains('/') || method.is_empty() {
            return None;
        }
        let model = percent_decode_str(model).decode_utf8().ok()?;
        Some(Self { model, method })
    }
}

/// Serves a Gemini call: checks the key, then answers the method.
pub(super) fn handle(
    auth: &Auth,
    headers: &HeaderMap,
    query: Option<&str>,
    call: &Call<'_>,
    body: &[u8],
    n: u64,
) -> Reply {
    if let Err(reply) = check_key(auth, headers, query) {
        return reply;
    }
    let model = call.model.as_ref();
    match call.method {
        "generateContent" => generate(model, body, n, Framing::Whole),
        "streamGenerateContent" => {
            let sse = query_param(query, "alt").as_deref() == Some("sse");
            let framing = if sse {
                Framing::Sse
            } else {
                Framing::JsonArray
            };
            generate(model, body, n, framing)
        }
        "embedContent" => embed_content(body),
        "batchEmbedContents" => batch_embed_contents(model, body),
        method => error(
            StatusCode::NOT_FOUND,
            &format!(
                "models/{model} is not found for API version v1beta, or is not supported for {method}. Call ListModels to see the list of available models and their supported methods."
            ),
        ),
    }
}

/// The key from `x-goog-api-key` or `?key=`, checked against the expected one.
fn check_key(auth: &Auth, headers: &HeaderMap, query: Option<&str>) -> Result<(), Reply> {
    let Auth::Key { key, .. } = auth else {
        return Ok(());
    };
    let provided = headers
        .get("x-goog-api-key")
        .and_then(|value| value.to_str().ok())
        .map(|value| Cow::Borrowed(value.trim()))
        .or_else(|| query_param(query, "key"));
    match provided {
        Some(provided) if provided == key.as_str() => Ok(()),
        Some(_) => Err(reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": {
                "code": 400,
                "message": API_KEY_INVALID,
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": API_KEY_INVALID,
                    },
                ],
            }}),
        )),
        None => Err(error(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        )),
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode_str(value).decode_utf8_lossy())
}

/// A Google-shaped error: `{"error":{"code":…,"message":…,"status":…}}`.
pub(super) fn error(status: StatusCode, message: &str) -> Reply {
    reply(
        status,
        &json!({"error": {"code": status.as_u16(), "message": message, "status": status_name(status)}}),
    )
}

/// The `google.rpc.Code` name Google reports with an HTTP status.
pub(super) fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn reply<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    Reply {
        status,
        content_type: JSON,
        body: MockBody::full(serde_json::to_vec(body).unwrap_or_default()),
    }
}

// ------------------------------------------------------------ validation

/// A validation failure: the message, and for an unknown field its path (reported as a
/// `BadRequest` field violation, as Google does).
struct Bad {
    message: String,
    field: Option<String>,
}

impl From<String> for Bad {
    fn from(message: String) -> Self {
        Self {
            message,
            field: None,
        }
    }
}

impl From<&str> for Bad {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl Bad {
    fn reply(self) -> Reply {
        let mut error = json!({"code": 400, "message": self.message, "status": "INVALID_ARGUMENT"});
        if let (Some(field), Some(obj)) = (self.field, error.as_object_mut()) {
            obj.insert(
                "details".to_owned(),
                json!([{
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field, "description": self.message}],
                }]),
            );
        }
        reply(StatusCode::BAD_REQUEST, &json!({ "error": error }))
    }
}

type Checked<T> = Result<T, Bad>;

/// `lowerCamelCase` of a field name (snake_case is accepted too).
fn camel(key: &str) -> Cow<'_, str> {
    if !key.contains('_') {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `snake_case` of a camelCase field name (Google's error paths use it).
fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Field `camel_name` of `obj`, under either spelling, unless `null`.
fn get<'a>(obj: &'a Map<String, Value>, camel_name: &str) -> Option<&'a Value> {
    obj.get(camel_name)
        .or_else(|| obj.get(&snake(camel_name)))
        .filter(|value| !value.is_null())
}

/// Rejects the fields of `obj` (at `path`, snake_case) not in `allowed` (camelCase).
fn known(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Checked<()> {
    let Some(key) = obj
        .keys()
        .find(|key| !allowed.contains(&camel(key).as_ref()))
    else {
        return Ok(());
    };
    let at = if path.is_empty() {
        String::new()
    } else {
        format!(" at '{path}'")
    };
    Err(Bad {
        message: format!(
            "Invalid JSON payload received. Unknown name \"{key}\"{at}: Cannot find field."
        ),
        field: Some(if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        }),
    })
}

fn object<'a>(value: &'a Value, path: &str) -> Checked<&'a Map<String, Value>> {
    value.as_object().ok_or_else(|| {
        Bad::from(format!(
            "Invalid value at '{path}', expected an object: {}",
            shorten(&value.to_string())
        ))
    })
}

fn array<'a>(value: &'a Value, path: &str) -> Checked<&'a [Value]> {
    value.as_array().map(Vec::as_slice).ok_or_else(|| {
        Bad::from(format!(
            "Invalid value at '{path}', expected a list: {}",
            shorten(&value.to_string())
        ))
    })
}

fn string<'a>(value: &'a Value, path: &str) -> Checked<&'a str> {
    value.as_str().ok_or_else(|| {
        Bad::from(format!(
            "Invalid value at '{path}' (TYPE_STRING), {}",
            shorten(&value.to_string())
        ))
    })
}

/// An integer: a JSON number or a decimal string (proto3 JSON allows both).
fn integer(value: &Value, path: &str) -> Checked<i64> {
    let number = match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    };
    number.ok_or_else(|| {
        Bad::from(format!(
            "Invalid value at '{path}' (TYPE_INT32), {}",
            shorten(&value.to_string())
        ))
    })
}

fn number(value: &Value, path: &str) -> Checked<f64> {
    value.as_f64().ok_or_else(|| {
        Bad::from(format!(
            "Invalid value at '{path}' (TYPE_FLOAT), {}",
            shorten(&value.to_string())
        ))
    })
}

/// At most 40 characters of `text`, for error messages.
fn shorten(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(40) {
        Some((at, _)) => Cow::Owned(format!("{}...", text.get(..at).unwrap_or(""))),
        None => Cow::Borrowed(text),
    }
}

/// Base64 bytes (standard or URL-safe alphabet, padded or not, as Google accepts).
fn bytes_field(value: &Value, path: &str) -> Checked<()> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let text = string(value, path)?;
    let trimmed = text.trim_end_matches('=');
    let decodes = |engine: &base64::engine::GeneralPurpose| {
        let padded = format!("{trimmed}{}", "=".repeat((4 - trimmed.len() % 4) % 4));
        engine.decode(padded).is_ok()
    };
    if decodes(&STANDARD) || decodes(&URL_SAFE) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for \"{}\"",
            shorten(text)
        )
        .into())
    }
}

/// What the answer needs from a validated `generateContent` request.
struct Request<'a> {
    /// The functions: name and parameter schema (`Null` when none).
    functions: Vec<(&'a str, &'a Value)>,
    mode: Mode,
    /// `allowedFunctionNames`.
    allowed: Vec<&'a str>,
    /// The text parts of the last user turn that has any, joined by spaces.
    last_user_text: String,
    /// `(name, response)` of each function response of the last turn.
    responses: Vec<(&'a str, &'a Value)>,
    candidates: usize,
    /// `maxOutputTokens`, if set (and not 0).
    max_output_tokens: Option<u64>,
    stop_sequences: Vec<&'a str>,
    /// `Some(schema)` for a JSON answer (`Null` without a schema).
    json: Option<&'a Value>,
    thinking: bool,
    include_thoughts: bool,
    cached_content: bool,
}

/// The function calling mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    Any,
    None,
}

/// One content, as far as the cross-turn rules need it.
struct Turn<'a> {
    role: &'a str,
    texts: Vec<&'a str>,
    calls: usize,
    responses: Vec<(&'a str, &'a Value)>,
}

impl<'a> Request<'a> {
    fn validate(root: &'a Value) -> Checked<Self> {
        let obj = root
            .as_object()
            .ok_or_else(|| Bad::from("Invalid JSON payload received. Expected an object."))?;
        known(obj, "", REQUEST_FIELDS)?;
        let contents = match get(obj, "contents") {
            Some(contents) => array(contents, "contents")?,
            None => &[],
        };
        if contents.is_empty() {
            return Err("* GenerateContentRequest.contents: contents is not specified\n".into());
        }
        let turns = validate_contents(contents)?;
        if let Some(system) = get(obj, "systemInstruction") {
            let system = object(system, "system_instruction")?;
            known(system, "system_instruction", &["role", "parts"])?;
            let parts = get(system, "parts")
                .map_or(Ok(&[][..]), |p| array(p, "system_instruction.parts"))?;
            let mut scratch = Turn {
                role: "user",
                texts: Vec::new(),
                calls: 0,
                responses: Vec::new(),
            };
            for (j, part) in parts.iter().enumerate() {
                validate_part(
                    part,
                    &format!("system_instruction.parts[{j}]"),
                    &mut scratch,
                )?;
            }
        }
        let functions = match get(obj, "tools") {
            Some(tools) => validate_tools(tools)?,
            None => Vec::new(),
        };
        let (mode, allowed) = match get(obj, "toolConfig") {
            Some(config) => tool_config(config)?,
            None => (Mode::Auto, Vec::new()),
        };
        if let Some(settings) = get(obj, "safetySettings") {
            for (i, setting) in array(settings, "safety_settings")?.iter().enumerate() {
                let path = format!("safety_settings[{i}]");
                known(
                    object(setting, &path)?,
                    &path,
                    &["category", "threshold", "method"],
                )?;
            }
        }
        let cached_content = match get(obj, "cachedContent") {
            Some(name) => !string(name, "cached_content")?.is_empty(),
            None => false,
        };
        let mut request = Self {
            functions,
            mode,
            allowed,
            last_user_text: turns
                .iter()
                .rev()
                .find(|turn| turn.role == "user" && !turn.texts.is_empty())
                .map(|turn| turn.texts.join(" "))
                .unwrap_or_default(),
            responses: turns
                .last()
                .map(|turn| turn.responses.clone())
                .unwrap_or_default(),
            candidates: 1,
            max_output_tokens: None,
            stop_sequences: Vec::new(),
            json: None,
            thinking: false,
            include_thoughts: false,
            cached_content,
        };
        if let Some(config) = get(obj, "generationConfig") {
            request.generation_config(config)?;
        }
        Ok(request)
    }

    /// `generationConfig`.
    fn generation_config(&mut self, config: &'a Value) -> Checked<()> {
        const PATH: &str = "generation_config";
        let config = object(config, PATH)?;
        known(config, PATH, CONFIG_FIELDS)?;
        let field = |name: &str| format!("* GenerateContentRequest.{PATH}.{}", snake(name));
        if let Some(count) = get(config, "candidateCount") {
            let count = integer(count, "generation_config.candidate_count")?;
            if !(1..=8).contains(&count) {
                return Err(format!(
                    "{}: candidate_count must be in the range [1, 8]\n",
                    field("candidateCount")
                )
                .into());
            }
            self.candidates = usize::try_from(count).unwrap_or(1);
        }
        if let Some(max) = get(config, "maxOutputTokens") {
            let max = integer(max, "generation_config.max_output_tokens")?;
            if max < 0 {
                return Err(format!(
                    "{}: max_output_tokens must be positive\n",
                    field("maxOutputTokens")
                )
                .into());
            }
            self.max_output_tokens = u64::try_from(max).ok().filter(|&max| max > 0);
        }
        if let Some(temperature) = get(config, "temperature") {
            let temperature = number(temperature, "generation_config.temperature")?;
            if !(0.0..=2.0).contains(&temperature) {
                return Err(format!(
                    "{}: temperature must be in the range [0.0, 2.0]\n",
                    field("temperature")
                )
                .into());
            }
        }
        if let Some(top_p) = get(config, "topP") {
            let top_p = number(top_p, "generation_config.top_p")?;
            if !(0.0..=1.0).contains(&top_p) {
                return Err(
                    format!("{}: top_p must be in the range [0.0, 1.0]\n", field("topP")).into(),
                );
            }
        }
        if let Some(stops) = get(config, "stopSequences") {
            let stops = array(stops, "generation_config.stop_sequences")?;
            if stops.len() > 5 {
                return Err(format!(
                    "{}: the number of stop_sequences must be at most 5\n",
                    field("stopSequences")
                )
                .into());
            }
            for (i, stop) in stops.iter().enumerate() {
                self.stop_sequences.push(string(
                    stop,
                    &format!("generation_config.stop_sequences[{i}]"),
                )?);
            }
        }
        let mime = match get(config, "responseMimeType") {
            Some(mime) => string(mime, "generation_config.response_mime_type")?,
            None => "text/plain",
        };
        if !MIME_TYPES.contains(&mime) {
            return Err(format!("{}: allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`.\n", field("responseMimeType")).into());
        }
        let schema = get(config, "responseSchema");
        if let Some(schema) = schema {
            validate_schema(schema, "generation_config.response_schema", 0)?;
        }
        let schema = schema.or_else(|| get(config, "responseJsonSchema"));
        if schema.is_some() && !matches!(mime, "application/json" | "text/x.enum") {
            return Err(format!("{}: When response_schema is set, response_mime_type must be one of: application/json, text/x.enum.\n", field("responseMimeType")).into());
        }
        if mime == "application/json" {
            self.json = Some(schema.unwrap_or(&Value::Null));
        }
        if let Some(thinking) = get(config, "thinkingConfig") {
            const PATH: &str = "generation_config.thinking_config";
            let thinking = object(thinking, PATH)?;
            known(
                thinking,
                PATH,
                &["thinkingBudget", "includeThoughts", "thinkingLevel"],
            )?;
            self.include_thoughts =
                get(thinking, "includeThoughts").and_then(Value::as_bool) == Some(true);
            let budget = match get(thinking, "thinkingBudget") {
                Some(budget) => {
                    integer(budget, "generation_config.thinking_config.thinking_budget")?
                }
                None => 0,
            };
            // -1 is "dynamic": thinking on.
            self.thinking =
                self.include_thoughts || budget != 0 || get(thinking, "thinkingLevel").is_some();
        }
        Ok(())
    }
}

/// The contents, one by one and then across (function call / response turns).
fn validate_contents(contents: &[Value]) -> Checked<Vec<Turn<'_>>> {
    let mut turns = Vec::with_capacity(contents.len());
    for (i, content) in contents.iter().enumerate() {
        let path = format!("contents[{i}]");
        let obj = object(content, &path)?;
        known(obj, &path, &["role", "parts"])?;
        let role = match get(obj, "role") {
            None => "user",
            Some(Value::String(role)) if role.is_empty() => "user",
            Some(Value::String(role)) if role == "user" || role == "model" => role.as_str(),
            Some(_) => return Err("Please use a valid role: user, model.".into()),
        };
        let parts = match get(obj, "parts") {
            Some(parts) => array(parts, &format!("{path}.parts"))?,
            None => &[],
        };
        if parts.is_empty() {
            return Err(format!(
                "* GenerateContentRequest.{path}.parts: contents.parts must not be empty.\n"
            )
            .into());
        }
        let mut turn = Turn {
            role,
            texts: Vec::new(),
            calls: 0,
            responses: Vec::new(),
        };
        for (j, part) in parts.iter().enumerate() {
            validate_part(part, &format!("{path}.parts[{j}]"), &mut turn)?;
        }
        turns.push(turn);
    }
    for (i, turn) in turns.iter().enumerate() {
        let previous = i.checked_sub(1).and_then(|p| turns.get(p));
        if turn.calls > 0 && (turn.role != "model" || previous.is_none_or(|p| p.role != "user")) {
            return Err(CALL_AFTER_USER.into());
        }
        if !turn.responses.is_empty() {
            match previous {
                Some(p) if turn.role == "user" && p.role == "model" && p.calls > 0 => {
                    if p.calls != turn.responses.len() {
                        return Err("Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.".into());
                    }
                }
                _ => return Err(RESPONSE_AFTER_CALL.into()),
            }
        }
    }
    Ok(turns)
}

/// One part: exactly one data field, checked by kind.
fn validate_part<'a>(part: &'a Value, path: &str, turn: &mut Turn<'a>) -> Checked<()> {
    let obj = object(part, path)?;
    let mut fields = PART_DATA.to_vec();
    fields.extend_from_slice(PART_META);
    known(obj, path, &fields)?;
    let mut data: Option<(Cow<'_, str>, &Value)> = None;
    for (key, value) in obj {
        let name = camel(key);
        let unset = value.is_null() || value.as_str() == Some("");
        if !PART_DATA.contains(&name.as_ref()) || unset {
            continue;
        }
        if data.is_some() {
            return Err(format!("Invalid value at '{path}' (oneof), oneof field 'data' is already set. Cannot set '{name}'").into());
        }
        data = Some((name, value));
    }
    let Some((kind, value)) = data else {
        return Err(format!(
            "* GenerateContentRequest.{path}.data: required oneof field 'data' must have one initialized field\n"
        )
        .into());
    };
    match kind.as_ref() {
        "text" => turn.texts.push(string(value, &format!("{path}.text"))?),
        "inlineData" => {
            let path = format!("{path}.inline_data");
            let blob = object(value, &path)?;
            known(blob, &path, &["mimeType", "data"])?;
            if get(blob, "mimeType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                return Err(format!(
                    "* GenerateContentRequest.{path}.mime_type: mime_type must not be empty\n"
                )
                .into());
            }
            match get(blob, "data") {
                Some(data) => bytes_field(data, &format!("{path}.data"))?,
                None => {
                    return Err(format!(
                        "* GenerateContentRequest.{path}.data: data must not be empty\n"
                    )
                    .into());
                }
            }
        }
        "fileData" => {
            let path = format!("{path}.file_data");
            let file = object(value, &path)?;
            known(file, &path, &["mimeType", "fileUri"])?;
            if get(file, "fileUri")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                return Err(format!(
                    "* GenerateContentRequest.{path}.file_uri: file_uri must not be empty\n"
                )
                .into());
            }
        }
        "functionCall" => {
            let path = format!("{path}.function_call");
            let call = object(value, &path)?;
            known(call, &path, &["id", "name", "args"])?;
            if get(call, "name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                return Err(format!(
                    "* GenerateContentRequest.{path}.name: Name cannot be empty.\n"
                )
                .into());
            }
            if let Some(args) = get(call, "args") {
                object(args, &format!("{path}.args"))?;
            }
            turn.calls += 1;
        }
        "functionResponse" => {
            let path = format!("{path}.function_response");
            let response = object(value, &path)?;
            known(
                response,
                &path,
                &[
                    "id",
                    "name",
                    "response",
                    "willContinue",
                    "scheduling",
                    "parts",
                ],
            )?;
            let name = get(response, "name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                return Err(format!(
                    "* GenerateContentRequest.{path}.name: Name cannot be empty.\n"
                )
                .into());
            }
            let result = match get(response, "response") {
                Some(result) => {
                    object(result, &format!("{path}.response"))?;
                    result
                }
                None => &Value::Null,
            };
            turn.responses.push((name, result));
        }
        _ => {}
    }
    if let Some(thought) = get(obj, "thought") {
        if !thought.is_boolean() {
            return Err(format!("Invalid value at '{path}.thought' (TYPE_BOOL), {thought}").into());
        }
    }
    if let Some(signature) = get(obj, "thoughtSignature") {
        bytes_field(signature, &format!("{path}.thought_signature"))?;
    }
    Ok(())
}

/// `tools`: the declared functions (name, parameter schema).
fn validate_tools(tools: &Value) -> Checked<Vec<(&str, &Value)>> {
    let mut functions = Vec::new();
    for (i, tool) in array(tools, "tools")?.iter().enumerate() {
        let path = format!("tools[{i}]");
        let tool = object(tool, &path)?;
        known(tool, &path, TOOL_FIELDS)?;
        let Some(declarations) = get(tool, "functionDeclarations") else {
            continue;
        };
        let list_path = format!("{path}.function_declarations");
        for (j, declaration) in array(declarations, &list_path)?.iter().enumerate() {
            let path = format!("{list_path}[{j}]");
            let declaration = object(declaration, &path)?;
            known(declaration, &path, DECLARATION_FIELDS)?;
            let name = get(declaration, "name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !valid_function_name(name) {
                return Err(format!("* GenerateContentRequest.{path}.name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n").into());
            }
            let schema = match get(declaration, "parameters") {
                Some(schema) => {
                    validate_schema(schema, &format!("{path}.parameters"), 0)?;
                    schema
                }
                None => get(declaration, "parametersJsonSchema").unwrap_or(&Value::Null),
            };
            functions.push((name, schema));
        }
    }
    Ok(functions)
}

/// A function name: a letter or `_`, then letters, digits, `_`, `.`, `:`, `-`; 64 at most.
fn valid_function_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let starts_well = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    starts_well
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// An OpenAPI-style `Schema` (`parameters`, `responseSchema`): known fields only, recursively.
fn validate_schema(schema: &Value, path: &str, depth: usize) -> Checked<()> {
    const MAX_DEPTH: usize = 64;
    let obj = object(schema, path)?;
    known(obj, path, SCHEMA_FIELDS)?;
    if depth > MAX_DEPTH {
        return Ok(());
    }
    if let Some(properties) = get(obj, "properties") {
        let properties = object(properties, &format!("{path}.properties"))?;
        for (key, property) in properties {
            validate_schema(
                property,
                &format!("{path}.properties[{key}].value"),
                depth + 1,
            )?;
        }
    }
    if let Some(items) = get(obj, "items") {
        validate_schema(items, &format!("{path}.items"), depth + 1)?;
    }
    if let Some(branches) = get(obj, "anyOf") {
        for (i, branch) in array(branches, &format!("{path}.any_of"))?
            .iter()
            .enumerate()
        {
            validate_schema(branch, &format!("{path}.any_of[{i}]"), depth + 1)?;
        }
    }
    Ok(())
}

/// `toolConfig.functionCallingConfig`: the mode and the allowed names.
fn tool_config(config: &Value) -> Checked<(Mode, Vec<&str>)> {
    const PATH: &str = "tool_config.function_calling_config";
    let config = object(config, "tool_config")?;
    known(
        config,
        "tool_config",
        &["functionCallingConfig", "retrievalConfig"],
    )?;
    let Some(calling) = get(config, "functionCallingConfig") else {
        return Ok((Mode::Auto, Vec::new()));
    };
    let calling = object(calling, PATH)?;
    known(calling, PATH, &["mode", "allowedFunctionNames"])?;
    let mode = match get(calling, "mode") {
        None => Mode::Auto,
        Some(Value::String(mode)) => match mode.as_str() {
            // VALIDATED lets the model answer text too: like AUTO here.
            "MODE_UNSPECIFIED" | "AUTO" | "VALIDATED" => Mode::Auto,
            "ANY" => Mode::Any,
            "NONE" => Mode::None,
            other => {
                return Err(format!("Invalid value at '{PATH}.mode' (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"{other}\"").into());
            }
        },
        Some(other) => {
            return Err(format!("Invalid value at '{PATH}.mode' (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), {other}").into());
        }
    };
    let mut allowed = Vec::new();
    if let Some(names) = get(calling, "allowedFunctionNames") {
        for (i, name) in array(names, &format!("{PATH}.allowed_function_names"))?
            .iter()
            .enumerate()
        {
            allowed.push(string(
                name,
                &format!("{PATH}.allowed_function_names[{i}]"),
            )?);
        }
    }
    let restricting = matches!(
        get(calling, "mode").and_then(Value::as_str),
        Some("ANY" | "VALIDATED")
    );
    if !allowed.is_empty() && !restricting {
        return Err(format!("* GenerateContentRequest.{PATH}.allowed_function_names: allowed_function_names may only be set when mode is ANY or VALIDATED\n").into());
    }
    Ok((mode, allowed))
}

// ---------------------------------------------------------------- answer

/// How a `generateContent` answer is framed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// One JSON object.
    Whole,
    /// `alt=sse`: `data: <chunk>\r\n\r\n` per chunk.
    Sse,
    /// No `alt=sse`: a JSON array of chunks, sent in pieces.
    JsonArray,
}

/// One candidate of the answer.
struct Candidate<'a> {
    thought: Option<String>,
    text: Option<String>,
    calls: Vec<(&'a str, Value)>,
    finish: &'static str,
    tokens: u64,
}

/// `generateContent` / `streamGenerateContent`.
fn generate(model: &str, body: &[u8], n: u64, framing: Framing) -> Reply {
    let Ok(root) = serde_json::from_slice::<Value>(body) else {
        return Bad::from("Invalid JSON payload received. Unexpected token.").reply();
    };
    let request = match Request::validate(&root) {
        Ok(request) => request,
        Err(bad) => return bad.reply(),
    };
    let candidates: Vec<Candidate<'_>> = (0..request.candidates)
        .map(|index| candidate(&request, index))
        .collect();
    let prompt = ((body.len() / 4) as u64).max(1);
    let cached = if request.cached_content || prompt >= IMPLICIT_CACHE_TOKENS {
        prompt * 3 / 4
    } else {
        0
    };
    let output: u64 = candidates.iter().map(|c| c.tokens).sum();
    let thoughts: u64 = if request.thinking {
        candidates
            .iter()
            .map(|c| {
                c.thought
                    .as_deref()
                    .map_or(8, |t| word_chunks(t).count() as u64)
            })
            .sum()
    } else {
        0
    };
    let mut usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    });
    if let Some(usage) = usage.as_object_mut() {
        if cached > 0 {
            usage.insert("cachedContentTokenCount".to_owned(), json!(cached));
            usage.insert(
                "cacheTokensDetails".to_owned(),
                json!([{"modality": "TEXT", "tokenCount": cached}]),
            );
        }
        if thoughts > 0 {
            usage.insert("thoughtsTokenCount".to_owned(), json!(thoughts));
        }
    }
    let response_id = format!("mock-response-{n}");
    let envelope = |candidates: Vec<Value>, usage: Value| {
        json!({
            "candidates": candidates,
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": response_id,
        })
    };
    if framing == Framing::Whole {
        let whole: Vec<Value> = candidates
            .iter()
            .enumerate()
            .map(|(index, c)| {
                candidate_json(index, whole_parts(c, request.thinking), Some(c.finish))
            })
            .collect();
        return reply(StatusCode::OK, &envelope(whole, usage));
    }

    // Streamed: chunk k holds piece k of each candidate that has one.
    let pieces: Vec<Vec<Vec<Value>>> = candidates
        .iter()
        .map(|c| streamed_parts(c, request.thinking))
        .collect();
    let chunk_count = pieces.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let partial_usage = json!({"promptTokenCount": prompt, "totalTokenCount": prompt});
    let chunks: Vec<Value> = (0..chunk_count)
        .map(|k| {
            let in_chunk: Vec<Value> = candidates
                .iter()
                .zip(&pieces)
                .enumerate()
                .filter_map(|(index, (c, pieces))| {
                    let last = k + 1 == pieces.len().max(1);
                    match pieces.get(k) {
                        Some(parts) => Some(candidate_json(
                            index,
                            parts.clone(),
                            last.then_some(c.finish),
                        )),
                        // A candidate without any part (cut by MAX_TOKENS) ends in chunk 0.
                        None if k == 0 => Some(candidate_json(index, Vec::new(), Some(c.finish))),
                        None => None,
                    }
                })
                .collect();
            let usage = if k + 1 == chunk_count {
                usage.clone()
            } else {
                partial_usage.clone()
            };
            envelope(in_chunk, usage)
        })
        .collect();
    let last = chunks.len().saturating_sub(1);
    let (content_type, frames) = match framing {
        Framing::Sse => (
            EVENT_STREAM,
            chunks
                .iter()
                .map(|chunk| Bytes::from(format!("data: {chunk}\r\n\r\n")))
                .collect(),
        ),
        _ => (
            JSON,
            chunks
                .iter()
                .enumerate()
                .map(|(k, chunk)| {
                    let open = if k == 0 { "[" } else { ",\r\n" };
                    let close = if k == last { "]" } else { "" };
                    Bytes::from(format!("{open}{chunk}{close}"))
                })
                .collect(),
        ),
    };
    Reply {
        status: StatusCode::OK,
        content_type,
        body: MockBody::frames(frames),
    }
}

/// Candidate `index` of the answer.
fn candidate<'a>(request: &Request<'a>, index: usize) -> Candidate<'a> {
    let thought = request
        .include_thoughts
        .then(|| format!("mock thinking about: {}", request.last_user_text));
    let calls = function_calls(request);
    let mut finish = "STOP";
    if !calls.is_empty() {
        let calls: Vec<(&str, Value)> = calls
            .into_iter()
            .map(|(name, schema)| (name, example_of(schema, name)))
            .collect();
        let tokens: u64 = calls
            .iter()
            .map(|(name, args)| (name.len() + args.to_string().len()).div_ceil(4) as u64)
            .sum();
        if request.max_output_tokens.is_some_and(|max| tokens > max) {
            return Candidate {
                thought,
                text: None,
                calls: Vec::new(),
                finish: "MAX_TOKENS",
                tokens: 0,
            };
        }
        return Candidate {
            thought,
            text: None,
            calls,
            finish,
            tokens,
        };
    }
    let mut text = match request.json {
        Some(Value::Null) => {
            json!({"reply": format!("mock reply to: {}", request.last_user_text)}).to_string()
        }
        Some(schema) => example_of(schema, "reply").to_string(),
        None if !request.responses.is_empty() => {
            let results: Vec<String> = request
                .responses
                .iter()
                .map(|(name, response)| format!("{name}: {response}"))
                .collect();
            format!("mock reply to function result: {}", results.join(" | "))
        }
        None => format!("mock reply to: {}", request.last_user_text),
    };
    if request.json.is_none() {
        if index > 0 {
            text.push_str(&format!(" (candidate {index})"));
        }
        cut_at_stop_sequence(&mut text, &request.stop_sequences);
    }
    let mut tokens = word_chunks(&text).count() as u64;
    if let Some(max) = request.max_output_tokens.filter(|&max| tokens > max) {
        text = word_chunks(&text)
            .take(usize::try_from(max).unwrap_or(usize::MAX))
            .collect();
        tokens = max;
        finish = "MAX_TOKENS";
    }
    Candidate {
        thought,
        text: Some(text),
        calls: Vec::new(),
        finish,
        tokens,
    }
}

/// The functions to call: none unless declared and allowed; the first allowed or declared
/// one, and the next one too when the user asks for `parallel` calls.
fn function_calls<'a>(request: &Request<'a>) -> Vec<(&'a str, &'a Value)> {
    if request.functions.is_empty()
        || request.mode == Mode::None
        || (request.mode == Mode::Auto && !request.responses.is_empty())
    {
        return Vec::new();
    }
    let callable: Vec<(&str, &Value)> = if request.allowed.is_empty() {
        request.functions.clone()
    } else {
        request
            .functions
            .iter()
            .filter(|(name, _)| request.allowed.contains(name))
            .copied()
            .collect()
    };
    let Some(&first) = callable.first() else {
        return Vec::new();
    };
    let mut calls = vec![first];
    if request.last_user_text.contains("parallel") {
        calls.push(callable.get(1).copied().unwrap_or(first));
    }
    calls
}

/// The parts of a whole (non-streamed) candidate.
fn whole_parts(candidate: &Candidate<'_>, thinking: bool) -> Vec<Value> {
    let mut parts = Vec::new();
    if let Some(thought) = &candidate.thought {
        parts.push(json!({"text": thought, "thought": true}));
    }
    if let Some(text) = &candidate.text {
        parts.push(json!({"text": text}));
    }
    parts.extend(call_parts(candidate, thinking));
    parts
}

/// The parts of a streamed candidate, chunk by chunk.
fn streamed_parts(candidate: &Candidate<'_>, thinking: bool) -> Vec<Vec<Value>> {
    let mut chunks = Vec::new();
    if let Some(thought) = &candidate.thought {
        chunks.push(vec![json!({"text": thought, "thought": true})]);
    }
    if let Some(text) = &candidate.text {
        let words: Vec<&str> = word_chunks(text).collect();
        for group in words.chunks(WORDS_PER_CHUNK) {
            chunks.push(vec![json!({"text": group.concat()})]);
        }
    }
    let calls = call_parts(candidate, thinking);
    if !calls.is_empty() {
        chunks.push(calls);
    }
    chunks
}

/// The `functionCall` parts of a candidate (the first with a thought signature when thinking).
fn call_parts(candidate: &Candidate<'_>, thinking: bool) -> Vec<Value> {
    candidate
        .calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            let mut part = json!({"functionCall": {"name": name, "args": args}});
            if let (true, 0, Some(part)) = (thinking, i, part.as_object_mut()) {
                part.insert(
                    "thoughtSignature".to_owned(),
                    json!("bW9jay10aG91Z2h0LXNpZ25hdHVyZQ=="),
                );
            }
            part
        })
        .collect()
}

/// A candidate object; `content` has no `parts` when there are none.
fn candidate_json(index: usize, parts: Vec<Value>, finish: Option<&str>) -> Value {
    let content = if parts.is_empty() {
        json!({"role": "model"})
    } else {
        json!({"parts": parts, "role": "model"})
    };
    let mut value = json!({"content": content, "index": index});
    if let (Some(finish), Some(obj)) = (finish, value.as_object_mut()) {
        obj.insert("finishReason".to_owned(), json!(finish));
    }
    value
}

// ------------------------------------------------------------ embeddings

/// An embedding (serialized as `f32`s: shortest decimal forms, as Google sends them).
#[derive(Serialize)]
struct Values {
    values: Vec<f32>,
}

/// The answer of `:embedContent`.
#[derive(Serialize)]
struct Single {
    embedding: Values,
}

/// The answer of `:batchEmbedContents`.
#[derive(Serialize)]
struct Batch {
    embeddings: Vec<Values>,
}

const EMBED_FIELDS: &[&str] = &[
    "model",
    "content",
    "taskType",
    "title",
    "outputDimensionality",
];

/// `:embedContent`: `{"embedding":{"values":[…]}}`.
fn embed_content(body: &[u8]) -> Reply {
    let Ok(root) = serde_json::from_slice::<Value>(body) else {
        return Bad::from("Invalid JSON payload received. Unexpected token.").reply();
    };
    let embedded = root
        .as_object()
        .ok_or_else(|| Bad::from("Invalid JSON payload received. Expected an object."))
        .and_then(|obj| embed_request(obj, "", "EmbedContentRequest"));
    match embedded {
        Ok(values) => reply(
            StatusCode::OK,
            &Single {
                embedding: Values { values },
            },
        ),
        Err(bad) => bad.reply(),
    }
}

/// `:batchEmbedContents`: `{"embeddings":[{"values":[…]}, …]}`, one per request.
fn batch_embed_contents(model: &str, body: &[u8]) -> Reply {
    let Ok(root) = serde_json::from_slice::<Value>(body) else {
        return Bad::from("Invalid JSON payload received. Unexpected token.").reply();
    };
    match batch(model, &root) {
        Ok(embeddings) => reply(StatusCode::OK, &Batch { embeddings }),
        Err(bad) => bad.reply(),
    }
}

fn batch(model: &str, root: &Value) -> Checked<Vec<Values>> {
    let obj = root
        .as_object()
        .ok_or_else(|| Bad::from("Invalid JSON payload received. Expected an object."))?;
    known(obj, "", &["requests"])?;
    let requests = match get(obj, "requests") {
        Some(requests) => array(requests, "requests")?,
        None => &[],
    };
    if requests.is_empty() {
        return Err("* BatchEmbedContentsRequest.requests: requests must not be empty\n".into());
    }
    if requests.len() > 100 {
        return Err(
            "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n"
                .into(),
        );
    }
    let expected = format!("models/{model}");
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let path = format!("requests[{i}]");
        let request = object(request, &path)?;
        match get(request, "model").and_then(Value::as_str) {
            None | Some("") => {
                return Err(format!(
                    "* BatchEmbedContentsRequest.{path}.model: model is required\n"
                )
                .into());
            }
            Some(named) if named != expected => {
                return Err(format!("* BatchEmbedContentsRequest.{path}.model: the model of each request must be the model of the batch ({expected}), not {named}\n").into());
            }
            Some(_) => {}
        }
        let values = embed_request(request, &path, "BatchEmbedContentsRequest")?;
        embeddings.push(Values { values });
    }
    Ok(embeddings)
}

/// One embedding request (`path` is its place in a batch, empty alone): its vector.
fn embed_request(obj: &Map<String, Value>, path: &str, message: &str) -> Checked<Vec<f32>> {
    let at = |field: &str| {
        if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    known(obj, path, EMBED_FIELDS)?;
    let Some(content) = get(obj, "content") else {
        return Err(format!("* {message}.{}: content is not specified\n", at("content")).into());
    };
    let content_path = at("content");
    let content = object(content, &content_path)?;
    known(content, &content_path, &["role", "parts"])?;
    let parts = match get(content, "parts") {
        Some(parts) => array(parts, &format!("{content_path}.parts"))?,
        None => &[],
    };
    if parts.is_empty() {
        return Err(format!(
            "* {message}.{content_path}.parts: contents.parts must not be empty.\n"
        )
        .into());
    }
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part_path = format!("{content_path}.parts[{j}]");
        let part = object(part, &part_path)?;
        let mut fields = PART_DATA.to_vec();
        fields.extend_from_slice(PART_META);
        known(part, &part_path, &fields)?;
        match get(part, "text") {
            Some(Value::String(text)) if !text.is_empty() => texts.push(text.as_str()),
            _ => {
                return Err(format!(
                    "* {message}.{part_path}.text: only non-empty text parts can be embedded\n"
                )
                .into());
            }
        }
    }
    if let Some(task) = get(obj, "taskType") {
        let task = string(task, &at("task_type"))?;
        if !TASK_TYPES.contains(&task) {
            return Err(format!("Invalid value at '{}' (type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType), \"{task}\"", at("task_type")).into());
        }
    }
    let dims = match get(obj, "outputDimensionality") {
        Some(dims) => {
            let dims = integer(dims, &at("output_dimensionality"))?;
            if !(1..=3072).contains(&dims) {
                return Err(format!(
                    "* {message}.{}: output_dimensionality must be in the range [1, 3072]\n",
                    at("output_dimensionality")
                )
                .into());
            }
            usize::try_from(dims).unwrap_or(DEFAULT_DIMENSIONS)
        }
        None => DEFAULT_DIMENSIONS,
    };
    Ok(embedding_values(texts.join(" ").as_bytes(), dims))
}

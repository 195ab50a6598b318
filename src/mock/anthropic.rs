//! The Anthropic Messages API of the mock upstream: `POST /v1/messages`, plain and streamed.
//!
//! Follows the Messages API as documented for `anthropic-version: 2023-06-01` (the only
//! version; features as of late 2025: extended thinking, prompt caching, structured outputs
//! through `output_config.format`, or `output_format` with an `anthropic-beta:
//! structured-outputs-…` header).
//!
//! **Credentials.** `x-api-key: <key>` (the [builder](super::MockUpstreamBuilder::api_key)'s
//! key; anything with `no_auth`), else 401 `authentication_error` `invalid x-api-key`. The
//! `anthropic-version` header is required (400 otherwise, even with `no_auth`).
//!
//! **Validation** (400 `invalid_request_error`, with the real API's messages where known):
//! `model`, `messages` and `max_tokens` (an integer ≥ 1) are required; unknown top-level fields
//! (and unknown fields of messages, blocks, tools, `tool_choice`, `metadata`) are
//! `"<field>: Extra inputs are not permitted"`; roles are `user` / `assistant` and the first
//! message is a user's; `system` is a string or text blocks; content blocks are `text`,
//! `image` (`base64` with a JPEG/PNG/GIF/WebP type and valid base64, `url` or `file` source),
//! `document` (PDF `base64`, `text`, `url`, `content` or `file` source), `tool_use`,
//! `tool_result`, `thinking`, `redacted_thinking`; text blocks are non-empty and not blank;
//! each `tool_result` answers a `tool_use` of the previous (assistant) message and each
//! `tool_use` is answered in the next message; `tool_choice` is `auto` / `any` / `tool` (with a
//! declared `name`) / `none`; `temperature` and `top_p` are within `0..=1`; thinking needs
//! `budget_tokens` ≥ 1024 and below `max_tokens`, no forced tool and no temperature other
//! than 1.
//!
//! **Answers** are pure functions of the request and its number `n`:
//! - a text block `mock reply to: <text of the last user message>`; after tool results (the
//!   last message carries `tool_result` blocks) `mock reply to tool result: <their text>`
//!   (several joined by ` | `); with a JSON schema (`output_config.format`) the text is a JSON
//!   object built from the schema (see [`example_of`]);
//! - when the request declares tools and `tool_choice` allows them, and the last message is not
//!   a tool result (or `tool_choice` is `any` / `tool`, which always call): a `tool_use` block
//!   for the named tool (`tool`) or the first one, whose input is built from its
//!   `input_schema` (strings `mock-<property>`, numbers 1, booleans true); two of them (the
//!   next declared tool, or the named one again) when the last user text contains
//!   `parallel` and `disable_parallel_tool_use` is not set. With `auto` a short text block
//!   (`I'll use <tool>.`) comes first, as Claude often writes one;
//! - with thinking enabled, a `thinking` block (with a signature) first;
//! - `stop_reason`: `tool_use`, `stop_sequence` (a `stop_sequences` entry found in the reply
//!   text, which is cut before it), `max_tokens` (the answer is cut to `max_tokens`: a token
//!   per word of text, a token per 4 bytes of tool input JSON; blocks that do not fit are
//!   dropped), else `end_turn`;
//! - `usage`: the prompt counts a token per 4 bytes of the request body. When the request
//!   carries any `cache_control` (system, message blocks or tools), three quarters of it are
//!   reported as `cache_read_input_tokens` and the rest as `input_tokens` (Anthropic's
//!   `input_tokens` excludes cached tokens); otherwise `cache_read_input_tokens` is 0.
//!   `cache_creation_input_tokens` is always 0;
//! - ids `msg_mock_<n>` and `toolu_mock_<n>_<i>`; `model` echoes the request's.
//!
//! **Streams** (`"stream": true`) send one event per body frame, each `event: <name>` +
//! `data: <json>`: `message_start` (usage so far), then per block `content_block_start`
//! (a `ping` after the first), its deltas (`text_delta` per word, `thinking_delta` per word
//! then a `signature_delta`, `input_json_delta` pieces of 8 bytes cut through keys and
//! strings after an empty one), `content_block_stop`; then `message_delta` (`stop_reason`,
//! `usage.output_tokens`) and `message_stop`.

use std::collections::HashSet;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::Auth;
use super::body::MockBody;
use super::endpoints::{Reply, word_chunks};

/// The `content-type` of JSON answers.
const JSON: &str = "application/json";
/// The `content-type` of Anthropic's event streams.
const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";
/// Bytes per `input_json_delta` piece: small enough to cut keys and strings.
const JSON_PIECE: usize = 8;
/// The top-level request fields the API knows (without beta headers).
const TOP_LEVEL: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
];
const BLOCK_TAGS: &str =
    "'text', 'image', 'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking'";
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];
const NON_EMPTY_CONTENT: &str = "messages: all messages must have non-empty content except for the optional final assistant message";

/// `POST /v1/messages`: checks the credential and the version header, validates the body and
/// answers (see the module docs).
pub(super) fn messages(auth: &Auth, headers: &HeaderMap, body: &[u8], n: u64) -> Reply {
    if !authorized(auth, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
            n,
        );
    }
    if headers.get("anthropic-version").is_none() {
        return invalid("anthropic-version: header is required", n);
    }
    let beta = headers.get_all("anthropic-beta").iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|value| value.contains("structured-outputs"))
    });
    let Ok(root) = serde_json::from_slice::<Value>(body) else {
        return invalid("There was an error parsing the body.", n);
    };
    let request = match Request::validate(&root, beta) {
        Ok(request) => request,
        Err(message) => return invalid(&message, n),
    };
    let answer = Answer::of(&request, body.len(), n);
    if request.stream {
        answer.stream()
    } else {
        Reply::json(&answer.message())
    }
}

/// Whether the request carries the expected `x-api-key`.
fn authorized(auth: &Auth, headers: &HeaderMap) -> bool {
    match auth {
        Auth::None => true,
        Auth::Key { key, .. } => headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim() == key),
    }
}

/// An Anthropic-shaped error:
/// `{"type":"error","error":{"type":…,"message":…},"request_id":…}`.
pub(super) fn error(status: StatusCode, kind: &str, message: &str, n: u64) -> Reply {
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": format!("req_mock_{n}"),
    });
    Reply {
        status,
        content_type: JSON,
        body: MockBody::full(serde_json::to_vec(&body).unwrap_or_default()),
    }
}

/// A 400 `invalid_request_error`.
fn invalid(message: &str, n: u64) -> Reply {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message, n)
}

// ------------------------------------------------------------ validation

/// What the answer needs from a validated request.
struct Request<'a> {
    model: &'a str,
    max_tokens: u64,
    stream: bool,
    stop_sequences: Vec<&'a str>,
    /// The custom tools: name and input schema.
    tools: Vec<(&'a str, &'a Value)>,
    choice: Choice<'a>,
    /// `disable_parallel_tool_use` is not set.
    parallel: bool,
    /// The text blocks of the last user message that has any, joined by spaces.
    last_user_text: String,
    /// The text of each `tool_result` block of the last message.
    tool_results: Vec<String>,
    /// Some `cache_control` was set.
    cached: bool,
    thinking: bool,
    /// The JSON schema of a structured output.
    json_schema: Option<&'a Value>,
}

/// The `tool_choice`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Choice<'a> {
    Auto,
    Any,
    Tool(&'a str),
    None,
}

/// One message, as far as the cross-message rules need it.
struct Turn<'a> {
    role: &'a str,
    texts: Vec<&'a str>,
    tool_uses: Vec<&'a str>,
    /// `(block index, tool_use_id, text)` of each `tool_result`.
    tool_results: Vec<(usize, &'a str, String)>,
}

/// Validation results are the real API's error message.
type Checked<T> = Result<T, String>;

impl<'a> Request<'a> {
    fn validate(root: &'a Value, beta: bool) -> Checked<Self> {
        let obj = root
            .as_object()
            .ok_or_else(|| "Input should be a valid dictionary".to_owned())?;
        for key in obj.keys() {
            let known = TOP_LEVEL.contains(&key.as_str()) || (beta && key == "output_format");
            if !known {
                return Err(format!("{key}: Extra inputs are not permitted"));
            }
        }
        let model = string(required(obj, "", "model")?, "model")?;
        let messages = match required(obj, "", "messages")? {
            Value::Array(messages) => messages,
            _ => return Err("messages: Input should be a valid list".to_owned()),
        };
        let max_tokens = integer(required(obj, "", "max_tokens")?, "max_tokens", 1)?;
        let mut cached = false;
        if let Some(system) = present(obj, "system") {
            system_prompt(system, &mut cached)?;
        }
        let turns = validate_messages(messages, &mut cached)?;
        let tools = match present(obj, "tools") {
            Some(tools) => validate_tools(tools, &mut cached)?,
            None => Vec::new(),
        };
        let (choice, parallel) = match present(obj, "tool_choice") {
            Some(choice) => tool_choice(choice, &tools)?,
            None => (Choice::Auto, true),
        };
        let temperature = match present(obj, "temperature") {
            Some(value) => Some(number_in(value, "temperature", 0.0, 1.0)?),
            None => None,
        };
        if let Some(value) = present(obj, "top_p") {
            number_in(value, "top_p", 0.0, 1.0)?;
        }
        if let Some(value) = present(obj, "top_k") {
            integer(value, "top_k", 0)?;
        }
        let stream = match present(obj, "stream") {
            Some(value) => boolean(value, "stream")?,
            None => false,
        };
        let stop_sequences = match present(obj, "stop_sequences") {
            Some(value) => string_list(value, "stop_sequences")?,
            None => Vec::new(),
        };
        if let Some(value) = present(obj, "metadata") {
            let metadata = object(value, "metadata")?;
            only(metadata, "metadata", &["user_id"])?;
            if let Some(user) = present(metadata, "user_id") {
                string(user, "metadata.user_id")?;
            }
        }
        if let Some(value) = present(obj, "service_tier") {
            if !matches!(value.as_str(), Some("auto" | "standard_only")) {
                return Err("service_tier: Input should be 'auto' or 'standard_only'".to_owned());
            }
        }
        let thinking = match present(obj, "thinking") {
            Some(value) => thinking_enabled(value, max_tokens)?,
            None => false,
        };
        if thinking {
            if temperature.is_some_and(|t| t != 1.0) {
                return Err("`temperature` may only be set to 1 when thinking is enabled. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#feature-compatibility".to_owned());
            }
            if matches!(choice, Choice::Any | Choice::Tool(_)) {
                return Err(
                    "Thinking may not be enabled when tool_choice forces tool use.".to_owned(),
                );
            }
        }
        let mut json_schema = None;
        if let Some(value) = present(obj, "output_config") {
            let config = object(value, "output_config")?;
            only(config, "output_config", &["format", "effort"])?;
            if let Some(format) = present(config, "format") {
                json_schema = Some(output_format(format, "output_config.format")?);
            }
        }
        if let Some(format) = present(obj, "output_format") {
            json_schema = Some(output_format(format, "output_format")?);
        }

        let last_user_text = turns
            .iter()
            .rev()
            .find(|turn| turn.role == "user" && !turn.texts.is_empty())
            .map(|turn| turn.texts.join(" "))
            .unwrap_or_default();
        let tool_results = turns
            .last()
            .map(|turn| {
                turn.tool_results
                    .iter()
                    .map(|(_, _, text)| text.clone())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            model,
            max_tokens: max_tokens.unsigned_abs(),
            stream,
            stop_sequences,
            tools,
            choice,
            parallel,
            last_user_text,
            tool_results,
            cached,
            thinking,
            json_schema,
        })
    }
}

/// `system`: a string or a list of text blocks.
fn system_prompt(system: &Value, cached: &mut bool) -> Checked<()> {
    match system {
        Value::String(_) => Ok(()),
        Value::Array(blocks) => {
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system.{i}");
                let obj = object(block, &path)?;
                match obj.get("type").and_then(Value::as_str) {
                    Some("text") => {}
                    Some(other) => {
                        return Err(format!(
                            "{path}: Input tag '{other}' found using 'type' does not match any of the expected tags: 'text'"
                        ));
                    }
                    None => return Err(no_tag(&path)),
                }
                only(obj, &path, &["type", "text", "cache_control", "citations"])?;
                let text = string(required(obj, &path, "text")?, &join(&path, "text"))?;
                non_blank(text, "system")?;
                cache_control(obj, &path, cached)?;
            }
            Ok(())
        }
        _ => Err("system: Input should be a valid string".to_owned()),
    }
}

/// The messages, one by one and then across (first role, tool use / result pairing).
fn validate_messages<'a>(messages: &'a [Value], cached: &mut bool) -> Checked<Vec<Turn<'a>>> {
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages.{i}");
        let obj = object(message, &path)?;
        only(obj, &path, &["role", "content"])?;
        let role = match required(obj, &path, "role")? {
            Value::String(role) if role == "user" || role == "assistant" => role.as_str(),
            _ => {
                return Err(format!(
                    "{path}.role: Input should be 'user' or 'assistant'"
                ));
            }
        };
        let final_assistant = role == "assistant" && i + 1 == messages.len();
        let mut turn = Turn {
            role,
            texts: Vec::new(),
            tool_uses: Vec::new(),
            tool_results: Vec::new(),
        };
        match required(obj, &path, "content")? {
            Value::String(text) => {
                if text.is_empty() && !final_assistant {
                    return Err(NON_EMPTY_CONTENT.to_owned());
                }
                if final_assistant && text.ends_with(char::is_whitespace) {
                    return Err(
                        "messages: final assistant content cannot end with trailing whitespace"
                            .to_owned(),
                    );
                }
                turn.texts.push(text);
            }
            Value::Array(blocks) => {
                if blocks.is_empty() && !final_assistant {
                    return Err(NON_EMPTY_CONTENT.to_owned());
                }
                for (j, block) in blocks.iter().enumerate() {
                    content_block(block, &format!("{path}.content.{j}"), j, &mut turn, cached)?;
                }
            }
            _ => return Err(format!("{path}.content: Input should be a valid list")),
        }
        turns.push(turn);
    }
    if turns.first().is_some_and(|turn| turn.role != "user") {
        return Err("messages: first message must use the \"user\" role".to_owned());
    }
    for (i, turn) in turns.iter().enumerate() {
        let previous = i.checked_sub(1).and_then(|p| turns.get(p));
        for (j, id, _) in &turn.tool_results {
            let answered =
                previous.is_some_and(|p| p.role == "assistant" && p.tool_uses.contains(id));
            if !answered {
                return Err(format!(
                    "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
    }
    for (i, (turn, next)) in turns.iter().zip(turns.iter().skip(1)).enumerate() {
        let missing: Vec<&str> = turn
            .tool_uses
            .iter()
            .filter(|id| !next.tool_results.iter().any(|(_, r, _)| r == *id))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                missing.join(", ")
            ));
        }
    }
    Ok(turns)
}

/// One block of a message's content.
fn content_block<'a>(
    block: &'a Value,
    path: &str,
    index: usize,
    turn: &mut Turn<'a>,
    cached: &mut bool,
) -> Checked<()> {
    let obj = object(block, path)?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| no_tag(path))?;
    let role = turn.role;
    let assistant_only = |what: &str| {
        if role == "assistant" {
            Ok(())
        } else {
            Err(format!(
                "{path}: `{what}` blocks can only be in `assistant` messages"
            ))
        }
    };
    match kind {
        "text" | "image" | "document" => {
            if let Some(text) = media_or_text(obj, kind, path, cached)? {
                turn.texts.push(text);
            }
        }
        "tool_use" => {
            assistant_only("tool_use")?;
            only(obj, path, &["type", "id", "name", "input", "cache_control"])?;
            let id = string(required(obj, path, "id")?, &join(path, "id"))?;
            if !valid_name(id, usize::MAX) {
                return Err(format!(
                    "{path}.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            string(required(obj, path, "name")?, &join(path, "name"))?;
            object(required(obj, path, "input")?, &join(path, "input"))?;
            cache_control(obj, path, cached)?;
            turn.tool_uses.push(id);
        }
        "tool_result" => {
            if role != "user" {
                return Err(format!(
                    "{path}: `tool_result` blocks can only be in `user` messages"
                ));
            }
            only(
                obj,
                path,
                &[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                ],
            )?;
            let id = string(
                required(obj, path, "tool_use_id")?,
                &join(path, "tool_use_id"),
            )?;
            let text = match present(obj, "content") {
                None => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(blocks)) => {
                    let mut texts = Vec::new();
                    for (k, inner) in blocks.iter().enumerate() {
                        let inner_path = format!("{path}.content.{k}");
                        let inner_obj = object(inner, &inner_path)?;
                        match inner_obj.get("type").and_then(Value::as_str) {
                            Some(kind @ ("text" | "image" | "document")) => {
                                if let Some(text) =
                                    media_or_text(inner_obj, kind, &inner_path, cached)?
                                {
                                    texts.push(text);
                                }
                            }
                            Some(other) => {
                                return Err(format!(
                                    "{inner_path}: Input tag '{other}' found using 'type' does not match any of the expected tags: 'text', 'image', 'document'"
                                ));
                            }
                            None => return Err(no_tag(&inner_path)),
                        }
                    }
                    texts.join(" ")
                }
                Some(_) => return Err(format!("{path}.content: Input should be a valid list")),
            };
            if let Some(value) = present(obj, "is_error") {
                boolean(value, &join(path, "is_error"))?;
            }
            cache_control(obj, path, cached)?;
            turn.tool_results.push((index, id, text));
        }
        "thinking" => {
            assistant_only("thinking")?;
            only(obj, path, &["type", "thinking", "signature"])?;
            string(required(obj, path, "thinking")?, &join(path, "thinking"))?;
            string(required(obj, path, "signature")?, &join(path, "signature"))?;
        }
        "redacted_thinking" => {
            assistant_only("redacted_thinking")?;
            only(obj, path, &["type", "data"])?;
            string(required(obj, path, "data")?, &join(path, "data"))?;
        }
        other => {
            return Err(format!(
                "{path}: Input tag '{other}' found using 'type' does not match any of the expected tags: {BLOCK_TAGS}"
            ));
        }
    }
    Ok(())
}

/// A `text`, `image` or `document` block (in a message or a tool result); the text of a text
/// block.
fn media_or_text<'a>(
    obj: &'a Map<String, Value>,
    kind: &str,
    path: &str,
    cached: &mut bool,
) -> Checked<Option<&'a str>> {
    cache_control(obj, path, cached)?;
    match kind {
        "text" => {
            only(obj, path, &["type", "text", "cache_control", "citations"])?;
            let text = string(required(obj, path, "text")?, &join(path, "text"))?;
            non_blank(text, "messages")?;
            Ok(Some(text))
        }
        "image" => {
            only(obj, path, &["type", "source", "cache_control"])?;
            image_source(required(obj, path, "source")?, &join(path, "source"))?;
            Ok(None)
        }
        _ => {
            only(
                obj,
                path,
                &[
                    "type",
                    "source",
                    "cache_control",
                    "title",
                    "context",
                    "citations",
                ],
            )?;
            document_source(required(obj, path, "source")?, &join(path, "source"))?;
            Ok(None)
        }
    }
}

/// An image `source`: `base64`, `url` or `file`.
fn image_source(source: &Value, path: &str) -> Checked<()> {
    let obj = object(source, path)?;
    match obj.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let path = format!("{path}.base64");
            only(obj, &path, &["type", "media_type", "data"])?;
            let media_type = required(obj, &path, "media_type")?.as_str().unwrap_or("");
            if !IMAGE_TYPES.contains(&media_type) {
                return Err(format!(
                    "{path}.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                ));
            }
            base64_data(required(obj, &path, "data")?, &path)
        }
        Some("url") => url_source(obj, &format!("{path}.url")),
        Some("file") => file_source(obj, &format!("{path}.file")),
        Some(other) => Err(format!(
            "{path}: Input tag '{other}' found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'"
        )),
        None => Err(no_tag(path)),
    }
}

/// A document `source`: PDF `base64`, plain `text`, `url`, `content` or `file`.
fn document_source(source: &Value, path: &str) -> Checked<()> {
    let obj = object(source, path)?;
    match obj.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let path = format!("{path}.base64");
            only(obj, &path, &["type", "media_type", "data"])?;
            if required(obj, &path, "media_type")?.as_str() != Some("application/pdf") {
                return Err(format!(
                    "{path}.media_type: Input should be 'application/pdf'"
                ));
            }
            base64_data(required(obj, &path, "data")?, &path)
        }
        Some("text") => {
            let path = format!("{path}.text");
            only(obj, &path, &["type", "media_type", "data"])?;
            if required(obj, &path, "media_type")?.as_str() != Some("text/plain") {
                return Err(format!("{path}.media_type: Input should be 'text/plain'"));
            }
            string(required(obj, &path, "data")?, &join(&path, "data"))?;
            Ok(())
        }
        Some("url") => url_source(obj, &format!("{path}.url")),
        Some("file") => file_source(obj, &format!("{path}.file")),
        Some("content") => {
            let path = format!("{path}.content");
            only(obj, &path, &["type", "content"])?;
            match required(obj, &path, "content")? {
                Value::String(_) | Value::Array(_) => Ok(()),
                _ => Err(format!("{path}.content: Input should be a valid list")),
            }
        }
        Some(other) => Err(format!(
            "{path}: Input tag '{other}' found using 'type' does not match any of the expected tags: 'base64', 'text', 'content', 'url', 'file'"
        )),
        None => Err(no_tag(path)),
    }
}

fn url_source(obj: &Map<String, Value>, path: &str) -> Checked<()> {
    only(obj, path, &["type", "url"])?;
    let url = string(required(obj, path, "url")?, &join(path, "url"))?;
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(format!("{path}.url: URL must use the http or https scheme"))
    }
}

fn file_source(obj: &Map<String, Value>, path: &str) -> Checked<()> {
    only(obj, path, &["type", "file_id"])?;
    string(required(obj, path, "file_id")?, &join(path, "file_id"))?;
    Ok(())
}

/// Base64 `data` that must decode.
fn base64_data(data: &Value, path: &str) -> Checked<()> {
    let data = string(data, &join(path, "data"))?;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map(drop)
        .map_err(|_| format!("{path}.data: The data is not valid base64."))
}

/// Text blocks must hold some non-whitespace text.
fn non_blank(text: &str, prefix: &str) -> Checked<()> {
    if text.is_empty() {
        Err(format!("{prefix}: text content blocks must be non-empty"))
    } else if text.trim().is_empty() {
        Err(format!(
            "{prefix}: text content blocks must contain non-whitespace text"
        ))
    } else {
        Ok(())
    }
}

/// A block's `cache_control` (`{"type":"ephemeral","ttl"?:"5m"|"1h"}`); notes that one is set.
fn cache_control(obj: &Map<String, Value>, path: &str, cached: &mut bool) -> Checked<()> {
    let Some(value) = present(obj, "cache_control") else {
        return Ok(());
    };
    let path = join(path, "cache_control");
    let control = object(value, &path)?;
    only(control, &path, &["type", "ttl"])?;
    if control.get("type").and_then(Value::as_str) != Some("ephemeral") {
        return Err(format!("{path}.type: Input should be 'ephemeral'"));
    }
    if let Some(ttl) = present(control, "ttl") {
        if !matches!(ttl.as_str(), Some("5m" | "1h")) {
            return Err(format!("{path}.ttl: Input should be '5m' or '1h'"));
        }
    }
    *cached = true;
    Ok(())
}

/// `tools`: the custom tools (name, input schema); server tools are accepted and ignored.
fn validate_tools<'a>(tools: &'a Value, cached: &mut bool) -> Checked<Vec<(&'a str, &'a Value)>> {
    let Value::Array(tools) = tools else {
        return Err("tools: Input should be a valid list".to_owned());
    };
    let mut custom = Vec::with_capacity(tools.len());
    let mut names = HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools.{i}");
        let obj = object(tool, &path)?;
        if !matches!(
            obj.get("type").and_then(Value::as_str),
            None | Some("custom")
        ) {
            // A server tool (web search, code execution, ...): the mock never calls it.
            continue;
        }
        let path = format!("{path}.custom");
        only(
            obj,
            &path,
            &[
                "type",
                "name",
                "description",
                "input_schema",
                "cache_control",
                "strict",
            ],
        )?;
        let name = string(required(obj, &path, "name")?, &join(&path, "name"))?;
        if !valid_name(name, 128) {
            return Err(format!(
                "{path}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            ));
        }
        if let Some(description) = present(obj, "description") {
            string(description, &join(&path, "description"))?;
        }
        let schema = required(obj, &path, "input_schema")?;
        let schema_obj = object(schema, &join(&path, "input_schema"))?;
        if schema_obj.get("type").and_then(Value::as_str) != Some("object") {
            return Err(format!(
                "{path}.input_schema.type: Input should be 'object'"
            ));
        }
        cache_control(obj, &path, cached)?;
        if !names.insert(name) {
            return Err("tools: Tool names must be unique.".to_owned());
        }
        custom.push((name, schema));
    }
    Ok(custom)
}

/// `tool_choice` and whether parallel tool use stays allowed.
fn tool_choice<'a>(value: &'a Value, tools: &[(&str, &Value)]) -> Checked<(Choice<'a>, bool)> {
    let obj = object(value, "tool_choice")?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| no_tag("tool_choice"))?;
    let path = format!("tool_choice.{kind}");
    let (choice, fields): (Choice<'a>, &[&str]) = match kind {
        "auto" => (Choice::Auto, &["type", "disable_parallel_tool_use"]),
        "any" => (Choice::Any, &["type", "disable_parallel_tool_use"]),
        "tool" => {
            let name = string(required(obj, &path, "name")?, &join(&path, "name"))?;
            (
                Choice::Tool(name),
                &["type", "name", "disable_parallel_tool_use"],
            )
        }
        "none" => (Choice::None, &["type"]),
        other => {
            return Err(format!(
                "tool_choice: Input tag '{other}' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
            ));
        }
    };
    only(obj, &path, fields)?;
    let disable = match present(obj, "disable_parallel_tool_use") {
        Some(value) => boolean(value, &join(&path, "disable_parallel_tool_use"))?,
        None => false,
    };
    if matches!(choice, Choice::Any | Choice::Tool(_)) && tools.is_empty() {
        return Err(
            "tool_choice: tool_choice may only be specified while providing tools".to_owned(),
        );
    }
    if let Choice::Tool(name) = choice {
        if !tools.iter().any(|(tool, _)| *tool == name) {
            return Err(format!(
                "tool_choice: Tool '{name}' not found in provided tools"
            ));
        }
    }
    Ok((choice, !disable))
}

/// `thinking`: whether it is on.
fn thinking_enabled(value: &Value, max_tokens: i64) -> Checked<bool> {
    let obj = object(value, "thinking")?;
    match obj.get("type").and_then(Value::as_str) {
        Some("enabled") => {
            only(obj, "thinking.enabled", &["type", "budget_tokens"])?;
            let budget = integer(
                required(obj, "thinking.enabled", "budget_tokens")?,
                "thinking.enabled.budget_tokens",
                1024,
            )?;
            if budget >= max_tokens {
                return Err("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size".to_owned());
            }
            Ok(true)
        }
        Some("disabled") => only(obj, "thinking.disabled", &["type"]).map(|()| false),
        Some(other) => Err(format!(
            "thinking: Input tag '{other}' found using 'type' does not match any of the expected tags: 'enabled', 'disabled'"
        )),
        None => Err(no_tag("thinking")),
    }
}

/// A structured output format: `{"type":"json_schema","schema":{…}}`; the schema.
fn output_format<'a>(value: &'a Value, path: &str) -> Checked<&'a Value> {
    let obj = object(value, path)?;
    if obj.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err(format!("{path}.type: Input should be 'json_schema'"));
    }
    only(obj, path, &["type", "schema"])?;
    let schema = required(obj, path, "schema")?;
    object(schema, &join(path, "schema"))?;
    Ok(schema)
}

/// A tool name or id: ASCII letters, digits, `_` and `-`, 1 to `max` of them.
fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn no_tag(path: &str) -> String {
    format!("{path}: Unable to extract tag using discriminator 'type'")
}

/// A field that is present and not `null`.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|value| !value.is_null())
}

fn required<'a>(obj: &'a Map<String, Value>, path: &str, key: &str) -> Checked<&'a Value> {
    present(obj, key).ok_or_else(|| format!("{}: Field required", join(path, key)))
}

/// Rejects the fields of `obj` not in `allowed`.
fn only(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Checked<()> {
    match obj.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(format!(
            "{}: Extra inputs are not permitted",
            join(path, key)
        )),
        None => Ok(()),
    }
}

fn object<'a>(value: &'a Value, path: &str) -> Checked<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| format!("{path}: Input should be a valid dictionary"))
}

fn string<'a>(value: &'a Value, path: &str) -> Checked<&'a str> {
    value
        .as_str()
        .ok_or_else(|| format!("{path}: Input should be a valid string"))
}

fn boolean(value: &Value, path: &str) -> Checked<bool> {
    value
        .as_bool()
        .ok_or_else(|| format!("{path}: Input should be a valid boolean"))
}

fn string_list<'a>(value: &'a Value, path: &str) -> Checked<Vec<&'a str>> {
    let Value::Array(items) = value else {
        return Err(format!("{path}: Input should be a valid list"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| string(item, &format!("{path}.{i}")))
        .collect()
}

/// An integer (a float without a fraction passes, as with pydantic) of at least `min`.
fn integer(value: &Value, path: &str, min: i64) -> Checked<i64> {
    let number = value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    });
    let number = number.ok_or_else(|| format!("{path}: Input should be a valid integer"))?;
    if number < min {
        return Err(format!(
            "{path}: Input should be greater than or equal to {min}"
        ));
    }
    Ok(number)
}

/// A number within `min..=max`.
fn number_in(value: &Value, path: &str, min: f64, max: f64) -> Checked<f64> {
    let number = value
        .as_f64()
        .ok_or_else(|| format!("{path}: Input should be a valid number"))?;
    if number < min {
        return Err(format!(
            "{path}: Input should be greater than or equal to {min}"
        ));
    }
    if number > max {
        return Err(format!(
            "{path}: Input should be less than or equal to {max}"
        ));
    }
    Ok(number)
}

// ---------------------------------------------------------------- answer

/// One block of the answer.
enum Block<'a> {
    Thinking {
        text: String,
        signature: String,
    },
    Text(String),
    ToolUse {
        id: String,
        name: &'a str,
        input: Value,
    },
}

impl Block<'_> {
    /// Its output tokens: a token per word of text, per 4 bytes of tool input JSON.
    fn tokens(&self) -> u64 {
        match self {
            Block::Thinking { text, .. } | Block::Text(text) => word_chunks(text).count() as u64,
            Block::ToolUse { input, .. } => input.to_string().len().div_ceil(4) as u64,
        }
    }

    /// The whole block.
    fn json(&self) -> Value {
        match self {
            Block::Thinking { text, signature } => {
                json!({"type": "thinking", "thinking": text, "signature": signature})
            }
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        }
    }

    /// The block as `content_block_start` announces it (empty).
    fn start_json(&self) -> Value {
        match self {
            Block::Thinking { .. } => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Block::Text(_) => json!({"type": "text", "text": ""}),
            Block::ToolUse { id, name, .. } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": {}})
            }
        }
    }
}

/// The answer to a validated request.
struct Answer<'a> {
    id: String,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    input_tokens: u64,
    cache_read: u64,
    output_tokens: u64,
}

impl<'a> Answer<'a> {
    fn of(request: &Request<'a>, body_len: usize, n: u64) -> Self {
        let mut content = Vec::new();
        if request.thinking {
            content.push(Block::Thinking {
                text: format!("mock thinking about: {}", request.last_user_text),
                signature: format!("mock-signature-{n}"),
            });
        }
        let calls = tool_calls(request);
        let mut stop_sequence = None;
        if calls.is_empty() {
            let mut text = text_reply(request);
            if request.json_schema.is_none() {
                stop_sequence = cut_at_stop_sequence(&mut text, &request.stop_sequences);
            }
            content.push(Block::Text(text));
        } else {
            if request.choice == Choice::Auto {
                let names: Vec<&str> = calls.iter().map(|(name, _)| *name).collect();
                content.push(Block::Text(format!("I'll use {}.", names.join(" and "))));
            }
            for (i, (name, schema)) in calls.into_iter().enumerate() {
                content.push(Block::ToolUse {
                    id: format!("toolu_mock_{n}_{i}"),
                    name,
                    input: example_of(schema, name),
                });
            }
        }
        let (content, output_tokens, truncated) = fit(content, request.max_tokens);
        let stop_reason = if truncated {
            stop_sequence = None;
            "max_tokens"
        } else if stop_sequence.is_some() {
            "stop_sequence"
        } else if content.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
            "tool_use"
        } else {
            "end_turn"
        };
        let prompt_tokens = ((body_len / 4) as u64).max(1);
        let cache_read = if request.cached {
            prompt_tokens * 3 / 4
        } else {
            0
        };
        Self {
            id: format!("msg_mock_{n}"),
            model: request.model,
            content,
            stop_reason,
            stop_sequence,
            input_tokens: prompt_tokens - cache_read,
            cache_read,
            output_tokens,
        }
    }

    fn usage(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    }

    /// The whole message (non-streamed answer).
    fn message(&self) -> Value {
        let content: Vec<Value> = self.content.iter().map(Block::json).collect();
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage(self.output_tokens),
        })
    }

    /// The event stream, one event per frame.
    fn stream(&self) -> Reply {
        let mut frames = Vec::with_capacity(8 + self.content.len() * 8);
        frames.push(event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": self.usage(1),
            }}),
        ));
        let ping = || event("ping", &json!({"type": "ping"}));
        if self.content.is_empty() {
            frames.push(ping());
        }
        for (index, block) in self.content.iter().enumerate() {
            frames.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": block.start_json()}),
            ));
            if index == 0 {
                frames.push(ping());
            }
            let delta = |delta: Value| {
                event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                )
            };
            match block {
                Block::Text(text) => frames.extend(
                    word_chunks(text)
                        .map(|word| delta(json!({"type": "text_delta", "text": word}))),
                ),
                Block::Thinking { text, signature } => {
                    frames
                        .extend(word_chunks(text).map(|word| {
                            delta(json!({"type": "thinking_delta", "thinking": word}))
                        }));
                    frames.push(delta(
                        json!({"type": "signature_delta", "signature": signature}),
                    ));
                }
                Block::ToolUse { input, .. } => {
                    let input = input.to_string();
                    frames.push(delta(
                        json!({"type": "input_json_delta", "partial_json": ""}),
                    ));
                    frames.extend(json_pieces(&input, JSON_PIECE).map(|piece| {
                        delta(json!({"type": "input_json_delta", "partial_json": piece}))
                    }));
                }
            }
            frames.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
        frames.push(event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
                "usage": {"output_tokens": self.output_tokens},
            }),
        ));
        frames.push(event("message_stop", &json!({"type": "message_stop"})));
        Reply {
            status: StatusCode::OK,
            content_type: EVENT_STREAM,
            body: MockBody::frames(frames),
        }
    }
}

/// The tools to call: none unless tools are declared and allowed; the forced or first tool;
/// two calls when the user asks for `parallel` ones and they are allowed.
fn tool_calls<'a>(request: &Request<'a>) -> Vec<(&'a str, &'a Value)> {
    let first = match request.choice {
        Choice::None => return Vec::new(),
        Choice::Auto if !request.tool_results.is_empty() => return Vec::new(),
        Choice::Tool(name) => request.tools.iter().position(|(tool, _)| *tool == name),
        Choice::Auto | Choice::Any => Some(0),
    };
    let Some(first) = first.filter(|&i| i < request.tools.len()) else {
        return Vec::new();
    };
    let mut picks = vec![first];
    if request.parallel && request.last_user_text.contains("parallel") {
        picks.push(match request.choice {
            Choice::Tool(_) => first,
            _ => (first + 1) % request.tools.len(),
        });
    }
    picks
        .into_iter()
        .filter_map(|i| request.tools.get(i).copied())
        .collect()
}

/// The text of a text answer.
fn text_reply(request: &Request<'_>) -> String {
    if let Some(schema) = request.json_schema {
        return example_of(schema, "reply").to_string();
    }
    if !request.tool_results.is_empty() {
        return format!(
            "mock reply to tool result: {}",
            request.tool_results.join(" | ")
        );
    }
    format!("mock reply to: {}", request.last_user_text)
}

/// Cuts `text` before the earliest stop sequence it contains; returns that sequence.
pub(super) fn cut_at_stop_sequence<'s>(text: &mut String, stops: &[&'s str]) -> Option<&'s str> {
    let (at, stop) = stops
        .iter()
        .filter(|stop| !stop.is_empty())
        .filter_map(|stop| text.find(*stop).map(|at| (at, *stop)))
        .min_by_key(|(at, _)| *at)?;
    text.truncate(at);
    Some(stop)
}

/// Keeps the blocks that fit in `max_tokens` (a text cut to the words that fit); returns them,
/// the tokens they use and whether anything was cut.
fn fit(blocks: Vec<Block<'_>>, max_tokens: u64) -> (Vec<Block<'_>>, u64, bool) {
    let mut left = max_tokens;
    let mut kept = Vec::with_capacity(blocks.len());
    for block in blocks {
        let tokens = block.tokens();
        if tokens <= left {
            left -= tokens;
            kept.push(block);
            continue;
        }
        let words = usize::try_from(left).unwrap_or(usize::MAX);
        let cut = |text: &str| word_chunks(text).take(words).collect::<String>();
        match block {
            Block::Text(text) if left > 0 => kept.push(Block::Text(cut(&text))),
            Block::Thinking { text, signature } if left > 0 => kept.push(Block::Thinking {
                text: cut(&text),
                signature,
            }),
            _ => {}
        }
        return (kept, max_tokens, true);
    }
    (kept, max_tokens - left, false)
}

/// One named SSE event: `event: <name>\ndata: <json>\n\n`.
fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Splits `text` into pieces of about `size` bytes (at char boundaries), cutting anywhere:
/// through keys and strings of a JSON text.
pub(super) fn json_pieces(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = size.max(1).min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// A value matching `schema` (also used by the Gemini mock): an object of its `properties`
/// (recursively), strings `mock-<property name>` (`name` at the top), numbers and integers 1,
/// booleans `true`, arrays of one item, the first `enum` value or the `const`, the first
/// non-null branch of `anyOf` / `oneOf` / `allOf`. Type names are read case-insensitively
/// (Gemini's schemas write `STRING`); a schema without a type is an object if it has
/// properties, else a string.
pub(super) fn example_of(schema: &Value, name: &str) -> Value {
    example(schema, name, 0)
}

/// [`example_of`], at a nesting `depth` (bounded: deeper schemas give `null`).
fn example(schema: &Value, name: &str, depth: usize) -> Value {
    const MAX_DEPTH: usize = 32;
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return Value::String(format!("mock-{name}"));
    };
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(constant) = obj.get("const") {
        return constant.clone();
    }
    for key in ["anyOf", "oneOf", "allOf", "any_of"] {
        let branch = obj
            .get(key)
            .and_then(Value::as_array)
            .and_then(|branches| branches.iter().find(|b| !is_null_type(b)));
        if let Some(branch) = branch {
            return example(branch, name, depth + 1);
        }
    }
    let kind = match obj.get("type") {
        Some(Value::String(kind)) => Some(kind.to_ascii_lowercase()),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| !kind.eq_ignore_ascii_case("null"))
            .map(str::to_ascii_lowercase),
        _ => None,
    };
    let kind = kind.unwrap_or_else(|| {
        if obj.contains_key("properties") {
            "object"
        } else {
            "string"
        }
        .to_owned()
    });
    match kind.as_str() {
        "object" => {
            let mut map = Map::new();
            if let Some(Value::Object(properties)) = obj.get("properties") {
                for (key, property) in properties {
                    map.insert(key.clone(), example(property, key, depth + 1));
                }
            }
            Value::Object(map)
        }
        "array" => {
            let item = obj.get("items").unwrap_or(&Value::Null);
            Value::Array(vec![example(item, name, depth + 1)])
        }
        "number" | "integer" => json!(1),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => Value::String(format!("mock-{name}")),
    }
}

/// A `{"type":"null"}` schema.
fn is_null_type(schema: &Value) -> bool {
    schema
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.eq_ignore_ascii_case("null"))
}

//! OpenAI chat request -> Anthropic Messages request.
//!
//! The client's body is parsed once into a [`Value`]; the Messages request borrows its strings
//! (base64 images and PDFs are not copied) and is serialized from typed structs, so only
//! fields the Messages API defines are ever sent.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Number, Value};

use super::PROVIDER;
use crate::error::Error;
use crate::provider::dialect::openai::{
    boolean, data_url, is_http_url, number, tool_call_arguments,
};
use crate::provider::dialect::{Options, ReplyContext, UpstreamCall};

/// The Messages endpoint, below the provider's base URL.
const PATH: &str = "/v1/messages";

/// The forced tool's name when `response_format` gives none (`json_object`, or a
/// `json_schema` without a name).
const JSON_TOOL: &str = "json_output";

/// The forced tool's description when the schema has none: it tells the model what the tool is.
const JSON_TOOL_DESCRIPTION: &str = "Give the answer as JSON matching this schema.";

/// Translates the client's OpenAI chat request `body` into a Messages call for `model`.
///
/// # Errors
/// `invalid_json` for a body that is not a JSON object, `invalid_param` / `missing_param` for
/// a malformed field, `unsupported_param` for one Anthropic cannot honour (unless
/// [`Options::drop_params`]).
pub(crate) fn chat_request(
    body: &[u8],
    model: &str,
    options: &Options,
) -> Result<(UpstreamCall, ReplyContext), Error> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::invalid_json().with_source(e))?;
    let Value::Object(fields) = &value else {
        return Err(Error::invalid_body("the body must be a JSON object"));
    };
    let mut parts = Parts::default();
    for (key, value) in fields {
        parts.field(key, value, options)?;
    }
    let messages = parts
        .messages
        .ok_or_else(|| Error::missing_param("messages"))?;
    let (system, messages) = translate_messages(messages)?;
    if messages.is_empty() {
        return Err(Error::invalid_param(
            "messages",
            "must hold at least one user or assistant message with content",
        ));
    }
    let ToolParts {
        tools,
        tool_choice,
        json_tool,
    } = parts.tools()?;

    let mut context = ReplyContext::new(model);
    context.include_usage = parts.stream && parts.include_usage;
    context.json_tool = json_tool;
    let request = MessagesRequest {
        model,
        max_tokens: parts
            .max_completion_tokens
            .or(parts.max_tokens)
            .unwrap_or(u64::from(options.default_max_tokens)),
        system,
        messages,
        temperature: parts.temperature,
        top_p: parts.top_p,
        stop_sequences: parts.stop,
        metadata: parts
            .user
            .or(parts.safety_identifier)
            .map(|user_id| Metadata { user_id }),
        tools,
        tool_choice,
        stream: parts.stream,
    };
    let body = serde_json::to_vec(&request).map_err(|e| Error::internal().with_source(e))?;
    let call = UpstreamCall {
        path: PATH.to_owned(),
        body,
        stream: parts.stream,
    };
    Ok((call, context))
}

/// A Messages API request body (only the fields this translation sets).
#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'a>>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a Number>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
    stream: bool,
}

/// `metadata`: Anthropic's only field there is the end user's id.
#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

/// One turn of the conversation (user and assistant alternate).
#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// A content block of a turn (or of `system`, text only).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: Source<'a>,
    },
    Document {
        source: Source<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent<'a>>,
    },
}

/// Where an image or document's bytes are.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// A tool result's content: a string as sent, or text blocks.
#[derive(Serialize)]
#[serde(untagged)]
enum ToolResultContent<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

/// A tool the model may call.
#[derive(Serialize)]
struct Tool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
}

/// `tool_choice`: `auto`, `any`, `none`, or `tool` with a `name`.
#[derive(Serialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

impl<'a> ToolChoice<'a> {
    fn kind(kind: &'static str) -> Self {
        Self {
            kind,
            name: None,
            disable_parallel_tool_use: false,
        }
    }

    fn tool(name: &'a str) -> Self {
        Self {
            name: Some(name),
            ..Self::kind("tool")
        }
    }
}

/// The tools to send, the `tool_choice`, and the forced response-format tool's name.
struct ToolParts<'a> {
    tools: Vec<Tool<'a>>,
    tool_choice: Option<ToolChoice<'a>>,
    json_tool: Option<String>,
}

/// The client's top-level fields, checked and sorted out, before they are put together.
#[derive(Default)]
struct Parts<'a> {
    messages: Option<&'a Value>,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<&'a Number>,
    top_p: Option<&'a Number>,
    stop: Vec<&'a str>,
    user: Option<&'a str>,
    safety_identifier: Option<&'a str>,
    tools: Option<&'a Value>,
    tool_choice: Option<&'a Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<&'a Value>,
}

impl<'a> Parts<'a> {
    /// Takes one top-level field; a `null` is as good as absent.
    fn field(&mut self, key: &str, value: &'a Value, options: &Options) -> Result<(), Error> {
        if value.is_null() {
            return Ok(());
        }
        match key {
            // `model` is given by the caller; the rest only concern OpenAI's side.
            "model" | "metadata" | "store" | "service_tier" => {}
            "messages" => self.messages = Some(value),
            "stream" => self.stream = boolean(key, value)?,
            "stream_options" => {
                self.include_usage =
                    value.get("include_usage").and_then(Value::as_bool) == Some(true);
            }
            "max_tokens" => self.max_tokens = Some(positive(key, value)?),
            "max_completion_tokens" => self.max_completion_tokens = Some(positive(key, value)?),
            "temperature" => self.temperature = Some(number(key, value)?),
            "top_p" => self.top_p = Some(number(key, value)?),
            "stop" => self.stop = stop(value)?,
            "user" => self.user = end_user(key, value)?,
            // OpenAI's newer name for `user`.
            "safety_identifier" => self.safety_identifier = end_user(key, value)?,
            "tools" => self.tools = Some(value),
            "tool_choice" => self.tool_choice = Some(value),
            "parallel_tool_calls" => self.parallel_tool_calls = Some(boolean(key, value)?),
            "response_format" => self.response_format = Some(value),
            _ if is_harmless_default(key, value) || options.drop_params => {}
            _ => return Err(unsupported(key)),
        }
        Ok(())
    }

    /// The tools, `tool_choice` and the forced response-format tool's name.
    ///
    /// A `json_schema` / `json_object` response format is a tool the model is forced to call;
    /// when the client also sent tools, they are still sent (earlier turns may use them) but
    /// the forced tool wins over the client's `tool_choice`: the answer is the JSON.
    fn tools(&self) -> Result<ToolParts<'a>, Error> {
        let mut tools = match self.tools {
            Some(tools) => translate_tools(tools)?,
            None => Vec::new(),
        };
        let forced = match self.response_format {
            Some(format) => json_tool(format)?,
            None => None,
        };
        let json_tool = forced.as_ref().map(|t| t.name.to_owned());
        let mut choice = if let Some(forced) = forced {
            if tools.iter().any(|t| t.name == forced.name) {
                return Err(Error::invalid_param(
                    "response_format.json_schema.name",
                    "must differ from the names of the tools",
                ));
            }
            let choice = ToolChoice::tool(forced.name);
            tools.push(forced);
            Some(choice)
        } else {
            let choice = match self.tool_choice {
                Some(choice) => Some(tool_choice(choice)?),
                None => None,
            };
            // Without tools there is nothing to choose (and Anthropic refuses `any`/`tool`).
            choice.filter(|_| !tools.is_empty())
        };
        if self.parallel_tool_calls == Some(false) && !tools.is_empty() {
            let choice = choice.get_or_insert_with(|| ToolChoice::kind("auto"));
            choice.disable_parallel_tool_use = choice.kind != "none";
        }
        Ok(ToolParts {
            tools,
            tool_choice: choice,
            json_tool,
        })
    }
}

/// `param` names a parameter Anthropic cannot honour.
fn unsupported(param: impl Into<String>) -> Error {
    Error::unsupported_param(param, PROVIDER)
}

/// Whether `value` for a parameter Anthropic lacks is the value that asks for nothing
/// (`n: 1`, `logprobs: false`, a zero penalty, ...), so it is no reason to refuse.
fn is_harmless_default(key: &str, value: &Value) -> bool {
    match key {
        "n" => value.as_u64() == Some(1),
        "logprobs" => value == &Value::Bool(false),
        "top_logprobs" => value.as_u64() == Some(0),
        "logit_bias" => value.as_object().is_some_and(Map::is_empty),
        "presence_penalty" | "frequency_penalty" => value.as_f64() == Some(0.0),
        "modalities" => value
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m == "text")),
        _ => false,
    }
}

/// `user` / `safety_identifier`: a string; empty is none.
fn end_user<'a>(key: &str, value: &'a Value) -> Result<Option<&'a str>, Error> {
    let user = value
        .as_str()
        .ok_or_else(|| Error::invalid_param(key, "must be a string"))?;
    Ok(Some(user).filter(|u| !u.is_empty()))
}

fn positive(key: &str, value: &Value) -> Result<u64, Error> {
    value
        .as_u64()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::invalid_param(key, "must be a positive integer"))
}

/// `stop`: a string or an array of strings; empty ones are left out (Anthropic refuses them).
fn stop(value: &Value) -> Result<Vec<&str>, Error> {
    let invalid = || Error::invalid_param("stop", "must be a string or an array of strings");
    match value {
        Value::String(s) => Ok(Some(s.as_str())
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect()),
        Value::Array(items) => items
            .iter()
            .filter(|s| s.as_str() != Some(""))
            .map(|s| s.as_str().ok_or_else(invalid))
            .collect(),
        _ => Err(invalid()),
    }
}

/// `response_format` as a tool the model is forced to call, or `None` for `text`.
fn json_tool(format: &Value) -> Result<Option<Tool<'_>>, Error> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Tool {
            name: JSON_TOOL,
            description: Some(JSON_TOOL_DESCRIPTION),
            input_schema: Cow::Owned(serde_json::json!({"type": "object"})),
        })),
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    Error::invalid_param("response_format.json_schema", "must be an object")
                })?;
            let name = match schema.get("name") {
                None | Some(Value::Null) => JSON_TOOL,
                Some(Value::String(name)) => name,
                Some(_) => {
                    return Err(Error::invalid_param(
                        "response_format.json_schema.name",
                        "must be a string",
                    ));
                }
            };
            let input_schema = match schema.get("schema") {
                None | Some(Value::Null) => Cow::Owned(serde_json::json!({"type": "object"})),
                Some(schema @ Value::Object(_)) => Cow::Borrowed(schema),
                Some(_) => {
                    return Err(Error::invalid_param(
                        "response_format.json_schema.schema",
                        "must be an object",
                    ));
                }
            };
            let description = schema
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or(JSON_TOOL_DESCRIPTION);
            Ok(Some(Tool {
                name,
                description: Some(description),
                input_schema,
            }))
        }
        _ => Err(Error::invalid_param(
            "response_format.type",
            "must be one of text, json_object, json_schema",
        )),
    }
}

/// `tools`: function tools only.
fn translate_tools(tools: &Value) -> Result<Vec<Tool<'_>>, Error> {
    let tools = tools
        .as_array()
        .ok_or_else(|| Error::invalid_param("tools", "must be an array"))?;
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            match tool.get("type").and_then(Value::as_str) {
                None | Some("function") => {}
                Some(_) => {
                    return Err(unsupported(format!("tools[{i}].type")));
                }
            }
            let function = tool
                .get("function")
                .filter(|f| f.is_object())
                .ok_or_else(|| {
                    Error::invalid_param(format!("tools[{i}].function"), "is required")
                })?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::invalid_param(format!("tools[{i}].function.name"), "must be a string")
                })?;
            let input_schema = match function.get("parameters") {
                None | Some(Value::Null) => {
                    Cow::Owned(serde_json::json!({"type": "object", "properties": {}}))
                }
                Some(schema @ Value::Object(_)) => Cow::Borrowed(schema),
                Some(_) => {
                    return Err(Error::invalid_param(
                        format!("tools[{i}].function.parameters"),
                        "must be an object",
                    ));
                }
            };
            Ok(Tool {
                name,
                description: function
                    .get("description")
                    .and_then(Value::as_str)
                    .filter(|d| !d.is_empty()),
                input_schema,
            })
        })
        .collect()
}

/// `tool_choice`: `none`, `auto`, `required`, or a named function.
fn tool_choice(choice: &Value) -> Result<ToolChoice<'_>, Error> {
    match choice {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::kind("none")),
            "auto" => Ok(ToolChoice::kind("auto")),
            "required" => Ok(ToolChoice::kind("any")),
            _ => Err(Error::invalid_param(
                "tool_choice",
                "must be none, auto, required or a named function",
            )),
        },
        Value::Object(_) => match choice.get("type").and_then(Value::as_str) {
            Some("function") => choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .map(ToolChoice::tool)
                .ok_or_else(|| {
                    Error::invalid_param("tool_choice.function.name", "must be a string")
                }),
            // `allowed_tools`, `custom`: no Anthropic equivalent.
            _ => Err(unsupported("tool_choice.type")),
        },
        _ => Err(Error::invalid_param(
            "tool_choice",
            "must be a string or an object",
        )),
    }
}

/// `messages` into the `system` blocks and the turns.
fn translate_messages(messages: &Value) -> Result<(Vec<Block<'_>>, Vec<Turn<'_>>), Error> {
    let messages = messages
        .as_array()
        .ok_or_else(|| Error::invalid_param("messages", "must be an array"))?;
    let mut system = Vec::new();
    let mut turns = Turns::default();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).ok_or_else(|| {
            Error::invalid_param(format!("messages[{i}].role"), "must be a string")
        })?;
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => text_parts(content, i, &mut system)?,
            "user" => turns.push("user", user_blocks(content, i)?),
            "assistant" => turns.push("assistant", assistant_blocks(message, content, i)?),
            "tool" => turns.push_tool_result(tool_result(message, content, i)?),
            "function" => {
                return Err(unsupported(format!("messages[{i}].role")));
            }
            _ => {
                return Err(Error::invalid_param(
                    format!("messages[{i}].role"),
                    "must be one of system, developer, user, assistant, tool",
                ));
            }
        }
    }
    Ok((system, turns.0))
}

/// Turns being built: consecutive messages of one role are one turn, as Anthropic requires
/// alternating roles.
#[derive(Default)]
struct Turns<'a>(Vec<Turn<'a>>);

impl<'a> Turns<'a> {
    /// Appends `blocks` to the last turn if it has `role`, else starts a turn. A message
    /// without content adds nothing (Anthropic refuses empty turns).
    fn push(&mut self, role: &'static str, blocks: Vec<Block<'a>>) {
        if blocks.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(turn) if turn.role == role => turn.content.extend(blocks),
            _ => self.0.push(Turn {
                role,
                content: blocks,
            }),
        }
    }

    /// Adds a tool result to the user turn: after the results already there, before any
    /// other content (Anthropic wants tool results first in their turn).
    fn push_tool_result(&mut self, block: Block<'a>) {
        match self.0.last_mut() {
            Some(turn) if turn.role == "user" => {
                let at = turn
                    .content
                    .iter()
                    .take_while(|b| matches!(b, Block::ToolResult { .. }))
                    .count();
                turn.content.insert(at, block);
            }
            _ => self.0.push(Turn {
                role: "user",
                content: vec![block],
            }),
        }
    }
}

/// Text content (a string, or `text` parts) into `out`, leaving out empty text.
fn text_parts<'a>(content: &'a Value, i: usize, out: &mut Vec<Block<'a>>) -> Result<(), Error> {
    match content {
        Value::Null => {}
        Value::String(text) => push_text(out, text),
        Value::Array(parts) => {
            for (j, part) in parts.iter().enumerate() {
                match part_type(part, i, j)? {
                    // An assistant's earlier refusal is what it said.
                    "text" | "refusal" => push_text(out, part_text(part, i, j)?),
                    _ => {
                        return Err(Error::invalid_param(
                            format!("messages[{i}].content[{j}].type"),
                            "must be text for this role",
                        ));
                    }
                }
            }
        }
        _ => return Err(content_invalid(i)),
    }
    Ok(())
}

fn push_text<'a>(out: &mut Vec<Block<'a>>, text: &'a str) {
    if !text.is_empty() {
        out.push(Block::Text { text });
    }
}

fn content_invalid(i: usize) -> Error {
    Error::invalid_param(
        format!("messages[{i}].content"),
        "must be a string or an array of content parts",
    )
}

fn part_type(part: &Value, i: usize, j: usize) -> Result<&str, Error> {
    part.get("type").and_then(Value::as_str).ok_or_else(|| {
        Error::invalid_param(
            format!("messages[{i}].content[{j}].type"),
            "must be a string",
        )
    })
}

fn part_text(part: &Value, i: usize, j: usize) -> Result<&str, Error> {
    let kind = part_type(part, i, j)?;
    part.get(kind).and_then(Value::as_str).ok_or_else(|| {
        Error::invalid_param(
            format!("messages[{i}].content[{j}].{kind}"),
            "must be a string",
        )
    })
}

/// A user message's content: text, images and files.
fn user_blocks(content: &Value, i: usize) -> Result<Vec<Block<'_>>, Error> {
    let parts = match content {
        Value::Array(parts) => parts,
        _ => {
            let mut out = Vec::new();
            text_parts(content, i, &mut out)?;
            return Ok(out);
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part_type(part, i, j)? {
            "text" => push_text(&mut out, part_text(part, i, j)?),
            "image_url" => out.push(image(part, i, j)?),
            "file" => out.push(file(part, i, j)?),
            "input_audio" => {
                return Err(unsupported(format!(
                    "messages[{i}].content[{j}].input_audio"
                )));
            }
            _ => {
                return Err(Error::invalid_param(
                    format!("messages[{i}].content[{j}].type"),
                    "must be one of text, image_url, file",
                ));
            }
        }
    }
    Ok(out)
}

/// An `image_url` part: a data URL as base64, an http(s) URL by reference (never fetched).
fn image(part: &Value, i: usize, j: usize) -> Result<Block<'_>, Error> {
    let image = part.get("image_url");
    let url = image
        .and_then(|image| image.get("url"))
        .or(image)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::invalid_param(
                format!("messages[{i}].content[{j}].image_url.url"),
                "must be a string",
            )
        })?;
    let source = if let Some((media_type, data)) = data_url(url) {
        // A common misspelling Anthropic would refuse.
        let media_type = if media_type.eq_ignore_ascii_case("image/jpg") {
            "image/jpeg"
        } else {
            media_type
        };
        Source::Base64 { media_type, data }
    } else if is_http_url(url) {
        Source::Url { url }
    } else {
        return Err(Error::invalid_param(
            format!("messages[{i}].content[{j}].image_url.url"),
            "must be a base64 data URL or an http(s) URL",
        ));
    };
    Ok(Block::Image { source })
}

/// A `file` part with `file_data`: a PDF (data URL, or bare base64 taken as PDF) is a
/// document, an image data URL an image. `file_id` names a file stored at OpenAI.
fn file(part: &Value, i: usize, j: usize) -> Result<Block<'_>, Error> {
    let file = part.get("file").unwrap_or(&Value::Null);
    if file.get("file_id").is_some_and(|id| !id.is_null()) {
        return Err(unsupported(format!(
            "messages[{i}].content[{j}].file.file_id"
        )));
    }
    let param = || format!("messages[{i}].content[{j}].file.file_data");
    let data = file
        .get("file_data")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_param(param(), "must be a string"))?;
    let (media_type, data) = if data.starts_with("data:") {
        data_url(data).ok_or_else(|| Error::invalid_param(param(), "must be a base64 data URL"))?
    } else {
        ("application/pdf", data)
    };
    let source = Source::Base64 { media_type, data };
    if media_type.starts_with("image/") {
        Ok(Block::Image { source })
    } else if media_type == "application/pdf" {
        let title = file.get("filename").and_then(Value::as_str);
        Ok(Block::Document { source, title })
    } else {
        Err(Error::invalid_param(
            param(),
            "must be a PDF (application/pdf) or an image",
        ))
    }
}

/// An assistant message: its text, then its tool calls as `tool_use` blocks.
fn assistant_blocks<'a>(
    message: &'a Value,
    content: &'a Value,
    i: usize,
) -> Result<Vec<Block<'a>>, Error> {
    let mut out = Vec::new();
    text_parts(content, i, &mut out)?;
    if message.get("function_call").is_some_and(|f| !f.is_null()) {
        return Err(unsupported(format!("messages[{i}].function_call")));
    }
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(Error::invalid_param(
                format!("messages[{i}].tool_calls"),
                "must be an array",
            ));
        }
    };
    for (j, call) in calls.iter().enumerate() {
        out.push(tool_use(call, i, j)?);
    }
    Ok(out)
}

/// One of an assistant's `tool_calls` as a `tool_use` block.
fn tool_use(call: &Value, i: usize, j: usize) -> Result<Block<'_>, Error> {
    let param = |field: &str| format!("messages[{i}].tool_calls[{j}].{field}");
    match call.get("type").and_then(Value::as_str) {
        None | Some("function") => {}
        Some(_) => return Err(unsupported(param("type"))),
    }
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_param(param("id"), "must be a string"))?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_param(param("function.name"), "must be a string"))?;
    let input = Value::Object(tool_call_arguments(call, i, j)?);
    Ok(Block::ToolUse { id, name, input })
}

/// A `tool` message as a `tool_result` block.
fn tool_result<'a>(message: &'a Value, content: &'a Value, i: usize) -> Result<Block<'a>, Error> {
    let tool_use_id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::invalid_param(format!("messages[{i}].tool_call_id"), "must be a string")
        })?;
    let content = match content {
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => Some(ToolResultContent::Text(text)),
        _ => {
            let mut blocks = Vec::new();
            text_parts(content, i, &mut blocks)?;
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    Ok(Block::ToolResult {
        tool_use_id,
        content,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn options() -> Options {
        Options::default()
    }

    fn translate_with(
        body: Value,
        options: &Options,
    ) -> Result<(Value, UpstreamCall, ReplyContext), Error> {
        let body = serde_json::to_vec(&body).unwrap();
        let (call, context) = chat_request(&body, "claude-haiku-4-5", options)?;
        let sent = serde_json::from_slice(&call.body).unwrap();
        Ok((sent, call, context))
    }

    /// The Messages body sent for `body`.
    fn translate(body: Value) -> Value {
        translate_with(body, &options()).unwrap().0
    }

    fn refuse(body: Value) -> Error {
        translate_with(body, &options()).err().unwrap()
    }

    /// Asserts `error` is a 400 naming `param` with `code`.
    fn assert_refused(error: &Error, param: &str, code: Option<&str>) {
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error.code(), code, "{error}");
        assert!(error.to_string().contains(&format!("`{param}`")), "{error}");
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    #[test]
    fn plain_conversation() {
        let (sent, call, context) = translate_with(
            json!({
                "model": "claude-haiku-4-5",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    user("Hi"),
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                    user("How are you?"),
                ],
            }),
            &options(),
        )
        .unwrap();
        assert_eq!(
            sent,
            json!({
                "model": "claude-haiku-4-5",
                "max_tokens": 4096,
                "system": [
                    {"type": "text", "text": "Be brief."},
                    {"type": "text", "text": "Use French."},
                ],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
                    {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
                ],
                "stream": false,
            })
        );
        assert_eq!(call.path, "/v1/messages");
        assert!(!call.stream);
        assert_eq!(context.model, "claude-haiku-4-5");
        assert!(!context.include_usage);
        assert_eq!(context.json_tool, None);
    }

    #[test]
    fn same_role_messages_merge_and_empty_text_is_left_out() {
        let sent = translate(json!({
            "messages": [
                {"role": "system", "content": ""},
                user("one"),
                user(""),
                {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}]},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "three"},
            ],
        }));
        assert_eq!(sent.get("system"), None);
        assert_eq!(
            sent["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
            ])
        );
    }

    #[test]
    fn sampling_parameters() {
        let (sent, call, context) = translate_with(
            json!({
                "messages": [user("Hi")],
                "max_tokens": 100,
                "max_completion_tokens": 200,
                "temperature": 0.5,
                "top_p": 0.9,
                "stop": ["END", "", "STOP"],
                "user": "user-42",
                "stream": true,
                "stream_options": {"include_usage": true},
                "metadata": {"k": "v"},
                "store": false,
                "service_tier": "auto",
                "n": 1,
                "logprobs": false,
                "presence_penalty": 0,
                "frequency_penalty": 0.0,
                "seed": null,
                "logit_bias": {},
                "modalities": ["text"],
                "top_logprobs": 0,
            }),
            &options(),
        )
        .unwrap();
        assert_eq!(
            sent,
            json!({
                "model": "claude-haiku-4-5",
                "max_tokens": 200,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "temperature": 0.5,
                "top_p": 0.9,
                "stop_sequences": ["END", "STOP"],
                "metadata": {"user_id": "user-42"},
                "stream": true,
            })
        );
        assert!(call.stream);
        assert!(context.include_usage);
    }

    #[test]
    fn max_tokens_and_stop_string() {
        let sent = translate(json!({"messages": [user("Hi")], "max_tokens": 7, "stop": "\n\n"}));
        assert_eq!(sent["max_tokens"], 7);
        assert_eq!(sent["stop_sequences"], json!(["\n\n"]));
        let options = Options {
            default_max_tokens: 123,
            drop_params: false,
        };
        let (sent, _, _) = translate_with(json!({"messages": [user("Hi")]}), &options).unwrap();
        assert_eq!(sent["max_tokens"], 123);
    }

    #[test]
    fn safety_identifier_is_the_user() {
        let sent = translate(json!({"messages": [user("Hi")], "safety_identifier": "hash-1"}));
        assert_eq!(sent["metadata"], json!({"user_id": "hash-1"}));
        let sent = translate(
            json!({"messages": [user("Hi")], "safety_identifier": "hash-1", "user": "u-2"}),
        );
        assert_eq!(sent["metadata"], json!({"user_id": "u-2"}));
        let sent = translate(json!({"messages": [user("Hi")], "user": ""}));
        assert_eq!(sent.get("metadata"), None);
    }

    #[test]
    fn include_usage_needs_a_stream() {
        let body = json!({"messages": [user("Hi")], "stream_options": {"include_usage": true}});
        let (_, _, context) = translate_with(body, &options()).unwrap();
        assert!(!context.include_usage);
    }

    #[test]
    fn unsupported_parameters_are_refused() {
        let cases = [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("logit_bias", json!({"50256": -100})),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(-1)),
            ("seed", json!(7)),
            ("audio", json!({"voice": "alloy", "format": "wav"})),
            ("modalities", json!(["text", "audio"])),
            ("prediction", json!({"type": "content", "content": "x"})),
            ("reasoning_effort", json!("low")),
            ("web_search_options", json!({})),
            ("functions", json!([{"name": "f"}])),
            ("some_future_param", json!("x")),
        ];
        for (key, value) in cases {
            let mut body = json!({"messages": [user("Hi")]});
            body[key] = value;
            let error = refuse(body.clone());
            assert_refused(&error, key, Some("unsupported_parameter"));
            assert!(error.to_string().contains("Anthropic"), "{error}");

            let drop = Options {
                drop_params: true,
                ..Options::default()
            };
            let (sent, _, _) = translate_with(body, &drop).unwrap();
            assert_eq!(sent.get(key), None, "{key}");
        }
    }

    #[test]
    fn null_parameters_are_absent() {
        let sent = translate(json!({
            "messages": [user("Hi")],
            "n": null, "seed": null, "audio": null, "temperature": null, "tools": null,
            "tool_choice": null, "response_format": null, "stop": null, "user": null,
        }));
        assert_eq!(
            sent,
            json!({
                "model": "claude-haiku-4-5",
                "max_tokens": 4096,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "stream": false,
            })
        );
    }

    #[test]
    fn malformed_parameters_are_invalid() {
        let cases = [
            ("temperature", json!("hot")),
            ("max_tokens", json!(0)),
            ("max_completion_tokens", json!(-5)),
            ("stream", json!("yes")),
            ("stop", json!([1])),
            ("user", json!(5)),
            ("messages", json!("Hi")),
            ("tools", json!({})),
            ("tool_choice", json!("sometimes")),
            ("response_format.type", json!({"type": "xml"})),
        ];
        for (param, value) in cases {
            let key = param.split('.').next().unwrap();
            let mut body = json!({"messages": [user("Hi")], "tools": [{"type": "function", "function": {"name": "f"}}]});
            body[key] = value;
            assert_refused(&refuse(body), param, None);
        }
    }

    #[test]
    fn body_must_be_a_chat_request() {
        let options = options();
        let error = chat_request(b"{not json", "m", &options).err().unwrap();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert!(chat_request(b"[1]", "m", &options).is_err());
        let error = refuse(json!({"model": "m"}));
        assert!(error.to_string().contains("messages"), "{error}");
        let error = refuse(json!({"messages": [{"role": "system", "content": "only"}]}));
        assert_refused(&error, "messages", None);
        assert_refused(
            &refuse(json!({"messages": [{"content": "x"}]})),
            "messages[0].role",
            None,
        );
        assert_refused(
            &refuse(json!({"messages": [{"role": "robot", "content": "x"}]})),
            "messages[0].role",
            None,
        );
        assert_refused(
            &refuse(json!({"messages": [{"role": "function", "name": "f", "content": "x"}]})),
            "messages[0].role",
            Some("unsupported_parameter"),
        );
        assert_refused(
            &refuse(json!({"messages": [{"role": "user", "content": 5}]})),
            "messages[0].content",
            None,
        );
        assert_refused(
            &refuse(
                json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
            ),
            "messages[0].content[0].type",
            None,
        );
    }

    #[test]
    fn tool_calls_and_results() {
        let sent = translate(json!({
            "messages": [
                user("Weather in Paris and Rome?"),
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
                user("Thanks. And Oslo?"),
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "toolu_3", "type": "function", "function": {"name": "now", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_3", "content": ""},
            ],
        }));
        assert_eq!(
            sent["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
                    {"type": "text", "text": "Thanks. And Oslo?"},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_3", "name": "now", "input": {}},
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]},
            ])
        );
    }

    #[test]
    fn tool_results_go_before_user_text_in_their_turn() {
        let sent = translate(json!({
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                user("by the way"),
                {"role": "tool", "tool_call_id": "a", "content": "done"},
            ],
        }));
        assert_eq!(
            sent["messages"][1]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "a", "content": "done"},
                {"type": "text", "text": "by the way"},
            ])
        );
    }

    #[test]
    fn malformed_tool_calls_are_invalid() {
        for arguments in ["[1, 2]", "\"x\"", "{\"a\":", "null"] {
            let error = refuse(json!({"messages": [
                user("Hi"),
                {"role": "assistant", "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "f", "arguments": arguments}},
                ]},
            ]}));
            assert_refused(&error, "messages[1].tool_calls[1].function.arguments", None);
        }
        let error = refuse(
            json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
        );
        assert_refused(&error, "messages[0].tool_calls[0].id", None);
        let error = refuse(json!({"messages": [{"role": "tool", "content": "x"}]}));
        assert_refused(&error, "messages[0].tool_call_id", None);
        let error = refuse(
            json!({"messages": [{"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}}]}),
        );
        assert_refused(
            &error,
            "messages[0].function_call",
            Some("unsupported_parameter"),
        );
    }

    #[test]
    fn images_and_pdfs() {
        let sent = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
            {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
            {"type": "file", "file": {"file_data": "JVBERi0y"}},
            {"type": "file", "file": {"file_data": "data:image/webp;base64,UklGRg=="}},
        ]}]}));
        assert_eq!(
            sent["messages"][0]["content"],
            json!([
                {"type": "text", "text": "Compare"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}, "title": "report.pdf"},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0y"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}},
            ])
        );
    }

    #[test]
    fn unusable_parts_are_refused() {
        let part = |part: Value| json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]});
        let cases = [
            (
                json!({"type": "file", "file": {"file_id": "file-abc"}}),
                "messages[0].content[1].file.file_id",
                Some("unsupported_parameter"),
            ),
            (
                json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
                "messages[0].content[1].input_audio",
                Some("unsupported_parameter"),
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}}),
                "messages[0].content[1].image_url.url",
                None,
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}),
                "messages[0].content[1].image_url.url",
                None,
            ),
            (
                json!({"type": "file", "file": {"file_data": "data:text/csv;base64,YSxi"}}),
                "messages[0].content[1].file.file_data",
                None,
            ),
            (
                json!({"type": "video"}),
                "messages[0].content[1].type",
                None,
            ),
        ];
        for (p, param, code) in cases {
            assert_refused(&refuse(part(p)), param, code);
        }
    }

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {
            "name": "weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": true,
        }})
    }

    #[test]
    fn tools_and_tool_choice() {
        let sent = translate(json!({
            "messages": [user("Hi")],
            "tools": [weather_tool(), {"type": "function", "function": {"name": "now"}}],
        }));
        assert_eq!(
            sent["tools"],
            json!([
                {"name": "weather", "description": "Current weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert_eq!(sent.get("tool_choice"), None);

        let choice = |choice: Value, parallel: Value| {
            translate(json!({
                "messages": [user("Hi")],
                "tools": [weather_tool()],
                "tool_choice": choice,
                "parallel_tool_calls": parallel,
            }))
            .get("tool_choice")
            .cloned()
        };
        assert_eq!(
            choice(json!("auto"), Value::Null),
            Some(json!({"type": "auto"}))
        );
        assert_eq!(
            choice(json!("none"), Value::Null),
            Some(json!({"type": "none"}))
        );
        assert_eq!(
            choice(json!("required"), Value::Null),
            Some(json!({"type": "any"}))
        );
        assert_eq!(
            choice(
                json!({"type": "function", "function": {"name": "weather"}}),
                Value::Null
            ),
            Some(json!({"type": "tool", "name": "weather"}))
        );
        assert_eq!(
            choice(Value::Null, json!(false)),
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        );
        assert_eq!(
            choice(json!("required"), json!(false)),
            Some(json!({"type": "any", "disable_parallel_tool_use": true}))
        );
        assert_eq!(
            choice(json!("none"), json!(false)),
            Some(json!({"type": "none"}))
        );
        assert_eq!(
            choice(json!("auto"), json!(true)),
            Some(json!({"type": "auto"}))
        );
    }

    #[test]
    fn tool_choice_without_tools_is_not_sent() {
        let sent = translate(json!({
            "messages": [user("Hi")],
            "tool_choice": "required",
            "parallel_tool_calls": false,
        }));
        assert_eq!(sent.get("tool_choice"), None);
        assert_eq!(sent.get("tools"), None);
    }

    #[test]
    fn unusable_tools_are_refused() {
        let error = refuse(
            json!({"messages": [user("Hi")], "tools": [weather_tool(), {"type": "custom", "custom": {"name": "x"}}]}),
        );
        assert_refused(&error, "tools[1].type", Some("unsupported_parameter"));
        let error = refuse(
            json!({"messages": [user("Hi")], "tools": [{"type": "function", "function": {"description": "x"}}]}),
        );
        assert_refused(&error, "tools[0].function.name", None);
        let error = refuse(
            json!({"messages": [user("Hi")], "tools": [weather_tool()], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}),
        );
        assert_refused(&error, "tool_choice.type", Some("unsupported_parameter"));
    }

    #[test]
    fn json_schema_is_a_forced_tool() {
        let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]});
        let (sent, _, context) = translate_with(
            json!({
                "messages": [user("Hi")],
                "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": true}},
            }),
            &options(),
        )
        .unwrap();
        assert_eq!(
            sent["tools"],
            json!([{"name": "reply", "description": JSON_TOOL_DESCRIPTION, "input_schema": schema}])
        );
        assert_eq!(
            sent["tool_choice"],
            json!({"type": "tool", "name": "reply"})
        );
        assert_eq!(context.json_tool.as_deref(), Some("reply"));
    }

    #[test]
    fn json_object_and_text_formats() {
        let (sent, _, context) = translate_with(
            json!({"messages": [user("Hi")], "response_format": {"type": "json_object"}}),
            &options(),
        )
        .unwrap();
        assert_eq!(
            sent["tools"],
            json!([{"name": "json_output", "description": JSON_TOOL_DESCRIPTION, "input_schema": {"type": "object"}}])
        );
        assert_eq!(
            sent["tool_choice"],
            json!({"type": "tool", "name": "json_output"})
        );
        assert_eq!(context.json_tool.as_deref(), Some("json_output"));

        let (sent, _, context) = translate_with(
            json!({"messages": [user("Hi")], "response_format": {"type": "text"}}),
            &options(),
        )
        .unwrap();
        assert_eq!(sent.get("tools"), None);
        assert_eq!(context.json_tool, None);
    }

    #[test]
    fn json_schema_beside_tools_wins_the_choice() {
        let (sent, _, context) = translate_with(
            json!({
                "messages": [user("Hi")],
                "tools": [weather_tool()],
                "tool_choice": "required",
                "parallel_tool_calls": false,
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}, "description": "The reply"}},
            }),
            &options(),
        )
        .unwrap();
        let names: Vec<_> = sent["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].clone())
            .collect();
        assert_eq!(names, [json!("weather"), json!("json_output")]);
        assert_eq!(sent["tools"][1]["description"], "The reply");
        assert_eq!(
            sent["tool_choice"],
            json!({"type": "tool", "name": "json_output", "disable_parallel_tool_use": true})
        );
        assert_eq!(context.json_tool.as_deref(), Some("json_output"));

        let error = refuse(json!({
            "messages": [user("Hi")],
            "tools": [weather_tool()],
            "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": {"type": "object"}}},
        }));
        assert_refused(&error, "response_format.json_schema.name", None);
    }
}

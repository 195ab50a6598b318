//! OpenAI chat completion request -> Gemini `GenerateContentRequest`.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::super::openai::{boolean, data_url, is_http_url, number, tool_call_arguments};
use super::super::{Options, ReplyContext, UpstreamCall};
use super::call_id;
use crate::error::Error;

/// The placeholder signature Google documents for function calls that no Gemini model made
/// (history from another model, or made up by the client).
const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

/// Translates a client's chat completion request for `model`.
pub(crate) fn chat_request(
    body: &[u8],
    model: &str,
    options: &Options,
) -> Result<(UpstreamCall, ReplyContext), Error> {
    let model = super::model_id(model)?;
    let request = parse_object(body)?;
    let mut builder = Builder::default();
    for (key, value) in &request {
        if !value.is_null() {
            builder.param(key, value, options)?;
        }
    }
    let messages = request
        .get("messages")
        .filter(|m| !m.is_null())
        .ok_or_else(|| Error::missing_param("messages"))?;
    let messages = messages
        .as_array()
        .ok_or_else(|| Error::invalid_param("messages", "must be an array"))?;
    let mut conversation = Conversation::default();
    for (i, message) in messages.iter().enumerate() {
        conversation.message(i, message, options)?;
    }
    if conversation.contents.is_empty() {
        return Err(Error::invalid_param(
            "messages",
            "must hold at least one user, assistant or tool message",
        ));
    }
    if validates_signatures(model) {
        conversation.sign_foreign_calls();
    }
    let stream = builder.stream;
    let mut context = ReplyContext::new(model);
    context.include_usage = builder.include_usage;
    let body = builder.into_body(conversation);
    let path = if stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    };
    let body = serde_json::to_vec(&body).map_err(|e| Error::internal().with_source(e))?;
    Ok((UpstreamCall { path, body, stream }, context))
}

/// The body as a JSON object.
pub(super) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid_body(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(Error::invalid_json().with_source(e)),
    }
}

/// `param` cannot be honoured: an error, or nothing when parameters are dropped.
pub(super) fn unsupported(param: impl Into<String>, options: &Options) -> Result<(), Error> {
    if options.drop_params {
        Ok(())
    } else {
        Err(Error::unsupported_param(param, super::PROVIDER))
    }
}

/// Gemini 3 and later (and the `-latest` aliases, which point at them) reject function calls
/// of the current turn that have no signature; earlier models do not check and are not sent
/// the placeholder.
fn validates_signatures(model: &str) -> bool {
    let Some(rest) = model.strip_prefix("gemini-") else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest
        .get(..digits)
        .and_then(|major| major.parse::<u32>().ok())
    {
        Some(major) => major >= 3,
        None => rest.ends_with("-latest"),
    }
}

/// The Gemini request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    generation_config: Map<String, Value>,
}

/// One Gemini `Content`: a role and its parts.
#[derive(Serialize)]
struct Content {
    role: &'static str,
    parts: Vec<Value>,
}

/// Everything but the messages, gathered key by key.
#[derive(Default)]
struct Builder {
    stream: bool,
    include_usage: bool,
    generation: Map<String, Value>,
    max_tokens: Option<Value>,
    max_completion_tokens: Option<Value>,
    tools: Option<Value>,
    tool_config: Option<Value>,
}

impl Builder {
    fn param(&mut self, key: &str, value: &Value, options: &Options) -> Result<(), Error> {
        match key {
            // Handled by the caller, or meaningless to Gemini and safe to leave out.
            "model"
            | "messages"
            | "user"
            | "metadata"
            | "store"
            | "service_tier"
            | "parallel_tool_calls"
            | "safety_identifier"
            | "prompt_cache_key" => {}
            "stream" => self.stream = boolean(key, value)?,
            "stream_options" => {
                self.include_usage = match value.get("include_usage") {
                    None | Some(Value::Null) => false,
                    Some(flag) => boolean("stream_options.include_usage", flag)?,
                }
            }
            "temperature" => self.set("temperature", number(key, value)?.clone()),
            "top_p" => self.set("topP", number(key, value)?.clone()),
            "presence_penalty" => self.set("presencePenalty", number(key, value)?.clone()),
            "frequency_penalty" => self.set("frequencyPenalty", number(key, value)?.clone()),
            "max_tokens" => self.max_tokens = Some(count(key, value)?),
            "max_completion_tokens" => self.max_completion_tokens = Some(count(key, value)?),
            "stop" => self.stop(value)?,
            "n" => {
                let n = count(key, value)?;
                if n != json!(1) {
                    self.set("candidateCount", n);
                }
            }
            "seed" => {
                let seed = value
                    .as_i64()
                    .and_then(|s| i32::try_from(s).ok())
                    .ok_or_else(|| Error::invalid_param(key, "must be a 32-bit integer"))?;
                self.set("seed", json!(seed));
            }
            "response_format" => self.response_format(value)?,
            "tools" => self.tools = tools(value, options)?,
            "tool_choice" => self.tool_config = tool_choice(value, options)?,
            "logprobs" if value == &Value::Bool(false) => {}
            "top_logprobs" if value.as_u64() == Some(0) => {}
            "logit_bias" if value.as_object().is_some_and(Map::is_empty) => {}
            "modalities" if value == &json!(["text"]) => {}
            _ => unsupported(key, options)?,
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.generation.insert(key.to_owned(), value.into());
    }

    fn stop(&mut self, value: &Value) -> Result<(), Error> {
        let sequences = match value {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
            _ => {
                return Err(Error::invalid_param(
                    "stop",
                    "must be a string or an array of strings",
                ));
            }
        };
        if !sequences.is_empty() {
            self.set("stopSequences", Value::Array(sequences));
        }
        Ok(())
    }

    fn response_format(&mut self, value: &Value) -> Result<(), Error> {
        match value.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => self.set("responseMimeType", json!("application/json")),
            Some("json_schema") => {
                self.set("responseMimeType", json!("application/json"));
                let schema = value.get("json_schema").and_then(|s| s.get("schema"));
                if let Some(schema) = schema.filter(|s| !s.is_null()) {
                    self.set("responseJsonSchema", schema.clone());
                }
            }
            _ => {
                return Err(Error::invalid_param(
                    "response_format.type",
                    "must be 'text', 'json_object' or 'json_schema'",
                ));
            }
        }
        Ok(())
    }

    fn into_body(mut self, conversation: Conversation) -> GenerateContentRequest {
        if let Some(max) = self.max_completion_tokens.take().or(self.max_tokens.take()) {
            self.set("maxOutputTokens", max);
        }
        let system_instruction =
            (!conversation.system.is_empty()).then(|| json!({ "parts": conversation.system }));
        GenerateContentRequest {
            contents: conversation.contents,
            system_instruction,
            tools: self.tools,
            tool_config: self.tool_config,
            generation_config: self.generation,
        }
    }
}

/// A positive integer (a token or candidate count).
fn count(param: &str, value: &Value) -> Result<Value, Error> {
    match value.as_u64() {
        Some(n) if n > 0 && i32::try_from(n).is_ok() => Ok(json!(n)),
        _ => Err(Error::invalid_param(param, "must be a positive integer")),
    }
}

/// OpenAI `tools` -> one Gemini tool with the function declarations; `None` when empty.
fn tools(value: &Value, options: &Options) -> Result<Option<Value>, Error> {
    let tools = value
        .as_array()
        .ok_or_else(|| Error::invalid_param("tools", "must be an array"))?;
    let mut declarations = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            unsupported(format!("tools[{i}].type"), options)?;
            continue;
        }
        let function = tool.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::invalid_param(format!("tools[{i}].function.name"), "is required")
            })?;
        let mut declaration = Map::new();
        declaration.insert("name".into(), json!(name));
        if let Some(description) = function
            .and_then(|f| f.get("description"))
            .filter(|d| !d.is_null())
        {
            declaration.insert("description".into(), description.clone());
        }
        if let Some(parameters) = function
            .and_then(|f| f.get("parameters"))
            .filter(|p| !p.is_null())
        {
            declaration.insert("parametersJsonSchema".into(), parameters.clone());
        }
        declarations.push(Value::Object(declaration));
    }
    Ok((!declarations.is_empty()).then(|| json!([{ "functionDeclarations": declarations }])))
}

/// OpenAI `tool_choice` -> Gemini `toolConfig`.
fn tool_choice(value: &Value, options: &Options) -> Result<Option<Value>, Error> {
    let config = |mode: &str| json!({ "functionCallingConfig": { "mode": mode } });
    Ok(match value {
        Value::String(choice) => match choice.as_str() {
            "auto" => Some(config("AUTO")),
            "none" => Some(config("NONE")),
            "required" => Some(config("ANY")),
            _ => {
                return Err(Error::invalid_param(
                    "tool_choice",
                    "must be 'auto', 'none', 'required' or a named function",
                ));
            }
        },
        Value::Object(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid_param("tool_choice.function.name", "is required"))?;
            Some(json!({
                "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": [name] }
            }))
        }
        _ => {
            unsupported("tool_choice", options)?;
            None
        }
    })
}

/// The messages, as Gemini's system instruction and contents.
#[derive(Default)]
struct Conversation {
    system: Vec<Value>,
    contents: Vec<Content>,
    /// Tool calls seen so far: OpenAI id -> (function name, Gemini's call id).
    calls: HashMap<String, (String, Option<String>)>,
}

impl Conversation {
    fn message(&mut self, i: usize, message: &Value, options: &Options) -> Result<(), Error> {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_param(format!("messages[{i}].role"), "is required"))?;
        let content = message.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" => {
                let parts = text_parts(i, content)?;
                self.system.extend(parts);
            }
            "user" => {
                let parts = user_parts(i, content, options)?;
                self.push("user", parts);
            }
            "assistant" => {
                let mut parts = text_parts(i, content)?;
                if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
                    self.tool_calls(i, calls, &mut parts)?;
                }
                self.push("model", parts);
            }
            "tool" => {
                let part = self.tool_result(i, message, content)?;
                self.push("user", vec![part]);
            }
            "function" => {
                return Err(Error::unsupported_param(
                    format!("messages[{i}].role"),
                    super::PROVIDER,
                ));
            }
            _ => {
                return Err(Error::invalid_param(
                    format!("messages[{i}].role"),
                    "must be 'system', 'developer', 'user', 'assistant' or 'tool'",
                ));
            }
        }
        Ok(())
    }

    /// Adds `parts` as a `role` turn, merged into the last turn when it has the same role.
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.contents.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => self.contents.push(Content { role, parts }),
        }
    }

    fn tool_calls(&mut self, i: usize, calls: &Value, parts: &mut Vec<Value>) -> Result<(), Error> {
        let calls = calls.as_array().ok_or_else(|| {
            Error::invalid_param(format!("messages[{i}].tool_calls"), "must be an array")
        })?;
        for (j, call) in calls.iter().enumerate() {
            let path = format!("messages[{i}].tool_calls[{j}]");
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid_param(format!("{path}.id"), "is required"))?;
            let function = call.get("function");
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::invalid_param(format!("{path}.function.name"), "is required")
                })?;
            let args = Value::Object(tool_call_arguments(call, i, j)?);
            let carried = call_id::decode(id);
            let mut function_call = json!({ "name": name, "args": args });
            if let Some(gemini_id) = &carried.id {
                function_call["id"] = json!(gemini_id);
            }
            let mut part = json!({ "functionCall": function_call });
            if let Some(signature) = carried.signature {
                part["thoughtSignature"] = json!(signature);
            }
            parts.push(part);
            self.calls
                .insert(id.to_owned(), (name.to_owned(), carried.id));
        }
        Ok(())
    }

    fn tool_result(
        &self,
        i: usize,
        message: &Value,
        content: Option<&Value>,
    ) -> Result<Value, Error> {
        let param = || format!("messages[{i}].tool_call_id");
        let id = message
            .get("tool_call_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_param(param(), "is required"))?;
        let (name, gemini_id) = self.calls.get(id).ok_or_else(|| {
            Error::invalid_param(
                param(),
                "does not match a tool call of an earlier assistant message",
            )
        })?;
        let text = text_parts(i, content)?
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<String>();
        let response = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => Value::Object(object),
            _ => json!({ "content": text }),
        };
        let mut function_response = json!({ "name": name, "response": response });
        if let Some(gemini_id) = gemini_id {
            function_response["id"] = json!(gemini_id);
        }
        Ok(json!({ "functionResponse": function_response }))
    }

    /// Gives the first function call of each model turn in which no call has a signature
    /// Google's placeholder (Gemini 3 refuses unsigned calls in the current turn).
    fn sign_foreign_calls(&mut self) {
        for content in self.contents.iter_mut().filter(|c| c.role == "model") {
            let is_call = |part: &Value| part.get("functionCall").is_some();
            if content
                .parts
                .iter()
                .any(|p| is_call(p) && p.get("thoughtSignature").is_some())
            {
                continue;
            }
            if let Some(part) = content.parts.iter_mut().find(|p| is_call(p)) {
                part["thoughtSignature"] = json!(PLACEHOLDER_SIGNATURE);
            }
        }
    }
}

/// Text content (system, assistant, tool): a string or text parts (and assistant refusals).
fn text_parts(i: usize, content: Option<&Value>) -> Result<Vec<Value>, Error> {
    let text_part = |text: &str| (!text.is_empty()).then(|| json!({ "text": text }));
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_part(text).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("text") => part.get("text").and_then(Value::as_str),
                    Some("refusal") => part.get("refusal").and_then(Value::as_str),
                    _ => {
                        return Err(Error::invalid_param(
                            format!("messages[{i}].content[{j}].type"),
                            "only text parts are allowed in this message",
                        ));
                    }
                };
                let text = text.ok_or_else(|| {
                    Error::invalid_param(
                        format!("messages[{i}].content[{j}].text"),
                        "must be a string",
                    )
                })?;
                out.extend(text_part(text));
            }
            Ok(out)
        }
        Some(_) => Err(Error::invalid_param(
            format!("messages[{i}].content"),
            "must be a string or an array of content parts",
        )),
    }
}

/// User content: text, images, audio and files.
fn user_parts(i: usize, content: Option<&Value>, options: &Options) -> Result<Vec<Value>, Error> {
    let Some(Value::Array(parts)) = content else {
        return text_parts(i, content);
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let path = format!("messages[{i}].content[{j}]");
        if let Some(part) = user_part(&path, part, options)? {
            out.push(part);
        }
    }
    Ok(out)
}

fn user_part(path: &str, part: &Value, options: &Options) -> Result<Option<Value>, Error> {
    let field = |name: &str| part.get(name).filter(|v| !v.is_null());
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = string_at(path, field("text"), "text")?;
            Ok((!text.is_empty()).then(|| json!({ "text": text })))
        }
        Some("image_url") => {
            let image = field("image_url");
            // The URL object, or (leniently) the bare URL string.
            let url = match image {
                Some(Value::String(url)) => url.as_str(),
                _ => string_at(path, image.and_then(|i| i.get("url")), "image_url.url")?,
            };
            image_part(path, url).map(Some)
        }
        Some("input_audio") => {
            let audio = field("input_audio");
            let data = string_at(path, audio.and_then(|a| a.get("data")), "input_audio.data")?;
            let mime = match string_at(
                path,
                audio.and_then(|a| a.get("format")),
                "input_audio.format",
            )? {
                "wav" => "audio/wav",
                "mp3" => "audio/mp3",
                _ => {
                    return Err(Error::invalid_param(
                        format!("{path}.input_audio.format"),
                        "must be 'wav' or 'mp3'",
                    ));
                }
            };
            Ok(Some(inline_data(mime, data)))
        }
        Some("file") => {
            let file = field("file");
            if let Some(data) = file
                .and_then(|f| f.get("file_data"))
                .filter(|d| !d.is_null())
            {
                let data = string_at(path, Some(data), "file.file_data")?;
                return match data_url(data) {
                    Some((mime, data)) => Ok(Some(inline_data(mime, data))),
                    None if data.starts_with("data:") => Err(Error::invalid_param(
                        format!("{path}.file.file_data"),
                        "must be a base64 data URL or base64 data",
                    )),
                    None => Ok(Some(inline_data("application/pdf", data))),
                };
            }
            if file
                .and_then(|f| f.get("file_id"))
                .is_some_and(|id| !id.is_null())
            {
                unsupported(format!("{path}.file.file_id"), options)?;
                return Ok(None);
            }
            Err(Error::invalid_param(
                format!("{path}.file.file_data"),
                "is required",
            ))
        }
        _ => Err(Error::invalid_param(
            format!("{path}.type"),
            "must be 'text', 'image_url', 'input_audio' or 'file'",
        )),
    }
}

/// The string at `value`, or an error naming `{path}.{name}`.
fn string_at<'a>(path: &str, value: Option<&'a Value>, name: &str) -> Result<&'a str, Error> {
    value
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_param(format!("{path}.{name}"), "must be a string"))
}

/// An image by data URL (inline) or by http(s) URL (by reference, never downloaded here).
fn image_part(path: &str, url: &str) -> Result<Value, Error> {
    if let Some((mime, data)) = data_url(url) {
        return Ok(inline_data(mime, data));
    }
    if is_http_url(url) {
        return Ok(json!({ "fileData": { "mimeType": mime_from_url(url), "fileUri": url } }));
    }
    Err(Error::invalid_param(
        format!("{path}.image_url.url"),
        "must be a base64 data URL or an http(s) URL",
    ))
}

fn inline_data(mime: &str, data: &str) -> Value {
    json!({ "inlineData": { "mimeType": mime, "data": data } })
}

/// The MIME type a URL's extension suggests (Gemini needs one for `fileData`).
fn mime_from_url(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.').map_or("", |(_, ext)| ext);
    match extension.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn translate(request: Value) -> (UpstreamCall, ReplyContext, Value) {
        translate_with(request, &Options::default()).unwrap()
    }

    fn translate_with(
        request: Value,
        options: &Options,
    ) -> Result<(UpstreamCall, ReplyContext, Value), Error> {
        let body = serde_json::to_vec(&request).unwrap();
        let model = request["model"].as_str().unwrap_or("gemini-2.5-flash");
        let (call, context) = chat_request(&body, model, options)?;
        let sent = serde_json::from_slice(&call.body).unwrap();
        Ok((call, context, sent))
    }

    fn refusal(request: Value) -> Value {
        let error = translate_with(request, &Options::default()).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        super::super::rendered(error)
    }

    fn user(text: &str) -> Value {
        json!({ "role": "user", "content": text })
    }

    #[test]
    fn a_plain_chat() {
        let (call, context, sent) = translate(json!({
            "model": "models/gemini-2.5-flash",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "developer", "content": [{ "type": "text", "text": "Use French." }] },
                user("Hello"),
                { "role": "assistant", "content": "Bonjour" },
                user("How are you?"),
                user("Answer!"),
            ],
            "temperature": 0.5,
            "top_p": 0.9,
            "max_tokens": 100,
            "stop": "END",
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "seed": 7,
            "n": 1,
            "logprobs": false,
            "user": "u-1",
            "metadata": { "a": "b" },
            "store": false,
            "service_tier": "auto",
            "parallel_tool_calls": true,
            "logit_bias": null,
        }));
        assert_eq!(call.path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert!(!call.stream);
        assert_eq!(context.model, "gemini-2.5-flash");
        assert!(!context.include_usage);
        assert_eq!(
            sent,
            json!({
                "systemInstruction": { "parts": [{ "text": "Be brief." }, { "text": "Use French." }] },
                "contents": [
                    { "role": "user", "parts": [{ "text": "Hello" }] },
                    { "role": "model", "parts": [{ "text": "Bonjour" }] },
                    { "role": "user", "parts": [{ "text": "How are you?" }, { "text": "Answer!" }] },
                ],
                "generationConfig": {
                    "temperature": 0.5,
                    "topP": 0.9,
                    "maxOutputTokens": 100,
                    "stopSequences": ["END"],
                    "presencePenalty": 0.1,
                    "frequencyPenalty": 0.2,
                    "seed": 7,
                },
            })
        );
    }

    #[test]
    fn streams_and_usage() {
        let (call, context, sent) = translate(json!({
            "model": "gemini-2.5-flash",
            "messages": [user("Hi")],
            "stream": true,
            "stream_options": { "include_usage": true },
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "n": 2,
            "stop": ["a", "b"],
        }));
        assert_eq!(
            call.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert!(call.stream);
        assert!(context.include_usage);
        assert_eq!(
            sent["generationConfig"],
            json!({ "maxOutputTokens": 20, "candidateCount": 2, "stopSequences": ["a", "b"] })
        );
        assert!(sent.get("systemInstruction").is_none());
    }

    #[test]
    fn content_parts() {
        let (_, _, sent) = translate(json!({
            "messages": [{ "role": "user", "content": [
                { "type": "text", "text": "Look" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/cat.WEBP?size=2" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/photo" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/paper.pdf" } },
                { "type": "file", "file": { "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf" } },
                { "type": "file", "file": { "file_data": "JVBERi0xLjc=" } },
                { "type": "input_audio", "input_audio": { "data": "UklGRg==", "format": "wav" } },
                { "type": "input_audio", "input_audio": { "data": "SUQz", "format": "mp3" } },
            ]}],
        }));
        assert_eq!(
            sent["contents"][0]["parts"],
            json!([
                { "text": "Look" },
                { "inlineData": { "mimeType": "image/png", "data": "iVBORw0KGgo=" } },
                { "fileData": { "mimeType": "image/webp", "fileUri": "https://example.com/cat.WEBP?size=2" } },
                { "fileData": { "mimeType": "image/jpeg", "fileUri": "https://example.com/photo" } },
                { "fileData": { "mimeType": "application/pdf", "fileUri": "https://example.com/paper.pdf" } },
                { "inlineData": { "mimeType": "application/pdf", "data": "JVBERi0=" } },
                { "inlineData": { "mimeType": "application/pdf", "data": "JVBERi0xLjc=" } },
                { "inlineData": { "mimeType": "audio/wav", "data": "UklGRg==" } },
                { "inlineData": { "mimeType": "audio/mp3", "data": "SUQz" } },
            ])
        );
    }

    #[test]
    fn bad_content_parts() {
        let with_part =
            |part: Value| json!({ "messages": [{ "role": "user", "content": [part] }] });
        let cases = [
            (
                json!({ "type": "image_url", "image_url": { "url": "ftp://x/y.png" } }),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({ "type": "image_url", "image_url": { "url": "data:image/png,notbase64" } }),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({ "type": "input_audio", "input_audio": { "data": "x", "format": "flac" } }),
                "messages[0].content[0].input_audio.format",
            ),
            (
                json!({ "type": "file", "file": { "file_data": "data:application/pdf,raw" } }),
                "messages[0].content[0].file.file_data",
            ),
            (
                json!({ "type": "file", "file": {} }),
                "messages[0].content[0].file.file_data",
            ),
            (
                json!({ "type": "video", "video": {} }),
                "messages[0].content[0].type",
            ),
        ];
        for (part, param) in cases {
            let body = refusal(with_part(part));
            assert_eq!(body["error"]["param"], param, "{body}");
        }
        let body = refusal(with_part(
            json!({ "type": "file", "file": { "file_id": "file-1" } }),
        ));
        assert_eq!(body["error"]["code"], "unsupported_parameter");
        assert_eq!(
            body["error"]["param"],
            "messages[0].content[0].file.file_id"
        );
        let dropping = Options {
            drop_params: true,
            ..Options::default()
        };
        let (_, _, sent) = translate_with(
            json!({ "messages": [{ "role": "user", "content": [
                { "type": "text", "text": "Read" },
                { "type": "file", "file": { "file_id": "file-1" } },
            ]}]}),
            &dropping,
        )
        .unwrap();
        assert_eq!(sent["contents"][0]["parts"], json!([{ "text": "Read" }]));
    }

    #[test]
    fn tools_and_tool_choice() {
        let parameters = json!({
            "type": "object",
            "properties": { "city": { "type": "string" } },
            "required": ["city"],
            "additionalProperties": false,
        });
        let request = |choice: Value| {
            json!({
                "messages": [user("Weather?")],
                "tools": [
                    { "type": "function", "function": { "name": "weather", "description": "Weather now", "parameters": parameters, "strict": true } },
                    { "type": "function", "function": { "name": "time" } },
                ],
                "tool_choice": choice,
            })
        };
        let (_, _, sent) = translate(request(json!("auto")));
        assert_eq!(
            sent["tools"],
            json!([{ "functionDeclarations": [
                { "name": "weather", "description": "Weather now", "parametersJsonSchema": parameters },
                { "name": "time" },
            ]}])
        );
        assert_eq!(
            sent["toolConfig"],
            json!({ "functionCallingConfig": { "mode": "AUTO" } })
        );
        let (_, _, sent) = translate(request(json!("none")));
        assert_eq!(
            sent["toolConfig"],
            json!({ "functionCallingConfig": { "mode": "NONE" } })
        );
        let (_, _, sent) = translate(request(json!("required")));
        assert_eq!(
            sent["toolConfig"],
            json!({ "functionCallingConfig": { "mode": "ANY" } })
        );
        let (_, _, sent) = translate(request(
            json!({ "type": "function", "function": { "name": "time" } }),
        ));
        assert_eq!(
            sent["toolConfig"],
            json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["time"] } })
        );
        assert_eq!(
            refusal(request(json!("sometimes")))["error"]["param"],
            "tool_choice"
        );
        let custom = json!({ "messages": [user("x")], "tools": [{ "type": "custom", "custom": { "name": "x" } }] });
        assert_eq!(refusal(custom)["error"]["param"], "tools[0].type");
    }

    #[test]
    fn response_formats() {
        let schema = json!({ "type": "object", "properties": { "a": { "type": "integer" } } });
        let (_, _, sent) = translate(json!({
            "messages": [user("x")],
            "response_format": { "type": "json_schema", "json_schema": { "name": "thing", "schema": schema, "strict": true } },
        }));
        assert_eq!(
            sent["generationConfig"],
            json!({ "responseMimeType": "application/json", "responseJsonSchema": schema })
        );
        let (_, _, sent) = translate(
            json!({ "messages": [user("x")], "response_format": { "type": "json_object" } }),
        );
        assert_eq!(
            sent["generationConfig"],
            json!({ "responseMimeType": "application/json" })
        );
        let (_, _, sent) =
            translate(json!({ "messages": [user("x")], "response_format": { "type": "text" } }));
        assert!(sent.get("generationConfig").is_none());
        let body =
            refusal(json!({ "messages": [user("x")], "response_format": { "type": "yaml" } }));
        assert_eq!(body["error"]["param"], "response_format.type");
    }

    #[test]
    fn tool_calls_round_trip_with_signatures() {
        let signed = call_id::encode(Some("gem-1"), Some("c2lnbmF0dXJl+/=="));
        let plain = call_id::encode(None, None);
        let (_, _, sent) = translate(json!({
            "messages": [
                user("Weather in Paris and Rome?"),
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": signed, "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                    { "id": plain, "type": "function", "function": { "name": "weather", "arguments": "" } },
                ]},
                { "role": "tool", "tool_call_id": signed, "content": "{\"temp\":20}" },
                { "role": "tool", "tool_call_id": plain, "content": [{ "type": "text", "text": "sunny" }] },
                user("Thanks"),
            ],
        }));
        assert_eq!(
            sent["contents"],
            json!([
                { "role": "user", "parts": [{ "text": "Weather in Paris and Rome?" }] },
                { "role": "model", "parts": [
                    { "functionCall": { "id": "gem-1", "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "c2lnbmF0dXJl+/==" },
                    { "functionCall": { "name": "weather", "args": {} } },
                ]},
                { "role": "user", "parts": [
                    { "functionResponse": { "id": "gem-1", "name": "weather", "response": { "temp": 20 } } },
                    { "functionResponse": { "name": "weather", "response": { "content": "sunny" } } },
                    { "text": "Thanks" },
                ]},
            ])
        );
    }

    #[test]
    fn foreign_tool_calls_get_the_placeholder_on_gemini_3_only() {
        let request = |model: &str| {
            json!({
                "model": model,
                "messages": [
                    user("Time?"),
                    { "role": "assistant", "content": "Let me look.", "tool_calls": [
                        { "id": "toolu_1", "type": "function", "function": { "name": "time", "arguments": "{}" } },
                        { "id": "toolu_2", "type": "function", "function": { "name": "date", "arguments": "{}" } },
                    ]},
                    { "role": "tool", "tool_call_id": "toolu_1", "content": "noon" },
                    { "role": "tool", "tool_call_id": "toolu_2", "content": "monday" },
                ],
            })
        };
        let (_, _, sent) = translate(request("gemini-3-pro-preview"));
        let parts = &sent["contents"][1]["parts"];
        assert_eq!(parts[0], json!({ "text": "Let me look." }));
        assert_eq!(parts[1]["thoughtSignature"], PLACEHOLDER_SIGNATURE);
        assert!(parts[2].get("thoughtSignature").is_none());
        let (_, _, sent) = translate(request("gemini-2.5-flash"));
        assert!(
            sent["contents"][1]["parts"][1]
                .get("thoughtSignature")
                .is_none()
        );
        // Google's bytes fields take it: it is valid unpadded base64url.
        use base64::Engine as _;
        assert!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(PLACEHOLDER_SIGNATURE)
                .is_ok()
        );
        assert!(validates_signatures("gemini-flash-latest"));
        assert!(!validates_signatures("gemini-2.0-flash"));
        assert!(!validates_signatures("gemma-3-27b-it"));
        assert!(!validates_signatures("gemini-exp-1206"));
        assert!(!validates_signatures("gemini-1.5-pro"));
        assert!(validates_signatures("gemini-3-flash-preview"));
    }

    #[test]
    fn bad_tool_messages() {
        let call = |arguments: &str| {
            json!({ "role": "assistant", "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "f", "arguments": arguments } },
            ]})
        };
        let body = refusal(json!({ "messages": [user("x"), call("[1,2]")] }));
        assert_eq!(
            body["error"]["param"],
            "messages[1].tool_calls[0].function.arguments"
        );
        let body = refusal(json!({ "messages": [user("x"), call("{not json")] }));
        assert_eq!(
            body["error"]["param"],
            "messages[1].tool_calls[0].function.arguments"
        );
        let body = refusal(json!({ "messages": [
            user("x"), call("{}"), { "role": "tool", "tool_call_id": "call_2", "content": "r" },
        ]}));
        assert_eq!(body["error"]["param"], "messages[2].tool_call_id");
    }

    #[test]
    fn bad_messages() {
        assert_eq!(
            refusal(json!({ "model": "gemini-2.5-flash" }))["error"]["param"],
            "messages"
        );
        let body = refusal(json!({ "messages": [{ "role": "system", "content": "only" }] }));
        assert_eq!(body["error"]["param"], "messages");
        let body = refusal(json!({ "messages": [{ "role": "wizard", "content": "x" }] }));
        assert_eq!(body["error"]["param"], "messages[0].role");
        let body = refusal(json!({ "messages": [
            { "role": "system", "content": [{ "type": "image_url", "image_url": { "url": "https://x/y.png" } }] },
            user("x"),
        ]}));
        assert_eq!(body["error"]["param"], "messages[0].content[0].type");
        let body = refusal(json!({ "messages": [user("x")], "temperature": "hot" }));
        assert_eq!(body["error"]["param"], "temperature");
        let body = refusal(json!({ "messages": [user("x")], "n": 0 }));
        assert_eq!(body["error"]["param"], "n");
        let body = refusal(json!({ "messages": [user("x")], "seed": 1_i64 << 40 }));
        assert_eq!(body["error"]["param"], "seed");
        let body = refusal(json!({ "model": "gemini/../x", "messages": [user("x")] }));
        assert_eq!(body["error"]["param"], "model");
        let error = chat_request(b"{nope", "gemini-2.5-flash", &Options::default()).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let error = chat_request(b"[1]", "gemini-2.5-flash", &Options::default()).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unsupported_parameters_are_refused_or_dropped() {
        let cases = [
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("logit_bias", json!({ "50256": -100 })),
            ("audio", json!({ "voice": "alloy", "format": "wav" })),
            ("modalities", json!(["text", "audio"])),
            ("prediction", json!({ "type": "content", "content": "x" })),
            ("reasoning_effort", json!("low")),
            ("web_search_options", json!({})),
            ("functions", json!([{ "name": "f" }])),
            ("made_up", json!(1)),
        ];
        let dropping = Options {
            drop_params: true,
            ..Options::default()
        };
        for (key, value) in cases {
            let mut request = json!({ "messages": [user("x")], "temperature": 1 });
            request[key] = value;
            let body = refusal(request.clone());
            assert_eq!(body["error"]["code"], "unsupported_parameter", "{key}");
            assert_eq!(body["error"]["param"], key);
            let (_, _, sent) = translate_with(request, &dropping).unwrap();
            assert_eq!(
                sent["generationConfig"],
                json!({ "temperature": 1 }),
                "{key}"
            );
            assert_eq!(
                sent["contents"],
                json!([{ "role": "user", "parts": [{ "text": "x" }] }])
            );
        }
        // Harmless defaults are not errors.
        translate(json!({
            "messages": [user("x")],
            "logprobs": false, "top_logprobs": 0, "logit_bias": {}, "modalities": ["text"],
            "audio": null, "reasoning_effort": null, "n": 1,
        }));
    }
}

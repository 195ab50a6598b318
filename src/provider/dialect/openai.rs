//! OpenAI's side of every dialect: the Chat Completions objects the translations write
//! (`chat.completion`, `chat.completion.chunk`, `usage`, error bodies, SSE frames) and the
//! readers of the client's request that do not depend on the provider.
//!
//! The objects are typed, borrowing from the provider's answer, and serialize in the field
//! order and with the `null`s OpenAI's API sends (see the `CreateChatCompletionResponse` and
//! `CreateChatCompletionStreamResponse` schemas of OpenAI's OpenAPI description).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Number, Value};

use super::ReplyContext;
use crate::error::Error;

/// `chatcmpl-` and the provider's id for its answer (so the two can be matched in logs), or a
/// fresh suffix when the provider gave none.
pub(crate) fn completion_id(provider_id: Option<&str>) -> String {
    let suffix = match provider_id.filter(|id| !id.is_empty()) {
        Some(id) => Cow::Borrowed(id),
        None => Cow::Owned(random_id()),
    };
    let mut id = String::with_capacity(9 + suffix.len());
    id.push_str("chatcmpl-");
    id.push_str(&suffix);
    id
}

/// A fresh id suffix for ids the provider did not give (`call_...`, `chatcmpl-...`).
pub(crate) fn random_id() -> String {
    let mut id = String::with_capacity(24);
    for _ in 0..24 {
        id.push(fastrand::alphanumeric());
    }
    id
}

/// An OpenAI error body with all four keys.
pub(crate) fn error_body(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    }))
    .unwrap_or_default()
}

/// Appends `data: {json}\n\n`.
pub(crate) fn push_frame<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(b"data: ");
    // Serializing plain structs and `Value`s into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

/// Appends `data: [DONE]\n\n`.
pub(crate) fn push_done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

/// Appends `piece` to the text so far (borrowing while there is one piece); empty pieces add
/// nothing, so the text is `None` or not empty.
pub(crate) fn append<'a>(text: &mut Option<Cow<'a, str>>, piece: &'a str) {
    if piece.is_empty() {
        return;
    }
    match text {
        None => *text = Some(Cow::Borrowed(piece)),
        Some(text) => text.to_mut().push_str(piece),
    }
}

/// The `chat.completion` body for `choices`.
///
/// # Errors
/// `internal` if serializing fails (it cannot for these types).
pub(crate) fn completion(
    id: &str,
    context: &ReplyContext,
    model: &str,
    choices: &[Choice<'_>],
    usage: Usage,
) -> Result<Vec<u8>, Error> {
    let completion = Completion {
        id,
        object: "chat.completion",
        created: context.created,
        model,
        choices,
        usage,
    };
    serde_json::to_vec(&completion).map_err(|e| Error::internal().with_source(e))
}

/// A `chat.completion`.
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [Choice<'a>],
    usage: Usage,
}

/// One choice of a `chat.completion`.
#[derive(Serialize)]
pub(crate) struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

impl<'a> Choice<'a> {
    /// Choice `index` with its message and why it ended.
    pub(crate) fn new(index: u32, message: Message<'a>, finish_reason: &'static str) -> Self {
        Self {
            index,
            message,
            logprobs: (),
            finish_reason,
        }
    }
}

/// A choice's assistant message.
#[derive(Serialize)]
pub(crate) struct Message<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    refusal: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

impl<'a> Message<'a> {
    /// An answer: `content` unless empty; with no content and no tool call, the empty string
    /// (OpenAI's `content` is `null` only beside tool calls or a refusal).
    pub(crate) fn answer(content: Option<Cow<'a, str>>, tool_calls: Vec<ToolCall<'a>>) -> Self {
        let content = match content.filter(|c| !c.is_empty()) {
            None if tool_calls.is_empty() => Some(Cow::Borrowed("")),
            content => content,
        };
        Self {
            role: "assistant",
            content,
            refusal: None,
            tool_calls,
        }
    }

    /// A refusal, without content.
    pub(crate) fn refusal(refusal: impl Into<Cow<'a, str>>) -> Self {
        Self {
            role: "assistant",
            content: None,
            refusal: Some(refusal.into()),
            tool_calls: Vec::new(),
        }
    }
}

/// A whole function tool call; `arguments` is the JSON text of the arguments.
#[derive(Serialize)]
pub(crate) struct ToolCall<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

/// A tool call's function.
#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: Cow<'a, str>,
}

impl<'a> ToolCall<'a> {
    /// A call of function `name`.
    pub(crate) fn function(
        id: impl Into<Cow<'a, str>>,
        name: &'a str,
        arguments: impl Into<Cow<'a, str>>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: "function",
            function: Function {
                name,
                arguments: arguments.into(),
            },
        }
    }
}

/// OpenAI's `usage`.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    /// Only when the provider counts reasoning tokens apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Clone, Copy, Debug, Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
}

/// `usage.completion_tokens_details`.
#[derive(Clone, Copy, Debug, Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
}

impl Usage {
    /// The usage of `prompt` tokens (`cached` of them read from a cache) and `completion`
    /// tokens (`reasoning` of them thinking, when the provider tells). The total saturates:
    /// the counts are the upstream's, and must not overflow.
    pub(crate) fn new(prompt: u64, cached: u64, completion: u64, reasoning: Option<u64>) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
            completion_tokens_details: reasoning
                .map(|reasoning_tokens| CompletionTokensDetails { reasoning_tokens }),
        }
    }
}

/// What every chunk of a stream repeats; writes the chunks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkHead<'a> {
    /// `chatcmpl-...`, the same in every chunk.
    pub(crate) id: &'a str,
    /// Seconds since the epoch.
    pub(crate) created: u64,
    /// The model that answers.
    pub(crate) model: &'a str,
    /// The client asked for `stream_options.include_usage`: every chunk has `usage`, `null`
    /// but in the last (whose `choices` are empty).
    pub(crate) include_usage: bool,
}

impl<'a> ChunkHead<'a> {
    /// The head of the chunks answering the request `context` was made for.
    pub(crate) fn new(id: &'a str, model: &'a str, context: &ReplyContext) -> Self {
        Self {
            id,
            created: context.created,
            model,
            include_usage: context.include_usage,
        }
    }

    /// Appends a chunk with one choice.
    pub(crate) fn push(
        self,
        out: &mut Vec<u8>,
        index: u32,
        delta: Delta<'_>,
        finish_reason: Option<&'static str>,
    ) {
        let choices = [ChunkChoice {
            index,
            delta,
            logprobs: (),
            finish_reason,
        }];
        // With `include_usage`, OpenAI's chunks before the usage chunk carry `usage: null`.
        self.push_chunk(out, &choices, self.include_usage.then_some(None));
    }

    /// Appends the usage chunk (no choices); nothing unless the client asked for usage.
    pub(crate) fn push_usage(self, out: &mut Vec<u8>, usage: &Usage) {
        if self.include_usage {
            self.push_chunk(out, &[], Some(Some(usage)));
        }
    }

    fn push_chunk(
        self,
        out: &mut Vec<u8>,
        choices: &[ChunkChoice<'_>],
        usage: Option<Option<&Usage>>,
    ) {
        let chunk = Chunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            choices,
            usage,
        };
        push_frame(out, &chunk);
    }
}

/// A `chat.completion.chunk`.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent without `include_usage`; `null`, or the totals in the last chunk, with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

/// A chunk's choice.
#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

/// A choice's delta; the default is empty (the delta of the chunk carrying `finish_reason`).
#[derive(Default, Serialize)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

impl<'a> Delta<'a> {
    /// A choice's first delta: the role, and empty content (as OpenAI sends it).
    pub(crate) fn role() -> Self {
        Self {
            role: Some("assistant"),
            content: Some(""),
            ..Self::default()
        }
    }

    /// A piece of content.
    pub(crate) fn content(text: &'a str) -> Self {
        Self {
            content: Some(text),
            ..Self::default()
        }
    }

    /// A refusal.
    pub(crate) fn refusal(text: &'a str) -> Self {
        Self {
            refusal: Some(text),
            ..Self::default()
        }
    }

    /// A piece of a tool call.
    pub(crate) fn tool_call(call: ToolCallDelta<'a>) -> Self {
        Self {
            tool_calls: Some([call]),
            ..Self::default()
        }
    }
}

/// A tool call's piece: the first has `id`, `type` and the name, the rest argument text.
#[derive(Serialize)]
pub(crate) struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

/// A tool call piece's function.
#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl<'a> ToolCallDelta<'a> {
    /// The first piece of tool call `index` (its OpenAI index within the choice): the
    /// function `name` and the start of its `arguments` (maybe all, maybe none).
    pub(crate) fn start(index: u32, id: &'a str, name: &'a str, arguments: &'a str) -> Self {
        Self {
            index,
            id: Some(id),
            kind: Some("function"),
            function: FunctionDelta {
                name: Some(name),
                arguments,
            },
        }
    }

    /// A further piece of the arguments of tool call `index`.
    pub(crate) fn arguments(index: u32, piece: &'a str) -> Self {
        Self {
            index,
            id: None,
            kind: None,
            function: FunctionDelta {
                name: None,
                arguments: piece,
            },
        }
    }
}

/// A boolean parameter.
pub(crate) fn boolean(param: &str, value: &Value) -> Result<bool, Error> {
    value
        .as_bool()
        .ok_or_else(|| Error::invalid_param(param, "must be a boolean"))
}

/// A number parameter.
pub(crate) fn number<'a>(param: &str, value: &'a Value) -> Result<&'a Number, Error> {
    match value {
        Value::Number(n) => Ok(n),
        _ => Err(Error::invalid_param(param, "must be a number")),
    }
}

/// `data:<media type>[;param]*;base64,<data>` into the media type and the base64 data; `None`
/// for any other URL (a data URL that is not base64 included).
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mut params = meta.split(';');
    let media_type = params.next().filter(|m| !m.is_empty())?;
    params
        .any(|p| p.eq_ignore_ascii_case("base64"))
        .then_some((media_type, data))
}

/// An `http://` or `https://` URL (any case).
pub(crate) fn is_http_url(url: &str) -> bool {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    scheme.is_some_and(|s| s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("http"))
}

/// The arguments of `messages[i].tool_calls[j]` (`call`) as a JSON object. OpenAI requires
/// `function.arguments`, a string; an empty (or blank) one is taken as `{}`, as some clients
/// send it for a call without arguments.
///
/// # Errors
/// `invalid_param` naming `messages[i].tool_calls[j].function.arguments` when they are not a
/// string holding a JSON object.
pub(crate) fn tool_call_arguments(
    call: &Value,
    i: usize,
    j: usize,
) -> Result<Map<String, Value>, Error> {
    let invalid = |message| {
        Error::invalid_param(
            format!("messages[{i}].tool_calls[{j}].function.arguments"),
            message,
        )
    };
    let arguments = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("must be a string"))?;
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(arguments) {
        Ok(Value::Object(arguments)) => Ok(arguments),
        _ => Err(invalid("must be a JSON object")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frames(out: &[u8]) -> Vec<&str> {
        std::str::from_utf8(out)
            .unwrap()
            .split_terminator("\n\n")
            .map(|f| f.strip_prefix("data: ").unwrap())
            .collect()
    }

    #[test]
    fn completion_ids() {
        assert_eq!(completion_id(Some("msg_1")), "chatcmpl-msg_1");
        for none in [None, Some("")] {
            let id = completion_id(none);
            assert_eq!(id.len(), 9 + 24, "{id}");
            assert!(id.starts_with("chatcmpl-"));
        }
    }

    #[test]
    fn completion_bytes() {
        let mut context = ReplyContext::new("asked");
        context.created = 7;
        let choices = [
            Choice::new(0, Message::answer(None, Vec::new()), "stop"),
            Choice::new(
                1,
                Message::answer(
                    Some(Cow::Borrowed("")),
                    vec![ToolCall::function("call_1", "f", "{}")],
                ),
                "tool_calls",
            ),
            Choice::new(2, Message::refusal("no"), "content_filter"),
        ];
        let body = completion(
            "chatcmpl-x",
            &context,
            "m",
            &choices,
            Usage::new(3, 1, 2, None),
        );
        assert_eq!(
            std::str::from_utf8(&body.unwrap()).unwrap(),
            concat!(
                r#"{"id":"chatcmpl-x","object":"chat.completion","created":7,"model":"m","choices":["#,
                r#"{"index":0,"message":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":"stop"},"#,
                r#"{"index":1,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"},"#,
                r#"{"index":2,"message":{"role":"assistant","content":null,"refusal":"no"},"logprobs":null,"finish_reason":"content_filter"}],"#,
                r#""usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            )
        );
    }

    #[test]
    fn usage_saturates_and_shows_reasoning_when_counted() {
        let usage = serde_json::to_value(Usage::new(u64::MAX, 0, 1, Some(1))).unwrap();
        assert_eq!(
            usage,
            json!({
                "prompt_tokens": u64::MAX, "completion_tokens": 1, "total_tokens": u64::MAX,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 1},
            })
        );
    }

    #[test]
    fn chunk_bytes() {
        let mut head = ChunkHead {
            id: "chatcmpl-x",
            created: 7,
            model: "m",
            include_usage: false,
        };
        let mut out = Vec::new();
        head.push(&mut out, 0, Delta::role(), None);
        head.push(
            &mut out,
            0,
            Delta::tool_call(ToolCallDelta::start(0, "call_1", "f", "")),
            None,
        );
        head.push(
            &mut out,
            0,
            Delta::tool_call(ToolCallDelta::arguments(0, "{}")),
            None,
        );
        head.push_usage(&mut out, &Usage::new(1, 0, 1, None));
        head.include_usage = true;
        head.push(&mut out, 1, Delta::refusal("no"), Some("content_filter"));
        head.push(&mut out, 1, Delta::content("x"), None);
        head.push_usage(&mut out, &Usage::new(1, 0, 1, None));
        push_done(&mut out);
        let head = r#""id":"chatcmpl-x","object":"chat.completion.chunk","created":7,"model":"m""#;
        assert_eq!(
            frames(&out),
            [
                format!(
                    r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}"#
                ),
                format!(
                    r#"{{{head},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"call_1","type":"function","function":{{"name":"f","arguments":""}}}}]}},"logprobs":null,"finish_reason":null}}]}}"#
                ),
                format!(
                    r#"{{{head},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{{}}"}}}}]}},"logprobs":null,"finish_reason":null}}]}}"#
                ),
                format!(
                    r#"{{{head},"choices":[{{"index":1,"delta":{{"refusal":"no"}},"logprobs":null,"finish_reason":"content_filter"}}],"usage":null}}"#
                ),
                format!(
                    r#"{{{head},"choices":[{{"index":1,"delta":{{"content":"x"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
                ),
                format!(
                    r#"{{{head},"choices":[],"usage":{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"prompt_tokens_details":{{"cached_tokens":0}}}}}}"#
                ),
                "[DONE]".to_owned(),
            ]
        );
    }

    #[test]
    fn data_urls() {
        assert_eq!(
            data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
        assert_eq!(
            data_url("data:application/pdf;name=a.pdf;BASE64,JVBE"),
            Some(("application/pdf", "JVBE"))
        );
        for not in [
            "data:image/png,AAAA",
            "data:;base64,AAAA",
            "data:image/png;base64",
            "https://x.test/a.png",
        ] {
            assert_eq!(data_url(not), None, "{not}");
        }
    }

    #[test]
    fn http_urls() {
        for url in ["https://x.test/a", "HTTP://x.test", "Https://x"] {
            assert!(is_http_url(url), "{url}");
        }
        for url in [
            "ftp://x",
            "x.test/https://",
            "https:/x",
            "data:image/png;base64,AA",
        ] {
            assert!(!is_http_url(url), "{url}");
        }
    }

    #[test]
    fn scalar_parameters() {
        assert!(boolean("stream", &json!(true)).unwrap());
        let error = boolean("stream", &json!("true")).unwrap_err();
        assert!(error.to_string().contains("`stream`"), "{error}");
        assert_eq!(number("top_p", &json!(0.5)).unwrap().as_f64(), Some(0.5));
        assert!(number("top_p", &json!("0.5")).is_err());
    }

    #[test]
    fn tool_call_argument_objects() {
        let call = |arguments: Value| json!({"function": {"name": "f", "arguments": arguments}});
        assert_eq!(
            tool_call_arguments(&call(json!("{\"a\":1}")), 1, 0).unwrap(),
            json!({"a": 1}).as_object().unwrap().clone()
        );
        assert!(
            tool_call_arguments(&call(json!(" ")), 1, 0)
                .unwrap()
                .is_empty()
        );
        for bad in [
            json!("[1]"),
            json!("{"),
            json!("null"),
            json!({"a": 1}),
            Value::Null,
        ] {
            let error = tool_call_arguments(&call(bad.clone()), 2, 3).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
            assert!(
                error
                    .to_string()
                    .contains("`messages[2].tool_calls[3].function.arguments`"),
                "{bad}: {error}"
            );
        }
        assert!(tool_call_arguments(&json!({"function": {"name": "f"}}), 0, 0).is_err());
    }
}

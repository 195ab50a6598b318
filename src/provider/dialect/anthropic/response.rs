//! Anthropic Message -> OpenAI `chat.completion`, and what the stream shares with it
//! (usage and finish reasons).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;
use crate::provider::dialect::ReplyContext;
use crate::provider::dialect::openai::{self, Choice, Message, ToolCall};

/// Translates a 2xx Messages answer into an OpenAI `chat.completion` body.
///
/// # Errors
/// `upstream_protocol` when `body` is not a Message.
pub(crate) fn chat_response(body: &[u8], context: &ReplyContext) -> Result<Vec<u8>, Error> {
    let message: Answer<'_> =
        serde_json::from_slice(body).map_err(|e| Error::upstream_protocol().with_source(e))?;
    let json_tool = context.json_tool.as_deref();
    let mut text: Option<Cow<'_, str>> = None;
    let mut json: Option<&str> = None;
    let mut tool_calls = Vec::new();
    for block in &message.content {
        match block.kind.as_ref() {
            "text" => openai::append(&mut text, block.text.as_deref().unwrap_or_default()),
            "tool_use" => {
                let (Some(id), Some(name)) = (block.id.as_deref(), block.name.as_deref()) else {
                    return Err(Error::upstream_protocol());
                };
                let arguments = block.input.map_or("{}", RawValue::get);
                if Some(name) == json_tool {
                    json = Some(arguments);
                } else {
                    tool_calls.push(ToolCall::function(id, name, arguments));
                }
            }
            // Thinking, redacted thinking and blocks of later API additions say nothing the
            // client asked for.
            _ => {}
        }
    }
    let finish_reason = finish_reason(message.stop_reason.as_deref(), tool_calls.is_empty());
    // The forced tool's input is the answer the client asked for, in place of any text.
    let content = json.map(Cow::Borrowed).or(text);
    let choice = Choice::new(0, Message::answer(content, tool_calls), finish_reason);
    openai::completion(
        &openai::completion_id(Some(&message.id)),
        context,
        message.model.as_deref().unwrap_or(&context.model),
        &[choice],
        message.usage.openai(),
    )
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`. `tool_use` is `stop` when no
/// client tool was called (the only tool use was the forced response-format tool).
pub(super) fn finish_reason(stop_reason: Option<&str>, no_tool_calls: bool) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") if !no_tool_calls => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and reasons added later.
        _ => "stop",
    }
}

/// A Message (the fields translated).
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Vec<ContentBlock<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Usage,
}

/// A content block of any type, or a stream's block delta of any type: the fields of `text`
/// and `tool_use` blocks, and of `text_delta` and `input_json_delta` deltas.
#[derive(Deserialize)]
pub(super) struct ContentBlock<'a> {
    #[serde(borrow, rename = "type")]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) partial_json: Option<Cow<'a, str>>,
}

/// Anthropic's `usage` (cache counts are apart from `input_tokens`; any may be null).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(super) struct Usage {
    #[serde(default)]
    pub(super) input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_creation_input_tokens: Option<u64>,
}

impl Usage {
    /// Takes the counts `later` reports (a stream's `message_delta` repeats them, cumulative).
    pub(super) fn update(&mut self, later: Usage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }

    /// OpenAI's usage: prompt tokens include the cached ones, as OpenAI counts them (sums
    /// saturate: the counts are the upstream's). Thinking tokens are in `output_tokens`, not
    /// counted apart, so there is no `completion_tokens_details`.
    pub(super) fn openai(self) -> openai::Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(cached)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        openai::Usage::new(prompt, cached, self.output_tokens.unwrap_or(0), None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn context() -> ReplyContext {
        let mut context = ReplyContext::new("claude-haiku-4-5");
        context.created = 1_700_000_000;
        context
    }

    fn translate(answer: Value, context: &ReplyContext) -> Value {
        let body = chat_response(&serde_json::to_vec(&answer).unwrap(), context).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn message(content: Value, stop_reason: &str) -> Value {
        json!({
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        })
    }

    #[test]
    fn text_answer() {
        let answer = json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "abc"},
                {"type": "text", "text": "Hello"},
                {"type": "text", "text": ", world"},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 3,
                "cache_read_input_tokens": 100,
                "output_tokens": 7,
                "service_tier": "standard",
            },
        });
        assert_eq!(
            translate(answer, &context()),
            json!({
                "id": "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "claude-haiku-4-5-20251001",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello, world", "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {
                    "prompt_tokens": 115,
                    "completion_tokens": 7,
                    "total_tokens": 122,
                    "prompt_tokens_details": {"cached_tokens": 100},
                },
            })
        );
    }

    #[test]
    fn tool_use_answer() {
        let answer = message(
            json!([
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome", "units": ["c"]}},
            ]),
            "tool_use",
        );
        let got = translate(answer, &context());
        let choice = &got["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "toolu_1");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "weather");
        let arguments = calls[1]["function"]["arguments"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(arguments).unwrap(),
            json!({"city": "Rome", "units": ["c"]})
        );
    }

    #[test]
    fn text_beside_tool_use_is_kept() {
        let answer = message(
            json!([
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}},
            ]),
            "tool_use",
        );
        let got = translate(answer, &context());
        assert_eq!(got["choices"][0]["message"]["content"], "Checking.");
        assert_eq!(
            got["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
    }

    #[test]
    fn forced_json_tool_is_the_content() {
        let mut context = context();
        context.json_tool = Some("json_output".to_owned());
        let answer = message(
            json!([{"type": "tool_use", "id": "toolu_9", "name": "json_output", "input": {"answer": "42"}}]),
            "tool_use",
        );
        let got = translate(answer, &context);
        let choice = &got["choices"][0];
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(choice["message"].get("tool_calls"), None);
        let content = choice["message"]["content"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(content).unwrap(),
            json!({"answer": "42"})
        );
    }

    #[test]
    fn finish_reasons() {
        let cases = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("some_new_reason", "stop"),
        ];
        for (stop_reason, expected) in cases {
            let got = translate(
                message(json!([{"type": "text", "text": "x"}]), stop_reason),
                &context(),
            );
            assert_eq!(
                got["choices"][0]["finish_reason"], expected,
                "{stop_reason}"
            );
        }
    }

    #[test]
    fn defaults_for_missing_fields() {
        let answer = json!({"id": "msg_2", "content": [], "stop_reason": "max_tokens"});
        let got = translate(answer, &context());
        assert_eq!(got["model"], "claude-haiku-4-5");
        assert_eq!(got["choices"][0]["message"]["content"], "");
        assert_eq!(got["choices"][0]["finish_reason"], "length");
        assert_eq!(got["usage"]["total_tokens"], 0);
    }

    #[test]
    fn huge_usage_counts_saturate() {
        let mut answer = message(json!([{"type": "text", "text": "x"}]), "end_turn");
        answer["usage"] = json!({
            "input_tokens": u64::MAX,
            "cache_read_input_tokens": u64::MAX,
            "cache_creation_input_tokens": 1,
            "output_tokens": u64::MAX,
        });
        let got = translate(answer, &context());
        assert_eq!(got["usage"]["prompt_tokens"], u64::MAX);
        assert_eq!(got["usage"]["total_tokens"], u64::MAX);
    }

    #[test]
    fn unparsable_answer_is_a_protocol_error() {
        for body in [
            &b"<html>"[..],
            b"{}",
            b"{\"id\":\"m\",\"content\":[{\"type\":\"tool_use\"}]}",
        ] {
            let error = chat_response(body, &context()).err().unwrap();
            assert_eq!(error.status(), http::StatusCode::BAD_GATEWAY);
            assert!(error.is_upstream());
        }
    }
}

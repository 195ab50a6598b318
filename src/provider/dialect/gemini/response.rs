//! Gemini `GenerateContentResponse` -> OpenAI `chat.completion`, and the Gemini answer types
//! the stream shares.

use std::borrow::Cow;
use std::ops::Deref;

use serde::Deserialize;
use serde_json::Value;

use super::super::ReplyContext;
use super::super::openai::{self, Choice, Message, ToolCall};
use super::call_id;
use crate::error::Error;

/// A Gemini `GenerateContentResponse` (a whole answer, or one event of a stream), with the
/// fields the translation reads, borrowed from the answer's bytes where they can be.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateContentResponse<'a> {
    #[serde(borrow, default)]
    pub(super) candidates: Vec<Candidate<'a>>,
    #[serde(borrow)]
    pub(super) prompt_feedback: Option<PromptFeedback<'a>>,
    pub(super) usage_metadata: Option<UsageMetadata>,
    #[serde(borrow)]
    pub(super) model_version: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) response_id: Option<Str<'a>>,
    /// Set instead of the rest when a stream fails midway.
    pub(super) error: Option<Value>,
}

/// A string of the answer, borrowed unless it has escapes. (serde borrows a `Cow` only when it
/// is a field itself, not inside an `Option`.)
#[derive(Deserialize)]
#[serde(transparent)]
pub(super) struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// One candidate answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate<'a> {
    #[serde(borrow)]
    pub(super) content: Option<Content<'a>>,
    #[serde(borrow)]
    pub(super) finish_reason: Option<Str<'a>>,
    /// Absent for the first candidate (protobuf's JSON leaves zeros out).
    pub(super) index: Option<u32>,
}

/// A candidate's content.
#[derive(Deserialize)]
pub(super) struct Content<'a> {
    #[serde(borrow, default)]
    pub(super) parts: Vec<Part<'a>>,
}

/// One part: text (maybe a thought summary) or a function call; other kinds are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Part<'a> {
    #[serde(borrow)]
    pub(super) text: Option<Str<'a>>,
    #[serde(default)]
    pub(super) thought: bool,
    #[serde(borrow)]
    pub(super) thought_signature: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) function_call: Option<FunctionCall<'a>>,
}

/// A function call, always whole (also in streams).
#[derive(Deserialize)]
pub(super) struct FunctionCall<'a> {
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    pub(super) args: Option<Value>,
}

impl FunctionCall<'_> {
    /// The arguments as OpenAI's JSON text (`{}` when there are none).
    pub(super) fn arguments(&self) -> String {
        match &self.args {
            Some(args) if !args.is_null() => args.to_string(),
            _ => "{}".to_owned(),
        }
    }

    /// The OpenAI tool-call id, carrying Gemini's call id and the part's `signature`.
    pub(super) fn openai_id(&self, signature: Option<&str>) -> String {
        call_id::encode(self.id.as_deref(), signature)
    }
}

/// Why the prompt was refused, if it was.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback<'a> {
    #[serde(borrow)]
    pub(super) block_reason: Option<Str<'a>>,
}

/// Token counts (cumulative in a stream).
#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

impl UsageMetadata {
    /// OpenAI's usage. `promptTokenCount` already includes the cached tokens, as OpenAI's
    /// count does; thinking tokens are billed as output, as OpenAI's reasoning tokens are
    /// (the sum saturates: the counts are the upstream's).
    pub(super) fn openai(self) -> openai::Usage {
        let completion = self
            .candidates_token_count
            .saturating_add(self.thoughts_token_count);
        openai::Usage::new(
            self.prompt_token_count,
            self.cached_content_token_count,
            completion,
            Some(self.thoughts_token_count),
        )
    }
}

impl GenerateContentResponse<'_> {
    /// The chat completion id: Gemini's response id, else a fresh one.
    pub(super) fn completion_id(&self) -> String {
        openai::completion_id(self.response_id.as_deref())
    }

    /// The model that answered: Gemini's model version, else the one asked for.
    pub(super) fn model<'s>(&'s self, context: &'s ReplyContext) -> &'s str {
        self.model_version
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&context.model)
    }

    /// The block reason when Gemini refused the prompt and answered no candidate.
    pub(super) fn blocked(&self) -> Option<&str> {
        if !self.candidates.is_empty() {
            return None;
        }
        self.prompt_feedback.as_ref()?.block_reason.as_deref()
    }
}

impl Candidate<'_> {
    /// The answer's text parts joined (thought summaries left out); `None` when empty.
    pub(super) fn text(&self) -> Option<Cow<'_, str>> {
        let mut text = None;
        for piece in self
            .parts()
            .filter(|p| !p.thought)
            .filter_map(|p| p.text.as_deref())
        {
            openai::append(&mut text, piece);
        }
        text
    }

    /// The function calls, each with its part's signature.
    pub(super) fn calls(&self) -> impl Iterator<Item = (&FunctionCall<'_>, Option<&str>)> {
        self.parts().filter_map(|p| {
            p.function_call
                .as_ref()
                .map(|call| (call, p.thought_signature.as_deref()))
        })
    }

    fn parts(&self) -> impl Iterator<Item = &Part<'_>> {
        self.content.iter().flat_map(|c| c.parts.iter())
    }
}

/// Translates a whole (2xx) Gemini answer into OpenAI's `chat.completion` JSON.
pub(crate) fn chat_response(body: &[u8], context: &ReplyContext) -> Result<Vec<u8>, Error> {
    let response: GenerateContentResponse<'_> =
        serde_json::from_slice(body).map_err(|e| Error::upstream_protocol().with_source(e))?;
    let mut choices: Vec<Choice<'_>> = response
        .candidates
        .iter()
        .enumerate()
        .map(|(position, candidate)| choice(position, candidate))
        .collect();
    if let Some(reason) = response.blocked() {
        let refusal = Message::refusal(super::blocked_message(reason));
        choices.push(Choice::new(0, refusal, "content_filter"));
    }
    if choices.is_empty() {
        return Err(Error::upstream_protocol().with_source("a Gemini answer without candidates"));
    }
    openai::completion(
        &response.completion_id(),
        context,
        response.model(context),
        &choices,
        response.usage_metadata.unwrap_or_default().openai(),
    )
}

fn choice<'a>(position: usize, candidate: &'a Candidate<'_>) -> Choice<'a> {
    let tool_calls: Vec<ToolCall<'_>> = candidate
        .calls()
        .map(|(call, signature)| {
            ToolCall::function(call.openai_id(signature), &call.name, call.arguments())
        })
        .collect();
    let reason = candidate.finish_reason.as_deref().unwrap_or("STOP");
    let finish_reason = super::finish_reason(reason, !tool_calls.is_empty());
    let index = candidate
        .index
        .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
    Choice::new(
        index,
        Message::answer(candidate.text(), tool_calls),
        finish_reason,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translate(answer: Value) -> Value {
        let mut context = ReplyContext::new("gemini-2.5-flash");
        context.created = 1_700_000_000;
        let body = chat_response(&serde_json::to_vec(&answer).unwrap(), &context).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn text_answer_with_usage() {
        let got = translate(json!({
            "candidates": [{
                "content": { "role": "model", "parts": [
                    { "text": "thinking...", "thought": true },
                    { "text": "Hello" },
                    { "text": " world", "thoughtSignature": "c2ln" },
                ]},
                "finishReason": "STOP",
            }],
            "usageMetadata": {
                "promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7,
                "cachedContentTokenCount": 4, "totalTokenCount": 22,
            },
            "modelVersion": "gemini-2.5-flash-001",
            "responseId": "abc123",
        }));
        assert_eq!(
            got,
            json!({
                "id": "chatcmpl-abc123",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gemini-2.5-flash-001",
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": "Hello world", "refusal": null },
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {
                    "prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22,
                    "prompt_tokens_details": { "cached_tokens": 4 },
                    "completion_tokens_details": { "reasoning_tokens": 7 },
                },
            })
        );
    }

    #[test]
    fn huge_usage_counts_saturate() {
        let got = translate(json!({
            "candidates": [{ "content": { "parts": [{ "text": "x" }] }, "finishReason": "STOP" }],
            "usageMetadata": {
                "promptTokenCount": u64::MAX,
                "candidatesTokenCount": u64::MAX,
                "thoughtsTokenCount": 1,
            },
        }));
        assert_eq!(got["usage"]["completion_tokens"], u64::MAX);
        assert_eq!(got["usage"]["total_tokens"], u64::MAX);
    }

    #[test]
    fn function_calls_and_several_candidates() {
        let got = translate(json!({
            "candidates": [
                {
                    "content": { "role": "model", "parts": [
                        { "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "c2lnbmF0dXJl" },
                        { "functionCall": { "id": "fc-2", "name": "time" } },
                    ]},
                    "finishReason": "STOP",
                },
                {
                    "content": { "role": "model", "parts": [{ "text": "It is" }] },
                    "finishReason": "MAX_TOKENS",
                    "index": 1,
                },
                { "finishReason": "SAFETY", "index": 2 },
            ],
        }));
        assert!(got["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(got["model"], "gemini-2.5-flash");
        let first = &got["choices"][0];
        assert_eq!(first["index"], 0);
        assert_eq!(first["finish_reason"], "tool_calls");
        assert_eq!(first["message"]["content"], Value::Null);
        let calls = first["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(
            calls[0]["function"],
            json!({ "name": "weather", "arguments": "{\"city\":\"Paris\"}" })
        );
        assert_eq!(
            calls[1]["function"],
            json!({ "name": "time", "arguments": "{}" })
        );
        assert!(calls[0].get("index").is_none());
        let carried = call_id::decode(calls[0]["id"].as_str().unwrap());
        assert_eq!(carried.signature.as_deref(), Some("c2lnbmF0dXJl"));
        assert_eq!(carried.id, None);
        let carried = call_id::decode(calls[1]["id"].as_str().unwrap());
        assert_eq!(
            (carried.id.as_deref(), carried.signature),
            (Some("fc-2"), None)
        );
        assert_eq!(got["choices"][1]["index"], 1);
        assert_eq!(got["choices"][1]["finish_reason"], "length");
        assert_eq!(got["choices"][1]["message"]["content"], "It is");
        assert_eq!(got["choices"][2]["finish_reason"], "content_filter");
        assert_eq!(got["choices"][2]["message"]["content"], "");
        assert_eq!(got["usage"]["total_tokens"], 0);
    }

    #[test]
    fn blocked_prompt() {
        let got = translate(json!({
            "promptFeedback": { "blockReason": "SAFETY", "safetyRatings": [] },
            "usageMetadata": { "promptTokenCount": 8, "totalTokenCount": 8 },
        }));
        assert_eq!(
            got["choices"],
            json!([{
                "index": 0,
                "message": { "role": "assistant", "content": null, "refusal": "The prompt was blocked by Gemini (SAFETY)." },
                "logprobs": null,
                "finish_reason": "content_filter",
            }])
        );
        assert_eq!(got["usage"]["prompt_tokens"], 8);
    }

    #[test]
    fn unreadable_answers_are_protocol_errors() {
        let context = ReplyContext::new("gemini-2.5-flash");
        for body in [
            &b"<html>"[..],
            b"[]",
            b"{}",
            b"{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{}}]}}]}",
        ] {
            let error = chat_response(body, &context).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::BAD_GATEWAY);
        }
    }
}

//! Gemini `GenerateContentResponse` -> OpenAI `chat.completion`, and the Gemini answer types
//! the stream shares.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::{ReplyContext, random_id};
use super::call_id;
use crate::error::Error;

/// A Gemini `GenerateContentResponse` (a whole answer, or one event of a stream), with the
/// fields the translation reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateContentResponse {
    #[serde(default)]
    pub(super) candidates: Vec<Candidate>,
    pub(super) prompt_feedback: Option<PromptFeedback>,
    pub(super) usage_metadata: Option<UsageMetadata>,
    pub(super) model_version: Option<String>,
    pub(super) response_id: Option<String>,
    /// Set instead of the rest when a stream fails midway.
    pub(super) error: Option<Value>,
}

/// One candidate answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate {
    pub(super) content: Option<Content>,
    pub(super) finish_reason: Option<String>,
    /// Absent for the first candidate (protobuf's JSON leaves zeros out).
    pub(super) index: Option<u32>,
}

/// A candidate's content.
#[derive(Deserialize)]
pub(super) struct Content {
    #[serde(default)]
    pub(super) parts: Vec<Part>,
}

/// One part: text (maybe a thought summary) or a function call; other kinds are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Part {
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) thought: bool,
    pub(super) thought_signature: Option<String>,
    pub(super) function_call: Option<FunctionCall>,
}

/// A function call, always whole (also in streams).
#[derive(Deserialize)]
pub(super) struct FunctionCall {
    pub(super) id: Option<String>,
    pub(super) name: String,
    pub(super) args: Option<Value>,
}

/// Why the prompt was refused, if it was.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback {
    pub(super) block_reason: Option<String>,
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

/// OpenAI's `usage`.
#[derive(Serialize)]
pub(super) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
}

impl From<UsageMetadata> for Usage {
    fn from(usage: UsageMetadata) -> Self {
        // `promptTokenCount` already includes the cached tokens, as OpenAI's count does;
        // thinking tokens are billed as output, as OpenAI's reasoning tokens are.
        // Sums saturate: the counts are the upstream's, and must not overflow.
        let completion = usage
            .candidates_token_count
            .saturating_add(usage.thoughts_token_count);
        Self {
            prompt_tokens: usage.prompt_token_count,
            completion_tokens: completion,
            total_tokens: usage.prompt_token_count.saturating_add(completion),
            prompt_tokens_details: PromptDetails {
                cached_tokens: usage.cached_content_token_count,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: usage.thoughts_token_count,
            },
        }
    }
}

/// An OpenAI tool call (whole; in streams with an `index`).
#[derive(Serialize)]
pub(super) struct ToolCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) index: Option<u32>,
    pub(super) id: String,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: Function<'a>,
}

/// A tool call's function: its name and arguments as a JSON string.
#[derive(Serialize)]
pub(super) struct Function<'a> {
    pub(super) name: &'a str,
    pub(super) arguments: String,
}

impl<'a> ToolCall<'a> {
    /// The OpenAI tool call for Gemini's call in `part`.
    pub(super) fn new(call: &'a FunctionCall, signature: Option<&str>, index: Option<u32>) -> Self {
        let arguments = match &call.args {
            Some(args) if !args.is_null() => args.to_string(),
            _ => "{}".to_owned(),
        };
        Self {
            index,
            id: call_id::encode(call.id.as_deref(), signature),
            kind: "function",
            function: Function {
                name: &call.name,
                arguments,
            },
        }
    }
}

impl GenerateContentResponse {
    /// The chat completion id: Gemini's response id, else a fresh one.
    pub(super) fn completion_id(&self) -> String {
        let suffix = self
            .response_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .map_or_else(random_id, str::to_owned);
        format!("chatcmpl-{suffix}")
    }

    /// The model that answered: Gemini's model version, else the one asked for.
    pub(super) fn model<'a>(&'a self, context: &'a ReplyContext) -> &'a str {
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

impl Candidate {
    /// The answer's text parts joined (thought summaries left out).
    pub(super) fn text(&self) -> String {
        self.parts()
            .filter(|p| !p.thought)
            .filter_map(|p| p.text.as_deref())
            .collect()
    }

    /// The function calls, each with its part's signature.
    pub(super) fn calls(&self) -> impl Iterator<Item = (&FunctionCall, Option<&str>)> {
        self.parts().filter_map(|p| {
            p.function_call
                .as_ref()
                .map(|call| (call, p.thought_signature.as_deref()))
        })
    }

    fn parts(&self) -> impl Iterator<Item = &Part> {
        self.content.iter().flat_map(|c| c.parts.iter())
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

/// Translates a whole (2xx) Gemini answer into OpenAI's `chat.completion` JSON.
pub(crate) fn chat_response(body: &[u8], context: &ReplyContext) -> Result<Vec<u8>, Error> {
    let response: GenerateContentResponse =
        serde_json::from_slice(body).map_err(|e| Error::upstream_protocol().with_source(e))?;
    let mut choices: Vec<Choice<'_>> = response
        .candidates
        .iter()
        .enumerate()
        .map(|(position, candidate)| choice(position, candidate))
        .collect();
    if let Some(reason) = response.blocked() {
        choices.push(Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: None,
                refusal: Some(super::blocked_message(reason)),
                tool_calls: Vec::new(),
            },
            logprobs: (),
            finish_reason: "content_filter",
        });
    }
    if choices.is_empty() {
        return Err(Error::upstream_protocol().with_source("a Gemini answer without candidates"));
    }
    let completion = Completion {
        id: response.completion_id(),
        object: "chat.completion",
        created: context.created,
        model: response.model(context),
        choices,
        usage: response.usage_metadata.unwrap_or_default().into(),
    };
    serde_json::to_vec(&completion).map_err(|e| Error::internal().with_source(e))
}

fn choice(position: usize, candidate: &Candidate) -> Choice<'_> {
    let tool_calls: Vec<ToolCall<'_>> = candidate
        .calls()
        .map(|(call, signature)| ToolCall::new(call, signature, None))
        .collect();
    let text = candidate.text();
    let content = if !text.is_empty() {
        Some(text)
    } else if tool_calls.is_empty() {
        Some(String::new())
    } else {
        None
    };
    let reason = candidate.finish_reason.as_deref().unwrap_or("STOP");
    Choice {
        index: candidate
            .index
            .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX)),
        finish_reason: super::finish_reason(reason, !tool_calls.is_empty()),
        message: Message {
            role: "assistant",
            content,
            refusal: None,
            tool_calls,
        },
        logprobs: (),
    }
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

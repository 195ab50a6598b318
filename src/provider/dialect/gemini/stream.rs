//! Gemini `streamGenerateContent?alt=sse` -> OpenAI `chat.completion.chunk` frames.
//!
//! Each event is `data: <GenerateContentResponse>` with no event name; the stream ends when
//! the connection closes. Text arrives in pieces, function calls whole, `usageMetadata`
//! cumulatively; the event that ends a candidate carries its `finishReason`.

use super::super::openai::{self, ChunkHead, Delta, ToolCallDelta};
use super::super::{ReplyContext, StreamError, StreamTranslator};
use super::response::{Candidate, GenerateContentResponse, UsageMetadata};

/// The most candidates a stream may have. Gemini allows `candidateCount` up to 8; an
/// upstream that sends ever new candidate indices must not grow our memory.
const MAX_CANDIDATES: usize = 64;

/// Translates one Gemini stream, event by event.
pub(crate) struct ChatStream {
    context: ReplyContext,
    /// `id` and `model` of every chunk, fixed by the first event.
    ids: Option<(String, String)>,
    /// Per candidate index: tool calls sent so far (the OpenAI `index` of the next one); at
    /// most [`MAX_CANDIDATES`].
    candidates: Vec<(u32, u32)>,
    finished: bool,
    usage: Option<UsageMetadata>,
    done: bool,
}

impl ChatStream {
    /// A translator for the answer to the request that made `context`.
    pub(crate) fn new(context: ReplyContext) -> Self {
        Self {
            context,
            ids: None,
            candidates: Vec::new(),
            finished: false,
            usage: None,
            done: false,
        }
    }

    /// What every chunk repeats (the borrow is of `ids` only).
    fn head<'a>(&self, ids: &'a (String, String)) -> ChunkHead<'a> {
        ChunkHead::new(&ids.0, &ids.1, &self.context)
    }

    /// Sends a candidate's first chunk (the role) when it has not had one, and returns how
    /// many tool calls it has had.
    fn start(
        &mut self,
        index: u32,
        ids: &(String, String),
        out: &mut Vec<u8>,
    ) -> Result<u32, StreamError> {
        if let Some((_, calls)) = self.candidates.iter().find(|(i, _)| *i == index) {
            return Ok(*calls);
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            return Err(StreamError("Gemini sent too many candidates".into()));
        }
        self.candidates.push((index, 0));
        self.head(ids).push(out, index, Delta::role(), None);
        Ok(0)
    }

    fn candidate(
        &mut self,
        candidate: &Candidate<'_>,
        ids: &(String, String),
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        let index = candidate.index.unwrap_or(0);
        let mut calls = self.start(index, ids, out)?;
        let head = self.head(ids);
        if let Some(text) = candidate.text() {
            head.push(out, index, Delta::content(&text), None);
        }
        for (call, signature) in candidate.calls() {
            let id = call.openai_id(signature);
            let arguments = call.arguments();
            let call = ToolCallDelta::start(calls, &id, &call.name, &arguments);
            head.push(out, index, Delta::tool_call(call), None);
            calls += 1;
        }
        if let Some(slot) = self.candidates.iter_mut().find(|(i, _)| *i == index) {
            slot.1 = calls;
        }
        if let Some(reason) = &candidate.finish_reason {
            let finish = super::finish_reason(reason, calls > 0);
            head.push(out, index, Delta::default(), Some(finish));
            self.finished = true;
        }
        Ok(())
    }

    fn blocked(
        &mut self,
        reason: &str,
        ids: &(String, String),
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        self.start(0, ids, out)?;
        let refusal = super::blocked_message(reason);
        let delta = Delta::refusal(&refusal);
        self.head(ids).push(out, 0, delta, Some("content_filter"));
        self.finished = true;
        Ok(())
    }

    /// The event's blocked prompt and candidates.
    fn candidates_of(
        &mut self,
        event: &GenerateContentResponse<'_>,
        ids: &(String, String),
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        if let Some(reason) = event.blocked() {
            self.blocked(reason, ids, out)?;
        }
        for candidate in &event.candidates {
            self.candidate(candidate, ids, out)?;
        }
        Ok(())
    }
}

impl StreamTranslator for ChatStream {
    fn event(&mut self, _name: &str, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if data.trim_ascii().is_empty() {
            return Ok(());
        }
        let event: GenerateContentResponse<'_> = serde_json::from_slice(data)
            .map_err(|_| StreamError("Gemini sent a stream event that is not an answer".into()))?;
        if let Some(error) = &event.error {
            let message = error
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("Gemini ended the stream with an error");
            return Err(StreamError(format!("Gemini stream error: {message}")));
        }
        let ids = match self.ids.take() {
            Some(ids) => ids,
            None => (event.completion_id(), event.model(&self.context).to_owned()),
        };
        if let Some(usage) = event.usage_metadata {
            self.usage = Some(usage);
        }
        // Kept before anything can fail: every chunk of the stream has the same id and model.
        let result = self.candidates_of(&event, &ids, out);
        self.ids = Some(ids);
        result
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.done {
            return Ok(());
        }
        if !self.finished {
            return Err(StreamError(
                "the Gemini stream ended before a finish reason".into(),
            ));
        }
        if let Some(ids) = &self.ids {
            let usage = self.usage.unwrap_or_default().openai();
            self.head(ids).push_usage(out, &usage);
        }
        openai::push_done(out);
        self.done = true;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::provider::dialect::gemini::call_id;
    use serde_json::{Value, json};

    fn stream(include_usage: bool) -> ChatStream {
        let mut context = ReplyContext::new("gemini-2.5-flash");
        context.created = 42;
        context.include_usage = include_usage;
        ChatStream::new(context)
    }

    /// Feeds `events`, then ends the stream; the frames, and `finish`'s verdict.
    fn run(
        translator: &mut ChatStream,
        events: &[Value],
    ) -> (Vec<Value>, bool, Result<(), StreamError>) {
        let mut out = Vec::new();
        for event in events {
            translator
                .event("", &serde_json::to_vec(event).unwrap(), &mut out)
                .unwrap();
        }
        let finished = translator.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let mut frames = Vec::new();
        let mut done = false;
        for frame in text.split_terminator("\n\n") {
            let data = frame.strip_prefix("data: ").unwrap();
            assert!(!done, "nothing after [DONE]");
            if data == "[DONE]" {
                done = true;
            } else {
                frames.push(serde_json::from_str(data).unwrap());
            }
        }
        (frames, done, finished)
    }

    fn text_event(text: &str) -> Value {
        json!({
            "candidates": [{ "content": { "role": "model", "parts": [{ "text": text }] } }],
            "usageMetadata": { "promptTokenCount": 5, "totalTokenCount": 5 },
            "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-1",
        })
    }

    #[test]
    fn text_stream_with_usage() {
        let mut last = text_event("!");
        last["candidates"][0]["finishReason"] = json!("STOP");
        last["usageMetadata"] = json!({
            "promptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": 2,
            "cachedContentTokenCount": 1, "totalTokenCount": 10,
        });
        let mut translator = stream(true);
        let (frames, done, finished) = run(
            &mut translator,
            &[text_event("Hel"), text_event("lo"), last],
        );
        finished.unwrap();
        assert!(done);
        let chunk = |choices: Value, usage: Value| {
            json!({
                "id": "chatcmpl-resp-1", "object": "chat.completion.chunk", "created": 42,
                "model": "gemini-2.5-flash", "choices": choices, "usage": usage,
            })
        };
        let choice = |delta: Value, finish: Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);
        assert_eq!(
            frames,
            vec![
                chunk(
                    choice(json!({ "role": "assistant", "content": "" }), Value::Null),
                    Value::Null
                ),
                chunk(
                    choice(json!({ "content": "Hel" }), Value::Null),
                    Value::Null
                ),
                chunk(choice(json!({ "content": "lo" }), Value::Null), Value::Null),
                chunk(choice(json!({ "content": "!" }), Value::Null), Value::Null),
                chunk(choice(json!({}), json!("stop")), Value::Null),
                chunk(
                    json!([]),
                    json!({
                        "prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10,
                        "prompt_tokens_details": { "cached_tokens": 1 },
                        "completion_tokens_details": { "reasoning_tokens": 2 },
                    })
                ),
            ]
        );
        // [DONE] exactly once.
        let mut out = Vec::new();
        translator.finish(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn two_function_calls_without_usage() {
        let events = [
            json!({ "candidates": [{ "content": { "parts": [{ "text": "Checking." }] } }] }),
            json!({ "candidates": [{ "content": { "parts": [
                { "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "c2ln" },
            ]}}]}),
            json!({ "candidates": [{ "content": { "parts": [
                { "functionCall": { "id": "g2", "name": "time", "args": {} } },
            ]}, "finishReason": "STOP" }]}),
        ];
        let (frames, done, finished) = run(&mut stream(false), &events);
        finished.unwrap();
        assert!(done);
        assert_eq!(frames.len(), 5);
        let id = frames[0]["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-"));
        for frame in &frames {
            assert_eq!(frame["id"], id);
            assert_eq!(frame["model"], "gemini-2.5-flash");
            assert_eq!(frame["created"], 42);
            assert!(frame.get("usage").is_none());
        }
        assert_eq!(
            frames[1]["choices"][0]["delta"],
            json!({ "content": "Checking." })
        );
        let first = &frames[2]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["index"], 0);
        assert_eq!(first["type"], "function");
        assert_eq!(
            first["function"],
            json!({ "name": "weather", "arguments": "{\"city\":\"Paris\"}" })
        );
        let carried = call_id::decode(first["id"].as_str().unwrap());
        assert_eq!(carried.signature.as_deref(), Some("c2ln"));
        let second = &frames[3]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(second["index"], 1);
        assert_eq!(
            second["function"],
            json!({ "name": "time", "arguments": "{}" })
        );
        assert_eq!(
            call_id::decode(second["id"].as_str().unwrap())
                .id
                .as_deref(),
            Some("g2")
        );
        assert_eq!(frames[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(frames[4]["choices"][0]["delta"], json!({}));
    }

    #[test]
    fn several_candidates_keep_their_own_index() {
        let events = [json!({ "candidates": [
            { "content": { "parts": [{ "text": "A" }] }, "finishReason": "MAX_TOKENS" },
            { "content": { "parts": [{ "functionCall": { "name": "f" } }] }, "index": 1, "finishReason": "STOP" },
        ]})];
        let (frames, _, finished) = run(&mut stream(false), &events);
        finished.unwrap();
        let picks: Vec<(u64, Value)> = frames
            .iter()
            .map(|f| {
                (
                    f["choices"][0]["index"].as_u64().unwrap(),
                    f["choices"][0]["finish_reason"].clone(),
                )
            })
            .collect();
        assert_eq!(
            picks,
            vec![
                (0, Value::Null),
                (0, Value::Null),
                (0, json!("length")),
                (1, Value::Null),
                (1, Value::Null),
                (1, json!("tool_calls")),
            ]
        );
        assert_eq!(
            frames[4]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
    }

    #[test]
    fn blocked_prompt() {
        let events = [json!({ "promptFeedback": { "blockReason": "PROHIBITED_CONTENT" } })];
        let (frames, done, finished) = run(&mut stream(true), &events);
        finished.unwrap();
        assert!(done);
        assert_eq!(frames[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(frames[1]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(
            frames[1]["choices"][0]["delta"]["refusal"],
            "The prompt was blocked by Gemini (PROHIBITED_CONTENT)."
        );
        assert_eq!(frames[2]["choices"], json!([]));
    }

    #[test]
    fn a_cut_stream_is_an_error() {
        let (frames, done, finished) = run(&mut stream(true), &[text_event("Hel")]);
        assert!(finished.is_err());
        assert!(!done);
        assert_eq!(frames.len(), 2);
        let (_, done, finished) = run(&mut stream(false), &[]);
        assert!(finished.is_err() && !done);
    }

    #[test]
    fn error_events_and_garbage_are_errors() {
        let mut translator = stream(false);
        let mut out = Vec::new();
        translator.event("", b"", &mut out).unwrap();
        translator.event("", b"  \n", &mut out).unwrap();
        assert!(out.is_empty());
        let error = br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#;
        let failure = translator.event("", error, &mut out).unwrap_err();
        assert!(
            failure.to_string().contains("The model is overloaded."),
            "{failure}"
        );
        assert!(translator.event("", b"not json", &mut out).is_err());
        assert!(translator.event("", b"[1]", &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn candidates_are_bounded() {
        let mut translator = stream(false);
        let mut out = Vec::new();
        let candidates: Vec<Value> = (0..1000)
            .map(|index| json!({ "index": index, "content": { "parts": [{ "text": "x" }] } }))
            .collect();
        let event = serde_json::to_vec(&json!({ "candidates": candidates })).unwrap();
        assert!(translator.event("", &event, &mut out).is_err());
        assert!(translator.candidates.len() <= MAX_CANDIDATES);
    }
}

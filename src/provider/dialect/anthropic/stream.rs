//! Messages stream events -> OpenAI `chat.completion.chunk` frames, one event at a time.
//!
//! The events (`message_start`, `content_block_start` / `_delta` / `_stop`, `message_delta`,
//! `message_stop`, `ping`, `error`) are translated as each arrives; the state kept is the
//! message's id and model, the open blocks' kinds, the tool-call count and the usage. Event
//! kinds and delta types this translation does not know are ignored, as Anthropic's
//! versioning policy asks of clients.

use std::borrow::Cow;

use serde::Deserialize;

use super::response::{ContentBlock, Usage, finish_reason};
use crate::provider::dialect::openai::{self, ChunkHead, Delta, ToolCallDelta};
use crate::provider::dialect::{ReplyContext, StreamError, StreamTranslator};

/// A tool input that streamed no piece: the empty object, as the whole answer has it.
const EMPTY_INPUT: &str = "{}";

/// Translates an Anthropic Messages stream into OpenAI chat completion chunks.
#[derive(Debug)]
pub(crate) struct ChatStream {
    context: ReplyContext,
    /// `chatcmpl-` + the message id, from `message_start`.
    id: String,
    /// The answer's model, from `message_start` (else the model asked for).
    model: String,
    state: State,
    /// The open content blocks (at most [`MAX_OPEN_BLOCKS`]).
    blocks: Vec<OpenBlock>,
    /// Client tool calls started so far: the next one's OpenAI `index`.
    tool_calls: u32,
    usage: Usage,
}

/// Where the stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before `message_start`.
    Waiting,
    /// Between `message_start` and `message_stop`.
    Open,
    /// After `message_stop`: `[DONE]` is written.
    Done,
}

/// The most content blocks open at once. Anthropic streams one block at a time; an upstream
/// that opens blocks and never closes them must not grow our memory.
const MAX_OPEN_BLOCKS: usize = 64;

/// A content block between its start and its stop.
#[derive(Debug)]
struct OpenBlock {
    /// Anthropic's block index.
    index: u64,
    kind: BlockKind,
    /// A piece of a tool's input was sent: without one, the stop sends `{}` (the input of a
    /// call without arguments streams no piece, and `""` is no JSON for the client to parse).
    has_input: bool,
}

/// What an open content block turns into.
#[derive(Clone, Copy, Debug)]
enum BlockKind {
    /// Text: content deltas.
    Text,
    /// A client tool call with this OpenAI `index`: tool-call deltas.
    Tool(u32),
    /// The forced response-format tool: its input pieces are content deltas.
    Json,
    /// Thinking and anything else: nothing.
    Ignored,
}

impl ChatStream {
    /// A translator for the answer to the request `context` was made for.
    pub(crate) fn new(context: ReplyContext) -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            state: State::Waiting,
            blocks: Vec::new(),
            tool_calls: 0,
            usage: Usage::default(),
            context,
        }
    }

    fn message_start(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.state != State::Waiting {
            return Err(StreamError(
                "Anthropic sent a second message_start".to_owned(),
            ));
        }
        let event: MessageStart<'_> = parse("message_start", data)?;
        self.id = openai::completion_id(Some(&event.message.id));
        self.model = match event.message.model {
            Some(model) => model.into_owned(),
            None => self.context.model.clone(),
        };
        self.usage = event.message.usage;
        self.state = State::Open;
        self.push(out, Delta::role(), None);
        Ok(())
    }

    fn block_start(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.require_open("content_block_start")?;
        let event: BlockEvent<'_> = parse("content_block_start", data)?;
        let Some(block) = event.content_block else {
            return Err(invalid("content_block_start"));
        };
        if self.blocks.iter().any(|b| b.index == event.index) {
            return Err(StreamError(format!(
                "Anthropic started content block {} twice",
                event.index
            )));
        }
        if self.blocks.len() >= MAX_OPEN_BLOCKS {
            return Err(StreamError(
                "Anthropic opened too many content blocks at once".to_owned(),
            ));
        }
        let kind = match block.kind.as_ref() {
            // With a forced response-format tool, its JSON is the content: text beside it
            // would break the JSON (the whole answer leaves it out too).
            "text" if self.context.json_tool.is_some() => BlockKind::Ignored,
            "text" => {
                if let Some(text) = block.text.as_deref().filter(|t| !t.is_empty()) {
                    self.push_content(out, text);
                }
                BlockKind::Text
            }
            "tool_use"
                if block.name.is_some()
                    && block.name.as_deref() == self.context.json_tool.as_deref() =>
            {
                BlockKind::Json
            }
            "tool_use" => {
                let (Some(id), Some(name)) = (block.id.as_deref(), block.name.as_deref()) else {
                    return Err(invalid("content_block_start"));
                };
                let index = self.tool_calls;
                self.tool_calls += 1;
                self.push_tool_call(out, ToolCallDelta::start(index, id, name, ""));
                BlockKind::Tool(index)
            }
            _ => BlockKind::Ignored,
        };
        self.blocks.push(OpenBlock {
            index: event.index,
            kind,
            has_input: false,
        });
        Ok(())
    }

    fn block_delta(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.require_open("content_block_delta")?;
        let event: BlockEvent<'_> = parse("content_block_delta", data)?;
        let Some(delta) = event.delta else {
            return Err(invalid("content_block_delta"));
        };
        let Some(block) = self.blocks.iter_mut().find(|b| b.index == event.index) else {
            return Err(StreamError(
                "Anthropic sent a delta for a content block it did not start".to_owned(),
            ));
        };
        let kind = block.kind;
        if delta.kind == "input_json_delta"
            && delta.partial_json.as_deref().is_some_and(|p| !p.is_empty())
        {
            block.has_input = true;
        }
        match (delta.kind.as_ref(), kind) {
            ("text_delta", BlockKind::Text) => {
                if let Some(text) = delta.text.as_deref().filter(|t| !t.is_empty()) {
                    self.push_content(out, text);
                }
            }
            ("input_json_delta", BlockKind::Tool(index)) => {
                if let Some(piece) = delta.partial_json.as_deref().filter(|p| !p.is_empty()) {
                    self.push_tool_call(out, ToolCallDelta::arguments(index, piece));
                }
            }
            ("input_json_delta", BlockKind::Json) => {
                if let Some(piece) = delta.partial_json.as_deref().filter(|p| !p.is_empty()) {
                    self.push_content(out, piece);
                }
            }
            // thinking_delta, signature_delta, citations_delta, later additions.
            _ => {}
        }
        Ok(())
    }

    fn block_stop(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.require_open("content_block_stop")?;
        let event: BlockStop = parse("content_block_stop", data)?;
        let Some(at) = self.blocks.iter().position(|b| b.index == event.index) else {
            return Ok(());
        };
        let block = self.blocks.swap_remove(at);
        if block.has_input {
            return Ok(());
        }
        match block.kind {
            BlockKind::Tool(index) => {
                self.push_tool_call(out, ToolCallDelta::arguments(index, EMPTY_INPUT));
            }
            BlockKind::Json => self.push_content(out, EMPTY_INPUT),
            BlockKind::Text | BlockKind::Ignored => {}
        }
        Ok(())
    }

    fn message_delta(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.require_open("message_delta")?;
        let event: MessageDelta<'_> = parse("message_delta", data)?;
        if let Some(usage) = event.usage {
            self.usage.update(usage);
        }
        let finish = finish_reason(event.delta.stop_reason.as_deref(), self.tool_calls == 0);
        self.push(out, Delta::default(), Some(finish));
        Ok(())
    }

    fn message_stop(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.require_open("message_stop")?;
        self.state = State::Done;
        self.head().push_usage(out, &self.usage.openai());
        openai::push_done(out);
        Ok(())
    }

    fn require_open(&self, name: &str) -> Result<(), StreamError> {
        match self.state {
            State::Open => Ok(()),
            _ => Err(StreamError(format!(
                "Anthropic sent {name} outside of a message"
            ))),
        }
    }

    fn push_content(&self, out: &mut Vec<u8>, text: &str) {
        self.push(out, Delta::content(text), None);
    }

    fn push_tool_call(&self, out: &mut Vec<u8>, call: ToolCallDelta<'_>) {
        self.push(out, Delta::tool_call(call), None);
    }

    /// Writes a chunk with the one choice.
    fn push(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish_reason: Option<&'static str>) {
        self.head().push(out, 0, delta, finish_reason);
    }

    fn head(&self) -> ChunkHead<'_> {
        ChunkHead::new(&self.id, &self.model, &self.context)
    }
}

impl StreamTranslator for ChatStream {
    fn event(&mut self, name: &str, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.state == State::Done {
            return Ok(());
        }
        // Every event's data repeats its name as `type`: use it when the `event:` line is
        // missing.
        let typed;
        let name = if name.is_empty() {
            typed = serde_json::from_slice::<Typed<'_>>(data).ok();
            typed.as_ref().map_or("", |t| t.kind.as_ref())
        } else {
            name
        };
        match name {
            "message_start" => self.message_start(data, out),
            "content_block_start" => self.block_start(data, out),
            "content_block_delta" => self.block_delta(data, out),
            "content_block_stop" => self.block_stop(data, out),
            "message_delta" => self.message_delta(data, out),
            "message_stop" => self.message_stop(out),
            "error" => Err(error_event(data)),
            // `ping`, and event kinds added later.
            _ => Ok(()),
        }
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamError> {
        match self.state {
            State::Done => Ok(()),
            _ => Err(StreamError(
                "Anthropic's stream ended before message_stop".to_owned(),
            )),
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(name: &str, data: &'a [u8]) -> Result<T, StreamError> {
    serde_json::from_slice(data).map_err(|_| invalid(name))
}

fn invalid(name: &str) -> StreamError {
    StreamError(format!("Anthropic sent an invalid {name} event"))
}

/// An `error` event's message.
fn error_event(data: &[u8]) -> StreamError {
    let message = serde_json::from_slice::<ErrorEvent<'_>>(data)
        .ok()
        .and_then(|e| e.error.message)
        .filter(|m| !m.is_empty());
    StreamError(match message {
        Some(message) => message.into_owned(),
        None => "Anthropic's stream failed".to_owned(),
    })
}

/// Any event's `type`.
#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
}

/// `message_start`.
#[derive(Deserialize)]
struct MessageStart<'a> {
    #[serde(borrow)]
    message: StartMessage<'a>,
}

/// The message skeleton of `message_start`.
#[derive(Deserialize)]
struct StartMessage<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Usage,
}

/// `content_block_start` or `content_block_delta`: the block index, and the block or the
/// delta.
#[derive(Deserialize)]
struct BlockEvent<'a> {
    index: u64,
    #[serde(borrow, default)]
    content_block: Option<ContentBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<ContentBlock<'a>>,
}

/// `content_block_stop`.
#[derive(Deserialize)]
struct BlockStop {
    index: u64,
}

/// `message_delta`.
#[derive(Deserialize)]
struct MessageDelta<'a> {
    #[serde(borrow)]
    delta: MessageDeltaBody<'a>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// `message_delta.delta`.
#[derive(Deserialize)]
struct MessageDeltaBody<'a> {
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

/// `error`.
#[derive(Deserialize)]
struct ErrorEvent<'a> {
    #[serde(borrow)]
    error: ErrorDetail<'a>,
}

/// `error.error`.
#[derive(Deserialize)]
struct ErrorDetail<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn context(include_usage: bool, json_tool: Option<&str>) -> ReplyContext {
        let mut context = ReplyContext::new("claude-haiku-4-5");
        context.created = 1_700_000_000;
        context.include_usage = include_usage;
        context.json_tool = json_tool.map(str::to_owned);
        context
    }

    /// Feeds `events` (name, data); returns the frames (`[DONE]` as the string) and the
    /// first error.
    fn run(stream: &mut ChatStream, events: &[(&str, Value)]) -> (Vec<Value>, Option<StreamError>) {
        let mut out = Vec::new();
        let mut error = None;
        for (name, data) in events {
            let data = serde_json::to_vec(data).unwrap();
            if let Err(e) = stream.event(name, &data, &mut out) {
                error = Some(e);
                break;
            }
        }
        (frames(&out), error)
    }

    fn frames(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
        text.split_terminator("\n\n")
            .map(|frame| {
                let data = frame.strip_prefix("data: ").unwrap();
                if data == "[DONE]" {
                    Value::from("[DONE]")
                } else {
                    serde_json::from_str(data).unwrap()
                }
            })
            .collect()
    }

    fn message_start() -> (&'static str, Value) {
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "content": [],
                "model": "claude-haiku-4-5-20251001", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10, "output_tokens": 1},
            }}),
        )
    }

    fn block_start(index: u64, block: Value) -> (&'static str, Value) {
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        )
    }

    fn delta(index: u64, delta: Value) -> (&'static str, Value) {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }

    fn text(index: u64, text: &str) -> (&'static str, Value) {
        delta(index, json!({"type": "text_delta", "text": text}))
    }

    fn json_piece(index: u64, piece: &str) -> (&'static str, Value) {
        delta(
            index,
            json!({"type": "input_json_delta", "partial_json": piece}),
        )
    }

    fn block_stop(index: u64) -> (&'static str, Value) {
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )
    }

    fn message_delta(stop_reason: &str) -> (&'static str, Value) {
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 15}}),
        )
    }

    fn message_stop() -> (&'static str, Value) {
        ("message_stop", json!({"type": "message_stop"}))
    }

    fn ping() -> (&'static str, Value) {
        ("ping", json!({"type": "ping"}))
    }

    fn deltas(frames: &[Value]) -> Vec<Value> {
        frames
            .iter()
            .filter(|f| f.is_object())
            .filter_map(|f| f["choices"].get(0).map(|c| c["delta"].clone()))
            .collect()
    }

    fn tool_use(id: &str, name: &str) -> Value {
        json!({"type": "tool_use", "id": id, "name": name, "input": {}})
    }

    #[test]
    fn text_stream() {
        let mut stream = ChatStream::new(context(false, None));
        let (frames, error) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, json!({"type": "text", "text": ""})),
                ping(),
                text(0, "Hello"),
                text(0, ", wor\"ld"),
                block_stop(0),
                message_delta("end_turn"),
                message_stop(),
            ],
        );
        assert!(error.is_none());
        assert_eq!(
            frames[0],
            json!({
                "id": "chatcmpl-msg_1",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "claude-haiku-4-5-20251001",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}],
            })
        );
        assert_eq!(
            deltas(&frames),
            [
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Hello"}),
                json!({"content": ", wor\"ld"}),
                json!({}),
            ]
        );
        assert_eq!(frames[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[4], "[DONE]");
        for frame in &frames[..4] {
            assert_eq!(frame["id"], "chatcmpl-msg_1");
            assert_eq!(frame["model"], "claude-haiku-4-5-20251001");
            assert_eq!(frame["created"], 1_700_000_000);
            assert_eq!(frame.get("usage"), None);
        }
        let mut out = Vec::new();
        stream.finish(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn usage_chunk_when_asked() {
        let mut stream = ChatStream::new(context(true, None));
        let (frames, error) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, json!({"type": "text", "text": ""})),
                text(0, "Hi"),
                block_stop(0),
                message_delta("max_tokens"),
                message_stop(),
            ],
        );
        assert!(error.is_none());
        let n = frames.len();
        assert_eq!(frames[n - 1], "[DONE]");
        assert_eq!(frames[n - 3]["choices"][0]["finish_reason"], "length");
        let usage = &frames[n - 2];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["id"], "chatcmpl-msg_1");
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 35, "completion_tokens": 15, "total_tokens": 50, "prompt_tokens_details": {"cached_tokens": 10}})
        );
        for frame in &frames[..n - 2] {
            assert_eq!(frame["usage"], Value::Null);
            assert!(frame.as_object().unwrap().contains_key("usage"));
        }
    }

    #[test]
    fn parallel_tool_calls_stream_in_pieces() {
        let mut stream = ChatStream::new(context(false, None));
        let (frames, error) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, json!({"type": "text", "text": ""})),
                text(0, "Checking both."),
                block_stop(0),
                block_start(1, tool_use("toolu_a", "weather")),
                json_piece(1, ""),
                json_piece(1, "{\"ci"),
                json_piece(1, "ty\": \"Par"),
                json_piece(1, "is\"}"),
                block_stop(1),
                block_start(2, tool_use("toolu_b", "weather")),
                json_piece(2, "{\"city\":"),
                ping(),
                json_piece(2, " \"Rome\"}"),
                block_stop(2),
                message_delta("tool_use"),
                message_stop(),
            ],
        );
        assert!(error.is_none());
        let deltas = deltas(&frames);
        assert_eq!(deltas[1], json!({"content": "Checking both."}));
        assert_eq!(
            deltas[2],
            json!({"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]})
        );
        assert_eq!(
            deltas[3],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]})
        );
        // Reassemble each call's arguments by OpenAI index, as the SDKs do.
        let mut arguments = [String::new(), String::new()];
        for delta in &deltas {
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = usize::try_from(call["index"].as_u64().unwrap()).unwrap();
                arguments[index].push_str(call["function"]["arguments"].as_str().unwrap());
            }
        }
        assert_eq!(
            serde_json::from_str::<Value>(&arguments[0]).unwrap(),
            json!({"city": "Paris"})
        );
        assert_eq!(
            serde_json::from_str::<Value>(&arguments[1]).unwrap(),
            json!({"city": "Rome"})
        );
        assert!(deltas.contains(&json!({"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "weather", "arguments": ""}}]})));
        let last = &frames[frames.len() - 2];
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(frames[frames.len() - 1], "[DONE]");
    }

    #[test]
    fn forced_json_tool_streams_as_content() {
        let mut stream = ChatStream::new(context(false, Some("json_output")));
        let (frames, error) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, json!({"type": "text", "text": ""})),
                text(0, "Here you go:"),
                block_stop(0),
                block_start(1, tool_use("toolu_j", "json_output")),
                json_piece(1, "{\"answer\""),
                json_piece(1, ": 42}"),
                block_stop(1),
                message_delta("tool_use"),
                message_stop(),
            ],
        );
        assert!(error.is_none());
        assert_eq!(
            deltas(&frames),
            [
                json!({"role": "assistant", "content": ""}),
                json!({"content": "{\"answer\""}),
                json!({"content": ": 42}"}),
                json!({}),
            ]
        );
        assert_eq!(frames[3]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn thinking_and_unknown_events_are_ignored() {
        let mut stream = ChatStream::new(context(false, None));
        let (frames, error) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, json!({"type": "thinking", "thinking": ""})),
                delta(
                    0,
                    json!({"type": "thinking_delta", "thinking": "Let me think"}),
                ),
                delta(0, json!({"type": "signature_delta", "signature": "sig"})),
                block_stop(0),
                ("some_future_event", json!({"type": "some_future_event"})),
                block_start(1, json!({"type": "text", "text": ""})),
                delta(1, json!({"type": "citations_delta", "citation": {}})),
                text(1, "Done"),
                block_stop(1),
                message_delta("end_turn"),
                message_stop(),
            ],
        );
        assert!(error.is_none());
        assert_eq!(
            deltas(&frames),
            [
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Done"}),
                json!({})
            ]
        );
    }

    #[test]
    fn event_name_from_data_when_absent() {
        let mut stream = ChatStream::new(context(false, None));
        let events: Vec<_> = [
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            text(0, "x"),
        ]
        .into_iter()
        .map(|(_, data)| ("", data))
        .collect();
        let (frames, error) = run(&mut stream, &events);
        assert!(error.is_none());
        assert_eq!(
            deltas(&frames),
            [
                json!({"role": "assistant", "content": ""}),
                json!({"content": "x"})
            ]
        );
    }

    #[test]
    fn error_event_fails_the_stream() {
        let mut stream = ChatStream::new(context(false, None));
        let (frames, error) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, json!({"type": "text", "text": ""})),
                text(0, "Hel"),
                (
                    "error",
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                ),
            ],
        );
        assert_eq!(error.unwrap().0, "Overloaded");
        assert_eq!(frames.len(), 2);
        assert!(stream.finish(&mut Vec::new()).is_err());
    }

    #[test]
    fn stream_cut_before_message_stop() {
        let mut stream = ChatStream::new(context(true, None));
        let (frames, error) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, json!({"type": "text", "text": ""})),
                text(0, "Hel"),
            ],
        );
        assert!(error.is_none());
        let mut out = Vec::new();
        assert!(stream.finish(&mut out).is_err());
        assert!(out.is_empty());
        assert!(!frames.contains(&Value::from("[DONE]")));
    }

    #[test]
    fn done_is_written_once() {
        let mut stream = ChatStream::new(context(false, None));
        let (frames, _) = run(
            &mut stream,
            &[
                message_start(),
                message_delta("end_turn"),
                message_stop(),
                message_stop(),
                ping(),
            ],
        );
        assert_eq!(frames.iter().filter(|f| *f == "[DONE]").count(), 1);
        let mut out = Vec::new();
        stream.finish(&mut out).unwrap();
        stream.finish(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn broken_sequences_are_errors() {
        let cases: [Vec<(&str, Value)>; 4] = [
            vec![text(0, "x")],
            vec![message_start(), text(3, "x")],
            vec![message_start(), message_start()],
            vec![
                message_start(),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta"}),
                ),
            ],
        ];
        for events in cases {
            let mut stream = ChatStream::new(context(false, None));
            let (_, error) = run(&mut stream, &events);
            assert!(error.is_some(), "{events:?}");
        }
    }

    #[test]
    fn a_tool_call_without_input_pieces_gets_empty_object_arguments() {
        let mut stream = ChatStream::new(context(false, None));
        let (frames, error) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, tool_use("toolu_1", "now")),
                json_piece(0, ""),
                block_stop(0),
                block_start(1, tool_use("toolu_2", "weather")),
                json_piece(1, "{\"city\": \"Paris\"}"),
                block_stop(1),
                message_delta("tool_use"),
                message_stop(),
            ],
        );
        assert!(error.is_none());
        let arguments = |index: u64| -> String {
            deltas(&frames)
                .iter()
                .filter_map(|d| d.get("tool_calls"))
                .filter(|calls| calls[0]["index"] == index)
                .filter_map(|calls| calls[0]["function"]["arguments"].as_str())
                .collect()
        };
        assert_eq!(arguments(0), "{}");
        assert_eq!(arguments(1), "{\"city\": \"Paris\"}");
        // The same for the forced response-format tool: its content is `{}`.
        let mut stream = ChatStream::new(context(false, Some("json_output")));
        let (frames, _) = run(
            &mut stream,
            &[
                message_start(),
                block_start(0, tool_use("toolu_1", "json_output")),
                block_stop(0),
                message_delta("tool_use"),
                message_stop(),
            ],
        );
        let content: String = deltas(&frames)
            .iter()
            .filter_map(|d| d["content"].as_str())
            .collect();
        assert_eq!(content, "{}");
    }

    #[test]
    fn open_blocks_are_bounded() {
        let mut stream = ChatStream::new(context(false, None));
        let twice = [
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            block_start(0, json!({"type": "text", "text": ""})),
        ];
        assert!(run(&mut stream, &twice).1.is_some());
        let mut stream = ChatStream::new(context(false, None));
        let mut events = vec![message_start()];
        events.extend((0..1000).map(|i| block_start(i, json!({"type": "thinking"}))));
        assert!(run(&mut stream, &events).1.is_some());
        assert!(stream.blocks.len() <= MAX_OPEN_BLOCKS);
    }
}

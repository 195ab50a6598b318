//! An incremental Server-Sent Events scanner that finds event boundaries across chunks and
//! observes usage, without changing a byte it forwards.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde::Deserialize;

use super::usage::Usage;
use super::{answer, injected};
use crate::observe::{AnswerDetails, FinishReasons};

/// An event larger than this is forwarded as it comes instead of being held whole (image
/// streams carry base64 partial images of a few MiB).
const MAX_HELD: usize = 8 * 1024 * 1024;

/// Splits a byte stream into whole events (any of `\n`, `\r\n`, `\r` line endings), observes
/// them, and queues the bytes to forward: complete events only, so a failure frame can always
/// be sent on an event boundary. Bytes that arrive on a boundary are forwarded as the same
/// `Bytes` (no copy); only the tail of a chunk that ends mid-event is held.
#[derive(Debug, Default)]
pub(crate) struct EventScanner {
    /// The start of an event whose end has not arrived.
    held: BytesMut,
    /// The last byte seen ended a line.
    line_start: bool,
    /// The last byte seen was `\r`: a `\n` right after it belongs to the same line ending.
    pending_cr: bool,
    /// The router asked for usage; the client did not: drop the `choices: []` usage chunk and
    /// the `"usage": null` member of every other chunk.
    strip_injected_usage: bool,
    /// Part of the current event was forwarded (it outgrew [`MAX_HELD`]): the client is not on
    /// an event boundary until it ends.
    partial_forwarded: bool,
    /// The last finished event was dropped (so a `\n` completing its `\r\n` goes too).
    last_stripped: bool,
    /// Events seen that carried data.
    events: u64,
    usage: Option<Usage>,
    /// The answer's id and model, from the first chunk that names them at its top level.
    id: Option<Arc<str>>,
    model: Option<Arc<str>>,
    /// The target's upstream model: the answer's `model` shares it when equal (no copy).
    upstream_model: Option<Arc<str>>,
    finish_reasons: FinishReasons,
}

/// How many data events are read for the answer's top-level `id` and `model` (chat and
/// completions chunks all carry them; Responses events nest them, read from the last event).
const HEAD_EVENTS: u64 = 2;

impl EventScanner {
    pub(crate) fn new(strip_injected_usage: bool) -> Self {
        Self {
            line_start: true,
            strip_injected_usage,
            ..Self::default()
        }
    }

    /// The usage seen so far (the last usage object of the stream).
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// What the stream said about its answer so far: usage, and (from its chunks) the
    /// answer's id, model and finish reasons.
    pub(crate) fn answer(&self) -> AnswerDetails {
        AnswerDetails {
            usage: self.usage,
            id: self.id.clone(),
            model: self.model.clone(),
            finish_reasons: self.finish_reasons,
        }
    }

    /// The model the request went to upstream: an answer naming the same one shares it.
    pub(crate) fn with_upstream_model(mut self, model: Option<Arc<str>>) -> Self {
        self.upstream_model = model;
        self
    }

    /// How many events with data have been seen.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Whether everything fed so far has been forwarded (the stream stands on a boundary).
    #[cfg(test)]
    pub(crate) fn at_boundary(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether the client has received part of an event it has not received the end of.
    pub(crate) fn mid_event(&self) -> bool {
        self.partial_forwarded
    }

    /// Scans `chunk`, pushing the bytes to forward onto `out`.
    pub(crate) fn feed(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) {
        // Where the event being scanned starts in `chunk` (0 when it started in `held`).
        let mut event_start = 0;
        // The start of the bytes of `chunk` not yet queued or held.
        let mut emit_from = 0;
        let mut pos = 0;
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &chunk[pos..]) {
            let at = pos + offset;
            if offset > 0 {
                // Content bytes since the last line ending.
                self.line_start = false;
                self.pending_cr = false;
            }
            let byte = chunk[at];
            if byte == b'\n' && self.pending_cr {
                // The `\n` of a `\r\n` already counted at its `\r`. When that `\r` ended an
                // event in the previous chunk, the `\n` belongs to that event, not the next.
                self.pending_cr = false;
                pos = at + 1;
                if at == event_start && self.held.is_empty() {
                    event_start = pos;
                    if self.last_stripped {
                        emit_from = pos;
                    }
                }
                continue;
            }
            self.pending_cr = byte == b'\r';
            pos = at + 1;
            if !self.line_start {
                self.line_start = true;
                continue;
            }
            // An empty line: the event ends here (with the `\n` of a `\r\n`, if present).
            let mut end = pos;
            if byte == b'\r' && chunk.get(end) == Some(&b'\n') {
                end += 1;
                self.pending_cr = false;
            }
            pos = end;
            let (event, from_held) = if self.held.is_empty() {
                (chunk.slice(event_start..end), false)
            } else {
                self.held.extend_from_slice(&chunk[emit_from..end]);
                (self.held.split().freeze(), true)
            };
            self.partial_forwarded = false;
            let verdict = self.observe(&event);
            self.last_stripped = matches!(verdict, Verdict::Drop);
            if from_held {
                // Assembled from held bytes: forward it (or what replaces it) alone.
                match verdict {
                    Verdict::Keep => out.push_back(event),
                    Verdict::Replace(bytes) => out.push_back(bytes),
                    Verdict::Drop => {}
                }
                emit_from = end;
            } else if !matches!(verdict, Verdict::Keep) {
                // The events before this one in the chunk go as they are; this one is dropped
                // or replaced.
                if event_start > emit_from {
                    out.push_back(chunk.slice(emit_from..event_start));
                }
                if let Verdict::Replace(bytes) = verdict {
                    out.push_back(bytes);
                }
                emit_from = end;
            }
            event_start = end;
        }
        if pos < chunk.len() {
            // Content after the last line ending.
            self.line_start = false;
            self.pending_cr = false;
        }
        // Forward the whole events; hold the start of an unfinished one.
        if event_start > emit_from {
            out.push_back(chunk.slice(emit_from..event_start));
        }
        let tail_from = event_start.max(emit_from);
        if tail_from < chunk.len() {
            self.held.extend_from_slice(&chunk[tail_from..]);
            if self.held.len() > MAX_HELD {
                // Not SSE as we know it, or an absurd event: stop holding, forward as is.
                out.push_back(self.held.split().freeze());
                self.partial_forwarded = true;
            }
        }
    }

    /// The stream ended: the bytes of an unfinished last event, if any, to forward as they are.
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        (!self.held.is_empty()).then(|| self.held.split().freeze())
    }

    /// Looks at one whole event: what to forward of it.
    fn observe(&mut self, event: &[u8]) -> Verdict {
        if !has_data_line(event) {
            return Verdict::Keep;
        }
        self.events += 1;
        if self.id.is_none() && self.events <= HEAD_EVENTS {
            self.read_head(event);
        }
        if answer::may_have_finish_reason(event) {
            self.read_finish_reasons(event);
        }
        // Most events carry no usage object (or `"usage":null`): skip them without copying.
        if !has_usage_object(event) {
            if self.strip_injected_usage && injected::may_have_null_usage(event) {
                // The key is there only because the router asked for usage.
                if let Some(without) = injected::without_null_usage(event) {
                    return Verdict::Replace(without);
                }
            }
            return Verdict::Keep;
        }
        let Some(data) = event_data(event) else {
            return Verdict::Keep;
        };
        #[derive(Deserialize)]
        struct Frame<'a> {
            #[serde(default)]
            usage: Option<Usage>,
            #[serde(default)]
            choices: Option<Vec<serde::de::IgnoredAny>>,
            #[serde(default, borrow)]
            response: Option<ResponseFrame<'a>>,
        }
        #[derive(Deserialize)]
        struct ResponseFrame<'a> {
            #[serde(default)]
            usage: Option<Usage>,
            #[serde(default, borrow)]
            id: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            model: Option<Cow<'a, str>>,
        }
        let Ok(frame) = serde_json::from_slice::<Frame<'_>>(&data) else {
            return Verdict::Keep;
        };
        if let Some(usage) = frame.usage {
            self.usage = Some(usage);
            if self.strip_injected_usage && frame.choices.is_some_and(|c| c.is_empty()) {
                self.events -= 1;
                return Verdict::Drop;
            }
        } else if let Some(response) = frame.response {
            // The Responses API's `response.completed`: its response names itself too.
            if let Some(usage) = response.usage {
                self.usage = Some(usage);
            }
            if self.id.is_none() {
                self.id = response.id.and_then(|id| answer::shared_text(&id, None));
            }
            if self.model.is_none() {
                let reuse = self.upstream_model.as_ref();
                self.model = response
                    .model
                    .and_then(|model| answer::shared_text(&model, reuse));
            }
        }
        Verdict::Keep
    }

    /// Reads the answer's `id` and `model` from a chunk's top level.
    fn read_head(&mut self, event: &[u8]) {
        let Some(data) = injected::single_data_line(event) else {
            return;
        };
        let Some(json) = event.get(data) else { return };
        let ([id, model], _) = answer::top_level_strings(json, [b"id", b"model"]);
        if let Some(id) = id {
            self.id = answer::shared_str(id, None);
            let reuse = self.upstream_model.as_ref();
            self.model = model.and_then(|model| answer::shared_str(model, reuse));
        }
    }

    /// Reads the finish reasons of a chunk's choices.
    fn read_finish_reasons(&mut self, event: &[u8]) {
        match injected::single_data_line(event).and_then(|data| event.get(data)) {
            Some(json) => answer::read_finish_reasons(json, &mut self.finish_reasons),
            None => {
                if let Some(data) = event_data(event) {
                    answer::read_finish_reasons(&data, &mut self.finish_reasons);
                }
            }
        }
    }
}

/// What to forward of one event.
enum Verdict {
    /// The event as it came.
    Keep,
    /// Nothing (the usage chunk the router asked for).
    Drop,
    /// These bytes instead (the event without the `"usage": null` the router caused).
    Replace(Bytes),
}

/// Whether some line of the event is a `data` field.
fn has_data_line(event: &[u8]) -> bool {
    event.split(|&b| b == b'\n' || b == b'\r').any(|line| {
        line.strip_prefix(b"data")
            .is_some_and(|rest| rest.first().is_none_or(|&b| b == b':'))
    })
}

/// Whether the event holds `"usage"` followed by an object (not `null`).
fn has_usage_object(event: &[u8]) -> bool {
    memmem::find_iter(event, b"\"usage\"").any(|at| {
        event[at + 7..]
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b':' | b'\n' | b'\r'))
            .is_some_and(|&b| b == b'{')
    })
}

/// The event's `data:` lines joined by `\n`, as the SSE spec defines its data; `None` without
/// data lines.
fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n' || b == b'\r') {
        let Some(rest) = line.strip_prefix(b"data") else {
            continue;
        };
        let value = match rest.first() {
            None => &[][..],
            Some(b':') => rest[1..].strip_prefix(b" ").unwrap_or(&rest[1..]),
            // `dataX: ...` is another field.
            Some(_) => continue,
        };
        match &mut data {
            None => data = Some(value.to_vec()),
            Some(buffer) => {
                buffer.push(b'\n');
                buffer.extend_from_slice(value);
            }
        }
    }
    data
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHAT: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"c\",\"choices\":[],\n",
        "data: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\r\r",
        "data: [DONE]\n\n",
    );

    fn run(stream: &[u8], splits: &[usize], strip: bool) -> (Vec<u8>, EventScanner) {
        let mut scanner = EventScanner::new(strip);
        let mut out = VecDeque::new();
        let mut last = 0;
        for &split in splits.iter().chain(std::iter::once(&stream.len())) {
            scanner.feed(Bytes::copy_from_slice(&stream[last..split]), &mut out);
            last = split;
        }
        let mut bytes: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        if let Some(rest) = scanner.finish() {
            bytes.extend_from_slice(&rest);
        }
        (bytes, scanner)
    }

    #[test]
    fn bytes_are_unchanged_and_usage_found_at_every_split() {
        let stream = CHAT.as_bytes();
        for a in 0..=stream.len() {
            let (bytes, scanner) = run(stream, &[a], false);
            assert_eq!(bytes, stream, "split at {a}");
            let usage = scanner.usage().unwrap();
            assert_eq!(
                (usage.input_tokens, usage.output_tokens, usage.total_tokens),
                (3, 2, 5)
            );
            assert_eq!(scanner.events(), 4, "split at {a}");
        }
        // Two splits, at every pair of offsets in a stride.
        for a in (0..stream.len()).step_by(7) {
            for b in (a..stream.len()).step_by(5) {
                let (bytes, _) = run(stream, &[a, b], false);
                assert_eq!(bytes, stream, "splits at {a}, {b}");
            }
        }
        // One byte at a time.
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(run(stream, &every, false).0, stream);
    }

    #[test]
    fn the_injected_usage_chunk_is_stripped_at_every_split() {
        let stream = CHAT.as_bytes();
        let usage_event = "data: {\"id\":\"c\",\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\r\r";
        // The usage chunk goes, and so does the `"usage":null` the request for it caused.
        let expected = CHAT.replace(usage_event, "").replace(",\"usage\":null", "");
        for a in 0..=stream.len() {
            let (bytes, scanner) = run(stream, &[a], true);
            assert_eq!(String::from_utf8(bytes).unwrap(), expected, "split at {a}");
            assert_eq!(scanner.usage().unwrap().total_tokens, 5);
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            String::from_utf8(run(stream, &every, true).0).unwrap(),
            expected
        );
    }

    #[test]
    fn whole_events_pass_without_copy_and_partial_tails_are_held() {
        let mut scanner = EventScanner::new(false);
        let mut out = VecDeque::new();
        let chunk = Bytes::from_static(b"data: a\n\ndata: b\n\ndata: c");
        scanner.feed(chunk.clone(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0], "data: a\n\ndata: b\n\n");
        assert_eq!(out[0].as_ptr(), chunk.as_ptr());
        assert!(!scanner.at_boundary());
        scanner.feed(Bytes::from_static(b"\n\n"), &mut out);
        assert_eq!(out[1], "data: c\n\n");
        assert!(scanner.at_boundary());
    }

    #[test]
    fn responses_usage_is_read_from_the_completed_event() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":1,",
            "\"response\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":4,\"total_tokens\":11}}}\n\n",
        );
        let (bytes, scanner) = run(stream.as_bytes(), &[50], true);
        assert_eq!(bytes, stream.as_bytes());
        assert_eq!(scanner.usage().unwrap().total_tokens, 11);
        assert_eq!(scanner.events(), 2);
    }

    #[test]
    fn the_answer_id_model_and_finish_reasons_are_read_at_every_split() {
        use crate::observe::FinishReason;
        let stream = concat!(
            "data: {\"id\":\"chatcmpl-9\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"finish_reason\\\":\\\"stop\\\"\"},\"finish_reason\":null},{\"index\":1,\"delta\":{},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-9\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"id\":\"chatcmpl-9\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let upstream: Arc<str> = Arc::from("gpt-4o-mini");
        for a in 0..=stream.len() {
            let mut scanner = EventScanner::new(false).with_upstream_model(Some(upstream.clone()));
            let mut out = VecDeque::new();
            scanner.feed(Bytes::copy_from_slice(&stream.as_bytes()[..a]), &mut out);
            scanner.feed(Bytes::copy_from_slice(&stream.as_bytes()[a..]), &mut out);
            let answer = scanner.answer();
            assert_eq!(answer.id.as_deref(), Some("chatcmpl-9"), "split at {a}");
            // The target's model is shared, not copied.
            assert!(Arc::ptr_eq(answer.model.as_ref().unwrap(), &upstream));
            let reasons: Vec<_> = answer.finish_reasons.iter().collect();
            assert_eq!(
                reasons,
                [FinishReason::Stop, FinishReason::Length],
                "split at {a}"
            );
            assert_eq!(answer.usage, None);
        }
    }

    #[test]
    fn a_responses_stream_names_its_answer_in_the_completed_event() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4.1\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hi\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,",
            "\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4.1-2025-04-14\",\"usage\":{\"input_tokens\":7,\"input_tokens_details\":{\"cached_tokens\":3},\"output_tokens\":4,\"total_tokens\":11}}}\n\n",
        );
        let (_, scanner) = run(stream.as_bytes(), &[], false);
        let answer = scanner.answer();
        assert_eq!(answer.id.as_deref(), Some("resp_1"));
        assert_eq!(answer.model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(answer.usage.unwrap().cached_tokens, 3);
        assert!(answer.finish_reasons.is_empty());
    }

    #[test]
    fn cheap_checks_skip_events_without_usage() {
        assert!(has_usage_object(
            b"data: {\"usage\": {\"total_tokens\":1}}\n\n"
        ));
        assert!(!has_usage_object(b"data: {\"usage\":null}\n\n"));
        assert!(!has_usage_object(b"data: {\"text\":\"usage\"}\n\n"));
        assert!(has_data_line(b"event: x\ndata\n\n"));
        assert!(!has_data_line(b": comment\ndataX: y\n\n"));
    }

    #[test]
    fn data_lines_follow_the_spec() {
        assert_eq!(event_data(b"data: a\ndata:b\ndata\n\n").unwrap(), b"a\nb\n");
        assert_eq!(event_data(b": comment\nevent: x\n\n"), None);
        assert_eq!(event_data(b"dataX: no\n\n"), None);
    }
}

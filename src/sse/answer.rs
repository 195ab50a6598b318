//! Reading what an answer says about itself (id, model, usage, finish reasons) as its bytes
//! pass, without parsing it whole or holding a byte back.
//!
//! A non-stream JSON answer of up to [`TAIL`] bytes (the usual case) is kept as it passes (its
//! frames are shared, not copied) and read once at its end: one scan of its top-level members
//! gives `id`, `model`, `usage` and the `choices`, whose `finish_reason`s are then looked up.
//! A longer answer is read at both ends: its first [`HEAD`] bytes give the top-level `id` and
//! `model` (chat and completions put them first), read before they leave the window of the
//! last [`TAIL`] bytes, which gives the `usage` object and the choices' `finish_reason`s (they
//! come last), and the `model` when the head had none (embeddings put it after `data`). In a
//! longer answer, a `usage` that starts before its last [`TAIL`] bytes (a huge last choice
//! after it, which no provider sends) is not found, nor a Responses API `model` that comes
//! after a long `instructions`.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::observe::{AnswerDetails, FinishReason, FinishReasons, RequestLog, Usage};

/// How many bytes at the start of a long answer are read for its `id` and `model`.
pub(crate) const HEAD: usize = 1024;
/// How many bytes at the end of an answer are kept for its usage and finish reasons (an
/// answer up to this long is read whole).
pub(crate) const TAIL: usize = 16 * 1024;
/// The most frames kept for the tail (past it, small neighbours are merged).
const TAIL_FRAMES: usize = 32;
/// The longest `id` or `model` recorded; a longer one is left out.
const MAX_NAME: usize = 256;

/// `"finish_reason"`, searched for with one searcher built once.
static FINISH_REASON: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"finish_reason\""));

/// Watches a non-stream JSON answer pass and records what it says when it ends.
pub(crate) struct AnswerWatch {
    log: RequestLog,
    /// The target's upstream model: the answer's `model` shares it when equal (no copy).
    upstream_model: Option<Arc<str>>,
    /// The head has been read (a long answer's, before its first bytes left the window).
    head_done: bool,
    /// The frames before the last one still needed for the last [`TAIL`] bytes (a one-frame
    /// answer never allocates it).
    tail: VecDeque<Bytes>,
    /// The last frame.
    last: Bytes,
    /// The bytes in `tail` and `last`.
    tail_len: usize,
    /// The bytes of the whole answer so far.
    total: usize,
    details: AnswerDetails,
}

impl AnswerWatch {
    pub(crate) fn new(log: RequestLog, upstream_model: Option<Arc<str>>) -> Self {
        Self {
            log,
            upstream_model,
            head_done: false,
            tail: VecDeque::new(),
            last: Bytes::new(),
            tail_len: 0,
            total: 0,
            details: AnswerDetails::default(),
        }
    }

    /// One frame of the answer passed.
    pub(crate) fn see(&mut self, frame: &Bytes) {
        if frame.is_empty() {
            return;
        }
        self.tail_len += frame.len();
        self.total += frame.len();
        let previous = std::mem::replace(&mut self.last, frame.clone());
        if !previous.is_empty() {
            self.tail.push_back(previous);
        }
        while let Some(oldest) = self.tail.front() {
            let without = self.tail_len - oldest.len();
            if without < TAIL {
                break;
            }
            if !self.head_done {
                // The first bytes are about to leave the window: read them now.
                self.read_head_from_window();
            }
            self.tail_len = without;
            self.tail.pop_front();
        }
        if self.tail.len() > TAIL_FRAMES {
            self.merge_smallest();
        }
    }

    /// Many small frames: merges the smallest pair of neighbours into one copy (a byte is
    /// copied a few times at most, as in a binary counter).
    fn merge_smallest(&mut self) {
        let pair_len = |i: usize| {
            self.tail.get(i).map_or(0, Bytes::len) + self.tail.get(i + 1).map_or(0, Bytes::len)
        };
        let Some(i) = (0..self.tail.len() - 1).min_by_key(|&i| pair_len(i)) else {
            return;
        };
        let (Some(first), Some(second)) = (self.tail.get(i), self.tail.get(i + 1)) else {
            return;
        };
        let mut merged = Vec::with_capacity(first.len() + second.len());
        merged.extend_from_slice(first);
        merged.extend_from_slice(second);
        self.tail.remove(i + 1);
        if let Some(slot) = self.tail.get_mut(i) {
            *slot = Bytes::from(merged);
        }
    }

    /// Reads `id` and `model` from the first [`HEAD`] bytes, all still in the window (nothing
    /// has left it yet): in place when the first frame holds them, else copied.
    fn read_head_from_window(&mut self) {
        self.head_done = true;
        let first = self.tail.front().unwrap_or(&self.last);
        let copied;
        let head: &[u8] = if first.len() >= HEAD {
            &first[..HEAD]
        } else {
            let mut bytes = Vec::with_capacity(HEAD);
            for frame in self.tail.iter().chain(std::iter::once(&self.last)) {
                let room = HEAD - bytes.len();
                bytes.extend_from_slice(&frame[..frame.len().min(room)]);
                if bytes.len() == HEAD {
                    break;
                }
            }
            copied = bytes;
            &copied
        };
        let ([id, model], _) = top_level_strings(head, [b"id", b"model"]);
        self.details.id = id.and_then(|raw| shared_str(raw, None));
        self.details.model = model.and_then(|raw| shared_str(raw, self.upstream_model.as_ref()));
    }

    /// The answer ended: records what it said.
    pub(crate) fn finish(mut self) {
        // Nothing left the window, and the answer is no longer than a tail: read it whole.
        let whole = self.tail_len == self.total && self.total <= TAIL;
        if whole && self.tail.is_empty() {
            // One frame (the usual case): read in place.
            let last = std::mem::take(&mut self.last);
            self.read_whole(&last);
        } else if whole {
            let mut bytes = Vec::with_capacity(self.total);
            for frame in self.tail.iter().chain(std::iter::once(&self.last)) {
                bytes.extend_from_slice(frame);
            }
            self.read_whole(&bytes);
        } else {
            if !self.head_done {
                // A long answer whose first frame never left the window (or is its only one).
                self.read_head_from_window();
            }
            // The last TAIL bytes, in one piece.
            let mut skip = self.tail_len.saturating_sub(TAIL);
            let mut tail = Vec::with_capacity(self.tail_len - skip);
            for frame in self.tail.iter().chain(std::iter::once(&self.last)) {
                let from = skip.min(frame.len());
                skip -= from;
                tail.extend_from_slice(&frame[from..]);
            }
            // The end of a longer answer: the last members that read as such.
            self.details.finish_reasons = finish_reasons_in(&tail);
            self.details.usage = last_usage(&tail);
            if self.details.model.is_none() {
                self.details.model = last_string_member(&tail, b"\"model\"")
                    .and_then(|raw| shared_str(raw, self.upstream_model.as_ref()));
            }
        }
        self.log
            .record_body(self.details, None, crate::observe::Outcome::Completed);
    }

    /// Reads the whole answer `json`: its top-level members only.
    fn read_whole(&mut self, json: &[u8]) {
        let members = TopLevel::of(json);
        self.details.id = members.id.and_then(|raw| shared_str(raw, None));
        self.details.model = members
            .model
            .and_then(|raw| shared_str(raw, self.upstream_model.as_ref()));
        self.details.usage = members
            .usage
            .and_then(|raw| serde_json::from_slice::<Usage>(raw).ok());
        self.details.finish_reasons = members.choices.map(finish_reasons_in).unwrap_or_default();
    }
}

/// The top-level members of a whole answer that tell about it, raw: the first string `id`
/// and `model`, the last `usage` and `choices` (as serde_json would read a repeated member).
#[derive(Default)]
struct TopLevel<'a> {
    id: Option<&'a [u8]>,
    model: Option<&'a [u8]>,
    usage: Option<&'a [u8]>,
    choices: Option<&'a [u8]>,
}

impl<'a> TopLevel<'a> {
    /// One scan of the object `json`.
    fn of(json: &'a [u8]) -> Self {
        let mut members = Self::default();
        each_top_level_member(json, |key, value| {
            let is_string = value.first() == Some(&b'"');
            match key {
                b"id" if is_string && members.id.is_none() => members.id = Some(value),
                b"model" if is_string && members.model.is_none() => members.model = Some(value),
                b"usage" => members.usage = Some(value),
                b"choices" => members.choices = Some(value),
                _ => {}
            }
            false
        });
        members
    }
}

/// The raw JSON string values (quotes included) of the top-level members `names` of the
/// object `json` starts with, read as far as `json` goes (it may be cut anywhere), and whether
/// the scan got to an end (both found, the object closed, or not an object).
pub(crate) fn top_level_strings<'a>(
    json: &'a [u8],
    names: [&[u8]; 2],
) -> ([Option<&'a [u8]>; 2], bool) {
    let mut found = [None, None];
    let ended = each_top_level_member(json, |key, value| {
        if let Some(slot) = names.iter().position(|name| *name == key) {
            if found[slot].is_none() && value.first() == Some(&b'"') {
                found[slot] = Some(value);
            }
        }
        found.iter().all(Option::is_some)
    });
    (found, ended)
}

/// Calls `member(key, raw value)` for each top-level member of the object `json` starts
/// with, as far as `json` goes, until it returns `true`; whether the scan got to an end
/// (`member` said so, the object closed, or not an object) rather than to the bytes' end.
fn each_top_level_member<'a>(
    json: &'a [u8],
    mut member: impl FnMut(&'a [u8], &'a [u8]) -> bool,
) -> bool {
    let mut at = skip_space(json, 0);
    if json.get(at) != Some(&b'{') {
        return at < json.len();
    }
    at += 1;
    loop {
        at = skip_space(json, at);
        match json.get(at) {
            None => return false,
            Some(b',') => {
                at += 1;
                continue;
            }
            Some(b'"') => {}
            // `}` (the end) or not JSON as we know it.
            Some(_) => return true,
        }
        let Some(key_end) = string_end(json, at) else {
            return false;
        };
        let key = json.get(at + 1..key_end - 1).unwrap_or_default();
        at = skip_space(json, key_end);
        match json.get(at) {
            None => return false,
            Some(b':') => at = skip_space(json, at + 1),
            Some(_) => return true,
        }
        let Some(value_end) = value_end(json, at) else {
            return false;
        };
        if member(key, json.get(at..value_end).unwrap_or_default()) {
            return true;
        }
        at = value_end;
    }
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while json
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// Where the string starting (with its quote) at `start` ends (after its closing quote).
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        at += memchr::memchr2(b'"', b'\\', json.get(at..)?)?;
        if json[at] == b'"' {
            return Some(at + 1);
        }
        at += 2;
    }
}

/// Where the value starting at `start` ends; `None` when it runs past the bytes given.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = start;
    loop {
        match *json.get(at)? {
            b'"' => {
                at = string_end(json, at)?;
                if depth == 0 {
                    return Some(at);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            b',' | b'}' | b']' if depth == 0 => return Some(at),
            _ => {}
        }
        at += 1;
    }
}

/// A JSON string value (quotes included) as shared text (see [`shared_text`]); `None` when it
/// is not a string.
pub(crate) fn shared_str(raw: &[u8], reuse: Option<&Arc<str>>) -> Option<Arc<str>> {
    if raw.len() > MAX_NAME + 2 {
        return None;
    }
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        let text: String = serde_json::from_slice(raw).ok()?;
        return shared_text(&text, None);
    }
    shared_text(std::str::from_utf8(inner).ok()?, reuse)
}

/// `text` as shared text, the `reuse` one when equal (no copy); `None` when longer than
/// [`MAX_NAME`] bytes.
pub(crate) fn shared_text(text: &str, reuse: Option<&Arc<str>>) -> Option<Arc<str>> {
    match reuse {
        _ if text.len() > MAX_NAME => None,
        Some(shared) if **shared == *text => Some(shared.clone()),
        _ => Some(Arc::from(text)),
    }
}

/// The last `"usage": {...}` object of `bytes` that reads as [`Usage`].
fn last_usage(bytes: &[u8]) -> Option<Usage> {
    // Cheap: most tails hold one `"usage"`.
    let mut at = bytes.len();
    while let Some(found) = memmem::rfind(&bytes[..at], b"\"usage\"") {
        at = found;
        if found > 0 && bytes[found - 1] == b'\\' {
            continue;
        }
        let colon = skip_space(bytes, found + 7);
        if bytes.get(colon) != Some(&b':') {
            continue;
        }
        let value = skip_space(bytes, colon + 1);
        if bytes.get(value) != Some(&b'{') {
            continue;
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes[value..]);
        if let Ok(usage) = Usage::deserialize(&mut deserializer) {
            return Some(usage);
        }
    }
    None
}

/// The last string value of a member named `key` (quoted) in `bytes`.
fn last_string_member<'a>(bytes: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut at = bytes.len();
    while let Some(found) = memmem::rfind(&bytes[..at], key) {
        at = found;
        if found > 0 && bytes[found - 1] == b'\\' {
            continue;
        }
        let colon = skip_space(bytes, found + key.len());
        if bytes.get(colon) != Some(&b':') {
            continue;
        }
        let value = skip_space(bytes, colon + 1);
        if bytes.get(value) == Some(&b'"') {
            let end = string_end(bytes, value)?;
            return Some(&bytes[value..end]);
        }
    }
    None
}

/// The string `finish_reason`s of `bytes`, in the order they come (the choices' order).
fn finish_reasons_in(bytes: &[u8]) -> FinishReasons {
    let mut reasons = FinishReasons::new();
    let mut from = 0;
    while let Some(found) = FINISH_REASON.find(&bytes[from..]) {
        let at = from + found;
        from = at + 15;
        if at > 0 && bytes[at - 1] == b'\\' {
            continue;
        }
        let colon = skip_space(bytes, from);
        if bytes.get(colon) != Some(&b':') {
            continue;
        }
        let value = skip_space(bytes, colon + 1);
        if bytes.get(value) != Some(&b'"') {
            continue;
        }
        let Some(end) = string_end(bytes, value) else {
            break;
        };
        if let Ok(text) = std::str::from_utf8(&bytes[value + 1..end - 1]) {
            reasons.push(FinishReason::from_wire(text));
        }
        from = end;
    }
    reasons
}

/// Whether an event may carry a string `finish_reason` (not `null`): a cheap check before
/// [`read_finish_reasons`].
pub(crate) fn may_have_finish_reason(event: &[u8]) -> bool {
    FINISH_REASON.find_iter(event).any(|at| {
        let colon = skip_space(event, at + 15);
        event.get(colon) == Some(&b':') && event.get(skip_space(event, colon + 1)) == Some(&b'"')
    })
}

/// Reads the finish reasons of a chunk's `choices` (by their `index`) into `reasons`, without
/// allocating.
pub(crate) fn read_finish_reasons(json: &[u8], reasons: &mut FinishReasons) {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let _ = ChunkSeed(reasons).deserialize(&mut deserializer);
}

/// A chunk, read for its `choices` only.
struct ChunkSeed<'r>(&'r mut FinishReasons);

impl<'de> DeserializeSeed<'de> for ChunkSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChunkSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chunk object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::Choices {
                map.next_value_seed(ChoicesSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// `choices`, each read for its `index` and `finish_reason`.
struct ChoicesSeed<'r>(&'r mut FinishReasons);

impl<'de> DeserializeSeed<'de> for ChoicesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoicesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of choices")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut position = 0;
        while let Some(choice) = seq.next_element::<Choice>()? {
            if let Some(reason) = choice.finish_reason {
                let index = choice
                    .index
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(position);
                self.0.set(index, reason);
            }
            position += 1;
        }
        Ok(())
    }
}

/// One choice: its index and finish reason.
struct Choice {
    index: Option<u64>,
    finish_reason: Option<FinishReason>,
}

impl<'de> Deserialize<'de> for Choice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;
        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = Choice;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a choice object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Choice, A::Error> {
                let mut choice = Choice {
                    index: None,
                    finish_reason: None,
                };
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Index => choice.index = map.next_value::<Option<u64>>()?,
                        Key::FinishReason => {
                            choice.finish_reason = map.next_value::<Option<Reason>>()?.map(|r| r.0);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(choice)
            }
        }
        deserializer.deserialize_map(ChoiceVisitor)
    }
}

/// A `finish_reason` string, read without copying it.
struct Reason(FinishReason);

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReasonVisitor;
        impl Visitor<'_> for ReasonVisitor {
            type Value = Reason;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a finish reason")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Reason, E> {
                Ok(Reason(FinishReason::from_wire(value)))
            }
        }
        deserializer.deserialize_str(ReasonVisitor)
    }
}

/// The keys read, each without copying it.
#[derive(PartialEq, Eq)]
enum Key {
    Choices,
    Index,
    FinishReason,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Key, E> {
                Ok(match value {
                    "choices" => Key::Choices,
                    "index" => Key::Index,
                    "finish_reason" => Key::FinishReason,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHAT: &str = concat!(
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","#,
        r#""choices":[{"index":0,"message":{"role":"assistant","content":"say \"finish_reason\":\"x\" and \"usage\":{}"},"finish_reason":"stop"},"#,
        r#"{"index":1,"message":{"role":"assistant","content":"","tool_calls":[]},"finish_reason":"tool_calls"}],"#,
        r#""usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4}},"system_fingerprint":"fp"}"#
    );

    /// Feeds `body` in frames cut at `splits`, then ends it; what the log got.
    fn watch(body: &[u8], splits: &[usize], upstream: Option<&Arc<str>>) -> AnswerDetails {
        let log = RequestLog::new();
        let mut watch = AnswerWatch::new(log.clone(), upstream.cloned());
        let mut last = 0;
        for &split in splits.iter().chain(std::iter::once(&body.len())) {
            watch.see(&Bytes::copy_from_slice(&body[last..split]));
            last = split;
        }
        watch.finish();
        let head = crate::observe::RequestHead {
            id: crate::extensions::RequestId::generate(),
            method: http::Method::POST,
            uri: http::Uri::from_static("/"),
        };
        let end = crate::observe::End {
            status: None,
            latency: std::time::Duration::ZERO,
            duration: std::time::Duration::ZERO,
            outcome: crate::observe::Outcome::Completed,
        };
        let summary = log.summary(&head, end);
        AnswerDetails {
            usage: summary.usage,
            id: summary.response_id,
            model: summary.response_model,
            finish_reasons: summary.finish_reasons,
        }
    }

    #[test]
    fn members_nested_after_the_real_ones_are_not_read_as_them() {
        // A Responses-like answer: `model` beyond the head (long instructions), and the
        // client's `metadata` echoed after `usage`, with a `model` and a `usage` of its own.
        let body = format!(
            r#"{{"id":"resp_1","instructions":"{}","model":"gpt-4o","usage":{{"input_tokens":9,"output_tokens":4,"total_tokens":13}},"metadata":{{"model":"spoofed","usage":{{"input_tokens":0,"output_tokens":0}}}},"tools":[{{"parameters":{{"usage":{{"type":"string"}}}}}}]}}"#,
            "x".repeat(2 * HEAD)
        );
        for splits in [&[][..], &[100, 1500][..]] {
            let details = watch(body.as_bytes(), splits, None);
            assert_eq!(details.model.as_deref(), Some("gpt-4o"), "{splits:?}");
            let usage = details.usage.unwrap();
            assert_eq!(
                (usage.input_tokens, usage.output_tokens),
                (9, 4),
                "{splits:?}"
            );
        }
        // A top-level `usage: null` is no usage, whatever is nested.
        let body = r#"{"id":"c","usage":null,"tools":[{"usage":{"input_tokens":5}}]}"#;
        assert_eq!(watch(body.as_bytes(), &[], None).usage, None);
    }

    #[test]
    fn a_chat_answer_is_read_at_every_split() {
        let body = CHAT.as_bytes();
        for a in 0..=body.len() {
            let details = watch(body, &[a], None);
            assert_eq!(details.id.as_deref(), Some("chatcmpl-1"), "split at {a}");
            assert_eq!(details.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
            let usage = details.usage.unwrap();
            assert_eq!(
                (
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.total_tokens,
                    usage.cached_tokens
                ),
                (12, 7, 19, 4)
            );
            let reasons: Vec<_> = details.finish_reasons.iter().collect();
            assert_eq!(
                reasons,
                [FinishReason::Stop, FinishReason::ToolCalls],
                "split at {a}"
            );
        }
        let every: Vec<usize> = (1..body.len()).collect();
        assert_eq!(watch(body, &every, None).usage.unwrap().total_tokens, 19);
    }

    #[test]
    fn an_embeddings_answer_names_its_model_after_its_data() {
        let vector = vec!["0.0123"; 2000].join(",");
        let body = format!(
            r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{vector}]}}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":8,"total_tokens":8}}}}"#
        );
        let shared: Arc<str> = Arc::from("text-embedding-3-small");
        let details = watch(body.as_bytes(), &[100, 5000], Some(&shared));
        assert_eq!(details.id, None);
        // The target's own name is shared, not copied.
        assert!(Arc::ptr_eq(details.model.as_ref().unwrap(), &shared));
        let usage = details.usage.unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (8, 0));
        assert!(details.finish_reasons.is_empty());
    }

    #[test]
    fn a_responses_answer_gives_input_and_output_tokens() {
        let body = r#"{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"gpt-4.1","output":[],"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":1},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":7}}"#;
        let details = watch(body.as_bytes(), &[], None);
        assert_eq!(details.id.as_deref(), Some("resp_1"));
        assert_eq!(details.model.as_deref(), Some("gpt-4.1"));
        let usage = details.usage.unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.cached_tokens),
            (5, 2, 1)
        );
    }

    #[test]
    fn a_long_answer_in_one_or_two_frames_is_read_at_both_ends() {
        let body = format!(
            r#"{{"id":"long-1","model":"m-1","choices":[{{"index":0,"message":{{"content":"{}"}},"finish_reason":"length"}}],"usage":{{"prompt_tokens":3,"completion_tokens":4}}}}"#,
            "z".repeat(TAIL + 100)
        );
        let end = body.len() - 20;
        for splits in [&[][..], &[end][..], &[HEAD / 2, end][..]] {
            let details = watch(body.as_bytes(), splits, None);
            assert_eq!(details.id.as_deref(), Some("long-1"), "{splits:?}");
            assert_eq!(details.model.as_deref(), Some("m-1"), "{splits:?}");
            assert_eq!(details.usage.unwrap().output_tokens, 4, "{splits:?}");
            let reasons: Vec<_> = details.finish_reasons.iter().collect();
            assert_eq!(reasons, [FinishReason::Length], "{splits:?}");
        }
    }

    #[test]
    fn usage_before_the_tail_is_not_found() {
        // Usage first, then more than the tail's worth of bytes.
        let body = format!(
            r#"{{"id":"x","usage":{{"prompt_tokens":1}},"pad":"{}"}}"#,
            "a".repeat(TAIL + 10)
        );
        let details = watch(body.as_bytes(), &[10, 100], None);
        assert_eq!(details.id.as_deref(), Some("x"));
        assert_eq!(details.usage, None);
    }

    #[test]
    fn heads_are_read_when_cut_anywhere() {
        let json =
            br#"{"object":"chat.completion", "created":[1,{"a":"}"}], "id" : "c\"1", "model":"m"}"#;
        for end in 0..json.len() {
            let (found, complete) = top_level_strings(&json[..end], [b"id", b"model"]);
            if let Some(id) = found[0] {
                assert_eq!(id, br#""c\"1""#);
            }
            assert!(!complete || end >= json.len() - 1, "cut at {end}");
        }
        let ([id, model], complete) = top_level_strings(json, [b"id", b"model"]);
        assert!(complete);
        assert_eq!(shared_str(id.unwrap(), None).as_deref(), Some("c\"1"));
        assert_eq!(model.unwrap(), br#""m""#);
        // Nested ids are not the answer's.
        let ([id, _], complete) =
            top_level_strings(br#"{"data":[{"id":"no"}]}"#, [b"id", b"model"]);
        assert!(complete && id.is_none());
        assert!(top_level_strings(b"[1]", [b"id", b"model"]).1);
        // Over-long names are left out.
        let long = format!("\"{}\"", "a".repeat(MAX_NAME + 1));
        assert_eq!(shared_str(long.as_bytes(), None), None);
    }

    #[test]
    fn string_ends_are_found_past_escapes_in_short_and_long_strings() {
        let long_escaped = format!(r#""{}\"x\\""#, "y".repeat(40));
        let long = format!(r#""{}""#, "z".repeat(30));
        for text in [r#""""#, r#""a\"b""#, r#""a\\""#, &long_escaped, &long] {
            let json = format!("{text},\"next\"");
            assert_eq!(string_end(json.as_bytes(), 0), Some(text.len()), "{text}");
        }
        assert_eq!(string_end(br#""unterminated"#, 0), None);
        assert_eq!(string_end(br#""ends in a backslash\"#, 0), None);
    }

    #[test]
    fn stream_chunks_give_finish_reasons_by_index() {
        let mut reasons = FinishReasons::new();
        let chunk = br#"{"id":"c","choices":[{"index":1,"delta":{"content":"\"finish_reason\":\"x\""},"finish_reason":"length"},{"index":0,"delta":{},"finish_reason":null}]}"#;
        assert!(may_have_finish_reason(chunk));
        read_finish_reasons(chunk, &mut reasons);
        read_finish_reasons(
            br#"{"choices":[{"index":0,"finish_reason":"content_filter"}]}"#,
            &mut reasons,
        );
        let got: Vec<_> = reasons.iter().collect();
        assert_eq!(got, [FinishReason::ContentFilter, FinishReason::Length]);
        assert!(!may_have_finish_reason(
            br#"{"choices":[{"finish_reason":null}]}"#
        ));
        read_finish_reasons(br#"{"choices":[{"finish_reason":"weird"}]}"#, &mut reasons);
        assert_eq!(reasons.iter().next(), Some(FinishReason::Other));
    }
}

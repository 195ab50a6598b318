//! Reading `model` from a JSON body and rewriting it without touching any other byte.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;
use crate::observe::RequestParams;

/// What routing needs from a JSON request body.
#[derive(Debug, PartialEq)]
pub(crate) struct Peeked {
    /// The `model` string, if the body has one.
    pub(crate) model: Option<String>,
    /// Where the `model` value (a string with its quotes, or `null`) sits in the body, whenever
    /// the key is present: a default model replaces it there, so the body never gets a second
    /// `model` key.
    model_span: Option<Range<usize>>,
    /// `"stream": true`.
    pub(crate) stream: bool,
    /// `stream_options.include_usage`, when the client sent `stream_options`.
    pub(crate) include_usage: Option<bool>,
    /// Whether the body holds routing knobs (`fallbacks`, `retry`, ...; see `knobs`).
    pub(crate) has_knobs: bool,
    /// The parameters telemetry records (`max_tokens`, `temperature`, ...).
    pub(crate) params: RequestParams,
}

impl Peeked {
    /// The bytes of the `model` string as sent, when they are its text (no escapes): a
    /// slice of `body`, no copy.
    pub(crate) fn model_bytes(&self, body: &Bytes) -> Option<Bytes> {
        let span = self.model_span.clone()?;
        let inner = span.start + 1..span.end.checked_sub(1)?;
        let raw = body.get(inner.clone())?;
        (!raw.contains(&b'\\') && self.model.is_some()).then(|| body.slice(inner))
    }
}

/// Why a valid JSON body is refused.
const WRONG_SHAPE: &str = "the body must be a JSON object with at most one `model`";

/// Parses the whole body once (so invalid JSON is caught here, not upstream) and finds the
/// top-level `model` value without building a tree of the rest.
pub(crate) fn peek(body: &[u8]) -> Result<Peeked, Error> {
    // serde_json does not check the bytes of strings it skips (every value but `model`,
    // `stream` and `stream_options`): without this, `"a\xffb"` would reach the upstream.
    std::str::from_utf8(body).map_err(|error| Error::invalid_json().with_source(error))?;
    // serde reads a struct from an array too, positionally: `["gpt-4o", true]` would be read
    // as `model` and `stream`, and forwarded as an array.
    if body.trim_ascii_start().first() != Some(&b'{') {
        // Invalid JSON (empty, garbage) says so; valid JSON of another shape is the wrong shape.
        let error = match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Error::invalid_body(WRONG_SHAPE),
            Err(error) => Error::invalid_json().with_source(error),
        };
        return Err(error);
    }
    /// The top-level members routing reads, and the parameters telemetry records (`$extra`).
    macro_rules! fields {
        ($name:ident { $($extra:tt)* }) => {
            #[derive(Deserialize)]
            struct $name<'a> {
                // `Some` whenever the key is present, even as `null` (which `Option` alone
                // reads as absent): a default model must then replace that `null`, not add a
                // second key.
                #[serde(borrow, default, deserialize_with = "present_raw")]
                model: Option<&'a RawValue>,
                #[serde(borrow, default)]
                stream: Option<&'a RawValue>,
                // `Some` whenever the key is present, even as `null`: the router must then not
                // add a second `stream_options`.
                #[serde(default, deserialize_with = "present_include_usage")]
                stream_options: Option<bool>,
                // The routing knobs: only whether one is there (read on their own, when they
                // are).
                #[serde(borrow, default, deserialize_with = "present_raw")]
                fallbacks: Option<&'a RawValue>,
                #[serde(borrow, default, deserialize_with = "present_raw")]
                retry: Option<&'a RawValue>,
                #[serde(borrow, default, deserialize_with = "present_raw")]
                timeout: Option<&'a RawValue>,
                #[serde(borrow, default, deserialize_with = "present_raw")]
                load_balancer: Option<&'a RawValue>,
                #[serde(borrow, default, deserialize_with = "present_raw")]
                identity: Option<&'a RawValue>,
                #[serde(borrow, default, deserialize_with = "present_raw")]
                thread: Option<&'a RawValue>,
                $($extra)*
            }
            impl<'a> $name<'a> {
                /// `model`, whether it streams, `stream_options`, whether knobs are there.
                fn routing(&self) -> (Option<&'a RawValue>, bool, Option<bool>, bool) {
                    // Only a literal `true` streams; anything else is left for the upstream
                    // to judge.
                    let stream = self.stream.is_some_and(|raw| raw.get() == "true");
                    let has_knobs = self.fallbacks.is_some()
                        || self.retry.is_some()
                        || self.timeout.is_some()
                        || self.load_balancer.is_some()
                        || self.identity.is_some()
                        || self.thread.is_some();
                    (self.model, stream, self.stream_options, has_knobs)
                }
            }
        };
    }
    fields!(Fields {
        // Parameters telemetry records: read from their text, never refused here (the
        // upstream judges them).
        #[serde(borrow, default)]
        max_tokens: Option<&'a RawValue>,
        #[serde(borrow, default)]
        max_completion_tokens: Option<&'a RawValue>,
        #[serde(borrow, default)]
        max_output_tokens: Option<&'a RawValue>,
        #[serde(borrow, default)]
        temperature: Option<&'a RawValue>,
        #[serde(borrow, default)]
        top_p: Option<&'a RawValue>,
    });
    // Routing's members alone: a body that repeats a parameter (which serde refuses) is
    // still routed as before, without its parameters recorded.
    fields!(Routing {});
    let wrong_shape = |error: serde_json::Error| {
        if error.is_data() {
            // Valid JSON of the wrong shape (a duplicate `model`, ...).
            Error::invalid_body(WRONG_SHAPE)
        } else {
            Error::invalid_json()
        }
        .with_source(error)
    };
    let (model, stream, include_usage, has_knobs, params) =
        match serde_json::from_slice::<Fields<'_>>(body) {
            Ok(fields) => {
                let (model, stream, include_usage, has_knobs) = fields.routing();
                let params = RequestParams {
                    max_tokens: [
                        fields.max_tokens,
                        fields.max_completion_tokens,
                        fields.max_output_tokens,
                    ]
                    .into_iter()
                    .flatten()
                    .find_map(|raw| count(raw.get())),
                    temperature: fields.temperature.and_then(|raw| number(raw.get())),
                    top_p: fields.top_p.and_then(|raw| number(raw.get())),
                    stream,
                };
                (model, stream, include_usage, has_knobs, params)
            }
            Err(error) if error.is_data() => {
                let fields = serde_json::from_slice::<Routing<'_>>(body).map_err(wrong_shape)?;
                let (model, stream, include_usage, has_knobs) = fields.routing();
                let params = RequestParams {
                    stream,
                    ..RequestParams::default()
                };
                (model, stream, include_usage, has_knobs, params)
            }
            Err(error) => return Err(wrong_shape(error)),
        };
    let Some(raw) = model else {
        return Ok(Peeked {
            model: None,
            model_span: None,
            stream,
            include_usage,
            has_knobs,
            params,
        });
    };
    let text = raw.get();
    let model: Option<String> =
        serde_json::from_str(text).map_err(|_| Error::invalid_body("`model` must be a string"))?;
    // `raw` borrows from `body`: its offset is the distance between the two pointers.
    let start = (text.as_ptr() as usize)
        .checked_sub(body.as_ptr() as usize)
        .filter(|start| body.get(*start..start + text.len()) == Some(text.as_bytes()))
        .ok_or_else(Error::internal)?;
    Ok(Peeked {
        model,
        model_span: Some(start..start + text.len()),
        stream,
        include_usage,
        has_knobs,
        params,
    })
}

/// A JSON number's value, when the text is a finite number.
fn number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A JSON number's value as a count (`256` or `256.0`), when it is a whole non-negative one.
fn count(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().or_else(|| {
        number(text)
            .filter(|n| *n >= 0.0 && n.fract() == 0.0 && *n < u64::MAX as f64)
            .map(|n| n as u64)
    })
}

/// The raw value of a key that is present, `null` included.
fn present_raw<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// `stream_options` is present (whatever its value): `Some(include_usage)`.
fn present_include_usage<'de, D>(deserializer: D) -> Result<Option<bool>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    let include = value
        .get("include_usage")
        .and_then(serde_json::Value::as_bool);
    Ok(Some(include.unwrap_or(false)))
}

/// The body `peeked` from with `model` set to `new_model`: the value replaced in place when the
/// key is present (whatever it held: a string, `""` or `null`), else `"model":...` added as
/// the first member. Every other byte is kept; returns the same `Bytes` (no copy) when nothing
/// changes.
pub(crate) fn rewrite_model(body: Bytes, peeked: &Peeked, new_model: &str) -> Result<Bytes, Error> {
    let encoded = serde_json::to_string(new_model).map_err(|e| Error::internal().with_source(e))?;
    let Some(span) = peeked.model_span.clone() else {
        let mut member = Vec::with_capacity(encoded.len() + 10);
        member.extend_from_slice(b"\"model\":");
        member.extend_from_slice(encoded.as_bytes());
        return insert_first_member(&body, &member)
            .ok_or_else(|| Error::invalid_body("the body must be a JSON object"));
    };
    if peeked.model.as_deref() == Some(new_model) {
        return Ok(body);
    }
    let (Some(before), Some(after)) = (body.get(..span.start), body.get(span.end..)) else {
        return Err(Error::internal());
    };
    let mut out = BytesMut::with_capacity(before.len() + encoded.len() + after.len());
    out.extend_from_slice(before);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(after);
    Ok(out.freeze())
}

/// Inserts `member` (`"key":value`) as the first member of the JSON object in `body`, keeping
/// every other byte. `None` when the body is not an object.
pub(crate) fn insert_first_member(body: &[u8], member: &[u8]) -> Option<Bytes> {
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{' {
        return None;
    }
    let rest = &body[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = BytesMut::with_capacity(body.len() + member.len() + 1);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(member);
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(rest);
    Some(out.freeze())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rewrite(body: &str, to: &str) -> String {
        let body = Bytes::copy_from_slice(body.as_bytes());
        let peeked = peek(&body).unwrap();
        String::from_utf8(rewrite_model(body, &peeked, to).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn only_the_model_value_changes() {
        let body = r#"{ "messages":[{"role":"user","content":"model"}],  "model" : "openai/gpt-4o-mini" ,"x":1.50}"#;
        assert_eq!(
            rewrite(body, "gpt-4o-mini"),
            r#"{ "messages":[{"role":"user","content":"model"}],  "model" : "gpt-4o-mini" ,"x":1.50}"#
        );
    }

    #[test]
    fn escapes_are_read_and_written() {
        let body = r#"{"model":"openai\/gpt\u002d4o"}"#;
        assert_eq!(
            peek(body.as_bytes()).unwrap().model.unwrap(),
            "openai/gpt-4o"
        );
        assert_eq!(rewrite(body, "a\"b"), r#"{"model":"a\"b"}"#);
    }

    #[test]
    fn nested_model_keys_are_not_the_model() {
        let body = r#"{"tools":[{"model":"x"}],"metadata":{"model":"y"}}"#;
        assert_eq!(peek(body.as_bytes()).unwrap().model, None);
    }

    #[test]
    fn unchanged_model_is_not_copied() {
        let body = Bytes::from_static(br#"{"model":"m"}"#);
        let peeked = peek(&body).unwrap();
        let out = rewrite_model(body.clone(), &peeked, "m").unwrap();
        assert_eq!(out.as_ptr(), body.as_ptr());
    }

    #[test]
    fn members_are_inserted_first() {
        let out = insert_first_member(b" {\"a\":1}", b"\"m\":2").unwrap();
        assert_eq!(out, " {\"m\":2,\"a\":1}");
        let out = insert_first_member(b"{ }", b"\"m\":2").unwrap();
        assert_eq!(out, "{\"m\":2 }");
        assert!(insert_first_member(b"[]", b"\"m\":2").is_none());
        assert_eq!(
            rewrite(r#"{"input":"x"}"#, "omni"),
            r#"{"model":"omni","input":"x"}"#
        );
        assert_eq!(rewrite(" { } ", "omni"), r#" {"model":"omni" } "#);
    }

    #[test]
    fn an_empty_or_null_model_is_replaced_where_it_stands() {
        for (body, expected) in [
            (
                r#"{"model":"","input":"hello"}"#,
                r#"{"model":"omni","input":"hello"}"#,
            ),
            (
                r#"{"input":"hello", "model" : null }"#,
                r#"{"input":"hello", "model" : "omni" }"#,
            ),
            (r#"{"model":"x"}"#, r#"{"model":"omni"}"#),
        ] {
            assert_eq!(rewrite(body, "omni"), expected);
            assert_eq!(
                peek(expected.as_bytes()).unwrap().model.as_deref(),
                Some("omni")
            );
        }
        assert_eq!(peek(br#"{"model":null}"#).unwrap().model, None);
        assert_eq!(peek(br#"{"model":""}"#).unwrap().model.as_deref(), Some(""));
    }

    #[test]
    fn invalid_utf8_anywhere_is_invalid_json() {
        for body in [
            &b"{\"model\":\"m\",\"content\":\"a\xffb\"}"[..],
            b"{\"model\":\"m\",\"x\":{\"\xc0\xaf\":1}}",
            b"{\"model\":\"m\",\"x\":[\"\xed\xa0\x80\"]}",
        ] {
            let error = peek(body).unwrap_err();
            assert_eq!(error.status(), 400);
            assert!(error.to_string().contains("parse the JSON"), "{error}");
        }
    }

    #[test]
    fn stream_flags_are_read() {
        let peeked = peek(br#"{"model":"m","stream":true}"#).unwrap();
        assert!(peeked.stream && peeked.include_usage.is_none());
        let peeked = peek(br#"{"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!(peeked.include_usage, Some(true));
        let peeked = peek(br#"{"stream":true,"stream_options":null}"#).unwrap();
        assert_eq!(peeked.include_usage, Some(false));
        let peeked = peek(br#"{"stream":"yes","stream_options":{}}"#).unwrap();
        assert!(!peeked.stream);
        assert_eq!(peeked.include_usage, Some(false));
    }

    #[test]
    fn request_params_are_read_from_the_top_level() {
        let peeked = peek(
            br#"{"model":"m","max_completion_tokens":256,"temperature":0.2,"top_p":1,"stream":true,"metadata":{"max_tokens":9}}"#,
        )
        .unwrap();
        assert_eq!(
            peeked.params,
            RequestParams {
                max_tokens: Some(256),
                temperature: Some(0.2),
                top_p: Some(1.0),
                stream: true,
            }
        );
        let params = peek(br#"{"max_output_tokens":1e3,"temperature":null}"#)
            .unwrap()
            .params;
        assert_eq!((params.max_tokens, params.temperature), (Some(1000), None));
        // Values of another type are the upstream's to refuse; they are not recorded.
        let params = peek(br#"{"max_tokens":-1,"temperature":"hot","top_p":[]}"#)
            .unwrap()
            .params;
        assert_eq!(params, RequestParams::default());
        // A repeated parameter is routed as before, without parameters.
        let peeked = peek(br#"{"model":"m","temperature":1,"temperature":2}"#).unwrap();
        assert_eq!(peeked.model.as_deref(), Some("m"));
        assert_eq!(peeked.params.temperature, None);
    }

    #[test]
    fn bad_bodies_are_refused() {
        let code = |body: &str| peek(body.as_bytes()).unwrap_err().status().as_u16();
        assert_eq!(code("{"), 400);
        assert_eq!(code("not json"), 400);
        assert_eq!(code(""), 400);
        assert_eq!(code("[1,2]"), 400);
        assert_eq!(code(r#"{"model":1}"#), 400);
        assert_eq!(code(r#"{"model":"a","model":"b"}"#), 400);
        assert_eq!(code(r#"{"model":"a"} trailing"#), 400);
        // Found by the `model_rewrite` fuzz target: serde reads a struct from an array.
        assert_eq!(code("[]\n"), 400);
        assert_eq!(code(r#"["openai/gpt-4o", true]"#), 400);
        assert_eq!(code(r#" "model" "#), 400);
        assert_eq!(code("null"), 400);
        assert_eq!(peek(br#"{"model":null}"#).unwrap().model, None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod proptests {
    //! For any JSON object and any model, the rewrite changes the top-level `model` value only.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// A JSON value, rendered by [`render`] with the whitespace and escapes a seed picks.
    #[derive(Clone, Debug)]
    enum Node {
        Null,
        Bool(bool),
        Number(String),
        Str(String),
        Array(Vec<Node>),
        Object(Vec<(String, Node)>),
    }

    /// Where `model` sits in the top-level object, and what it holds.
    #[derive(Clone, Debug)]
    enum ModelMember {
        Absent,
        Null,
        Str(String),
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z/:.-]{1,12}",
            any::<String>(),
            "[\"\\\\/\u{0}-\u{1f}\u{7f}\u{e9}\u{1F600}]{0,6}",
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![Just("model".to_owned()), "[a-z_]{0,6}", any::<String>()]
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::to_string(&f).unwrap()),
            Just("-0.5e-3".to_owned()),
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            Just(Node::Null),
            any::<bool>().prop_map(Node::Bool),
            number().prop_map(Node::Number),
            text().prop_map(Node::Str),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Node::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|members| Node::Object(dedup(members))),
            ]
        })
    }

    /// Keeps the first member of each key: JSON objects with duplicate keys are refused.
    fn dedup(members: Vec<(String, Node)>) -> Vec<(String, Node)> {
        let mut seen = std::collections::HashSet::new();
        members
            .into_iter()
            .filter(|(key, _)| seen.insert(key.clone()))
            .collect()
    }

    /// A tiny deterministic generator for rendering choices (whitespace, escapes).
    struct Choices(u64);

    impl Choices {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn space(&mut self, out: &mut String) {
            for _ in 0..self.next(3) {
                out.push([' ', '\t', '\n', '\r'][self.next(4) as usize]);
            }
        }
    }

    fn render_str(s: &str, choices: &mut Choices, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            let escape = choices.next(4) == 0;
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if escape => out.push_str("\\/"),
                '\n' if escape => out.push_str("\\n"),
                c if (c as u32) < 0x20 || escape => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn render(node: &Node, choices: &mut Choices, out: &mut String) {
        match node {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Number(n) => out.push_str(n),
            Node::Str(s) => render_str(s, choices, out),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    choices.space(out);
                    render(item, choices, out);
                    choices.space(out);
                }
                out.push(']');
            }
            Node::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    choices.space(out);
                    render_str(key, choices, out);
                    choices.space(out);
                    out.push(':');
                    choices.space(out);
                    render(value, choices, out);
                    choices.space(out);
                }
                out.push('}');
            }
        }
    }

    fn body() -> impl Strategy<Value = (String, ModelMember)> {
        let model = prop_oneof![
            Just(ModelMember::Absent),
            Just(ModelMember::Null),
            Just(ModelMember::Str(String::new())),
            text().prop_map(ModelMember::Str),
        ];
        (
            prop::collection::vec((key(), node()), 0..8),
            model,
            any::<prop::sample::Index>(),
            any::<u64>(),
        )
            .prop_map(|(members, model, at, seed)| {
                let mut members: Vec<(String, Node)> = dedup(members)
                    .into_iter()
                    .filter(|(key, _)| key != "model")
                    .collect();
                let value = match &model {
                    ModelMember::Absent => None,
                    ModelMember::Null => Some(Node::Null),
                    ModelMember::Str(s) => Some(Node::Str(s.clone())),
                };
                if let Some(value) = value {
                    members.insert(at.index(members.len() + 1), ("model".to_owned(), value));
                }
                let mut out = String::new();
                let mut choices = Choices(seed | 1);
                choices.space(&mut out);
                render(&Node::Object(members), &mut choices, &mut out);
                choices.space(&mut out);
                (out, model)
            })
    }

    /// The parsed object without its `model` member, and that member.
    fn split_model(bytes: &[u8]) -> (Value, Option<Value>) {
        let mut value: Value = serde_json::from_slice(bytes).unwrap();
        let model = value.as_object_mut().unwrap().remove("model");
        (value, model)
    }

    /// An object with `identity` / `thread` knobs among members whose keys look like JSON
    /// syntax (commas, colons, braces, quotes): the rendered body.
    fn body_with_knobs() -> impl Strategy<Value = String> {
        let tricky_key = prop_oneof!["[a-z,:{}\\[\\]\" ]{0,6}", key()];
        (
            prop::collection::vec((tricky_key, node()), 0..6),
            prop::collection::vec(
                (
                    prop_oneof![Just("identity"), Just("thread")],
                    prop::collection::vec((key(), node()), 0..3),
                    any::<prop::sample::Index>(),
                ),
                1..3,
            ),
            any::<u64>(),
        )
            .prop_map(|(members, knobs, seed)| {
                let mut members: Vec<(String, Node)> = dedup(members)
                    .into_iter()
                    .filter(|(key, _)| !crate::route::knobs::NAMES.contains(&key.as_str()))
                    .collect();
                for (name, value, at) in knobs {
                    if members.iter().all(|(key, _)| key != name) {
                        let at = at.index(members.len() + 1);
                        members.insert(at, (name.to_owned(), Node::Object(dedup(value))));
                    }
                }
                let mut out = String::new();
                let mut choices = Choices(seed | 1);
                choices.space(&mut out);
                render(&Node::Object(members), &mut choices, &mut out);
                choices.space(&mut out);
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn knobs_are_stripped_and_nothing_else_changes(body in body_with_knobs()) {
            let (_, stripped) = crate::route::knobs::take(&Bytes::from(body.clone())).unwrap();
            let mut expected: Value = serde_json::from_str(&body).unwrap();
            let object = expected.as_object_mut().unwrap();
            object.remove("identity");
            object.remove("thread");
            let got: Value = serde_json::from_slice(&stripped).unwrap();
            prop_assert_eq!(got, expected);
            // The other members keep their order and their bytes (serde_json's map is
            // sorted: compare the raw values as they appear).
            let values = |bytes: &[u8]| {
                crate::members::members(bytes, &[])
                    .unwrap()
                    .iter()
                    .map(|m| bytes[m.value.clone()].to_vec())
                    .collect::<Vec<_>>()
            };
            let kept: Vec<Vec<u8>> = values(body.as_bytes())
                .into_iter()
                .zip(crate::members::members(body.as_bytes(), &crate::route::knobs::NAMES).unwrap())
                .filter(|(_, m)| m.name.is_none())
                .map(|(value, _)| value)
                .collect();
            prop_assert_eq!(values(&stripped), kept);
        }

        #[test]
        fn only_the_top_level_model_changes((body, model) in body(), new_model in text()) {
            let body = Bytes::from(body);
            let peeked = peek(&body).unwrap();
            match &model {
                ModelMember::Absent => prop_assert!(peeked.model_span.is_none()),
                ModelMember::Null => prop_assert!(peeked.model.is_none()),
                ModelMember::Str(s) => prop_assert_eq!(peeked.model.as_deref(), Some(s.as_str())),
            }
            let out = rewrite_model(body.clone(), &peeked, &new_model).unwrap();

            // Every other member is unchanged, and `model` holds the new value.
            let (before, _) = split_model(&body);
            let (after, after_model) = split_model(&out);
            prop_assert_eq!(before, after);
            prop_assert_eq!(after_model, Some(Value::String(new_model.clone())));

            // Exactly one `model`: `peek` refuses a duplicate key.
            let again = peek(&out).unwrap();
            prop_assert_eq!(again.model.as_deref(), Some(new_model.as_str()));
            prop_assert_eq!(again.stream, peeked.stream);
            prop_assert_eq!(again.include_usage, peeked.include_usage);

            // A present `model` is replaced where it stands: every byte around it is kept.
            if let Some(span) = &peeked.model_span {
                prop_assert_eq!(&out[..span.start], &body[..span.start]);
                prop_assert_eq!(&out[out.len() - (body.len() - span.end)..], &body[span.end..]);
            }
        }
    }
}

//! Reading `model` from a JSON body and rewriting it without touching any other byte.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::openai_error::Error;

/// What routing needs from a JSON request body.
#[derive(Debug, PartialEq, Eq)]
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
}

/// Parses the whole body once (so invalid JSON is caught here, not upstream) and finds the
/// top-level `model` value without building a tree of the rest.
pub(crate) fn peek(body: &[u8]) -> Result<Peeked, Error> {
    // serde_json does not check the bytes of strings it skips (every value but `model`,
    // `stream` and `stream_options`): without this, `"a\xffb"` would reach the upstream.
    std::str::from_utf8(body).map_err(|error| Error::invalid_json().with_source(error))?;
    #[derive(Deserialize)]
    struct Fields<'a> {
        // `Some` whenever the key is present, even as `null` (which `Option` alone reads as
        // absent): a default model must then replace that `null`, not add a second key.
        #[serde(borrow, default, deserialize_with = "present_raw")]
        model: Option<&'a RawValue>,
        #[serde(borrow, default)]
        stream: Option<&'a RawValue>,
        // `Some` whenever the key is present, even as `null`: the router must then not add a
        // second `stream_options`.
        #[serde(default, deserialize_with = "present_include_usage")]
        stream_options: Option<bool>,
    }
    let fields: Fields<'_> = serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            // Valid JSON of the wrong shape (an array, a duplicate `model`, ...).
            Error::invalid_body("the body must be a JSON object with at most one `model`")
        } else {
            Error::invalid_json()
        }
        .with_source(error)
    })?;
    // Only a literal `true` streams; anything else is left for the upstream to judge.
    let stream = fields.stream.is_some_and(|raw| raw.get() == "true");
    let include_usage = fields.stream_options;
    let Some(raw) = fields.model else {
        return Ok(Peeked {
            model: None,
            model_span: None,
            stream,
            include_usage,
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
    fn bad_bodies_are_refused() {
        let code = |body: &str| peek(body.as_bytes()).unwrap_err().status().as_u16();
        assert_eq!(code("{"), 400);
        assert_eq!(code("not json"), 400);
        assert_eq!(code(""), 400);
        assert_eq!(code("[1,2]"), 400);
        assert_eq!(code(r#"{"model":1}"#), 400);
        assert_eq!(code(r#"{"model":"a","model":"b"}"#), 400);
        assert_eq!(code(r#"{"model":"a"} trailing"#), 400);
        assert_eq!(peek(br#"{"model":null}"#).unwrap().model, None);
    }
}

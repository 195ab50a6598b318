//! Reading `model` from a JSON body and rewriting it without touching any other byte.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;

/// What routing needs from a JSON request body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Peeked {
    /// The `model` string, if the body has one.
    pub(crate) model: Option<String>,
    /// Where the `model` value (with its quotes) sits in the body.
    model_span: Range<usize>,
    /// `"stream": true`.
    pub(crate) stream: bool,
    /// `stream_options.include_usage`, when the client sent `stream_options`.
    pub(crate) include_usage: Option<bool>,
}

/// Parses the whole body once (so invalid JSON is caught here, not upstream) and finds the
/// top-level `model` value without building a tree of the rest.
pub(crate) fn peek(body: &[u8]) -> Result<Peeked, Error> {
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(borrow, default)]
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
    let no_model = Peeked {
        model: None,
        model_span: 0..0,
        stream,
        include_usage,
    };
    let Some(raw) = fields.model else {
        return Ok(no_model);
    };
    let text = raw.get();
    if text == "null" {
        return Ok(no_model);
    }
    let model: String =
        serde_json::from_str(text).map_err(|_| Error::invalid_body("`model` must be a string"))?;
    // `raw` borrows from `body`: its offset is the distance between the two pointers.
    let start = (text.as_ptr() as usize)
        .checked_sub(body.as_ptr() as usize)
        .filter(|start| body.get(*start..start + text.len()) == Some(text.as_bytes()))
        .ok_or_else(Error::internal)?;
    Ok(Peeked {
        model: Some(model),
        model_span: start..start + text.len(),
        stream,
        include_usage,
    })
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

/// The body with the `model` value replaced by `new_model`; every other byte is kept. Returns
/// the same `Bytes` (no copy) when nothing changes.
pub(crate) fn rewrite_model(body: Bytes, peeked: &Peeked, new_model: &str) -> Bytes {
    if peeked.model.as_deref() == Some(new_model) || peeked.model_span.is_empty() {
        return body;
    }
    let Ok(encoded) = serde_json::to_string(new_model) else {
        return body;
    };
    let span = peeked.model_span.clone();
    let mut out = BytesMut::with_capacity(body.len() - span.len() + encoded.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    out.freeze()
}

/// Adds `"model":"<model>"` as the first member of a JSON object body (for a default model).
pub(crate) fn insert_model(body: &Bytes, model: &str) -> Result<Bytes, Error> {
    let encoded = serde_json::to_string(model).map_err(|e| Error::internal().with_source(e))?;
    let mut member = Vec::with_capacity(encoded.len() + 10);
    member.extend_from_slice(b"\"model\":");
    member.extend_from_slice(encoded.as_bytes());
    insert_first_member(body, &member)
        .ok_or_else(|| Error::invalid_body("the body must be a JSON object"))
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
        String::from_utf8(rewrite_model(body, &peeked, to).to_vec()).unwrap()
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
        let out = rewrite_model(body.clone(), &peeked, "m");
        assert_eq!(out.as_ptr(), body.as_ptr());
    }

    #[test]
    fn members_are_inserted_first() {
        let out = insert_first_member(b" {\"a\":1}", b"\"m\":2").unwrap();
        assert_eq!(out, " {\"m\":2,\"a\":1}");
        let out = insert_first_member(b"{ }", b"\"m\":2").unwrap();
        assert_eq!(out, "{\"m\":2 }");
        assert!(insert_first_member(b"[]", b"\"m\":2").is_none());
        let out = insert_model(&Bytes::from_static(b"{\"input\":\"x\"}"), "omni").unwrap();
        assert_eq!(out, "{\"model\":\"omni\",\"input\":\"x\"}");
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

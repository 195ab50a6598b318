//! Thin wrappers around the router's parsers for the fuzz targets in `fuzz/`.
//!
//! Built only with the `fuzzing` feature and hidden from the docs: this is no public API and
//! may change at any time. Each function takes plain bytes and strings, so a fuzz target needs
//! no crate-private type.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::route::{Form, boundary, peek_json, rewrite_json_model};
use crate::sse::{EventScanner, Usage};

/// The top-level `model` as routing reads it: `None` when the body is refused, `Some(None)`
/// when `model` is absent or `null`.
pub fn peek_model(body: &[u8]) -> Option<Option<String>> {
    peek_json(body).ok().map(|peeked| peeked.model)
}

/// The body with its `model` set to `model` as routing does it (replaced in place, or added
/// first), or `None` when the body is refused.
pub fn rewrite_model(body: &[u8], model: &str) -> Option<Vec<u8>> {
    let peeked = peek_json(body).ok()?;
    let out = rewrite_json_model(Bytes::copy_from_slice(body), &peeked, model).ok()?;
    Some(out.to_vec())
}

/// One form part as routing read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPart {
    /// The part's name.
    pub name: String,
    /// Its headers, in order: lowercase name, value bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its data.
    pub data: Vec<u8>,
}

/// Parses a form as routing does (boundary from `content_type`); `None` when it is refused.
pub fn parse_form(content_type: &str, body: &[u8]) -> Option<Vec<FormPart>> {
    let boundary = boundary(content_type).ok()?;
    let form = Form::parse(Bytes::copy_from_slice(body), &boundary).ok()?;
    Some(parts(&form))
}

/// Parses a form and re-encodes it with `model`, as routing does: the new body and its
/// `Content-Type`, or `None` when the form is refused.
pub fn rewrite_form(content_type: &str, body: &[u8], model: &str) -> Option<(Vec<u8>, String)> {
    let boundary = boundary(content_type).ok()?;
    let form = Form::parse(Bytes::copy_from_slice(body), &boundary).ok()?;
    let (body, content_type) = form.encode_with_model(model);
    Some((body.to_vec(), content_type.to_str().ok()?.to_owned()))
}

fn parts(form: &Form) -> Vec<FormPart> {
    form.parts()
        .map(|(name, headers, data)| FormPart {
            name: name.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            data: data.to_vec(),
        })
        .collect()
}

/// The SSE scanner of the `Sse` layer, fed with byte slices.
#[derive(Debug)]
pub struct SseScanner {
    inner: EventScanner,
}

impl SseScanner {
    /// A scanner; `strip_usage_chunk` drops the `choices: []` usage chunk, as for a provider
    /// with injected usage.
    pub fn new(strip_usage_chunk: bool) -> Self {
        Self {
            inner: EventScanner::new(strip_usage_chunk),
        }
    }

    /// Scans `chunk`; returns the bytes the client would receive now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = VecDeque::new();
        self.inner.feed(Bytes::copy_from_slice(chunk), &mut out);
        out.iter().flat_map(|bytes| bytes.iter().copied()).collect()
    }

    /// The stream ended: the held bytes of an unfinished last event.
    pub fn finish(&mut self) -> Vec<u8> {
        self.inner.finish().map(|b| b.to_vec()).unwrap_or_default()
    }

    /// How many events with data were seen.
    pub fn events(&self) -> u64 {
        self.inner.events()
    }

    /// The last usage seen.
    pub fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }
}

/// The router key `Auth` reads from these `Authorization` header values (values that are not
/// valid header values are left out, as hyper would refuse them); `None` when refused.
pub fn bearer_key(values: &[&[u8]]) -> Option<String> {
    let mut headers = HeaderMap::new();
    for value in values {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(header::AUTHORIZATION, value);
        }
    }
    crate::auth::bearer_key(&headers).ok().map(str::to_owned)
}

//! Deciding what an upstream error answer becomes.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::body::Full;
use crate::error::{Error, render_body};

/// Headers of an upstream error worth keeping on a replaced (normalised) answer.
fn keep_on_replace(name: &str) -> bool {
    name == "retry-after"
        || name == "retry-after-ms"
        || name == "x-should-retry"
        || name == "x-upstream-request-id"
        || name.starts_with("x-ratelimit-")
        // The router's own: which target answered, after how many attempts.
        || name.starts_with("x-ai-router-")
}

/// What an upstream error body is.
pub(super) enum Verdict {
    /// An OpenAI error object with all four keys: pass it through untouched.
    PassThrough,
    /// An OpenAI error object missing `type`, `param` or `code`: re-render it with all four.
    Complete(Bytes),
    /// Not OpenAI-shaped (or a 401): answer this error instead.
    Replace(Error),
}

/// Classifies an upstream error answer of `status` with `body`.
pub(super) fn classify(status: StatusCode, body: &[u8]) -> Verdict {
    if status == StatusCode::UNAUTHORIZED {
        return Verdict::Replace(Error::provider_auth_failed());
    }
    if status.is_redirection() {
        return Verdict::Replace(Error::upstream_status(status));
    }
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        error: Object<'a>,
    }
    #[derive(Deserialize)]
    struct Object<'a> {
        message: String,
        #[serde(rename = "type", borrow, default)]
        kind: Option<&'a RawValue>,
        #[serde(borrow, default)]
        param: Option<&'a RawValue>,
        #[serde(borrow, default)]
        code: Option<&'a RawValue>,
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return Verdict::Replace(Error::upstream_status(status));
    };
    let object = envelope.error;
    if object.kind.is_some() && object.param.is_some() && object.code.is_some() {
        return Verdict::PassThrough;
    }
    // Keep string values; anything else (numbers, objects) becomes null.
    let text =
        |raw: Option<&RawValue>| raw.and_then(|v| serde_json::from_str::<String>(v.get()).ok());
    let kind = text(object.kind).unwrap_or_else(|| default_type(status).to_owned());
    let param = text(object.param);
    let code = text(object.code);
    Verdict::Complete(render_body(
        &object.message,
        &kind,
        param.as_deref(),
        code.as_deref(),
    ))
}

/// The OpenAI `type` for a status, when an upstream left it out.
fn default_type(status: StatusCode) -> &'static str {
    if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    }
}

/// Builds the answer for an upstream error: its own head with `body`.
pub(super) fn with_body(mut parts: http::response::Parts, body: Bytes) -> Response<Full> {
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Full::new(body))
}

/// Renders `error` in place of an upstream answer, keeping its retry and rate-limit headers.
pub(super) fn replace(upstream_headers: &HeaderMap, error: Error) -> Response<Full> {
    let mut response = error.into_response();
    for (name, value) in upstream_headers {
        if keep_on_replace(name.as_str()) && !response.headers().contains_key(name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

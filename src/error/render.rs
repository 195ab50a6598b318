//! Rendering: the error response (status, four-key body, retry and rate-limit headers).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, header};
use serde::Serialize;

use super::{Error, Kind};
use crate::body::Full;

impl Error {
    /// Renders the OpenAI error response: status, four-key JSON body, `Allow`, `retry-after`
    /// and `x-should-retry` where they apply.
    pub fn into_response(self) -> Response<Full> {
        let parts = self.parts();
        let body = render_body(&parts.message, parts.kind, parts.param, parts.code);
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = parts.status;
        // Tells `OpenAiErrors` this answer is already in shape (not an upstream's to read).
        response.extensions_mut().insert(Rendered);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Kind::MethodNotAllowed { allow } = self.kind {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(wait) = self.retry_after() {
            // `retry-after` in whole seconds, at least 1; `retry-after-ms` exact.
            // `retry_after` is at least 1 ms, so both figures are at least 1.
            let secs = wait.as_millis().div_ceil(1000) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            headers.insert(RETRY_AFTER_MS, HeaderValue::from(wait.as_millis() as u64));
        }
        match self.kind {
            Kind::RateLimited { limit, wait } => {
                write_rate_headers(headers, RateUnit::Requests, limit, 0, wait);
            }
            Kind::TokensLimited { limit, wait } => {
                write_rate_headers(headers, RateUnit::Tokens, limit, 0, wait);
            }
            _ => {}
        }
        if let Some(retry) = parts.should_retry {
            headers.insert(
                X_SHOULD_RETRY,
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        response
    }
}

/// Marks a response the error table rendered (a response extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rendered;

/// Whether `response` is an error the router rendered itself (not an upstream's answer).
pub(crate) fn is_rendered<B>(response: &Response<B>) -> bool {
    response.extensions().get::<Rendered>().is_some()
}

/// What a rate limit counts: OpenAI's `x-ratelimit-*-requests` or `x-ratelimit-*-tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateUnit {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl RateUnit {
    /// The limit, remaining and reset header names.
    fn names(self) -> [HeaderName; 3] {
        match self {
            Self::Requests => [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
            Self::Tokens => [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        }
    }
}

/// Writes OpenAI's rate-limit headers for `unit` (replacing an upstream's): `limit` per
/// window, `remaining` left, the window full again after `reset`.
pub(crate) fn write_rate_headers(
    headers: &mut HeaderMap,
    unit: RateUnit,
    limit: u32,
    remaining: u32,
    reset: Duration,
) {
    let [limit_name, remaining_name, reset_name] = unit.names();
    headers.insert(limit_name, HeaderValue::from(limit));
    headers.insert(remaining_name, HeaderValue::from(remaining));
    if let Ok(reset) = HeaderValue::try_from(format_reset(reset)) {
        headers.insert(reset_name, reset);
    }
}

/// OpenAI's reset format: `1s`, `0.25s`, `6m0s`.
pub(super) fn format_reset(reset: Duration) -> String {
    let millis = reset.as_millis();
    if millis < 60_000 {
        let secs = reset.as_secs_f64();
        let text = format!("{secs:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text}s")
    } else {
        format!("{}m{}s", millis / 60_000, (millis % 60_000) / 1000)
    }
}

/// The SDKs' retry switch: `false` on failures a retry cannot fix.
const X_SHOULD_RETRY: &str = "x-should-retry";
/// The SDKs' preferred retry delay, in milliseconds.
const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Serializes `{"error":{"message","type","param","code"}}`, all four keys always present.
pub(crate) fn render_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Object<'a>,
    }
    #[derive(Serialize)]
    struct Object<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    let envelope = Envelope {
        error: Object {
            message,
            kind,
            param,
            code,
        },
    };
    // Serializing plain strings into a Vec cannot fail; fall back to a fixed body anyway.
    serde_json::to_vec(&envelope).map(Bytes::from).unwrap_or_else(|_| {
        Bytes::from_static(
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#,
        )
    })
}

//! Anthropic error answers -> OpenAI error objects.
//!
//! Anthropic answers `{"type":"error","error":{"type","message"}}`; the `type` decides the
//! status and OpenAI's `type` / `code`:
//!
//! | Anthropic | status | OpenAI `type` | `code` |
//! |---|---|---|---|
//! | `invalid_request_error` | as sent (a 4xx) | `invalid_request_error` | - |
//! | `authentication_error` | 401 (502 `provider_auth_failed` above) | `invalid_request_error` | - |
//! | `permission_error` | 403 | `permission_error` | - |
//! | `not_found_error` | 404 | `invalid_request_error` | `model_not_found` |
//! | `request_too_large` | 413 | `invalid_request_error` | `request_too_large` |
//! | `rate_limit_error` | 429 | `requests` | `rate_limit_exceeded` |
//! | `api_error` | 500 | `server_error` | - |
//! | `overloaded_error` | 503 | `server_error` | `overloaded` |
//!
//! Their messages are kept, except the credential's (it may quote the key). Any other type,
//! or a body that is not Anthropic's error, keeps the status (529 is 503) with a fixed message.

use std::borrow::Cow;

use http::StatusCode;
use serde::Deserialize;

use crate::provider::dialect::ErrorAnswer;
use crate::provider::dialect::openai::error_body;

/// OpenAI's error types.
const INVALID_REQUEST: &str = "invalid_request_error";
const SERVER_ERROR: &str = "server_error";

/// Translates an Anthropic error answer (`status`, `body`) into OpenAI's shape.
pub(crate) fn error_answer(status: StatusCode, body: &[u8]) -> ErrorAnswer {
    let detail = serde_json::from_slice::<Envelope<'_>>(body)
        .ok()
        .map(|e| e.error);
    let (status, kind, code, message) = match detail {
        Some(detail) => match known(&detail.kind, status) {
            Some((status, kind, code, keep)) => {
                let message = detail
                    .message
                    .filter(|m| keep && !m.is_empty())
                    .unwrap_or_else(|| Cow::Owned(fixed_message(status)));
                (status, kind, code, message)
            }
            None => fallback(status),
        },
        None => fallback(status),
    };
    ErrorAnswer {
        status,
        body: error_body(&message, kind, code),
        retry_after: None,
    }
}

/// Status, OpenAI type, code, and whether the message is kept, for a known Anthropic type.
fn known(
    kind: &str,
    status: StatusCode,
) -> Option<(StatusCode, &'static str, Option<&'static str>, bool)> {
    Some(match kind {
        "invalid_request_error" => {
            // Anthropic uses this type for 4xx statuses it lists no type for.
            let status = if status.is_client_error() {
                status
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, INVALID_REQUEST, None, true)
        }
        "authentication_error" => (StatusCode::UNAUTHORIZED, INVALID_REQUEST, None, false),
        "permission_error" => (StatusCode::FORBIDDEN, "permission_error", None, true),
        "not_found_error" => (
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            Some("model_not_found"),
            true,
        ),
        "request_too_large" => (
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            Some("request_too_large"),
            true,
        ),
        "rate_limit_error" => (
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
            true,
        ),
        "api_error" => (StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR, None, true),
        "overloaded_error" => (
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            Some("overloaded"),
            true,
        ),
        _ => return None,
    })
}

/// An answer we cannot read: its status (529 as 503; a non-error status as 502), the type of
/// its class and a fixed message.
fn fallback(
    status: StatusCode,
) -> (
    StatusCode,
    &'static str,
    Option<&'static str>,
    Cow<'static, str>,
) {
    let status = match status.as_u16() {
        529 => StatusCode::SERVICE_UNAVAILABLE,
        400..=599 => status,
        _ => StatusCode::BAD_GATEWAY,
    };
    let (kind, code) = match status.as_u16() {
        // A rate limit stays one for the SDKs (they retry it) whatever the body said.
        429 => ("requests", Some("rate_limit_exceeded")),
        400..=499 => (INVALID_REQUEST, None),
        _ => (SERVER_ERROR, None),
    };
    (status, kind, code, Cow::Owned(fixed_message(status)))
}

fn fixed_message(status: StatusCode) -> String {
    format!(
        "The upstream provider answered with an error (HTTP {}).",
        status.as_u16()
    )
}

/// Anthropic's error answer.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    error: Detail<'a>,
}

/// `error`: its type and message.
#[derive(Deserialize)]
struct Detail<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn translate(status: u16, body: &[u8]) -> (u16, Value) {
        let answer = error_answer(StatusCode::from_u16(status).unwrap(), body);
        assert_eq!(answer.retry_after, None);
        (
            answer.status.as_u16(),
            serde_json::from_slice(&answer.body).unwrap(),
        )
    }

    fn anthropic(kind: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})).unwrap()
    }

    #[test]
    fn known_types() {
        let cases = [
            (
                400,
                "invalid_request_error",
                400,
                "invalid_request_error",
                Value::Null,
            ),
            (
                422,
                "invalid_request_error",
                422,
                "invalid_request_error",
                Value::Null,
            ),
            (
                403,
                "permission_error",
                403,
                "permission_error",
                Value::Null,
            ),
            (
                404,
                "not_found_error",
                404,
                "invalid_request_error",
                json!("model_not_found"),
            ),
            (
                413,
                "request_too_large",
                413,
                "invalid_request_error",
                json!("request_too_large"),
            ),
            (
                429,
                "rate_limit_error",
                429,
                "requests",
                json!("rate_limit_exceeded"),
            ),
            (500, "api_error", 500, "server_error", Value::Null),
            (
                529,
                "overloaded_error",
                503,
                "server_error",
                json!("overloaded"),
            ),
        ];
        for (status, kind, want_status, want_type, want_code) in cases {
            let (got_status, body) = translate(status, &anthropic(kind, "Something specific"));
            assert_eq!(got_status, want_status, "{kind}");
            assert_eq!(
                body,
                json!({"error": {"message": "Something specific", "type": want_type, "param": null, "code": want_code}}),
                "{kind}"
            );
        }
    }

    #[test]
    fn credential_message_is_not_shown() {
        let (status, body) = translate(
            401,
            &anthropic("authentication_error", "invalid x-api-key sk-ant-123"),
        );
        assert_eq!(status, 401);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("sk-ant"), "{message}");
        assert_eq!(body["error"]["param"], Value::Null);
    }

    #[test]
    fn unknown_and_unparsable_answers() {
        let cases: [(u16, &[u8], u16, &str); 6] = [
            (
                402,
                &anthropic("billing_error", "pay up"),
                402,
                "invalid_request_error",
            ),
            (
                400,
                b"<html>Bad Request</html>",
                400,
                "invalid_request_error",
            ),
            (502, b"", 502, "server_error"),
            (529, b"overloaded", 503, "server_error"),
            (
                504,
                &anthropic("timeout_error", "slow"),
                504,
                "server_error",
            ),
            (200, b"{}", 502, "server_error"),
        ];
        for (status, body, want_status, want_type) in cases {
            let (got, body) = translate(status, body);
            assert_eq!(got, want_status);
            assert_eq!(body["error"]["type"], want_type);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("The upstream provider answered"),
                "{message}"
            );
            assert_eq!(body["error"].as_object().unwrap().len(), 4);
        }
    }
}

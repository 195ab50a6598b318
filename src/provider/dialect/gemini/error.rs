//! Gemini error answers (`{"error":{"code","message","status","details"}}`, Google's
//! `google.rpc.Status`) -> OpenAI's error object and status.

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::super::ErrorAnswer;
use super::super::openai::error_body;

/// Google's error envelope.
#[derive(Deserialize)]
struct Envelope {
    error: Status,
}

/// A `google.rpc.Status`.
#[derive(Default, Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

impl Status {
    /// The details of type `google.rpc.<kind>`.
    fn details<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> {
        self.details.iter().filter(move |d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.rsplit('/').next() == Some(kind))
        })
    }

    /// `ErrorInfo.reason`, e.g. `API_KEY_INVALID`.
    fn reason(&self) -> Option<&str> {
        self.details("google.rpc.ErrorInfo")
            .find_map(|d| d.get("reason").and_then(Value::as_str))
    }

    /// `RetryInfo.retryDelay` ("17s", "0.5s") in whole seconds, rounded up.
    fn retry_after(&self) -> Option<u64> {
        self.details("google.rpc.RetryInfo")
            .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
            .and_then(parse_delay)
    }

    /// Our API key was refused (bad, expired, missing, blocked, or its project cannot use
    /// the API): Gemini says so with 400 `API_KEY_INVALID`, 401, or 403.
    fn is_credential_failure(&self, status: StatusCode) -> bool {
        let reason = self.reason().unwrap_or("");
        if reason.starts_with("API_KEY_") || self.status == "UNAUTHENTICATED" {
            return true;
        }
        let denied = status == StatusCode::FORBIDDEN || self.status == "PERMISSION_DENIED";
        let about_the_key = matches!(
            reason,
            "SERVICE_DISABLED" | "CONSUMER_INVALID" | "CONSUMER_SUSPENDED"
        ) || {
            let message = self.message.to_ascii_lowercase();
            message.contains("api key") || message.contains("unregistered callers")
        };
        denied && about_the_key
    }
}

/// `"17s"` -> 17, `"0.5s"` -> 1, `"1.000s"` -> 1.
fn parse_delay(delay: &str) -> Option<u64> {
    let seconds = delay.trim().strip_suffix('s')?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let round_up = fraction.bytes().any(|b| b != b'0');
    Some(whole.saturating_add(u64::from(round_up)))
}

/// Translates a Gemini error answer.
pub(crate) fn error_answer(status: StatusCode, body: &[u8]) -> ErrorAnswer {
    // A stream without `alt=sse` wraps the error in an array. (Checked first: serde would
    // also read an array as a struct, field by field.)
    let parsed = if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<Envelope>>(body)
            .ok()
            .and_then(|all| all.into_iter().next())
    } else {
        serde_json::from_slice::<Envelope>(body).ok()
    }
    .map(|envelope| envelope.error);
    let Some(error) = parsed else {
        return unparsed(status);
    };
    let retry_after = error.retry_after();
    let message = if error.message.is_empty() {
        fallback_message(status)
    } else {
        error.message.clone()
    };
    if error.is_credential_failure(status) {
        // The layer above answers 502 `provider_auth_failed` with its own message; this
        // one never quotes Gemini's (which can name the key).
        return ErrorAnswer {
            status: StatusCode::UNAUTHORIZED,
            body: error_body(
                "The provider refused the router's credential.",
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            retry_after: None,
        };
    }
    let (status, kind, code) = classify(status, &error.status);
    ErrorAnswer {
        status,
        body: error_body(&message, kind, code),
        retry_after,
    }
}

/// OpenAI status, `type` and `code` for Gemini's HTTP status and `google.rpc.Code` name.
fn classify(status: StatusCode, rpc: &str) -> (StatusCode, &'static str, Option<&'static str>) {
    match (status.as_u16(), rpc) {
        (429, _) | (_, "RESOURCE_EXHAUSTED") => (
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
        ),
        (404, _) | (_, "NOT_FOUND") => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        (403, _) | (_, "PERMISSION_DENIED") => (StatusCode::FORBIDDEN, "permission_error", None),
        (413, _) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
        ),
        (503, _) | (_, "UNAVAILABLE") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable_error",
            None,
        ),
        (504, _) | (_, "DEADLINE_EXCEEDED") => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", None),
        (500, _) | (_, "INTERNAL") => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        _ => by_status(status),
    }
}

fn by_status(status: StatusCode) -> (StatusCode, &'static str, Option<&'static str>) {
    match status.as_u16() {
        401 => (status, "invalid_request_error", Some("invalid_api_key")),
        403 => (status, "permission_error", None),
        404 => (status, "invalid_request_error", Some("model_not_found")),
        429 => (status, "requests", Some("rate_limit_exceeded")),
        503 => (status, "service_unavailable_error", None),
        504 => (status, "timeout_error", None),
        _ if status.is_client_error() => (status, "invalid_request_error", None),
        // A 2xx or 3xx is no error answer at all: the provider broke the exchange.
        _ if !status.is_server_error() => (StatusCode::BAD_GATEWAY, "server_error", None),
        _ => (status, "server_error", None),
    }
}

fn fallback_message(status: StatusCode) -> String {
    format!("The upstream provider answered HTTP {}.", status.as_u16())
}

/// An answer whose body is not Google's error JSON: the status decides, with a fixed message.
fn unparsed(status: StatusCode) -> ErrorAnswer {
    let (status, kind, code) = by_status(status);
    ErrorAnswer {
        status,
        body: error_body(&fallback_message(status), kind, code),
        retry_after: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translate(status: u16, body: Value) -> (u16, Value, Option<u64>) {
        let answer = error_answer(
            StatusCode::from_u16(status).unwrap(),
            &serde_json::to_vec(&body).unwrap(),
        );
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        let keys: Vec<&String> = body["error"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["code", "message", "param", "type"], "all four keys");
        (
            answer.status.as_u16(),
            body["error"].clone(),
            answer.retry_after,
        )
    }

    fn google(code: u16, status: &str, message: &str, details: Value) -> Value {
        json!({ "error": { "code": code, "message": message, "status": status, "details": details } })
    }

    #[test]
    fn a_bad_key_is_our_credential_failing() {
        let invalid = google(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": { "service": "generativelanguage.googleapis.com" },
            }]),
        );
        let missing = google(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            json!([]),
        );
        let disabled = google(
            403,
            "PERMISSION_DENIED",
            "Generative Language API has not been used in project 1 before or it is disabled.",
            json!([{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED" }]),
        );
        let unauthenticated = google(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        );
        for body in [invalid, missing, disabled, unauthenticated] {
            let (status, error, retry) =
                translate(body["error"]["code"].as_u64().unwrap() as u16, body);
            assert_eq!(status, 401);
            assert_eq!(error["code"], "invalid_api_key");
            assert!(
                !error["message"]
                    .as_str()
                    .unwrap()
                    .contains("API key not valid")
            );
            assert_eq!(retry, None);
        }
        // A permission problem that is not about the key stays a 403.
        let (status, error, _) = translate(
            403,
            google(
                403,
                "PERMISSION_DENIED",
                "You do not have permission to access tuned model x.",
                json!([]),
            ),
        );
        assert_eq!(
            (status, error["type"].as_str()),
            (403, Some("permission_error"))
        );
    }

    #[test]
    fn statuses() {
        let cases = [
            (
                400,
                "INVALID_ARGUMENT",
                400,
                "invalid_request_error",
                Value::Null,
            ),
            (
                400,
                "FAILED_PRECONDITION",
                400,
                "invalid_request_error",
                Value::Null,
            ),
            (
                404,
                "NOT_FOUND",
                404,
                "invalid_request_error",
                json!("model_not_found"),
            ),
            (500, "INTERNAL", 500, "server_error", Value::Null),
            (
                503,
                "UNAVAILABLE",
                503,
                "service_unavailable_error",
                Value::Null,
            ),
            (504, "DEADLINE_EXCEEDED", 504, "timeout_error", Value::Null),
            (
                429,
                "RESOURCE_EXHAUSTED",
                429,
                "requests",
                json!("rate_limit_exceeded"),
            ),
        ];
        for (code, rpc, status, kind, openai_code) in cases {
            let (got, error, _) = translate(code, google(code, rpc, "Something.", json!([])));
            assert_eq!(got, status, "{rpc}");
            assert_eq!(error["type"], kind, "{rpc}");
            assert_eq!(error["code"], openai_code, "{rpc}");
            assert_eq!(error["message"], "Something.");
            assert_eq!(error["param"], Value::Null);
        }
    }

    #[test]
    fn retry_info_sets_retry_after() {
        let quota = |delay: &str| {
            google(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota.",
                json!([
                    { "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [] },
                    { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay },
                ]),
            )
        };
        assert_eq!(translate(429, quota("17s")).2, Some(17));
        assert_eq!(translate(429, quota("0.5s")).2, Some(1));
        assert_eq!(translate(429, quota("2.000s")).2, Some(2));
        assert_eq!(translate(429, quota("soon")).2, None);
        assert_eq!(
            translate(429, google(429, "RESOURCE_EXHAUSTED", "x", json!([]))).2,
            None
        );
        assert_eq!(parse_delay("53.123s"), Some(54));
        assert_eq!(parse_delay(".5s"), Some(1));
        assert_eq!(parse_delay("5"), None);
    }

    #[test]
    fn a_huge_retry_delay_saturates() {
        assert_eq!(parse_delay("18446744073709551615.5s"), Some(u64::MAX));
    }

    #[test]
    fn unparsable_bodies_keep_the_status() {
        for (status, kind) in [
            (502, "server_error"),
            (503, "service_unavailable_error"),
            (400, "invalid_request_error"),
        ] {
            let answer = error_answer(
                StatusCode::from_u16(status).unwrap(),
                b"<html>Bad Gateway</html>",
            );
            assert_eq!(answer.status.as_u16(), status);
            let body: Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(body["error"]["type"], kind);
            assert_eq!(
                body["error"]["message"],
                format!("The upstream provider answered HTTP {status}.")
            );
        }
        // The array a non-SSE stream wraps errors in.
        let wrapped = json!([google(400, "INVALID_ARGUMENT", "Bad thing.", json!([]))]);
        let (status, error, _) = translate(400, wrapped);
        assert_eq!(
            (status, error["message"].as_str()),
            (400, Some("Bad thing."))
        );
    }
}

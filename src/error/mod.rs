//! The one table of router failures and how each is shown to an OpenAI client.
//!
//! A layer that refuses a request answers with [`Error::into_response`]; a provider that fails
//! returns an [`Error`], which [`OpenAiErrors`](crate::openai_errors::OpenAiErrors) renders the
//! same way. This table is the only place that knows statuses, OpenAI `type`s, `code`s, public
//! messages and retry headers. Internal detail (hyper and io errors, upstream bodies) is kept
//! as the error's [`source`](std::error::Error::source) for logs and never reaches the
//! client.
//!
//! A leaf module: it imports no layer.
//!
//! # Example
//! ```
//! use ai_router::Error;
//!
//! let error = Error::model_not_found("acme/nope");
//! assert_eq!(error.status(), http::StatusCode::NOT_FOUND);
//! let response = error.into_response();
//! assert_eq!(response.headers()["content-type"], "application/json");
//! ```

mod render;
mod table;

use std::fmt;
use std::time::Duration;

use http::StatusCode;

pub(crate) use self::render::{RateUnit, is_rendered, render_body, write_rate_headers};
pub(crate) use self::table::retryable_status;

/// A boxed error, as Tower and hyper pass them around.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure the router reports to its client as an OpenAI error object.
///
/// Opaque on purpose: build one with the constructors, ask it with the `is_*` predicates, and
/// render it with [`Error::into_response`]. See the module docs.
pub struct Error {
    kind: Kind,
    source: Option<BoxError>,
}

/// What went wrong; each kind is one row of the table in [`Error::parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    InvalidJson,
    InvalidBody(&'static str),
    MissingParam(&'static str),
    InvalidParam { param: String, message: String },
    UnsupportedParam(String, String),
    UnsupportedEndpoint(String, &'static str),
    InvalidModel,
    UnsupportedContentType { expected: &'static str },
    UnsupportedContentEncoding,
    BodyRead,
    BodyTimeout,
    PayloadTooLarge { limit: usize },
    MissingApiKey,
    MalformedAuthorization,
    DuplicateAuthorization,
    InvalidApiKey { masked: String },
    ExpiredApiKey,
    ModelNotAllowed { model: String },
    RateLimited { limit: u32, wait: Duration },
    TokensLimited { limit: u32, wait: Duration },
    ConcurrencyLimited { limit: u32 },
    KeyStoreUnavailable,
    LimitsUnavailable,
    Overloaded,
    ModelNotFound { model: String },
    UnknownUrl { method: String, path: String },
    MethodNotAllowed { allow: &'static str },
    ProviderUnavailable,
    ProviderAuthFailed,
    UpstreamStatus { status: StatusCode },
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamProtocol,
    Internal,
}
impl Error {
    fn new(kind: Kind) -> Self {
        Self { kind, source: None }
    }

    /// Keeps `source` as the cause, for logs only.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The request body is not valid JSON (400).
    pub fn invalid_json() -> Self {
        Self::new(Kind::InvalidJson)
    }

    /// The request body is JSON but not of the expected shape; `what` says why (400).
    pub fn invalid_body(what: &'static str) -> Self {
        Self::new(Kind::InvalidBody(what))
    }

    /// A required parameter is missing (400, `param` names it).
    pub fn missing_param(param: &'static str) -> Self {
        Self::new(Kind::MissingParam(param))
    }

    /// A parameter has a value the router cannot use (400, `param` names it, e.g.
    /// `retry.count` or `fallbacks[1].model`); `message` says what it must be.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidParam {
            param: param.into(),
            message: message.into(),
        })
    }

    /// The request sets a parameter the answering provider cannot honour (400
    /// `unsupported_parameter`, `param` names it); a provider set to drop such parameters
    /// never returns this.
    pub fn unsupported_param(param: impl Into<String>, provider: impl Into<String>) -> Self {
        Self::new(Kind::UnsupportedParam(param.into(), provider.into()))
    }

    /// The model's provider has no such endpoint, e.g. images on Anthropic (400
    /// `unsupported_endpoint`, naming the model and the endpoint).
    pub fn unsupported_endpoint(model: impl Into<String>, endpoint: &'static str) -> Self {
        Self::new(Kind::UnsupportedEndpoint(model.into(), endpoint))
    }

    /// The `model` value is not a usable model id (400).
    pub fn invalid_model() -> Self {
        Self::new(Kind::InvalidModel)
    }

    /// The body's content type does not fit the endpoint, which takes `expected`
    /// (400 `unsupported_content_type`, never 415).
    pub fn unsupported_content_type(expected: &'static str) -> Self {
        Self::new(Kind::UnsupportedContentType { expected })
    }

    /// The request body is compressed (a `Content-Encoding` other than `identity`): the router
    /// reads bodies only as sent (400 `unsupported_content_encoding`, never 415).
    pub fn unsupported_content_encoding() -> Self {
        Self::new(Kind::UnsupportedContentEncoding)
    }

    /// The request body could not be read from the client (400).
    pub fn body_read() -> Self {
        Self::new(Kind::BodyRead)
    }

    /// The client did not send its whole body in time (408 `request_timeout`).
    pub fn body_timeout() -> Self {
        Self::new(Kind::BodyTimeout)
    }

    /// The request body is larger than `limit` bytes (413 `request_too_large`).
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(Kind::PayloadTooLarge { limit })
    }

    /// No `Authorization` header (401 `invalid_api_key`).
    pub fn missing_api_key() -> Self {
        Self::new(Kind::MissingApiKey)
    }

    /// An `Authorization` header that is not `Bearer <key>` (401 `invalid_api_key`).
    pub fn malformed_authorization() -> Self {
        Self::new(Kind::MalformedAuthorization)
    }

    /// More than one `Authorization` header (401 `invalid_api_key`): which one a proxy in
    /// front or behind would read is unknowable.
    pub fn duplicate_authorization() -> Self {
        Self::new(Kind::DuplicateAuthorization)
    }

    /// A key that no store knows (401 `invalid_api_key`); only a masked prefix is shown.
    pub fn invalid_api_key(presented: &str) -> Self {
        Self::new(Kind::InvalidApiKey {
            masked: mask_key(presented),
        })
    }

    /// A known key past its expiry (401 `invalid_api_key`).
    pub fn expired_api_key() -> Self {
        Self::new(Kind::ExpiredApiKey)
    }

    /// The key may not use `model` (403 `model_not_allowed`); names the model, not the key.
    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(Kind::ModelNotAllowed {
            model: model.to_owned(),
        })
    }

    /// The key used its `limit` requests per minute; the next is admitted after `wait`
    /// (429 `rate_limit_exceeded`, with `retry-after`, `retry-after-ms` and
    /// `x-ratelimit-*-requests`).
    pub fn rate_limited(limit: u32, wait: Duration) -> Self {
        Self::new(Kind::RateLimited { limit, wait })
    }

    /// The key has spent its `limit` tokens per minute; `wait` until some are free again (429
    /// `rate_limit_exceeded`, with `retry-after` and `x-ratelimit-*-tokens`).
    pub fn tokens_limited(limit: u32, wait: Duration) -> Self {
        Self::new(Kind::TokensLimited { limit, wait })
    }

    /// The key has `limit` requests in flight already (429 `rate_limit_exceeded`).
    pub fn concurrency_limited(limit: u32) -> Self {
        Self::new(Kind::ConcurrencyLimited { limit })
    }

    /// How long the client should wait before retrying, when the router knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            Kind::RateLimited { wait, .. } | Kind::TokensLimited { wait, .. } => {
                Some(wait.max(Duration::from_millis(1)))
            }
            Kind::ConcurrencyLimited { .. } | Kind::Overloaded => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The key store could not answer, or not in time (503): never treated as "allow".
    pub fn key_store_unavailable() -> Self {
        Self::new(Kind::KeyStoreUnavailable)
    }

    /// The limiter could not answer, or not in time (503 `limits_unavailable`).
    pub fn limits_unavailable() -> Self {
        Self::new(Kind::LimitsUnavailable)
    }

    /// The router has as many requests in flight as it takes (503 `overloaded`, with
    /// `retry-after`).
    pub fn overloaded() -> Self {
        Self::new(Kind::Overloaded)
    }

    /// No provider or alias serves `model` (404 `model_not_found`).
    pub fn model_not_found(model: &str) -> Self {
        Self::new(Kind::ModelNotFound {
            model: model.to_owned(),
        })
    }

    /// No endpoint at this path (404, "Invalid URL (METHOD path)").
    pub fn unknown_url(method: &http::Method, path: &str) -> Self {
        Self::new(Kind::UnknownUrl {
            method: method.as_str().to_owned(),
            path: path.to_owned(),
        })
    }

    /// A known path called with the wrong method (405, with `Allow`).
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::new(Kind::MethodNotAllowed { allow })
    }

    /// The provider cannot be called, e.g. its key is not configured (503, not retried).
    pub fn provider_unavailable() -> Self {
        Self::new(Kind::ProviderUnavailable)
    }

    /// The provider refused our credential (upstream 401, shown as 502).
    pub fn provider_auth_failed() -> Self {
        Self::new(Kind::ProviderAuthFailed)
    }

    /// The upstream answered `status` with a body that is not an OpenAI error.
    pub fn upstream_status(status: StatusCode) -> Self {
        Self::new(Kind::UpstreamStatus { status })
    }

    /// The upstream could not be reached (502).
    pub fn upstream_unreachable() -> Self {
        Self::new(Kind::UpstreamUnreachable)
    }

    /// The upstream did not answer in time (504).
    pub fn upstream_timeout() -> Self {
        Self::new(Kind::UpstreamTimeout)
    }

    /// The upstream broke the HTTP exchange (502).
    pub fn upstream_protocol() -> Self {
        Self::new(Kind::UpstreamProtocol)
    }

    /// A failure that is the router's own fault (500).
    pub fn internal() -> Self {
        Self::new(Kind::Internal)
    }

    /// Whether the client was refused for its credentials (401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self.kind,
            Kind::MissingApiKey
                | Kind::MalformedAuthorization
                | Kind::DuplicateAuthorization
                | Kind::InvalidApiKey { .. }
                | Kind::ExpiredApiKey
        )
    }

    /// Whether the failure is on the upstream's side (unreachable, timeout, broken, refused).
    pub fn is_upstream(&self) -> bool {
        matches!(
            self.kind,
            Kind::ProviderAuthFailed
                | Kind::UpstreamStatus { .. }
                | Kind::UpstreamUnreachable
                | Kind::UpstreamTimeout
                | Kind::UpstreamProtocol
        )
    }

    /// Whether the upstream timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::UpstreamTimeout)
    }

    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        self.parts().status
    }

    /// The OpenAI `code` the client gets, if any.
    pub fn code(&self) -> Option<&'static str> {
        self.parts().code
    }
}

/// Shows at most the first few characters of a presented key, then `***`.
fn mask_key(key: &str) -> String {
    let prefix: String = key.chars().take(4).filter(|c| !c.is_control()).collect();
    if key.chars().count() <= 8 {
        "***".to_owned()
    } else {
        format!("{prefix}***")
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts().message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A configuration the router cannot be built from; the message names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    message: String,
}

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::render::format_reset;
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(error: Error) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn every_body_has_four_keys() {
        let cases = [
            Error::invalid_json(),
            Error::missing_param("model"),
            Error::unsupported_content_encoding(),
            Error::payload_too_large(10),
            Error::missing_api_key(),
            Error::duplicate_authorization(),
            Error::model_not_found("x/y"),
            Error::unknown_url(&http::Method::POST, "/v3/router/foo"),
            Error::method_not_allowed("POST"),
            Error::provider_unavailable(),
            Error::upstream_status(StatusCode::INTERNAL_SERVER_ERROR),
            Error::upstream_timeout(),
            Error::internal(),
        ];
        for error in cases {
            let (_, json) = body_json(error).await;
            let object = json["error"].as_object().unwrap();
            let mut keys: Vec<_> = object.keys().cloned().collect();
            keys.sort();
            assert_eq!(keys, ["code", "message", "param", "type"]);
        }
    }

    #[test]
    fn upstream_statuses_follow_the_table() {
        let status = |s: u16| Error::upstream_status(StatusCode::from_u16(s).unwrap()).status();
        assert_eq!(status(500), StatusCode::BAD_GATEWAY);
        assert_eq!(status(502), StatusCode::BAD_GATEWAY);
        assert_eq!(status(503), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(504), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status(404), StatusCode::NOT_FOUND);
        assert_eq!(status(422), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn invalid_key_is_masked() {
        let (status, json) = body_json(Error::invalid_api_key("sk-secret-abcdefgh")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains("sk-s***"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        assert_eq!(json["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn retry_headers_are_never_zero() {
        for (wait, secs, ms) in [
            (0, "1", "1"),
            (1, "1", "1"),
            (1001, "2", "1001"),
            (30_000, "30", "30000"),
        ] {
            let response = Error::rate_limited(2, Duration::from_millis(wait)).into_response();
            assert_eq!(response.headers()["retry-after"], secs, "{wait}");
            assert_eq!(response.headers()["retry-after-ms"], ms, "{wait}");
            assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "0");
        }
    }

    #[test]
    fn a_tokens_refusal_carries_the_tokens_headers() {
        let response = Error::tokens_limited(1000, Duration::from_millis(1500)).into_response();
        assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(headers["retry-after-ms"], "1500");
        assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "0");
        assert_eq!(headers["x-ratelimit-reset-tokens"], "1.5s");
        assert!(headers.get("x-ratelimit-limit-requests").is_none());
    }

    #[test]
    fn reset_format() {
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_millis(250)), "0.25s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn overload_and_store_failures_are_503s_that_say_when() {
        let response = Error::overloaded().into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(
            Error::limits_unavailable().code(),
            Some("limits_unavailable")
        );
        assert!(is_rendered(&response));
    }

    #[test]
    fn provider_unavailable_says_do_not_retry() {
        let response = Error::provider_unavailable().into_response();
        assert_eq!(response.headers()["x-should-retry"], "false");
        let response = Error::method_not_allowed("GET").into_response();
        assert_eq!(response.headers()["allow"], "GET");
    }
}

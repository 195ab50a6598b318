//! The table: one row per kind of failure (status, OpenAI `type`, `code`, `param`, public
//! message, whether a retry can help).

use http::StatusCode;

use super::{Error, Kind};

/// The parts of an error response, looked up once per error.
pub(super) struct Parts<'a> {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) code: Option<&'static str>,
    pub(super) param: Option<&'a str>,
    pub(super) message: String,
    pub(super) should_retry: Option<bool>,
}

impl Error {
    /// The table: one row per kind.
    pub(super) fn parts(&self) -> Parts<'_> {
        use Kind::*;
        let row = |status, kind, code, message: String| Parts {
            status,
            kind,
            code,
            param: None,
            message,
            should_retry: None,
        };
        match &self.kind {
            InvalidJson => row(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                None,
                "We could not parse the JSON body of your request. The API expects a JSON \
                 payload, but what was sent was not valid JSON."
                    .into(),
            ),
            InvalidBody(what) => row(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                None,
                format!("Invalid request body: {what}."),
            ),
            MissingParam(param) => Parts {
                param: Some(param),
                ..row(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    None,
                    format!("you must provide a {param} parameter"),
                )
            },
            InvalidParam { param, message } => Parts {
                param: Some(param.as_str()),
                ..row(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    None,
                    format!("Invalid `{param}`: {message}."),
                )
            },
            UnsupportedParam(param, provider) => Parts {
                param: Some(param.as_str()),
                ..row(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    Some("unsupported_parameter"),
                    format!(
                        "Unsupported parameter: `{param}` is not supported by the {provider} \
                         API this model is served by."
                    ),
                )
            },
            UnsupportedEndpoint(model, endpoint) => row(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                Some("unsupported_endpoint"),
                format!("The model `{model}` does not support the `{endpoint}` endpoint."),
            ),
            InvalidModel => Parts {
                param: Some("model"),
                ..row(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    Some("invalid_model"),
                    "The model id must be a non-empty string of at most 256 printable \
                     characters without path segments such as `..`."
                        .into(),
                )
            },
            UnsupportedContentType { expected } => row(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                Some("unsupported_content_type"),
                format!("Unsupported content type for this endpoint: send `{expected}`."),
            ),
            UnsupportedContentEncoding => row(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                Some("unsupported_content_encoding"),
                "Compressed request bodies are not supported: send the body uncompressed, \
                 without a Content-Encoding header."
                    .into(),
            ),
            BodyRead => row(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                None,
                "The request body could not be read.".into(),
            ),
            BodyTimeout => row(
                StatusCode::REQUEST_TIMEOUT,
                INVALID_REQUEST,
                Some("request_timeout"),
                "The request body was not received in time.".into(),
            ),
            PayloadTooLarge { limit } => row(
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_REQUEST,
                Some("request_too_large"),
                format!("The request body is larger than the limit of {limit} bytes."),
            ),
            MissingApiKey => row(
                StatusCode::UNAUTHORIZED,
                INVALID_REQUEST,
                Some("invalid_api_key"),
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                    .into(),
            ),
            MalformedAuthorization => row(
                StatusCode::UNAUTHORIZED,
                INVALID_REQUEST,
                Some("invalid_api_key"),
                "The Authorization header must use the Bearer scheme with a non-empty key \
                 (i.e. Authorization: Bearer YOUR_KEY)."
                    .into(),
            ),
            DuplicateAuthorization => row(
                StatusCode::UNAUTHORIZED,
                INVALID_REQUEST,
                Some("invalid_api_key"),
                "The request has more than one Authorization header; send exactly one \
                 (i.e. Authorization: Bearer YOUR_KEY)."
                    .into(),
            ),
            InvalidApiKey { masked } => row(
                StatusCode::UNAUTHORIZED,
                INVALID_REQUEST,
                Some("invalid_api_key"),
                format!("Incorrect API key provided: {masked}."),
            ),
            ExpiredApiKey => row(
                StatusCode::UNAUTHORIZED,
                INVALID_REQUEST,
                Some("invalid_api_key"),
                "This API key has expired.".into(),
            ),
            ModelNotAllowed { model } => Parts {
                param: Some("model"),
                ..row(
                    StatusCode::FORBIDDEN,
                    PERMISSION,
                    Some("model_not_allowed"),
                    format!("This API key is not allowed to use the model `{model}`."),
                )
            },
            RateLimited { limit, wait } => row(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMIT,
                Some("rate_limit_exceeded"),
                format!(
                    "Rate limit reached for this API key on requests per minute: limit {limit}. \
                     Please try again in {:.3}s.",
                    wait.as_secs_f64()
                ),
            ),
            TokensLimited { limit, wait } => row(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMIT,
                Some("rate_limit_exceeded"),
                format!(
                    "Rate limit reached for this API key on tokens per minute: limit {limit}. \
                     Please try again in {:.3}s.",
                    wait.as_secs_f64()
                ),
            ),
            ConcurrencyLimited { limit } => row(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMIT,
                Some("rate_limit_exceeded"),
                format!(
                    "Too many concurrent requests for this API key: limit {limit}. Please retry \
                     when one finishes."
                ),
            ),
            KeyStoreUnavailable => row(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVICE_UNAVAILABLE,
                Some("key_store_unavailable"),
                "The router could not check your API key right now. Please retry.".into(),
            ),
            LimitsUnavailable => row(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVICE_UNAVAILABLE,
                Some("limits_unavailable"),
                "The router could not check this API key's limits right now. Please retry.".into(),
            ),
            Overloaded => row(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVICE_UNAVAILABLE,
                Some("overloaded"),
                "The router is handling as many requests as it can. Please retry shortly.".into(),
            ),
            ModelNotFound { model } => Parts {
                param: Some("model"),
                ..row(
                    StatusCode::NOT_FOUND,
                    INVALID_REQUEST,
                    Some("model_not_found"),
                    format!("The model `{model}` does not exist or you do not have access to it."),
                )
            },
            UnknownUrl { method, path } => row(
                StatusCode::NOT_FOUND,
                INVALID_REQUEST,
                None,
                format!("Invalid URL ({method} {path})"),
            ),
            MethodNotAllowed { allow } => row(
                StatusCode::METHOD_NOT_ALLOWED,
                INVALID_REQUEST,
                Some("method_not_allowed"),
                format!("Method not allowed for this URL; allowed: {allow}."),
            ),
            ProviderUnavailable => Parts {
                should_retry: Some(false),
                ..row(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVICE_UNAVAILABLE,
                    Some("provider_unavailable"),
                    "The provider for this model is not configured on the router \
                     (missing credentials)."
                        .into(),
                )
            },
            // A retry cannot fix a refused provider key: tell the SDKs not to.
            ProviderAuthFailed => Parts {
                should_retry: Some(false),
                ..row(
                    StatusCode::BAD_GATEWAY,
                    SERVER_ERROR,
                    Some("provider_auth_failed"),
                    "The upstream provider rejected the router's credentials.".into(),
                )
            },
            UpstreamStatus { status } if *status == StatusCode::TOO_MANY_REQUESTS => row(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMIT,
                Some("rate_limit_exceeded"),
                "The upstream provider is rate limiting requests (HTTP 429). Please retry later."
                    .into(),
            ),
            UpstreamStatus { status } => {
                let public = upstream_public_status(*status);
                let kind = if public.is_client_error() {
                    INVALID_REQUEST
                } else if public == StatusCode::SERVICE_UNAVAILABLE {
                    SERVICE_UNAVAILABLE
                } else if public == StatusCode::GATEWAY_TIMEOUT {
                    TIMEOUT
                } else {
                    SERVER_ERROR
                };
                row(
                    public,
                    kind,
                    Some("upstream_error"),
                    format!(
                        "The upstream provider returned an error (HTTP {}).",
                        status.as_u16()
                    ),
                )
            }
            UpstreamUnreachable => row(
                StatusCode::BAD_GATEWAY,
                SERVER_ERROR,
                Some("upstream_unreachable"),
                "The upstream provider could not be reached.".into(),
            ),
            UpstreamTimeout => row(
                StatusCode::GATEWAY_TIMEOUT,
                TIMEOUT,
                Some("upstream_timeout"),
                "The upstream provider did not answer in time.".into(),
            ),
            UpstreamProtocol => row(
                StatusCode::BAD_GATEWAY,
                SERVER_ERROR,
                Some("upstream_error"),
                "The upstream provider sent an invalid response.".into(),
            ),
            Internal => row(
                StatusCode::INTERNAL_SERVER_ERROR,
                SERVER_ERROR,
                None,
                "The router had an internal error while processing your request.".into(),
            ),
        }
    }
}

const INVALID_REQUEST: &str = "invalid_request_error";
const SERVER_ERROR: &str = "server_error";
const PERMISSION: &str = "permission_error";
/// OpenAI's `type` for request-rate limits.
const RATE_LIMIT: &str = "requests";
const SERVICE_UNAVAILABLE: &str = "service_unavailable_error";
const TIMEOUT: &str = "timeout_error";

/// Status for an upstream error whose body we do not pass on: 503 and 504 keep their meaning,
/// other 5xx become 502 (the gateway's view), 4xx keep their status.
fn upstream_public_status(status: StatusCode) -> StatusCode {
    match status.as_u16() {
        503 | 504 => status,
        500..=599 => StatusCode::BAD_GATEWAY,
        400..=499 => status,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Whether an upstream answer of `status` is worth another attempt, at another target or
/// the same one later: 429 and 5xx (529 included) say "not now", 401 and 403 say the router's
/// credential for that provider was refused. Never 400, 404, 413 or 422: the request itself
/// is wrong, and another upstream would refuse it too.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403 | 429 | 500..=599)
}

impl Error {
    /// Whether another attempt (another target, or the same one later) may succeed: the
    /// upstream could not be reached, broke the exchange or timed out, refused the router's
    /// credential, or its provider is not configured. The request's own faults are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            Kind::UpstreamUnreachable
                | Kind::UpstreamTimeout
                | Kind::UpstreamProtocol
                | Kind::ProviderAuthFailed
                | Kind::ProviderUnavailable
        ) || matches!(self.kind, Kind::UpstreamStatus { status } if retryable_status(status))
    }

    /// Whether the same target may do better a moment later: it could not be reached, broke
    /// the exchange or timed out. A missing or refused credential stays so: next target.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            Kind::UpstreamUnreachable | Kind::UpstreamTimeout | Kind::UpstreamProtocol
        )
    }
}

//! How the router names a request in GenAI terms (OpenTelemetry GenAI semantic conventions
//! v1.41): the SERVER span's name, `gen_ai.request.model`, `error.type` and whether the span's
//! status is an error. Shared by the `tracing` span (`request_id::span`) and the direct OTLP
//! exporter (`otel::proto`, feature `otel`), so both name things identically.

use std::fmt;

use super::{Outcome, RequestSummary, gen_ai_operation_name};

/// The `tracing` target of the router's GenAI spans (each request's SERVER span and each
/// upstream attempt's CLIENT span): what a trace exporter takes (`ai_router::otel` filters its
/// layer to it) and a log layer should leave out, e.g. with the `EnvFilter` directive
/// `ai_router::genai=off` or `Targets::new().with_target(GENAI_TARGET, LevelFilter::OFF)`.
// Defined here, below the layers (the request's span and the attempts' spans both use it),
// and re-exported where users find it, `request_id`.
pub const GENAI_TARGET: &str = "ai_router::genai";

/// Whether a subscriber takes spans on [`GENAI_TARGET`] at all: a callsite's cached interest,
/// checked before the per-attempt work of finding the current span (a lookup, a reference
/// count taken and dropped) that only GenAI spans need.
pub(crate) fn spans_wanted() -> bool {
    tracing::enabled!(target: GENAI_TARGET, tracing::Level::INFO)
}

/// `gen_ai.request.model` as the router names it: `{provider}/{model}` (`openai/gpt-4o-mini`),
/// the model the client asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestModel<'a> {
    /// The provider, as configured.
    pub(crate) provider: &'a str,
    /// The model id the provider got.
    pub(crate) model: &'a str,
}

impl fmt::Display for RequestModel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// The request span's name (see [`span_name`]), borrowed from the summary.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SpanName<'a> {
    /// `{gen_ai.operation.name} {gen_ai.request.model}`: `chat openai/gpt-4o-mini`.
    Target(&'static str, RequestModel<'a>),
    /// The operation alone: an endpoint matched, but no target was chosen.
    Operation(&'static str),
    /// The method: no endpoint matched.
    Method(&'a str),
}

impl fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Target(operation, model) => write!(f, "{operation} {model}"),
            Self::Operation(operation) => f.write_str(operation),
            Self::Method(method) => f.write_str(method),
        }
    }
}

/// The request span's name: `{gen_ai.operation.name} {gen_ai.request.model}`, or the operation
/// alone before a target was chosen, or the method when no endpoint matched.
pub(crate) fn span_name(summary: &RequestSummary) -> SpanName<'_> {
    match (summary.endpoint, request_model(summary)) {
        (Some(endpoint), Some(model)) => SpanName::Target(gen_ai_operation_name(endpoint), model),
        (Some(endpoint), None) => SpanName::Operation(gen_ai_operation_name(endpoint)),
        (None, _) => SpanName::Method(summary.method.as_str()),
    }
}

/// `gen_ai.request.model`: the provider and model the request was routed to, when it was.
pub(crate) fn request_model(summary: &RequestSummary) -> Option<RequestModel<'_>> {
    match (&summary.provider, &summary.model) {
        (Some(provider), Some(model)) => Some(RequestModel { provider, model }),
        _ => None,
    }
}

/// `error.type` of a request that failed: how it ended when the answer was cut (or never
/// came), else the status the client got when it is an error (`429`, `502`, ...).
pub(crate) fn error_type(summary: &RequestSummary) -> Option<&str> {
    match (summary.outcome, &summary.status) {
        (Outcome::Completed, Some(status)) if status.as_u16() >= 400 => Some(status.as_str()),
        (Outcome::Completed, _) => None,
        (outcome, _) => Some(outcome.as_str()),
    }
}

/// Whether the span's status is an error: as the HTTP server conventions say, a 4xx is the
/// client's mistake and leaves it unset (its `error.type` is still recorded), and so does a
/// client that went away; a 5xx, or an answer cut by the upstream, is ours.
pub(crate) fn server_error(summary: &RequestSummary) -> bool {
    match (summary.outcome, &summary.status) {
        (Outcome::Completed, Some(status)) => status.is_server_error(),
        (Outcome::ClientGone, _) => false,
        _ => true,
    }
}

/// The longest `url.path` a span carries, in bytes: the client chooses the path (a 404's can be
/// as long as the server takes), and the span travels in every export.
pub(crate) const MAX_URL_PATH: usize = 256;

/// `url.path`: the request's path, cut to [`MAX_URL_PATH`] bytes (at a character boundary).
pub(crate) fn url_path(summary: &RequestSummary) -> &str {
    let path = summary.uri.path();
    if path.len() <= MAX_URL_PATH {
        return path;
    }
    let mut end = MAX_URL_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_path_is_cut_to_its_bound() {
        let summary = |path: &str| {
            crate::observe::RequestLog::new().summary(
                &crate::observe::RequestHead {
                    id: crate::extensions::RequestId::generate(),
                    method: http::Method::GET,
                    uri: path.parse().unwrap(),
                },
                crate::observe::End {
                    status: None,
                    latency: std::time::Duration::ZERO,
                    duration: std::time::Duration::ZERO,
                    outcome: crate::observe::Outcome::Completed,
                },
            )
        };
        let short = summary("/v3/router/chat/completions");
        assert_eq!(url_path(&short), "/v3/router/chat/completions");
        let long = summary(&format!("/{}", "a".repeat(1000)));
        assert_eq!(url_path(&long).len(), MAX_URL_PATH);
        assert!(long.uri.path().starts_with(url_path(&long)));
    }
}

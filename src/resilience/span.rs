//! The CLIENT span of one upstream attempt (OpenTelemetry GenAI semantic conventions v1.41).
//!
//! Opened on [`GENAI_TARGET`] as a child of the current span (the request's GenAI span, which
//! [`SetRequestId`](crate::request_id::SetRequestId) enters while the layers below work),
//! named `{gen_ai.operation.name} {upstream model}` (`chat gpt-4o-mini`), and closed when the
//! attempt is over: its duration is the attempt's latency, to the response head (for a
//! stream, to its first event). `server.address` and `server.port` are recorded by the
//! provider's transport (it alone knows the URL) on the span current while it sends;
//! `gen_ai.provider.name` names the provider as configured.

use http::StatusCode;
use tracing::Span;
use tracing::field::Empty;

use crate::extensions::RouteTarget;
use crate::observe::gen_ai_operation_name as gen_ai_operation;
use crate::request_id::GENAI_TARGET;

/// Opens the span of attempt number `n` at `target`; none when the current span is not a
/// request's GenAI span (`SetRequestIdLayer::genai_spans(false)`, nobody wants them, or no
/// request span at all).
pub(super) fn attempt_span(target: &RouteTarget, n: u32) -> Span {
    if Span::current().field("gen_ai.operation.name").is_none() {
        return Span::none();
    }
    let operation = gen_ai_operation(target.endpoint());
    tracing::info_span!(
        target: GENAI_TARGET,
        "attempt",
        otel.name = %format_args!("{operation} {}", target.upstream_model()),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = target.provider(),
        gen_ai.request.model = target.upstream_model(),
        ai_router.attempt.number = i64::from(n),
        ai_router.attempt.outcome = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        server.address = Empty,
        server.port = Empty,
    )
}

/// The upstream answered `status`; an error status is the attempt's `error.type`.
pub(super) fn record_status(span: &Span, status: StatusCode) {
    // No subscriber wants it: skip the field lookups.
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        record_error(span, status.as_str());
    }
}

/// The attempt failed with `error_type` (a status, or an error code such as
/// `upstream_timeout`). Recorded once per attempt.
pub(super) fn record_error(span: &Span, error_type: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error_type);
    span.record("otel.status_code", "error");
}

/// How the attempt ended: `answered` (its answer, good or bad, goes to the client) or
/// `failed` (another attempt may follow).
pub(super) fn record_outcome(span: &Span, answered: bool) {
    if span.is_disabled() {
        return;
    }
    span.record(
        "ai_router.attempt.outcome",
        if answered { "answered" } else { "failed" },
    );
}

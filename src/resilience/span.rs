//! The CLIENT span of one upstream attempt (OpenTelemetry GenAI semantic conventions v1.41).
//!
//! Opened on [`GENAI_TARGET`] as a child of the current span (the request's GenAI span, which
//! [`SetRequestId`](crate::request_id::SetRequestId) enters while the layers below work),
//! named `{gen_ai.operation.name} {upstream model}` (`chat gpt-4o-mini`), and closed when the
//! attempt is over: its duration is the attempt's latency, to the response head (for a
//! stream, to its first event). `server.address` and `server.port` are recorded by the
//! provider's transport (it alone knows the URL) on the span current while it sends;
//! `gen_ai.provider.name` names the provider as configured.

use http::{Request, StatusCode};
use tracing::Span;
use tracing::field::Empty;

use crate::extensions::{RouteTarget, TraceContext};
use crate::observe::genai::{self, GENAI_TARGET};
use crate::observe::{
    AttemptOutcome, AttemptRecord, RequestLog, gen_ai_operation_name as gen_ai_operation,
};

/// One upstream attempt as it is observed: its `tracing` span (when GenAI spans are on), its
/// record in the request's [`RequestLog`] (when there is one), and the `traceparent` sent
/// upstream (from the request's [`TraceContext`] when it has one, else, with the `otel`
/// feature, from the span).
pub(super) struct AttemptTrace {
    span: Span,
    /// The request's log, this attempt's index in it, and when the attempt started.
    record: Option<(RequestLog, usize, tokio::time::Instant)>,
    status: Option<StatusCode>,
    error_code: Option<&'static str>,
}

impl AttemptTrace {
    /// Starts attempt number `n` at `target` with the upstream `request` (its extensions are
    /// the client request's; the trace context is written into its headers).
    pub(super) fn start<B>(target: &RouteTarget, n: u32, request: &mut Request<B>) -> Self {
        let span = attempt_span(target, n);
        let traced = request.extensions().get::<TraceContext>().map(|trace| {
            let span_id = trace.new_child_span_id();
            (span_id, trace.clone())
        });
        let span_id = match traced {
            Some((span_id, trace)) => {
                trace.inject(span_id, request.headers_mut());
                Some(span_id)
            }
            None => {
                #[cfg(feature = "otel")]
                crate::otel::inject(&span, request.headers_mut());
                None
            }
        };
        let extensions = request.extensions();
        let record = extensions.get::<RequestLog>().map(|log| {
            let now = tokio::time::Instant::now();
            let record = AttemptRecord::new(
                n,
                target.endpoint(),
                target.provider_shared().clone(),
                target.upstream_model_shared().clone(),
                std::time::Duration::ZERO,
            )
            .with_span_id(span_id);
            let index = log.start_attempt_at(now, record);
            (log.clone(), index, now)
        });
        Self {
            span,
            record,
            status: None,
            error_code: None,
        }
    }

    /// The attempt's `tracing` span (current while it works, so the transport records the
    /// upstream's address on it).
    pub(super) fn span(&self) -> &Span {
        &self.span
    }

    /// The upstream answered `status`; an error status is the attempt's `error.type`.
    pub(super) fn status(&mut self, status: StatusCode) {
        self.status = Some(status);
        record_status(&self.span, status);
    }

    /// The attempt failed with `error_type` (an error code such as `upstream_timeout`).
    pub(super) fn error(&mut self, code: &'static str) {
        self.error_code = Some(code);
        record_error(&self.span, code);
    }

    /// The attempt is over: `answered` (its answer goes to the client) or failed. Its span
    /// ends here: its duration is the attempt's latency.
    pub(super) fn end(self, answered: bool) {
        record_outcome(&self.span, answered);
        if let Some((log, index, started)) = &self.record {
            let outcome = if answered {
                AttemptOutcome::Answered
            } else {
                AttemptOutcome::Failed
            };
            log.end_attempt(
                *index,
                started.elapsed(),
                outcome,
                self.status,
                self.error_code,
            );
        }
    }
}

/// Opens the span of attempt number `n` at `target`; none when the current span is not a
/// request's GenAI span (`SetRequestIdLayer::genai_spans(false)`, nobody wants them, or no
/// request span at all).
fn attempt_span(target: &RouteTarget, n: u32) -> Span {
    if !genai::spans_wanted() || Span::current().field("gen_ai.operation.name").is_none() {
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
fn record_status(span: &Span, status: StatusCode) {
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
fn record_error(span: &Span, error_type: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error_type);
    span.record("otel.status_code", "error");
}

/// How the attempt ended: `answered` (its answer, good or bad, goes to the client) or
/// `failed` (another attempt may follow).
fn record_outcome(span: &Span, answered: bool) {
    if span.is_disabled() {
        return;
    }
    span.record(
        "ai_router.attempt.outcome",
        if answered { "answered" } else { "failed" },
    );
}

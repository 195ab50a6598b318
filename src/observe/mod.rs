//! Observing requests: a record the layers fill in as a request passes, and the hook that
//! gets it when the request is over.
//!
//! [`SetRequestId`](crate::request_id::SetRequestId) puts a [`RequestLog`] in every request's
//! extensions; [`Auth`](crate::auth::Auth) records the key's name, [`Route`](crate::route::Route)
//! the endpoint, target, request parameters and the `identity` / `thread` knobs,
//! [`Sse`](crate::sse::Sse) what the answer said about itself (usage, id, model, finish
//! reasons: read from a stream's events, or from both ends of a JSON answer as it passes) and a
//! stream's first byte and outcome. When the response body has ended (or failed, or the client went away), the
//! router's [`Observer`] gets a [`RequestSummary`]: one access log line, metrics or a usage
//! record per request, streams included, with the real outcome.
//! [`LogRequests`] (a `tracing` event per request) is the default; [`AccessLog`] writes one
//! line per request, as text or JSON, to any writer.
//!
//! A leaf module: it imports no layer.
//!
//! # Example
//! ```
//! use ai_router::observe::{AccessLog, AccessLogFormat, RequestSummary};
//!
//! // One JSON line per request on stderr.
//! let log = AccessLog::new(AccessLogFormat::Json, std::io::stderr());
//! // Or any closure.
//! let count = |summary: &RequestSummary| println!("{} -> {:?}", summary.id.as_str(), summary.status);
//! # let _ = (log, count);
//! ```

mod access_log;
mod attempt;
pub(crate) mod genai;
mod metrics;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Method, StatusCode, Uri};
use serde::Deserialize;

use crate::extensions::{Endpoint, Principal, RequestId, RouteTarget, TraceContext};

pub use self::access_log::{AccessLog, AccessLogFormat};
pub use self::attempt::{AttemptOutcome, AttemptRecord, ServerAddress};
pub use self::metrics::{Metrics, MetricsBuilder, gen_ai_operation_name};

/// Token usage an answer reported (chat `usage`, or the Responses API's `response.usage`).
///
/// Deserializes from either spelling: `prompt_tokens` / `completion_tokens` (chat, completions,
/// embeddings) or `input_tokens` / `output_tokens` (Responses API); `cached_tokens` from
/// `prompt_tokens_details.cached_tokens` or `input_tokens_details.cached_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "WireUsage")]
pub struct Usage {
    /// Prompt / input tokens.
    pub input_tokens: u64,
    /// Completion / output tokens.
    pub output_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// Input tokens served from the provider's prompt cache (part of `input_tokens`).
    pub cached_tokens: u64,
}

/// [`Usage`] as the wire spells it.
#[derive(Deserialize)]
struct WireUsage {
    // Required: an object without it (a schema property named `usage`, say) is no usage.
    #[serde(alias = "prompt_tokens")]
    input_tokens: u64,
    #[serde(alias = "completion_tokens", default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(alias = "prompt_tokens_details", default)]
    input_tokens_details: Option<TokenDetails>,
}

/// `prompt_tokens_details` / `input_tokens_details`.
#[derive(Deserialize)]
struct TokenDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(wire: WireUsage) -> Self {
        Self {
            input_tokens: wire.input_tokens,
            output_tokens: wire.output_tokens,
            total_tokens: wire.total_tokens,
            cached_tokens: wire
                .input_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
        }
    }
}

/// Why a choice of an answer ended: OpenAI's `finish_reason` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FinishReason {
    /// `stop`: a natural end or a stop sequence.
    Stop,
    /// `length`: the token limit.
    Length,
    /// `tool_calls`: the model called tools.
    ToolCalls,
    /// `content_filter`: content was filtered.
    ContentFilter,
    /// `function_call` (deprecated functions API).
    FunctionCall,
    /// Any other value (kept out so labels stay bounded).
    Other,
}

impl FinishReason {
    /// The reason from its wire value.
    pub fn from_wire(value: &str) -> Self {
        match value {
            "stop" => Self::Stop,
            "length" => Self::Length,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "function_call" => Self::FunctionCall,
            _ => Self::Other,
        }
    }

    /// The wire value (`other` for [`FinishReason::Other`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::FunctionCall => "function_call",
            Self::Other => "other",
        }
    }
}

/// The finish reasons of an answer's choices, in choice order, held inline (no allocation):
/// the first [`FinishReasons::CAPACITY`] choices only (`n` above that is rare; the others are
/// left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FinishReasons {
    /// Indexed by choice index.
    slots: [Option<FinishReason>; FinishReasons::CAPACITY],
}

impl FinishReasons {
    /// How many choices are kept.
    pub const CAPACITY: usize = 8;

    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the reason of choice `index` (ignored past [`Self::CAPACITY`]).
    pub fn set(&mut self, index: usize, reason: FinishReason) {
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some(reason);
        }
    }

    /// Records the reason of the next choice (after the last one set).
    pub fn push(&mut self, reason: FinishReason) {
        let next = self
            .slots
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |last| last + 1);
        self.set(next, reason);
    }

    /// The reasons known, in choice order.
    pub fn iter(&self) -> impl Iterator<Item = FinishReason> + '_ {
        self.slots.iter().flatten().copied()
    }

    /// How many reasons are known.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no reason is known.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

/// The request parameters the router read from a JSON body's top level (for telemetry; the
/// body itself is forwarded untouched).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RequestParams {
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens` (the first present).
    pub max_tokens: Option<u64>,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `"stream": true`.
    pub stream: bool,
}

/// What an answer's body said about itself, read as it passed (see [`RequestLog::record_body`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnswerDetails {
    /// The usage it reported.
    pub usage: Option<Usage>,
    /// Its `id` (`chatcmpl-...`, `resp_...`).
    pub id: Option<Arc<str>>,
    /// The `model` it named (often a dated snapshot of the model asked for).
    pub model: Option<Arc<str>>,
    /// Its choices' finish reasons.
    pub finish_reasons: FinishReasons,
}

/// How a request (or its stream) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The whole answer was sent.
    Completed,
    /// The upstream failed after the response head; a stream got an error frame, another
    /// answer was cut.
    UpstreamFailed,
    /// The upstream sent nothing for the idle timeout; a stream got an error frame.
    IdleTimeout,
    /// The client went away before the end; the upstream request was dropped.
    ClientGone,
    /// The service failed without any response (only when a layer is used over a fallible
    /// service; the composed router always answers).
    NoResponse,
}

impl Outcome {
    /// A short lowercase name for logs: `completed`, `upstream_failed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::UpstreamFailed => "upstream_failed",
            Self::IdleTimeout => "idle_timeout",
            Self::ClientGone => "client_gone",
            Self::NoResponse => "no_response",
        }
    }
}

/// What the layers learned about one request as it passed: the request extension every layer
/// records into. Cheap to clone (shared).
#[derive(Clone)]
pub struct RequestLog {
    details: Arc<Mutex<Details>>,
}

/// What the inner layers record.
#[derive(Clone, Default)]
struct Details {
    key: Option<Arc<str>>,
    endpoint: Option<Endpoint>,
    provider: Option<Arc<str>>,
    model: Option<Arc<str>>,
    usage: Option<Usage>,
    first_byte: Option<Duration>,
    outcome: Option<Outcome>,
    attempts: Option<u32>,
    identity: Option<Arc<str>>,
    thread: Option<Arc<str>>,
    request: RequestParams,
    response_id: Option<Arc<str>>,
    response_model: Option<Arc<str>>,
    finish_reasons: FinishReasons,
    limits_unchecked: bool,
    trace: Option<TraceContext>,
    attempt_records: Vec<AttemptRecord>,
    /// When the request reached the router (for the attempts' start offsets).
    started: Option<tokio::time::Instant>,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestLog {
    /// An empty record of a request arriving now (its attempts' start offsets are counted
    /// from here).
    pub fn new() -> Self {
        Self {
            details: Arc::new(Mutex::new(Details {
                started: Some(tokio::time::Instant::now()),
                ..Details::default()
            })),
        }
    }

    /// An empty record of a request arriving now, traced with `trace`.
    #[cfg(all(test, feature = "otel"))]
    pub(crate) fn traced(trace: TraceContext) -> Self {
        Self::arrived(tokio::time::Instant::now(), Some(trace))
    }

    /// An empty record of a request that arrived at `started` (the caller's clock reading,
    /// not a second one), traced with `trace` if any.
    pub(crate) fn arrived(started: tokio::time::Instant, trace: Option<TraceContext>) -> Self {
        Self {
            details: Arc::new(Mutex::new(Details {
                trace,
                started: Some(started),
                ..Details::default()
            })),
        }
    }

    /// How long ago the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.details
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .started
            .map_or(Duration::ZERO, |started| started.elapsed())
    }

    /// An upstream attempt started (the resilience layer records each); returns its index for
    /// [`end_attempt`](Self::end_attempt).
    #[cfg(all(test, feature = "otel"))]
    pub(crate) fn start_attempt(&self, record: AttemptRecord) -> usize {
        let mut details = self.details.lock().unwrap_or_else(PoisonError::into_inner);
        details.attempt_records.push(record);
        details.attempt_records.len() - 1
    }

    /// An upstream attempt started at `at` (the caller's clock reading): its start offset is
    /// counted from the request's arrival under the same lock. Returns its index for
    /// [`end_attempt`](Self::end_attempt).
    pub(crate) fn start_attempt_at(
        &self,
        at: tokio::time::Instant,
        mut record: AttemptRecord,
    ) -> usize {
        let mut details = self.details.lock().unwrap_or_else(PoisonError::into_inner);
        record.start = details.started.map_or(Duration::ZERO, |started| {
            at.saturating_duration_since(started)
        });
        details.attempt_records.push(record);
        details.attempt_records.len() - 1
    }

    /// Attempt `index` is over: how long it took, how it went, the status the upstream
    /// answered, the router's error code when it failed without an answer.
    pub(crate) fn end_attempt(
        &self,
        index: usize,
        duration: Duration,
        outcome: AttemptOutcome,
        status: Option<StatusCode>,
        error_code: Option<&'static str>,
    ) {
        self.with(|d| {
            if let Some(record) = d.attempt_records.get_mut(index) {
                record.duration = duration;
                record.outcome = outcome;
                record.status = status;
                record.error_code = error_code;
            }
        });
    }

    /// The attempt under way is sent to `server` (the provider's transport records it: it
    /// alone knows the URL).
    pub(crate) fn record_server(&self, server: &ServerAddress) {
        self.with(|d| {
            if let Some(record) = d.attempt_records.last_mut() {
                record.server = Some(server.clone());
            }
        });
    }

    fn with(&self, record: impl FnOnce(&mut Details)) {
        record(&mut self.details.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The caller's key passed the check.
    pub fn record_principal(&self, principal: &Principal) {
        self.with(|d| d.key = Some(principal.name_shared().clone()));
    }

    /// The key's limits were not checked: the limiter's backend failed and its policy is to
    /// serve anyway.
    pub fn record_limits_unchecked(&self) {
        self.with(|d| d.limits_unchecked = true);
    }

    /// The usage the answer reported, so far.
    pub fn usage(&self) -> Option<Usage> {
        self.details
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .usage
    }

    /// The request was matched to `endpoint`.
    pub fn record_endpoint(&self, endpoint: Endpoint) {
        self.with(|d| d.endpoint = Some(endpoint));
    }

    /// The request goes to `target`.
    pub fn record_target(&self, target: &RouteTarget) {
        self.with(|d| {
            d.endpoint = Some(target.endpoint());
            d.provider = Some(target.provider_shared().clone());
            d.model = Some(target.upstream_model_shared().clone());
        });
    }

    /// The request took `attempts` upstream attempts (recorded by the resilience layer when it
    /// walked a plan; a request without one took 1 if it went upstream).
    pub fn record_attempts(&self, attempts: u32) {
        self.with(|d| d.attempts = Some(attempts));
    }

    /// What the request asked for: its parameters, and the `identity` / `thread` knobs' ids.
    pub fn record_request(
        &self,
        request: RequestParams,
        identity: Option<Arc<str>>,
        thread: Option<Arc<str>>,
    ) {
        self.with(|d| {
            d.request = request;
            d.identity = identity;
            d.thread = thread;
        });
    }

    /// The answer's body ended: what it said about itself (usage, id, model, finish reasons),
    /// when its first byte came, and how it ended (an upstream failure is answered with an
    /// error frame, so the body itself ends well). What it did not say keeps what was recorded.
    pub fn record_body(
        &self,
        answer: AnswerDetails,
        first_byte: Option<Duration>,
        outcome: Outcome,
    ) {
        self.with(|d| {
            d.usage = answer.usage.or(d.usage);
            if answer.id.is_some() {
                d.response_id = answer.id;
            }
            if answer.model.is_some() {
                d.response_model = answer.model;
            }
            if !answer.finish_reasons.is_empty() {
                d.finish_reasons = answer.finish_reasons;
            }
            d.first_byte = first_byte.or(d.first_byte);
            d.outcome = Some(outcome);
        });
    }

    /// A summary of the request so far, with what the outermost layer knows.
    pub(crate) fn summary(&self, head: &RequestHead, end: End) -> RequestSummary {
        let details = self
            .details
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let attempts = details
            .attempts
            .unwrap_or(u32::from(details.provider.is_some()));
        let outcome = match (end.outcome, details.outcome) {
            // The body ended well, but the stream layer saw the upstream fail behind it.
            (Outcome::Completed, Some(recorded)) => recorded,
            (outcome, _) => outcome,
        };
        RequestSummary {
            id: head.id.clone(),
            method: head.method.clone(),
            uri: head.uri.clone(),
            key: details.key,
            endpoint: details.endpoint,
            provider: details.provider,
            model: details.model,
            status: end.status,
            latency: end.latency,
            duration: end.duration,
            first_byte: details.first_byte,
            usage: details.usage,
            attempts,
            outcome,
            identity: details.identity,
            thread: details.thread,
            request: details.request,
            response_id: details.response_id,
            response_model: details.response_model,
            finish_reasons: details.finish_reasons,
            limits_unchecked: details.limits_unchecked,
            trace: details.trace,
            attempt_records: details.attempt_records,
        }
    }
}

impl fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestLog").finish_non_exhaustive()
    }
}

/// What the outermost layer knows of a request from its head.
#[derive(Clone, Debug)]
pub(crate) struct RequestHead {
    pub(crate) id: RequestId,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
}

/// How far a request got, as the outermost layer saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct End {
    pub(crate) status: Option<StatusCode>,
    pub(crate) latency: Duration,
    pub(crate) duration: Duration,
    pub(crate) outcome: Outcome,
}

/// One request, as an [`Observer`] sees it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestSummary {
    /// The router's request id.
    pub id: RequestId,
    /// The request method.
    pub method: Method,
    /// The request URI, as the router received it.
    pub uri: Uri,
    /// The name of the key that passed the check.
    pub key: Option<Arc<str>>,
    /// The endpoint the path matched.
    pub endpoint: Option<Endpoint>,
    /// The provider the request went to.
    pub provider: Option<Arc<str>>,
    /// The model id the provider got.
    pub model: Option<Arc<str>>,
    /// The status the client got (`None`: no response at all).
    pub status: Option<StatusCode>,
    /// From the request reaching the router to the response head leaving it.
    pub latency: Duration,
    /// From the request reaching the router to the end of the response body.
    pub duration: Duration,
    /// For streams: from the request reaching the stream layer to the first body bytes.
    pub first_byte: Option<Duration>,
    /// The usage the answer reported, if the router saw it.
    pub usage: Option<Usage>,
    /// Upstream attempts made (0: the router answered on its own).
    pub attempts: u32,
    /// How the request ended.
    pub outcome: Outcome,
    /// The `identity` knob's `id` (the end user), when the request sent one.
    pub identity: Option<Arc<str>>,
    /// The `thread` knob's `id` (the conversation), when the request sent one.
    pub thread: Option<Arc<str>>,
    /// The request's parameters (JSON bodies; a form's are left at their defaults but
    /// `stream`).
    pub request: RequestParams,
    /// The answer's `id` (a stream's first chunk's), if the router saw it.
    pub response_id: Option<Arc<str>>,
    /// The model the answer named, if the router saw it.
    pub response_model: Option<Arc<str>>,
    /// The answer's finish reasons, in choice order (chat and completions).
    pub finish_reasons: FinishReasons,
    /// The key's limits were not checked (the limiter's backend was down and its policy is to
    /// serve anyway; see [`Admission::unchecked`](crate::auth::Admission::unchecked)).
    pub limits_unchecked: bool,
    /// The request's W3C trace context, when [`SetRequestId`](crate::request_id::SetRequestId)
    /// was asked to keep one (`trace_context(true)`).
    pub trace: Option<TraceContext>,
    /// Each upstream attempt, in order (recorded by [`Resilience`](crate::resilience::Resilience)).
    pub attempt_records: Vec<AttemptRecord>,
}

/// Gets every request when it is over: its body ended, failed, or the client went away
/// (status, latency to the head and duration to the end, outcome, usage). Implemented for
/// closures `Fn(&RequestSummary)`; [`LogRequests`] is the default.
pub trait Observer: Send + Sync + 'static {
    /// A request entered the router (before any layer below looked at it). Default: nothing.
    fn on_start(&self) {}

    /// The request is over.
    fn on_end(&self, summary: &RequestSummary);
}

impl<F> Observer for F
where
    F: Fn(&RequestSummary) + Send + Sync + 'static,
{
    fn on_end(&self, summary: &RequestSummary) {
        self(summary)
    }
}

/// The default [`Observer`]: one `info` event per request (target `ai_router::request`), each
/// field once.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogRequests;

impl Observer for LogRequests {
    fn on_end(&self, s: &RequestSummary) {
        let usage = s.usage.unwrap_or_default();
        tracing::info!(
            target: "ai_router::request",
            id = s.id.as_str(),
            method = %s.method,
            path = s.uri.path(),
            key = s.key.as_deref(),
            endpoint = s.endpoint.map(Endpoint::name),
            provider = s.provider.as_deref(),
            model = s.model.as_deref(),
            status = s.status.map(|s| s.as_u16()),
            latency_us = s.latency.as_micros() as u64,
            duration_us = s.duration.as_micros() as u64,
            first_byte_us = s.first_byte.map(|d| d.as_micros() as u64),
            outcome = s.outcome.as_str(),
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cached_tokens = usage.cached_tokens,
            identity = s.identity.as_deref(),
            thread = s.thread.as_deref(),
            "request"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_starts_at_its_own_clock_reading_counted_from_the_arrival() {
        let arrived = tokio::time::Instant::now();
        let log = RequestLog::arrived(arrived, None);
        let record = |n| {
            let model: Arc<str> = Arc::from("gpt-4o-mini");
            AttemptRecord::new(
                n,
                Endpoint::ChatCompletions,
                model.clone(),
                model,
                Duration::ZERO,
            )
        };
        let first = log.start_attempt_at(arrived + Duration::from_millis(3), record(1));
        // A reading from before the arrival (it cannot happen, but it must not panic).
        let second = log.start_attempt_at(arrived - Duration::from_millis(1), record(2));
        let details = log.details.lock().unwrap();
        assert_eq!((first, second), (0, 1));
        assert_eq!(details.attempt_records[0].start, Duration::from_millis(3));
        assert_eq!(details.attempt_records[1].start, Duration::ZERO);
        assert_eq!(details.started, Some(arrived));
    }

    #[test]
    fn usage_reads_both_spellings_and_cached_tokens() {
        let chat: Usage = serde_json::from_str(
            r#"{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":6,"audio_tokens":0}}"#,
        )
        .unwrap();
        assert_eq!(
            chat,
            Usage {
                input_tokens: 10,
                output_tokens: 2,
                total_tokens: 12,
                cached_tokens: 6,
            }
        );
        let responses: Usage = serde_json::from_str(
            r#"{"input_tokens":5,"input_tokens_details":{"cached_tokens":1},"output_tokens":3,"total_tokens":8}"#,
        )
        .unwrap();
        assert_eq!((responses.input_tokens, responses.cached_tokens), (5, 1));
        let bare: Usage =
            serde_json::from_str(r#"{"prompt_tokens":8,"prompt_tokens_details":null}"#).unwrap();
        assert_eq!(
            (bare.input_tokens, bare.output_tokens, bare.cached_tokens),
            (8, 0, 0)
        );
    }

    #[test]
    fn finish_reasons_keep_choice_order_inline() {
        let mut reasons = FinishReasons::new();
        assert!(reasons.is_empty());
        reasons.set(2, FinishReason::Length);
        reasons.set(0, FinishReason::from_wire("tool_calls"));
        reasons.push(FinishReason::from_wire("made_up"));
        reasons.set(FinishReasons::CAPACITY, FinishReason::Stop);
        let names: Vec<_> = reasons.iter().map(FinishReason::as_str).collect();
        assert_eq!(names, ["tool_calls", "length", "other"]);
        assert_eq!(reasons.len(), 3);
    }

    #[test]
    fn what_an_answer_did_not_say_keeps_what_was_recorded() {
        let log = RequestLog::new();
        let params = RequestParams {
            max_tokens: Some(5),
            ..RequestParams::default()
        };
        log.record_request(params, Some(Arc::from("u")), None);
        let mut reasons = FinishReasons::new();
        reasons.push(FinishReason::Stop);
        log.record_body(
            AnswerDetails {
                id: Some(Arc::from("c")),
                finish_reasons: reasons,
                ..AnswerDetails::default()
            },
            None,
            Outcome::Completed,
        );
        log.record_body(AnswerDetails::default(), None, Outcome::Completed);
        let head = RequestHead {
            id: RequestId::generate(),
            method: Method::POST,
            uri: Uri::from_static("/chat/completions"),
        };
        let end = End {
            status: Some(StatusCode::OK),
            latency: Duration::ZERO,
            duration: Duration::ZERO,
            outcome: Outcome::Completed,
        };
        let summary = log.summary(&head, end);
        assert_eq!(summary.request, params);
        assert_eq!(summary.identity.as_deref(), Some("u"));
        assert_eq!(summary.thread, None);
        assert_eq!(summary.response_id.as_deref(), Some("c"));
        assert_eq!(summary.finish_reasons.len(), 1);
    }
}

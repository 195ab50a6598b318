//! Observing requests: a record the layers fill in as a request passes, and the hook that
//! gets it when the request is over.
//!
//! [`SetRequestId`](crate::request_id::SetRequestId) puts a [`RequestLog`] in every request's
//! extensions; [`Auth`](crate::auth::Auth) records the key's name, [`Route`](crate::route::Route)
//! the endpoint and target, [`Sse`](crate::sse::Sse) a stream's usage, first byte and
//! outcome. When the response body has ended (or failed, or the client went away), the
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

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Method, StatusCode, Uri};
use serde::Deserialize;

use crate::extensions::{Endpoint, Principal, RequestId, RouteTarget};

pub use self::access_log::{AccessLog, AccessLogFormat};

/// Token usage an answer reported (chat `usage`, or the Responses API's `response.usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Prompt / input tokens.
    #[serde(alias = "prompt_tokens", default)]
    pub input_tokens: u64,
    /// Completion / output tokens.
    #[serde(alias = "completion_tokens", default)]
    pub output_tokens: u64,
    /// Total tokens.
    #[serde(default)]
    pub total_tokens: u64,
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
#[derive(Clone, Default)]
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
}

impl RequestLog {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(&self, record: impl FnOnce(&mut Details)) {
        record(&mut self.details.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The caller's key passed the check.
    pub fn record_principal(&self, principal: &Principal) {
        self.with(|d| d.key = Some(principal.name_shared().clone()));
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

    /// The answer's body ended: what it reported, when its first byte came, and how it ended
    /// (an upstream failure is answered with an error frame, so the body itself ends well).
    pub fn record_body(
        &self,
        usage: Option<Usage>,
        first_byte: Option<Duration>,
        outcome: Outcome,
    ) {
        self.with(|d| {
            d.usage = usage.or(d.usage);
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
}

/// Gets every request when it is over: its body ended, failed, or the client went away
/// (status, latency to the head and duration to the end, outcome, usage). Implemented for
/// closures `Fn(&RequestSummary)`; [`LogRequests`] is the default.
pub trait Observer: Send + Sync + 'static {
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
            "request"
        );
    }
}

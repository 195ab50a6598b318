//! [`AttemptRecord`]: one upstream attempt of a request, as the resilience layer saw it.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::extensions::Endpoint;

/// One upstream attempt (the router's CLIENT span), recorded by
/// [`Resilience`](crate::resilience::Resilience) into the request's
/// [`RequestLog`](super::RequestLog): which target, when, how long to its answer's head (a
/// stream's first event), and how it went.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    /// The attempt's span id, when the request is traced (the `traceparent` it sent upstream).
    pub span_id: Option<[u8; 8]>,
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The provider, as configured.
    pub provider: Arc<str>,
    /// The model id the provider got.
    pub model: Arc<str>,
    /// From the request reaching the router to the attempt's start.
    pub start: Duration,
    /// From the attempt's start to its end: to the response head, or, for a stream walked
    /// by a plan (fallbacks, retries), to its first event (the walk waits for it before
    /// answering; a single-target stream ends at its head).
    pub duration: Duration,
    /// How it ended ([`AttemptOutcome::Pending`] while under way).
    pub outcome: AttemptOutcome,
    /// The status the upstream answered.
    pub status: Option<StatusCode>,
    /// The router's error code when the attempt failed without an answer
    /// (`"upstream_timeout"`, `"upstream_unreachable"`); see [`error_type`](Self::error_type).
    pub error_code: Option<&'static str>,
    /// The upstream's host and port.
    pub server: Option<ServerAddress>,
}

impl AttemptRecord {
    /// Attempt `number` at `provider`'s `model`, started `start` after the request arrived
    /// ([`RequestLog::start_attempt_at`](crate::observe::RequestLog::start_attempt_at) sets
    /// `start` from its own clock reading).
    pub(crate) fn new(
        number: u32,
        endpoint: Endpoint,
        provider: Arc<str>,
        model: Arc<str>,
        start: Duration,
    ) -> Self {
        Self {
            number,
            span_id: None,
            endpoint,
            provider,
            model,
            start,
            duration: Duration::ZERO,
            outcome: AttemptOutcome::Pending,
            status: None,
            error_code: None,
            server: None,
        }
    }

    /// Its `error.type`: the upstream's error status (`"503"`), else the router's error code;
    /// `None` when it went well.
    pub fn error_type(&self) -> Option<&str> {
        match (self.error_code, &self.status) {
            (Some(code), _) => Some(code),
            (None, Some(status)) if status.is_client_error() || status.is_server_error() => {
                Some(status.as_str())
            }
            _ => None,
        }
    }

    /// With its span id.
    #[must_use]
    pub(crate) fn with_span_id(mut self, span_id: Option<[u8; 8]>) -> Self {
        self.span_id = span_id;
        self
    }
}

/// How an upstream attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Still under way (or dropped before it ended: the client went away).
    Pending,
    /// Its answer, good or bad, went to the client.
    Answered,
    /// It failed and another attempt may have followed.
    Failed,
}

impl AttemptOutcome {
    /// `pending`, `answered`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Answered => "answered",
            Self::Failed => "failed",
        }
    }
}

/// An upstream's host and port (`server.address`, `server.port`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerAddress {
    /// The host name or IP address.
    pub host: Arc<str>,
    /// The port (the scheme's default when the URL names none).
    pub port: u16,
}

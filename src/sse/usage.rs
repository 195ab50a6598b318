//! What a stream reports when it ends: usage, first-byte time, outcome.

use std::fmt;
use std::time::Duration;

use crate::extensions::{RequestId, RouteTarget};
pub use crate::observe::Usage;

pub use crate::observe::Outcome as StreamOutcome;

/// A finished stream, as given to [`OnUsage`].
#[derive(Clone, Debug)]
pub struct StreamReport {
    /// The router's request id.
    pub request_id: Option<RequestId>,
    /// Where the request went.
    pub target: Option<RouteTarget>,
    /// The usage the stream carried, if any.
    pub usage: Option<Usage>,
    /// Time from the request reaching the stream layer to the first body bytes.
    pub first_byte: Option<Duration>,
    /// Time from the request reaching the stream layer to the end.
    pub duration: Duration,
    /// How the stream ended.
    pub outcome: StreamOutcome,
}

/// Called once when a stream ends, however it ends. Implemented for closures
/// `Fn(&StreamReport)`; [`LogUsage`] is the default.
pub trait OnUsage: Send + Sync + 'static {
    /// The stream described by `report` has ended.
    fn on_stream_end(&self, report: &StreamReport);
}

impl<F> OnUsage for F
where
    F: Fn(&StreamReport) + Send + Sync + 'static,
{
    fn on_stream_end(&self, report: &StreamReport) {
        self(report)
    }
}

/// The default [`OnUsage`]: one `debug` log line per stream (the request's own line, from the
/// router's [`Observer`](crate::observe::Observer), carries the same usage).
#[derive(Clone, Copy, Default)]
pub struct LogUsage;

impl OnUsage for LogUsage {
    fn on_stream_end(&self, report: &StreamReport) {
        let usage = report.usage.unwrap_or_default();
        tracing::debug!(
            id = report.request_id.as_ref().map(RequestId::as_str),
            provider = report.target.as_ref().map(RouteTarget::provider),
            upstream_model = report.target.as_ref().map(RouteTarget::upstream_model),
            outcome = ?report.outcome,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            first_byte_us = report.first_byte.map(|d| d.as_micros() as u64),
            duration_us = report.duration.as_micros() as u64,
            "stream finished"
        );
    }
}

impl fmt::Debug for LogUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogUsage")
    }
}

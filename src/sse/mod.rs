//! Streaming: event streams passed through event by event, observed, timed and cancelled.
//!
//! [`Sse`] wraps every successful `text/event-stream` answer (chat and completions
//! `data:` + `[DONE]`, Responses API `event:` + `data:`, image and speech streams) in an
//! [`SseBody`], and every other successful answer in an [`IdleBody`]; it works in front of any
//! service, e.g. an axum handler answering `axum::response::Sse`:
//!
//! - **Pass-through.** Each upstream chunk is forwarded when it arrives, bytes unchanged:
//!   no re-framing, no added lines, comments and `[DONE]` kept. The only bytes held back are
//!   the start of an event whose end has not arrived yet (upstreams send whole events, so in
//!   practice nothing waits): the client is then on an event boundary, and a failure frame
//!   never lands inside a half-sent event. (An event over 8 MiB is forwarded as it comes; a
//!   failure inside such an event aborts the response instead of sending a frame.) No task is spawned and no channel used: the
//!   client's read pace is the upstream's read pace.
//! - **Observation.** A scanner finds events across chunk splits (any line ending, multi-line
//!   `data:`), reads usage (chat `usage` chunk, `response.completed` usage) and the time to the
//!   first byte, and reports them once per stream to an [`OnUsage`] hook ([`LogUsage`] by
//!   default), however the stream ends. The answer's `id` and `model` (first chunk) and each
//!   choice's `finish_reason` go to the request's
//!   [`RequestLog`](crate::observe::RequestLog) with the usage.
//! - **JSON answers.** A successful `application/json` answer of chat completions,
//!   completions, embeddings or responses is read at both ends as its frames pass (none is
//!   held back, nothing is parsed whole): its first KiB gives `id` and `model`, its last
//!   16 KiB `usage` and the `finish_reason`s, recorded in the request's
//!   [`RequestLog`](crate::observe::RequestLog) when it ends. An answer whose `usage` lies
//!   before its last 16 KiB (no provider sends one) has none recorded.
//! - **Usage injection (opt-in per provider).** For a streamed chat completion whose client did
//!   not send `stream_options`, the route layer may add `"stream_options":{"include_usage":true}`
//!   upstream ([`RouteLayer::inject_usage`](crate::route::RouteLayer::inject_usage)) so usage
//!   can be counted; this layer then removes what that changed from what the client receives:
//!   the extra `choices: []` usage chunk, and the `"usage": null` member the provider then adds
//!   to every other chunk (each such event is copied once without it; the stream stays event by
//!   event).
//! - **Headers.** `cache-control: no-cache` and `x-accel-buffering: no` (so a reverse proxy in
//!   front does not buffer); `content-length` is dropped. Upstreams are asked for
//!   `accept-encoding: identity`, so the stream is readable text; tower-http's compression
//!   layer skips `text/event-stream` by default.
//!
//! # Failure contract
//! - The upstream fails **before the first byte** (refused, 4xx/5xx, no response head within the
//!   provider's timeout): a normal HTTP error status with an OpenAI error body, so the SDK raises
//!   the matching exception (502, the upstream's status, 504). A stream request (`"stream":
//!   true`) answered 2xx with something that is not an event stream (an HTML page, JSON) is a
//!   502 `upstream_error` too: an SDK would otherwise read no event and raise nothing.
//! - The upstream answered 200 and then **fails mid-stream** (connection reset, malformed
//!   chunked encoding) or **stays silent** longer than the idle timeout: the router sends
//!   `data: {"error":{"message":...,"type":"server_error","param":null,"code":"upstream_stream_error"}}`
//!   (`code: "upstream_idle_timeout"` for silence) and a blank line, then ends the stream; for
//!   the Responses API an `event: error` with `{"type":"error","code","message","param",
//!   "sequence_number"}`. It never makes up a `finish_reason` or a `[DONE]`.
//! - A **non-stream** answer (JSON, audio) whose body stalls for the idle timeout after its
//!   head is aborted (no bytes can be added to it); the SDK raises a connection error.
//! - The **client goes away** (mid-stream, or before a non-streaming answer arrived): the
//!   upstream response is dropped with the body, which closes its connection, so the provider
//!   stops generating; the hook sees [`StreamOutcome::ClientGone`].
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use ai_router::sse::{SseLayer, StreamSettings};
//!
//! let layer = SseLayer::new()
//!     .idle_timeout(Duration::from_secs(120))
//!     .provider("openai", StreamSettings::new().idle_timeout(Duration::from_secs(600)))
//!     .on_usage(|report: &ai_router::sse::StreamReport| {
//!         println!("{:?} used {:?}", report.target, report.usage);
//!     });
//! # let _ = layer;
//! ```
mod answer;
mod body;
mod future;
mod idle;
mod injected;
mod layer;
#[cfg(test)]
mod proptests;
mod scanner;
mod service;
mod stream;
mod usage;

pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::idle::IdleBody;
pub use self::layer::{DEFAULT_IDLE_TIMEOUT, SseLayer, StreamSettings};
pub use self::service::Sse;
pub use self::stream::SseBody;
pub use self::usage::{LogUsage, OnUsage, StreamOutcome, StreamReport, Usage};

#[cfg(feature = "fuzzing")]
pub(crate) use self::scanner::EventScanner;

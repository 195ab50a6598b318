//! [`OtlpExporter`]: the router's spans written from request summaries and sent over
//! OTLP/HTTP, without `tracing` or the OpenTelemetry SDK.
//!
//! The request path only clones its summary into a bounded queue (no encoding, no syscall;
//! dropped and counted when full); the exporter's own thread wakes on its timer, or when a
//! full batch waits, encodes the batch ([`super::proto`]) and posts it (once more after the
//! collector's `Retry-After` when it answers 429, 502, 503 or 504, as OTLP/HTTP asks; a pause
//! it still asks for after that is kept before the next export).

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Notify;

use super::proto::Encoder;
use super::{https_connector, traces_url};
use crate::error::BuildError;
use crate::observe::{Observer, RequestSummary};

/// The most requests one export carries; a queue this long wakes the exporter.
const MAX_EXPORT_BATCH: usize = 512;
/// The default of [`OtlpExporterBuilder::max_queue_size`] (as `OTEL_BSP_MAX_QUEUE_SIZE`).
const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// The default of [`OtlpExporterBuilder::scheduled_delay`] (as `OTEL_BSP_SCHEDULE_DELAY`).
const DEFAULT_SCHEDULED_DELAY: Duration = Duration::from_secs(5);
/// The shortest export timeout and scheduled delay (zero would fail every export, or spin).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// The default of [`OtlpExporterBuilder::export_timeout`].
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning about failed exports per this long.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// The most of a collector's answer read (to reuse the connection); the rest is left.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// `Content-Type` of OTLP/HTTP protobuf.
const PROTOBUF: HeaderValue = HeaderValue::from_static("application/x-protobuf");

/// Sends the router's spans to an OpenTelemetry collector over OTLP/HTTP (protobuf), written
/// straight from each request's [`RequestSummary`]: an [`Observer`] to give the router.
///
/// For every finished request with a sampled trace context
/// ([`SetRequestIdLayer::trace_context`](crate::request_id::SetRequestIdLayer::trace_context)),
/// it exports the request's SERVER span (`chat openai/gpt-4o-mini`, with the GenAI attributes
/// the `tracing` span has) and a CLIENT span per upstream attempt. No `tracing` subscriber is
/// needed: turn the `tracing` GenAI spans off beside it
/// ([`genai_spans(false)`](crate::request_id::SetRequestIdLayer::genai_spans)).
///
/// A request only clones its summary into a bounded queue (past
/// [`max_queue_size`](OtlpExporterBuilder::max_queue_size) it is dropped and counted, see
/// [`dropped`](Self::dropped)); a thread of the exporter's own (`ai-router-otlp`, with its own
/// runtime) sends batches of at most 512 requests when its timer fires or a full batch waits.
/// A slow, failing or dead collector never slows or fails a request: a batch refused with 429,
/// 502, 503 or 504 is sent once more after the collector's `Retry-After` (when it asks for at
/// most 5 s and that fits in the export timeout); a failed export drops its batch, counted,
/// with a warning (target `ai_router::otel`) at most every 10 s. A collector that still asks
/// for a pause (`Retry-After` in seconds) is left alone for it (at most a minute) before the
/// next export: the rest of the requests taken with the refused batch are dropped, the queue
/// fills meanwhile, and what does not fit is dropped; all counted. A shutdown sends what is
/// queued without waiting for the pause to end.
///
/// Cheap to clone (shared). Call [`shutdown`](Self::shutdown) before exiting so what is
/// queued is sent; dropping the last clone stops the thread after one last export.
///
/// # Example
/// ```no_run
/// use ai_router::otel::OtlpExporter;
/// use ai_router::request_id::SetRequestIdLayer;
///
/// # fn demo() -> Result<(), ai_router::BuildError> {
/// let exporter = OtlpExporter::builder("http://127.0.0.1:4318")
///     .service_name("ai-router")
///     .build()?;
/// let layer = SetRequestIdLayer::new()
///     .trace_context(true)
///     .genai_spans(false)
///     .observer(exporter.clone());
/// // ... serve ...
/// exporter.shutdown(std::time::Duration::from_secs(5));
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OtlpExporter {
    inner: Arc<Inner>,
}

/// What the clones share; dropping it stops the thread.
struct Inner {
    shared: Arc<Shared>,
    /// Gets whether the last export delivered everything when the thread ends; taken by
    /// the first [`OtlpExporter::shutdown`].
    finished: Mutex<Option<mpsc::Receiver<bool>>>,
    endpoint: Arc<str>,
    /// The configured headers' names (their values are credentials: never shown).
    header_names: Vec<HeaderName>,
}

/// What the request path and the exporter's thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the thread: a full batch waits, or it is told to stop.
    wake: Notify,
    max_queue_size: usize,
    dropped: AtomicU64,
}

/// The requests waiting to be exported.
struct Queue {
    items: Vec<(SystemTime, RequestSummary)>,
    /// Shut down: nothing more is taken.
    stopped: bool,
}

impl Shared {
    /// Stops taking requests and wakes the thread for its last export.
    fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Swaps the queue with `taken` (empty, its capacity kept for the next turn); returns
    /// whether the exporter is stopped.
    fn take(&self, taken: &mut Vec<(SystemTime, RequestSummary)>) -> bool {
        let mut queue = self.lock();
        std::mem::swap(&mut queue.items, taken);
        queue.stopped
    }

    /// Whether a stop was asked for.
    fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    fn count_dropped(&self, requests: usize) {
        self.dropped.fetch_add(requests as u64, Ordering::Relaxed);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl OtlpExporter {
    /// Starts a configuration exporting to the collector at `endpoint`: a base URL
    /// (`http://127.0.0.1:4318`, `/v1/traces` is appended) or the full traces URL (ending in
    /// `/v1/traces`). `https` works (rustls, webpki roots).
    pub fn builder(endpoint: impl Into<String>) -> OtlpExporterBuilder {
        OtlpExporterBuilder {
            endpoint: endpoint.into(),
            service_name: "ai-router".to_owned(),
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            scheduled_delay: DEFAULT_SCHEDULED_DELAY,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            headers: Vec::new(),
        }
    }

    /// The URL spans are sent to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// How many requests' spans were dropped so far: the queue was full (or the exporter shut
    /// down), their export failed, or they were taken with a batch the collector refused
    /// asking for a pause.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// Sends what is queued and stops the exporter's thread, waiting at most `wait` (a dead
    /// collector never holds the caller longer). Returns whether everything still queued was
    /// delivered in time; a second call returns `false` at once. Safe from any thread, inside
    /// a runtime or not: the export runs on the exporter's own thread.
    pub fn shutdown(&self, wait: Duration) -> bool {
        self.inner.shared.stop();
        let finished = self
            .inner
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        finished.is_some_and(|finished| finished.recv_timeout(wait).unwrap_or(false))
    }
}

impl Observer for OtlpExporter {
    fn on_end(&self, summary: &RequestSummary) {
        if !summary.trace.as_ref().is_some_and(|t| t.is_sampled()) {
            return;
        }
        // The clone is made outside the lock (and a rejected one dropped outside it too).
        let item = (SystemTime::now(), summary.clone());
        let shared = &self.inner.shared;
        let (rejected, full_batch) = {
            let mut queue = shared.lock();
            if queue.stopped || queue.items.len() >= shared.max_queue_size {
                (Some(item), false)
            } else {
                queue.items.push(item);
                (None, queue.items.len() % MAX_EXPORT_BATCH == 0)
            }
        };
        if rejected.is_some() {
            shared.count_dropped(1);
        } else if full_batch {
            // The only wake-up a request makes: once per full batch.
            shared.wake.notify_one();
        }
    }
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.inner.endpoint)
            .field("headers", &self.inner.header_names)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Configures an [`OtlpExporter`].
#[derive(Clone)]
#[must_use]
pub struct OtlpExporterBuilder {
    endpoint: String,
    service_name: String,
    export_timeout: Duration,
    scheduled_delay: Duration,
    max_queue_size: usize,
    headers: Vec<(String, String)>,
}

impl OtlpExporterBuilder {
    /// The `service.name` resource attribute (default `ai-router`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// How long one export may take, connecting included, before its batch is given up
    /// (default 10 s; at least 1 ms).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }

    /// How long finished requests wait to be sent in a batch (default 5 s; at least 1 ms); a
    /// full batch (512 requests) is sent at once (not during a pause the collector asked for).
    pub fn scheduled_delay(mut self, delay: Duration) -> Self {
        self.scheduled_delay = delay;
        self
    }

    /// How many finished requests may wait at most (default 2048); past it, new ones are
    /// dropped and counted ([`OtlpExporter::dropped`]).
    pub fn max_queue_size(mut self, size: usize) -> Self {
        self.max_queue_size = size;
        self
    }

    /// A header sent with every export: the collector's credentials, say. Headers from
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` and `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`,
    /// values percent-encoded) are read at [`build`](Self::build); a header set here wins.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Builds the exporter and starts its thread. Fails on an endpoint that is not an `http`
    /// or `https` URL, or a header that cannot be sent.
    pub fn build(self) -> Result<OtlpExporter, BuildError> {
        let endpoint = traces_url(&self.endpoint)?;
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| BuildError::new(format!("OTLP endpoint `{endpoint}`: {e}")))?;
        let headers = self.headers_with_env()?;
        let header_names = headers.keys().cloned().collect();
        // Zero would fail every export, or spin the thread (and contend for the queue's lock).
        let export_timeout = self.export_timeout.max(MIN_WAIT);
        let scheduled_delay = self.scheduled_delay.max(MIN_WAIT);
        let connector = https_connector(export_timeout)?;
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                // Full size up front (bounded): growing it would copy it under the lock, on
                // a request's path.
                items: Vec::with_capacity(queue_capacity(self.max_queue_size)),
                stopped: false,
            }),
            wake: Notify::new(),
            max_queue_size: self.max_queue_size,
            dropped: AtomicU64::new(0),
        });
        let export = Export {
            client,
            uri,
            headers,
            timeout: export_timeout,
            scheduled_delay,
            encoder: Encoder::new(&self.service_name),
        };
        let (done, finished) = mpsc::channel();
        let (started, start) = mpsc::channel();
        let thread_shared = shared.clone();
        // The runtime is made (and dropped) on the thread: never inside the caller's runtime.
        std::thread::Builder::new()
            .name("ai-router-otlp".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started.send(Err(error.to_string()));
                        return;
                    }
                };
                let _ = started.send(Ok(()));
                let delivered = runtime.block_on(export.run(&thread_shared));
                let _ = done.send(delivered);
            })
            .map_err(|e| BuildError::new(format!("OTLP exporter thread: {e}")))?;
        match start.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return Err(BuildError::new(format!("OTLP exporter runtime: {error}")));
            }
            Err(_) => return Err(BuildError::new("OTLP exporter thread ended at start")),
        }
        Ok(OtlpExporter {
            inner: Arc::new(Inner {
                shared,
                finished: Mutex::new(Some(finished)),
                endpoint: endpoint.into(),
                header_names,
            }),
        })
    }

    /// The headers of every export: the environment's (the traces-specific variable over
    /// the general one), then the configured ones, then `Content-Type`.
    fn headers_with_env(&self) -> Result<HeaderMap, BuildError> {
        let mut headers = HeaderMap::new();
        for variable in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            let Ok(list) = std::env::var(variable) else {
                continue;
            };
            for (name, value) in parse_header_list(&list) {
                match header(name, &value) {
                    Ok((name, value)) => {
                        headers.insert(name, value);
                    }
                    // Named, never shown: it may be a credential.
                    Err(_) => tracing::warn!(
                        target: "ai_router::otel",
                        variable,
                        header = name,
                        "an OTLP header that cannot be sent was left out"
                    ),
                }
            }
        }
        for (name, value) in &self.headers {
            let (name, value) = header(name, value)?;
            headers.insert(name, value);
        }
        headers.insert(CONTENT_TYPE, PROTOBUF);
        Ok(headers)
    }
}

impl fmt::Debug for OtlpExporterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OtlpExporterBuilder")
            .field("endpoint", &self.endpoint)
            .field("service_name", &self.service_name)
            .field("export_timeout", &self.export_timeout)
            .field("scheduled_delay", &self.scheduled_delay)
            .field("max_queue_size", &self.max_queue_size)
            .field("headers", &header_names)
            .finish()
    }
}

/// The capacity the queue starts with: all of it, up to the default size (a larger queue grows
/// as it first fills, and keeps its capacity).
fn queue_capacity(max_queue_size: usize) -> usize {
    max_queue_size.min(DEFAULT_MAX_QUEUE_SIZE)
}

/// `name: value` as a header, the value marked sensitive; the error names the header alone.
fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), BuildError> {
    let invalid = || BuildError::new(format!("OTLP header `{name}`: not a valid header"));
    let name = HeaderName::try_from(name).map_err(|_| invalid())?;
    let mut value = HeaderValue::try_from(value).map_err(|_| invalid())?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// The pairs of an `OTEL_EXPORTER_OTLP_*HEADERS` list (`k=v,k2=v2`, W3C Baggage-like): keys
/// and values trimmed, values percent-decoded; a pair without `=`, with an empty key or a
/// value that is not UTF-8 once decoded is left out.
fn parse_header_list(list: &str) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    list.split(',').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .ok()?;
        Some((name, value))
    })
}

/// The exporter's thread's side: the client, where to send, and the encoder.
struct Export {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
    timeout: Duration,
    scheduled_delay: Duration,
    encoder: Encoder,
}

/// Why an export failed (shown in the warning; never a header).
enum Failure {
    /// No answer within the export timeout.
    Timeout,
    /// The request failed (connection refused, reset, TLS, ...).
    Request(hyper_util::client::legacy::Error),
    /// The collector answered with an error status.
    Status(http::StatusCode, Option<Duration>),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Request(error) => {
                write!(f, "{error}")?;
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Self::Status(status, _) => write!(f, "the collector answered {status}"),
        }
    }
}

/// Failed exports not yet warned about, and when the last warning was.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    failures: u64,
    requests: u64,
}

impl Warnings {
    /// Counts `requests` dropped unsent during a pause the collector asked for (shown with the
    /// next warning).
    fn held_back(&mut self, requests: usize) {
        self.requests += requests as u64;
    }

    /// Counts a failed export of `requests` requests; warns when none was shown for a while.
    fn failed(&mut self, failure: &Failure, requests: usize) {
        self.failures += 1;
        self.requests += requests as u64;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            target: "ai_router::otel",
            error = %failure,
            failed_exports = self.failures,
            dropped_requests = self.requests,
            "OTLP export failed; its spans were dropped"
        );
        self.last = Some(now);
        self.failures = 0;
        self.requests = 0;
    }
}

impl Export {
    /// The thread's loop: waits for the timer or a wake-up, exports what is queued, until
    /// stopped. Returns whether the last round delivered everything.
    async fn run(mut self, shared: &Shared) -> bool {
        // Swapped with the queue: the same capacity, so neither grows once warm.
        let mut taken = Vec::with_capacity(queue_capacity(shared.max_queue_size));
        let mut warnings = Warnings::default();
        // A round that failed after the stop was asked for lost spans queued before it.
        let mut lost_after_stop = false;
        // The collector asked for a pause that outlasted the retry: no export before this.
        let mut paused_until: Option<tokio::time::Instant> = None;
        loop {
            // Woken early by a full batch or a stop; a wake-up sent while exporting is kept.
            let _ = tokio::time::timeout(self.scheduled_delay, shared.wake.notified()).await;
            // Only a stop ends a pause early (full batches wait: the queue is bounded).
            while let Some(until) = paused_until.filter(|_| !shared.is_stopped()) {
                if tokio::time::timeout_at(until, shared.wake.notified())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            paused_until = None;
            let stopped = shared.take(&mut taken);
            let mut delivered = true;
            for batch in taken.chunks(MAX_EXPORT_BATCH) {
                if paused_until.is_some() && !stopped && !shared.is_stopped() {
                    // Asked to pause earlier in this round: the rest is not sent (unless a
                    // stop came meanwhile: then this is the last chance).
                    delivered = false;
                    shared.count_dropped(batch.len());
                    warnings.held_back(batch.len());
                    continue;
                }
                for (end, summary) in batch {
                    self.encoder.push(*end, summary);
                }
                if self.encoder.span_count() == 0 {
                    continue;
                }
                let body = self.encoder.finish();
                if let Err(failure) = self.send(body).await {
                    delivered = false;
                    shared.count_dropped(batch.len());
                    warnings.failed(&failure, batch.len());
                    paused_until = failure
                        .pause()
                        .map(|pause| tokio::time::Instant::now() + pause);
                }
            }
            // The summaries are dropped here, off the request path.
            taken.clear();
            if stopped {
                return delivered && !lost_after_stop;
            }
            if !delivered && shared.is_stopped() {
                lost_after_stop = true;
            }
        }
    }

    /// Posts one export request, within the export timeout; an answer the OTLP/HTTP spec calls
    /// retryable (429, 502, 503, 504) is tried once more after the collector's `Retry-After`
    /// in seconds (1 s when it names none), when that is at most [`MAX_RETRY_WAIT`] and fits in
    /// the timeout.
    async fn send(&self, body: Vec<u8>) -> Result<(), Failure> {
        let body = Bytes::from(body);
        let now = tokio::time::Instant::now();
        // A timeout too long to add is as good as none.
        let deadline = now
            .checked_add(self.timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        let mut retried = false;
        loop {
            let result = tokio::time::timeout_at(deadline, self.post(body.clone()))
                .await
                .unwrap_or(Err(Failure::Timeout));
            match result {
                Err(Failure::Status(status, retry_after)) if !retried && retryable(status) => {
                    // A collector asking for a longer pause than the router waits is not
                    // retried early: the batch is dropped.
                    let wait = retry_after.unwrap_or(RETRY_WAIT);
                    if wait > MAX_RETRY_WAIT || tokio::time::Instant::now() + wait >= deadline {
                        return Err(Failure::Status(status, retry_after));
                    }
                    tokio::time::sleep(wait).await;
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// One POST of `body` and its answer.
    async fn post(&self, body: Bytes) -> Result<(), Failure> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let response = self
            .client
            .request(request)
            .await
            .map_err(Failure::Request)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read (bounded) so the connection can be reused; what it says is not needed.
        let _ = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status, retry_after))
        }
    }
}

impl Failure {
    /// The pause a retryable answer asked for (its `Retry-After`, at most [`MAX_PAUSE`]), to
    /// keep before the next export.
    fn pause(&self) -> Option<Duration> {
        match self {
            Self::Status(status, Some(wait)) if retryable(*status) && !wait.is_zero() => {
                Some((*wait).min(MAX_PAUSE))
            }
            _ => None,
        }
    }
}

/// The statuses OTLP/HTTP says to retry.
fn retryable(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// The wait before the retry when the collector names none.
const RETRY_WAIT: Duration = Duration::from_secs(1);
/// The longest wait before the retry, whatever `Retry-After` says (the queue keeps filling).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// The longest pause kept before the next export when the collector still asks for one after
/// the retry.
const MAX_PAUSE: Duration = Duration::from_secs(60);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::convert::Infallible;

    use http::Response;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc as channel;

    use super::*;
    use crate::extensions::TraceContext;
    use crate::observe::RequestLog;
    use crate::otel::proto::tests::{finish, full_summary, joined, spans};

    /// What the collector got: path, content type, `x-api-key`, body.
    type Received = (String, Option<HeaderValue>, Option<HeaderValue>, Bytes);

    /// A collector on loopback answering `status` to every request and reporting it.
    async fn collector(status: u16) -> (String, channel::UnboundedReceiver<Received>) {
        collector_answering(vec![status], "0").await
    }

    /// A collector answering `statuses` in turn (the last one from then on), with
    /// `Retry-After: {retry_after}` on errors.
    async fn collector_answering(
        statuses: Vec<u16>,
        retry_after: &'static str,
    ) -> (String, channel::UnboundedReceiver<Received>) {
        let statuses = Arc::new(statuses);
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (report, received) = channel::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let report = report.clone();
                let (statuses, answered) = (statuses.clone(), answered.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let report = report.clone();
                    let n = answered.fetch_add(1, Ordering::Relaxed);
                    let status = statuses[n.min(statuses.len() - 1)];
                    async move {
                        let path = request.uri().path().to_owned();
                        let content_type = request.headers().get(CONTENT_TYPE).cloned();
                        let key = request.headers().get("x-api-key").cloned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let _ = report.send((path, content_type, key, body));
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        if status >= 400 {
                            response
                                .headers_mut()
                                .insert("retry-after", http::HeaderValue::from_static(retry_after));
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (format!("http://{address}"), received)
    }

    /// A loopback port nothing listens on (bound, then closed).
    fn refused_endpoint() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    async fn next(received: &mut channel::UnboundedReceiver<Received>) -> Received {
        tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_are_posted_to_the_collector_with_the_configured_headers() {
        let (endpoint, mut received) = collector(200).await;
        let exporter = OtlpExporter::builder(endpoint.as_str())
            .service_name("gateway-1")
            .header("x-api-key", "secret-1")
            .scheduled_delay(Duration::from_millis(50))
            .build()
            .unwrap();
        assert_eq!(exporter.endpoint(), format!("{endpoint}/v1/traces"));
        assert!(!format!("{exporter:?}").contains("secret-1"));
        let summary = full_summary();
        exporter.on_end(&summary);

        let (path, content_type, key, body) = next(&mut received).await;
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type.unwrap(), "application/x-protobuf");
        assert_eq!(key.unwrap(), "secret-1");
        let spans = spans(ExportTraceServiceRequest::decode(body).unwrap());
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].span_id, summary.trace.unwrap().span_id());
        assert!(exporter.shutdown(Duration::from_secs(10)));
        assert_eq!(exporter.dropped(), 0);
        // Shut down: nothing more is taken.
        exporter.on_end(&full_summary());
        assert_eq!(exporter.dropped(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_batch_wakes_the_exporter_before_its_timer() {
        let (endpoint, mut received) = collector(200).await;
        let exporter = OtlpExporter::builder(endpoint)
            .service_name("gateway-1")
            .scheduled_delay(Duration::from_secs(3600))
            .build()
            .unwrap();
        let log = RequestLog::traced(TraceContext::new_root());
        let summary = finish(&log, Some(200));
        for _ in 0..MAX_EXPORT_BATCH {
            exporter.on_end(&summary);
        }
        let (_, _, _, body) = next(&mut received).await;
        let spans = spans(ExportTraceServiceRequest::decode(body).unwrap());
        assert_eq!(spans.len(), MAX_EXPORT_BATCH);
        // Shutting down sends the rest at once.
        exporter.on_end(&summary);
        assert!(exporter.shutdown(Duration::from_secs(10)));
        let (_, _, _, body) = next(&mut received).await;
        assert_eq!(spans_in(body), 1);
    }

    fn spans_in(body: Bytes) -> usize {
        spans(ExportTraceServiceRequest::decode(body).unwrap()).len()
    }

    #[test]
    fn the_queue_is_bounded_and_unsampled_requests_are_skipped() {
        let exporter = OtlpExporter::builder(refused_endpoint())
            .scheduled_delay(Duration::from_secs(3600))
            .max_queue_size(3)
            .build()
            .unwrap();
        let queued = || exporter.inner.shared.lock().items.len();
        exporter.on_end(&finish(&RequestLog::traced(joined(false)), Some(200)));
        exporter.on_end(&finish(&RequestLog::new(), Some(200)));
        assert_eq!((queued(), exporter.dropped()), (0, 0));
        let summary = full_summary();
        for _ in 0..5 {
            exporter.on_end(&summary);
        }
        assert_eq!((queued(), exporter.dropped()), (3, 2));
        // Nothing can be delivered: the 3 queued are dropped too.
        assert!(!exporter.shutdown(Duration::from_secs(10)));
        assert_eq!(exporter.dropped(), 5);
        // A second shutdown has nothing to wait for.
        assert!(!exporter.shutdown(Duration::from_secs(10)));
    }

    #[test]
    fn shutdown_against_a_refused_port_returns_false_within_its_wait() {
        let exporter = OtlpExporter::builder(refused_endpoint())
            .scheduled_delay(Duration::from_secs(3600))
            .build()
            .unwrap();
        exporter.on_end(&full_summary());
        let started = Instant::now();
        assert!(!exporter.shutdown(Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(6));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_collector_holds_shutdown_no_longer_than_its_wait() {
        // Accepts connections and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let exporter = OtlpExporter::builder(format!("http://{address}"))
            .scheduled_delay(Duration::from_secs(3600))
            .export_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        exporter.on_end(&full_summary());
        let started = Instant::now();
        // Called from inside a runtime: blocks this worker alone.
        assert!(!exporter.shutdown(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(5));

        // With a short export timeout, the export is given up and counted.
        let exporter = OtlpExporter::builder(format!("http://{address}"))
            .scheduled_delay(Duration::from_secs(3600))
            .export_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        exporter.on_end(&full_summary());
        assert!(!exporter.shutdown(Duration::from_secs(10)));
        assert_eq!(exporter.dropped(), 1);
        accepting.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_status_drops_the_batch_after_one_retry_if_retryable() {
        // 503 is retried once (both refused: dropped), 400 is not.
        for (status, posts) in [(503, 2), (400, 1)] {
            let (endpoint, mut received) = collector(status).await;
            let exporter = OtlpExporter::builder(endpoint).build().unwrap();
            exporter.on_end(&full_summary());
            assert!(!exporter.shutdown(Duration::from_secs(10)));
            for _ in 0..posts {
                next(&mut received).await;
            }
            assert!(received.try_recv().is_err(), "{status}: one post too many");
            assert_eq!(exporter.dropped(), 1);
        }
    }

    /// A stop asked while a round is being sent, which then fails: what that round held is
    /// lost, and the shutdown says so (its own last round, empty, succeeds).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_failing_after_the_stop_was_asked_is_reported_lost() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (posted, mut post) = channel::unbounded_channel::<()>();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let posted = posted.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let posted = posted.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        let _ = posted.send(());
                        // Answered (refused, not retryable) well after the stop is asked.
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = http::StatusCode::BAD_REQUEST;
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let exporter = OtlpExporter::builder(format!("http://{address}"))
            .scheduled_delay(Duration::from_millis(10))
            .build()
            .unwrap();
        exporter.on_end(&full_summary());
        // The round is being sent: stop now.
        tokio::time::timeout(Duration::from_secs(10), post.recv())
            .await
            .unwrap()
            .unwrap();
        let stopping = exporter.clone();
        let delivered =
            tokio::task::spawn_blocking(move || stopping.shutdown(Duration::from_secs(10)))
                .await
                .unwrap();
        assert!(!delivered);
        assert_eq!(exporter.dropped(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_asking_for_a_long_pause_is_not_retried_early() {
        let (endpoint, mut received) = collector_answering(vec![429, 200], "60").await;
        let exporter = OtlpExporter::builder(endpoint).build().unwrap();
        exporter.on_end(&full_summary());
        assert!(!exporter.shutdown(Duration::from_secs(10)));
        next(&mut received).await;
        assert!(
            received.try_recv().is_err(),
            "retried before the pause asked for"
        );
        assert_eq!(exporter.dropped(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_asking_for_a_pause_gets_no_export_before_it_ends_but_gets_the_last() {
        let (endpoint, mut received) = collector_answering(vec![429, 200], "6").await;
        let exporter = OtlpExporter::builder(endpoint)
            .scheduled_delay(Duration::from_millis(10))
            .build()
            .unwrap();
        exporter.on_end(&full_summary());
        // Refused with a 6 s pause (longer than the retry waits): the batch is dropped.
        next(&mut received).await;
        exporter.on_end(&full_summary());
        // Without the pause the next export would follow within the 10 ms delay.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(
            received.try_recv().is_err(),
            "exported again during the pause the collector asked for"
        );
        // A shutdown does not wait for the pause to end: what is queued is sent.
        assert!(exporter.shutdown(Duration::from_secs(10)));
        next(&mut received).await;
        assert_eq!(exporter.dropped(), 1);
    }

    #[test]
    fn a_pause_is_kept_only_for_a_retryable_answer_naming_one_and_at_most_a_minute() {
        let status = |code, wait: Option<u64>| {
            Failure::Status(
                http::StatusCode::from_u16(code).unwrap(),
                wait.map(Duration::from_secs),
            )
            .pause()
        };
        assert_eq!(status(429, Some(6)), Some(Duration::from_secs(6)));
        assert_eq!(status(503, Some(86_400)), Some(MAX_PAUSE));
        assert_eq!(status(503, None), None);
        assert_eq!(status(503, Some(0)), None);
        assert_eq!(status(400, Some(6)), None);
        assert_eq!(Failure::Timeout.pause(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_that_answers_503_then_200_gets_the_batch() {
        let (endpoint, mut received) = collector_answering(vec![503, 200], "0").await;
        let exporter = OtlpExporter::builder(endpoint).build().unwrap();
        exporter.on_end(&full_summary());
        assert!(exporter.shutdown(Duration::from_secs(10)));
        let (first, second) = (next(&mut received).await, next(&mut received).await);
        assert_eq!(first.3, second.3, "the same batch, sent again");
        assert_eq!(exporter.dropped(), 0);
    }

    #[test]
    fn header_lists_are_parsed_and_values_percent_decoded() {
        let pairs: Vec<(&str, String)> =
            parse_header_list("api-key=a%20b%3Dc, x-tenant = t1 ,no-equals,=v,k2=")
                .map(|(name, value)| (name, value.into_owned()))
                .collect();
        assert_eq!(
            pairs,
            [
                ("api-key", "a b=c".to_owned()),
                ("x-tenant", "t1".to_owned()),
                ("k2", String::new()),
            ]
        );
    }

    #[test]
    fn bad_configurations_are_refused_without_showing_header_values() {
        let error = OtlpExporter::builder("ftp://collector:4318")
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("OTLP endpoint"), "{error}");
        let error = OtlpExporter::builder("not a url").build().unwrap_err();
        assert!(error.to_string().contains("OTLP endpoint"), "{error}");
        let error = OtlpExporter::builder("http://127.0.0.1:4318")
            .header("x-api-key", "secret\n2")
            .build()
            .unwrap_err();
        assert!(
            error.to_string().contains("OTLP header `x-api-key`"),
            "{error}"
        );
        assert!(!error.to_string().contains("secret"));
        let builder =
            OtlpExporter::builder("http://127.0.0.1:4318").header("x-api-key", "secret-3");
        assert!(!format!("{builder:?}").contains("secret-3"));
        let exporter = builder
            .endpoint_for_test("http://127.0.0.1:4318/v1/traces/")
            .build()
            .unwrap();
        assert_eq!(exporter.endpoint(), "http://127.0.0.1:4318/v1/traces");
    }

    impl OtlpExporterBuilder {
        fn endpoint_for_test(mut self, endpoint: &str) -> Self {
            self.endpoint = endpoint.to_owned();
            self
        }
    }
}

//! [`SseBody`]: an event stream passed through event by event, observed, timed, and ended
//! with an error frame when the upstream fails.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use super::scanner::EventScanner;
use super::usage::{OnUsage, StreamOutcome, StreamReport};
use crate::error::BoxError;
use crate::extensions::{Endpoint, RequestId, RouteTarget};
use crate::observe::RequestLog;

/// What the body needs to know about its request.
pub(crate) struct StreamContext {
    pub(crate) hook: Arc<dyn OnUsage>,
    pub(crate) request_id: Option<RequestId>,
    pub(crate) log: Option<RequestLog>,
    pub(crate) target: Option<RouteTarget>,
    pub(crate) start: Instant,
    pub(crate) idle_timeout: Duration,
    /// The settings, when idle timeouts differ by provider: a fallback's stream gets its own.
    pub(super) per_provider: Option<Arc<super::layer::Settings>>,
    pub(crate) strip_injected_usage: bool,
}

pin_project! {
    /// A streamed event-stream response body. See the [module docs](crate::sse).
    pub struct SseBody<B> {
        // `None` once the upstream is released (failed, idle): dropping it closes its
        // connection.
        #[pin]
        inner: Option<B>,
        #[pin]
        idle: Sleep,
        last_activity: Instant,
        scanner: EventScanner,
        out: VecDeque<Bytes>,
        first_byte: Option<Duration>,
        done: bool,
        context: Option<StreamContext>,
    }

    impl<B> PinnedDrop for SseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the end: the client went away. Dropping `inner` (right after)
            // drops the upstream response, which closes its connection.
            let this = this.project();
            if let Some(context) = this.context.take() {
                report(context, this.scanner, *this.first_byte, StreamOutcome::ClientGone);
            }
        }
    }
}

impl<B> SseBody<B> {
    pub(crate) fn new(inner: B, context: StreamContext) -> Self {
        let now = Instant::now();
        Self {
            inner: Some(inner),
            // `sleep` (not `now + timeout`) copes with a timeout too long to add to an instant.
            idle: tokio::time::sleep(context.idle_timeout),
            last_activity: now,
            scanner: EventScanner::new(context.strip_injected_usage).with_upstream_model(
                context
                    .target
                    .as_ref()
                    .map(|t| t.upstream_model_shared().clone()),
            ),
            out: VecDeque::new(),
            first_byte: None,
            done: false,
            context: Some(context),
        }
    }
}

impl<B> fmt::Debug for SseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBody")
            .field("done", &self.done)
            .field("events", &self.scanner.events())
            .finish_non_exhaustive()
    }
}

impl<B> Body for SseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(bytes) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if *this.done {
                return Poll::Ready(None);
            }
            let Some(inner) = this.inner.as_mut().as_pin_mut() else {
                *this.done = true;
                continue;
            };
            let outcome = match inner.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Data is scanned and forwarded; an event stream has no trailers to keep.
                    if let Ok(data) = frame.into_data() {
                        let now = Instant::now();
                        *this.last_activity = now;
                        if this.first_byte.is_none() {
                            let start = this.context.as_ref().map_or(now, |c| c.start);
                            *this.first_byte = Some(now.saturating_duration_since(start));
                        }
                        this.scanner.feed(data, this.out);
                    }
                    continue;
                }
                Poll::Ready(None) => {
                    if let Some(rest) = this.scanner.finish() {
                        this.out.push_back(rest);
                    }
                    StreamOutcome::Completed
                }
                Poll::Ready(Some(Err(error))) => {
                    let error: BoxError = error.into();
                    tracing::warn!(cause = %error, "upstream stream failed mid-way");
                    StreamOutcome::UpstreamFailed
                }
                Poll::Pending => {
                    let timeout = this.context.as_ref().map(|c| c.idle_timeout);
                    if !idle_elapsed(this.idle.as_mut(), *this.last_activity, timeout, cx) {
                        return Poll::Pending;
                    }
                    tracing::warn!("upstream stream idle for too long");
                    StreamOutcome::IdleTimeout
                }
            };
            *this.done = true;
            if outcome != StreamOutcome::Completed && this.scanner.mid_event() {
                // The client holds the start of an event: an error frame appended now would
                // corrupt it. Abort instead; the SDK raises a connection error.
                this.inner.set(None);
                if let Some(context) = this.context.take() {
                    report(context, this.scanner, *this.first_byte, outcome);
                }
                return Poll::Ready(Some(Err("upstream stream failed mid-event".into())));
            }
            if outcome != StreamOutcome::Completed {
                // Release the upstream now; the held partial event is never sent.
                this.inner.set(None);
                let endpoint = this
                    .context
                    .as_ref()
                    .and_then(|c| c.target.as_ref())
                    .map(RouteTarget::endpoint);
                this.out
                    .push_back(error_frame(endpoint, outcome, this.scanner.events()));
            }
            if let Some(context) = this.context.take() {
                report(context, this.scanner, *this.first_byte, outcome);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // Bytes may be added (an error frame) or removed (an injected usage chunk).
        SizeHint::default()
    }
}

/// Whether the idle timer has run out since the last activity. The timer is reset lazily:
/// only when it fires early, not on every frame.
pub(super) fn idle_elapsed(
    mut idle: Pin<&mut Sleep>,
    last_activity: Instant,
    timeout: Option<Duration>,
    cx: &mut Context<'_>,
) -> bool {
    let Some(timeout) = timeout else {
        return false;
    };
    loop {
        if idle.as_mut().poll(cx).is_pending() {
            return false;
        }
        let Some(deadline) = last_activity.checked_add(timeout) else {
            return false;
        };
        if deadline <= Instant::now() {
            return true;
        }
        idle.as_mut().reset(deadline);
    }
}

fn report(
    context: StreamContext,
    scanner: &EventScanner,
    first_byte: Option<Duration>,
    outcome: StreamOutcome,
) {
    if let Some(log) = &context.log {
        log.record_body(scanner.answer(), first_byte, outcome);
    }
    let report = StreamReport {
        request_id: context.request_id,
        target: context.target,
        usage: scanner.usage(),
        first_byte,
        duration: context.start.elapsed(),
        outcome,
    };
    context.hook.on_stream_end(&report);
}

/// The frame that ends a failed stream: `data: {"error":{...}}` (which the OpenAI SDKs raise
/// as an API error), or for the Responses API an `error` event.
fn error_frame(endpoint: Option<Endpoint>, outcome: StreamOutcome, events: u64) -> Bytes {
    let (message, code) = match outcome {
        StreamOutcome::IdleTimeout => (
            "The upstream provider stopped sending data; the stream was ended by the router.",
            "upstream_idle_timeout",
        ),
        _ => (
            "The upstream provider's stream failed; the stream was ended by the router.",
            "upstream_stream_error",
        ),
    };
    if endpoint == Some(Endpoint::Responses) {
        #[derive(Serialize)]
        struct ErrorEvent<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: &'a str,
            message: &'a str,
            param: Option<&'a str>,
            sequence_number: u64,
        }
        let event = ErrorEvent {
            kind: "error",
            code,
            message,
            param: None,
            sequence_number: events,
        };
        let json = serde_json::to_string(&event).unwrap_or_default();
        return Bytes::from(format!("event: error\ndata: {json}\n\n"));
    }
    let json = crate::error::render_body(message, "server_error", None, Some(code));
    let mut frame = Vec::with_capacity(json.len() + 8);
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(&json);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::observe::Usage;
    use http_body_util::BodyExt as _;
    use std::sync::Mutex;

    type Reports = Arc<Mutex<Vec<(StreamOutcome, Option<Usage>)>>>;

    fn context(reports: &Reports, endpoint: Endpoint) -> StreamContext {
        let reports = reports.clone();
        StreamContext {
            hook: Arc::new(move |r: &StreamReport| {
                reports.lock().unwrap().push((r.outcome, r.usage));
            }),
            request_id: None,
            log: None,
            target: Some(RouteTarget::new("p", "m", endpoint)),
            start: Instant::now(),
            idle_timeout: Duration::from_secs(5),
            per_provider: None,
            strip_injected_usage: false,
        }
    }

    /// An upstream body that plays a script: data, then a failure or silence.
    enum Step {
        Data(&'static str),
        Owned(Bytes),
        Fail,
        Silence,
    }

    struct Scripted(VecDeque<Step>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(data)) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(data.as_bytes())))))
                }
                Some(Step::Owned(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(Step::Fail) => Poll::Ready(Some(Err("connection reset".into()))),
                Some(Step::Silence) => {
                    self.0.push_front(Step::Silence);
                    Poll::Pending
                }
            }
        }
    }

    async fn run(steps: Vec<Step>, endpoint: Endpoint) -> (String, Reports) {
        let reports = Reports::default();
        let body = SseBody::new(Scripted(steps.into()), context(&reports, endpoint));
        let bytes = body.collect().await.unwrap().to_bytes();
        (String::from_utf8(bytes.to_vec()).unwrap(), reports)
    }

    #[tokio::test]
    async fn passes_events_through_and_reports_usage() {
        let stream = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n";
        let (bytes, reports) = run(vec![Step::Data(stream)], Endpoint::ChatCompletions).await;
        assert_eq!(bytes, stream);
        let reports = reports.lock().unwrap();
        assert_eq!(reports[0].0, StreamOutcome::Completed);
        assert_eq!(reports[0].1.unwrap().total_tokens, 3);
    }

    #[tokio::test]
    async fn a_mid_stream_failure_ends_with_an_error_frame_on_a_boundary() {
        let steps = vec![Step::Data("data: {\"a\":1}\n\ndata: {\"par"), Step::Fail];
        let (bytes, reports) = run(steps, Endpoint::ChatCompletions).await;
        let (first, error) = bytes.split_once("\n\n").unwrap();
        assert_eq!(first, "data: {\"a\":1}");
        let json: serde_json::Value =
            serde_json::from_str(error.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(json["error"]["code"], "upstream_stream_error");
        assert!(json["error"]["param"].is_null());
        assert!(!bytes.contains("[DONE]") && !bytes.contains("finish_reason"));
        assert_eq!(reports.lock().unwrap()[0].0, StreamOutcome::UpstreamFailed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_upstream_is_ended_with_an_error_event() {
        let steps = vec![
            Step::Data("event: response.created\ndata: {\"sequence_number\":0}\n\n"),
            Step::Silence,
        ];
        let (bytes, reports) = run(steps, Endpoint::Responses).await;
        let error = bytes.split("\n\n").nth(1).unwrap();
        assert!(error.starts_with("event: error\ndata: "), "{bytes}");
        let json: serde_json::Value =
            serde_json::from_str(error.split_once("data: ").unwrap().1).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["code"], "upstream_idle_timeout");
        assert_eq!(json["sequence_number"], 1);
        assert_eq!(reports.lock().unwrap()[0].0, StreamOutcome::IdleTimeout);
    }

    #[tokio::test]
    async fn a_failure_inside_an_outsized_event_aborts_instead_of_corrupting_it() {
        let reports = Reports::default();
        let huge = Bytes::from(format!("data: \"{}", "a".repeat(9 * 1024 * 1024)));
        let upstream = Scripted(vec![Step::Owned(huge), Step::Fail].into());
        let body = SseBody::new(upstream, context(&reports, Endpoint::ImagesGenerations));
        assert!(body.collect().await.is_err());
        assert_eq!(reports.lock().unwrap()[0].0, StreamOutcome::UpstreamFailed);
    }

    #[tokio::test]
    async fn an_unbounded_idle_timeout_does_not_overflow() {
        let reports = Reports::default();
        let mut context = context(&reports, Endpoint::ChatCompletions);
        context.idle_timeout = Duration::MAX;
        let upstream = Scripted(vec![Step::Data("data: x\n\n")].into());
        let bytes = SseBody::new(upstream, context)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(bytes, "data: x\n\n");
    }

    #[tokio::test]
    async fn dropping_the_body_reports_the_client_gone() {
        let reports = Reports::default();
        let upstream = Scripted(vec![Step::Silence].into());
        let body = SseBody::new(upstream, context(&reports, Endpoint::ChatCompletions));
        drop(body);
        assert_eq!(reports.lock().unwrap()[0].0, StreamOutcome::ClientGone);
    }
}

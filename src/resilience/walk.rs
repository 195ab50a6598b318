//! The attempt loop of a request with a [`RoutePlan`]: targets in order, retries with backoff,
//! timeouts, cooldowns, and the first event of a stream waited for, all before the first
//! byte reaches the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tower_service::Service;
use tracing::Instrument as _;

use super::body::ResponseBody;
use super::health::Health;
use super::span::AttemptTrace;
use super::{answered, failed_response};
use crate::error::{BoxError, Error, retryable_status};
use crate::extensions::{RoutePlan, RouteTarget};
use crate::media::content_type_is;
use crate::observe::RequestLog;

/// The longest `retry-after` the router waits out before retrying the same target; past it,
/// it moves on to the next target instead.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);
/// The longest `retry-after` read (a day); longer ones read as this.
const RETRY_AFTER_LIMIT: Duration = Duration::from_secs(86_400);
/// How long a stream's response head is held for its first event when no
/// `first_byte_timeout` is set: a failure before the first event within it still falls back;
/// past it, the stream goes to the client as it is.
pub const FIRST_EVENT_HOLD: Duration = Duration::from_secs(10);
/// The first backoff between retries of one target (doubled each time, with jitter).
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);

/// A failed attempt, kept in case it is the last.
enum Failure<B> {
    Answer(Response<B>),
    Error(Error),
}

/// What one attempt came to.
enum Attempt<B> {
    /// An answer to give the client (success, or a failure no other attempt can fix).
    Done(Response<ResponseBody<B>>),
    /// A failure another attempt may fix; how long the upstream asked to be left alone.
    Failed(Failure<B>, Option<Duration>),
}

/// Walks `plan` for the request made of `parts` and `body` (already for `first`).
pub(super) async fn walk<S, B>(
    inner: S,
    parts: http::request::Parts,
    body: Bytes,
    first: RouteTarget,
    plan: RoutePlan,
    health: Arc<Health>,
) -> Response<ResponseBody<B>>
where
    S: Service<Request<Bytes>, Response = Response<B>, Error = Error> + Clone,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let log = parts.extensions.get::<RequestLog>().cloned();
    let candidates: Vec<RouteTarget> = std::iter::once(first.clone())
        .chain(plan.fallbacks.iter().cloned())
        .collect();
    let mut attempts: u32 = 0;
    let mut last: Option<(Failure<B>, RouteTarget)> = None;
    'targets: for target in health.order(candidates) {
        let (body, content_type) = if target == first {
            (body.clone(), None)
        } else {
            match plan.body.body_for(&target) {
                Ok(made) => made,
                Err(error) => return failed_response(error, &target, attempts.max(1)),
            }
        };
        for retry in 0..=plan.retry.count() {
            if retry > 0 {
                let hinted = last.as_ref().and_then(|(failure, _)| retry_after(failure));
                match backoff(retry, hinted) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    // The upstream asked for longer than the router waits: next target.
                    None => continue 'targets,
                }
            }
            attempts += 1;
            let mut request = attempt_request(&parts, body.clone(), content_type.clone(), &target);
            let mut trace = AttemptTrace::start(&target, attempts, &mut request);
            let span = trace.span().clone();
            let outcome = attempt(inner.clone(), request, &target, &plan, &mut trace)
                .instrument(span)
                .await;
            // The attempt is over: its span ends here (its duration is the attempt's latency).
            trace.end(matches!(outcome, Attempt::Done(_)));
            match outcome {
                Attempt::Done(mut response) => {
                    health.succeeded(&target);
                    if let Some(log) = &log {
                        log.record_target(&target);
                        log.record_attempts(attempts);
                    }
                    answered(response.headers_mut(), &target, attempts);
                    response.extensions_mut().insert(target);
                    return response;
                }
                Attempt::Failed(failure, wait) => {
                    let is_429 = matches!(&failure, Failure::Answer(r) if r.status() == StatusCode::TOO_MANY_REQUESTS);
                    health.failed(&target, wait.filter(|_| is_429));
                    let again = match &failure {
                        Failure::Answer(response) => plan.retry.on(response.status().as_u16()),
                        // Not reached, broken or too slow: worth a retry when retries are
                        // asked for (a missing or refused credential is not).
                        Failure::Error(error) => error.is_transient(),
                    };
                    let (status, code) = match &failure {
                        Failure::Answer(response) => {
                            (response.status().as_u16(), "upstream_status")
                        }
                        Failure::Error(error) => (
                            error.status().as_u16(),
                            error.code().unwrap_or("upstream_error"),
                        ),
                    };
                    tracing::warn!(
                        n = attempts,
                        target = %target.label().to_str().unwrap_or_default(),
                        status,
                        code,
                        "attempt failed; {}",
                        if again && retry < plan.retry.count() { "retrying" } else { "trying the next target" }
                    );
                    last = Some((failure, target.clone()));
                    if !again {
                        continue 'targets;
                    }
                }
            }
        }
    }
    if let Some(log) = &log {
        log.record_attempts(attempts);
    }
    match last {
        // The last upstream error, as it came (the errors layer above puts it in shape).
        Some((Failure::Answer(response), target)) => {
            if let Some(log) = &log {
                log.record_target(&target);
            }
            let (mut parts, body) = response.into_parts();
            answered(&mut parts.headers, &target, attempts);
            Response::from_parts(parts, ResponseBody::direct(body))
        }
        Some((Failure::Error(error), target)) => failed_response(error, &target, attempts),
        None => failed_response(Error::internal(), &first, attempts),
    }
}

/// One attempt at `target`: its answer, or why another attempt may do better.
async fn attempt<S, B>(
    inner: S,
    request: Request<Bytes>,
    target: &RouteTarget,
    plan: &RoutePlan,
    trace: &mut AttemptTrace,
) -> Attempt<B>
where
    S: Service<Request<Bytes>, Response = Response<B>, Error = Error>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let call = inner.oneshot(request);
    let outcome = match plan.attempt_timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::upstream_timeout()),
        },
        None => call.await,
    };
    let response = match outcome {
        Ok(response) => response,
        Err(error) if error.is_retryable() => {
            tracing::debug!(cause = ?std::error::Error::source(&error), "attempt failed");
            return failed_attempt(trace, error);
        }
        Err(error) => {
            trace.error(error.code().unwrap_or("upstream_error"));
            return Attempt::Done(failed_response(error, target, 1));
        }
    };
    let status = response.status();
    trace.status(status);
    if !status.is_success() {
        if retryable_status(status) {
            let wait = retry_after_of(response.headers());
            return Attempt::Failed(Failure::Answer(response), wait);
        }
        // The request itself is wrong (400, 404, 422...): another upstream would say so too.
        return Attempt::Done(response.map(ResponseBody::direct));
    }
    if !target.stream() {
        return Attempt::Done(response.map(ResponseBody::direct));
    }
    if !content_type_is(response.headers(), "text/event-stream") {
        // A stream was asked for and something else came: another upstream may do better
        // (if none does, the client gets this as `upstream_error`).
        tracing::debug!("a stream was answered without an event stream");
        return failed_attempt(trace, Error::upstream_protocol());
    }
    // A stream: its head waits for its first event, so a failure before it can still fall
    // back (after it, the streaming failure contract stands).
    let (parts, mut body) = response.into_parts();
    let deadline = Instant::now() + plan.first_byte_timeout.unwrap_or(FIRST_EVENT_HOLD);
    // What came before the first event (comments, keep-alives) and the event itself.
    let mut held: Option<Bytes> = None;
    let first = loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => break FirstEvent::Late,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    let joined = match held.take() {
                        None => data,
                        Some(before) => [before, data].concat().into(),
                    };
                    if has_data_line(held.insert(joined)) {
                        break FirstEvent::Arrived;
                    }
                }
                // Trailers before any event: no answer.
                Err(_) => break FirstEvent::Broken,
            },
            Ok(Some(Err(_)) | None) => break FirstEvent::Broken,
        }
    };
    let handed_over = |body| match held {
        Some(held) => ResponseBody::prefixed(Frame::data(held), body),
        None => ResponseBody::direct(body),
    };
    match first {
        FirstEvent::Arrived => Attempt::Done(Response::from_parts(parts, handed_over(body))),
        // Slow, but no `first_byte_timeout` asked to give up on it: the client gets it as is.
        FirstEvent::Late if plan.first_byte_timeout.is_none() => {
            Attempt::Done(Response::from_parts(parts, handed_over(body)))
        }
        FirstEvent::Late => {
            tracing::debug!("no first event within first_byte_timeout");
            failed_attempt(trace, Error::upstream_timeout())
        }
        FirstEvent::Broken => {
            tracing::debug!("the stream failed before its first event");
            failed_attempt(trace, Error::upstream_protocol())
        }
    }
}

/// An attempt that failed with `error`, which another attempt may fix.
fn failed_attempt<B>(trace: &mut AttemptTrace, error: Error) -> Attempt<B> {
    trace.error(error.code().unwrap_or("upstream_error"));
    Attempt::Failed(Failure::Error(error), None)
}

/// How the wait for a stream's first event ended.
enum FirstEvent {
    Arrived,
    Late,
    Broken,
}

/// Whether `bytes` hold the start of an SSE `data:` line (comments and other fields do not
/// make an event).
fn has_data_line(bytes: &[u8]) -> bool {
    memchr::memmem::find_iter(bytes, b"data:")
        .any(|at| at == 0 || matches!(bytes[at - 1], b'\n' | b'\r'))
}

/// The request of one attempt: the client's head (its extensions too), `body`, and `target`.
fn attempt_request(
    parts: &http::request::Parts,
    body: Bytes,
    content_type: Option<HeaderValue>,
    target: &RouteTarget,
) -> Request<Bytes> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    if let Some(content_type) = content_type {
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    request.extensions_mut().insert(target.clone());
    request
}

/// How long to wait before retry number `retry` (from 1): the upstream's `retry-after` when it
/// gave one (`None` past [`RETRY_AFTER_CAP`]: move on instead), else exponential from
/// [`BACKOFF_BASE`] with jitter (x0.5 to x1.5).
pub(super) fn backoff(retry: u8, hinted: Option<Duration>) -> Option<Duration> {
    if let Some(hinted) = hinted {
        return (hinted <= RETRY_AFTER_CAP).then_some(hinted);
    }
    let exponential = BACKOFF_BASE * 2u32.saturating_pow(u32::from(retry.saturating_sub(1)));
    Some(exponential.mul_f64(0.5 + fastrand::f64()))
}

fn retry_after<B>(failure: &Failure<B>) -> Option<Duration> {
    match failure {
        Failure::Answer(response) => retry_after_of(response.headers()),
        Failure::Error(error) => error.retry_after(),
    }
}

/// An upstream's `retry-after-ms` (milliseconds), else `retry-after` (whole seconds; an HTTP
/// date is not read).
pub(super) fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let millis = read("retry-after-ms").or_else(|| read("retry-after").map(|s| s * 1000.0))?;
    // Any value the upstream sends, however large, reads as a duration (never a panic).
    Duration::try_from_secs_f64(millis / 1000.0)
        .ok()
        .map(|wait| wait.min(RETRY_AFTER_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after_up_to_the_cap() {
        for _ in 0..100 {
            let first = backoff(1, None).unwrap_or_default();
            assert!(
                first >= BACKOFF_BASE / 2 && first < BACKOFF_BASE * 3 / 2,
                "{first:?}"
            );
            let third = backoff(3, None).unwrap_or_default();
            assert!(
                third >= BACKOFF_BASE * 2 && third < BACKOFF_BASE * 6,
                "{third:?}"
            );
        }
        assert_eq!(
            backoff(1, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(backoff(1, Some(Duration::from_secs(11))), None);
    }

    #[test]
    fn retry_after_is_read_in_ms_first() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after_of(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after_of(&headers), Some(Duration::from_millis(150)));
        headers.clear();
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_of(&headers), None);
    }
}

//! Request ids and the per-request tracing span.
//!
//! [`SetRequestId`] keeps a well-formed incoming `x-request-id` or makes a new one, stores it
//! as the [`RequestId`] request extension, echoes it on every response, and runs the inner
//! service inside one `request` span. Layers below record `endpoint`, `provider` and
//! `upstream_model` on that span (auth records the key's `key` name); this layer records `status` and `latency_us` and logs one
//! line per request. The span never carries headers, bodies or keys.
//!
//! # Example
//! ```
//! use ai_router::request_id::{RequestId, SetRequestIdLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//! # async fn demo() -> Result<(), std::convert::Infallible> {
//! let service = ServiceBuilder::new()
//!     .layer(SetRequestIdLayer::new())
//!     .service_fn(|request: http::Request<()>| async move {
//!         let id = request.extensions().get::<RequestId>().map(|id| id.as_str().to_owned());
//!         Ok::<_, std::convert::Infallible>(http::Response::new(id.unwrap_or_default()))
//!     });
//! let response = service.oneshot(http::Request::new(())).await?;
//! assert_eq!(response.headers()["x-request-id"], response.body().as_str());
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;

/// `x-request-id`, the header the id travels in both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, as a request extension set by [`SetRequestId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ids made of visible ASCII are ever stored, so this cannot fail.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// Keeps a client's id when it is 1 to 128 characters of `[A-Za-z0-9._:-]`.
    fn from_incoming(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        valid.then(|| Self(value.clone()))
    }

    /// A new id: unique in the process, unpredictable across processes.
    fn generate() -> Self {
        static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let seed = SEED.get_or_init(Default::default);
        let mut id = String::with_capacity(28);
        let _ = write!(id, "req_{:016x}{:08x}", seed.hash_one(n), n as u32);
        // The string's buffer becomes the header value's: no second copy.
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(id));
        // Hex digits and '_' are always a valid header value.
        Self(value.unwrap_or(HeaderValue::from_static("req_unknown")))
    }
}

/// Adds [`SetRequestId`]. See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetRequestIdLayer {
    _priv: (),
}

impl SetRequestIdLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for SetRequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId::new(inner)
    }
}

/// Sets the [`RequestId`], echoes it, and opens the request span. See the module docs.
#[derive(Clone, Debug)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S> SetRequestId<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A [`SetRequestIdLayer`].
    pub fn layer() -> SetRequestIdLayer {
        SetRequestIdLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SetRequestId<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let id = request
            .headers()
            .get(X_REQUEST_ID)
            .and_then(RequestId::from_incoming)
            .unwrap_or_else(RequestId::generate);
        let span = tracing::info_span!(
            "request",
            id = id.as_str(),
            method = %request.method(),
            path = request.uri().path(),
            key = tracing::field::Empty,
            endpoint = tracing::field::Empty,
            provider = tracing::field::Empty,
            upstream_model = tracing::field::Empty,
            status = tracing::field::Empty,
            latency_us = tracing::field::Empty,
        );
        let header = id.0.clone();
        request.extensions_mut().insert(id);
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture {
            inner,
            id: Some(header),
            span,
            start: Instant::now(),
        }
    }
}

pin_project! {
    /// Response future of [`SetRequestId`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
        span: Span,
        start: Instant,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut result = ready!(this.inner.poll(cx));
        let latency = this.start.elapsed().as_micros() as u64;
        match &mut result {
            Ok(response) => {
                if let Some(id) = this.id.take() {
                    response.headers_mut().insert(X_REQUEST_ID, id);
                }
                let status = response.status().as_u16();
                this.span.record("status", status);
                this.span.record("latency_us", latency);
                tracing::info!(status, latency_us = latency, "request finished");
            }
            Err(_) => {
                this.span.record("latency_us", latency);
                tracing::warn!(latency_us = latency, "request failed without a response");
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt};

    fn echo_id() -> impl Service<
        Request<()>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<String>, Infallible>>,
    > {
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new())
            .service_fn(|request: Request<()>| async move {
                let id = request.extensions().get::<RequestId>().unwrap();
                Ok::<_, Infallible>(Response::new(id.as_str().to_owned()))
            })
    }

    #[tokio::test]
    async fn generates_unique_ids() {
        let a = echo_id().oneshot(Request::new(())).await.unwrap();
        let b = echo_id().oneshot(Request::new(())).await.unwrap();
        assert!(a.body().starts_with("req_"));
        assert_eq!(a.headers()[X_REQUEST_ID], a.body().as_str());
        assert_ne!(a.body(), b.body());
    }

    #[tokio::test]
    async fn keeps_a_valid_incoming_id_and_replaces_an_invalid_one() {
        let request = Request::builder()
            .header("x-request-id", "client-42")
            .body(())
            .unwrap();
        let response = echo_id().oneshot(request).await.unwrap();
        assert_eq!(response.headers()[X_REQUEST_ID], "client-42");

        let request = Request::builder()
            .header("x-request-id", "bad id with spaces")
            .body(())
            .unwrap();
        let response = echo_id().oneshot(request).await.unwrap();
        assert!(response.body().starts_with("req_"));
    }
}

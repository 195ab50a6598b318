//! The edge of the stack: every failure below becomes an OpenAI error response.
//!
//! [`OpenAiErrors`] has `Error = Infallible`. It renders:
//! - an [`Error`] from an inner service (a provider that could not be reached, timed out,
//!   ...), through the one table in [`error`](crate::error);
//! - any other inner error as a 500 with a fixed message (the cause goes to the log);
//! - an upstream answer with an error or redirect status (3xx/4xx/5xx): its body is read (at most 64 KiB, at
//!   most 10 s) and
//!   - passed through with its status and headers when it is an OpenAI error object
//!     (`{"error":{"message":...}}`; missing `type`/`param`/`code` keys are added as `null`),
//!   - except a 401, which means the provider refused the router's credential: 502
//!     `provider_auth_failed`, the upstream message never shown,
//!   - a redirect (3xx) is never passed on: 502 with a fixed message, no `Location`;
//!   - otherwise (HTML, plain text, `{"detail":...}`) replaced by a fixed message whose status
//!     follows the table (503/504 kept, other 5xx -> 502, 4xx kept), keeping `retry-after` and
//!     the `x-ratelimit-*` headers.
//!
//! Successful answers, streams included, pass through untouched and unbuffered, and so do
//! the error answers the router's own layers rendered already (they are in shape).
//!
//! # Example
//! ```
//! use ai_router::Error;
//! use ai_router::openai_errors::OpenAiErrorsLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//! # async fn demo() {
//! let service = ServiceBuilder::new()
//!     .layer(OpenAiErrorsLayer::new())
//!     .service_fn(|_request: http::Request<()>| async {
//!         Err::<http::Response<http_body_util::Empty<bytes::Bytes>>, _>(Error::upstream_timeout())
//!     });
//! let response = service.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 504);
//! # }
//! ```

mod classify;
mod future;

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::InnerOrFull;
use crate::error::{BoxError, Error};

pub use self::future::ResponseFuture;

/// Response body of [`OpenAiErrors`]: the inner service's body, or an error answer it wrote.
pub type ResponseBody<B> = InnerOrFull<B>;

/// Adds [`OpenAiErrors`]. See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAiErrorsLayer {
    _priv: (),
}

impl OpenAiErrorsLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for OpenAiErrorsLayer {
    type Service = OpenAiErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenAiErrors::new(inner)
    }
}

/// Turns every failure below into an OpenAI error response. See the module docs.
#[derive(Clone, Debug)]
pub struct OpenAiErrors<S> {
    inner: S,
    /// Set when `inner` failed to become ready: the next call is answered without it.
    not_ready: bool,
}

impl<S> OpenAiErrors<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            not_ready: false,
        }
    }

    /// An [`OpenAiErrorsLayer`].
    pub fn layer() -> OpenAiErrorsLayer {
        OpenAiErrorsLayer::new()
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OpenAiErrors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The edge stays infallible: an inner service that fails to become ready is not
        // called, and its request is answered with a 500 instead.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                self.not_ready = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => {
                self.not_ready = true;
                let error: BoxError = error.into();
                tracing::error!(cause = %error, "inner service failed to become ready");
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if std::mem::take(&mut self.not_ready) {
            return ResponseFuture::failed(Error::internal());
        }
        ResponseFuture::new(self.inner.call(request))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::{ServiceBuilder, ServiceExt};

    type Answer = Response<http_body_util::Full<Bytes>>;

    async fn run(
        answer: impl Fn() -> Result<Answer, BoxError> + Clone + Send + 'static,
    ) -> (Response<()>, serde_json::Value, Bytes) {
        let service = ServiceBuilder::new()
            .layer(OpenAiErrorsLayer::new())
            .service_fn(move |_request: Request<()>| {
                let answer = answer.clone();
                async move { answer() }
            });
        let response = service.oneshot(Request::new(())).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, ()), json, bytes)
    }

    fn upstream(status: u16, content_type: &str, body: &'static str) -> Answer {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("retry-after", "7")
            .body(http_body_util::Full::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn router_errors_are_rendered() {
        let (response, json, _) = run(|| Err(Error::payload_too_large(5).into())).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["error"]["code"], "request_too_large");
    }

    #[tokio::test]
    async fn answers_the_router_rendered_are_not_read_again() {
        // A refusal an inner layer rendered passes as it is: were it read as an upstream's, a
        // body that is not an OpenAI error would be replaced.
        let (response, _, bytes) = run(|| {
            let (parts, _) = Error::model_not_allowed("acme/x")
                .into_response()
                .into_parts();
            Ok(Response::from_parts(
                parts,
                http_body_util::Full::from("kept"),
            ))
        })
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(bytes, "kept");
    }

    #[tokio::test]
    async fn foreign_errors_are_a_fixed_500() {
        let (response, json, _) = run(|| Err("db password is hunter2".into())).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!json.to_string().contains("hunter2"));
        assert_eq!(json["error"]["type"], "server_error");
    }

    #[tokio::test]
    async fn openai_shaped_upstream_errors_pass_through_byte_for_byte() {
        const BODY: &str = r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let (response, _, bytes) = run(|| Ok(upstream(429, "application/json", BODY))).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(bytes, BODY);
    }

    #[tokio::test]
    async fn partial_openai_errors_get_all_four_keys() {
        const BODY: &str = r#"{"error":{"message":"bad thing","type":"invalid_request_error"}}"#;
        let (response, json, _) = run(|| Ok(upstream(400, "application/json", BODY))).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json["error"]["message"], "bad thing");
        assert!(json["error"]["param"].is_null() && json["error"]["code"].is_null());
        assert!(json["error"].as_object().unwrap().contains_key("code"));
    }

    #[tokio::test]
    async fn upstream_401_is_a_502_without_its_message() {
        const BODY: &str = r#"{"error":{"message":"Incorrect API key provided: sk-prov***1234","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let (response, json, bytes) = run(|| Ok(upstream(401, "application/json", BODY))).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(json["error"]["code"], "provider_auth_failed");
        assert!(!String::from_utf8_lossy(&bytes).contains("sk-prov"));
    }

    #[tokio::test]
    async fn html_and_foreign_json_are_replaced() {
        let (response, json, _) = run(|| Ok(upstream(500, "text/html", "<html>oops</html>"))).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(json["error"]["code"], "upstream_error");

        let (response, json, _) = run(|| Ok(upstream(503, "text/plain", "maintenance"))).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(json["error"]["type"], "service_unavailable_error");

        let (response, json, _) =
            run(|| Ok(upstream(422, "application/json", r#"{"detail":"nope"}"#))).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!json.to_string().contains("nope"));
    }

    #[tokio::test]
    async fn upstream_redirects_are_never_passed_on() {
        let (response, json, _) = run(|| {
            let mut answer = upstream(302, "text/html", "moved");
            answer.headers_mut().insert(
                "location",
                http::HeaderValue::from_static("http://internal.corp/?token=abc"),
            );
            Ok(answer)
        })
        .await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(response.headers().get("location").is_none());
        assert_eq!(json["error"]["code"], "upstream_error");
    }

    #[tokio::test]
    async fn successes_are_untouched() {
        let (response, _, bytes) = run(|| Ok(upstream(200, "text/plain", "hello"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(bytes, "hello");
    }
}

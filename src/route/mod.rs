//! Model routing: path -> endpoint, body -> `model` -> provider route, `model` rewritten.
//!
//! [`Route`] matches the request path (below an optional mount path) to an OpenAI
//! [`Endpoint`] and answers `GET /models` and `GET /models/{model}` itself from the
//! [`RouteTable`]. For the other endpoints it reads the body once, through a size limit
//! (413 `request_too_large` beyond it, the inner service never called), finds the top-level
//! `model`, resolves it (an alias or `provider/upstream-model`), replaces only the `model`
//! value with the upstream id and calls the inner service with a `Request<Bytes>` carrying
//! the [`RouteTarget`] extension. The body stays `Bytes` so later layers can resend it.
//!
//! Refusals are answered by the layer itself, as OpenAI error responses: unknown path 404
//! "Invalid URL (METHOD path)"; wrong method 405 with `Allow`; multipart body on a JSON
//! endpoint 400 `unsupported_content_type`; a compressed body (`Content-Encoding` other than
//! `identity`) 400 `unsupported_content_encoding`; invalid JSON (invalid UTF-8 included) 400; a
//! form part whose `Content-Disposition` reads two ways, or a form without parts or without its
//! file, 400; missing `model` 400 naming it; a malformed model id 400; an unknown provider or
//! alias
//! 404 `model_not_found`; a model outside the caller's allow-list (the
//! [`Principal`](crate::extensions::Principal) extension set by auth) 403 `model_not_allowed`; the
//! requested id or the target it resolves to must be on the list. `GET /models` lists only
//! what the caller may use.
//!
//! # Example
//! ```
//! use ai_router::route::{RouteLayer, RouteTable, RouteTarget};
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, ServiceExt};
//! # async fn demo() -> Result<(), ai_router::BoxError> {
//! let table = RouteTable::builder().provider("openai", ["gpt-4o-mini"]).build()?;
//! let service = ServiceBuilder::new()
//!     .layer(RouteLayer::new(table))
//!     .service_fn(|request: http::Request<Bytes>| async move {
//!         let target = request.extensions().get::<RouteTarget>().cloned();
//!         assert_eq!(target.map(|t| t.upstream_model().to_owned()).as_deref(), Some("gpt-4o-mini"));
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(request.into_body())))
//!     });
//! let request = http::Request::post("/chat/completions")
//!     .body(http_body_util::Full::new(Bytes::from(r#"{"model":"openai/gpt-4o-mini"}"#)))?;
//! let response = service.oneshot(request).await?;
//! # Ok(()) }
//! ```

mod future;
mod json;
mod knobs;
mod layer;
mod multipart;
mod policy;
mod prepare;
mod service;
mod table;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, header};

use crate::body::{Full, InnerOrFull};

pub use self::future::ResponseFuture;
pub use self::layer::RouteLayer;
pub use self::policy::{AliasPolicy, Strategy};
pub use self::service::Route;
pub use self::table::{RouteTable, RouteTableBuilder};
pub use crate::extensions::{Endpoint, RouteTarget};

#[cfg(feature = "fuzzing")]
pub(crate) use self::json::{peek as peek_json, rewrite_model as rewrite_json_model};
#[cfg(feature = "fuzzing")]
pub(crate) use self::multipart::{Form, boundary};
pub(crate) use crate::extensions::{Accepts, Matched, match_path};

/// Response body of [`Route`]: the inner service's body, or an answer it wrote (a listing, a
/// refusal).
pub type ResponseBody<B> = InnerOrFull<B>;

/// The default time to receive a request body: 5 minutes.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(300);

/// The default request body limit of JSON endpoints: 32 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Whether the body is sent as is: no `Content-Encoding`, or only `identity`. The router
/// must read `model` from the body, so a compressed one is refused, not forwarded unread.
fn is_identity_encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .all(|value| {
            value.to_str().is_ok_and(|value| {
                value.split(',').all(|coding| {
                    let coding = coding.trim();
                    coding.is_empty() || coding.eq_ignore_ascii_case("identity")
                })
            })
        })
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A JSON answer of the router's own.
fn json_response(body: Bytes) -> Response<Full> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use http::{Method, Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::{ServiceBuilder, ServiceExt};
    use tower_service::Service;

    type Answer = Response<ResponseBody<http_body_util::Full<Bytes>>>;

    fn router(
        mount: Option<&str>,
    ) -> impl Service<Request<http_body_util::Full<Bytes>>, Response = Answer, Error = Infallible>
    {
        let table = RouteTable::builder()
            .provider("openai", ["gpt-4o-mini"])
            .alias("fast", ["openai/gpt-4o-mini"])
            .build()
            .unwrap();
        let mut layer = RouteLayer::new(table)
            .body_limit(64)
            .default_model(Endpoint::Moderations, "fast")
            .unwrap();
        if let Some(mount) = mount {
            layer = layer.mount_path(mount);
        }
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|request: Request<Bytes>| async move {
                let target = request.extensions().get::<RouteTarget>().unwrap();
                let mut response = Response::new(http_body_util::Full::new(request.body().clone()));
                response.headers_mut().insert(
                    "x-target",
                    HeaderValue::from_str(&format!(
                        "{}|{}",
                        target.provider(),
                        target.upstream_model()
                    ))
                    .unwrap(),
                );
                Ok::<_, Infallible>(response)
            })
    }

    /// A refusal the layer answered: its status and `error` object.
    #[derive(Debug)]
    struct Refusal {
        status: StatusCode,
        error: serde_json::Value,
    }

    async fn call(
        mount: Option<&str>,
        method: Method,
        path: &str,
        body: &str,
    ) -> Result<(Response<()>, Bytes), Refusal> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(http_body_util::Full::new(Bytes::copy_from_slice(
                body.as_bytes(),
            )))
            .unwrap();
        let response = router(mount).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        if parts.status.is_success() {
            return Ok((Response::from_parts(parts, ()), bytes));
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        Err(Refusal {
            status: parts.status,
            error: json["error"].clone(),
        })
    }

    #[tokio::test]
    async fn routes_and_rewrites_only_the_model() {
        let (response, body) = call(
            None,
            Method::POST,
            "/chat/completions",
            r#"{"model":"fast","n":1}"#,
        )
        .await
        .unwrap();
        assert_eq!(response.headers()["x-target"], "openai|gpt-4o-mini");
        assert_eq!(body, r#"{"model":"gpt-4o-mini","n":1}"#);
    }

    #[tokio::test]
    async fn mount_is_stripped_when_present_and_shown_in_404s() {
        let ok = call(
            Some("/v3/router/"),
            Method::POST,
            "/v3/router/embeddings",
            r#"{"model":"openai/x"}"#,
        )
        .await;
        assert!(ok.is_ok());
        let ok = call(
            Some("/v3/router"),
            Method::POST,
            "/embeddings",
            r#"{"model":"openai/x"}"#,
        )
        .await;
        assert!(ok.is_ok());
        let refusal = call(Some("/v3/router"), Method::POST, "/v3/router/nope", "{}")
            .await
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::NOT_FOUND);
        assert_eq!(
            refusal.error["message"],
            "Invalid URL (POST /v3/router/nope)"
        );
        let refusal = call(Some("/v3/router"), Method::POST, "/nope", "{}")
            .await
            .unwrap_err();
        assert_eq!(
            refusal.error["message"],
            "Invalid URL (POST /v3/router/nope)"
        );
    }

    #[tokio::test]
    async fn refusals() {
        let status = |r: Result<(Response<()>, Bytes), Refusal>| r.unwrap_err().status.as_u16();
        assert_eq!(
            status(call(None, Method::GET, "/chat/completions", "").await),
            405
        );
        assert_eq!(status(call(None, Method::POST, "/models", "").await), 405);
        assert_eq!(
            status(call(None, Method::POST, "/embeddings", "{").await),
            400
        );
        assert_eq!(
            status(call(None, Method::POST, "/embeddings", r#"{"input":"x"}"#).await),
            400
        );
        assert_eq!(
            status(call(None, Method::POST, "/embeddings", r#"{"model":"x/y"}"#).await),
            404
        );
        assert_eq!(
            status(
                call(
                    None,
                    Method::POST,
                    "/embeddings",
                    r#"{"model":"openai/../y"}"#
                )
                .await
            ),
            400
        );
        let big = format!(r#"{{"model":"openai/x","input":"{}"}}"#, "a".repeat(100));
        assert_eq!(
            status(call(None, Method::POST, "/embeddings", &big).await),
            413
        );
    }

    #[tokio::test]
    async fn compressed_bodies_are_refused_unread() {
        let send = |encoding: &'static str| {
            let request = Request::post("/embeddings")
                .header(header::CONTENT_ENCODING, encoding)
                .body(http_body_util::Full::new(Bytes::from_static(
                    br#"{"model":"openai/x"}"#,
                )))
                .unwrap();
            router(None).oneshot(request)
        };
        for encoding in ["gzip", "br", "identity, zstd"] {
            let response = send(encoding).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{encoding}");
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(json["error"]["code"], "unsupported_content_encoding");
        }
        assert_eq!(send("Identity").await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn models_are_answered_locally() {
        let (_, body) = call(None, Method::GET, "/models", "").await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["data"][0]["id"], "openai/gpt-4o-mini");
        let (_, body) = call(None, Method::GET, "/models/openai/gpt-4o-mini", "")
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["id"], "openai/gpt-4o-mini");
        let refusal = call(None, Method::GET, "/models/openai/unlisted", "")
            .await
            .unwrap_err();
        assert_eq!(refusal.error["code"], "model_not_found");
    }
}

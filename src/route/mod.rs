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
//! Failures: unknown path 404 "Invalid URL (METHOD path)"; wrong method 405 with `Allow`;
//! multipart body on a JSON endpoint 400 `unsupported_content_type`; a compressed body
//! (`Content-Encoding` other than `identity`) 400 `unsupported_content_encoding`; invalid JSON
//! (invalid UTF-8 included) 400; a form part whose `Content-Disposition` reads two ways, or a
//! form without parts or without its file, 400; missing `model` 400 naming it; a malformed model id 400; an unknown provider or alias
//! 404 `model_not_found`; a model outside the caller's allow-list (the
//! [`Principal`] extension set by auth) 403 `model_not_allowed`; the
//! requested id or the target it resolves to must be on the list. `GET /models` lists only
//! what the caller may use.
//!
//! # Example
//! ```
//! use ai_router::route::{RouteLayer, RouteTable, RouteTarget};
//! use ai_router::RouterBody;
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, ServiceExt};
//! # async fn demo() -> Result<(), ai_router::BoxError> {
//! let table = RouteTable::builder().provider("openai", ["gpt-4o-mini"]).build()?;
//! let service = ServiceBuilder::new()
//!     .layer(RouteLayer::new(table))
//!     .service_fn(|request: http::Request<Bytes>| async move {
//!         let target = request.extensions().get::<RouteTarget>().cloned();
//!         assert_eq!(target.map(|t| t.upstream_model().to_owned()).as_deref(), Some("gpt-4o-mini"));
//!         Ok::<_, ai_router::Error>(http::Response::new(RouterBody::full(request.into_body())))
//!     });
//! let request = http::Request::post("/chat/completions")
//!     .body(http_body_util::Full::new(Bytes::from(r#"{"model":"openai/gpt-4o-mini"}"#)))?;
//! let response = service.oneshot(request).await?;
//! # Ok(()) }
//! ```

mod endpoint;
mod future;
mod json;
mod multipart;
mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::Principal;
use crate::body::RouterBody;
use crate::openai_error::{BoxError, Error};

pub use self::endpoint::Endpoint;
pub use self::future::ResponseFuture;
pub use self::table::{RouteTable, RouteTableBuilder, RouteTarget};

pub(crate) use self::endpoint::{Accepts, Matched, match_path};
pub(crate) use self::json::insert_first_member;
#[cfg(feature = "fuzzing")]
pub(crate) use self::json::{peek as peek_json, rewrite_model as rewrite_json_model};
#[cfg(feature = "fuzzing")]
pub(crate) use self::multipart::{Form, boundary};

pub(crate) use self::table::check_model_id;

/// The default time to receive a request body: 5 minutes.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(300);

/// The default request body limit of JSON endpoints: 32 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Settings shared by every clone of a [`Route`].
#[derive(Clone, Debug)]
struct Settings {
    table: RouteTable,
    /// Overrides every endpoint's default limit, unless the endpoint has its own.
    body_limit: Option<usize>,
    endpoint_limits: HashMap<Endpoint, usize>,
    default_models: HashMap<Endpoint, String>,
    mount_path: Option<String>,
    body_timeout: Duration,
}

impl Settings {
    fn body_limit(&self, endpoint: Endpoint) -> usize {
        self.endpoint_limits
            .get(&endpoint)
            .copied()
            .or(self.body_limit)
            .unwrap_or_else(|| endpoint.default_body_limit())
    }
}

/// Adds [`Route`]. See the module docs.
#[derive(Clone, Debug)]
pub struct RouteLayer {
    settings: Arc<Settings>,
}

impl RouteLayer {
    /// Routes with `table`, the endpoints' default body limits (32 MiB for JSON, 64 MiB for
    /// image uploads), no default models and no mount path.
    pub fn new(table: RouteTable) -> Self {
        Self {
            settings: Arc::new(Settings {
                table,
                body_limit: None,
                endpoint_limits: HashMap::new(),
                default_models: HashMap::new(),
                mount_path: None,
                body_timeout: DEFAULT_BODY_TIMEOUT,
            }),
        }
    }

    /// Sets the largest request body read, in bytes, for every endpoint without its own
    /// [`endpoint_body_limit`](Self::endpoint_body_limit).
    #[must_use]
    pub fn body_limit(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.settings).body_limit = Some(limit);
        self
    }

    /// Sets the largest request body read for one endpoint.
    #[must_use]
    pub fn endpoint_body_limit(mut self, endpoint: Endpoint, limit: usize) -> Self {
        Arc::make_mut(&mut self.settings)
            .endpoint_limits
            .insert(endpoint, limit);
        self
    }

    /// The model used when a request to `endpoint` has none (only where OpenAI makes `model`
    /// optional: images, moderations, responses). The id must resolve in the table.
    pub fn default_model(
        mut self,
        endpoint: Endpoint,
        model: impl Into<String>,
    ) -> Result<Self, crate::BuildError> {
        let model = model.into();
        if !endpoint.model_optional() {
            return Err(crate::BuildError::new(format!(
                "endpoint `{}` requires a model; it takes no default",
                endpoint.name()
            )));
        }
        self.settings.table.resolve(&model, endpoint).map_err(|_| {
            crate::BuildError::new(format!(
                "default model `{model}` for `{}` is not a configured alias or provider model",
                endpoint.name()
            ))
        })?;
        Arc::make_mut(&mut self.settings)
            .default_models
            .insert(endpoint, model);
        Ok(self)
    }

    /// How long a client has to send its whole request body (default 5 minutes): past it,
    /// 408 `request_timeout`, so a stalled upload holds no memory or key slot for long.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.settings).body_timeout = timeout;
        self
    }

    /// Sets the mount path (e.g. `/v3/router`): stripped from request paths that start with
    /// it, and shown in "Invalid URL" messages when a host stripped it already.
    #[must_use]
    pub fn mount_path(mut self, mount: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.settings).mount_path = normalize_mount(mount.into());
        self
    }
}

/// `"/v3/router/"` -> `Some("/v3/router")`; `""` or `"/"` -> `None`.
fn normalize_mount(mount: String) -> Option<String> {
    let trimmed = mount.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    Some(if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    })
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// Resolves the model to a [`RouteTarget`] and rewrites the body. See the module docs.
#[derive(Clone, Debug)]
pub struct Route<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Route<S> {
    /// Wraps `inner`, routing with `table` (defaults as [`RouteLayer::new`]).
    pub fn new(inner: S, table: RouteTable) -> Self {
        RouteLayer::new(table).layer(inner)
    }

    /// A [`RouteLayer`].
    pub fn layer(table: RouteTable) -> RouteLayer {
        RouteLayer::new(table)
    }

    /// The route table.
    pub fn table(&self) -> &RouteTable {
        &self.settings.table
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

impl<S, ReqBody> Service<Request<ReqBody>> for Route<S>
where
    S: Service<Request<Bytes>, Response = Response<RouterBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<RouterBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let settings = &self.settings;
        let full_path = request.uri().path();
        let mount = settings.mount_path.as_deref().unwrap_or("");
        let path = strip_mount(full_path, mount);
        let unknown = || Error::unknown_url(request.method(), &format!("{mount}{path}"));
        let Some(matched) = match_path(path) else {
            return ResponseFuture::error(unknown());
        };
        let endpoint = match &matched {
            Matched::Endpoint(endpoint) => *endpoint,
            Matched::RetrieveModel(_) => Endpoint::RetrieveModel,
        };
        if request.method() != endpoint.method() {
            return ResponseFuture::error(Error::method_not_allowed(endpoint.allow()));
        }
        tracing::Span::current().record("endpoint", endpoint.name());
        match matched {
            Matched::Endpoint(Endpoint::ListModels) => {
                let catalogue = settings
                    .table
                    .catalogue(request.extensions().get::<Principal>());
                return ResponseFuture::respond(json_response(catalogue));
            }
            Matched::RetrieveModel(id) => {
                let principal = request.extensions().get::<Principal>();
                let answer = check_model_id(&id).and_then(|()| {
                    principal
                        .is_none_or(|p| settings.table.may_use(p, &id))
                        .then(|| settings.table.model_object(&id))
                        .flatten()
                        .map(json_response)
                        .ok_or_else(|| Error::model_not_found(&id))
                });
                return match answer {
                    Ok(response) => ResponseFuture::respond(response),
                    Err(error) => ResponseFuture::error(error),
                };
            }
            Matched::Endpoint(_) => {}
        }
        if !is_identity_encoded(request.headers()) {
            return ResponseFuture::error(Error::unsupported_content_encoding());
        }
        let form = is_multipart(request.headers());
        match (endpoint.accepts(), form) {
            (Accepts::Json, _) if is_any_multipart(request.headers()) => {
                return ResponseFuture::error(Error::unsupported_content_type("application/json"));
            }
            (Accepts::Multipart | Accepts::JsonOrMultipart, false)
                if is_any_multipart(request.headers()) =>
            {
                return ResponseFuture::error(Error::unsupported_content_type(
                    "multipart/form-data",
                ));
            }
            (Accepts::Multipart, false) => {
                return ResponseFuture::error(Error::unsupported_content_type(
                    "multipart/form-data",
                ));
            }
            _ => {}
        }
        let limit = settings.body_limit(endpoint);
        if declared_length(request.headers()).is_some_and(|length| length > limit as u64) {
            return ResponseFuture::error(Error::payload_too_large(limit));
        }
        // The inner service was made ready by `poll_ready`: take it, and leave a fresh clone
        // behind for the next request.
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        ResponseFuture::read_body(request, endpoint, inner, self.settings.clone())
    }
}

/// Strips `mount` from `path` when `path` is the mount or lies below it.
fn strip_mount<'a>(path: &'a str, mount: &str) -> &'a str {
    match path.strip_prefix(mount) {
        Some(rest) if !mount.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => path,
    }
}

/// Whether the request's `Content-Type` is `essence` (`type/subtype`, any parameters, any case).
pub(crate) fn content_type_is(headers: &http::HeaderMap, essence: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(essence))
}

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

/// A `multipart/form-data` body (other multipart types are no form at all).
pub(crate) fn is_multipart(headers: &http::HeaderMap) -> bool {
    content_type_is(headers, "multipart/form-data")
}

/// Any `multipart/*` body, which a JSON endpoint refuses as such.
fn is_any_multipart(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().get(..10))
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn json_response(body: Bytes) -> Response<RouterBody> {
    let mut response = Response::new(RouterBody::full(body));
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
    use http::{Method, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt};

    fn router(
        mount: Option<&str>,
    ) -> impl Service<Request<Full<Bytes>>, Response = Response<RouterBody>, Error = BoxError> {
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
                let mut response = Response::new(RouterBody::full(request.body().clone()));
                response.headers_mut().insert(
                    "x-target",
                    HeaderValue::from_str(&format!(
                        "{}|{}",
                        target.provider(),
                        target.upstream_model()
                    ))
                    .unwrap(),
                );
                Ok::<_, Error>(response)
            })
    }

    async fn call(
        mount: Option<&str>,
        method: Method,
        path: &str,
        body: &str,
    ) -> Result<(Response<()>, Bytes), Error> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        match router(mount).oneshot(request).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                Ok((
                    Response::from_parts(parts, ()),
                    body.collect().await.unwrap().to_bytes(),
                ))
            }
            Err(error) => Err(*error.downcast::<Error>().unwrap()),
        }
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
        let error = call(Some("/v3/router"), Method::POST, "/v3/router/nope", "{}")
            .await
            .unwrap_err();
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
        assert_eq!(error.to_string(), "Invalid URL (POST /v3/router/nope)");
        let error = call(Some("/v3/router"), Method::POST, "/nope", "{}")
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "Invalid URL (POST /v3/router/nope)");
    }

    #[tokio::test]
    async fn refusals() {
        let status = |r: Result<(Response<()>, Bytes), Error>| r.unwrap_err().status().as_u16();
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
        for encoding in ["gzip", "br", "identity, zstd"] {
            let request = Request::post("/embeddings")
                .header(header::CONTENT_ENCODING, encoding)
                .body(Full::new(Bytes::from_static(br#"{"model":"openai/x"}"#)))
                .unwrap();
            let error = router(None).oneshot(request).await.unwrap_err();
            let error = error.downcast::<Error>().unwrap();
            assert_eq!(
                error.code(),
                Some("unsupported_content_encoding"),
                "{encoding}"
            );
        }
        let request = Request::post("/embeddings")
            .header(header::CONTENT_ENCODING, "Identity")
            .body(Full::new(Bytes::from_static(br#"{"model":"openai/x"}"#)))
            .unwrap();
        assert!(router(None).oneshot(request).await.is_ok());
        let big = format!(r#"{{"model":"openai/x","input":"{}"}}"#, "a".repeat(100));
        assert_eq!(
            status(call(None, Method::POST, "/embeddings", &big).await),
            413
        );
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
        let error = call(None, Method::GET, "/models/openai/unlisted", "")
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some("model_not_found"));
    }
}

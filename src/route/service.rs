//! [`Route`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer as _;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::{RouteLayer, Settings};
use super::table::{RouteTable, check_model_id};
use super::{Accepts, Matched, ResponseBody, match_path};
use crate::error::{BoxError, Error};
use crate::extensions::{Endpoint, Principal};
use crate::media::ContentType;
use crate::observe::RequestLog;

/// Resolves the model to a [`RouteTarget`](crate::extensions::RouteTarget) and rewrites the
/// body. See the [module docs](super).
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

    pub(super) fn from_settings(inner: S, settings: Arc<Settings>) -> Self {
        Self { inner, settings }
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Route<S>
where
    S: Service<Request<Bytes>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
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
        if let Some(log) = request.extensions().get::<RequestLog>() {
            log.record_endpoint(endpoint);
        }
        match matched {
            Matched::Endpoint(Endpoint::ListModels) => {
                let catalogue = settings
                    .table
                    .catalogue(request.extensions().get::<Principal>());
                return ResponseFuture::json(catalogue);
            }
            Matched::RetrieveModel(id) => {
                let principal = request.extensions().get::<Principal>();
                let answer = check_model_id(&id).and_then(|()| {
                    principal
                        .is_none_or(|p| settings.table.may_use(p, &id))
                        .then(|| settings.table.model_object(&id))
                        .flatten()
                        .ok_or_else(|| Error::model_not_found(&id))
                });
                return match answer {
                    Ok(object) => ResponseFuture::json(object),
                    Err(error) => ResponseFuture::error(error),
                };
            }
            Matched::Endpoint(_) => {}
        }
        if !super::is_identity_encoded(request.headers()) {
            return ResponseFuture::error(Error::unsupported_content_encoding());
        }
        let content_type = ContentType::of(request.headers());
        match (endpoint.accepts(), content_type) {
            (Accepts::Json, ContentType::Form | ContentType::OtherMultipart) => {
                return ResponseFuture::error(Error::unsupported_content_type("application/json"));
            }
            (Accepts::Multipart | Accepts::JsonOrMultipart, ContentType::OtherMultipart)
            | (Accepts::Multipart, ContentType::Json | ContentType::Other) => {
                return ResponseFuture::error(Error::unsupported_content_type(
                    "multipart/form-data",
                ));
            }
            _ => {}
        }
        let limit = settings.body_limit(endpoint);
        if super::declared_length(request.headers()).is_some_and(|length| length > limit as u64) {
            return ResponseFuture::error(Error::payload_too_large(limit));
        }
        // The inner service was made ready by `poll_ready`: take it, and leave a fresh clone
        // behind for the next request.
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        ResponseFuture::read_body(
            request,
            endpoint,
            content_type,
            inner,
            self.settings.clone(),
        )
    }
}

/// Strips `mount` from `path` when `path` is the mount or lies below it.
fn strip_mount<'a>(path: &'a str, mount: &str) -> &'a str {
    match path.strip_prefix(mount) {
        Some(rest) if !mount.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => path,
    }
}

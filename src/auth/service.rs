//! [`Auth`].

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, header};
use tower_service::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use super::key_store::{ApiKeyDigest, KeyStore};
use super::layer::{AuthLayer, DEFAULT_CHECK_DEADLINE};
use super::limit::{InProcessLimiter, KeyLimiter};

/// Checks the router key, the key's expiry and limits, and adds the caller's
/// [`Principal`](crate::extensions::Principal). See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Auth<S, K, L = InProcessLimiter> {
    inner: S,
    keys: K,
    limiter: L,
    deadline: Duration,
}

impl<S, K> Auth<S, K> {
    /// Wraps `inner`, checking keys against `keys`.
    pub fn new(inner: S, keys: K) -> Self {
        Self::from_parts(inner, keys, InProcessLimiter::new(), DEFAULT_CHECK_DEADLINE)
    }

    /// An [`AuthLayer`].
    pub fn layer(keys: K) -> AuthLayer<K> {
        AuthLayer::new(keys)
    }
}

impl<S, K, L> Auth<S, K, L> {
    pub(super) fn from_parts(inner: S, keys: K, limiter: L, deadline: Duration) -> Self {
        Self {
            inner,
            keys,
            limiter,
            deadline,
        }
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

impl<S, K, L, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S, K, L>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyStore,
    L: KeyLimiter,
{
    type Response = Response<ResponseBody<ResBody, L::Permit>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, K::Future, L, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if let Some(value) = request.headers_mut().get_mut(header::AUTHORIZATION) {
            value.set_sensitive(true);
        }
        let digest = match super::bearer_key(request.headers()) {
            Ok(key) => ApiKeyDigest::of(key),
            Err(error) => return ResponseFuture::refused(error),
        };
        let lookup = self.keys.lookup(&digest);
        // The inner service was made ready by `poll_ready`: take it, and leave a fresh clone
        // behind for the next request.
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        ResponseFuture::lookup(
            lookup,
            digest,
            self.limiter.clone(),
            self.deadline,
            request,
            inner,
        )
    }
}

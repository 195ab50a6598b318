//! Router keys: `Authorization: Bearer <key>` checked before the body is read.
//!
//! [`Auth`] reads the bearer key (scheme case-insensitive, whitespace tolerated), hashes it
//! with SHA-256 and asks a [`KeyStore`] for the [`Principal`] it stands for; the default
//! [`MemoryKeyStore`] keeps only digests and compares them in constant time. A request that
//! passes carries the `Principal` as a request extension and no longer has its
//! `Authorization` header, so the router key cannot travel further. A missing header, two
//! headers, another scheme, an empty or unknown key is a 401 `invalid_api_key` (the message shows at most a
//! masked prefix of the key); a store failure is a 503. Rejected requests cost no body read
//! and never reach an upstream.
//!
//! # Example
//! ```
//! use ai_router::auth::{AuthLayer, MemoryKeyStore, Principal};
//! use ai_router::RouterBody;
//! use tower::{ServiceBuilder, ServiceExt};
//! # async fn demo() -> Result<(), ai_router::BoxError> {
//! let keys = MemoryKeyStore::new().with_key("sk-router-dev", Principal::new("dev"));
//! let service = ServiceBuilder::new()
//!     .layer(AuthLayer::new(keys))
//!     .service_fn(|request: http::Request<()>| async move {
//!         let who = request.extensions().get::<Principal>().map(|p| p.name().to_owned());
//!         Ok::<_, ai_router::BoxError>(http::Response::new(RouterBody::full(who.unwrap_or_default())))
//!     });
//! let request = http::Request::builder()
//!     .header("authorization", "Bearer sk-router-dev")
//!     .body(())?;
//! assert_eq!(service.oneshot(request).await?.status(), 200);
//! # Ok(()) }
//! ```

mod future;
mod key_store;
mod limit;
mod principal;

use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, header};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::RouterBody;
use crate::openai_error::{BoxError, Error};

pub use self::future::ResponseFuture;
pub use self::key_store::{ApiKeyDigest, InvalidDigest, KeyStore, KeyStoreError, MemoryKeyStore};
pub use self::limit::{Admission, ConcurrencyPermit, InProcessLimiter, KeyLimiter};
pub use self::principal::{KeyLimits, Principal};

pub(crate) use self::limit::write_refusal_headers;

/// Adds [`Auth`]. See the module docs.
#[derive(Clone, Debug)]
pub struct AuthLayer<K, L = InProcessLimiter> {
    keys: K,
    limiter: L,
}

impl<K> AuthLayer<K> {
    /// A layer checking keys against `keys`, with per-key limits kept in this process.
    pub fn new(keys: K) -> Self {
        Self {
            keys,
            limiter: InProcessLimiter::new(),
        }
    }
}

impl<K, L> AuthLayer<K, L> {
    /// Uses `limiter` for per-key limits (e.g. a shared backend for a fleet).
    pub fn limiter<L2>(self, limiter: L2) -> AuthLayer<K, L2> {
        AuthLayer {
            keys: self.keys,
            limiter,
        }
    }
}

impl<S, K: Clone, L: Clone> Layer<S> for AuthLayer<K, L> {
    type Service = Auth<S, K, L>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            keys: self.keys.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

/// Checks the router key, the key's expiry and limits, and adds the caller's [`Principal`].
/// See the module docs.
#[derive(Clone, Debug)]
pub struct Auth<S, K, L = InProcessLimiter> {
    inner: S,
    keys: K,
    limiter: L,
}

impl<S, K> Auth<S, K> {
    /// Wraps `inner`, checking keys against `keys`.
    pub fn new(inner: S, keys: K) -> Self {
        Self {
            inner,
            keys,
            limiter: InProcessLimiter::new(),
        }
    }

    /// An [`AuthLayer`].
    pub fn layer(keys: K) -> AuthLayer<K> {
        AuthLayer::new(keys)
    }
}

impl<S, K, L> Auth<S, K, L> {
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

impl<S, K, L, ReqBody> Service<Request<ReqBody>> for Auth<S, K, L>
where
    S: Service<Request<ReqBody>, Response = Response<RouterBody>> + Clone,
    S::Error: Into<BoxError>,
    K: KeyStore,
    L: KeyLimiter,
{
    type Response = Response<RouterBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, K::Future, L, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if let Some(value) = request.headers_mut().get_mut(header::AUTHORIZATION) {
            value.set_sensitive(true);
        }
        let digest = match bearer_key(request.headers()) {
            Ok(key) => ApiKeyDigest::of(key),
            Err(error) => return ResponseFuture::failed(error),
        };
        let lookup = self.keys.lookup(&digest);
        // The inner service was made ready by `poll_ready`: take it, and leave a fresh clone
        // behind for the next request.
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        ResponseFuture::lookup(lookup, self.limiter.clone(), request, inner)
    }
}

/// The key of the one `Authorization: Bearer <key>` header. Two headers are refused, not
/// read first-wins: another hop could read the other one.
pub(crate) fn bearer_key(headers: &HeaderMap) -> Result<&str, Error> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or_else(Error::missing_api_key)?;
    if values.next().is_some() {
        return Err(Error::duplicate_authorization());
    }
    let value = value
        .to_str()
        .map_err(|_| Error::malformed_authorization())?
        .trim();
    let (scheme, key) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or_else(Error::malformed_authorization)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return Err(Error::malformed_authorization());
    }
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::convert::Infallible;
    use std::time::{Duration, SystemTime};
    use tower::{ServiceBuilder, ServiceExt};

    fn keys() -> MemoryKeyStore {
        MemoryKeyStore::new()
            .with_key("sk-router-good", Principal::new("good"))
            .with_key(
                "sk-router-old",
                Principal::new("old").expires_at(SystemTime::now() - Duration::from_secs(1)),
            )
            .with_key("sk-router-rpm", Principal::new("rpm").rpm(1))
            .with_key("sk-router-one", Principal::new("one").max_concurrent(1))
    }

    async fn call_with(
        keys: MemoryKeyStore,
        authorization: Option<&str>,
    ) -> Result<Response<RouterBody>, BoxError> {
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(keys))
            .service_fn(|request: Request<()>| async move {
                assert!(request.headers().get(header::AUTHORIZATION).is_none());
                let who = request.extensions().get::<Principal>().unwrap();
                Ok::<_, Infallible>(Response::new(RouterBody::full(who.name().to_owned())))
            });
        let mut request = Request::builder();
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        service.oneshot(request.body(()).unwrap()).await
    }

    async fn call(authorization: Option<&str>) -> Result<Response<RouterBody>, BoxError> {
        call_with(keys(), authorization).await
    }

    async fn name(response: Response<RouterBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn refusal(result: Result<Response<RouterBody>, BoxError>) -> Error {
        *result.unwrap_err().downcast::<Error>().unwrap()
    }

    #[tokio::test]
    async fn accepts_bearer_in_any_case_with_spaces() {
        for header in [
            "Bearer sk-router-good",
            "bearer sk-router-good",
            "BEARER   sk-router-good  ",
            "  Bearer\tsk-router-good",
        ] {
            let response = call(Some(header)).await.unwrap();
            assert_eq!(name(response).await, "good", "{header}");
        }
    }

    #[tokio::test]
    async fn refuses_each_malformed_form() {
        for header in [
            None,
            Some("Basic abc"),
            Some("Bearer"),
            Some("Bearer   "),
            Some("sk-router-good"),
        ] {
            let error = refusal(call(header).await);
            assert!(error.is_unauthorized(), "{header:?}");
        }
        let error = refusal(call(Some("Bearer sk-router-bad")).await);
        assert!(error.is_unauthorized());
        assert_eq!(error.code(), Some("invalid_api_key"));
        assert!(!error.to_string().contains("router-bad"));
    }

    #[test]
    fn two_authorization_headers_are_refused_whatever_they_hold() {
        for (first, second) in [
            ("Bearer sk-router-good", "Bearer sk-router-good"),
            ("Bearer sk-router-good", "Bearer other"),
            ("Basic x", "Bearer sk-router-good"),
        ] {
            let mut headers = HeaderMap::new();
            headers.append(header::AUTHORIZATION, first.parse().unwrap());
            headers.append(header::AUTHORIZATION, second.parse().unwrap());
            let error = bearer_key(&headers).unwrap_err();
            assert!(error.is_unauthorized());
            assert!(error.to_string().contains("more than one"), "{error}");
        }
    }

    #[tokio::test]
    async fn expired_keys_are_refused() {
        let error = refusal(call(Some("Bearer sk-router-old")).await);
        assert!(error.is_unauthorized());
        assert!(error.to_string().contains("expired"));
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_limit_answers_429_with_retry_headers_then_recovers() {
        let keys = keys();
        let ok = call_with(keys.clone(), Some("Bearer sk-router-rpm"))
            .await
            .unwrap();
        assert_eq!(ok.headers()["x-ratelimit-limit-requests"], "1");
        assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], "0");
        // Limiter state lives in a layer: a second layer starts afresh.
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(keys))
            .service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(RouterBody::empty()))
            });
        let request = || {
            Request::builder()
                .header(header::AUTHORIZATION, "Bearer sk-router-rpm")
                .body(())
                .unwrap()
        };
        service.clone().oneshot(request()).await.unwrap();
        let error = refusal(service.clone().oneshot(request()).await);
        assert_eq!(error.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let rendered = error.into_response();
        let wait_ms: u64 = rendered.headers()["retry-after-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let wait_s: u64 = rendered.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait_s >= 1 && wait_ms <= 60_000 && wait_ms > 0);
        tokio::time::advance(Duration::from_millis(wait_ms)).await;
        service.oneshot(request()).await.unwrap();
    }

    #[tokio::test]
    async fn concurrency_slot_is_held_until_the_body_is_dropped() {
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(keys()))
            .service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(RouterBody::full("x")))
            });
        let request = || {
            Request::builder()
                .header(header::AUTHORIZATION, "Bearer sk-router-one")
                .body(())
                .unwrap()
        };
        let first = service.clone().oneshot(request()).await.unwrap();
        let error = refusal(service.clone().oneshot(request()).await);
        assert_eq!(error.status(), http::StatusCode::TOO_MANY_REQUESTS);
        drop(first);
        assert!(service.oneshot(request()).await.is_ok());
    }

    #[derive(Clone)]
    struct BrokenStore;

    impl KeyStore for BrokenStore {
        type Future = std::future::Ready<Result<Option<Principal>, KeyStoreError>>;
        fn lookup(&self, _: &ApiKeyDigest) -> Self::Future {
            std::future::ready(Err(KeyStoreError::new("connection refused")))
        }
    }

    #[tokio::test]
    async fn a_failing_store_never_allows() {
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(BrokenStore))
            .service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(RouterBody::empty()))
            });
        let request = Request::builder()
            .header(header::AUTHORIZATION, "Bearer x")
            .body(())
            .unwrap();
        let error = refusal(service.oneshot(request).await);
        assert_eq!(error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
}

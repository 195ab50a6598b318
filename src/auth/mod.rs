//! Router keys: `Authorization: Bearer <key>` checked before the body is read.
//!
//! [`Auth`] reads the bearer key (scheme case-insensitive, whitespace tolerated), hashes it
//! with SHA-256 and asks a [`KeyStore`] for the [`Principal`] it stands for; the default
//! [`MemoryKeyStore`] keeps only digests and compares them in constant time. A request that
//! passes carries the `Principal` as a request extension and no longer has its
//! `Authorization` header, so the router key cannot travel further. A missing header, two
//! headers, another scheme, an empty or unknown key is a 401 `invalid_api_key` (the message shows at most a
//! masked prefix of the key); a store failure, or a store or limiter that does not answer
//! within the [deadline](AuthLayer::deadline), is a 503; a key over its limits gets a 429.
//! Refusals are answered by the layer itself, as OpenAI error responses, so it works alone in
//! front of any service. Rejected requests cost no body read and never reach the inner
//! service.
//!
//! Limits are checked by a [`KeyLimiter`] ([`InProcessLimiter`] by default); a permit it
//! grants (a concurrency slot) is held by the [`ResponseBody`] until the answer has been sent
//! to its last byte.
//!
//! # Example
//! ```
//! use ai_router::auth::{AuthLayer, MemoryKeyStore, Principal};
//! use tower::{ServiceBuilder, ServiceExt};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = MemoryKeyStore::new().with_key("sk-router-dev", Principal::new("dev"));
//! let service = ServiceBuilder::new()
//!     .layer(AuthLayer::new(keys))
//!     .service_fn(|request: http::Request<()>| async move {
//!         let who = request.extensions().get::<Principal>().map(|p| p.name().to_owned());
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::from(who.unwrap_or_default())))
//!     });
//! let request = http::Request::builder()
//!     .header("authorization", "Bearer sk-router-dev")
//!     .body(())?;
//! assert_eq!(service.clone().oneshot(request).await?.status(), 200);
//! // No key: a 401 in OpenAI's shape, from the layer itself.
//! let refused = service.oneshot(http::Request::new(())).await?;
//! assert_eq!(refused.status(), 401);
//! # Ok(()) }
//! ```

mod body;
mod future;
mod key_store;
mod layer;
mod limit;
#[cfg(feature = "redis")]
mod redis;
mod service;

use http::{HeaderMap, header};

use crate::error::Error;

pub use self::body::{KeyGuard, ResponseBody};
pub use self::future::ResponseFuture;
pub use self::key_store::{ApiKeyDigest, InvalidDigest, KeyStore, KeyStoreError, MemoryKeyStore};
pub use self::layer::{AuthLayer, DEFAULT_CHECK_DEADLINE};
pub use self::limit::{Admission, ConcurrencyPermit, InProcessLimiter, KeyLimiter};
#[cfg(feature = "redis")]
pub use self::redis::{
    BackendErrorMode, DEFAULT_LEASE, DEFAULT_REDIS_TIMEOUT, RedisAdmitFuture, RedisLimiter,
    RedisLimiterBuilder, RedisPermit,
};
pub use self::service::Auth;
pub use crate::extensions::{KeyLimits, Principal};

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
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt as _;
    use std::convert::Infallible;
    use std::time::{Duration, SystemTime};
    use tower::{ServiceBuilder, ServiceExt};

    type Answer = Response<ResponseBody<http_body_util::Full<Bytes>, ConcurrencyPermit>>;

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

    fn echo_name() -> impl tower_service::Service<
        Request<()>,
        Response = Answer,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        echo_name_with(keys())
    }

    fn echo_name_with(
        keys: MemoryKeyStore,
    ) -> impl tower_service::Service<
        Request<()>,
        Response = Answer,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        ServiceBuilder::new()
            .layer(AuthLayer::new(keys))
            .service_fn(|request: Request<()>| async move {
                assert!(request.headers().get(header::AUTHORIZATION).is_none());
                let who = request.extensions().get::<Principal>().unwrap();
                Ok::<_, Infallible>(Response::new(http_body_util::Full::from(
                    who.name().to_owned(),
                )))
            })
    }

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut request = Request::builder();
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(()).unwrap()
    }

    async fn text(response: Answer) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Asserts an OpenAI error answer; returns its `error` object.
    async fn refusal(response: Answer, status: StatusCode) -> serde_json::Value {
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["content-type"], "application/json");
        let json: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        json["error"].clone()
    }

    #[tokio::test]
    async fn accepts_bearer_in_any_case_with_spaces() {
        for header in [
            "Bearer sk-router-good",
            "bearer sk-router-good",
            "BEARER   sk-router-good  ",
            "  Bearer\tsk-router-good",
        ] {
            let response = echo_name().oneshot(request(Some(header))).await.unwrap();
            assert_eq!(text(response).await, "good", "{header}");
        }
    }

    #[tokio::test]
    async fn refuses_each_malformed_form_with_an_openai_401() {
        for header in [
            None,
            Some("Basic abc"),
            Some("Bearer"),
            Some("Bearer   "),
            Some("sk-router-good"),
            Some("Bearer sk-router-bad"),
        ] {
            let response = echo_name().oneshot(request(header)).await.unwrap();
            let error = refusal(response, StatusCode::UNAUTHORIZED).await;
            assert_eq!(error["code"], "invalid_api_key", "{header:?}");
            assert!(!error.to_string().contains("router-bad"));
        }
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
        let response = echo_name()
            .oneshot(request(Some("Bearer sk-router-old")))
            .await
            .unwrap();
        let error = refusal(response, StatusCode::UNAUTHORIZED).await;
        assert!(error["message"].as_str().unwrap().contains("expired"));
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_limit_answers_429_with_retry_headers_then_recovers() {
        let keys = keys();
        let ok = echo_name_with(keys.clone())
            .oneshot(request(Some("Bearer sk-router-rpm")))
            .await
            .unwrap();
        assert_eq!(ok.headers()["x-ratelimit-limit-requests"], "1");
        assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], "0");
        // Limiter state lives in a layer: a second layer starts afresh.
        let service = echo_name_with(keys);
        let rpm = || request(Some("Bearer sk-router-rpm"));
        service.clone().oneshot(rpm()).await.unwrap();
        let refused = service.clone().oneshot(rpm()).await.unwrap();
        let wait_ms: u64 = refused.headers()["retry-after-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let wait_s: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait_s >= 1 && wait_ms <= 60_000 && wait_ms > 0);
        assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
        let error = refusal(refused, StatusCode::TOO_MANY_REQUESTS).await;
        assert_eq!(error["code"], "rate_limit_exceeded");
        tokio::time::advance(Duration::from_millis(wait_ms)).await;
        let again = service.oneshot(rpm()).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn concurrency_slot_is_held_until_the_body_is_done() {
        let service = echo_name();
        let one = || request(Some("Bearer sk-router-one"));
        let first = service.clone().oneshot(one()).await.unwrap();
        let refused = service.clone().oneshot(one()).await.unwrap();
        refusal(refused, StatusCode::TOO_MANY_REQUESTS).await;
        // Read to the end: the slot is free even though the body is still held.
        let mut body = first.into_body();
        while body.frame().await.is_some() {}
        let second = service.clone().oneshot(one()).await.unwrap();
        assert_eq!(second.status(), StatusCode::OK);
        drop(body);
        drop(second);
        assert_eq!(
            service.oneshot(one()).await.unwrap().status(),
            StatusCode::OK
        );
    }

    /// A limiter whose backend is down, serving anyway.
    #[derive(Clone)]
    struct DownButAllowing;

    impl KeyLimiter for DownButAllowing {
        type Permit = ();
        type Future = std::future::Ready<Result<Admission<()>, Error>>;
        fn admit(&self, _: &ApiKeyDigest, _: &Principal) -> Self::Future {
            std::future::ready(Ok(Admission::unchecked()))
        }
    }

    #[tokio::test]
    async fn an_unchecked_admission_is_recorded_for_metrics() {
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(keys()).limiter(DownButAllowing))
            .service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(http_body_util::Full::<Bytes>::default()))
            });
        let log = crate::observe::RequestLog::new();
        let mut request = request(Some("Bearer sk-router-rpm"));
        request.extensions_mut().insert(log.clone());
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let summary = log.summary(
            &crate::observe::RequestHead {
                id: crate::extensions::RequestId::generate(),
                method: http::Method::POST,
                uri: http::Uri::from_static("/"),
            },
            crate::observe::End {
                status: Some(StatusCode::OK),
                latency: Duration::ZERO,
                duration: Duration::ZERO,
                outcome: crate::observe::Outcome::Completed,
            },
        );
        assert!(summary.limits_unchecked);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_debited_from_the_usage_recorded_when_the_answer_ends() {
        let keys = MemoryKeyStore::new().with_key("sk-tpm", Principal::new("tpm").tpm(100));
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(keys))
            .service_fn(|request: Request<()>| async move {
                // What the stream layer does as an answer passes: record its usage.
                let log = request
                    .extensions()
                    .get::<crate::observe::RequestLog>()
                    .unwrap();
                let usage = crate::observe::Usage {
                    input_tokens: 40,
                    output_tokens: 20,
                    total_tokens: 60,
                    cached_tokens: 0,
                };
                log.record_body(
                    crate::observe::AnswerDetails {
                        usage: Some(usage),
                        ..Default::default()
                    },
                    None,
                    crate::observe::Outcome::Completed,
                );
                Ok::<_, Infallible>(Response::new(http_body_util::Full::from("ok")))
            });
        let call = || {
            let mut request = request(Some("Bearer sk-tpm"));
            request
                .extensions_mut()
                .insert(crate::observe::RequestLog::new());
            service.clone().oneshot(request)
        };
        let first = call().await.unwrap();
        assert_eq!(first.headers()["x-ratelimit-remaining-tokens"], "100");
        // Not debited while the answer is still going.
        let second = call().await.unwrap();
        assert_eq!(second.headers()["x-ratelimit-remaining-tokens"], "100");
        assert_eq!(text(first).await, "ok");
        drop(second);
        // Both answers are over: 120 tokens spent of 100.
        let refused = call().await.unwrap();
        let error = refusal(refused, StatusCode::TOO_MANY_REQUESTS).await;
        assert!(error["message"].as_str().unwrap().contains("tokens"));
    }

    #[derive(Clone)]
    struct BrokenStore;

    impl KeyStore for BrokenStore {
        type Future = std::future::Ready<Result<Option<Principal>, KeyStoreError>>;
        fn lookup(&self, _: &ApiKeyDigest) -> Self::Future {
            std::future::ready(Err(KeyStoreError::new("connection refused")))
        }
    }

    #[derive(Clone)]
    struct StalledStore;

    impl KeyStore for StalledStore {
        type Future = std::future::Pending<Result<Option<Principal>, KeyStoreError>>;
        fn lookup(&self, _: &ApiKeyDigest) -> Self::Future {
            std::future::pending()
        }
    }

    async fn status_with<K: KeyStore>(keys: K) -> (StatusCode, serde_json::Value) {
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(keys))
            .service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(http_body_util::Full::<Bytes>::default()))
            });
        let response = service.oneshot(request(Some("Bearer x"))).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_failing_store_never_allows() {
        let (status, json) = status_with(BrokenStore).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json["error"]["code"], "key_store_unavailable");
        assert!(!json.to_string().contains("connection refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_store_is_a_503_after_the_deadline() {
        let started = tokio::time::Instant::now();
        let (status, json) = status_with(StalledStore).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json["error"]["code"], "key_store_unavailable");
        assert_eq!(started.elapsed(), DEFAULT_CHECK_DEADLINE);
    }
}

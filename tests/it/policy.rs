//! Per-key policy over TCP: model allow-lists, expiry, requests per minute, concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use ai_router::auth::{Admission, ApiKeyDigest, KeyLimiter, MemoryKeyStore, Principal};
use ai_router::provider::HttpProvider;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use crate::support::{Harness, ROUTER_KEY, RawResponse, SlowUpstream, client_for, send};

const GLOB_KEY: &str = "sk-router-glob-0123456789";
const ALIAS_KEY: &str = "sk-router-alias-0123456789";
const OLD_KEY: &str = "sk-router-old-0123456789";
const RPM_KEY: &str = "sk-router-rpm-0123456789";
const ONE_KEY: &str = "sk-router-one-0123456789";
const TPM_KEY: &str = "sk-router-tpm-0123456789";
/// The tokens-per-minute budget of `TPM_KEY`: one token back per second.
const TPM: u64 = 60;

fn keys() -> MemoryKeyStore {
    MemoryKeyStore::new()
        .with_key(ROUTER_KEY, Principal::new("test"))
        .with_key(
            GLOB_KEY,
            Principal::new("glob").allow_models(["mock/gpt-*"]),
        )
        .with_key(ALIAS_KEY, Principal::new("alias").allow_models(["fast"]))
        .with_key(
            OLD_KEY,
            Principal::new("old").expires_at(SystemTime::now() - Duration::from_secs(60)),
        )
        .with_key(RPM_KEY, Principal::new("rpm").rpm(2))
        .with_key(ONE_KEY, Principal::new("one").max_concurrent(1))
        .with_key(TPM_KEY, Principal::new("tpm").tpm(TPM as u32))
}

async fn harness() -> Harness {
    Harness::with(|builder| builder.keys(keys())).await
}

fn chat(model: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hello")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

/// A raw chat call with `key`.
async fn post_chat(harness: &Harness, key: &str, model: &str) -> RawResponse {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let request = Request::post(harness.url("/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send(request).await
}

#[tokio::test]
async fn a_glob_allows_matching_models_and_aliases_that_resolve_to_them() {
    let harness = harness().await;
    let client = client_for(&harness.base_url(), GLOB_KEY);
    client
        .chat()
        .create(chat("mock/gpt-4o-mini"))
        .await
        .unwrap();
    // `fast` is not on the list, but it resolves to mock/gpt-4o-mini, which is.
    client.chat().create(chat("fast")).await.unwrap();
    assert_eq!(harness.upstream.request_count(), 2);

    let refused = post_chat(&harness, GLOB_KEY, "mock/text-embedding-3-small").await;
    let error = refused.assert_error(403, Some("model_not_allowed"));
    assert_eq!(error["type"], "permission_error");
    assert_eq!(error["param"], "model");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("mock/text-embedding-3-small"), "{message}");
    assert!(
        !message.contains("glob") && !message.contains(GLOB_KEY),
        "{message}"
    );
    assert_eq!(
        harness.upstream.request_count(),
        2,
        "a refused model never goes upstream"
    );
}

#[tokio::test]
async fn an_alias_only_key_cannot_use_the_direct_id() {
    let harness = harness().await;
    let client = client_for(&harness.base_url(), ALIAS_KEY);
    let response = client.chat().create(chat("fast")).await.unwrap();
    assert_eq!(response.model, "gpt-4o-mini");
    post_chat(&harness, ALIAS_KEY, "mock/gpt-4o-mini")
        .await
        .assert_error(403, Some("model_not_allowed"));

    // The catalogue shows only what the key may use.
    let models = client.models().list().await.unwrap();
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["fast"]);
    let all = client_for(&harness.base_url(), ROUTER_KEY)
        .models()
        .list()
        .await
        .unwrap();
    assert!(all.data.len() > 1);
}

#[tokio::test]
async fn an_expired_key_is_refused_before_the_upstream() {
    let harness = harness().await;
    let refused = post_chat(&harness, OLD_KEY, "mock/gpt-4o-mini").await;
    let error = refused.assert_error(401, Some("invalid_api_key"));
    assert!(error["message"].as_str().unwrap().contains("expired"));
    assert_eq!(harness.upstream.request_count(), 0);
}

#[tokio::test]
async fn rpm_limit_answers_429_with_retry_headers_and_recovers_after_the_delay() {
    let harness = harness().await;
    let first = post_chat(&harness, RPM_KEY, "mock/gpt-4o-mini").await;
    assert_eq!(first.status, 200);
    // The router's own figures replace the upstream's (the mock sends 10000 / 9999).
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("1"));
    assert!(
        first
            .header("x-ratelimit-reset-requests")
            .unwrap()
            .ends_with('s')
    );
    let second = post_chat(&harness, RPM_KEY, "mock/gpt-4o-mini").await;
    assert_eq!(second.header("x-ratelimit-remaining-requests"), Some("0"));

    let refused = post_chat(&harness, RPM_KEY, "mock/gpt-4o-mini").await;
    let error = refused.assert_error(429, Some("rate_limit_exceeded"));
    assert!(error["message"].as_str().unwrap().contains("limit 2"));
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let retry_after_ms: u64 = refused.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    assert!((1..=30_000).contains(&retry_after_ms), "{retry_after_ms}");
    assert!(retry_after * 1000 >= retry_after_ms);
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(
        harness.upstream.request_count(),
        2,
        "the refused request never went upstream"
    );
    // Other keys are not limited by this one.
    assert_eq!(
        post_chat(&harness, ROUTER_KEY, "mock/gpt-4o-mini")
            .await
            .status,
        200
    );

    // Wait the announced delay on the router's clock (tokio time), not the wall clock.
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(retry_after_ms)).await;
    tokio::time::resume();
    let again = post_chat(&harness, RPM_KEY, "mock/gpt-4o-mini").await;
    assert_eq!(again.status, 200, "{}", again.text());
}

/// Two keys sharing a display name (a store may allow it) keep separate limits: used in turn,
/// they never get more than each key's own.
#[tokio::test]
async fn two_keys_with_one_name_never_share_or_reset_a_window() {
    const A: &str = "sk-router-team-a-0123456789";
    const B: &str = "sk-router-team-b-0123456789";
    let keys = MemoryKeyStore::new()
        .with_key(A, Principal::new("team").rpm(1))
        .with_key(B, Principal::new("team").rpm(2));
    let harness = Harness::with(|builder| builder.keys(keys)).await;
    let mut admitted = 0;
    for _ in 0..10 {
        for key in [A, B] {
            if post_chat(&harness, key, "mock/gpt-4o-mini").await.status == 200 {
                admitted += 1;
            }
        }
    }
    assert_eq!(admitted, 3, "one for the first key, two for the second");
    assert_eq!(harness.upstream.request_count(), 3);
}

#[tokio::test]
async fn a_concurrency_limit_counts_a_stream_until_its_body_ends() {
    let slow = SlowUpstream::start().await;
    let harness = Harness::with(|builder| {
        builder.keys(keys()).provider(
            "slow",
            HttpProvider::builder(slow.base_url())
                .api_key("sk-slow")
                .build()
                .unwrap(),
        )
    })
    .await;
    // A stream whose upstream sends one event and then waits: it holds the key's one slot.
    let body = r#"{"model":"slow/m","stream":true,"messages":[]}"#;
    let request = Request::post(harness.url("/chat/completions"))
        .header("authorization", format!("Bearer {ONE_KEY}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    slow.frames
        .send(Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\n")))
        .await
        .unwrap();
    let streaming = client.request(request).await.unwrap();
    assert_eq!(streaming.status(), 200);

    let refused = post_chat(&harness, ONE_KEY, "mock/gpt-4o-mini").await;
    refused.assert_error(429, Some("rate_limit_exceeded"));
    assert!(refused.header("retry-after").is_some());

    // The upstream goes away; once the stream's body is done the slot is free again.
    slow.frames
        .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
        .await
        .unwrap();
    drop(slow);
    let rest = tokio::time::timeout(Duration::from_secs(5), streaming.into_body().collect())
        .await
        .expect("the stream did not end");
    assert!(String::from_utf8_lossy(&rest.unwrap().to_bytes()).contains("data: [DONE]"));
    let after = post_chat(&harness, ONE_KEY, "mock/gpt-4o-mini").await;
    assert_eq!(after.status, 200, "{}", after.text());
}

/// A limiter of the embedder's own (a stand-in for a shared store): it admits the first two
/// requests and holds a slot of its own type for each until the answer has been sent.
#[derive(Clone, Default)]
struct FirstTwo {
    asked: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
}

/// The permit: counts itself out when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl KeyLimiter for FirstTwo {
    type Permit = Slot;
    type Future = std::future::Ready<Result<Admission<Slot>, ai_router::Error>>;

    fn admit(&self, _key: &ApiKeyDigest, principal: &Principal) -> Self::Future {
        assert_eq!(principal.name(), "test");
        if self.asked.fetch_add(1, Ordering::SeqCst) >= 2 {
            return std::future::ready(Err(ai_router::Error::rate_limited(
                2,
                Duration::from_secs(7),
            )));
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(self.held.clone());
        std::future::ready(Ok(Admission::unlimited()
            .with_rate(2, 1, Duration::from_secs(30))
            .with_permit(slot)))
    }
}

#[tokio::test]
async fn a_limiter_of_ones_own_plugs_into_the_builder() {
    let upstream = crate::support::start_upstream().await;
    let limiter = FirstTwo::default();
    let router = crate::support::base_builder(&upstream)
        .mount_path(crate::support::MOUNT)
        .limiter(limiter.clone())
        .build()
        .unwrap();
    let (addr, server) = crate::support::serve_service(router).await;
    let url = format!("http://{addr}{}/chat/completions", crate::support::MOUNT);
    let post = || {
        Request::post(url.as_str())
            .header("authorization", format!("Bearer {ROUTER_KEY}"))
            .body(Full::new(Bytes::from_static(
                br#"{"model":"mock/gpt-4o-mini","messages":[]}"#,
            )))
            .unwrap()
    };
    for _ in 0..2 {
        let ok = send(post()).await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("2"));
    }
    // Both answers were read to the end: their slots are back.
    assert_eq!(limiter.held.load(Ordering::SeqCst), 0);
    let refused = send(post()).await;
    refused.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(refused.header("retry-after"), Some("7"));
    assert_eq!(upstream.request_count(), 2);
    server.abort();
}

/// The usage total of a streamed answer (its `include_usage` chunk).
fn streamed_usage(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .find_map(|chunk| chunk["usage"]["total_tokens"].as_u64())
        .unwrap()
}

#[tokio::test]
async fn tokens_per_minute_count_each_answers_usage_and_refuse_past_the_budget() {
    let harness = harness().await;
    let started = std::time::Instant::now();
    let mut spent = 0;
    let mut refused = None;
    for round in 0..20 {
        // Streams and plain answers both debit what their usage says.
        let stream = round % 2 == 0;
        let body = serde_json::json!({
            "model": "mock/gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
            "stream_options": stream.then(|| serde_json::json!({"include_usage": true})),
        });
        let request = Request::post(harness.url("/chat/completions"))
            .header("authorization", format!("Bearer {TPM_KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = send(request).await;
        if response.status == 429 {
            // A stream and a plain answer at least were debited before the refusal.
            assert!(round >= 2, "refused at round {round}");
            refused = Some(response);
            break;
        }
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("x-ratelimit-limit-tokens"), Some("60"));
        // What is left before this request: the budget less what was spent (plus what came
        // back since, under a token: the test takes well under a second).
        let remaining: u64 = response
            .header("x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(remaining, TPM.saturating_sub(spent), "round {round}");
        assert!(spent < TPM, "admitted with {spent} tokens spent");
        spent += if stream {
            streamed_usage(&response.text())
        } else {
            response.json()["usage"]["total_tokens"].as_u64().unwrap()
        };
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "too slow to check exact figures"
    );
    let refused = refused.expect("the budget was never exhausted");
    assert!(spent >= TPM);
    let error = refused.assert_error(429, Some("rate_limit_exceeded"));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );
    assert_eq!(refused.header("x-ratelimit-limit-tokens"), Some("60"));
    assert_eq!(refused.header("x-ratelimit-remaining-tokens"), Some("0"));
    // One second per token owed past the minute, plus one.
    let wait_ms: u64 = refused.header("retry-after-ms").unwrap().parse().unwrap();
    let expected = (spent - TPM + 1) * 1000;
    assert!(
        wait_ms <= expected && wait_ms + 1000 > expected,
        "{wait_ms} vs {expected}"
    );
    // Other keys are not affected.
    let other = post_chat(&harness, ROUTER_KEY, "mock/gpt-4o-mini").await;
    assert_eq!(other.status, 200);
    assert!(other.header("x-ratelimit-limit-tokens").is_none());
}

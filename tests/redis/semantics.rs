//! The Redis scripts give the in-process limiter's answers: the same refusals, for the same
//! limit, with the same waits (to the clock drift of a test).

use std::time::Duration;

use ai_router::auth::{InProcessLimiter, KeyLimiter, Principal, RedisLimiter};
use ai_router::error::Error;

use crate::server::RedisServer;
use crate::support::{LIMITER_TIMEOUT, digest};

/// The gap two waits computed a few milliseconds apart may show.
const DRIFT: Duration = Duration::from_millis(500);

fn assert_same_refusal(redis: &Error, memory: &Error) {
    assert_eq!(redis.status(), memory.status());
    assert_eq!(redis.code(), memory.code());
    // The same message up to the wait (which differs by the drift).
    let limit = |e: &Error| e.to_string().split(". Please").next().unwrap().to_owned();
    assert_eq!(limit(redis), limit(memory), "same message, same limit");
    let (a, b) = (redis.retry_after().unwrap(), memory.retry_after().unwrap());
    assert!(a.abs_diff(b) < DRIFT, "redis waits {a:?}, in process {b:?}");
}

async fn limiter(redis: &RedisServer) -> RedisLimiter {
    RedisLimiter::builder(redis.url())
        .timeout(LIMITER_TIMEOUT)
        .build()
        .unwrap()
}

/// The refusal `limiter` gives `principal` once a debit has gone through its background task
/// (bounded: 200 tries, 10 ms apart); `None` if it keeps admitting.
async fn refusal_once_debited(limiter: &RedisLimiter, principal: &Principal) -> Option<Error> {
    for _ in 0..200 {
        if let Err(error) = limiter.admit(&digest(), principal).await {
            return Some(error);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn rpm_a_burst_then_the_same_wait() {
    let redis = RedisServer::start().await;
    let (shared, local) = (limiter(&redis).await, InProcessLimiter::new());
    let principal = Principal::new("k").rpm(3);
    for n in 0..3 {
        assert!(shared.admit(&digest(), &principal).await.is_ok(), "{n}");
        assert!(local.admit(&digest(), &principal).await.is_ok(), "{n}");
    }
    let redis_refusal = shared.admit(&digest(), &principal).await.unwrap_err();
    let memory_refusal = local.admit(&digest(), &principal).await.unwrap_err();
    assert_same_refusal(&redis_refusal, &memory_refusal);
    // A period (20 s) after the first request, less the time since.
    assert!(redis_refusal.retry_after().unwrap() > Duration::from_secs(19));
}

#[tokio::test]
async fn tpm_refuses_while_a_minute_is_owed_with_the_same_wait() {
    let redis = RedisServer::start().await;
    let (shared, local) = (limiter(&redis).await, InProcessLimiter::new());
    // 600 ms per token; 150 tokens owe 90 s: 30 s beyond the minute.
    let principal = Principal::new("k").tpm(100);
    assert!(shared.admit(&digest(), &principal).await.is_ok());
    assert!(local.admit(&digest(), &principal).await.is_ok());
    shared.spend_tokens(&digest(), &principal, 150);
    local.spend_tokens(&digest(), &principal, 150);
    let memory_refusal = local.admit(&digest(), &principal).await.unwrap_err();
    let redis_refusal = refusal_once_debited(&shared, &principal)
        .await
        .expect("the debit never reached Redis");
    assert_same_refusal(&redis_refusal, &memory_refusal);
    let wait = redis_refusal.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(29) && wait <= Duration::from_millis(30_600),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_refusal_changes_no_state() {
    let redis = RedisServer::start().await;
    let shared = limiter(&redis).await;
    // One slot, two requests a minute: the slot's refusals spend no rate.
    let principal = Principal::new("k").rpm(2).max_concurrent(1);
    let held = shared.admit(&digest(), &principal).await.unwrap();
    for _ in 0..5 {
        let refused = shared.admit(&digest(), &principal).await.unwrap_err();
        assert_eq!(
            refused.retry_after(),
            Some(Duration::from_secs(1)),
            "{refused}"
        );
    }
    drop(held);
    // Released through the background task: bounded wait; then the second of the two.
    let mut second = None;
    for _ in 0..200 {
        match shared.admit(&digest(), &principal).await {
            Ok(admission) => {
                second = Some(admission);
                break;
            }
            Err(error) => assert_eq!(error.retry_after(), Some(Duration::from_secs(1))),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(second.expect("the slot never came back"));
    // Both rate tokens are spent now: the next refusal is the rate's, after the release.
    let mut rate_refusal = None;
    for _ in 0..200 {
        match shared.admit(&digest(), &principal).await {
            Ok(_) => panic!("a third request within the minute"),
            Err(error) if error.retry_after() > Some(Duration::from_secs(1)) => {
                rate_refusal = Some(error);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let wait = rate_refusal.expect("never refused by rate").retry_after();
    assert!(wait > Some(Duration::from_secs(29)), "{wait:?}");
}

#[tokio::test]
async fn keys_without_limits_never_reach_redis() {
    // No Redis at all, deny mode: a key without limits is still admitted.
    let limiter = RedisLimiter::builder("redis://127.0.0.1:1/0")
        .on_backend_error(ai_router::auth::BackendErrorMode::Deny)
        .build()
        .unwrap();
    let admission = limiter
        .admit(&digest(), &Principal::new("free"))
        .await
        .unwrap();
    assert!(!admission.is_unchecked());
    let refused = limiter
        .admit(&digest(), &Principal::new("k").rpm(1))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("limits_unavailable"));
}

#[tokio::test]
async fn tpm_refuses_once_not_one_token_is_left_like_in_process() {
    let redis = RedisServer::start().await;
    let (shared, local) = (limiter(&redis).await, InProcessLimiter::new());
    // Exactly the budget spent: a minute owed, less the few ms since.
    let principal = Principal::new("k").tpm(100);
    shared.spend_tokens(&digest(), &principal, 100);
    local.spend_tokens(&digest(), &principal, 100);
    let memory_refusal = local.admit(&digest(), &principal).await.unwrap_err();
    let redis_refusal = refusal_once_debited(&shared, &principal)
        .await
        .expect("admitted with under one token left");
    assert_same_refusal(&redis_refusal, &memory_refusal);
    // Until one token (600 ms) is back.
    assert!(redis_refusal.retry_after().unwrap() <= Duration::from_millis(600));
}

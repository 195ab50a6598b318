//! Redis stopped and started again under running routers, in both backend modes: nothing
//! hangs, and limits apply again without a restart.

use std::time::Duration;

use ai_router::auth::{
    Admission, BackendErrorMode, KeyLimiter as _, Principal, RedisLimiter, RedisPermit,
};

use crate::proxy::FreezingProxy;
use crate::server::RedisServer;
use crate::support::{Fleet, RawResponse};

/// Sends requests alternating between the routers (bounded: 100 tries, 50 ms apart) until
/// one is answered with `status`; returns it.
async fn until_status(fleet: &Fleet, status: u16) -> RawResponse {
    for n in 0..100 {
        let response = fleet.chat(n % 2).await;
        if response.status.as_u16() == status {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never answered {status}");
}

/// Waits (bounded: 5 s) until both limiters have found Redis again.
async fn until_both_answer(fleet: &Fleet) {
    for _ in 0..100 {
        if fleet.routers.iter().all(|r| !r.limiter.is_backend_down()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a limiter never found Redis again");
}

#[tokio::test]
async fn allow_serves_unchecked_while_redis_is_down_then_limits_again() {
    let mut redis = RedisServer::start().await;
    let fleet = Fleet::start(&redis, Principal::new("fleet").rpm(2), |b| {
        b.on_backend_error(BackendErrorMode::Allow)
    })
    .await;
    assert_eq!(fleet.chat(0).await.status, 200);
    assert_eq!(fleet.chat(1).await.status, 200);
    fleet.chat(0).await.assert_error(429, "rate_limit_exceeded");

    redis.stop();
    for n in 0..6 {
        let response = fleet.chat(n % 2).await;
        assert_eq!(response.status, 200, "request {n} while Redis is down");
        // Unchecked: the router has no figures of its own; the upstream's pass (the mock's).
        assert_eq!(response.header("x-ratelimit-limit-requests"), Some("10000"));
    }
    assert!(fleet.routers.iter().all(|r| r.limiter.is_backend_down()));

    // A new, empty Redis: each limiter finds it again by itself...
    redis.restart().await;
    until_both_answer(&fleet).await;
    // ...and the window starts afresh, shared again: 2 pass, then both routers refuse.
    for n in 0..2 {
        let response = fleet.chat(n).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.number("x-ratelimit-limit-requests"), 2);
    }
    for n in 0..2 {
        let refused = fleet.chat(n).await;
        refused.assert_error(429, "rate_limit_exceeded");
        assert_eq!(refused.number("x-ratelimit-remaining-requests"), 0);
    }
}

#[tokio::test]
async fn deny_refuses_while_redis_is_down_then_serves_again() {
    // Redis is down when the routers start: they start anyway.
    let mut redis = RedisServer::start().await;
    redis.stop();
    let fleet = Fleet::start(&redis, Principal::new("fleet").rpm(100), |b| {
        b.on_backend_error(BackendErrorMode::Deny)
    })
    .await;
    for n in 0..4 {
        fleet
            .chat(n % 2)
            .await
            .assert_error(503, "limits_unavailable");
    }
    assert_eq!(fleet.upstream.request_count(), 0);

    redis.restart().await;
    let served = until_status(&fleet, 200).await;
    assert_eq!(served.number("x-ratelimit-limit-requests"), 100);

    redis.stop();
    let refused = until_status(&fleet, 503).await;
    refused.assert_error(503, "limits_unavailable");
    for n in 0..4 {
        fleet
            .chat(n % 2)
            .await
            .assert_error(503, "limits_unavailable");
    }

    redis.restart().await;
    until_both_answer(&fleet).await;
    // Both routers serve again.
    assert_eq!(fleet.chat(0).await.status, 200);
    assert_eq!(fleet.chat(1).await.status, 200);
}

#[tokio::test]
async fn a_hung_redis_is_a_timeout_not_a_hang() {
    let redis = RedisServer::start().await;
    let fleet = Fleet::start(&redis, Principal::new("fleet").rpm(2), |b| {
        b.on_backend_error(BackendErrorMode::Allow)
    })
    .await;
    assert_eq!(fleet.chat(0).await.status, 200);
    assert_eq!(fleet.chat(1).await.status, 200);

    redis.pause();
    // Answered (unchecked) within the exchange timeout: the first call of each router waits
    // for the limiter's timeout, the next ones not at all.
    for n in 0..6 {
        let response = fleet.chat(n % 2).await;
        assert_eq!(response.status, 200, "request {n} while Redis hangs");
    }
    assert!(fleet.routers.iter().all(|r| r.limiter.is_backend_down()));

    // The same Redis, with its state: the window is still spent.
    redis.resume();
    until_both_answer(&fleet).await;
    fleet.chat(0).await.assert_error(429, "rate_limit_exceeded");
    fleet.chat(1).await.assert_error(429, "rate_limit_exceeded");
}

#[tokio::test]
async fn a_connection_that_hangs_for_good_is_replaced() {
    let redis = RedisServer::start().await;
    let proxy = FreezingProxy::start(redis.addr()).await;
    let fleet = Fleet::start_at(&proxy.url(), Principal::new("fleet").rpm(3), |b| {
        b.on_backend_error(BackendErrorMode::Deny)
    })
    .await;
    assert_eq!(fleet.chat(0).await.status, 200);
    assert_eq!(fleet.chat(1).await.status, 200);

    // The routers' connections hang, for good: refused, never stuck.
    proxy.freeze();
    let refused = until_status(&fleet, 503).await;
    refused.assert_error(503, "limits_unavailable");
    for n in 0..4 {
        fleet
            .chat(n % 2)
            .await
            .assert_error(503, "limits_unavailable");
    }

    // New connections work: each limiter gives up its hung one and finds Redis, state intact.
    proxy.thaw();
    until_both_answer(&fleet).await;
    let last = fleet.chat(0).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.number("x-ratelimit-remaining-requests"), 0);
    fleet.chat(1).await.assert_error(429, "rate_limit_exceeded");
}

/// A key with one concurrency slot.
fn only_one() -> Principal {
    Principal::new("one").max_concurrent(1)
}

/// A limiter on `redis` with leases of `lease`, and the admission holding its key's only slot
/// (a second request is refused).
async fn holding_the_only_slot(
    redis: &RedisServer,
    lease: Duration,
) -> (RedisLimiter, Admission<RedisPermit>) {
    let limiter = RedisLimiter::builder(redis.url())
        .timeout(crate::support::LIMITER_TIMEOUT)
        .lease(lease)
        .build()
        .unwrap();
    let key = crate::support::digest();
    let admission = limiter.admit(&key, &only_one()).await.unwrap();
    limiter.admit(&key, &only_one()).await.unwrap_err();
    (limiter, admission)
}

/// A slot released while Redis does not answer is released once it does (Redis kept its
/// data through the blip), not a lease later.
#[tokio::test]
async fn a_slot_released_during_a_blip_is_free_once_redis_answers() {
    let redis = RedisServer::start().await;
    let (limiter, held) = holding_the_only_slot(&redis, Duration::from_secs(60)).await;
    let (one, key) = (only_one(), crate::support::digest());

    // Redis freezes: the next check times out and the limiter marks it down...
    redis.pause();
    let other = ai_router::auth::ApiKeyDigest::of("sk-other");
    let _ = limiter.admit(&other, &Principal::new("o").rpm(5)).await;
    assert!(limiter.is_backend_down());
    // ...while the slot's holder ends.
    drop(held);
    redis.resume();
    for _ in 0..100 {
        if !limiter.is_backend_down() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!limiter.is_backend_down(), "Redis never answered again");
    // The release went through (bounded wait for the background task), far from the lease.
    let mut admitted = false;
    for _ in 0..40 {
        if limiter.admit(&key, &one).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "the slot was still taken after Redis came back");
}

/// A slot still held when Redis restarts empty is put back by the next renewal: the fleet's
/// count is exact again without waiting for the holder to end.
#[tokio::test]
async fn a_held_slot_is_put_back_after_redis_restarts_empty() {
    let mut redis = RedisServer::start().await;
    let (limiter, _held) = holding_the_only_slot(&redis, Duration::from_millis(1500)).await;
    let (one, key) = (only_one(), crate::support::digest());

    redis.stop();
    redis.restart().await;
    // Renewals run every 500 ms; give the limiter a few to reconnect and put the lease back
    // (bounded: 40 tries, 100 ms apart). Each admission that gets through is released.
    let mut refused = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if limiter.admit(&key, &one).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "the held slot never counted again after the restart"
    );
}

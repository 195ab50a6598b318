//! Two routers, one Redis: rpm, concurrency and tokens per minute hold across both; a slot
//! held by a process that died frees itself; a live one is renewed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ai_router::auth::{KeyLimiter as _, Principal, RedisLimiter};
use ai_router::mock::ScriptedResponse;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use redis::AsyncCommands as _;
use serde_json::json;
use tokio::sync::Notify;

use crate::server::RedisServer;
use crate::support::{
    Fleet, LIMITER_TIMEOUT, RawResponse, chat_request, digest, send, send_within,
};

/// Sends requests to router `i` (bounded: 100 tries, 25 ms apart) until one is answered with
/// `status`; returns it.
async fn until_status(fleet: &Fleet, i: usize, status: u16) -> RawResponse {
    for _ in 0..100 {
        let response = fleet.chat(i).await;
        if response.status.as_u16() == status {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("router {i} never answered {status}");
}

/// A chat completion the mock sends as scripted (gated) answers.
fn completion() -> serde_json::Value {
    json!({
        "id": "chatcmpl-slow",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "slow"},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
}

/// An answer whose body waits for `gate`: its request holds its slot until then.
fn gated(gate: &Arc<Notify>) -> ScriptedResponse {
    ScriptedResponse::new(200)
        .json(completion())
        .gate_before(0, Arc::clone(gate))
}

/// Waits (bounded: 5 s) until the mock has received `n` requests.
async fn until_upstream_saw(fleet: &Fleet, n: usize) {
    for _ in 0..500 {
        if fleet.upstream.request_count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the upstream saw {} requests, not {n}",
        fleet.upstream.request_count()
    );
}

fn assert_concurrency_refusal(response: &RawResponse) {
    let error = response.assert_error(429, "rate_limit_exceeded");
    assert!(
        error["message"].as_str().unwrap().contains("concurren"),
        "{error}"
    );
}

#[tokio::test]
async fn rpm_is_exact_across_two_routers() {
    let redis = RedisServer::start().await;
    let fleet = Fleet::start(&redis, Principal::new("fleet").rpm(5), |b| b).await;

    // The first through the OpenAI SDK (it would retry a 429: only for an answer that passes).
    let request = CreateChatCompletionRequestArgs::default()
        .model("mock/gpt-4o-mini")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        fleet.client(0).chat().create(request),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!answer.choices.is_empty());

    let mut remaining = vec![4];
    let mut refused = 0;
    for n in 1..12 {
        let response = fleet.chat(n % 2).await;
        match response.status.as_u16() {
            200 => {
                assert_eq!(response.number("x-ratelimit-limit-requests"), 5);
                remaining.push(response.number("x-ratelimit-remaining-requests"));
            }
            429 => {
                refused += 1;
                response.assert_error(429, "rate_limit_exceeded");
                assert_eq!(response.number("x-ratelimit-limit-requests"), 5);
                assert_eq!(response.number("x-ratelimit-remaining-requests"), 0);
                // One request per 12 s once the burst of 5 is spent.
                let wait_ms = response.number("retry-after-ms");
                assert!((1..=12_000).contains(&wait_ms), "{wait_ms}");
                let wait_s = response.number("retry-after");
                assert!((1..=12).contains(&wait_s), "{wait_s}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Exactly 5 of 12, counting down across both routers.
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    assert_eq!(refused, 7);
    assert_eq!(fleet.upstream.request_count(), 5);
}

#[tokio::test]
async fn concurrency_is_exact_across_two_routers() {
    let redis = RedisServer::start().await;
    let fleet = Fleet::start(&redis, Principal::new("fleet").max_concurrent(2), |b| b).await;
    let (gate_one, gate_two) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    fleet.upstream.script(gated(&gate_one));
    fleet.upstream.script(gated(&gate_two));

    let one = tokio::spawn(send(chat_request(fleet.routers[0].addr)));
    until_upstream_saw(&fleet, 1).await;
    let two = tokio::spawn(send(chat_request(fleet.routers[1].addr)));
    until_upstream_saw(&fleet, 2).await;

    // Two in flight, one on each router: a third is refused on either.
    assert_concurrency_refusal(&fleet.chat(0).await);
    assert_concurrency_refusal(&fleet.chat(1).await);
    assert_eq!(fleet.upstream.request_count(), 2);

    gate_one.notify_one();
    assert_eq!(one.await.unwrap().status, 200);
    // The slot comes back (its release is queued to the background task as the body ends).
    until_status(&fleet, 1, 200).await;
    gate_two.notify_one();
    assert_eq!(two.await.unwrap().status, 200);
}

#[tokio::test]
async fn tokens_are_refused_once_the_minute_s_budget_is_spent() {
    const TPM: u64 = 40;
    let redis = RedisServer::start().await;
    let fleet = Fleet::start(&redis, Principal::new("fleet").tpm(TPM as u32), |b| b).await;
    let mut redis_conn = redis.connection().await;
    let tpm_key = format!("ai-router:{{{}}}:tpm", digest().to_hex());

    let mut spent = 0;
    let mut passed = 0;
    let mut last_seen: Option<String> = None;
    let mut refused = false;
    for n in 0..8 {
        let response = fleet.chat(n % 2).await;
        // Within a second, at most one token (1.5 s each) comes back.
        if spent < TPM {
            assert_eq!(response.status, 200, "{spent} of {TPM} spent");
            assert_eq!(response.number("x-ratelimit-limit-tokens"), TPM);
            let left = response.number("x-ratelimit-remaining-tokens");
            assert!(
                (TPM - spent..=TPM - spent + 1).contains(&left),
                "{left} left after {spent}"
            );
            let usage = &response.json()["usage"];
            let tokens = usage["prompt_tokens"].as_u64().unwrap()
                + usage["completion_tokens"].as_u64().unwrap();
            assert!(tokens > 0);
            spent += tokens;
            passed += 1;
            // The debit is queued when the answer ends: wait (bounded) until it is in Redis
            // (each debit moves the key's TAT forward).
            let mut landed = false;
            for _ in 0..200 {
                let now: Option<String> = redis_conn.get(&tpm_key).await.unwrap();
                if now.is_some() && now != last_seen {
                    last_seen = now;
                    landed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(landed, "the debit of answer {n} never reached Redis");
        } else if spent >= TPM + 2 {
            response.assert_error(429, "rate_limit_exceeded");
            assert_eq!(response.number("x-ratelimit-limit-tokens"), TPM);
            assert_eq!(response.number("x-ratelimit-remaining-tokens"), 0);
            assert!(response.header("x-ratelimit-reset-tokens").is_some());
            // Until one token (1.5 s) comes back after the debt is under a minute.
            let wait_ms = response.number("retry-after-ms");
            let owed_beyond = (spent - TPM) * 1500 + 1500;
            assert!(
                wait_ms <= owed_beyond && wait_ms + 2000 > owed_beyond,
                "{wait_ms}"
            );
            refused = true;
            break;
        } else {
            // Right at the budget a token may have come back: either answer would be right.
            // The mock's answers (about 28 tokens each) never land here.
            panic!("{spent} tokens spent: right at the budget, the test learns nothing");
        }
    }
    assert!(refused, "never refused ({spent} tokens spent)");
    // The refused request was not forwarded, nor debited.
    assert_eq!(fleet.upstream.request_count(), passed);
}

#[tokio::test]
async fn a_slot_held_by_a_dead_process_frees_itself_after_the_lease() {
    let redis = RedisServer::start().await;
    let lease = Duration::from_secs(1);
    let principal = Principal::new("fleet").max_concurrent(1);
    let fleet = Fleet::start(&redis, principal.clone(), |b| b.lease(lease)).await;

    // Another process takes the slot and dies: its permit is never dropped, its task ends.
    let ghost = RedisLimiter::builder(redis.url())
        .timeout(LIMITER_TIMEOUT)
        .lease(lease)
        .build()
        .unwrap();
    let taken_at = Instant::now();
    let admission = ghost.admit(&digest(), &principal).await.unwrap();
    assert!(!admission.is_unchecked());
    std::mem::forget(admission);
    drop(ghost);

    assert_concurrency_refusal(&fleet.chat(0).await);
    assert_concurrency_refusal(&fleet.chat(1).await);
    // Bounded: 100 tries, 25 ms apart, plus the exchanges.
    until_status(&fleet, 0, 200).await;
    assert!(
        taken_at.elapsed() >= lease - Duration::from_millis(100),
        "freed after {:?}, before its lease ran out",
        taken_at.elapsed()
    );
}

#[tokio::test]
async fn a_live_slot_is_renewed_past_its_lease() {
    let redis = RedisServer::start().await;
    // Renewed every 667 ms: a loaded machine may miss one without losing the slot.
    let lease = Duration::from_secs(2);
    let fleet = Fleet::start(&redis, Principal::new("fleet").max_concurrent(1), |b| {
        b.lease(lease)
    })
    .await;
    let gate = Arc::new(Notify::new());
    fleet.upstream.script(gated(&gate));
    let held = tokio::spawn(send_within(
        chat_request(fleet.routers[0].addr),
        Duration::from_secs(15),
    ));
    until_upstream_saw(&fleet, 1).await;

    // Two and a half leases later, the slot is still held (renewed every third of a lease).
    tokio::time::sleep(lease * 5 / 2).await;
    assert_concurrency_refusal(&fleet.chat(1).await);

    gate.notify_one();
    assert_eq!(held.await.unwrap().status, 200);
    until_status(&fleet, 1, 200).await;
}

//! Resilience over TCP: fallbacks, retries, balancing, timeouts, cooldowns and the request's
//! own knobs, against a mock upstream failing per model.
//!
//! Two providers point at the same mock (`mock` and `backup`), and the alias `smart` is
//! `mock/gpt-a` then `backup/gpt-b`: the mock tells the targets apart by the upstream model
//! (`gpt-a`, `gpt-b`, `gpt-c`). Tests that would wait run on tokio's paused clock (the mock
//! runs in the test's runtime, so its delays are on that clock too).

use std::time::Duration;

use ai_router::AiRouterBuilder;
use ai_router::auth::{MemoryKeyStore, Principal};
use ai_router::extensions::Retry;
use ai_router::mock::ScriptedResponse;
use ai_router::provider::HttpProvider;
use ai_router::resilience::Cooldown;
use ai_router::route::{AliasPolicy, Strategy};
use ai_router::sse::StreamSettings;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{
    Harness, ROUTER_KEY, RawResponse, assert_openai_error, closed_port, collect_stream,
    mock_provider, send, send_within,
};

const A: &str = "gpt-a";
const B: &str = "gpt-b";
const C: &str = "gpt-c";

/// The default harness plus provider `backup` (the same mock) and alias `smart`
/// (`mock/gpt-a`, `backup/gpt-b`), changed by `configure`.
async fn harness_with(
    configure: impl FnOnce(AiRouterBuilder<MemoryKeyStore>) -> AiRouterBuilder<MemoryKeyStore>,
) -> Harness {
    Harness::with_upstream(|builder, upstream| {
        configure(
            builder
                .provider("backup", mock_provider(upstream))
                .alias("smart", ["mock/gpt-a", "backup/gpt-b"]),
        )
    })
    .await
}

async fn harness() -> Harness {
    harness_with(|builder| builder).await
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn chat(harness: &Harness, body: &Value) -> RawResponse {
    harness
        .post_json("/chat/completions", body.to_string())
        .await
}

/// `(x-ai-router-model, x-ai-router-attempts)` of an answer.
fn answered_by(response: &RawResponse) -> (String, u32) {
    let model = response
        .header("x-ai-router-model")
        .unwrap_or_else(|| panic!("no x-ai-router-model: {:?}", response.headers))
        .to_owned();
    let attempts = response
        .header("x-ai-router-attempts")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no x-ai-router-attempts: {:?}", response.headers));
    (model, attempts)
}

/// How many requests the mock got for each of `gpt-a`, `gpt-b`, `gpt-c`.
fn counts(harness: &Harness) -> [usize; 3] {
    [A, B, C].map(|m| harness.upstream.request_count_for(m))
}

/// A provider at `port`, where nothing listens: every connection is refused.
fn refusing_provider(port: u16) -> HttpProvider {
    HttpProvider::builder(format!("http://127.0.0.1:{port}/v1"))
        .api_key("sk-down")
        .build()
        .unwrap()
}

fn openai_error(status: u16, code: &str) -> ScriptedResponse {
    ScriptedResponse::openai_error(status, "scripted failure", "server_error", Some(code))
}

// ------------------------------------------------------------------- triggers

#[tokio::test]
async fn each_trigger_is_served_by_the_next_target() {
    let harness = harness().await;
    let triggers = [
        ("503", openai_error(503, "overloaded")),
        ("500", openai_error(500, "server_error")),
        (
            "502 html",
            ScriptedResponse::new(502).body("<html>bad gateway</html>"),
        ),
        ("529", openai_error(529, "overloaded")),
        ("429", openai_error(429, "rate_limit_exceeded")),
        (
            "429 retry-after",
            openai_error(429, "rate_limit_exceeded").header("retry-after", "1"),
        ),
        ("401 (our key)", openai_error(401, "invalid_api_key")),
        ("403", openai_error(403, "forbidden")),
        ("reset before head", ScriptedResponse::reset_before_head()),
    ];
    for (i, (name, trigger)) in triggers.into_iter().enumerate() {
        harness.upstream.script_for(A, trigger);
        let response = chat(&harness, &chat_body("smart")).await;
        assert_eq!(response.status, 200, "{name}: {}", response.text());
        assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2), "{name}");
        assert_eq!(response.json()["model"], B, "{name}: the backup's answer");
        assert_eq!(counts(&harness), [i + 1, i + 1, 0], "{name}");
    }
    // The backup got the client's body with only `model` changed.
    let seen = harness.upstream.requests_for(B).pop().unwrap();
    assert_eq!(seen.json().unwrap(), chat_body(B));
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-mock-upstream")
    );
}

#[tokio::test]
async fn a_refused_connection_falls_back() {
    let port = closed_port().await;
    let harness = harness_with(|builder| {
        builder
            .provider("down", refusing_provider(port))
            .alias("resilient", ["down/gpt-a", "backup/gpt-b"])
    })
    .await;
    let response = chat(&harness, &chat_body("resilient")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    assert_eq!(counts(&harness), [0, 1, 0]);
}

#[tokio::test]
async fn a_provider_without_its_key_falls_back() {
    let harness = harness_with(|builder| {
        builder
            .provider(
                "nokey",
                HttpProvider::builder("http://127.0.0.1:9/v1")
                    .build()
                    .unwrap(),
            )
            .alias("resilient", ["nokey/gpt-a", "backup/gpt-b"])
            .alias_policy("resilient", AliasPolicy::new().retry(Retry::new(3, [503])))
    })
    .await;
    let response = chat(&harness, &chat_body("resilient")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    // A missing key stays missing: no retry of that target, the next one at once.
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_moves_on_after_that_long() {
    let harness = harness_with(|builder| {
        builder.alias_policy("smart", AliasPolicy::new().timeout(Duration::from_secs(2)))
    })
    .await;
    harness
        .upstream
        .script_for(A, ScriptedResponse::new(200).delay(Duration::from_secs(60)));
    let start = Instant::now();
    let response = chat(&harness, &chat_body("smart")).await;
    let waited = start.elapsed();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn when_every_attempt_fails_the_client_gets_the_last_error() {
    let harness = harness().await;
    harness.upstream.script_for(A, openai_error(503, "a_down"));
    harness.upstream.script_for(
        B,
        ScriptedResponse::openai_error(429, "slow down", "requests", Some("rate_limit_exceeded"))
            .header("retry-after", "7"),
    );
    let response = chat(&harness, &chat_body("smart")).await;
    let error = response.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(error["message"], "slow down");
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    assert_eq!(response.header("retry-after"), Some("7"));

    // A failure without a status last: the router's own error, in shape.
    let port = closed_port().await;
    let harness = harness_with(|builder| {
        builder
            .provider("down", refusing_provider(port))
            .alias("doomed", ["mock/gpt-a", "down/gpt-b"])
    })
    .await;
    harness.upstream.script_for(A, openai_error(500, "a_down"));
    let response = chat(&harness, &chat_body("doomed")).await;
    response.assert_error(502, Some("upstream_unreachable"));
    assert_eq!(answered_by(&response), ("down/gpt-b".into(), 2));

    // An HTML page last: normalised, and still naming who answered.
    let html = harness_with(|builder| builder).await;
    html.upstream.script_for(A, openai_error(503, "a_down"));
    html.upstream.script_for(
        B,
        ScriptedResponse::new(502)
            .header("content-type", "text/html")
            .body("<html>502 Bad Gateway</html>"),
    );
    let response = chat(&html, &chat_body("smart")).await;
    response.assert_error(502, Some("upstream_error"));
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
}

#[tokio::test]
async fn the_request_s_own_faults_are_not_retried() {
    let harness = harness_with(|builder| {
        builder.alias_policy(
            "smart",
            AliasPolicy::new().retry(Retry::new(3, [400, 404, 413, 422, 429, 500])),
        )
    })
    .await;
    for status in [400, 404, 413, 422] {
        let before = counts(&harness);
        harness.upstream.script_for(
            A,
            ScriptedResponse::openai_error(status, "your fault", "invalid_request_error", None),
        );
        let response = chat(&harness, &chat_body("smart")).await;
        let error = response.assert_error(status, None);
        assert_eq!(error["message"], "your fault");
        assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 1), "{status}");
        assert_eq!(counts(&harness), [before[0] + 1, before[1], 0], "{status}");
    }
}

// -------------------------------------------------------------------- retries

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_then_fall_back() {
    let harness = harness_with(|builder| {
        builder.alias_policy("smart", AliasPolicy::new().retry(Retry::new(2, [503])))
    })
    .await;
    for _ in 0..2 {
        harness.upstream.script_for(A, openai_error(503, "busy"));
    }
    let start = Instant::now();
    let response = chat(&harness, &chat_body("smart")).await;
    let waited = start.elapsed();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 3));
    assert_eq!(counts(&harness), [3, 0, 0]);
    // 250 ms then 500 ms, each x0.5..x1.5.
    assert!(
        waited >= Duration::from_millis(375) && waited < Duration::from_millis(1125),
        "{waited:?}"
    );

    // Retries spent on one target, then the next (with its own retries).
    for _ in 0..3 {
        harness.upstream.script_for(A, openai_error(503, "busy"));
    }
    harness.upstream.script_for(B, openai_error(503, "busy"));
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 5));
    assert_eq!(counts(&harness), [6, 2, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_status_outside_on_codes_moves_on_without_retrying() {
    let harness = harness_with(|builder| {
        builder.alias_policy("smart", AliasPolicy::new().retry(Retry::new(2, [503])))
    })
    .await;
    harness.upstream.script_for(A, openai_error(500, "broken"));
    let start = Instant::now();
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    assert_eq!(counts(&harness), [1, 1, 0]);
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "no backoff before another target"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_the_cap() {
    let harness = harness_with(|builder| {
        builder.alias_policy("smart", AliasPolicy::new().retry(Retry::new(1, [429])))
    })
    .await;
    harness.upstream.script_for(
        A,
        openai_error(429, "rate_limit_exceeded").header("retry-after-ms", "3500"),
    );
    let start = Instant::now();
    let response = chat(&harness, &chat_body("smart")).await;
    let waited = start.elapsed();
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 2));
    assert!(
        waited >= Duration::from_millis(3500) && waited < Duration::from_millis(3600),
        "{waited:?}"
    );

    // A retry-after no clock can hold is no hint (and no panic): the usual backoff.
    harness.upstream.script_for(
        A,
        openai_error(429, "rate_limit_exceeded").header("retry-after", "1e300"),
    );
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 2));

    // Past the 10 s cap: the next target at once, no sleep.
    harness.upstream.script_for(
        A,
        openai_error(429, "rate_limit_exceeded").header("retry-after", "60"),
    );
    let start = Instant::now();
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
}

// ------------------------------------------------------------------ balancing

#[tokio::test]
async fn weighted_splits_within_tolerance() {
    let harness = harness_with(|builder| {
        builder.alias_policy(
            "smart",
            AliasPolicy::new().strategy(Strategy::Weighted(vec![0.8, 0.2])),
        )
    })
    .await;
    const N: usize = 400;
    for _ in 0..N {
        let response = chat(&harness, &chat_body("smart")).await;
        assert_eq!(answered_by(&response).1, 1);
    }
    let [a, b, _] = counts(&harness);
    assert_eq!(a + b, N);
    // Binomial(400, 0.8): mean 320, sd 8; ±40 is 5 sd (a false failure about once in 1.7
    // million runs).
    assert!((280..=360).contains(&a), "gpt-a got {a} of {N}");
}

#[tokio::test]
async fn round_robin_alternates_and_falls_back_in_order() {
    let harness = harness_with(|builder| {
        builder
            .alias("trio", ["mock/gpt-a", "backup/gpt-b", "mock/gpt-c"])
            .alias_policy("trio", AliasPolicy::new().strategy(Strategy::RoundRobin))
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let response = chat(&harness, &chat_body("trio")).await;
        seen.push(answered_by(&response).0);
    }
    let first = ["mock/gpt-a", "backup/gpt-b", "mock/gpt-c"]
        .iter()
        .position(|m| *m == seen[0])
        .unwrap();
    for (i, model) in seen.iter().enumerate() {
        let expected = ["mock/gpt-a", "backup/gpt-b", "mock/gpt-c"][(first + i) % 3];
        assert_eq!(model, expected, "{seen:?}");
    }
    assert_eq!(counts(&harness), [2, 2, 2]);
    // The next turn is gpt-a's (six requests later); it fails: the others follow, wrapping.
    let next = ["mock/gpt-a", "backup/gpt-b", "mock/gpt-c"][(first + 6) % 3];
    let upstream_model = next.split_once('/').unwrap().1;
    harness
        .upstream
        .script_for(upstream_model, openai_error(503, "busy"));
    let response = chat(&harness, &chat_body("trio")).await;
    let after = ["mock/gpt-a", "backup/gpt-b", "mock/gpt-c"][(first + 7) % 3];
    assert_eq!(answered_by(&response), (after.to_owned(), 2));
}

// ------------------------------------------------------------------ cooldowns

#[tokio::test(start_paused = true)]
async fn consecutive_failures_cool_a_target_down_until_it_recovers() {
    let harness =
        harness_with(|builder| builder.cooldown("mock", Cooldown::new(2, Duration::from_secs(30))))
            .await;
    for _ in 0..2 {
        harness.upstream.script_for(A, openai_error(503, "down"));
        let response = chat(&harness, &chat_body("smart")).await;
        assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    }
    // Cooling down: skipped, and the skip is not an attempt.
    for _ in 0..3 {
        let response = chat(&harness, &chat_body("smart")).await;
        assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 1));
    }
    assert_eq!(counts(&harness), [2, 5, 0]);
    // Every candidate cooling (a request for gpt-a alone): tried anyway.
    let response = chat(&harness, &chat_body("mock/gpt-a")).await;
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 1));
    tokio::time::advance(Duration::from_secs(31)).await;
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 1));
    assert_eq!(counts(&harness), [4, 5, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_cools_for_that_long() {
    let harness = harness_with(|builder| {
        builder.cooldown("mock", Cooldown::new(100, Duration::from_secs(300)))
    })
    .await;
    harness.upstream.script_for(
        A,
        openai_error(429, "rate_limit_exceeded").header("retry-after", "5"),
    );
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 1));
    tokio::time::advance(Duration::from_millis(5100)).await;
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 1));
}

// ---------------------------------------------------------------------- knobs

#[tokio::test]
async fn knobs_are_obeyed_and_never_forwarded() {
    let harness = harness().await;
    harness.upstream.script_for(A, openai_error(503, "busy"));
    harness.upstream.script_for(B, openai_error(502, "busy"));
    // The knobs around the other members, spaced unusually: only they and `model` change.
    let body = concat!(
        r#"{"fallbacks" : [{"model":"backup/gpt-b"},{"model":"mock/gpt-c"}],"model":"mock/gpt-a","#,
        r#""identity":{"id":"u-1","tags":["x"]},"messages":[{"role":"user","content":"hi"}],"#,
        r#""timeout":{"call_timeout":30000},  "temperature":0.5,"thread":{"id":"t-1"},"#,
        r#""retry":{"count":1,"on_codes":[418]}}"#
    );
    let response = harness.post_json("/chat/completions", body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(answered_by(&response), ("mock/gpt-c".into(), 3));
    let expected = concat!(
        r#"{"model":"gpt-c","messages":[{"role":"user","content":"hi"}],"#,
        r#""temperature":0.5}"#
    );
    let seen = harness.upstream.requests_for(C).pop().unwrap();
    assert_eq!(
        seen.json().unwrap(),
        serde_json::from_str::<Value>(expected).unwrap()
    );
    for request in harness.upstream.requests() {
        let text = String::from_utf8_lossy(&request.body).into_owned();
        for knob in [
            "fallbacks",
            "identity",
            "timeout",
            "thread",
            "retry",
            "u-1",
            "t-1",
        ] {
            assert!(!text.contains(knob), "`{knob}` reached the mock: {text}");
        }
        // Every other byte as the client sent it.
        assert!(
            text.contains(r#""messages":[{"role":"user","content":"hi"}]"#)
                && text.contains(r#""temperature":0.5"#),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_request_s_load_balancer_picks_among_its_models() {
    let harness = harness().await;
    let body = |kind: &str| {
        json!({
            "messages": [{"role": "user", "content": "hi"}],
            "load_balancer": {"type": kind, "models": [
                {"model": "mock/gpt-a", "weight": 0.5},
                {"model": "backup/gpt-c", "weight": 0.5}
            ]}
        })
    };
    let mut answered = Vec::new();
    for _ in 0..4 {
        let response = chat(&harness, &body("round_robin")).await;
        assert_eq!(response.status, 200, "{}", response.text());
        answered.push(answered_by(&response).0);
    }
    assert_ne!(answered[0], answered[1], "{answered:?}");
    assert_eq!(answered[0], answered[2], "{answered:?}");
    assert_eq!(counts(&harness), [2, 0, 2]);
    // Weighted, with the first pick failing: the other one answers.
    harness.upstream.script_for(A, openai_error(503, "busy"));
    harness.upstream.script_for(C, openai_error(503, "busy"));
    let response = chat(&harness, &body("weight_based")).await;
    assert_eq!(answered_by(&response).1, 2);
    for request in harness.upstream.requests() {
        assert!(request.json().unwrap().get("load_balancer").is_none());
    }
}

#[tokio::test]
async fn invalid_knobs_are_400_naming_the_param() {
    let harness = harness().await;
    let cases = [
        (json!({"retry": {"count": 9}}), "retry.count"),
        (
            json!({"retry": {"count": 1, "on_codes": [42]}}),
            "retry.on_codes[0]",
        ),
        (json!({"retry": "twice"}), "retry"),
        (
            json!({"fallbacks": [{"model": "backup/gpt-b"}, {"model": "nowhere/x"}]}),
            "fallbacks[1].model",
        ),
        (json!({"fallbacks": [{"model": ""}]}), "fallbacks[0].model"),
        (
            json!({"fallbacks": [{"model": "a/b"}, {"model": "a/b"}, {"model": "a/b"}, {"model": "a/b"}, {"model": "a/b"}, {"model": "a/b"}]}),
            "fallbacks",
        ),
        (
            json!({"timeout": {"call_timeout": "soon"}}),
            "timeout.call_timeout",
        ),
        (
            json!({"timeout": {"call_timeout": 0}}),
            "timeout.call_timeout",
        ),
        (
            json!({"load_balancer": {"type": "weight_based", "models": [{"model": "mock/gpt-a", "weight": 2}]}}),
            "load_balancer.models[0].weight",
        ),
        (
            json!({"load_balancer": {"type": "random", "models": [{"model": "mock/gpt-a"}]}}),
            "load_balancer.type",
        ),
        (
            json!({"load_balancer": {"type": "round_robin", "models": []}}),
            "load_balancer.models",
        ),
        (json!({"identity": "me"}), "identity"),
        (json!({"thread": [1]}), "thread"),
        (
            json!({"load_balancer": {"type": "round_robin", "models": [{"model": "mock/gpt-a"}, {"model": "nowhere/x"}]}}),
            "load_balancer.models[1].model",
        ),
        (
            json!({"identity": {"metadata": "x".repeat(70_000)}}),
            "identity",
        ),
    ];
    for (knob, param) in cases {
        let mut body = chat_body("mock/gpt-a");
        for (name, value) in knob.as_object().unwrap() {
            body[name] = value.clone();
        }
        let response = chat(&harness, &body).await;
        let error = response.assert_error(400, None);
        assert_eq!(error["type"], "invalid_request_error", "{param}: {error}");
        assert_eq!(error["param"], param, "{error}");
    }
    assert_eq!(
        harness.upstream.request_count(),
        0,
        "an invalid knob never goes upstream"
    );
    // A null knob is no knob.
    let mut body = chat_body("mock/gpt-a");
    body["retry"] = Value::Null;
    body["identity"] = Value::Null;
    let response = chat(&harness, &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = harness.upstream.last_request().unwrap().json().unwrap();
    assert_eq!(seen, chat_body(A), "stripped all the same");
}

// ---------------------------------------------------------- keys and limits

#[tokio::test]
async fn targets_the_key_may_not_use_are_skipped() {
    const BACKUP_ONLY: &str = "sk-router-backup-only-0123";
    let harness = harness_with(|builder| {
        builder.keys(
            MemoryKeyStore::new()
                .with_key(ROUTER_KEY, Principal::new("test"))
                .with_key(
                    BACKUP_ONLY,
                    Principal::new("backup-only").allow_models(["backup/*"]),
                ),
        )
    })
    .await;
    let post = |body: Value| {
        Request::post(harness.url("/chat/completions"))
            .header("authorization", format!("Bearer {BACKUP_ONLY}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    // The alias is not on the list: its targets are checked one by one.
    let response = send(post(chat_body("smart"))).await;
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 1));
    // A fallback the key may not use is skipped, not tried.
    harness.upstream.script_for(B, openai_error(503, "busy"));
    let mut body = chat_body("backup/gpt-b");
    body["fallbacks"] = json!([{"model": "mock/gpt-a"}, {"model": "backup/gpt-c"}]);
    let response = send(post(body)).await;
    assert_eq!(answered_by(&response), ("backup/gpt-c".into(), 2));
    assert_eq!(counts(&harness), [0, 2, 1]);
    // The model itself not allowed, its fallback allowed: the fallback answers, and says so.
    let mut body = chat_body("mock/gpt-a");
    body["fallbacks"] = json!([{"model": "backup/gpt-c"}]);
    let response = send(post(body)).await;
    assert_eq!(answered_by(&response), ("backup/gpt-c".into(), 1));
    assert_eq!(counts(&harness), [0, 2, 2]);
    // None allowed: 403 as before, naming the model.
    let mut body = chat_body("mock/gpt-a");
    body["fallbacks"] = json!([{"model": "mock/gpt-c"}]);
    let response = send(post(body)).await;
    let error = response.assert_error(403, Some("model_not_allowed"));
    assert!(
        error["message"].as_str().unwrap().contains("mock/gpt-a"),
        "{error}"
    );
    assert_eq!(counts(&harness), [0, 2, 2]);
}

#[tokio::test]
async fn a_request_counts_once_against_the_rate_limit_whatever_its_attempts() {
    const RPM_KEY: &str = "sk-router-rpm-resilience-01";
    let harness = harness_with(|builder| {
        builder.keys(MemoryKeyStore::new().with_key(RPM_KEY, Principal::new("rpm").rpm(2)))
    })
    .await;
    let post = || {
        Request::post(harness.url("/chat/completions"))
            .header("authorization", format!("Bearer {RPM_KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat_body("smart").to_string())))
            .unwrap()
    };
    harness.upstream.script_for(A, openai_error(503, "busy"));
    let first = send(post()).await;
    assert_eq!(answered_by(&first), ("backup/gpt-b".into(), 2));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("1"));
    let second = send(post()).await;
    assert_eq!(second.status, 200);
    let third = send(post()).await;
    third.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(
        third.header("x-ai-router-model"),
        None,
        "never went upstream"
    );
}

// ------------------------------------------------------------------- streams

fn stream_body(model: &str) -> Value {
    let mut body = chat_body(model);
    body["stream"] = json!(true);
    body
}

/// The `data:` payloads of an SSE body.
fn events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn a_stream_failing_before_its_first_event_falls_back() {
    let harness = harness().await;
    // The head says 200, then the connection breaks before any event.
    harness.upstream.script_for(
        A,
        ScriptedResponse::stream(["data: {\"never\":true}\n\n"]).reset_after(0),
    );
    let response = chat(&harness, &stream_body("smart")).await;
    assert_eq!(response.status, 200);
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    let text = response.text();
    assert!(!text.contains("never"), "{text}");
    let events = events(&text);
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert_eq!(chunk["model"], B, "one upstream per answer: {event}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_event_fails_over_with_first_byte_timeout() {
    let harness = harness_with(|builder| {
        builder.alias_policy(
            "smart",
            AliasPolicy::new().first_byte_timeout(Duration::from_secs(3)),
        )
    })
    .await;
    harness.upstream.script_for(
        A,
        ScriptedResponse::stream(["data: {\"late\":true}\n\n", "data: [DONE]\n\n"])
            .first_chunk_delay(Duration::from_secs(30)),
    );
    let start = Instant::now();
    let response = chat(&harness, &stream_body("smart")).await;
    let waited = start.elapsed();
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    assert!(!response.text().contains("late"));
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_stream_answered_without_events_falls_back() {
    let harness = harness().await;
    harness.upstream.script_for(
        A,
        ScriptedResponse::new(200).json(json!({"object": "chat.completion", "choices": []})),
    );
    let response = chat(&harness, &stream_body("smart")).await;
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
}

#[tokio::test(start_paused = true)]
async fn comments_are_not_a_first_event() {
    let harness = harness_with(|builder| {
        builder.alias_policy(
            "smart",
            AliasPolicy::new().first_byte_timeout(Duration::from_secs(3)),
        )
    })
    .await;
    // A keep-alive comment at once, the first event much later.
    harness.upstream.script_for(
        A,
        ScriptedResponse::stream([": PROCESSING\n\n", "data: {\"late\":true}\n\n"])
            .chunk_delay(Duration::from_secs(30)),
    );
    let response = chat(&harness, &stream_body("smart")).await;
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    assert!(!response.text().contains("PROCESSING"));
}

#[tokio::test(start_paused = true)]
async fn without_first_byte_timeout_a_slow_stream_is_handed_over_whole() {
    let harness = harness().await;
    // Slower than the head is held for (10 s): the client gets it as it is, comment first.
    harness.upstream.script_for(
        A,
        ScriptedResponse::stream([
            ": PROCESSING\n\n",
            "data: {\"slow\":true}\n\n",
            "data: [DONE]\n\n",
        ])
        .chunk_delay(Duration::from_secs(15)),
    );
    let request = Request::post(harness.url("/chat/completions"))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(stream_body("smart").to_string())))
        .unwrap();
    let response = send_within(request, Duration::from_secs(120)).await;
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 1));
    assert_eq!(
        response.text(),
        ": PROCESSING\n\ndata: {\"slow\":true}\n\ndata: [DONE]\n\n"
    );
    assert_eq!(counts(&harness), [1, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_fallback_s_stream_keeps_its_own_provider_s_idle_timeout() {
    // `mock` keeps the default idle timeout (5 minutes); `backup` ends a silent stream after 2 s.
    let harness = harness_with(|builder| {
        builder.stream_settings(
            "backup",
            StreamSettings::new().idle_timeout(Duration::from_secs(2)),
        )
    })
    .await;
    harness.upstream.script_for(A, openai_error(503, "busy"));
    harness.upstream.script_for(
        B,
        ScriptedResponse::stream([
            "data: {\"model\":\"gpt-b\",\"choices\":[]}\n\n",
            "data: [DONE]\n\n",
        ])
        .stall_after(1),
    );
    let request = Request::post(harness.url("/chat/completions"))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(stream_body("smart").to_string())))
        .unwrap();
    let start = Instant::now();
    let response = send_within(request, Duration::from_secs(900)).await;
    let waited = start.elapsed();
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 2));
    let text = response.text();
    let events = events(&text);
    assert_openai_error(events[1].as_bytes(), Some("upstream_idle_timeout"));
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "the answering provider's 2 s, not the first one's 5 minutes: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_cools_a_target_asked_for_directly_too() {
    let harness = harness_with(|builder| {
        builder.cooldown("mock", Cooldown::new(100, Duration::from_secs(300)))
    })
    .await;
    // No plan: one target, one attempt, and the client gets the 429.
    harness.upstream.script_for(
        A,
        openai_error(429, "rate_limit_exceeded").header("retry-after", "5"),
    );
    let response = chat(&harness, &chat_body("mock/gpt-a")).await;
    response.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 1));
    // The alias then skips it while it cools.
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("backup/gpt-b".into(), 1));
    tokio::time::advance(Duration::from_millis(5100)).await;
    let response = chat(&harness, &chat_body("smart")).await;
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 1));
}

#[tokio::test]
async fn no_fallback_after_the_first_event() {
    let harness = harness().await;
    harness.upstream.script_for(
        A,
        ScriptedResponse::stream([
            "data: {\"id\":\"1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-a\",\"choices\":[]}\n\n",
            "data: {\"id\":\"1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-a\",\"choices\":[]}\n\n",
            "data: [DONE]\n\n",
        ])
        .reset_after(1),
    );
    let response = chat(&harness, &stream_body("smart")).await;
    assert_eq!(answered_by(&response), ("mock/gpt-a".into(), 1));
    let text = response.text();
    let events = events(&text);
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[0].contains("gpt-a"));
    assert_openai_error(events[1].as_bytes(), Some("upstream_stream_error"));
    assert_eq!(
        counts(&harness),
        [1, 0, 0],
        "no second upstream once bytes went out"
    );
}

// ------------------------------------------------------------ answers, SDK

#[tokio::test]
async fn every_upstream_answer_names_its_target_even_without_a_plan() {
    let harness = harness().await;
    let response = chat(&harness, &chat_body("mock/gpt-4o-mini")).await;
    assert_eq!(answered_by(&response), ("mock/gpt-4o-mini".into(), 1));
    let response = chat(&harness, &chat_body("fast")).await;
    assert_eq!(answered_by(&response), ("mock/gpt-4o-mini".into(), 1));
    // Refused before any upstream: no such headers.
    let response = chat(&harness, &chat_body("nowhere/x")).await;
    assert_eq!(response.header("x-ai-router-attempts"), None);
}

#[tokio::test]
async fn an_official_client_gets_the_fallback_s_answer_and_stream() {
    let harness = harness().await;
    let client = harness.client();
    let request = |stream: bool| {
        CreateChatCompletionRequestArgs::default()
            .model("smart")
            .stream(stream)
            .messages([ChatCompletionRequestUserMessageArgs::default()
                .content("hello")
                .build()
                .unwrap()
                .into()])
            .build()
            .unwrap()
    };
    harness.upstream.script_for(A, openai_error(503, "busy"));
    let answer = client.chat().create(request(false)).await.unwrap();
    assert_eq!(answer.model, B);
    harness
        .upstream
        .script_for(A, ScriptedResponse::reset_before_head());
    let stream = client.chat().create_stream(request(true)).await.unwrap();
    let chunks = collect_stream(stream).await;
    assert!(!chunks.is_empty());
    for chunk in chunks {
        assert_eq!(chunk.unwrap().model, B);
    }
    assert_eq!(counts(&harness), [2, 2, 0]);
}

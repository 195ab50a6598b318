//! Heap allocations per request, counted in-process by a counting global allocator
//! (`stats_alloc`): the whole `AiRouter` in front of an in-memory provider, and each layer
//! alone over an in-memory `service_fn`, against the floor of calling the upstream alone.
//!
//! Everything runs on one thread (a current-thread tokio runtime), so the process-wide
//! counters see only the measured exchanges: requests are built before counting starts, each
//! is sent through a clone of the service and its answer drained. No tracing subscriber is
//! installed (the router's spans are then disabled, as in a host that logs nothing).
//!
//! This is its own bench target so the counting allocator never runs under the timing
//! benches. `cargo bench --bench alloc` counts 10 000 requests per case; without `--bench`
//! (`cargo test --benches`) it counts 100.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Each bench target uses a part of the shared fixtures.
#[allow(dead_code)]
mod common;

use std::alloc::System;
use std::fmt::Debug;

use ai_router::auth::AuthLayer;
use ai_router::observe::Metrics;
use ai_router::openai_errors::OpenAiErrorsLayer;
use ai_router::provider::UpstreamBody;
use ai_router::request_id::SetRequestIdLayer;
use ai_router::route::{Endpoint, RouteLayer, RouteTarget};
use ai_router::sse::SseLayer;
use ai_router::{AiRouter, Error};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Service, ServiceBuilder, ServiceExt as _};

use common::{Frames, KIB, MOUNT, chat_body, chat_request, keys, ok_answer, router_request, table};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations of one case, per request.
#[derive(Debug, Clone, Copy)]
struct Count {
    allocations: f64,
    reallocations: f64,
    bytes: f64,
}

/// Sends `n` requests made by `make` through clones of `service` and drains each answer;
/// returns what the allocator saw, per request. A short warm-up runs first (lazily
/// initialised statics, tracing call sites).
async fn count<S, B, RB>(
    service: &S,
    n: usize,
    status: StatusCode,
    make: impl Fn() -> Request<B>,
) -> Count
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Debug,
    RB: Body<Data = Bytes>,
    RB::Error: Debug,
{
    for _ in 0..50 {
        exchange(service, make(), status).await;
    }
    let requests: Vec<Request<B>> = (0..n).map(|_| make()).collect();
    let region = Region::new(GLOBAL);
    for request in requests {
        exchange(service, request, status).await;
    }
    let stats = region.change();
    let n = n as f64;
    Count {
        allocations: stats.allocations as f64 / n,
        reallocations: stats.reallocations as f64 / n,
        bytes: stats.bytes_allocated as f64 / n,
    }
}

async fn exchange<S, B, RB>(service: &S, request: Request<B>, status: StatusCode)
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Debug,
    RB: Body<Data = Bytes>,
    RB::Error: Debug,
{
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), status);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
}

/// The in-memory upstream's streamed answer: 24 chat chunks and `[DONE]`.
fn sse_answer() -> Response<UpstreamBody> {
    let mut response = Response::new(UpstreamBody::new(Frames::sse(24)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// A streaming chat request as `Route` hands it down: `Bytes` body, `RouteTarget` set.
fn routed_stream_request() -> Request<Bytes> {
    let mut request = Request::post("/chat/completions")
        .body(chat_body("gpt-4o-mini", KIB, true))
        .unwrap();
    request.extensions_mut().insert(
        RouteTarget::new("mock", "gpt-4o-mini", Endpoint::ChatCompletions).with_stream(true, None),
    );
    request
}

fn wrong_key(mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    request.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer sk-router-wrong-key"),
    );
    request
}

async fn measure(n: usize) -> Vec<(&'static str, &'static str, Count)> {
    let mut rows = Vec::new();

    // The floor of the layer rows: a `service_fn` upstream answering a JSON chat completion.
    let upstream =
        tower::service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, Error>(ok_answer()) });
    let floor = count(&upstream, n, StatusCode::OK, || chat_request(KIB, false)).await;
    rows.push(("floor", "service_fn upstream alone, 1 KiB chat", floor));

    let layer = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new())
        .service(upstream);
    let c = count(&layer, n, StatusCode::OK, || chat_request(KIB, false)).await;
    rows.push(("layer", "request_id (generated id)", c));

    let layer = ServiceBuilder::new()
        .layer(OpenAiErrorsLayer::new())
        .service(upstream);
    let c = count(&layer, n, StatusCode::OK, || chat_request(KIB, false)).await;
    rows.push(("layer", "normalize (success passed through)", c));

    let layer = ServiceBuilder::new()
        .layer(AuthLayer::new(keys()))
        .service(upstream);
    let c = count(&layer, n, StatusCode::OK, || chat_request(KIB, false)).await;
    rows.push(("layer", "auth (valid key)", c));

    let route = ServiceBuilder::new()
        .layer(RouteLayer::new(table().unwrap()).mount_path(MOUNT))
        .service_fn(|_: Request<Bytes>| async { Ok::<_, Error>(ok_answer()) });
    let c = count(&route, n, StatusCode::OK, || chat_request(KIB, false)).await;
    rows.push(("layer", "route, 1 KiB chat", c));
    let c = count(&route, n, StatusCode::OK, || chat_request(100 * KIB, false)).await;
    rows.push(("layer", "route, 100 KiB chat", c));

    // The stream layer over an upstream answering 24 SSE chunks + [DONE], against that
    // upstream alone.
    let streaming = tower::service_fn(|_: Request<Bytes>| async { Ok::<_, Error>(sse_answer()) });
    let c = count(&streaming, n, StatusCode::OK, routed_stream_request).await;
    rows.push(("floor", "service_fn upstream alone, stream (25 frames)", c));
    let layer = ServiceBuilder::new()
        .layer(SseLayer::new())
        .service(streaming);
    let c = count(&layer, n, StatusCode::OK, routed_stream_request).await;
    rows.push(("layer", "sse, stream (25 frames)", c));

    let router = common::in_memory_router().unwrap();
    let c = count(&router, n, StatusCode::OK, || chat_request(KIB, false)).await;
    rows.push(("router", "AiRouter, 1 KiB chat", c));
    let c = count(&router, n, StatusCode::OK, || {
        chat_request(100 * KIB, false)
    })
    .await;
    rows.push(("router", "AiRouter, 100 KiB chat", c));
    let c = count(&router, n, StatusCode::OK, || chat_request(KIB, true)).await;
    rows.push(("router", "AiRouter, 1 KiB chat, stream (25 frames)", c));
    let c = count(&router, n, StatusCode::UNAUTHORIZED, || {
        wrong_key(chat_request(KIB, false))
    })
    .await;
    rows.push(("router", "AiRouter, unknown key (401)", c));

    // The same router observed by Prometheus metrics instead of the default log event.
    let metrics = Metrics::builder()
        .models(["mock/gpt-4o-mini"])
        .keys(["bench"])
        .build();
    let observed = AiRouter::builder()
        .mount_path(MOUNT)
        .keys(keys())
        .provider("mock", common::in_memory_provider())
        .models("mock", ["gpt-4o-mini"])
        .observer(metrics)
        .build()
        .unwrap();
    let c = count(&observed, n, StatusCode::OK, || chat_request(KIB, false)).await;
    rows.push(("router", "AiRouter + Metrics, 1 KiB chat", c));
    let c = count(&observed, n, StatusCode::OK, || chat_request(KIB, true)).await;
    rows.push((
        "router",
        "AiRouter + Metrics, 1 KiB chat, stream (25 frames)",
        c,
    ));
    let c = count(&router, n, StatusCode::OK, || {
        router_request(
            "/v3/router/chat/completions",
            chat_body("resilient", KIB, false),
        )
    })
    .await;
    rows.push(("router", "AiRouter, 1 KiB chat, alias with a fallback", c));
    let c = count(&router, n, StatusCode::OK, || {
        router_request(
            "/v3/router/chat/completions",
            chat_body("resilient", KIB, true),
        )
    })
    .await;
    rows.push((
        "router",
        "AiRouter, 1 KiB chat, stream (25 frames), alias with a fallback",
        c,
    ));

    // The provider alone, with the request as the router hands it over: the floor of the
    // router rows.
    let provider = common::in_memory_provider();
    let c = count(&provider, n, StatusCode::OK, || {
        Request::post("/chat/completions")
            .body(chat_body("gpt-4o-mini", KIB, false))
            .unwrap()
    })
    .await;
    rows.push(("floor", "in-memory provider alone, 1 KiB chat", c));
    let c = count(&provider, n, StatusCode::OK, || {
        Request::post("/chat/completions")
            .body(chat_body("gpt-4o-mini", KIB, true))
            .unwrap()
    })
    .await;
    rows.push(("floor", "in-memory provider alone, stream (25 frames)", c));
    rows
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let n = if full { 10_000 } else { 100 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(measure(n));
    let floor_of = |kind: &str, name: &str| -> Option<f64> {
        let floor_name = match (kind, name.contains("stream")) {
            ("layer", true) => "service_fn upstream alone, stream (25 frames)",
            ("layer", false) => "service_fn upstream alone, 1 KiB chat",
            ("router", true) => "in-memory provider alone, stream (25 frames)",
            ("router", false) => "in-memory provider alone, 1 KiB chat",
            _ => return None,
        };
        rows.iter()
            .find(|(_, name, _)| *name == floor_name)
            .map(|(_, _, c)| c.allocations)
    };
    println!("alloc: heap allocations per request, {n} requests per case (counting allocator)\n");
    println!(
        "| case | allocations/req | over its floor | reallocations/req | bytes allocated/req |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (kind, name, c) in &rows {
        let over = floor_of(kind, name)
            .filter(|_| *kind != "router" || !name.contains("401"))
            .map_or_else(
                || "-".to_owned(),
                |floor| format!("{:+.1}", c.allocations - floor),
            );
        println!(
            "| {name} | {:.1} | {over} | {:.1} | {:.0} |",
            c.allocations, c.reallocations, c.bytes
        );
    }
}

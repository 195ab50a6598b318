//! Per-layer micro benchmarks (criterion): each layer alone in a `ServiceBuilder` over an
//! in-memory `service_fn` upstream, and the whole `AiRouter` in front of an in-memory
//! provider. No sockets: what is timed is the layer's own work (plus the shared floor, see
//! `upstream/service_fn`), so a regression points at its layer.
//!
//! Every iteration builds its request outside the timing (`iter_batched`), then calls a clone
//! of the service (`oneshot`) and drains the response body. Run with
//! `cargo bench --bench layers`; see `benches/README.md` for the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Each bench target uses a part of the shared fixtures.
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::time::Duration;

use ai_router::Error;
use ai_router::auth::AuthLayer;
use ai_router::openai_errors::OpenAiErrorsLayer;
use ai_router::provider::{Providers, UpstreamBody};
use ai_router::request_id::SetRequestIdLayer;
use ai_router::route::{Endpoint, RouteLayer, RouteTarget};
use ai_router::sse::SseLayer;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt as _};

use common::{Frames, KIB, MOUNT, chat_body, chat_request, keys, ok_answer, router_request, table};

/// A single-threaded runtime with timers (the error normaliser arms one).
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Calls a clone of `service` with `request` and drains the answer; panics unless `status`.
async fn exchange<S, B, RB>(service: &S, request: Request<B>, status: StatusCode) -> Bytes
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: std::fmt::Debug,
    RB: Body<Data = Bytes>,
    RB::Error: std::fmt::Debug,
{
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), status);
    drain(response.into_body()).await
}

async fn drain<B: Body<Data = Bytes>>(body: B) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes()
}

/// Registers one async bench: `make` builds each request (untimed), the routine calls the
/// service with it and drains the answer.
fn bench_service<S, B, RB>(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    bytes: Option<usize>,
    service: S,
    status: StatusCode,
    make: impl Fn() -> Request<B> + Copy,
) where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: std::fmt::Debug,
    RB: Body<Data = Bytes>,
    RB::Error: std::fmt::Debug,
{
    // Check the answer once before timing it.
    rt.block_on(exchange(&service, make(), status));
    let mut group = c.benchmark_group(name.split_once('/').map_or(name, |(g, _)| g));
    if let Some(bytes) = bytes {
        group.throughput(Throughput::Bytes(bytes as u64));
    }
    let id = name.split_once('/').map_or("", |(_, id)| id);
    group.bench_function(id, |b| {
        b.to_async(rt).iter_batched(
            make,
            |request| {
                let service = &service;
                async move { black_box(exchange(service, request, status).await) }
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// The floor every other figure includes: a `service_fn` upstream called through `oneshot`,
/// its 200 JSON answer drained.
fn upstream(c: &mut Criterion, rt: &Runtime) {
    let service =
        tower::service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, Error>(ok_answer()) });
    bench_service(
        c,
        rt,
        "upstream/service_fn",
        None,
        service,
        StatusCode::OK,
        || chat_request(KIB, false),
    );
    // The floor of the stream figures: the same upstream answering 24 SSE chunks + [DONE].
    let streaming = tower::service_fn(|_: Request<Bytes>| async { Ok::<_, Error>(sse_answer()) });
    bench_service(
        c,
        rt,
        "upstream/service_fn_stream_25_frames",
        None,
        streaming,
        StatusCode::OK,
        routed_stream_request,
    );
}

/// The in-memory upstream's streamed answer: 24 chat chunks and `[DONE]`.
fn sse_answer() -> Response<UpstreamBody> {
    let mut response = Response::new(UpstreamBody::new(Frames::sse(24)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
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

fn request_id(c: &mut Criterion, rt: &Runtime) {
    let service = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new())
        .service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, Error>(ok_answer()) });
    bench_service(
        c,
        rt,
        "request_id/generated",
        None,
        service.clone(),
        StatusCode::OK,
        || chat_request(KIB, false),
    );
    bench_service(
        c,
        rt,
        "request_id/kept_from_client",
        None,
        service,
        StatusCode::OK,
        || {
            let mut request = chat_request(KIB, false);
            request.headers_mut().insert(
                "x-request-id",
                http::HeaderValue::from_static("client-req-0123456789"),
            );
            request
        },
    );
}

fn auth(c: &mut Criterion, rt: &Runtime) {
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(keys()))
        .service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, Error>(ok_answer()) });
    bench_service(
        c,
        rt,
        "auth/valid_key",
        None,
        service.clone(),
        StatusCode::OK,
        || chat_request(KIB, false),
    );
    // A refusal is an `Err` from `Auth` alone; `OpenAiErrors` renders it (the router's order),
    // so this one includes the rendering.
    let refusing = ServiceBuilder::new()
        .layer(OpenAiErrorsLayer::new())
        .layer(AuthLayer::new(keys()))
        .service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, Error>(ok_answer()) });
    bench_service(
        c,
        rt,
        "auth/unknown_key_401_rendered",
        None,
        refusing,
        StatusCode::UNAUTHORIZED,
        || {
            let mut request = chat_request(KIB, false);
            request.headers_mut().insert(
                header::AUTHORIZATION,
                http::HeaderValue::from_static("Bearer sk-router-wrong-key"),
            );
            request
        },
    );
}

fn route(c: &mut Criterion, rt: &Runtime) {
    let service = ServiceBuilder::new()
        .layer(RouteLayer::new(table().unwrap()).mount_path(MOUNT))
        .service_fn(|request: Request<Bytes>| async move {
            debug_assert!(request.extensions().get::<RouteTarget>().is_some());
            black_box(request.body());
            Ok::<_, Error>(ok_answer())
        });
    for (name, size) in [("route/chat_1KiB", KIB), ("route/chat_100KiB", 100 * KIB)] {
        let make = move || chat_request(size, false);
        bench_service(
            c,
            rt,
            name,
            Some(size),
            service.clone(),
            StatusCode::OK,
            make,
        );
    }
    // `fast` is an alias: resolved through the table, the body rewritten the same way.
    bench_service(
        c,
        rt,
        "route/chat_1KiB_alias",
        Some(KIB),
        service,
        StatusCode::OK,
        || router_request("/v3/router/chat/completions", chat_body("fast", KIB, false)),
    );
}

fn normalize(c: &mut Criterion, rt: &Runtime) {
    let passing = ServiceBuilder::new()
        .layer(OpenAiErrorsLayer::new())
        .service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, Error>(ok_answer()) });
    bench_service(
        c,
        rt,
        "normalize/success_passed_through",
        None,
        passing,
        StatusCode::OK,
        || chat_request(KIB, false),
    );
    let failing = ServiceBuilder::new()
        .layer(OpenAiErrorsLayer::new())
        .service_fn(|_: Request<Full<Bytes>>| async {
            Err::<Response<UpstreamBody>, _>(Error::model_not_found("mock/gpt-5-ultra"))
        });
    bench_service(
        c,
        rt,
        "normalize/inner_error_rendered",
        None,
        failing,
        StatusCode::NOT_FOUND,
        || chat_request(KIB, false),
    );
    let html = ServiceBuilder::new()
        .layer(OpenAiErrorsLayer::new())
        .service_fn(|_: Request<Full<Bytes>>| async {
            let response = Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                .body(UpstreamBody::full(Bytes::from_static(
                    UPSTREAM_500_HTML.as_bytes(),
                )))
                .unwrap();
            Ok::<_, Error>(response)
        });
    bench_service(
        c,
        rt,
        "normalize/upstream_500_html_normalised",
        None,
        html,
        StatusCode::BAD_GATEWAY,
        || chat_request(KIB, false),
    );
}

/// A typical proxy error page.
const UPSTREAM_500_HTML: &str = "<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n\
     <body>\r\n<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n\
     </body>\r\n</html>\r\n";

fn providers(c: &mut Criterion, rt: &Runtime) {
    let providers = Providers::new().with("mock", common::in_memory_provider());
    bench_service(
        c,
        rt,
        "providers/dispatch_boxed",
        None,
        providers,
        StatusCode::OK,
        || {
            let mut request = Request::post("/chat/completions")
                .body(chat_body("gpt-4o-mini", KIB, false))
                .unwrap();
            request.extensions_mut().insert(RouteTarget::new(
                "mock",
                "gpt-4o-mini",
                Endpoint::ChatCompletions,
            ));
            request
        },
    );
}

fn router(c: &mut Criterion, rt: &Runtime) {
    let router = common::in_memory_router().unwrap();
    for (name, size) in [("router/chat_1KiB", KIB), ("router/chat_100KiB", 100 * KIB)] {
        bench_service(
            c,
            rt,
            name,
            Some(size),
            router.clone(),
            StatusCode::OK,
            move || chat_request(size, false),
        );
    }
    // The same router behind `ReloadableRouter`: what a swappable config costs per request
    // (one atomic load, one more `Arc` clone).
    bench_service(
        c,
        rt,
        "router/reloadable_chat_1KiB",
        Some(KIB),
        ai_router::ReloadableRouter::new(router.clone()),
        StatusCode::OK,
        || chat_request(KIB, false),
    );
    bench_service(
        c,
        rt,
        "router/chat_1KiB_stream_25_frames",
        Some(KIB),
        router.clone(),
        StatusCode::OK,
        || chat_request(KIB, true),
    );
    bench_service(
        c,
        rt,
        "router/unknown_key_401",
        None,
        router,
        StatusCode::UNAUTHORIZED,
        || {
            let mut request = chat_request(KIB, false);
            request.headers_mut().insert(
                header::AUTHORIZATION,
                http::HeaderValue::from_static("Bearer sk-router-wrong-key"),
            );
            request
        },
    );
}

fn sse(c: &mut Criterion, rt: &Runtime) {
    // Every event scanned, usage and first-byte time observed, the report hook (the default
    // `LogUsage`, no subscriber installed) called at the end.
    let service = ServiceBuilder::new()
        .layer(SseLayer::new())
        .service_fn(|_: Request<Bytes>| async { Ok::<_, Error>(sse_answer()) });
    bench_service(
        c,
        rt,
        "sse/stream_25_frames_observed",
        None,
        service,
        StatusCode::OK,
        routed_stream_request,
    );
    let json = ServiceBuilder::new()
        .layer(SseLayer::new())
        .service_fn(|_: Request<Bytes>| async { Ok::<_, Error>(ok_answer()) });
    bench_service(
        c,
        rt,
        "sse/json_answer_untouched",
        None,
        json,
        StatusCode::OK,
        || {
            let mut request = Request::post("/chat/completions")
                .body(chat_body("gpt-4o-mini", KIB, false))
                .unwrap();
            request.extensions_mut().insert(RouteTarget::new(
                "mock",
                "gpt-4o-mini",
                Endpoint::ChatCompletions,
            ));
            request
        },
    );
}

fn layers(c: &mut Criterion) {
    let rt = runtime();
    upstream(c, &rt);
    request_id(c, &rt);
    auth(c, &rt);
    route(c, &rt);
    normalize(c, &rt);
    sse(c, &rt);
    providers(c, &rt);
    router(c, &rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = layers
}
criterion_main!(benches);

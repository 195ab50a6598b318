//! End-to-end benchmark over loopback TCP: what a client sees through the router, against
//! the same mock upstream reached directly and through a bare hyper pass-through proxy.
//!
//! Targets, each called with the same pooled HTTP/1.1 keep-alive hyper client (TCP_NODELAY):
//! - `direct`: client -> mock upstream;
//! - `bare`: client -> a minimal hyper proxy (accept, forward method, path, headers and the
//!   streamed body to the mock with a pooled `hyper_util` legacy client, stream the answer
//!   back; nothing else) -> mock. The floor for any proxy;
//! - `router`: client -> the full `AiRouter` served by plain hyper in this process -> mock;
//! - `gateway`: client -> the shipped gateway binary (`examples/gateway`, release build), run
//!   as its own process with a config file in the documented format: its own runtime, sockets
//!   and logging as shipped (text access log to stderr, here `/dev/null`) -> mock;
//! - `gateway-nolog`: the same with `access_log = "off"`.
//!
//! Scenarios: a non-streaming 1 KiB chat at concurrency 1 and 64, and a streaming chat
//! (`"stream": true`, ~25 SSE chunks) at concurrency 1 (time to first body byte and total).
//!
//! Both proxies run on one single-threaded tokio runtime whose thread is pinned to one core;
//! the mock and the load generator share another single-threaded runtime pinned to the other
//! core (`core_affinity`; no pinning with fewer than 2 cores or `E2E_NO_PIN=1`). Targets are
//! interleaved round by round (direct, bare, router, direct, ...); every figure is the median
//! over rounds. Each run is bounded in requests and in time; all traffic stays on 127.0.0.1.
//!
//! `cargo bench --bench e2e` runs the full measurement (`E2E_ROUNDS` overrides the 15
//! rounds); run without `--bench` (e.g. `cargo test --benches`) it does a short smoke run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Each bench target uses a part of the shared fixtures.
#[allow(dead_code)]
mod common;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ai_router::AiRouter;
use ai_router::auth::{MemoryKeyStore, Principal};
use ai_router::mock::MockUpstream;
use ai_router::provider::HttpProvider;
use bytes::Bytes;
use core_affinity::CoreId;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use common::{KIB, MOUNT, PROVIDER_KEY, ROUTER_KEY, chat_body};

/// The longest one exchange may take before it counts as an error.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The targets, in the order each round runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Direct,
    Bare,
    Router,
    Gateway,
    GatewayNoLog,
    GatewayTelemetry,
}

const TARGETS: [Target; 6] = [
    Target::Direct,
    Target::Bare,
    Target::Router,
    Target::Gateway,
    Target::GatewayNoLog,
    Target::GatewayTelemetry,
];

/// The proxies compared with the bare one.
const PROXIES: [Target; 4] = [
    Target::Router,
    Target::Gateway,
    Target::GatewayNoLog,
    Target::GatewayTelemetry,
];

impl Target {
    /// The name `E2E_TARGETS` uses.
    fn key(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Bare => "bare",
            Target::Router => "router",
            Target::Gateway => "gateway",
            Target::GatewayNoLog => "gateway-nolog",
            Target::GatewayTelemetry => "gateway-telemetry",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Bare => "bare proxy",
            Target::Router => "ai-router (in-process)",
            Target::Gateway => "gateway binary",
            Target::GatewayNoLog => "gateway binary, access log off",
            Target::GatewayTelemetry => "gateway binary, telemetry on",
        }
    }
}

/// One workload.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    concurrency: usize,
    stream: bool,
    /// Measured requests per target per round (at most).
    requests: usize,
    /// Wall-clock cap of one measured run.
    cap: Duration,
    /// Unmeasured requests before each measured run (fills the connection pools).
    warmup: usize,
}

fn scenarios(full: bool) -> [Scenario; 3] {
    // Many short rounds rather than a few long ones: each round's pair of targets then runs
    // within a second or so, and slow drifts of the machine cancel out in the paired ratios.
    let scale = |n: usize| if full { n } else { n / 20 };
    [
        Scenario {
            name: "chat c=1",
            concurrency: 1,
            stream: false,
            requests: scale(1000),
            cap: Duration::from_secs(1),
            warmup: scale(100),
        },
        Scenario {
            name: "chat c=64",
            concurrency: 64,
            stream: false,
            requests: scale(6000).max(256),
            cap: Duration::from_secs(2),
            warmup: scale(640).max(128),
        },
        Scenario {
            name: "stream c=1",
            concurrency: 1,
            stream: true,
            requests: scale(700),
            cap: Duration::from_secs(1),
            warmup: scale(100),
        },
    ]
}

/// What a client sends to one target.
#[derive(Debug)]
struct Shot {
    uri: Uri,
    authorization: HeaderValue,
    body: Bytes,
}

impl Shot {
    fn new(target: Target, addrs: &Addrs, stream: bool) -> Self {
        let (addr, path, key, model) = match target {
            Target::Direct => (
                addrs.mock,
                "/v1/chat/completions",
                PROVIDER_KEY,
                "gpt-4o-mini",
            ),
            Target::Bare => (
                addrs.bare,
                "/v1/chat/completions",
                PROVIDER_KEY,
                "gpt-4o-mini",
            ),
            Target::Router => (
                addrs.router,
                "/v3/router/chat/completions",
                ROUTER_KEY,
                "mock/gpt-4o-mini",
            ),
            Target::Gateway => (
                addrs.gateway,
                "/v3/router/chat/completions",
                ROUTER_KEY,
                "mock/gpt-4o-mini",
            ),
            Target::GatewayNoLog => (
                addrs.gateway_nolog,
                "/v3/router/chat/completions",
                ROUTER_KEY,
                "mock/gpt-4o-mini",
            ),
            Target::GatewayTelemetry => (
                addrs.gateway_telemetry,
                "/v3/router/chat/completions",
                ROUTER_KEY,
                "mock/gpt-4o-mini",
            ),
        };
        Self {
            uri: format!("http://{addr}{path}").parse().unwrap(),
            authorization: HeaderValue::try_from(format!("Bearer {key}")).unwrap(),
            body: chat_body(model, KIB, stream),
        }
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(header::AUTHORIZATION, self.authorization.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        request
    }
}

#[derive(Clone, Copy, Debug)]
struct Addrs {
    mock: SocketAddr,
    bare: SocketAddr,
    router: SocketAddr,
    gateway: SocketAddr,
    gateway_nolog: SocketAddr,
    gateway_telemetry: SocketAddr,
}

type LoadClient = Client<HttpConnector, Full<Bytes>>;

/// The load generator's client, the same for every target.
fn load_client() -> LoadClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// One exchange: (time to the first body byte, total), both from the send.
async fn exchange(client: &LoadClient, shot: &Shot) -> Result<(Duration, Duration), String> {
    let start = Instant::now();
    let response = client
        .request(shot.request())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let mut body = response.into_body();
    let mut first = None;
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            if first.is_none() && !data.is_empty() {
                first = Some(start.elapsed());
            }
            bytes += data.len();
        }
    }
    let total = start.elapsed();
    if status != StatusCode::OK || bytes == 0 {
        return Err(format!("status {status}, {bytes} body bytes"));
    }
    Ok((first.unwrap_or(total), total))
}

/// The figures of one measured run.
#[derive(Clone, Copy, Debug)]
struct Run {
    p50_us: f64,
    p99_us: f64,
    ttfb_p50_us: f64,
    ttfb_p99_us: f64,
    rps: f64,
    /// CPU time of the proxy thread per request (bare and router only).
    proxy_cpu_us: Option<f64>,
    completed: usize,
    errors: usize,
}

impl Run {
    /// A target left out by `E2E_TARGETS`.
    const SKIPPED: Run = Run {
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        ttfb_p50_us: f64::NAN,
        ttfb_p99_us: f64::NAN,
        rps: f64::NAN,
        proxy_cpu_us: None,
        completed: 0,
        errors: 0,
    };
}

fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

/// Sends up to `requests` requests (or until `cap`) from `concurrency` workers.
async fn load(
    client: &LoadClient,
    shot: &Arc<Shot>,
    concurrency: usize,
    requests: usize,
    cap: Duration,
) -> (Vec<(Duration, Duration)>, usize, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + cap;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, shot, next) = (client.clone(), Arc::clone(shot), Arc::clone(&next));
        workers.spawn(async move {
            let mut samples = Vec::with_capacity(requests / concurrency + 1);
            let mut errors = 0;
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < deadline {
                match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(&client, &shot)).await {
                    Ok(Ok(sample)) => samples.push(sample),
                    Ok(Err(error)) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                    Err(_) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| "timed out".to_owned());
                    }
                }
            }
            (samples, errors, first_error)
        });
    }
    let mut samples = Vec::with_capacity(requests);
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        let (mut worker_samples, worker_errors, first_error) = joined.unwrap();
        samples.append(&mut worker_samples);
        errors += worker_errors;
        if let Some(error) = first_error {
            eprintln!("e2e: {} errors, first: {error}", worker_errors);
        }
    }
    (samples, errors, start.elapsed())
}

/// The proxy thread's CPU time so far, from `/proc/<pid>/task/<tid>/schedstat` (Linux).
fn cpu_time(schedstat: Option<&PathBuf>) -> Option<Duration> {
    let text = std::fs::read_to_string(schedstat?).ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// One warm-up and one measured run of `scenario` against `target`.
async fn measure(
    client: &LoadClient,
    scenario: &Scenario,
    target: Target,
    addrs: &Addrs,
    proxies: &Proxies,
    gateways: &Gateways,
) -> Run {
    let shot = Arc::new(Shot::new(target, addrs, scenario.stream));
    let (_, warmup_errors, _) = load(
        client,
        &shot,
        scenario.concurrency,
        scenario.warmup,
        scenario.cap,
    )
    .await;
    // The in-process proxies' thread, or the gateway process's threads.
    let cpu = || match target {
        Target::Gateway => common::gateway::process_cpu(gateways.logged.pid()),
        Target::GatewayNoLog => common::gateway::process_cpu(gateways.quiet.pid()),
        Target::GatewayTelemetry => common::gateway::process_cpu(gateways.telemetry.pid()),
        _ => cpu_time(proxies.schedstat.as_ref()),
    };
    let cpu_before = cpu();
    let (mut samples, errors, wall) = load(
        client,
        &shot,
        scenario.concurrency,
        scenario.requests,
        scenario.cap,
    )
    .await;
    let cpu_after = cpu();
    let completed = samples.len();
    let proxy_cpu_us = match (target, cpu_before, cpu_after) {
        (Target::Direct, ..) => None,
        (_, Some(before), Some(after)) if completed > 0 => {
            Some((after - before).as_secs_f64() * 1e6 / completed as f64)
        }
        _ => None,
    };
    samples.sort_unstable_by_key(|(_, total)| *total);
    let totals: Vec<Duration> = samples.iter().map(|(_, total)| *total).collect();
    let mut firsts: Vec<Duration> = samples.iter().map(|(first, _)| *first).collect();
    firsts.sort_unstable();
    Run {
        p50_us: percentile_us(&totals, 0.50),
        p99_us: percentile_us(&totals, 0.99),
        ttfb_p50_us: percentile_us(&firsts, 0.50),
        ttfb_p99_us: percentile_us(&firsts, 0.99),
        rps: completed as f64 / wall.as_secs_f64(),
        proxy_cpu_us,
        completed,
        errors: errors + warmup_errors,
    }
}

// ------------------------------------------------------------------------------ proxies

/// The proxies under test, served from their own pinned thread.
struct Proxies {
    bare: SocketAddr,
    router: SocketAddr,
    /// This thread's `schedstat` file, when the platform has one.
    schedstat: Option<PathBuf>,
    pinned: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxies {
    /// Starts the thread: a single-threaded runtime (pinned to `core`) serving the bare proxy
    /// and the router, both forwarding to the mock at `mock`.
    async fn start(mock: SocketAddr, mock_base_url: String, core: Option<CoreId>) -> Self {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("proxy-under-test".to_owned())
            .spawn(move || {
                let pinned = core.is_some_and(core_affinity::set_for_current);
                let schedstat = std::fs::read_link("/proc/thread-self")
                    .ok()
                    .map(|task| PathBuf::from("/proc").join(task).join("schedstat"));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let bare = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let router = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let addrs = (bare.local_addr().unwrap(), router.local_addr().unwrap());
                    let bare = tokio::spawn(serve_bare(bare, mock));
                    let router = tokio::spawn(serve_router(router, build_router(mock_base_url)));
                    ready_tx.send((addrs, schedstat, pinned)).unwrap();
                    let _ = stop_rx.await;
                    bare.abort();
                    router.abort();
                });
            })
            .unwrap();
        let ((bare, router), schedstat, pinned) = ready_rx.await.unwrap();
        Self {
            bare,
            router,
            schedstat,
            pinned,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn build_router(mock_base_url: String) -> AiRouter<MemoryKeyStore> {
    AiRouter::builder()
        .mount_path(MOUNT)
        .keys(MemoryKeyStore::new().with_key(ROUTER_KEY, Principal::new("bench")))
        .provider(
            "mock",
            HttpProvider::builder(mock_base_url)
                .api_key(PROVIDER_KEY)
                .build()
                .unwrap(),
        )
        .models("mock", ["gpt-4o-mini"])
        .build()
        .unwrap()
}

/// Serves the router with plain hyper (as a host would).
async fn serve_router(listener: TcpListener, router: AiRouter<MemoryKeyStore>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The bare pass-through proxy: the same server setup as the router's, and a pooled client
/// set up like the router's provider client (HTTP/1.1 keep-alive, TCP_NODELAY). It forwards
/// method, path, headers and the streamed body, and streams the answer back. Nothing else.
async fn serve_bare(listener: TcpListener, upstream: SocketAddr) {
    let authority = Authority::try_from(upstream.to_string()).unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (client, authority) = (client.clone(), authority.clone());
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let client = client.clone();
            let mut parts = request.uri().clone().into_parts();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority.clone());
            async move {
                match Uri::from_parts(parts) {
                    Ok(uri) => *request.uri_mut() = uri,
                    Err(_) => return Ok(status_only(StatusCode::BAD_REQUEST)),
                }
                Ok::<_, Infallible>(match client.request(request).await {
                    Ok(response) => response.map(|body| body.boxed()),
                    Err(_) => status_only(StatusCode::BAD_GATEWAY),
                })
            }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn status_only(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(
        http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

// ------------------------------------------------------------------------------ report

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// `rounds[round][target]` for one scenario.
type Rounds = Vec<[Run; TARGETS.len()]>;

fn med(rounds: &Rounds, target: Target, field: impl Fn(&Run) -> f64) -> f64 {
    let index = TARGETS.iter().position(|t| *t == target).unwrap_or(0);
    median(rounds.iter().map(|round| field(&round[index])).collect())
}

/// The median over rounds of a per-round comparison of two targets (the rounds are
/// interleaved, so each round's pair saw the same machine state).
fn paired(
    rounds: &Rounds,
    a: Target,
    b: Target,
    field: impl Fn(&Run) -> f64,
    combine: impl Fn(f64, f64) -> f64,
) -> f64 {
    let (ia, ib) = (a as usize, b as usize);
    median(
        rounds
            .iter()
            .map(|round| combine(field(&round[ia]), field(&round[ib])))
            .collect(),
    )
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

fn diff(a: f64, b: f64) -> f64 {
    a - b
}

fn fmt_opt(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".to_owned()
    }
}

fn verdict(value: f64, met: bool, detail: String) -> String {
    if value.is_nan() {
        "not measured".to_owned()
    } else if met {
        format!("met ({detail})")
    } else {
        format!("MISSED ({detail})")
    }
}

fn report(results: &[(Scenario, Rounds)], full: bool) -> String {
    let mut out = String::new();
    let cpu = |r: &Run| r.proxy_cpu_us.unwrap_or(f64::NAN);
    let _ = writeln!(
        out,
        "| scenario | target | p50 µs | p99 µs | rps | TTFB p50 µs | TTFB p99 µs | proxy CPU µs/req | errors |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (scenario, rounds) in results {
        for target in TARGETS {
            let errors: usize = rounds.iter().map(|r| r[target as usize].errors).sum();
            let (ttfb50, ttfb99) = if scenario.stream {
                (
                    med(rounds, target, |r| r.ttfb_p50_us),
                    med(rounds, target, |r| r.ttfb_p99_us),
                )
            } else {
                (f64::NAN, f64::NAN)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                scenario.name,
                target.name(),
                fmt_opt(med(rounds, target, |r| r.p50_us), 1),
                fmt_opt(med(rounds, target, |r| r.p99_us), 1),
                fmt_opt(med(rounds, target, |r| r.rps), 0),
                fmt_opt(ttfb50, 1),
                fmt_opt(ttfb99, 1),
                fmt_opt(med(rounds, target, cpu), 1),
                errors,
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | proxy | /bare p50 | − bare p50 µs | /bare p99 | /bare rps | /bare proxy CPU | − bare TTFB p50 µs |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    let bare = Target::Bare;
    for (scenario, rounds) in results {
        for proxy in PROXIES {
            let p50 = |r: &Run| r.p50_us;
            let ttfb = if scenario.stream {
                paired(rounds, proxy, bare, |r| r.ttfb_p50_us, diff)
            } else {
                f64::NAN
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                scenario.name,
                proxy.name(),
                fmt_opt(paired(rounds, proxy, bare, p50, ratio), 2),
                fmt_opt(paired(rounds, proxy, bare, p50, diff), 1),
                fmt_opt(paired(rounds, proxy, bare, |r| r.p99_us, ratio), 2),
                fmt_opt(paired(rounds, proxy, bare, |r| r.rps, ratio), 2),
                fmt_opt(paired(rounds, proxy, bare, cpu, ratio), 2),
                fmt_opt(ttfb, 1),
            );
        }
    }
    let _ = writeln!(out);
    if !full {
        let _ = writeln!(
            out,
            "smoke run (no `--bench`): a check that every target works, not a measurement"
        );
        return out;
    }
    let find = |concurrency: usize, stream: bool| {
        results
            .iter()
            .find(|(s, _)| s.concurrency == concurrency && s.stream == stream)
            .map(|(_, rounds)| rounds)
    };
    let (gateway, quiet) = (Target::Gateway, Target::GatewayNoLog);
    if let Some(rounds) = find(1, false) {
        let bare_over_direct = paired(rounds, bare, Target::Direct, |r| r.p50_us, diff);
        let _ = writeln!(
            out,
            "measured  bare proxy over direct p50 (c=1): {bare_over_direct:.1} µs"
        );
        let over = paired(rounds, gateway, bare, |r| r.p50_us, diff);
        let _ = writeln!(
            out,
            "target  gateway over bare <= 15 µs p50 (c=1): {}",
            verdict(over, over <= 15.0, format!("{over:.1} µs"))
        );
    }
    if let Some(rounds) = find(1, false) {
        let over = paired(rounds, Target::GatewayTelemetry, quiet, |r| r.p50_us, diff);
        let _ = writeln!(
            out,
            "target  telemetry on (OTLP, metrics, JSON log) over off <= 5 µs p50 (c=1): {}",
            verdict(over, over <= 5.0, format!("{over:.1} µs"))
        );
    }
    if let Some(rounds) = find(64, false) {
        for (proxy, floor) in [
            (gateway, 0.8),
            (quiet, 0.9),
            (Target::GatewayTelemetry, 0.85),
        ] {
            let rps = paired(rounds, proxy, bare, |r| r.rps, ratio);
            let capacity = paired(rounds, bare, proxy, cpu, ratio);
            let _ = writeln!(
                out,
                "target  {} rps >= {floor}x bare (c=64): {}; proxy-core capacity (1/CPU per request) /bare {}",
                proxy.name(),
                verdict(rps, rps >= floor, format!("{rps:.2}x")),
                fmt_opt(capacity, 2)
            );
        }
    }
    if let Some(rounds) = find(1, true) {
        let ttfb = paired(rounds, gateway, bare, |r| r.ttfb_p50_us, diff);
        let _ = writeln!(
            out,
            "target  gateway TTFB over bare <= 20 µs p50 (stream): {}",
            verdict(ttfb, ttfb <= 20.0, format!("{ttfb:.1} µs"))
        );
        let total = paired(rounds, gateway, bare, |r| r.p50_us, diff);
        let _ = writeln!(
            out,
            "target  gateway stream total over bare <= 50 µs p50: {}",
            verdict(total, total <= 50.0, format!("{total:.1} µs"))
        );
    }
    out
}

/// The two gateway processes under test.
struct Gateways {
    logged: common::gateway::GatewayProcess,
    quiet: common::gateway::GatewayProcess,
    telemetry: common::gateway::GatewayProcess,
}

/// (busy ticks of the whole machine, ticks of this process) from `/proc` (Linux), to tell
/// how much CPU other processes took during the run.
fn cpu_ticks(children: &[u32]) -> Option<(u64, u64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    // This process and the gateway processes it started are the run itself.
    let mut own = 0;
    for pid in std::iter::once("self".to_owned()).chain(children.iter().map(u32::to_string)) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        own += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some((busy, own, cpus))
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs, {model}")
}

// ------------------------------------------------------------------------------ main

async fn run(
    full: bool,
    rounds: usize,
    selected: &[Target],
    machine: &str,
    proxy_core: Option<CoreId>,
    load_pinned: bool,
) {
    let mock = MockUpstream::builder()
        .api_key(PROVIDER_KEY)
        .keep_requests(0)
        .start()
        .await
        .unwrap();
    let proxies = Proxies::start(mock.addr(), mock.base_url(), proxy_core).await;
    let binary = common::gateway::build(full).unwrap_or_else(|e| panic!("{e}"));
    let cpu = proxy_core.map(|core| core.id);
    // A live OTLP/HTTP collector for the telemetry target (it accepts and drops the spans).
    let collector = common::gateway::start_collector().await;
    let start = |telemetry: &str| {
        common::gateway::GatewayProcess::start(&binary, &mock.base_url(), telemetry, cpu)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let gateways = Gateways {
        logged: start(r#"access_log = "text""#),
        quiet: start(r#"access_log = "off""#),
        telemetry: start(&format!(
            "access_log = \"json\"\notlp_endpoint = \"http://{collector}\""
        )),
    };
    let addrs = Addrs {
        mock: mock.addr(),
        bare: proxies.bare,
        router: proxies.router,
        gateway: gateways.logged.addr,
        gateway_nolog: gateways.quiet.addr,
        gateway_telemetry: gateways.telemetry.addr,
    };
    println!(
        "e2e: {machine}; pinning: load generator + mock {}, proxies {}; {rounds} round(s)",
        if load_pinned { "on core A" } else { "unpinned" },
        if proxies.pinned {
            "on core B"
        } else {
            "unpinned"
        },
    );
    let client = load_client();
    // Every target answers before anything is timed.
    for target in TARGETS {
        for stream in [false, true] {
            let shot = Shot::new(target, &addrs, stream);
            if let Err(error) = exchange(&client, &shot).await {
                panic!("{} does not answer: {error}", target.name());
            }
        }
    }
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned());
    let children = [
        gateways.logged.pid(),
        gateways.quiet.pid(),
        gateways.telemetry.pid(),
    ];
    let ticks_before = cpu_ticks(&children);
    let started = Instant::now();
    let mut results = Vec::new();
    for scenario in scenarios(full) {
        let mut all: Rounds = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let mut runs = [Run::SKIPPED; TARGETS.len()];
            for (i, target) in TARGETS.into_iter().enumerate() {
                if selected.contains(&target) {
                    runs[i] =
                        measure(&client, &scenario, target, &addrs, &proxies, &gateways).await;
                }
            }
            println!(
                "e2e: {} round {}/{rounds}: p50 µs direct {:.1} / bare {:.1} / router {:.1} / gateway {:.1} / no log {:.1}",
                scenario.name,
                round + 1,
                runs[0].p50_us,
                runs[1].p50_us,
                runs[2].p50_us,
                runs[3].p50_us,
                runs[4].p50_us,
            );
            all.push(runs);
        }
        results.push((scenario, all));
    }
    let completed: usize = results
        .iter()
        .flat_map(|(_, rounds)| rounds.iter().flatten())
        .map(|run| run.completed)
        .sum();
    let elapsed = started.elapsed();
    let others = match (ticks_before, cpu_ticks(&children)) {
        (Some((busy0, own0, _)), Some((busy1, own1, cpus))) => {
            let cpus = cpus.max(1) as f64;
            // Ticks are 1/100 s on Linux.
            let other = (busy1 - busy0).saturating_sub(own1 - own0) as f64 / 100.0;
            format!(
                "{:.0}% of the CPUs",
                100.0 * other / (elapsed.as_secs_f64() * cpus)
            )
        }
        _ => "unknown".to_owned(),
    };
    println!(
        "\ne2e summary: medians over {rounds} round(s), {completed} measured requests in {:.1} s ({machine}); \
         load average before: {load_average}; other processes used {others} during the run\n",
        elapsed.as_secs_f64(),
    );
    println!("{}", report(&results, full));
    drop(gateways);
    drop(proxies);
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) this is a smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let rounds = std::env::var("E2E_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r: &usize| *r > 0)
        .unwrap_or(if full { 15 } else { 1 });
    // Read before pinning: a pinned thread sees one CPU.
    let machine = machine();
    // `E2E_TARGETS=router` (or `direct,bare`...) measures only these, e.g. under a profiler.
    let selected: Vec<Target> = match std::env::var("E2E_TARGETS") {
        Ok(list) => TARGETS
            .into_iter()
            .filter(|t| list.split(',').any(|n| n.trim() == t.key()))
            .collect(),
        Err(_) => TARGETS.to_vec(),
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let pin = cores.len() >= 2 && std::env::var_os("E2E_NO_PIN").is_none();
    // The load generator and the mock run on this thread; the proxies on their own.
    let load_pinned = pin && core_affinity::set_for_current(cores[0]);
    let proxy_core = if pin { Some(cores[1]) } else { None };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(
        full,
        rounds,
        &selected,
        &machine,
        proxy_core,
        load_pinned,
    ));
}

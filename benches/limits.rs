//! The cost of fleet limits: the same router, over loopback TCP, in front of the same mock
//! upstream, with its key's limits (`rpm` + `max_concurrent`, never reached) kept in process
//! (`memory`) or in Redis (`redis`: `RedisLimiter`, one `EVALSHA` per request, a release per
//! answer through its background task).
//!
//! Starts its own `redis-server` on a free loopback port (no persistence) and kills it by pid
//! at the end; without `redis-server` on the `PATH` it says so and measures nothing.
//!
//! Figures: p50 per request at concurrency 1, and throughput at concurrency 64 (a pooled
//! HTTP/1.1 keep-alive hyper client), the backends interleaved round by round; each figure is
//! the median over rounds, then the Redis backend's p50 added and throughput ratio. Bounded in
//! requests and in time per run.
//!
//! `cargo bench --features redis --bench limits` (`LIMITS_ROUNDS` overrides the 7 rounds);
//! run without `--bench` (e.g. `cargo test --all-features --benches`) it does a short smoke run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ai_router::AiRouter;
use ai_router::auth::{InProcessLimiter, KeyLimiter, MemoryKeyStore, Principal, RedisLimiter};
use ai_router::mock::MockUpstream;
use ai_router::provider::HttpProvider;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const ROUTER_KEY: &str = "sk-router-bench-key";
const PROVIDER_KEY: &str = "sk-mock-upstream";
const MOUNT: &str = "/v3/router";
const CHAT: &str = r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku about a router."}]}"#;
/// The longest one exchange may take before it counts as an error.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests per run: (warm-up, c=1, c=64), full and smoke.
const FULL: (usize, usize, usize) = (300, 2000, 10_000);
const SMOKE: (usize, usize, usize) = (20, 50, 200);
/// The longest one run may take.
const RUN_CAP: Duration = Duration::from_secs(20);

/// The tests' `redis-server` harness (free loopback port, no persistence, killed by pid).
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/redis/server.rs"]
mod server;
use server::RedisServer;

/// Whether `redis-server` can be run at all.
fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The bench key: limits it never reaches (`LIMITS_RPM_ONLY=1`: no `max_concurrent`, so no
/// lease to take and release).
fn bench_principal() -> Principal {
    let rpm_only = std::env::var_os("LIMITS_RPM_ONLY").is_some();
    Principal::new("bench")
        .rpm(10_000_000)
        .max_concurrent(if rpm_only { 0 } else { 1024 })
}

/// A router whose one key has limits it never reaches, with `limiter`, served on loopback.
async fn serve<L: KeyLimiter>(upstream: &MockUpstream, limiter: L) -> SocketAddr {
    let principal = bench_principal();
    let router = AiRouter::builder()
        .mount_path(MOUNT)
        .keys(MemoryKeyStore::new().with_key(ROUTER_KEY, principal))
        .limiter(limiter)
        .provider(
            "mock",
            HttpProvider::builder(upstream.base_url())
                .api_key(PROVIDER_KEY)
                .build()
                .unwrap(),
        )
        .models("mock", ["gpt-4o-mini"])
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

type LoadClient = Client<HttpConnector, Full<Bytes>>;

fn load_client() -> LoadClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn exchange(client: &LoadClient, addr: SocketAddr) -> Result<Duration, String> {
    let request = Request::post(format!("http://{addr}{MOUNT}/chat/completions"))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap();
    let start = Instant::now();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!("status {status}"));
    }
    Ok(start.elapsed())
}

/// Sends `requests` requests (or until [`RUN_CAP`]) from `concurrency` workers: the latencies,
/// the errors and the wall time.
async fn load(
    client: &LoadClient,
    addr: SocketAddr,
    concurrency: usize,
    requests: usize,
) -> (Vec<Duration>, usize, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + RUN_CAP;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), Arc::clone(&next));
        workers.spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0;
            while next.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < deadline {
                match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(&client, addr)).await {
                    Ok(Ok(sample)) => samples.push(sample),
                    Ok(Err(error)) => {
                        if errors == 0 {
                            eprintln!("limits: first error: {error}");
                        }
                        errors += 1;
                    }
                    Err(_) => errors += 1,
                }
            }
            (samples, errors)
        });
    }
    let (mut samples, mut errors) = (Vec::with_capacity(requests), 0);
    while let Some(joined) = workers.join_next().await {
        let (mut worker, worker_errors) = joined.unwrap();
        samples.append(&mut worker);
        errors += worker_errors;
    }
    (samples, errors, start.elapsed())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One backend's figures over the rounds.
#[derive(Default)]
struct Figures {
    p50_us: Vec<f64>,
    rps: Vec<f64>,
    errors: usize,
}

async fn run() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (warmup, single, many) = if full { FULL } else { SMOKE };
    let rounds: usize = if full {
        std::env::var("LIMITS_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(7)
    } else {
        1
    };
    if !redis_installed() {
        eprintln!("limits: redis-server is not installed (apt-get install redis-server): skipped");
        return;
    }
    let redis = RedisServer::start().await;
    let upstream = MockUpstream::builder()
        .api_key(PROVIDER_KEY)
        .start()
        .await
        .unwrap();
    let limiter = RedisLimiter::builder(redis.url()).build().unwrap();
    let backends = [
        ("memory", serve(&upstream, InProcessLimiter::new()).await),
        ("redis", serve(&upstream, limiter.clone()).await),
    ];
    let client = load_client();
    let mut figures: [Figures; 2] = Default::default();
    for round in 0..rounds {
        for ((_, addr), figures) in backends.iter().zip(&mut figures) {
            let (_, warmup_errors, _) = load(&client, *addr, 1, warmup).await;
            let (mut samples, errors, _) = load(&client, *addr, 1, single).await;
            samples.sort_unstable();
            let p50 = samples
                .get(samples.len() / 2)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6);
            let (samples64, errors64, wall) = load(&client, *addr, 64, many).await;
            figures.p50_us.push(p50);
            figures
                .rps
                .push(samples64.len() as f64 / wall.as_secs_f64());
            figures.errors += warmup_errors + errors + errors64;
        }
        eprintln!("limits: round {} of {rounds} done", round + 1);
    }
    // The check alone, without HTTP: one `admit` (and the permit's drop) after another.
    let principal = bench_principal();
    let key = ai_router::auth::ApiKeyDigest::of(ROUTER_KEY);
    let mut alone = Vec::with_capacity(single);
    for _ in 0..single {
        let start = Instant::now();
        let admission = limiter.admit(&key, &principal).await;
        alone.push(start.elapsed().as_secs_f64() * 1e6);
        assert!(admission.is_ok_and(|a| !a.is_unchecked()));
    }
    let alone_p50 = median(&mut alone);
    assert!(!limiter.is_backend_down(), "Redis failed during the bench");
    let [memory, redis_figures] = &mut figures;
    let (memory_p50, redis_p50) = (
        median(&mut memory.p50_us),
        median(&mut redis_figures.p50_us),
    );
    let (memory_rps, redis_rps) = (median(&mut memory.rps), median(&mut redis_figures.rps));
    println!("limits ({rounds} rounds, medians; loopback TCP, mock upstream)");
    println!("backend   p50 c=1 (us)   req/s c=64   errors");
    for ((name, _), (p50, rps, errors)) in backends.iter().zip([
        (memory_p50, memory_rps, memory.errors),
        (redis_p50, redis_rps, redis_figures.errors),
    ]) {
        println!("{name:<9} {p50:>12.1} {rps:>12.0} {errors:>8}");
    }
    println!(
        "redis vs memory: p50 +{:.1} us ({:.2}x), throughput {:.2}x",
        redis_p50 - memory_p50,
        redis_p50 / memory_p50,
        redis_rps / memory_rps
    );
    println!("redis admit alone (no HTTP, c=1): p50 {alone_p50:.1} us");
    drop(redis);
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

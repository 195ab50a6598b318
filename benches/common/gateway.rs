//! The shipped gateway binary as a bench target: built with cargo, started as its own process
//! with a config file in the documented format, stopped by its pid. What users run, measured
//! beside the in-process stacks: its own runtime, socket options and logging as shipped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{PROVIDER_KEY, ROUTER_KEY};

/// A running gateway process; killed (by its pid) when dropped.
pub(crate) struct GatewayProcess {
    child: Child,
    pub(crate) addr: SocketAddr,
    _config: TempFile,
}

/// Builds the gateway example (release for a full run, the test build's debug otherwise) and
/// returns its path.
pub(crate) fn build(release: bool) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "--example",
        "gateway",
        // With the OTLP export compiled in, so one binary serves every gateway target.
        "--features",
        "otel",
        "--manifest-path",
        manifest,
    ]);
    if release {
        command.arg("--release");
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the gateway failed: {status}"));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("examples")
        .join("gateway"))
}

/// A free loopback port (bound, then released).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl GatewayProcess {
    /// Starts `binary` with a generated config routing `mock/*` to `mock_base_url`, with
    /// `telemetry` as its `[telemetry]` table (the access log as shipped, off, or everything
    /// on). `cpu`: pin the process to this CPU with `taskset`
    /// when available. Waits until `/ready` answers.
    pub(crate) fn start(
        binary: &PathBuf,
        mock_base_url: &str,
        telemetry: &str,
        cpu: Option<usize>,
    ) -> Result<Self, String> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = TempFile::new(&format!(
            r#"listen = "{addr}"
mount = "/v3/router"

[[keys]]
name = "bench"
key_env = "AI_ROUTER_BENCH_KEY"

[providers.mock]
base_url = "{mock_base_url}"
api_key_env = "AI_ROUTER_BENCH_PROVIDER_KEY"
models = ["gpt-4o-mini"]

[telemetry]
{telemetry}
"#
        ))?;
        let taskset = cpu.filter(|_| Command::new("taskset").arg("-V").output().is_ok());
        let mut command = match taskset {
            Some(cpu) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpu.to_string()).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        // Logs go where a service manager would send them: not a terminal (no colours).
        command
            .arg("--config")
            .arg(&config.path)
            .env("AI_ROUTER_BENCH_KEY", ROUTER_KEY)
            .env("AI_ROUTER_BENCH_PROVIDER_KEY", PROVIDER_KEY)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut process = Self {
            child,
            addr,
            _config: config,
        };
        process.wait_ready()?;
        Ok(process)
    }

    /// Polls `GET /ready` until it answers 200 (bounded: 10 s).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the gateway exited: {status}"));
            }
            if ready(self.addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("the gateway did not become ready in 10 s".to_owned())
    }

    /// The process id, for its CPU time.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /ready` answers 200 (one blocking exchange, 1 s at most).
fn ready(addr: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200")
}

/// CPU time used so far by every thread of process `pid` (Linux `schedstat`, nanoseconds).
pub(crate) fn process_cpu(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// A file removed when dropped.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new(text: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!(
            "ai-router-bench-{}-{}.toml",
            std::process::id(),
            free_port()?
        ));
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A live OTLP/HTTP collector on a loopback port that accepts every export and drops it:
/// what the gateway's exporter talks to in the telemetry-on target.
pub(crate) async fn start_collector() -> SocketAddr {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind the collector: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the collector address: {e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::new()),
                        ))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    addr
}

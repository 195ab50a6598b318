//! The gateway's own serving code over TCP: socket options, timeouts, caps, the access log,
//! shutdown. (The router itself is tested in `tests/it`.)

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_router::mock::{MockUpstream, ScriptedResponse};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

use super::Gateway;
use crate::config::Config;

/// How long any one exchange may take before the test fails.
pub(super) const PATIENCE: Duration = Duration::from_secs(5);

/// What the access log wrote.
#[derive(Clone, Default)]
pub(super) struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    pub(super) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A running gateway on 127.0.0.1:0 with `extra` TOML after the demo key and provider.
struct Running {
    addr: std::net::SocketAddr,
    /// `[telemetry] metrics_listen`'s bound address.
    metrics_addr: Option<std::net::SocketAddr>,
    state: Arc<crate::serve::ServerState>,
    log: Lines,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

const DEMO_KEY: &str = "sk-router-demo";

async fn start(extra: &str) -> Running {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
shutdown_grace_secs = 5
[[keys]]
name = "demo"
key_sha256 = "536358db99f32f74c819f261b16d778ab5f05118e8548f4bb21c0a53991aee35"
[providers.demo]
mock = true
stream_usage = true
{extra}
"#
    );
    let config = Config::parse(&text).unwrap();
    let log = Lines::default();
    let gateway = Gateway::start(config, log.clone()).await.unwrap();
    let (addr, state) = (gateway.addr, gateway.state.clone());
    let metrics_addr = gateway.metrics_addr;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        metrics_addr,
        state,
        log,
        stop: Some(stop),
        task,
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `request` raw on a new connection and reads until the server closes it.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the exchange timed out")
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {DEMO_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

pub(super) fn chat(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    )
}

#[tokio::test]
async fn accepted_sockets_have_tcp_nodelay() {
    let gateway = start("").await;
    for _ in 0..3 {
        let answer = exchange(
            gateway.addr,
            &post("/v3/router/chat/completions", &chat("demo/m", true)),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("data: [DONE]"), "{answer}");
    }
    let accepted = gateway
        .state
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    let nodelay = gateway
        .state
        .nodelay
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(accepted, 3);
    assert_eq!(
        nodelay, accepted,
        "TCP_NODELAY read back on every accepted socket"
    );
}

#[tokio::test]
async fn a_connection_that_sends_half_its_headers_is_closed() {
    let gateway = start("[server]\nheader_read_timeout_secs = 1").await;
    let run = async {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream
            .write_all(b"POST /v3/router/chat/completions HTTP/1.1\r\nHost: gw\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        // The server closes the connection (no answer can be made of half a head).
        stream.read_to_end(&mut rest).await.map(|_| rest)
    };
    let closed = tokio::time::timeout(PATIENCE, run).await;
    assert!(closed.is_ok(), "the half-open connection was not closed");
    // An idle keep-alive connection (no request at all) goes the same way.
    let idle = async {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.map(|_| rest)
    };
    assert!(tokio::time::timeout(PATIENCE, idle).await.is_ok());
}

#[tokio::test]
async fn past_the_in_flight_cap_requests_are_shed_with_503_and_retry_after() {
    let upstream = MockUpstream::builder().no_auth().start().await.unwrap();
    let gate = Arc::new(Notify::new());
    upstream.script(
        ScriptedResponse::stream(["data: {\"a\":1}\n\n", "data: [DONE]\n\n"])
            .gate_before(1, gate.clone()),
    );
    let gateway = start(&format!(
        "[providers.slow]\nbase_url = \"{}\"\nauth = \"none\"\n[server]\nmax_in_flight = 1",
        upstream.base_url()
    ))
    .await;
    // A stream that holds its slot until the gate opens.
    let mut held = TcpStream::connect(gateway.addr).await.unwrap();
    held.write_all(post("/v3/router/chat/completions", &chat("slow/m", true)).as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, held.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    let shed = exchange(
        gateway.addr,
        &post("/v3/router/chat/completions", &chat("demo/m", false)),
    )
    .await;
    assert!(shed.starts_with("HTTP/1.1 503"), "{shed}");
    assert!(
        shed.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{shed}"
    );
    assert!(shed.contains("\"code\":\"overloaded\""), "{shed}");

    gate.notify_one();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, held.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    let after = exchange(
        gateway.addr,
        &post("/v3/router/chat/completions", &chat("demo/m", false)),
    )
    .await;
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");
}

#[tokio::test]
async fn one_json_access_line_per_request_without_the_key() {
    let gateway = start("[telemetry]\naccess_log = \"json\"").await;
    let answer = exchange(
        gateway.addr,
        &post(
            "/v3/router/chat/completions",
            &chat("demo/gpt-4o-mini", true),
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"));
    let refused = exchange(
        gateway.addr,
        "GET /v3/router/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-wrong-key-1234\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"));
    let outside = exchange(
        gateway.addr,
        "GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(outside.starts_with("HTTP/1.1 200"), "{outside}");

    let text = gateway.log.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let stream = &lines[0];
    assert_eq!(stream["key"], "demo");
    assert_eq!(stream["status"], 200);
    assert_eq!(stream["outcome"], "completed");
    assert_eq!(stream["model"], "gpt-4o-mini");
    assert!(stream["input_tokens"].as_u64().unwrap() > 0, "{stream}");
    assert!(stream["first_byte_us"].is_u64(), "{stream}");
    assert_eq!(lines[1]["status"], 401);
    assert!(lines[1].get("key").is_none());
    assert_eq!(lines[2]["path"], "/health");
    for line in &lines {
        assert!(line["id"].as_str().unwrap().starts_with("req_"));
    }
    // Neither the router key, nor what was presented, nor the provider key.
    assert!(
        !text.contains(DEMO_KEY)
            && !text.contains("sk-wrong")
            && !text.contains("sk-demo-upstream")
    );
}

#[tokio::test]
async fn shutdown_lets_a_stream_in_flight_finish() {
    let upstream = MockUpstream::builder().no_auth().start().await.unwrap();
    let gate = Arc::new(Notify::new());
    upstream.script(
        ScriptedResponse::stream(["data: {\"a\":1}\n\n", "data: [DONE]\n\n"])
            .gate_before(1, gate.clone()),
    );
    let mut gateway = start(&format!(
        "[providers.slow]\nbase_url = \"{}\"\nauth = \"none\"",
        upstream.base_url()
    ))
    .await;
    let ready = exchange(
        gateway.addr,
        "GET /ready HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains(r#""status":"ready""#), "{ready}");
    let mut held = TcpStream::connect(gateway.addr).await.unwrap();
    held.write_all(post("/v3/router/chat/completions", &chat("slow/m", true)).as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 64];
    tokio::time::timeout(PATIENCE, held.read(&mut first))
        .await
        .unwrap()
        .unwrap();

    let _ = gateway.stop.take().unwrap().send(());
    // Draining: new connections are no longer accepted, the stream in flight goes on.
    tokio::time::timeout(PATIENCE, async {
        while !gateway
            .state
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    gate.notify_one();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, held.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    tokio::time::timeout(PATIENCE, &mut gateway.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn ready_answers_503_once_draining() {
    use tower::Service as _;
    let state = Arc::new(crate::serve::ServerState::default());
    let mut outside = crate::serve::Outside::new(state.clone());
    let request = || http::Request::get("/ready").body(()).unwrap();
    let ok = outside.call(request()).await.unwrap();
    assert_eq!(ok.status(), 200);
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let draining = outside.call(request()).await.unwrap();
    assert_eq!(draining.status(), 503);
    let health = outside
        .call(http::Request::get("/health").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "alive while draining");
}

#[tokio::test]
async fn a_configured_alias_falls_back_and_cools_the_failing_provider_down() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let gateway = start(&format!(
        r#"
[telemetry]
access_log = "json"
[providers.down]
base_url = "http://127.0.0.1:{port}/v1"
auth = "none"
cooldown = {{ failures = 1, secs = 60 }}
[models."smart"]
targets = ["down/gpt-4o-mini", "demo/gpt-4o-mini"]
retry = {{ count = 1, on_codes = [503] }}
timeout_ms = 2000
first_byte_timeout_ms = 2000
"#
    ))
    .await;
    let mut attempts = Vec::new();
    for stream in [false, true] {
        let answer = exchange(
            gateway.addr,
            &post("/v3/router/chat/completions", &chat("smart", stream)),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("\r\nx-ai-router-model: demo/gpt-4o-mini\r\n"),
            "{answer}"
        );
        let n = answer
            .split("\r\nx-ai-router-attempts: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .unwrap()
            .to_owned();
        attempts.push(n);
    }
    // The refused connection, retried once, then the demo; then `down` is cooling: skipped.
    assert_eq!(attempts, ["3", "1"]);
    let text = gateway.log.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["attempts"], 3, "{text}");
    assert_eq!(lines[0]["provider"], "demo", "{text}");
}

#[tokio::test]
async fn demo_providers_of_each_kind_answer_in_openai_format() {
    let gateway = start(
        r#"
[providers.claude]
kind = "anthropic"
mock = true
default_max_tokens = 64
[providers.gem]
kind = "gemini"
mock = true
[models."across"]
targets = ["claude/claude-haiku-4-5", "gem/gemini-2.5-flash"]
"#,
    )
    .await;
    for (model, stream) in [
        ("claude/claude-haiku-4-5", false),
        ("claude/claude-haiku-4-5", true),
        ("gem/gemini-2.5-flash", false),
        ("gem/gemini-2.5-flash", true),
        ("across", true),
    ] {
        let answer = exchange(
            gateway.addr,
            &post("/v3/router/chat/completions", &chat(model, stream)),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{model}: {answer}");
        // The mock's answer echoes the question, whichever API it was asked in.
        if stream {
            assert!(answer.contains("text/event-stream"), "{answer}");
            assert!(
                answer.contains("\"object\":\"chat.completion.chunk\""),
                "{answer}"
            );
            assert!(answer.contains("data: [DONE]"), "{answer}");
        } else {
            let body = answer.split("\r\n\r\n").nth(1).unwrap();
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["object"], "chat.completion", "{body}");
            assert!(json["id"].as_str().unwrap().starts_with("chatcmpl-"));
            assert!(
                json["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .contains("hi"),
                "{body}"
            );
        }
    }
    // An endpoint Anthropic lacks: 400 naming the model and the endpoint.
    let answer = exchange(
        gateway.addr,
        &post(
            "/v3/router/embeddings",
            r#"{"model":"claude/claude-haiku-4-5","input":"x"}"#,
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"code\":\"unsupported_endpoint\""),
        "{answer}"
    );
    assert!(answer.contains("claude/claude-haiku-4-5"), "{answer}");
}

/// The value of one series of Prometheus text (`name{labels}` as rendered), if present.
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().unwrap())
    })
}

/// The sum of every series of metric `name`.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
}

/// The router key of `[[keys]] name = "limited"` (rpm = 1).
const LIMITED_KEY: &str = "sk-router-limited";

/// Sends a known set of requests (and one outside the mount), scrapes `/metrics` where
/// `metrics_listen` says, and checks every count.
async fn metrics_count_a_known_set_of_requests(metrics_listen: bool) {
    let listen = if metrics_listen {
        "[telemetry]\nmetrics_listen = \"127.0.0.1:0\""
    } else {
        ""
    };
    let gateway = start(&format!(
        r#"models = ["gpt-4o-mini"]
[[keys]]
name = "limited"
key_sha256 = "d4b64a970797832ea66333e1d1857757dd36116e82e53d409fca5ff973918060"
rpm = 1
{listen}
"#
    ))
    .await;
    let chat_path = "/v3/router/chat/completions";
    let as_limited = |request: String| request.replace(DEMO_KEY, LIMITED_KEY);
    for (request, status) in [
        (post(chat_path, &chat("demo/gpt-4o-mini", false)), 200),
        (post(chat_path, &chat("demo/gpt-4o-mini", true)), 200),
        (
            post(chat_path, &chat("demo/gpt-4o-mini", false)).replace(DEMO_KEY, "sk-wrong-1234"),
            401,
        ),
        (post(chat_path, &chat("no-such-model", false)), 404),
        (
            as_limited(post(chat_path, &chat("demo/gpt-4o-mini", false))),
            200,
        ),
        (
            as_limited(post(chat_path, &chat("demo/gpt-4o-mini", false))),
            429,
        ),
        (get("/health"), 200),
    ] {
        let answer = exchange(gateway.addr, &request).await;
        let head = format!("HTTP/1.1 {status} ");
        assert!(answer.starts_with(&head), "{request}\n{answer}");
    }

    let (at, elsewhere) = match gateway.metrics_addr {
        Some(own) => (own, Some(gateway.addr)),
        None => (gateway.addr, None),
    };
    assert_eq!(gateway.metrics_addr.is_some(), metrics_listen);
    let scrape = exchange(at, &get("/metrics")).await;
    assert!(scrape.starts_with("HTTP/1.1 200 "), "{scrape}");
    assert!(
        scrape.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{scrape}"
    );
    let text = scrape.split("\r\n\r\n").nth(1).unwrap();

    let requests = |labels: &str| series(text, &format!("ai_router_requests_total{{{labels}}}"));
    let gpt = r#"provider="demo",model="gpt-4o-mini""#;
    assert_eq!(
        requests(&format!(r#"status="200",{gpt},key="demo""#)),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        requests(&format!(r#"status="200",{gpt},key="limited""#)),
        Some(1.0),
        "{text}"
    );
    let alone = r#"provider="none",model="none""#;
    assert_eq!(
        requests(&format!(r#"status="401",{alone},key="none""#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        requests(&format!(r#"status="404",{alone},key="demo""#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        requests(&format!(r#"status="429",{alone},key="limited""#)),
        Some(1.0),
        "{text}"
    );
    // The router's requests only: `/health` (and the scrape) are not counted.
    assert_eq!(total(text, "ai_router_requests_total"), 6.0, "{text}");
    assert_eq!(
        total(text, "gen_ai_server_request_duration_seconds_count"),
        6.0
    );
    assert_eq!(
        series(text, r#"ai_router_rate_limited_total{key="limited"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(total(text, "ai_router_rate_limited_total"), 1.0);
    assert_eq!(
        series(text, r#"ai_router_upstream_attempts_total{outcome="ok"}"#),
        Some(3.0)
    );
    assert_eq!(
        series(
            text,
            r#"ai_router_upstream_attempts_total{outcome="failed"}"#
        ),
        Some(0.0)
    );
    assert_eq!(series(text, "ai_router_in_flight"), Some(0.0), "{text}");

    let chat = r#"gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="gpt-4o-mini""#;
    let ok = format!("gen_ai_server_request_duration_seconds_count{{{chat}}}");
    assert_eq!(series(text, &ok), Some(3.0), "{text}");
    let failed = |error: &str| {
        let labels = format!(
            r#"gen_ai_operation_name="{op}",gen_ai_provider_name="none",gen_ai_request_model="none",error_type="{error}""#,
            op = if error == "404" { "chat" } else { "none" },
        );
        series(
            text,
            &format!("gen_ai_server_request_duration_seconds_count{{{labels}}}"),
        )
    };
    assert_eq!(
        (failed("401"), failed("404"), failed("429")),
        (Some(1.0), Some(1.0), Some(1.0)),
        "{text}"
    );
    // One stream: one time to first token.
    let ttft = format!("gen_ai_server_time_to_first_token_seconds_count{{{chat}}}");
    assert_eq!(series(text, &ttft), Some(1.0), "{text}");
    assert_eq!(
        total(text, "gen_ai_server_time_to_first_token_seconds_count"),
        1.0
    );
    // Each of the three answers reported its usage.
    for token_type in ["input", "output"] {
        let usage =
            format!("gen_ai_client_token_usage_count{{{chat},gen_ai_token_type=\"{token_type}\"}}");
        assert_eq!(series(text, &usage), Some(3.0), "{text}");
    }

    // No key, presented or configured, nor the provider's.
    for secret in [
        DEMO_KEY,
        LIMITED_KEY,
        "sk-wrong",
        "sk-demo-upstream",
        "d4b64a97",
    ] {
        assert!(!text.contains(secret), "{secret}");
    }

    if let Some(main) = elsewhere {
        // With its own listener, `/metrics` is not on the main one.
        let answer = exchange(main, &get("/metrics")).await;
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
        let answer = exchange(at, &get("/health")).await;
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    }
    let answer = exchange(at, &post("/metrics", "{}")).await;
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
}

#[tokio::test]
async fn metrics_beside_health_count_a_known_set_of_requests_without_a_key() {
    metrics_count_a_known_set_of_requests(false).await;
}

#[tokio::test]
async fn metrics_on_their_own_listener_count_the_same() {
    metrics_count_a_known_set_of_requests(true).await;
}

/// `[limits] backend = "redis"` with Redis down (a port nothing listens on): the gateway
/// starts, keys without limits never ask Redis, limited keys get what `on_backend_error`
/// says, at once, and an unchecked request is counted.
#[cfg(feature = "redis")]
#[tokio::test]
async fn with_redis_down_limited_keys_get_what_on_backend_error_says() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    for (mode, status) in [("deny", "503"), ("allow", "200")] {
        let gateway = start(&format!(
            r#"models = ["gpt-4o-mini"]
[[keys]]
name = "limited"
key_sha256 = "d4b64a970797832ea66333e1d1857757dd36116e82e53d409fca5ff973918060"
rpm = 100
tpm = 100000
[limits]
backend = "redis"
redis_url = "redis://127.0.0.1:{port}/0"
on_backend_error = "{mode}"
timeout_ms = 100
"#
        ))
        .await;
        let body = chat("demo/gpt-4o-mini", false);
        let limited = format!(
            "POST /v3/router/chat/completions HTTP/1.1\r\nHost: gw\r\n\
             Authorization: Bearer {LIMITED_KEY}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        for _ in 0..3 {
            let answer = exchange(gateway.addr, &limited).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{mode}: {answer}"
            );
            if mode == "deny" {
                assert!(
                    answer.contains(r#""code":"limits_unavailable""#),
                    "{answer}"
                );
            }
            // Unlimited keys are served whatever Redis does.
            let answer = exchange(gateway.addr, &post("/v3/router/chat/completions", &body)).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{mode}: {answer}");
        }
        let metrics = exchange(gateway.addr, &get("/metrics")).await;
        let unchecked = series(
            &metrics,
            r#"ai_router_limits_unchecked_total{key="limited"}"#,
        );
        let expected = if mode == "allow" { Some(3.0) } else { None };
        assert_eq!(unchecked, expected, "{mode}: {metrics}");
    }
}

/// Two gateways with `[limits] backend = "redis"` on one real `redis-server`: a key's rpm
/// holds across both, exactly.
#[cfg(feature = "redis")]
#[tokio::test]
async fn two_gateways_sharing_redis_hold_a_keys_rpm_exactly() {
    let redis = crate::redis_server::RedisServer::start().await;
    let config = format!(
        r#"models = ["gpt-4o-mini"]
[[keys]]
name = "limited"
key_sha256 = "d4b64a970797832ea66333e1d1857757dd36116e82e53d409fca5ff973918060"
rpm = 3
[limits]
backend = "redis"
redis_url = "{}"
on_backend_error = "deny"
"#,
        redis.url()
    );
    let (one, two) = (start(&config).await, start(&config).await);
    let body = chat("demo/gpt-4o-mini", false);
    let limited = format!(
        "POST /v3/router/chat/completions HTTP/1.1\r\nHost: gw\r\n\
         Authorization: Bearer {LIMITED_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut passed = Vec::new();
    for round in 0..8 {
        let gateway = if round % 2 == 0 { &one } else { &two };
        let answer = exchange(gateway.addr, &limited).await;
        if answer.starts_with("HTTP/1.1 200") {
            passed.push(round);
        } else {
            assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
            assert!(
                answer.contains("x-ratelimit-remaining-requests: 0"),
                "{answer}"
            );
        }
    }
    // Each gateway alone would have let 3 through: 6 in all.
    assert_eq!(passed, [0, 1, 2]);
}

/// What `RUST_LOG` lets through, and which filter reads it: the static one unless a directive
/// matches spans or fields.
#[test]
fn rust_log_picks_the_static_filter_unless_it_matches_spans() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;

    use crate::log::{LogFilter, log_filter};

    /// The messages logged at `debug` and `info` on a few targets that get through `rust_log`.
    fn logged(rust_log: Option<&str>) -> String {
        match log_filter(rust_log) {
            LogFilter::Targets(targets) => logged_through(Some(targets), None),
            LogFilter::Env(env) => logged_through(None, Some(*env)),
        }
    }
    fn logged_through(targets: Option<Targets>, env: Option<EnvFilter>) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(targets).with(env).with(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "gateway", "gateway-info");
            tracing::debug!(target: "gateway", "gateway-debug");
            tracing::debug!(target: "ai_router::route", "router-debug");
            tracing::warn!(target: "ai_router::genai", "genai-warn");
            tracing::info_span!(target: "gateway", "request").in_scope(|| {
                tracing::debug!(target: "hyper", "in-request-debug");
            });
            tracing::trace!(target: "ai_router::auth", "auth-trace");
            tracing::error!(target: "hyper::proto", "hyper-error");
        });
        lines.text()
    }
    let shown = |text: &str| {
        [
            "gateway-info",
            "gateway-debug",
            "router-debug",
            "genai-warn",
            "in-request-debug",
        ]
        .into_iter()
        .filter(|m| text.contains(m))
        .collect::<Vec<_>>()
    };

    for unset in [None, Some(""), Some("  "), Some("not a directive ===")] {
        let filter = log_filter(unset);
        assert!(
            matches!(filter, LogFilter::Targets(_)) == (unset != Some("not a directive ===")),
            "{unset:?}: {filter:?}"
        );
        assert_eq!(shown(&logged(unset)), ["gateway-info"], "{unset:?}");
    }
    assert!(matches!(
        log_filter(Some("warn,ai_router=debug")),
        LogFilter::Targets(_)
    ));
    assert_eq!(
        shown(&logged(Some("warn,ai_router=debug"))),
        ["router-debug"],
        "the GenAI target stays off under `ai_router=debug`"
    );
    assert!(matches!(
        log_filter(Some("info,[request]=debug")),
        LogFilter::Env(_)
    ));
    assert_eq!(
        shown(&logged(Some("info,[request]=debug"))),
        ["gateway-info", "in-request-debug"]
    );
    // Where `Targets` reads `RUST_LOG`, it lets through what `EnvFilter` did.
    for spec in [
        "info",
        "warn,ai_router=debug",
        "ai_router",
        "ai_router::route=trace,hyper=off",
        "OFF",
        "trace",
        "debug,gateway=warn",
        "error,ai_router::auth=trace,hyper::proto=error",
    ] {
        let LogFilter::Targets(targets) = log_filter(Some(spec)) else {
            panic!("{spec}: not read by Targets");
        };
        let env = EnvFilter::new(format!("{spec},ai_router::genai=off"));
        assert_eq!(
            logged_through(Some(targets), None),
            logged_through(None, Some(env)),
            "{spec}"
        );
    }
    // Spaces: read by `EnvFilter`, as before (it reads ` gateway` as a target with its space).
    assert!(matches!(
        log_filter(Some("info, gateway=debug")),
        LogFilter::Env(_)
    ));
}

/// The JSON log's span fields read back as `tracing-subscriber`'s own `JsonFields` writes
/// them: every kind of value, escapes, raw identifiers, fields recorded later or again.
#[test]
fn json_span_fields_read_back_as_json_fields_do() {
    use tracing::field::Empty;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use crate::log::JsonSpanFields;

    /// The line logged inside two spans, through the JSON format with `JsonSpanFields` or
    /// with the stock `JsonFields`.
    fn logged(ours: bool) -> serde_json::Value {
        let lines = Lines::default();
        let writer = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .without_time()
            .with_writer(move || writer.clone());
        let layer = if ours {
            layer.fmt_fields(JsonSpanFields).boxed()
        } else {
            layer.boxed()
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let r#type = "raw";
            let outer = tracing::info_span!(
                "request",
                id = %"req_1",
                text = "a \"quoted\"\nline \\ é \u{1}",
                negative = -3i64,
                unsigned = u64::MAX,
                yes = true,
                half = 1.5f64,
                nan = f64::NAN,
                r#type = ?r#type,
                later = Empty,
                again = 1u64,
            );
            outer.record("later", "set later");
            outer.record("again", 2u64);
            let _outer = outer.enter();
            let inner = tracing::info_span!("inner", list = ?["x\ty", "z"], bytes = &b"ab"[..]);
            let _inner = inner.enter();
            let lazy = tracing::info_span!("lazy", value = Empty);
            lazy.record("value", "recorded into an empty object");
            let _lazy = lazy.enter();
            let empty = tracing::info_span!("empty");
            let _empty = empty.enter();
            tracing::info!(target: "gateway", "inside");
        });
        serde_json::from_str(lines.text().trim()).unwrap()
    }

    let (ours, theirs) = (logged(true), logged(false));
    assert_eq!(ours, theirs);
    // Not both empty: the fields are there, with the values recorded last.
    let outer = &ours["spans"][0];
    assert_eq!(outer["text"], "a \"quoted\"\nline \\ é \u{1}");
    assert_eq!(outer["id"], "req_1");
    assert_eq!(outer["type"], "\"raw\"");
    assert_eq!(outer["later"], "set later");
    assert_eq!(outer["again"], 2);
    assert_eq!(outer["unsigned"], u64::MAX);
    assert_eq!(ours["spans"][1]["list"], "[\"x\\ty\", \"z\"]");
    assert_eq!(ours["spans"][2]["value"], "recorded into an empty object");
    assert_eq!(ours["span"]["name"], "empty");
}

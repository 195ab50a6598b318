//! Config reloads over TCP: a gateway started from a config file, the file rewritten and
//! reloaded (through [`Reloader::reload`], and once by a real SIGHUP), real client requests
//! before, during and after.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ai_router::auth::ApiKeyDigest;
use ai_router::mock::{MockUpstream, ScriptedResponse};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::{Config, ConfigError};
use crate::tests::{Lines, PATIENCE};
use crate::{Gateway, Reloader};

/// The router key of `[[keys]] name = NAME` in these configs.
fn secret(name: &str) -> String {
    format!("sk-router-{name}")
}

/// A `[[keys]]` entry named `name` (key [`secret`]`(name)`), with `extra` lines.
fn key(name: &str, extra: &str) -> String {
    let digest = ApiKeyDigest::of(&secret(name)).to_hex();
    format!("[[keys]]\nname = \"{name}\"\nkey_sha256 = \"{digest}\"\n{extra}\n")
}

/// A whole config: the gateway on a free loopback port, the demo mock provider, then `rest`
/// (keys and tables).
fn config(rest: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 1\n\
         [providers.demo]\nmock = true\n{rest}"
    )
}

/// A config file in the temp dir, removed on drop.
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "ai-router-gateway-reload-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let file = Self {
            path: std::env::temp_dir().join(name),
        };
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A gateway serving from a config file.
struct Running {
    addr: std::net::SocketAddr,
    file: ConfigFile,
    reloader: Reloader,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes `text` to a file and starts a gateway from it, as `main` does.
async fn start(text: &str) -> Running {
    let file = ConfigFile::new(text);
    let config = Config::load(&file.path).unwrap();
    let gateway = Gateway::start(config, Lines::default())
        .await
        .unwrap()
        .reloads_from(file.path.clone());
    let (addr, reloader) = (gateway.addr, gateway.reloader());
    let task = tokio::spawn(gateway.serve(std::future::pending()));
    Running {
        addr,
        file,
        reloader,
        task,
    }
}

impl Running {
    /// Rewrites the config file with `text` and reloads it.
    async fn reload(&self, text: &str) -> Result<(), ConfigError> {
        self.file.write(text);
        tokio::time::timeout(PATIENCE, self.reloader.reload())
            .await
            .expect("the reload timed out")
    }

    /// An OpenAI client with the key of `name`.
    fn client(&self, name: &str) -> Client<OpenAIConfig> {
        Client::with_config(
            OpenAIConfig::new()
                .with_api_base(format!("http://{}/v3/router", self.addr))
                .with_api_key(secret(name)),
        )
    }
}

/// One HTTP/1.1 keep-alive connection (hyper's client): requests go one after another on it.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(addr: std::net::SocketAddr) -> Connection {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Connection { sender, driver }
}

impl Connection {
    /// Sends `request` once the previous answer is read; its response head.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        let exchange = async {
            self.sender.ready().await.unwrap();
            self.sender.send_request(request).await.unwrap()
        };
        tokio::time::timeout(PATIENCE, exchange)
            .await
            .expect("no answer in time")
    }

    /// Sends `request` and reads the whole answer: its status and body.
    async fn call(&mut self, request: Request<Full<Bytes>>) -> (StatusCode, String) {
        let response = self.send(request).await;
        let status = response.status();
        (status, body_text(response.into_body()).await)
    }
}

/// The rest of a body, read to its end.
async fn body_text(body: Incoming) -> String {
    let bytes = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the body did not end in time")
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// `POST /v3/router/chat/completions` for `model` with the key of `name`.
fn chat(name: &str, model: &str, stream: bool) -> Request<Full<Bytes>> {
    Request::post("/v3/router/chat/completions")
        .header("host", "gw")
        .header("authorization", format!("Bearer {}", secret(name)))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(crate::tests::chat(model, stream))))
        .unwrap()
}

/// Sends one request on a connection of its own.
async fn call(addr: std::net::SocketAddr, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    connect(addr).await.call(request).await
}

/// A chat completion request for `model`, as the OpenAI SDK sends it.
fn sdk_chat(model: &str) -> async_openai::types::chat::CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_stream_started_before_a_reload_ends_on_the_config_it_started_with() {
    let upstream = MockUpstream::builder().no_auth().start().await.unwrap();
    let gate = Arc::new(Notify::new());
    upstream.script(
        ScriptedResponse::stream([
            "data: {\"n\":1}\n\n",
            "data: {\"n\":2}\n\n",
            "data: [DONE]\n\n",
        ])
        .gate_before(1, gate.clone()),
    );
    let slow = format!(
        "[providers.slow]\nbase_url = \"{}\"\nauth = \"none\"\n",
        upstream.base_url()
    );
    let gateway = start(&config(&format!(
        "{}{}{slow}",
        key("alpha", ""),
        key("beta", "")
    )))
    .await;

    let mut held = connect(gateway.addr).await;
    let response = held.send(chat("alpha", "slow/m", true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: {\"n\":1}\n\n");

    // Mid-stream: the stream's key and provider both go away.
    gateway.reload(&config(&key("beta", ""))).await.unwrap();
    let (status, answer) = call(gateway.addr, chat("alpha", "demo/m", false)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, answer) = call(gateway.addr, chat("beta", "slow/m", false)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(answer.contains("\"code\":\"model_not_found\""), "{answer}");

    gate.notify_one();
    let rest = body_text(body).await;
    assert_eq!(rest, "data: {\"n\":2}\n\ndata: [DONE]\n\n");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_key_removed_by_a_reload_is_refused_even_on_a_kept_alive_connection() {
    let gateway = start(&config(&format!("{}{}", key("alpha", ""), key("beta", "")))).await;
    let mut connection = connect(gateway.addr).await;
    let (status, answer) = connection
        .call(chat("alpha", "demo/gpt-4o-mini", false))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    gateway.reload(&config(&key("beta", ""))).await.unwrap();
    // The next request on the same connection is served by the new config.
    let (status, answer) = connection
        .call(chat("alpha", "demo/gpt-4o-mini", false))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer.contains("\"code\":\"invalid_api_key\""), "{answer}");
    let (status, answer) = connection
        .call(chat("beta", "demo/gpt-4o-mini", true))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.ends_with("data: [DONE]\n\n"), "{answer}");
    match gateway
        .client("alpha")
        .chat()
        .create(sdk_chat("demo/gpt-4o-mini"))
        .await
    {
        Err(OpenAIError::ApiError(error)) => assert_eq!(error.status_code, 401),
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test]
async fn an_alias_added_by_a_reload_routes() {
    let gateway = start(&config(&key("alpha", ""))).await;
    let client = gateway.client("alpha");
    match client.chat().create(sdk_chat("quick")).await {
        Err(OpenAIError::ApiError(error)) => {
            assert_eq!(error.status_code, 404);
            assert_eq!(error.api_error.code.as_deref(), Some("model_not_found"));
        }
        other => panic!("expected a 404, got {other:?}"),
    }

    let alias = "[models.\"quick\"]\ntargets = [\"demo/gpt-4o-mini\"]\n";
    gateway
        .reload(&config(&format!("{}{alias}", key("alpha", ""))))
        .await
        .unwrap();
    let reply = client.chat().create(sdk_chat("quick")).await.unwrap();
    assert_eq!(reply.model, "gpt-4o-mini");
    let content = reply.choices[0].message.content.as_deref().unwrap();
    assert_eq!(content, "mock reply: hi");
    let (status, models) = call(
        gateway.addr,
        Request::get("/v3/router/models")
            .header("authorization", format!("Bearer {}", secret("alpha")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(models.contains("\"id\":\"quick\""), "{models}");
}

#[tokio::test]
async fn a_file_that_fails_to_load_keeps_the_running_config() {
    let gateway = start(&config(&key("alpha", ""))).await;
    let alias = |targets: &str| format!("[models.\"quick\"]\ntargets = [{targets}]\n");
    let beta = key("beta", "");
    for (broken, why) in [
        (format!("{beta}[[keys]\n"), "unclosed array table"),
        (
            format!("{beta}[providers.demo2]\nmock = true\nbase_ur = \"x\"\n"),
            "base_ur",
        ),
        (
            format!("{beta}{}", key("beta", "")),
            "`beta` is used by another key",
        ),
        (format!("{beta}{}", alias("\"ghost/m\"")), "ghost"),
    ] {
        let error = gateway.reload(&config(&broken)).await.unwrap_err();
        assert!(error.to_string().contains(why), "{why}: {error}");
        let (status, answer) = call(gateway.addr, chat("alpha", "demo/m", false)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let (status, _) = call(gateway.addr, chat("beta", "demo/m", false)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
    }
    // No file at all.
    std::fs::remove_file(&gateway.file.path).unwrap();
    let error = gateway.reloader.reload().await.unwrap_err();
    assert!(error.to_string().contains("cannot read config"), "{error}");
    let (status, _) = call(gateway.addr, chat("alpha", "demo/m", false)).await;
    assert_eq!(status, StatusCode::OK);

    // Then a good file goes in.
    gateway
        .reload(&config(&format!("{}{beta}", key("alpha", ""))))
        .await
        .unwrap();
    let (status, answer) = call(gateway.addr, chat("beta", "demo/m", false)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn rpm_state_carries_across_a_reload() {
    let limited = |models: &str| key("limited", &format!("rpm = 2\nmodels = [{models}]"));
    let gateway = start(&config(&format!(
        "{}{}",
        limited("\"demo/*\""),
        key("free", "")
    )))
    .await;
    for _ in 0..2 {
        let (status, answer) = call(gateway.addr, chat("limited", "demo/m", false)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    // The key's other settings change; its rpm does not.
    gateway
        .reload(&config(&format!(
            "{}{}",
            limited("\"demo/*\", \"fast\""),
            key("free", "")
        )))
        .await
        .unwrap();
    let mut connection = connect(gateway.addr).await;
    let response = connection.send(chat("limited", "demo/m", false)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let answer = body_text(response.into_body()).await;
    assert!(
        answer.contains("\"code\":\"rate_limit_exceeded\""),
        "{answer}"
    );
    let (status, _) = call(gateway.addr, chat("free", "demo/m", false)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn settings_that_need_a_restart_keep_their_running_values() {
    let gateway = start(&config(&key("alpha", ""))).await;
    let moved = config(&key("alpha", "")).replace(
        "shutdown_grace_secs = 1\n",
        "shutdown_grace_secs = 1\nmount = \"/v9\"\n",
    );
    gateway.reload(&moved).await.unwrap();
    let (status, answer) = call(gateway.addr, chat("alpha", "demo/m", false)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut elsewhere = chat("alpha", "demo/m", false);
    *elsewhere.uri_mut() = "/v9/chat/completions".parse().unwrap();
    let (status, _) = call(gateway.addr, elsewhere).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_demo_mock_provider_added_by_a_reload_needs_a_restart() {
    let upstream = MockUpstream::builder().no_auth().start().await.unwrap();
    let real = format!(
        "listen = \"127.0.0.1:0\"\n{}[providers.up]\nbase_url = \"{}\"\nauth = \"none\"\n",
        key("alpha", ""),
        upstream.base_url()
    );
    let gateway = start(&real).await;
    let error = gateway
        .reload(&format!("{real}[providers.demo]\nmock = true\n"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("restart"), "{error}");
    let (status, answer) = call(gateway.addr, chat("alpha", "up/m", false)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// A real SIGHUP to this test process. Safe: the handler is installed (`reload_on_hangup`
/// returned) before the signal is sent, and it stays installed for the process's life.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_config_file() {
    let gateway = start(&config(&key("alpha", ""))).await;
    let hangups = crate::reload_on_hangup(gateway.reloader.clone()).unwrap();
    let hangups = tokio::spawn(hangups);
    gateway
        .file
        .write(&config(&format!("{}{}", key("alpha", ""), key("beta", ""))));
    let (status, _) = call(gateway.addr, chat("beta", "demo/m", false)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not before the signal");

    let pid = std::process::id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut status = StatusCode::UNAUTHORIZED;
    for _ in 0..100 {
        status = call(gateway.addr, chat("beta", "demo/m", false)).await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::OK, "the SIGHUP did not reload the file");
    hangups.abort();
}

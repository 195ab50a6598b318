//! The router under its hosts: axum `nest_service`, plain hyper with `mount_path`, and at the
//! root without a mount path.

use std::net::SocketAddr;

use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::support::{
    Harness, MOUNT, ROUTER_KEY, RawResponse, assert_forwarded, base_builder, client_for, send,
    serve, start_upstream, with_model,
};

fn chat_request(model: &str, text: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(text)
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

/// `POST http://addr<path>` with the router key and a JSON body.
async fn post(addr: SocketAddr, path: &str, body: &'static str) -> RawResponse {
    let request = Request::post(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    send(request).await
}

const CHAT: &str = r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// Aborts the server task when dropped.
struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn axum_nest_service_serves_the_router_beside_other_routes() {
    let upstream = start_upstream().await;
    let router = base_builder(&upstream).mount_path(MOUNT).build().unwrap();
    let app = axum::Router::new()
        .nest_service(MOUNT, router)
        .route("/health", axum::routing::get(|| async { "ok" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = Server(tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    }));

    let client = client_for(&format!("http://{addr}{MOUNT}"), ROUTER_KEY);
    let request = chat_request("fast", "through axum");
    let sent = serde_json::to_vec(&request).unwrap();
    let response = client.chat().create(request).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some("mock reply: through axum")
    );
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_forwarded(
        &requests[0],
        "/v1/chat/completions",
        &with_model(&sent, "fast", "gpt-4o-mini"),
    );

    let models = client.models().list().await.unwrap();
    assert!(models.data.iter().any(|m| m.id == "mock/gpt-4o-mini"));

    let health = send(
        Request::get(format!("http://{addr}/health"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok");

    let response = post(addr, "/v3/router/nope", CHAT).await;
    let error = response.assert_error(404, None);
    assert_eq!(error["message"], "Invalid URL (POST /v3/router/nope)");
    assert!(response.header("x-request-id").is_some());
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn plain_hyper_strips_the_mount_path() {
    let harness = Harness::start().await;
    let request = chat_request("mock/gpt-4o-mini", "through hyper");
    let response = harness.client().chat().create(request).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some("mock reply: through hyper")
    );
    let seen = harness.only_upstream_request();
    assert_eq!(seen.path, "/v1/chat/completions");

    let response = post(harness.addr, "/v3/router/nope", CHAT).await;
    let error = response.assert_error(404, None);
    assert_eq!(error["message"], "Invalid URL (POST /v3/router/nope)");

    // A path that merely starts with the same characters is not below the mount.
    let response = post(harness.addr, "/v3/routerx/chat/completions", CHAT).await;
    response.assert_error(404, None);
    let response = post(harness.addr, "/v3/chat/completions", CHAT).await;
    response.assert_error(404, None);
    assert_eq!(harness.upstream.request_count(), 1);
}

#[tokio::test]
async fn without_a_mount_path_the_router_serves_at_the_root() {
    let upstream = start_upstream().await;
    let router = base_builder(&upstream).build().unwrap();
    let (addr, server) = serve(router).await;
    let _server = Server(server);

    let client = client_for(&format!("http://{addr}"), ROUTER_KEY);
    let request = chat_request("mock/gpt-4o-mini", "at the root");
    let sent = serde_json::to_vec(&request).unwrap();
    let response = client.chat().create(request).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some("mock reply: at the root")
    );
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_forwarded(
        &requests[0],
        "/v1/chat/completions",
        &with_model(&sent, "mock/gpt-4o-mini", "gpt-4o-mini"),
    );

    let response = post(addr, "/nope", CHAT).await;
    let error = response.assert_error(404, None);
    assert_eq!(error["message"], "Invalid URL (POST /nope)");

    let response = post(addr, "/v3/router/chat/completions", CHAT).await;
    let error = response.assert_error(404, None);
    assert_eq!(
        error["message"],
        "Invalid URL (POST /v3/router/chat/completions)"
    );
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn an_h2c_client_is_served_too() {
    let harness = Harness::start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = Request::post(harness.url("/chat/completions"))
        .header("authorization", format!("Bearer {ROUTER_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap();
    let exchange = async {
        let response = client.request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, body)
    };
    let (status, body) = tokio::time::timeout(crate::support::EXCHANGE_TIMEOUT, exchange)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body:?}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], "mock reply: hi");
    let seen = harness.only_upstream_request();
    assert_forwarded(
        &seen,
        "/v1/chat/completions",
        &with_model(CHAT.as_bytes(), "mock/gpt-4o-mini", "gpt-4o-mini"),
    );
}

//! Each layer alone, in front of services that know nothing of the router: plain axum
//! handlers (served by `axum::serve`) and a failing tower service (served by hyper), over TCP.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_router::Error;
use ai_router::auth::{AuthLayer, MemoryKeyStore, Principal};
use ai_router::extensions::RequestId;
use ai_router::observe::{Outcome, RequestSummary};
use ai_router::openai_errors::OpenAiErrorsLayer;
use ai_router::request_id::SetRequestIdLayer;
use ai_router::sse::SseLayer;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::{EXCHANGE_TIMEOUT, assert_openai_error, send, serve_service};

/// Serves an axum app on 127.0.0.1:0.
async fn serve_axum(app: Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

fn get_with(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::get(format!("http://{addr}{path}"));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

async fn whoami(Extension(caller): Extension<Principal>) -> String {
    caller.name().to_owned()
}

#[tokio::test]
async fn auth_alone_in_front_of_an_axum_handler() {
    let keys = MemoryKeyStore::new().with_key("sk-team-a-0123456789", Principal::new("team-a"));
    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(AuthLayer::new(keys));
    let (addr, server) = serve_axum(app).await;

    let ok = send(get_with(addr, "/whoami", Some("sk-team-a-0123456789"))).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "team-a", "the Principal reached the handler");

    for key in [None, Some("sk-wrong-0123456789")] {
        let refused = send(get_with(addr, "/whoami", key)).await;
        let error = refused.assert_error(401, Some("invalid_api_key"));
        assert!(!error.to_string().contains("sk-wrong-0123456789"));
    }
    server.abort();
}

#[tokio::test]
async fn request_ids_alone_in_front_of_an_axum_handler() {
    let summaries = Arc::new(Mutex::new(Vec::<RequestSummary>::new()));
    let seen = summaries.clone();
    let app = Router::new()
        .route(
            "/id",
            get(|Extension(id): Extension<RequestId>| async move { id.as_str().to_owned() }),
        )
        .layer(
            SetRequestIdLayer::new().observer(move |s: &RequestSummary| {
                seen.lock().unwrap().push(s.clone());
            }),
        );
    let (addr, server) = serve_axum(app).await;
    let answer = send(get_with(addr, "/id", None)).await;
    let header = answer.header("x-request-id").unwrap().to_owned();
    assert!(header.starts_with("req_"));
    assert_eq!(
        answer.text(),
        header,
        "the handler saw the id the client got"
    );
    let summaries = summaries.lock().unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].id.as_str(), header);
    assert_eq!(summaries[0].outcome, Outcome::Completed);
    server.abort();
}

/// Reads from `socket` until `needle` has arrived (bounded).
async fn read_until(socket: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let read = async {
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(seen).contains(needle) {
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(
                n > 0,
                "closed before `{needle}`: {}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("`{needle}` never came: {}", String::from_utf8_lossy(seen)));
}

#[tokio::test]
async fn an_axum_event_stream_passes_through_sse_alone_event_by_event_then_times_out() {
    let (events, receiver) = mpsc::channel::<Result<Event, Infallible>>(4);
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let mut receiver = receiver.lock().unwrap().take().unwrap();
                async move {
                    Sse::new(futures_util::stream::poll_fn(move |cx| {
                        receiver.poll_recv(cx)
                    }))
                }
            }),
        )
        .layer(SseLayer::new().idle_timeout(Duration::from_millis(300)));
    let (addr, server) = serve_axum(app).await;

    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    events.send(Ok(Event::default().data("one"))).await.unwrap();
    read_until(&mut socket, &mut seen, "data: one\n\n").await;
    // The first event reached the client before the second was even made.
    assert!(!String::from_utf8_lossy(&seen).contains("two"));
    events.send(Ok(Event::default().data("two"))).await.unwrap();
    read_until(&mut socket, &mut seen, "data: two\n\n").await;
    // Then silence, the channel still open: the layer ends the stream with an error frame.
    read_until(&mut socket, &mut seen, "upstream_idle_timeout").await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    let frame = text
        .split("\n\n")
        .find(|f| f.contains("upstream_idle_timeout"))
        .unwrap();
    let data = frame.split_once("data: ").unwrap().1;
    assert_openai_error(data.as_bytes(), Some("upstream_idle_timeout"));
    assert!(
        text.to_ascii_lowercase()
            .contains("cache-control: no-cache")
    );
    drop(events);
    server.abort();
}

#[tokio::test]
async fn the_errors_layer_alone_renders_a_failing_service() {
    let failing = tower::ServiceBuilder::new()
        .layer(OpenAiErrorsLayer::new())
        .service_fn(|_: Request<hyper::body::Incoming>| async {
            Err::<http::Response<Full<Bytes>>, _>(Error::upstream_timeout())
        });
    let (addr, server) = serve_service(failing).await;
    let answer = send(get_with(addr, "/anything", None)).await;
    answer.assert_error(504, Some("upstream_timeout"));

    let crashing = tower::ServiceBuilder::new()
        .layer(OpenAiErrorsLayer::new())
        .service_fn(|_: Request<hyper::body::Incoming>| async {
            Err::<http::Response<Full<Bytes>>, ai_router::BoxError>("db password hunter2".into())
        });
    let (addr2, server2) = serve_service(crashing).await;
    let answer = send(get_with(addr2, "/anything", None)).await;
    let error = answer.assert_error(500, None);
    assert!(!error.to_string().contains("hunter2"));
    server.abort();
    server2.abort();
}

//! What translation costs: the same chat answered by a canned upstream in OpenAI's, Anthropic's
//! and Gemini's format, over loopback TCP, through each provider service (`HttpProvider`
//! passes OpenAI's through; `AnthropicProvider` and `GeminiProvider` translate the request
//! and the answer). The upstream sends fixed bytes of the same content for each API, so the
//! difference between a translated figure and the pass-through one is the translation
//! (request, answer, and per stream event), with the same transport and the same upstream
//! latency. Streams carry 100 content events each; the per-event cost is the difference
//! divided by 100.
//!
//! Run with `cargo bench --bench translate`; see `benches/README.md` for the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use ai_router::provider::{AnthropicProvider, GeminiProvider, HttpProvider, UpstreamBody};
use ai_router::route::{Endpoint, RouteTarget};
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt as _};

/// Content events per stream.
const EVENTS: usize = 100;
const TEXT: &str = "Packets hop along, a router hums in the dark, no token is lost.";

/// The canned answers, by API and by stream or not.
struct Answers {
    openai: Bytes,
    openai_stream: Bytes,
    anthropic: Bytes,
    anthropic_stream: Bytes,
    gemini: Bytes,
    gemini_stream: Bytes,
}

fn answers() -> Answers {
    let openai = format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{TEXT}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":256,"completion_tokens":16,"total_tokens":272}}}}"#
    );
    let anthropic = format!(
        r#"{{"id":"msg_01","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{{"type":"text","text":"{TEXT}"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":256,"output_tokens":16,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}}"#
    );
    let gemini = format!(
        r#"{{"candidates":[{{"content":{{"parts":[{{"text":"{TEXT}"}}],"role":"model"}},"finishReason":"STOP","index":0}}],"usageMetadata":{{"promptTokenCount":256,"candidatesTokenCount":16,"totalTokenCount":272}},"modelVersion":"gemini-2.5-flash","responseId":"abc"}}"#
    );
    let mut openai_stream = String::new();
    let mut anthropic_stream = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":256,\"output_tokens\":1}}}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    let mut gemini_stream = String::new();
    for i in 0..EVENTS {
        openai_stream.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        ));
        anthropic_stream.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" word{i}\"}}}}\n\n"
        ));
        gemini_stream.push_str(&format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\" word{i}\"}}],\"role\":\"model\"}},\"index\":0}}],\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"abc\"}}\r\n\r\n"
        ));
    }
    openai_stream.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    anthropic_stream.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
         event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":100}}\n\n\
         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    gemini_stream.push_str("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":256,\"candidatesTokenCount\":100,\"totalTokenCount\":356},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"abc\"}\r\n\r\n");
    Answers {
        openai: openai.into(),
        openai_stream: openai_stream.into(),
        anthropic: anthropic.into(),
        anthropic_stream: anthropic_stream.into(),
        gemini: gemini.into(),
        gemini_stream: gemini_stream.into(),
    }
}

/// Serves the canned answers on a loopback port, by path (and `"stream":true` in the body
/// for OpenAI and Anthropic). A stream is sent whole, in one write: what is timed is then
/// the work on its events, not 100 loopback round trips (which cost the same for every API
/// and would hide it).
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers: &'static Answers = Box::leak(Box::new(answers()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let stream = memchr::memmem::find(&body, b"\"stream\":true").is_some();
                    let (bytes, sse) = match (path.as_str(), stream) {
                        ("/v1/chat/completions", false) => (&answers.openai, false),
                        ("/v1/chat/completions", true) => (&answers.openai_stream, true),
                        ("/v1/messages", false) => (&answers.anthropic, false),
                        ("/v1/messages", true) => (&answers.anthropic_stream, true),
                        (p, _) if p.ends_with(":streamGenerateContent") => {
                            (&answers.gemini_stream, true)
                        }
                        _ => (&answers.gemini, false),
                    };
                    let body = UpstreamBody::full(bytes.clone());
                    let content_type = if sse {
                        "text/event-stream"
                    } else {
                        "application/json"
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", content_type)
                            .body(body)
                            .unwrap(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn request(model: &str, stream: bool) -> Request<Bytes> {
    let body = format!(
        r#"{{"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Write a haiku about a router that forwards requests quickly."}}],"model":"{model}","stream":{stream},"max_tokens":256,"temperature":0.7}}"#
    );
    let mut request = Request::post("/v3/router/chat/completions")
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .unwrap();
    request
        .extensions_mut()
        .insert(RouteTarget::new("p", model, Endpoint::ChatCompletions));
    request
}

async fn exchange<S>(service: &S, request: Request<Bytes>) -> Bytes
where
    S: Service<Request<Bytes>, Response = Response<UpstreamBody>, Error = ai_router::Error> + Clone,
{
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap().to_bytes()
}

fn bench<S>(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    service: S,
    model: &'static str,
    stream: bool,
) where
    S: Service<Request<Bytes>, Response = Response<UpstreamBody>, Error = ai_router::Error> + Clone,
{
    // Check the answer once: a translated stream must end with [DONE] like OpenAI's.
    let answer = rt.block_on(exchange(&service, request(model, stream)));
    if stream {
        assert!(answer.ends_with(b"data: [DONE]\n\n"), "{name}");
    } else {
        let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert!(
            json["choices"][0]["message"]["content"].is_string(),
            "{name}"
        );
    }
    let mut group = c.benchmark_group("translate");
    group.bench_function(name, |b| {
        b.to_async(rt).iter_batched(
            || request(model, stream),
            |request| {
                let service = &service;
                async move { black_box(exchange(service, request).await) }
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn translate(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(start_upstream());
    let origin = format!("http://{addr}");
    let openai = HttpProvider::builder(format!("{origin}/v1"))
        .api_key("k")
        .build()
        .unwrap();
    let anthropic = AnthropicProvider::builder(origin.as_str())
        .api_key("k")
        .build()
        .unwrap();
    let gemini = GeminiProvider::builder(origin.as_str())
        .api_key("k")
        .build()
        .unwrap();
    bench(
        c,
        &rt,
        "chat/openai_passthrough",
        openai.clone(),
        "gpt-4o-mini",
        false,
    );
    bench(
        c,
        &rt,
        "chat/anthropic",
        anthropic.clone(),
        "claude-haiku-4-5",
        false,
    );
    bench(
        c,
        &rt,
        "chat/gemini",
        gemini.clone(),
        "gemini-2.5-flash",
        false,
    );
    bench(
        c,
        &rt,
        "stream_100_events/openai_passthrough",
        openai,
        "gpt-4o-mini",
        true,
    );
    bench(
        c,
        &rt,
        "stream_100_events/anthropic",
        anthropic,
        "claude-haiku-4-5",
        true,
    );
    bench(
        c,
        &rt,
        "stream_100_events/gemini",
        gemini,
        "gemini-2.5-flash",
        true,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = translate
}
criterion_main!(benches);

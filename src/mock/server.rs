//! Accept loop, per-connection serving and the request pipeline
//! (read → record → script / auth → route). The path picks the API: Anthropic's
//! `POST /v1/messages`, Gemini's `POST /v1beta/models/{model}:{method}`, else OpenAI's.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::body::{MockBody, ScriptedReset};
use super::endpoints::{self, Reply};
use super::{RecordedRequest, ScriptedResponse, Shared};
use super::{anthropic, forms, gemini};

/// Request bodies larger than this are answered with 413.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Accepts connections until aborted; dropping this future (abort) drops the
/// `JoinSet`, which aborts every connection task.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // e.g. EMFILE: back off briefly instead of spinning.
                tracing::warn!(%err, "mock upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Reap finished connection tasks so the set does not grow forever.
        while connections.try_join_next().is_some() {}
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "mock upstream: set_nodelay failed");
        }
        let builder = Arc::clone(&builder);
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = {
                let shared = Arc::clone(&shared);
                service_fn(move |request| {
                    let shared = Arc::clone(&shared);
                    async move { handle(&shared, request).await }
                })
            };
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(err = %err, "mock upstream: connection ended with an error");
            }
            shared.connections_closed.send_modify(|closed| *closed += 1);
        });
    }
}

/// Serves one request. An error (a scripted reset before the head) makes hyper drop the
/// connection (HTTP/2: reset the stream) without answering.
async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, ScriptedReset> {
    let (parts, body) = request.into_parts();

    // Read (and record) the whole body before answering.
    let (body, body_error) = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => (collected.to_bytes(), None),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            (Bytes::new(), Some(StatusCode::PAYLOAD_TOO_LARGE))
        }
        Err(_) => (Bytes::new(), Some(StatusCode::BAD_REQUEST)),
    };
    let api = Api::of(&parts.method, parts.uri.path());
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let model = match &api {
        Api::Gemini(call) => Some(Cow::Borrowed(call.model.as_ref())),
        _ => request_model(content_type, &body),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let n = shared.record(
        RecordedRequest {
            method: parts.method.clone(),
            path,
            headers: parts.headers.clone(),
            body: body.clone(),
        },
        model.as_deref(),
    );

    let reply = match body_error {
        Some(status) => body_error_reply(&api, status, n),
        None => {
            if let Some(scripted) = shared.next_script(model.as_deref()) {
                return scripted_response(scripted, n).await;
            }
            match &api {
                Api::OpenAi => match shared.auth.check(&parts.headers) {
                    Ok(()) => {
                        endpoints::route(&parts.method, parts.uri.path(), content_type, &body, n)
                    }
                    Err(message) => endpoints::error(
                        StatusCode::UNAUTHORIZED,
                        &message,
                        "invalid_request_error",
                        Some("invalid_api_key"),
                    ),
                },
                Api::Anthropic => anthropic::messages(&shared.auth, &parts.headers, &body, n),
                Api::Gemini(call) => gemini::handle(
                    &shared.auth,
                    &parts.headers,
                    parts.uri.query(),
                    call,
                    &body,
                    n,
                ),
            }
        }
    };
    Ok(finish(reply, n))
}

/// The API a request speaks, by its method and path.
enum Api<'a> {
    /// Everything but the two below.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1beta/models/{model}:{method}`.
    Gemini(gemini::Call<'a>),
}

impl<'a> Api<'a> {
    fn of(method: &Method, path: &'a str) -> Self {
        if method != Method::POST {
            return Api::OpenAi;
        }
        if path == "/v1/messages" {
            return Api::Anthropic;
        }
        gemini::Call::parse(path).map_or(Api::OpenAi, Api::Gemini)
    }
}

/// The answer to a body that could not be read (too large, or broken), in the API's shape.
fn body_error_reply(api: &Api<'_>, status: StatusCode, n: u64) -> Reply {
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "Request body too large: the limit is 64 MiB."
    } else {
        "The request body could not be read."
    };
    match api {
        Api::OpenAi => endpoints::error(status, message, "invalid_request_error", None),
        Api::Anthropic => {
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request_too_large"
            } else {
                "invalid_request_error"
            };
            anthropic::error(status, kind, message, n)
        }
        Api::Gemini(_) => gemini::error(status, message),
    }
}

/// The model a request is for: the `model` part of a `multipart/form-data` body, or the
/// top-level `"model"` string of any other body read as JSON.
fn request_model<'a>(content_type: Option<&str>, body: &'a Bytes) -> Option<Cow<'a, str>> {
    /// The one member read; the others are skipped.
    #[derive(serde::Deserialize)]
    struct Model<'a> {
        #[serde(borrow, default)]
        model: Option<Cow<'a, str>>,
    }

    if content_type.is_some_and(forms::is_multipart) {
        return forms::model(content_type, body).map(Cow::Owned);
    }
    serde_json::from_slice::<Model<'a>>(body).ok()?.model
}

/// Turns an endpoint reply into a response with the standard headers.
fn finish(reply: Reply, n: u64) -> Response<MockBody> {
    let mut response = Response::new(reply.body);
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    standard_headers(headers, n);
    response
}

/// Answers with a scripted response (after its delay), or fails for a reset before the
/// head.
async fn scripted_response(
    scripted: ScriptedResponse,
    n: u64,
) -> Result<Response<MockBody>, ScriptedReset> {
    if let Some(delay) = scripted.delay {
        tokio::time::sleep(delay).await;
    }
    if scripted.reset_before_head {
        return Err(ScriptedReset);
    }
    let body = if scripted.streamed || !scripted.pacing.is_plain() {
        MockBody::paced(scripted.chunks, scripted.pacing)
    } else {
        MockBody::full(scripted.chunks.concat())
    };
    let mut response = Response::new(body);
    *response.status_mut() = scripted.status;
    let headers = response.headers_mut();
    standard_headers(headers, n);
    if let Some(content_type) = scripted.default_content_type {
        headers.insert(CONTENT_TYPE, content_type);
    }
    // Replaces the defaults with the same names; keeps repeated values.
    headers.extend(scripted.headers);
    Ok(response)
}

/// The headers every mock response carries.
fn standard_headers(headers: &mut HeaderMap, n: u64) {
    if let Ok(id) = HeaderValue::try_from(format!("mock-req-{n}")) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    headers.insert(
        HeaderName::from_static("openai-processing-ms"),
        HeaderValue::from_static("1"),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderValue::from_static("10000"),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderValue::from_static("9999"),
    );
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn the_model_of_a_request() {
        const FORM: &str = "multipart/form-data; boundary=b";
        let part = |name: &str, data: &str| {
            format!("--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{data}\r\n")
        };
        let file = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n";
        let model_after_file = format!("{file}{}--b--\r\n", part("model", "whisper-1"));
        let two_models = format!(
            "{}{}--b--\r\n",
            part("model", "first"),
            part("model", "second")
        );
        // Broken after the model part: the model is still read.
        let truncated = format!("{}--b\r\nContent-Disp", part("model", "m"));
        let no_model = format!("{file}--b--\r\n");
        let table: &[(Option<&str>, &[u8], Option<&str>)] = &[
            // JSON: the top-level `model` string only.
            (
                Some("application/json"),
                br#"{"model":"gpt-4o","messages":[]}"#,
                Some("gpt-4o"),
            ),
            (
                None,
                br#"{"messages":[],"model":"esc\u0061ped"}"#,
                Some("escaped"),
            ),
            (
                Some("text/plain"),
                br#"{"model":"any content type"}"#,
                Some("any content type"),
            ),
            (Some("application/json"), br#"{"model":""}"#, Some("")),
            (Some("application/json"), br#"{"model":7}"#, None),
            (Some("application/json"), br#"{"model":null}"#, None),
            (
                Some("application/json"),
                br#"{"input":{"model":"nested"}}"#,
                None,
            ),
            (
                Some("application/json"),
                br#"[{"model":"in an array"}]"#,
                None,
            ),
            (
                Some("application/json"),
                br#"{"model":"a","model":"b"}"#,
                None,
            ),
            (Some("application/json"), br#"{"model":"unterminated"#, None),
            (Some("application/json"), b"", None),
            // Forms: the first `model` part, as text.
            (Some(FORM), model_after_file.as_bytes(), Some("whisper-1")),
            (Some(FORM), two_models.as_bytes(), Some("first")),
            (Some(FORM), truncated.as_bytes(), Some("m")),
            (Some(FORM), no_model.as_bytes(), None),
            (
                Some(FORM),
                b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\xff\r\n--b--\r\n",
                None,
            ),
            (
                Some("multipart/form-data"),
                model_after_file.as_bytes(),
                None,
            ),
            (
                Some("multipart/form-data; boundary=other"),
                model_after_file.as_bytes(),
                None,
            ),
            // A form is not read as JSON, nor JSON as a form.
            (Some(FORM), br#"{"model":"json"}"#, None),
            (Some("application/json"), model_after_file.as_bytes(), None),
        ];
        for (content_type, body, expected) in table {
            let body = Bytes::copy_from_slice(body);
            let model = request_model(*content_type, &body);
            assert_eq!(model.as_deref(), *expected, "{content_type:?} {body:?}");
        }
    }
}

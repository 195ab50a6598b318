//! [`ResponseFuture`]: a translated exchange up to the answer the client gets.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, header};
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Timeout;

use super::{APPLICATION_JSON, Api, EVENT_STREAM, Reply, TranslatedStream};
use crate::error::Error;
use crate::media::content_type_is;
use crate::provider::body::UpstreamBody;
use crate::provider::headers::X_UPSTREAM_REQUEST_ID;
use crate::provider::transport::SendFuture;

/// The largest JSON answer translated (a batch of embeddings is the big one).
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// The largest error answer read; a longer one (or one that fails as it is read) is
/// translated from its status alone.
const MAX_ERROR: usize = 1024 * 1024;
/// Anthropic's name for its request id header.
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

pin_project! {
    /// Response future of [`AnthropicProvider`](crate::provider::AnthropicProvider) and
    /// [`GeminiProvider`](crate::provider::GeminiProvider).
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Failed { error: Option<Error> },
        Sending {
            #[pin]
            send: SendFuture,
            api: Api,
            reply: Option<Reply>,
            timeout: Duration,
        },
        // A JSON answer (or an error answer), read whole before it is translated.
        Collecting {
            #[pin]
            collect: Timeout<Collect<Limited<Incoming>>>,
            api: Api,
            reply: Option<Reply>,
            parts: Option<Parts>,
        },
    }
}

impl ResponseFuture {
    pub(super) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }

    pub(super) fn sending(send: SendFuture, api: Api, reply: Reply, timeout: Duration) -> Self {
        Self {
            state: State::Sending {
                send,
                api,
                reply: Some(reply),
                timeout,
            },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<UpstreamBody>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(Error::internal)));
                }
                StateProj::Sending {
                    send,
                    api,
                    reply,
                    timeout,
                } => {
                    let (parts, body) = ready!(send.poll(cx))?.into_parts();
                    let Some(reply) = reply.take() else {
                        return Poll::Ready(Err(Error::internal()));
                    };
                    let limit = if parts.status.is_success() {
                        if let Reply::ChatStream(context) = reply {
                            // A 2xx that is not an event stream is not the answer asked for:
                            // refused before the first byte, as the `Sse` layer refuses it
                            // from OpenAI-compatible providers.
                            if !content_type_is(&parts.headers, "text/event-stream") {
                                return Poll::Ready(Err(Error::upstream_protocol()));
                            }
                            // Streams are translated event by event as they arrive.
                            let translator = api.stream_translator(context);
                            let headers = answer_headers(&parts.headers, EVENT_STREAM, None);
                            let body =
                                UpstreamBody::translated(TranslatedStream::new(body, translator));
                            return Poll::Ready(Ok(respond(parts, headers, body)));
                        }
                        MAX_ANSWER
                    } else {
                        MAX_ERROR
                    };
                    State::Collecting {
                        collect: tokio::time::timeout(
                            *timeout,
                            Limited::new(body, limit).collect(),
                        ),
                        api: *api,
                        reply: Some(reply),
                        parts: Some(parts),
                    }
                }
                StateProj::Collecting {
                    collect,
                    api,
                    reply,
                    parts,
                } => {
                    let result = ready!(collect.poll(cx));
                    let (Some(parts), Some(reply)) = (parts.take(), reply.take()) else {
                        return Poll::Ready(Err(Error::internal()));
                    };
                    let body = match result {
                        Err(elapsed) => {
                            return Poll::Ready(
                                Err(Error::upstream_timeout().with_source(elapsed)),
                            );
                        }
                        // An error answer keeps its status (a 429 its retry-after) even when
                        // its body cannot be read.
                        Ok(Err(_)) if !parts.status.is_success() => bytes::Bytes::new(),
                        Ok(Err(error)) => {
                            return Poll::Ready(Err(Error::upstream_protocol().with_source(error)));
                        }
                        Ok(Ok(collected)) => collected.to_bytes(),
                    };
                    return Poll::Ready(if parts.status.is_success() {
                        api.translate_answer(&reply, &body).map(|json| {
                            let headers = answer_headers(&parts.headers, APPLICATION_JSON, None);
                            respond(parts, headers, UpstreamBody::full(json))
                        })
                    } else {
                        let answer = api.translate_error(parts.status, &body);
                        let headers =
                            answer_headers(&parts.headers, APPLICATION_JSON, answer.retry_after);
                        let mut response = respond(parts, headers, UpstreamBody::full(answer.body));
                        *response.status_mut() = answer.status;
                        Ok(response)
                    });
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

fn respond(mut parts: Parts, headers: HeaderMap, body: UpstreamBody) -> Response<UpstreamBody> {
    parts.headers = headers;
    Response::from_parts(parts, body)
}

/// The headers of a translated answer: its content type and, of the provider's, only what
/// the client can use (when to retry, the provider's request id). The rest describe the
/// provider's answer, not ours (length, encoding), or our account with it.
fn answer_headers(
    upstream: &HeaderMap,
    content_type: HeaderValue,
    retry_after: Option<u64>,
) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(header::CONTENT_TYPE, content_type);
    for name in [header::RETRY_AFTER, RETRY_AFTER_MS, X_UPSTREAM_REQUEST_ID] {
        if let Some(value) = upstream.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    if let Some(id) = upstream.get(REQUEST_ID) {
        headers.insert(X_UPSTREAM_REQUEST_ID, id.clone());
    }
    if let Some(seconds) = retry_after {
        if !headers.contains_key(header::RETRY_AFTER) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
    headers
}

//! Response future of [`Route`](super::Route): read the body, resolve, then call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::layer::Settings;
use super::multipart::{self, Form};
use super::table::check_model_id;
use super::{ResponseBody, json, json_response};
use crate::body::Full;
use crate::deadline::expired;
use crate::error::{BoxError, Error};
use crate::extensions::{Endpoint, Principal};
use crate::media::ContentType;
use crate::observe::RequestLog;

pin_project! {
    /// Response future of [`Route`](super::Route).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<Bytes>>,
        ReqBody: Body,
        ReqBody::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, ReqBody>,
        // The inner service's future, kept out of `state`: leaving the (large) reading state
        // then copies nothing of it.
        #[pin]
        called: Option<S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<Bytes>>,
        ReqBody: Body,
        ReqBody::Error: Into<BoxError>,
    {
        Answer { response: Option<Response<Full>> },
        Reading {
            #[pin] collect: Collect<Limited<ReqBody>>,
            // Armed only if the body is not all there on the first poll.
            #[pin] deadline: Option<Sleep>,
            parts: Option<http::request::Parts>,
            endpoint: Endpoint,
            content_type: ContentType,
            inner: Option<S>,
            settings: Arc<Settings>,
        },
        Calling,
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<Bytes>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    fn answer(response: Response<Full>) -> Self {
        Self {
            state: State::Answer {
                response: Some(response),
            },
            called: None,
        }
    }

    /// Answers with JSON of the layer's own (a listing).
    pub(super) fn json(body: Bytes) -> Self {
        Self::answer(json_response(body))
    }

    /// Answers with a refusal.
    pub(super) fn error(error: Error) -> Self {
        Self::answer(error.into_response())
    }

    pub(super) fn read_body(
        request: Request<ReqBody>,
        endpoint: Endpoint,
        content_type: ContentType,
        inner: S,
        settings: Arc<Settings>,
    ) -> Self {
        let (parts, body) = request.into_parts();
        Self {
            state: State::Reading {
                collect: Limited::new(body, settings.body_limit(endpoint)).collect(),
                deadline: None,
                parts: Some(parts),
                endpoint,
                content_type,
                inner: Some(inner),
                settings,
            },
            called: None,
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<Bytes>, Response = Response<ResBody>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Answer { response } => {
                    let response = response
                        .take()
                        .unwrap_or_else(|| Error::internal().into_response());
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
                StateProj::Reading {
                    collect,
                    deadline,
                    parts,
                    endpoint,
                    content_type,
                    inner,
                    settings,
                } => {
                    let read = match collect.poll(cx) {
                        Poll::Ready(read) => read,
                        Poll::Pending if expired(deadline, settings.body_timeout, cx) => {
                            this.state.set(Self::error(Error::body_timeout()).state);
                            continue;
                        }
                        Poll::Pending => return Poll::Pending,
                    };
                    let (Some(parts), Some(mut inner)) = (parts.take(), inner.take()) else {
                        this.state.set(Self::error(Error::internal()).state);
                        continue;
                    };
                    let prepared = read
                        .map_err(|error| read_error(error, settings.body_limit(*endpoint)))
                        .and_then(|collected| {
                            let body = collected.to_bytes();
                            prepare(parts, body, *endpoint, *content_type, settings)
                        });
                    match prepared {
                        Ok(request) => {
                            this.called.set(Some(inner.call(request)));
                            this.state.set(State::Calling);
                        }
                        Err(error) => this.state.set(Self::error(error).state),
                    }
                }
                StateProj::Calling => {
                    let Some(future) = this.called.as_mut().as_pin_mut() else {
                        this.state.set(Self::error(Error::internal()).state);
                        continue;
                    };
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
            }
        }
    }
}

/// A body read failure: over the limit (413) or the client's stream broke (400).
fn read_error(error: BoxError, limit: usize) -> Error {
    if error.is::<LengthLimitError>() {
        Error::payload_too_large(limit)
    } else {
        Error::body_read().with_source(error)
    }
}

/// The body as routing sees it.
enum Parsed {
    Json(json::Peeked),
    Form(Form),
}

/// Resolves the route and builds the request the inner service gets.
fn prepare(
    mut parts: http::request::Parts,
    body: Bytes,
    endpoint: Endpoint,
    content_type: ContentType,
    settings: &Settings,
) -> Result<Request<Bytes>, Error> {
    let parsed = if content_type == ContentType::Form {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let form = Form::parse(body.clone(), &multipart::boundary(content_type)?)?;
        if form.count("model") > 1 {
            // As with a duplicate JSON key: which one the upstream would read is unknowable.
            return Err(Error::invalid_body(
                "the form has more than one `model` part",
            ));
        }
        if let Some(file) = endpoint.required_file().filter(|f| !form.has(f)) {
            return Err(Error::missing_param(file));
        }
        Parsed::Form(form)
    } else {
        Parsed::Json(json::peek(&body)?)
    };
    let (sent, stream, include_usage) = match &parsed {
        Parsed::Json(peeked) => (peeked.model.as_deref(), peeked.stream, peeked.include_usage),
        Parsed::Form(form) => (
            form.text("model"),
            form.text("stream") == Some("true"),
            None,
        ),
    };
    let sent = sent.filter(|m| !m.is_empty());
    let model = match sent {
        Some(model) => model,
        None if endpoint.model_optional() => settings
            .default_models
            .get(&endpoint)
            .map(String::as_str)
            .ok_or_else(|| Error::missing_param("model"))?,
        None => return Err(Error::missing_param("model")),
    };
    check_model_id(model)?;
    let target = settings
        .table
        .resolve(model, endpoint)?
        .with_stream(stream, include_usage);
    if let Some(principal) = parts.extensions.get::<Principal>() {
        if !settings.table.may_use(principal, model)
            && !principal.allows_model(&format!(
                "{}/{}",
                target.provider(),
                target.upstream_model()
            ))
        {
            return Err(Error::model_not_allowed(model));
        }
    }
    let upstream_model = target.upstream_model();
    let is_json = matches!(parsed, Parsed::Json(_));
    let mut body = match parsed {
        Parsed::Json(peeked) => json::rewrite_model(body, &peeked, upstream_model)?,
        Parsed::Form(form) => {
            let (body, content_type) = form.encode_with_model(upstream_model);
            parts.headers.insert(header::CONTENT_TYPE, content_type);
            body
        }
    };
    let mut target = target;
    let wants_usage = is_json
        && target.stream()
        && endpoint == Endpoint::ChatCompletions
        && target.include_usage().is_none()
        && !settings.inject_usage.is_empty()
        && settings.inject_usage.contains(target.provider());
    if wants_usage {
        if let Some(injected) =
            json::insert_first_member(&body, br#""stream_options":{"include_usage":true}"#)
        {
            body = injected;
            target = target.with_usage_injected(true);
        }
    }
    // The body is JSON whatever the client labelled it (curl -d sends a form type), and its
    // length may have changed: the upstream client sets it again.
    parts.headers.remove(header::CONTENT_LENGTH);
    // Only `identity` got this far, and it says nothing the upstream needs.
    parts.headers.remove(header::CONTENT_ENCODING);
    if is_json && content_type != ContentType::Json {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some(log) = parts.extensions.get::<RequestLog>() {
        log.record_target(&target);
    }
    parts.extensions.insert(target);
    Ok(Request::from_parts(parts, body))
}

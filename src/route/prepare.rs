//! From a request body read whole to the request the layers below get: the model found, the
//! targets resolved and filtered by the caller's allow-list, `model` rewritten for the first
//! target, knobs stripped, and a [`RoutePlan`] when there is more than one way to go.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, header};

use super::json;
use super::knobs::{self, Knobs};
use super::layer::Settings;
use super::multipart::{self, Form};
use super::table::{Resolved, check_model_id};
use crate::error::Error;
use crate::extensions::{BodyForModel, Endpoint, Principal, RoutePlan, RouteTarget};
use crate::media::ContentType;
use crate::observe::{RequestLog, RequestParams};

/// The body as routing sees it.
enum Parsed {
    Json(json::Peeked),
    Form(Form),
}

/// Resolves the route and builds the request the inner service gets.
pub(super) fn prepare(
    mut parts: http::request::Parts,
    mut body: Bytes,
    endpoint: Endpoint,
    content_type: ContentType,
    settings: &Settings,
) -> Result<Request<Bytes>, Error> {
    let mut parsed = if content_type == ContentType::Form {
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
    // Knobs are read and stripped first: nothing below sees them, not even this function.
    let mut knobs = Knobs::default();
    if let Parsed::Json(peeked) = &parsed {
        if peeked.has_knobs {
            let (read, stripped) = knobs::take(&body)?;
            knobs = read;
            body = stripped;
            parsed = Parsed::Json(json::peek(&body)?);
        }
    }
    if let Some(log) = parts.extensions.get::<RequestLog>() {
        let params = match &parsed {
            Parsed::Json(peeked) => peeked.params,
            Parsed::Form(form) => RequestParams {
                stream: form.text("stream") == Some("true"),
                ..RequestParams::default()
            },
        };
        log.record_request(params, knobs.identity.take(), knobs.thread.take());
    }
    let (sent, stream, include_usage) = match &parsed {
        Parsed::Json(peeked) => (peeked.model.as_deref(), peeked.stream, peeked.include_usage),
        Parsed::Form(form) => (
            form.text("model"),
            form.text("stream") == Some("true"),
            None,
        ),
    };
    let sent = sent.filter(|m| !m.is_empty());
    // A request's load balancer picks among its models instead of `model`.
    let balanced = knobs
        .load_balancer
        .as_ref()
        .map(|balancer| balancer.order(settings.turn()));
    // A model the balancer picked is named by its place in the request's list when wrong.
    let balanced_param = |i: usize, model: &str| {
        Error::invalid_param(
            format!("load_balancer.models[{i}].model"),
            format!(
                "the model `{model}` is not an alias or `provider/model` of a configured provider"
            ),
        )
    };
    let model = match (&balanced, sent) {
        (Some(order), _) => {
            let &(i, model) = order.first().ok_or_else(Error::internal)?;
            check_model_id(model).map_err(|_| balanced_param(i, model))?;
            model
        }
        (None, Some(model)) => model,
        (None, None) if endpoint.model_optional() => settings
            .default_models
            .get(&endpoint)
            .map(String::as_str)
            .ok_or_else(|| Error::missing_param("model"))?,
        (None, None) => return Err(Error::missing_param("model")),
    };
    check_model_id(model)?;
    let principal = parts.extensions.get::<Principal>();
    let (mut first, mut rest, policy) = match settings.table.resolve_for(model, endpoint, principal)
    {
        Ok(Resolved::One(target)) => (Some(target), Vec::new(), None),
        Ok(Resolved::Alias { targets, policy }) => {
            let mut targets = targets.into_iter();
            (targets.next(), targets.collect(), Some(policy))
        }
        // Not allowed: its fallbacks may be; if none is, the refusal names this model.
        Err(refusal) if refusal.status() == http::StatusCode::FORBIDDEN => (None, Vec::new(), None),
        Err(_) if balanced.is_some() => {
            let i = balanced
                .as_ref()
                .and_then(|o| o.first())
                .map_or(0, |&(i, _)| i);
            return Err(balanced_param(i, model));
        }
        Err(error) => return Err(error),
    };
    // The balancer's other models, then the request's fallbacks, each resolved (an unknown one
    // is a 400 naming it) and filtered by the allow-list.
    let balanced_rest = balanced
        .iter()
        .flatten()
        .skip(1)
        .map(|&(i, m)| (m, format!("load_balancer.models[{i}].model")));
    let fallbacks = knobs
        .fallbacks
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), format!("fallbacks[{i}].model")));
    for (fallback, param) in balanced_rest.chain(fallbacks) {
        let unknown = || {
            Error::invalid_param(
                param.as_str(),
                format!(
                    "the model `{fallback}` is not an alias or `provider/model` of a configured provider"
                ),
            )
        };
        check_model_id(fallback).map_err(|_| unknown())?;
        match settings.table.resolve_for(fallback, endpoint, principal) {
            Ok(Resolved::One(target)) => rest.push(target),
            Ok(Resolved::Alias { targets, .. }) => rest.extend(targets),
            Err(error) if error.status() == http::StatusCode::FORBIDDEN => {}
            Err(_) => return Err(unknown()),
        }
    }
    // Whether the first target is the model's own (not a fallback standing in for it).
    let first_is_model = first.is_some();
    if first.is_none() && !rest.is_empty() {
        first = Some(rest.remove(0));
    }
    let Some(first) = first else {
        return Err(Error::model_not_allowed(model));
    };
    let is_json = matches!(parsed, Parsed::Json(_));
    let inject = |target: &RouteTarget| {
        is_json
            && stream
            && endpoint == Endpoint::ChatCompletions
            && include_usage.is_none()
            && !settings.inject_usage.is_empty()
            && settings.inject_usage.contains(target.provider())
    };
    let with_details = |target: RouteTarget| {
        let injected = inject(&target);
        target
            .with_stream(stream, include_usage)
            .with_usage_injected(injected)
    };
    let mut target = with_details(first);
    // A `provider/model` the client sent names the target as is: label it without a copy
    // (an alias's targets come labelled).
    if first_is_model && !target.has_label() && sent.is_some_and(|sent| sent == model) {
        let label = match &parsed {
            Parsed::Json(peeked) => peeked.model_bytes(&body),
            Parsed::Form(form) => form.value("model").cloned(),
        };
        if let Some(label) = label.and_then(|l| HeaderValue::from_maybe_shared(l).ok()) {
            target = target.with_label(label);
        }
    }
    let rest: Vec<RouteTarget> = rest.into_iter().map(with_details).collect();
    let retry = knobs
        .retry
        .or_else(|| policy.map(|p| p.retry.clone()))
        .unwrap_or_default();
    let attempt_timeout = knobs
        .call_timeout
        .or_else(|| policy.and_then(|p| p.timeout));
    let first_byte_timeout = policy.and_then(|p| p.first_byte_timeout);
    let needs_plan = !rest.is_empty()
        || retry.count() > 0
        || attempt_timeout.is_some()
        || first_byte_timeout.is_some();
    // What makes the other targets' bodies: built only for a plan (a single target costs
    // no allocation here).
    let (body, respell): (Bytes, Option<Arc<dyn BodyForModel>>) = match parsed {
        Parsed::Json(peeked) => {
            if needs_plan {
                let rewritten = for_target(body.clone(), &peeked, &target)?;
                (
                    rewritten,
                    Some(Arc::new(JsonBody { body, peeked }) as Arc<dyn BodyForModel>),
                )
            } else {
                (for_target(body, &peeked, &target)?, None)
            }
        }
        Parsed::Form(form) => {
            let (encoded, content_type) = form.encoded_with_model(target.upstream_model());
            parts.headers.insert(header::CONTENT_TYPE, content_type);
            let respell = needs_plan.then(|| Arc::new(FormBody { form }) as Arc<dyn BodyForModel>);
            (encoded, respell)
        }
    };
    if let Some(respell) = respell {
        parts.extensions.insert(
            RoutePlan::new(rest, respell)
                .with_retry(retry)
                .with_attempt_timeout(attempt_timeout)
                .with_first_byte_timeout(first_byte_timeout),
        );
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

/// The JSON body for `target`: `model` set to its upstream id, and usage asked for when the
/// router injects it for that provider.
fn for_target(body: Bytes, peeked: &json::Peeked, target: &RouteTarget) -> Result<Bytes, Error> {
    let body = json::rewrite_model(body, peeked, target.upstream_model())?;
    if !target.usage_injected() {
        return Ok(body);
    }
    Ok(
        json::insert_first_member(&body, br#""stream_options":{"include_usage":true}"#)
            .unwrap_or(body),
    )
}

/// Makes a JSON body for another target from the client's (knobs stripped).
struct JsonBody {
    body: Bytes,
    peeked: json::Peeked,
}

impl BodyForModel for JsonBody {
    fn body_for(&self, target: &RouteTarget) -> Result<(Bytes, Option<HeaderValue>), Error> {
        Ok((for_target(self.body.clone(), &self.peeked, target)?, None))
    }
}

/// Makes a form for another target: re-encoded with its `model`.
struct FormBody {
    form: Form,
}

impl BodyForModel for FormBody {
    fn body_for(&self, target: &RouteTarget) -> Result<(Bytes, Option<HeaderValue>), Error> {
        let (body, content_type) = self.form.encoded_with_model(target.upstream_model());
        Ok((body, Some(content_type)))
    }
}

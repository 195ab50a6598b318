//! The request's spans: `request` with the request id alone (what log lines show), and its
//! GenAI twin with the OpenTelemetry GenAI fields (semantic conventions v1.41), on a target of
//! its own ([`GENAI_TARGET`]) so a log layer can leave it out and a trace exporter take it
//! alone.
//!
//! The GenAI span is opened when the request arrives, with every field declared `Empty`
//! (`tracing` takes no field it was not told of at creation), and filled in one pass when the
//! request is over (its body ended, failed or was dropped), from the same
//! [`RequestSummary`](crate::observe::RequestSummary) the observer gets. A span no subscriber
//! wants costs the callsite check and nothing else.

use std::fmt;
use std::sync::OnceLock;

use tracing::Span;
use tracing::field::{Empty, Field, Value};

use super::GENAI_TARGET;
use crate::extensions::RequestId;
use crate::observe::genai::{self, SpanName};
use crate::observe::{FinishReasons, RequestSummary, gen_ai_operation_name as gen_ai_operation};

/// The spans of one request: both entered while the layers below work, the `request` one
/// alone while the response body is polled. See the [module docs](self).
#[derive(Clone, Debug)]
pub(super) struct RequestSpans {
    /// `request{id}` (target `ai_router::request_id`): the context of log lines.
    log: Span,
    /// The GenAI SERVER span (target [`GENAI_TARGET`]); disabled when GenAI spans are off or
    /// nobody wants them.
    genai: Span,
}

/// Both spans entered; the GenAI one last, so it is the current span (the parent of the
/// attempt spans), and left first.
pub(super) struct Entered<'a> {
    _genai: tracing::span::Entered<'a>,
    _log: tracing::span::Entered<'a>,
}

impl RequestSpans {
    /// Opens the spans of request `id`; the GenAI one only when `genai` is on.
    pub(super) fn new(id: &RequestId, genai: bool) -> Self {
        // The target it always had (the module that opens it).
        let log = tracing::info_span!(target: "ai_router::request_id", "request", id = %id);
        let genai = if genai { genai_span(id) } else { Span::none() };
        Self { log, genai }
    }

    /// Enters both spans (while the layers below work: the attempt spans are opened then).
    pub(super) fn enter(&self) -> Entered<'_> {
        let log = self.log.enter();
        Entered {
            _genai: self.genai.enter(),
            _log: log,
        }
    }

    /// Enters the `request` span alone: what a response body's poll needs (a line logged while
    /// a stream is sent names its request). The GenAI span is left out: entering and leaving
    /// it costs its layers on every poll (an OpenTelemetry layer reads the clock on each exit),
    /// and it is entered once more when the request ends, which ends it there.
    pub(super) fn enter_log(&self) -> tracing::span::Entered<'_> {
        self.log.enter()
    }

    /// The GenAI span (a trace exporter's SERVER span).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(super) fn genai(&self) -> &Span {
        &self.genai
    }

    /// Fills the GenAI span in from `summary`, inside it: its last exit is the request's end
    /// (an OpenTelemetry layer ends the span there, whenever it is closed).
    pub(super) fn record(&self, summary: &RequestSummary) {
        let _entered = self.genai.enter();
        record(&self.genai, summary);
    }
}

/// Opens the GenAI request span (kind SERVER), every GenAI field still empty.
fn genai_span(id: &RequestId) -> Span {
    tracing::info_span!(
        target: GENAI_TARGET,
        "request",
        id = %id,
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        gen_ai.operation.name = Empty,
        gen_ai.provider.name = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.id = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.cache_read.input_tokens = Empty,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.request.top_p = Empty,
        gen_ai.conversation.id = Empty,
        enduser.id = Empty,
        ai_router.key = Empty,
        ai_router.attempts = Empty,
        ai_router.outcome = Empty,
        http.request.method = Empty,
        url.path = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// The request span's fields, looked up once (one callsite, so the same for every span).
struct Fields {
    name: Field,
    status: Field,
    operation: Field,
    provider: Field,
    request_model: Field,
    response_model: Field,
    response_id: Field,
    finish_reasons: Field,
    input_tokens: Field,
    output_tokens: Field,
    cached_tokens: Field,
    max_tokens: Field,
    temperature: Field,
    top_p: Field,
    conversation: Field,
    enduser: Field,
    key: Field,
    attempts: Field,
    outcome: Field,
    method: Field,
    path: Field,
    status_code: Field,
    error_type: Field,
}

impl Fields {
    /// The fields of `span`'s callsite.
    fn of(span: &Span) -> Option<&'static Self> {
        static FIELDS: OnceLock<Option<Fields>> = OnceLock::new();
        let metadata = span.metadata()?;
        let cached = FIELDS
            .get_or_init(|| Self::lookup(metadata.fields()))
            .as_ref()?;
        (cached.name.callsite() == metadata.callsite()).then_some(cached)
    }

    fn lookup(fields: &tracing::field::FieldSet) -> Option<Self> {
        let field = |name: &str| fields.field(name);
        Some(Self {
            name: field("otel.name")?,
            status: field("otel.status_code")?,
            operation: field("gen_ai.operation.name")?,
            provider: field("gen_ai.provider.name")?,
            request_model: field("gen_ai.request.model")?,
            response_model: field("gen_ai.response.model")?,
            response_id: field("gen_ai.response.id")?,
            finish_reasons: field("gen_ai.response.finish_reasons")?,
            input_tokens: field("gen_ai.usage.input_tokens")?,
            output_tokens: field("gen_ai.usage.output_tokens")?,
            cached_tokens: field("gen_ai.usage.cache_read.input_tokens")?,
            max_tokens: field("gen_ai.request.max_tokens")?,
            temperature: field("gen_ai.request.temperature")?,
            top_p: field("gen_ai.request.top_p")?,
            conversation: field("gen_ai.conversation.id")?,
            enduser: field("enduser.id")?,
            key: field("ai_router.key")?,
            attempts: field("ai_router.attempts")?,
            outcome: field("ai_router.outcome")?,
            method: field("http.request.method")?,
            path: field("url.path")?,
            status_code: field("http.response.status_code")?,
            error_type: field("error.type")?,
        })
    }
}

/// `stop,length`: the finish reasons as one field (an OpenTelemetry exporter gets them as a
/// string array instead, see [`crate::otel`]).
struct Reasons(FinishReasons);

impl fmt::Display for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reason) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(reason.as_str())?;
        }
        Ok(())
    }
}

/// Fills the GenAI request span in from `summary`, in one record (one call into each layer).
fn record(span: &Span, summary: &RequestSummary) {
    if span.is_disabled() {
        return;
    }
    let Some(fields) = Fields::of(span) else {
        return;
    };
    let span_name = genai::span_name(summary);
    let owned_name = span_name.to_string();
    let name = owned_name.as_str();
    let owned_model;
    let request_model = match span_name {
        // The name ends with it: `chat openai/gpt-4o-mini`.
        SpanName::Target(operation, _) => name.get(operation.len() + 1..),
        _ => {
            owned_model = genai::request_model(summary).map(|model| model.to_string());
            owned_model.as_deref()
        }
    };
    let error_type = genai::error_type(summary);
    let usage = summary.usage;
    let input_tokens = usage.map(|u| int(u.input_tokens));
    let output_tokens = usage.map(|u| int(u.output_tokens));
    let cached_tokens = usage.map(|u| int(u.cached_tokens));
    let max_tokens = summary.request.max_tokens.map(int);
    let status_code = summary.status.map(|s| i64::from(s.as_u16()));
    let attempts = i64::from(summary.attempts);
    let operation = summary.endpoint.map(gen_ai_operation);
    let (outcome, method, path) = (
        summary.outcome.as_str(),
        summary.method.as_str(),
        crate::observe::genai::url_path(summary),
    );
    let error = "error";
    let provider = summary.provider.as_deref();
    let response_model = summary.response_model.as_deref();
    let response_id = summary.response_id.as_deref();
    let thread = summary.thread.as_deref();
    let identity = summary.identity.as_deref();
    let key = summary.key.as_deref();
    // With the `otel` feature the reasons go to the exporter as a string array instead.
    let reasons = (!cfg!(feature = "otel") && !summary.finish_reasons.is_empty())
        .then(|| tracing::field::display(Reasons(summary.finish_reasons)));
    let values: [(&Field, Option<&dyn Value>); 23] = [
        (&fields.name, Some(&name)),
        (
            &fields.status,
            genai::server_error(summary).then_some(&error as &dyn Value),
        ),
        (&fields.operation, value(&operation)),
        (&fields.provider, value(&provider)),
        (&fields.request_model, value(&request_model)),
        (&fields.response_model, value(&response_model)),
        (&fields.response_id, value(&response_id)),
        (
            &fields.finish_reasons,
            reasons.as_ref().map(|r| r as &dyn Value),
        ),
        (&fields.input_tokens, value(&input_tokens)),
        (&fields.output_tokens, value(&output_tokens)),
        (&fields.cached_tokens, value(&cached_tokens)),
        (&fields.max_tokens, value(&max_tokens)),
        (&fields.temperature, value(&summary.request.temperature)),
        (&fields.top_p, value(&summary.request.top_p)),
        (&fields.conversation, value(&thread)),
        (&fields.enduser, value(&identity)),
        (&fields.key, value(&key)),
        (&fields.attempts, Some(&attempts)),
        (&fields.outcome, Some(&outcome)),
        (&fields.method, Some(&method)),
        (&fields.path, Some(&path)),
        (&fields.status_code, value(&status_code)),
        (&fields.error_type, value(&error_type)),
    ];
    if let Some(metadata) = span.metadata() {
        span.record_all(&metadata.fields().value_set(&values));
    }
    #[cfg(feature = "otel")]
    crate::otel::finish_request_span(
        span,
        owned_name,
        summary.finish_reasons.iter().map(|r| r.as_str()),
    );
}

/// `value` as a signed integer field (an OpenTelemetry int; `tracing-opentelemetry` records
/// a `u64` as a string).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The value inside `option`, as a field value.
fn value<T: Value>(option: &Option<T>) -> Option<&dyn Value> {
    option.as_ref().map(|v| v as &dyn Value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt as _, Full};
    use tower::{ServiceBuilder, ServiceExt as _};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::{Context, SubscriberExt as _};
    use tracing_subscriber::registry::LookupSpan;

    use crate::extensions::{Endpoint, Principal, RouteTarget};
    use crate::observe::{
        AnswerDetails, FinishReason, FinishReasons, RequestLog, RequestParams, Usage,
    };
    use crate::request_id::{GENAI_TARGET, SetRequestIdLayer};

    /// The fields of every `request` span, as text.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<BTreeMap<String, String>>>);

    impl Visit for Captured {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0
                .lock()
                .unwrap()
                .insert(field.name().to_owned(), format!("{value:?}"));
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            self.0
                .lock()
                .unwrap()
                .insert(field.name().to_owned(), value.to_owned());
        }
    }

    impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Captured {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            if attrs.metadata().name() == "request" {
                attrs.record(&mut self.clone());
            }
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            if ctx.span(id).is_some_and(|span| span.name() == "request") {
                values.record(&mut self.clone());
            }
        }
    }

    #[tokio::test]
    async fn without_genai_spans_the_request_span_has_its_id_alone() {
        let captured = Captured::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
        tracing::callsite::rebuild_interest_cache();
        let service = ServiceBuilder::new()
            .layer(
                SetRequestIdLayer::new()
                    .genai_spans(false)
                    .observer(|_: &crate::observe::RequestSummary| {}),
            )
            .service_fn(|request: Request<()>| async move {
                let log = request.extensions().get::<RequestLog>().unwrap();
                log.record_target(&RouteTarget::new(
                    "openai",
                    "gpt-4o-mini",
                    Endpoint::ChatCompletions,
                ));
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
            });
        let request = Request::post("/v3/router/chat/completions")
            .body(())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        let fields: Vec<String> = captured.0.lock().unwrap().keys().cloned().collect();
        assert_eq!(fields, ["id"]);
    }

    #[tokio::test]
    async fn the_request_span_gets_the_genai_fields_when_the_body_ends() {
        let captured = Captured::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
        // Another test's thread may have registered the callsite while this subscriber was
        // being set: make the cache see it.
        tracing::callsite::rebuild_interest_cache();
        let service = ServiceBuilder::new()
            .layer(SetRequestIdLayer::new().observer(|_: &crate::observe::RequestSummary| {}))
            .service_fn(|request: Request<()>| async move {
                let log = request.extensions().get::<RequestLog>().unwrap();
                log.record_principal(&Principal::new("team-a"));
                log.record_target(&RouteTarget::new(
                    "openai",
                    "gpt-4o-mini",
                    Endpoint::ChatCompletions,
                ));
                let params = RequestParams {
                    max_tokens: Some(64),
                    temperature: Some(0.5),
                    top_p: None,
                    stream: false,
                };
                log.record_request(params, Some("user-7".into()), Some("conv-9".into()));
                let mut reasons = FinishReasons::new();
                reasons.push(FinishReason::Stop);
                reasons.push(FinishReason::Length);
                let answer = AnswerDetails {
                    usage: Some(Usage {
                        input_tokens: 11,
                        output_tokens: 7,
                        total_tokens: 18,
                        cached_tokens: 3,
                    }),
                    id: Some("chatcmpl-1".into()),
                    model: Some("gpt-4o-mini-2024-07-18".into()),
                    finish_reasons: reasons,
                };
                log.record_body(answer, None, crate::observe::Outcome::Completed);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
            });
        let request = Request::post("/v3/router/chat/completions")
            .body(())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        // Nothing but the id and the kind until the body is over.
        let before: Vec<String> = captured.0.lock().unwrap().keys().cloned().collect();
        assert_eq!(before, ["id", "otel.kind"]);
        response.into_body().collect().await.unwrap();
        let fields = captured.0.lock().unwrap().clone();
        let mut expected = vec![
            ("otel.name", "chat openai/gpt-4o-mini"),
            ("otel.kind", "server"),
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "openai/gpt-4o-mini"),
            ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            ("gen_ai.response.id", "chatcmpl-1"),
            ("gen_ai.usage.input_tokens", "11"),
            ("gen_ai.usage.output_tokens", "7"),
            ("gen_ai.usage.cache_read.input_tokens", "3"),
            ("gen_ai.request.max_tokens", "64"),
            ("gen_ai.request.temperature", "0.5"),
            ("gen_ai.conversation.id", "conv-9"),
            ("enduser.id", "user-7"),
            ("ai_router.key", "team-a"),
            ("ai_router.attempts", "1"),
            ("ai_router.outcome", "completed"),
            ("http.request.method", "POST"),
            ("url.path", "/v3/router/chat/completions"),
            ("http.response.status_code", "200"),
        ];
        // With `otel`, the reasons go to the exporter as a string array instead.
        if cfg!(not(feature = "otel")) {
            expected.push(("gen_ai.response.finish_reasons", "stop,length"));
        }
        for (key, value) in &expected {
            assert_eq!(fields.get(*key).map(String::as_str), Some(*value), "{key}");
        }
        // `id`, plus the above; no top_p (not sent), no error.
        assert_eq!(fields.len(), expected.len() + 1, "{fields:#?}");
    }

    /// The target of every span left, in order.
    #[derive(Clone, Default)]
    struct Exits(Arc<Mutex<Vec<&'static str>>>);

    impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Exits {
        fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
            if let Some(span) = ctx.span(id) {
                self.0.lock().unwrap().push(span.metadata().target());
            }
        }
    }

    impl Exits {
        fn of(&self, target: &str) -> usize {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|t| **t == target)
                .count()
        }
    }

    #[tokio::test]
    async fn a_body_poll_enters_the_log_span_alone_and_the_genai_span_is_left_at_the_end() {
        let exits = Exits::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(exits.clone()));
        tracing::callsite::rebuild_interest_cache();
        let service = ServiceBuilder::new()
            .layer(SetRequestIdLayer::new().observer(|_: &crate::observe::RequestSummary| {}))
            .service_fn(|_: Request<()>| async move {
                let frames = ["a", "b", "c"].map(|data| {
                    Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(data.as_bytes())))
                });
                let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                Ok::<_, Infallible>(Response::new(body))
            });
        let response = service.oneshot(Request::new(())).await.unwrap();
        let (log_at_head, genai_at_head) =
            (exits.of("ai_router::request_id"), exits.of(GENAI_TARGET));
        assert!(genai_at_head >= 1, "entered while the layers below work");
        let mut body = response.into_body();
        let mut polls = 0;
        while body.frame().await.is_some() {
            polls += 1;
        }
        assert_eq!(polls, 3);
        // Each poll entered the log span; the GenAI span once more, when the request ended.
        assert!(exits.of("ai_router::request_id") >= log_at_head + polls);
        assert_eq!(exits.of(GENAI_TARGET), genai_at_head + 1);
    }

    #[tokio::test]
    async fn a_failed_request_has_an_error_type_and_status() {
        let captured = Captured::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
        tracing::callsite::rebuild_interest_cache();
        let service = ServiceBuilder::new()
            .layer(SetRequestIdLayer::new().observer(|_: &crate::observe::RequestSummary| {}))
            .service_fn(|_: Request<()>| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                Ok::<_, Infallible>(response)
            });
        let response = service.oneshot(Request::new(())).await.unwrap();
        response.into_body().collect().await.unwrap();
        let fields = captured.0.lock().unwrap().clone();
        // No endpoint matched: the span is named after the method.
        assert_eq!(fields["otel.name"], "GET");
        assert_eq!(fields["error.type"], "429");
        // A 4xx is the client's: the server span's status stays unset.
        assert!(!fields.contains_key("otel.status_code"));
        assert_eq!(fields["http.response.status_code"], "429");
        assert!(!fields.contains_key("gen_ai.operation.name"));
    }
}

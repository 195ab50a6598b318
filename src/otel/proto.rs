//! The OTLP protobuf of the router's spans, written straight from request summaries.
//!
//! An `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` holding one
//! `ResourceSpans` (resource `service.name`) with one `ScopeSpans` (scope `ai-router`, the
//! crate's version): per request, its SERVER span and a CLIENT span per upstream attempt. No
//! intermediate message structs: each span is written into a reused scratch buffer (a nested
//! message needs its length first; the small leaves, `KeyValue` and `AnyValue`, have theirs
//! computed exactly), then appended with its length. Field numbers are those of
//! opentelemetry-proto v1 (`trace.proto`, `common.proto`, `resource.proto`,
//! `trace_service.proto`); the tests decode the result with the generated types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::encoding::{WireType, encoded_len_varint, key_len};

use crate::observe::genai::{self, RequestModel, SpanName};
use crate::observe::{AttemptOutcome, AttemptRecord, FinishReasons, RequestSummary};

/// Field numbers, by message.
mod field {
    /// `ExportTraceServiceRequest.resource_spans`.
    pub(super) const REQUEST_RESOURCE_SPANS: u32 = 1;
    /// `ResourceSpans.resource`.
    pub(super) const RESOURCE: u32 = 1;
    /// `ResourceSpans.scope_spans`.
    pub(super) const SCOPE_SPANS: u32 = 2;
    /// `Resource.attributes`.
    pub(super) const RESOURCE_ATTRIBUTES: u32 = 1;
    /// `ScopeSpans.scope`.
    pub(super) const SCOPE: u32 = 1;
    /// `ScopeSpans.spans`.
    pub(super) const SPANS: u32 = 2;
    /// `InstrumentationScope.name`.
    pub(super) const SCOPE_NAME: u32 = 1;
    /// `InstrumentationScope.version`.
    pub(super) const SCOPE_VERSION: u32 = 2;
    /// `Span.trace_id` (16 bytes).
    pub(super) const TRACE_ID: u32 = 1;
    /// `Span.span_id` (8 bytes).
    pub(super) const SPAN_ID: u32 = 2;
    /// `Span.trace_state`.
    pub(super) const TRACE_STATE: u32 = 3;
    /// `Span.parent_span_id` (8 bytes; absent for a root span).
    pub(super) const PARENT_SPAN_ID: u32 = 4;
    /// `Span.name`.
    pub(super) const NAME: u32 = 5;
    /// `Span.kind` (enum `SpanKind`).
    pub(super) const KIND: u32 = 6;
    /// `Span.start_time_unix_nano` (fixed64).
    pub(super) const START: u32 = 7;
    /// `Span.end_time_unix_nano` (fixed64).
    pub(super) const END: u32 = 8;
    /// `Span.attributes`.
    pub(super) const ATTRIBUTES: u32 = 9;
    /// `Span.status`.
    pub(super) const STATUS: u32 = 15;
    /// `Span.flags` (fixed32).
    pub(super) const FLAGS: u32 = 16;
    /// `Status.code` (enum `StatusCode`).
    pub(super) const STATUS_CODE: u32 = 3;
    /// `KeyValue.key`.
    pub(super) const KEY: u32 = 1;
    /// `KeyValue.value`.
    pub(super) const VALUE: u32 = 2;
    /// `AnyValue.string_value`.
    pub(super) const STRING: u32 = 1;
    /// `AnyValue.int_value`.
    pub(super) const INT: u32 = 3;
    /// `AnyValue.double_value`.
    pub(super) const DOUBLE: u32 = 4;
    /// `AnyValue.array_value`.
    pub(super) const ARRAY: u32 = 5;
    /// `ArrayValue.values`.
    pub(super) const ARRAY_VALUES: u32 = 1;
}

/// `SPAN_KIND_SERVER`.
const KIND_SERVER: u64 = 2;
/// `SPAN_KIND_CLIENT`.
const KIND_CLIENT: u64 = 3;
/// `STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;
/// W3C trace flags: sampled (only sampled requests are exported).
const FLAG_SAMPLED: u32 = 0x01;
/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: whether the parent is remote is known.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`: the parent is remote (the caller's span).
const FLAG_IS_REMOTE: u32 = 0x200;

/// `KeyValue.key` set to the literal `$key`, encoded at compile time (tag, length, bytes):
/// an attribute's key is most of its bytes, and the same in every span.
macro_rules! key {
    ($key:literal) => {{
        const ENCODED: [u8; $key.len() + 2] = encoded_key::<{ $key.len() + 2 }>($key);
        &ENCODED
    }};
}

/// `KeyValue.key` set to `key`, as [`key!`] writes it: `N` is its length plus 2.
const fn encoded_key<const N: usize>(key: &str) -> [u8; N] {
    let bytes = key.as_bytes();
    // One-byte tag and length (checked when compiled).
    assert!(bytes.len() + 2 == N && bytes.len() < 0x80 && field::KEY < 16);
    let mut out = [0; N];
    out[0] = ((field::KEY << 3) | WireType::LengthDelimited as u32) as u8;
    out[1] = bytes.len() as u8;
    let mut i = 0;
    while i < bytes.len() {
        out[i + 2] = bytes[i];
        i += 1;
    }
    out
}

/// The instrumentation scope the spans are exported under.
const SCOPE_NAME: &str = "ai-router";

/// Writes export requests: [`push`](Self::push) the finished requests of a batch, then
/// [`finish`](Self::finish). Its buffers are reused from batch to batch.
#[derive(Debug)]
pub(crate) struct Encoder {
    /// `ResourceSpans.resource`, key and length included (the same in every request).
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, key and length included.
    scope: Vec<u8>,
    /// The `ScopeSpans.spans` fields written so far.
    spans: Vec<u8>,
    /// One span's message, before its length is known.
    scratch: Vec<u8>,
    /// How many spans [`spans`](Self::spans) holds.
    count: usize,
}

impl Encoder {
    /// An encoder for spans of service `service_name`.
    pub(crate) fn new(service_name: &str) -> Self {
        let mut attributes = Vec::new();
        attribute(
            &mut attributes,
            field::RESOURCE_ATTRIBUTES,
            key!("service.name"),
            Value::Str(service_name),
        );
        let mut resource = Vec::new();
        bytes_field(&mut resource, field::RESOURCE, &attributes);
        let mut scope_message = Vec::new();
        str_field(&mut scope_message, field::SCOPE_NAME, &[SCOPE_NAME]);
        str_field(
            &mut scope_message,
            field::SCOPE_VERSION,
            &[env!("CARGO_PKG_VERSION")],
        );
        let mut scope = Vec::new();
        bytes_field(&mut scope, field::SCOPE, &scope_message);
        Self {
            resource,
            scope,
            spans: Vec::new(),
            scratch: Vec::new(),
            count: 0,
        }
    }

    /// How many spans are waiting for [`finish`](Self::finish).
    pub(crate) fn span_count(&self) -> usize {
        self.count
    }

    /// Adds the spans of a request that ended at `end`: its SERVER span and a CLIENT span per
    /// attempt with a span id. Nothing for a request without a trace context.
    pub(crate) fn push(&mut self, end: SystemTime, summary: &RequestSummary) {
        let Some(trace) = &summary.trace else {
            return;
        };
        let end_ns = unix_nanos(end);
        let start_ns = end_ns.saturating_sub(nanos(summary.duration));
        let trace_state = trace.trace_state().and_then(|s| s.to_str().ok());
        let server = SpanHead {
            trace_id: trace.trace_id(),
            span_id: trace.span_id(),
            parent_span_id: trace.parent_span_id(),
            trace_state,
            kind: KIND_SERVER,
            start: start_ns,
            end: end_ns,
            flags: FLAG_SAMPLED
                | FLAG_HAS_IS_REMOTE
                | if trace.parent_span_id().is_some() {
                    FLAG_IS_REMOTE
                } else {
                    0
                },
            error: genai::server_error(summary),
        };
        let name = span_name_parts(genai::span_name(summary));
        self.scratch.clear();
        server.encode(&mut self.scratch, &name);
        server_attributes(&mut self.scratch, summary);
        server.encode_tail(&mut self.scratch);
        self.append_span();

        for record in &summary.attempt_records {
            let Some(span_id) = record.span_id else {
                continue;
            };
            let start = start_ns.saturating_add(nanos(record.start));
            let end = match record.outcome {
                // Never ended: dropped with the request (the client went away).
                AttemptOutcome::Pending => end_ns.max(start),
                _ => start.saturating_add(nanos(record.duration)),
            };
            let client = SpanHead {
                trace_id: trace.trace_id(),
                span_id,
                parent_span_id: Some(trace.span_id()),
                trace_state,
                kind: KIND_CLIENT,
                start,
                end,
                flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
                error: record.error_type().is_some(),
            };
            let operation = crate::observe::gen_ai_operation_name(record.endpoint);
            self.scratch.clear();
            client.encode(&mut self.scratch, &[operation, " ", &*record.model, "", ""]);
            client_attributes(&mut self.scratch, operation, record);
            client.encode_tail(&mut self.scratch);
            self.append_span();
        }
    }

    /// Appends the span in the scratch buffer to the spans, with its key and length.
    fn append_span(&mut self) {
        bytes_field(&mut self.spans, field::SPANS, &self.scratch);
        self.count += 1;
    }

    /// The export request holding every span pushed since the last call (none left after).
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let scope_spans = self.scope.len() + self.spans.len();
        let resource_spans =
            self.resource.len() + key_len(field::SCOPE_SPANS) + delimited_len(scope_spans);
        let mut out = Vec::with_capacity(
            key_len(field::REQUEST_RESOURCE_SPANS) + delimited_len(resource_spans),
        );
        encode_key(
            field::REQUEST_RESOURCE_SPANS,
            WireType::LengthDelimited,
            &mut out,
        );
        encode_varint(resource_spans as u64, &mut out);
        out.extend_from_slice(&self.resource);
        encode_key(field::SCOPE_SPANS, WireType::LengthDelimited, &mut out);
        encode_varint(scope_spans as u64, &mut out);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.spans);
        self.spans.clear();
        self.count = 0;
        out
    }
}

/// What a span has besides its name and attributes.
struct SpanHead<'a> {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    trace_state: Option<&'a str>,
    kind: u64,
    start: u64,
    end: u64,
    flags: u32,
    /// Status `ERROR` (else unset: no status at all).
    error: bool,
}

impl SpanHead<'_> {
    /// The fields before the attributes; `name` is the concatenation of its parts.
    fn encode(&self, buf: &mut Vec<u8>, name: &[&str; 5]) {
        bytes_field(buf, field::TRACE_ID, &self.trace_id);
        bytes_field(buf, field::SPAN_ID, &self.span_id);
        if let Some(state) = self.trace_state.filter(|s| !s.is_empty()) {
            str_field(buf, field::TRACE_STATE, &[state]);
        }
        if let Some(parent) = &self.parent_span_id {
            bytes_field(buf, field::PARENT_SPAN_ID, parent);
        }
        str_field(buf, field::NAME, name);
        encode_key(field::KIND, WireType::Varint, buf);
        encode_varint(self.kind, buf);
        encode_key(field::START, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&self.start.to_le_bytes());
        encode_key(field::END, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&self.end.to_le_bytes());
    }

    /// The fields after the attributes: status, flags.
    fn encode_tail(&self, buf: &mut Vec<u8>) {
        if self.error {
            // Status { code: ERROR }: a key and a one-byte varint.
            encode_key(field::STATUS, WireType::LengthDelimited, buf);
            encode_varint(
                (key_len(field::STATUS_CODE) + encoded_len_varint(STATUS_ERROR)) as u64,
                buf,
            );
            encode_key(field::STATUS_CODE, WireType::Varint, buf);
            encode_varint(STATUS_ERROR, buf);
        }
        encode_key(field::FLAGS, WireType::ThirtyTwoBit, buf);
        buf.extend_from_slice(&self.flags.to_le_bytes());
    }
}

/// The SERVER span's name, as parts to concatenate.
fn span_name_parts(name: SpanName<'_>) -> [&str; 5] {
    match name {
        SpanName::Target(operation, RequestModel { provider, model }) => {
            [operation, " ", provider, "/", model]
        }
        SpanName::Operation(operation) => [operation, "", "", "", ""],
        SpanName::Method(method) => [method, "", "", "", ""],
    }
}

/// The SERVER span's attributes, those `request_id::span` records through `tracing`.
fn server_attributes(buf: &mut Vec<u8>, s: &RequestSummary) {
    let usage = s.usage;
    let attributes: [(&[u8], Option<Value<'_>>); 22] = [
        (key!("id"), Some(Value::Str(s.id.as_str()))),
        (
            key!("gen_ai.operation.name"),
            s.endpoint
                .map(|e| Value::Str(crate::observe::gen_ai_operation_name(e))),
        ),
        (
            key!("gen_ai.provider.name"),
            s.provider.as_deref().map(Value::Str),
        ),
        (
            key!("gen_ai.request.model"),
            genai::request_model(s).map(Value::Model),
        ),
        (
            key!("gen_ai.response.model"),
            s.response_model.as_deref().map(Value::Str),
        ),
        (
            key!("gen_ai.response.id"),
            s.response_id.as_deref().map(Value::Str),
        ),
        (
            key!("gen_ai.response.finish_reasons"),
            (!s.finish_reasons.is_empty()).then_some(Value::Reasons(s.finish_reasons)),
        ),
        (
            key!("gen_ai.usage.input_tokens"),
            usage.map(|u| Value::Int(int(u.input_tokens))),
        ),
        (
            key!("gen_ai.usage.output_tokens"),
            usage.map(|u| Value::Int(int(u.output_tokens))),
        ),
        (
            key!("gen_ai.usage.cache_read.input_tokens"),
            usage.map(|u| Value::Int(int(u.cached_tokens))),
        ),
        (
            key!("gen_ai.request.max_tokens"),
            s.request.max_tokens.map(|t| Value::Int(int(t))),
        ),
        (
            key!("gen_ai.request.temperature"),
            s.request.temperature.map(Value::Double),
        ),
        (
            key!("gen_ai.request.top_p"),
            s.request.top_p.map(Value::Double),
        ),
        (
            key!("gen_ai.conversation.id"),
            s.thread.as_deref().map(Value::Str),
        ),
        (key!("enduser.id"), s.identity.as_deref().map(Value::Str)),
        (key!("ai_router.key"), s.key.as_deref().map(Value::Str)),
        (
            key!("ai_router.attempts"),
            Some(Value::Int(i64::from(s.attempts))),
        ),
        (
            key!("ai_router.outcome"),
            Some(Value::Str(s.outcome.as_str())),
        ),
        (
            key!("http.request.method"),
            Some(Value::Str(s.method.as_str())),
        ),
        (key!("url.path"), Some(Value::Str(genai::url_path(s)))),
        (
            key!("http.response.status_code"),
            s.status.map(|c| Value::Int(i64::from(c.as_u16()))),
        ),
        (key!("error.type"), genai::error_type(s).map(Value::Str)),
    ];
    for (key, value) in attributes {
        if let Some(value) = value {
            attribute(buf, field::ATTRIBUTES, key, value);
        }
    }
}

/// A CLIENT span's attributes, those `resilience::span` records through `tracing`.
fn client_attributes(buf: &mut Vec<u8>, operation: &str, r: &AttemptRecord) {
    let outcome = match r.outcome {
        AttemptOutcome::Pending => None,
        outcome => Some(Value::Str(outcome.as_str())),
    };
    let attributes: [(&[u8], Option<Value<'_>>); 9] = [
        (key!("gen_ai.operation.name"), Some(Value::Str(operation))),
        (key!("gen_ai.provider.name"), Some(Value::Str(&r.provider))),
        (key!("gen_ai.request.model"), Some(Value::Str(&r.model))),
        (
            key!("ai_router.attempt.number"),
            Some(Value::Int(i64::from(r.number))),
        ),
        (key!("ai_router.attempt.outcome"), outcome),
        (
            key!("http.response.status_code"),
            r.status.map(|c| Value::Int(i64::from(c.as_u16()))),
        ),
        (key!("error.type"), r.error_type().map(Value::Str)),
        (
            key!("server.address"),
            r.server.as_ref().map(|s| Value::Str(&s.host)),
        ),
        (
            key!("server.port"),
            r.server.as_ref().map(|s| Value::Int(i64::from(s.port))),
        ),
    ];
    for (key, value) in attributes {
        if let Some(value) = value {
            attribute(buf, field::ATTRIBUTES, key, value);
        }
    }
}

/// An attribute's value (an `AnyValue`).
#[derive(Clone, Copy)]
enum Value<'a> {
    /// `string_value`.
    Str(&'a str),
    /// `string_value`: `{provider}/{model}`.
    Model(RequestModel<'a>),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `array_value` of `string_value`s.
    Reasons(FinishReasons),
}

impl Value<'_> {
    /// The length of the `AnyValue` message.
    fn encoded_len(&self) -> usize {
        match self {
            Self::Str(s) => key_len(field::STRING) + delimited_len(s.len()),
            Self::Model(m) => {
                key_len(field::STRING) + delimited_len(m.provider.len() + 1 + m.model.len())
            }
            Self::Int(v) => key_len(field::INT) + encoded_len_varint(*v as u64),
            Self::Double(_) => key_len(field::DOUBLE) + 8,
            Self::Reasons(reasons) => key_len(field::ARRAY) + delimited_len(array_len(reasons)),
        }
    }

    /// Writes the `AnyValue` message (without its length).
    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Self::Str(s) => string_field(buf, field::STRING, s),
            Self::Model(m) => str_field(buf, field::STRING, &[m.provider, "/", m.model]),
            Self::Int(v) => {
                encode_key(field::INT, WireType::Varint, buf);
                // int64: negative values as their two's complement, as protobuf does.
                encode_varint(*v as u64, buf);
            }
            Self::Double(v) => {
                encode_key(field::DOUBLE, WireType::SixtyFourBit, buf);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            Self::Reasons(reasons) => {
                encode_key(field::ARRAY, WireType::LengthDelimited, buf);
                encode_varint(array_len(reasons) as u64, buf);
                for reason in reasons.iter() {
                    let value = Value::Str(reason.as_str());
                    encode_key(field::ARRAY_VALUES, WireType::LengthDelimited, buf);
                    encode_varint(value.encoded_len() as u64, buf);
                    value.encode(buf);
                }
            }
        }
    }
}

/// The length of the `ArrayValue` of `reasons`' names.
fn array_len(reasons: &FinishReasons) -> usize {
    reasons
        .iter()
        .map(|reason| {
            key_len(field::ARRAY_VALUES) + delimited_len(Value::Str(reason.as_str()).encoded_len())
        })
        .sum()
}

/// prost's `encode_key`, with a one-byte fast path (every field here has a number below 16:
/// a span's ~250 keys and lengths are most of its encoding).
#[inline]
fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    let key = (tag << 3) | wire_type as u32;
    match u8::try_from(key) {
        Ok(byte) if byte < 0x80 => buf.push(byte),
        _ => prost::encoding::encode_key(tag, wire_type, buf),
    }
}

/// prost's `encode_varint`, with a one-byte fast path (most lengths and small integers).
#[inline]
fn encode_varint(value: u64, buf: &mut Vec<u8>) {
    match u8::try_from(value) {
        Ok(byte) if byte < 0x80 => buf.push(byte),
        _ => prost::encoding::encode_varint(value, buf),
    }
}

/// Writes field `tag`, a `KeyValue` of `key` (encoded by [`key!`]) and `value`.
fn attribute(buf: &mut Vec<u8>, tag: u32, key: &[u8], value: Value<'_>) {
    let value_len = value.encoded_len();
    let len = key.len() + key_len(field::VALUE) + delimited_len(value_len);
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    buf.extend_from_slice(key);
    encode_key(field::VALUE, WireType::LengthDelimited, buf);
    encode_varint(value_len as u64, buf);
    value.encode(buf);
}

/// Writes field `tag`, a string: the concatenation of `parts`.
fn str_field(buf: &mut Vec<u8>, tag: u32, parts: &[&str]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(parts.iter().map(|p| p.len()).sum::<usize>() as u64, buf);
    for part in parts {
        buf.extend_from_slice(part.as_bytes());
    }
}

/// Writes field `tag`, the string `value` ([`str_field`] of one part, without the loops).
fn string_field(buf: &mut Vec<u8>, tag: u32, value: &str) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value.as_bytes());
}

/// Writes field `tag`, bytes (or an encoded message).
fn bytes_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// The length of a length-delimited payload of `len` bytes, its length included.
fn delimited_len(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

/// `time` in nanoseconds since the Unix epoch (0 before it).
fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, nanos)
}

/// `duration` in nanoseconds, saturating.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// `value` as an `int64` (saturating, as the `tracing` span does).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use http::{HeaderMap, Method, StatusCode, Uri};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;

    use super::*;
    use crate::extensions::{
        Endpoint, Principal, RequestId, RouteTarget, TRACEPARENT, TRACESTATE, TraceContext,
    };
    use crate::observe::{
        AnswerDetails, End, FinishReason, Outcome, RequestHead, RequestLog, RequestParams,
        ServerAddress, Usage,
    };

    const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
    const PARENT: &str = "b7ad6b7169203331";

    /// A trace context joining the caller's sampled (or not) trace, with a `tracestate`.
    pub(in crate::otel) fn joined(sampled: bool) -> TraceContext {
        let mut headers = HeaderMap::new();
        let flags = if sampled { "01" } else { "00" };
        let traceparent = format!("00-{TRACE_ID}-{PARENT}-{flags}");
        headers.insert(TRACEPARENT, traceparent.parse().unwrap());
        headers.insert(TRACESTATE, "vendor=x1".parse().unwrap());
        TraceContext::from_headers(&headers)
    }

    /// What the outermost layer knows at the end: `status`, 50 ms after the request arrived.
    pub(in crate::otel) fn finish(log: &RequestLog, status: Option<u16>) -> RequestSummary {
        let head = RequestHead {
            id: RequestId::generate(),
            method: Method::POST,
            uri: Uri::from_static("/v1/chat/completions"),
        };
        let end = End {
            status: status.map(|s| StatusCode::from_u16(s).unwrap()),
            latency: Duration::from_millis(20),
            duration: Duration::from_millis(50),
            outcome: Outcome::Completed,
        };
        log.summary(&head, end)
    }

    /// A chat request that joined the caller's trace, answered after a failed first attempt
    /// (503) by a second one (200, with a server address), with usage and finish reasons.
    pub(in crate::otel) fn full_summary() -> RequestSummary {
        let log = RequestLog::traced(joined(true));
        log.record_principal(&Principal::new("team-a"));
        log.record_target(&RouteTarget::new(
            "openai",
            "gpt-4o-mini",
            Endpoint::ChatCompletions,
        ));
        let params = RequestParams {
            max_tokens: Some(64),
            temperature: Some(0.5),
            top_p: Some(0.9),
            stream: false,
        };
        log.record_request(params, Some("user-7".into()), Some("conv-9".into()));
        let first = log.start_attempt(
            AttemptRecord::new(
                1,
                Endpoint::ChatCompletions,
                "openai".into(),
                "gpt-4o-mini".into(),
                Duration::from_millis(2),
            )
            .with_span_id(Some([1; 8])),
        );
        log.end_attempt(
            first,
            Duration::from_millis(10),
            AttemptOutcome::Failed,
            Some(StatusCode::SERVICE_UNAVAILABLE),
            None,
        );
        let second = log.start_attempt(
            AttemptRecord::new(
                2,
                Endpoint::ChatCompletions,
                "azure".into(),
                "gpt-4o".into(),
                Duration::from_millis(15),
            )
            .with_span_id(Some([2; 8])),
        );
        log.record_server(&ServerAddress {
            host: "api.example.com".into(),
            port: 443,
        });
        log.end_attempt(
            second,
            Duration::from_millis(20),
            AttemptOutcome::Answered,
            Some(StatusCode::OK),
            None,
        );
        // An attempt without a span id (not traced) has no span.
        log.start_attempt(AttemptRecord::new(
            3,
            Endpoint::ChatCompletions,
            "x".into(),
            "y".into(),
            Duration::ZERO,
        ));
        log.record_attempts(2);
        let mut reasons = FinishReasons::new();
        reasons.push(FinishReason::Stop);
        reasons.push(FinishReason::Length);
        log.record_body(
            AnswerDetails {
                usage: Some(Usage {
                    input_tokens: 11,
                    output_tokens: 7,
                    total_tokens: 18,
                    cached_tokens: 3,
                }),
                id: Some(Arc::from("chatcmpl-1")),
                model: Some(Arc::from("gpt-4o-mini-2024-07-18")),
                finish_reasons: reasons,
            },
            None,
            Outcome::Completed,
        );
        finish(&log, Some(200))
    }

    /// `summaries` (each ended at `end`) encoded and decoded.
    fn round_trip(end: SystemTime, summaries: &[&RequestSummary]) -> ExportTraceServiceRequest {
        let mut encoder = Encoder::new("gateway-1");
        for summary in summaries {
            encoder.push(end, summary);
        }
        let bytes = encoder.finish();
        assert_eq!(encoder.span_count(), 0);
        ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap()
    }

    /// The spans of a decoded request, checking its resource and scope.
    pub(in crate::otel) fn spans(request: ExportTraceServiceRequest) -> Vec<Span> {
        assert_eq!(request.resource_spans.len(), 1);
        let resource_spans = request.resource_spans.into_iter().next().unwrap();
        let resource = resource_spans.resource.unwrap();
        assert_eq!(
            attributes(&resource.attributes),
            BTreeMap::from([("service.name".to_owned(), string("gateway-1"))])
        );
        assert_eq!(resource_spans.scope_spans.len(), 1);
        let scope_spans = resource_spans.scope_spans.into_iter().next().unwrap();
        let scope = scope_spans.scope.unwrap();
        assert_eq!(scope.name, "ai-router");
        assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
        scope_spans.spans
    }

    /// Attributes by key (each key once).
    fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, Any> {
        let map: BTreeMap<String, Any> = attributes
            .iter()
            .map(|kv| {
                let value = kv.value.clone().unwrap().value.unwrap();
                (kv.key.clone(), value)
            })
            .collect();
        assert_eq!(map.len(), attributes.len(), "a key twice");
        map
    }

    fn string(value: &str) -> Any {
        Any::StringValue(value.to_owned())
    }

    fn expected(pairs: Vec<(&str, Any)>) -> BTreeMap<String, Any> {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn unix(time: SystemTime) -> u64 {
        unix_nanos(time)
    }

    #[test]
    fn a_request_with_two_attempts_makes_a_server_span_and_two_client_spans() {
        let summary = full_summary();
        let end = SystemTime::now();
        let spans = spans(round_trip(end, &[&summary]));
        assert_eq!(spans.len(), 3);
        let trace = summary.trace.as_ref().unwrap();
        let end_ns = unix(end);
        let start_ns = end_ns - 50_000_000;

        let server = &spans[0];
        assert_eq!(hex(&server.trace_id), TRACE_ID);
        assert_eq!(server.span_id, trace.span_id());
        assert_eq!(hex(&server.parent_span_id), PARENT);
        assert_eq!(server.trace_state, "vendor=x1");
        assert_eq!(server.name, "chat openai/gpt-4o-mini");
        assert_eq!(server.kind, 2);
        assert_eq!(
            (server.start_time_unix_nano, server.end_time_unix_nano),
            (start_ns, end_ns)
        );
        assert_eq!(server.status, None);
        // Sampled, and the parent is known to be remote.
        assert_eq!(server.flags, 0x301);
        let reasons = Any::ArrayValue(ArrayValue {
            values: ["stop", "length"]
                .map(|r| AnyValue {
                    value: Some(string(r)),
                })
                .to_vec(),
        });
        assert_eq!(
            attributes(&server.attributes),
            expected(vec![
                ("id", string(summary.id.as_str())),
                ("gen_ai.operation.name", string("chat")),
                ("gen_ai.provider.name", string("openai")),
                ("gen_ai.request.model", string("openai/gpt-4o-mini")),
                ("gen_ai.response.model", string("gpt-4o-mini-2024-07-18")),
                ("gen_ai.response.id", string("chatcmpl-1")),
                ("gen_ai.response.finish_reasons", reasons),
                ("gen_ai.usage.input_tokens", Any::IntValue(11)),
                ("gen_ai.usage.output_tokens", Any::IntValue(7)),
                ("gen_ai.usage.cache_read.input_tokens", Any::IntValue(3)),
                ("gen_ai.request.max_tokens", Any::IntValue(64)),
                ("gen_ai.request.temperature", Any::DoubleValue(0.5)),
                ("gen_ai.request.top_p", Any::DoubleValue(0.9)),
                ("gen_ai.conversation.id", string("conv-9")),
                ("enduser.id", string("user-7")),
                ("ai_router.key", string("team-a")),
                ("ai_router.attempts", Any::IntValue(2)),
                ("ai_router.outcome", string("completed")),
                ("http.request.method", string("POST")),
                ("url.path", string("/v1/chat/completions")),
                ("http.response.status_code", Any::IntValue(200)),
            ])
        );

        let failed = &spans[1];
        assert_eq!(failed.trace_id, server.trace_id);
        assert_eq!(failed.span_id, [1; 8]);
        assert_eq!(failed.parent_span_id, server.span_id);
        assert_eq!(failed.trace_state, "vendor=x1");
        assert_eq!(failed.name, "chat gpt-4o-mini");
        assert_eq!(failed.kind, 3);
        assert_eq!(failed.start_time_unix_nano, start_ns + 2_000_000);
        assert_eq!(failed.end_time_unix_nano, start_ns + 12_000_000);
        assert_eq!(
            failed.status.as_ref().map(|s| (s.code, s.message.as_str())),
            Some((2, ""))
        );
        assert_eq!(failed.flags, 0x101);
        assert_eq!(
            attributes(&failed.attributes),
            expected(vec![
                ("gen_ai.operation.name", string("chat")),
                ("gen_ai.provider.name", string("openai")),
                ("gen_ai.request.model", string("gpt-4o-mini")),
                ("ai_router.attempt.number", Any::IntValue(1)),
                ("ai_router.attempt.outcome", string("failed")),
                ("http.response.status_code", Any::IntValue(503)),
                ("error.type", string("503")),
            ])
        );

        let answered = &spans[2];
        assert_eq!(answered.span_id, [2; 8]);
        assert_eq!(answered.parent_span_id, server.span_id);
        assert_eq!(answered.name, "chat gpt-4o");
        assert_eq!(answered.kind, 3);
        assert_eq!(answered.start_time_unix_nano, start_ns + 15_000_000);
        assert_eq!(answered.end_time_unix_nano, start_ns + 35_000_000);
        assert_eq!(answered.status, None);
        assert_eq!(
            attributes(&answered.attributes),
            expected(vec![
                ("gen_ai.operation.name", string("chat")),
                ("gen_ai.provider.name", string("azure")),
                ("gen_ai.request.model", string("gpt-4o")),
                ("ai_router.attempt.number", Any::IntValue(2)),
                ("ai_router.attempt.outcome", string("answered")),
                ("http.response.status_code", Any::IntValue(200)),
                ("server.address", string("api.example.com")),
                ("server.port", Any::IntValue(443)),
            ])
        );
    }

    #[test]
    fn a_root_request_without_a_target_or_usage_has_only_what_is_known() {
        let trace = TraceContext::new_root();
        let log = RequestLog::traced(trace.clone());
        log.record_endpoint(Endpoint::Embeddings);
        let summary = finish(&log, Some(400));
        let end = SystemTime::now();
        let spans = spans(round_trip(end, &[&summary]));
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.trace_id, trace.trace_id());
        assert_eq!(span.span_id, trace.span_id());
        assert!(span.parent_span_id.is_empty());
        assert!(span.trace_state.is_empty());
        assert_eq!(span.name, "embeddings");
        assert_eq!(span.kind, 2);
        // A 4xx is the client's: no error status.
        assert_eq!(span.status, None);
        assert_eq!(span.flags, 0x101);
        assert_eq!(
            attributes(&span.attributes),
            expected(vec![
                ("id", string(summary.id.as_str())),
                ("gen_ai.operation.name", string("embeddings")),
                ("ai_router.attempts", Any::IntValue(0)),
                ("ai_router.outcome", string("completed")),
                ("http.request.method", string("POST")),
                ("url.path", string("/v1/chat/completions")),
                ("http.response.status_code", Any::IntValue(400)),
                ("error.type", string("400")),
            ])
        );
    }

    #[test]
    fn a_502_is_an_error_and_several_requests_share_one_export() {
        let log = RequestLog::traced(TraceContext::new_root());
        let failed = finish(&log, Some(502));
        let answered = full_summary();
        // Untraced: nothing.
        let untraced = finish(&RequestLog::new(), Some(200));
        let end = SystemTime::now();
        let spans = spans(round_trip(end, &[&failed, &untraced, &answered]));
        assert_eq!(spans.len(), 4);
        let span = &spans[0];
        assert_eq!(span.name, "POST");
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
        let attributes = attributes(&span.attributes);
        assert_eq!(attributes["error.type"], string("502"));
        assert_eq!(attributes["http.response.status_code"], Any::IntValue(502));
        assert!(!attributes.contains_key("gen_ai.operation.name"));
        assert_eq!(spans[1].name, "chat openai/gpt-4o-mini");
    }

    #[test]
    fn an_attempt_still_pending_ends_with_its_request() {
        let log = RequestLog::traced(TraceContext::new_root());
        log.start_attempt(
            AttemptRecord::new(
                1,
                Endpoint::Completions,
                "openai".into(),
                "gpt-3.5-turbo-instruct".into(),
                Duration::from_millis(5),
            )
            .with_span_id(Some([3; 8])),
        );
        let summary = finish(&log, None);
        let end = SystemTime::now();
        let spans = spans(round_trip(end, &[&summary]));
        let attempt = &spans[1];
        assert_eq!(attempt.name, "text_completion gpt-3.5-turbo-instruct");
        assert_eq!(attempt.end_time_unix_nano, unix(end));
        let attributes = attributes(&attempt.attributes);
        assert!(!attributes.contains_key("ai_router.attempt.outcome"));
        assert!(!attributes.contains_key("http.response.status_code"));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

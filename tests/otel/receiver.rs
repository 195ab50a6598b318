//! An OTLP/HTTP traces receiver on 127.0.0.1:0: decodes each `ExportTraceServiceRequest`
//! (protobuf) the exporter posts and keeps its spans.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use tokio::net::TcpListener;

/// An attribute value as exported.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Array(Vec<Attr>),
    Other,
}

impl Attr {
    fn of(value: Option<&AnyValue>) -> Self {
        match value.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Self::Str(s.clone()),
            Some(any_value::Value::IntValue(i)) => Self::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => Self::Double(*d),
            Some(any_value::Value::BoolValue(b)) => Self::Bool(*b),
            Some(any_value::Value::ArrayValue(array)) => {
                Self::Array(array.values.iter().map(|v| Self::of(Some(v))).collect())
            }
            _ => Self::Other,
        }
    }

    /// Every string inside the value.
    pub fn strings(&self) -> Vec<&str> {
        match self {
            Self::Str(s) => vec![s.as_str()],
            Self::Array(values) => values.iter().flat_map(Self::strings).collect(),
            _ => Vec::new(),
        }
    }
}

/// One span as the collector got it.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    /// Lowercase hex.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 2 server, 3 client.
    pub kind: i32,
    /// OTLP `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub start: u64,
    pub end: u64,
    pub attributes: BTreeMap<String, Attr>,
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl ExportedSpan {
    /// The attribute `key` (panics with the span when absent).
    pub fn attr(&self, key: &str) -> &Attr {
        self.attributes
            .get(key)
            .unwrap_or_else(|| panic!("no `{key}` on {self:#?}"))
    }

    /// Whether the span has attribute `key`.
    pub fn has(&self, key: &str) -> bool {
        self.attributes.contains_key(key)
    }
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const STATUS_UNSET: i32 = 0;
pub const STATUS_ERROR: i32 = 2;

fn attributes(list: &[KeyValue]) -> BTreeMap<String, Attr> {
    list.iter()
        .map(|kv| (kv.key.clone(), Attr::of(kv.value.as_ref())))
        .collect()
}

/// The receiver: its address and what it got.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

impl Receiver {
    /// Starts serving on 127.0.0.1:0 (on the current runtime).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Self {
            addr,
            spans: Arc::default(),
        };
        let spans = receiver.spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let spans = spans.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let spans = spans.clone();
                        async move { Ok::<_, Infallible>(export(request, &spans).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    /// The base endpoint an exporter is given.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

/// Handles one `POST /v1/traces`.
async fn export(
    request: Request<Incoming>,
    spans: &Mutex<Vec<ExportedSpan>>,
) -> Response<Full<Bytes>> {
    let answer = |status: StatusCode| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    if request.method() != http::Method::POST
        || request.uri().path() != "/v1/traces"
        || request.headers().get("content-type").map(|v| v.as_bytes())
            != Some(b"application/x-protobuf".as_slice())
    {
        return answer(StatusCode::BAD_REQUEST);
    }
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let mut received = Vec::new();
    for resource_spans in export.resource_spans {
        let service_name =
            resource_spans.resource.as_ref().and_then(|resource| {
                match attributes(&resource.attributes).remove("service.name") {
                    Some(Attr::Str(name)) => Some(name),
                    _ => None,
                }
            });
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.map(|s| s.name).unwrap_or_default();
            for span in scope_spans.spans {
                received.push(ExportedSpan {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    status_code: span.status.map_or(0, |s| s.code),
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    service_name: service_name.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    spans.lock().unwrap().extend(received);
    // An empty `ExportTraceServiceResponse` encodes to no bytes.
    answer(StatusCode::OK)
}

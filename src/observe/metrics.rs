//! Prometheus metrics of every request: [`Metrics`], an [`Observer`].
//!
//! A leaf module: it imports no layer.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use http::StatusCode;
use prometheus_client::encoding::{
    EncodeLabel as _, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{Observer, Outcome, RequestSummary};
use crate::extensions::Endpoint;

/// `gen_ai.server.request.duration`'s recommended bucket boundaries, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// `gen_ai.server.time_to_first_token`'s recommended bucket boundaries, in seconds.
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// `gen_ai.client.token.usage`'s recommended bucket boundaries, in tokens.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// The GenAI operation name (`gen_ai.operation.name`) of an endpoint: `chat`,
/// `text_completion`, `embeddings` where the conventions name one, else the endpoint's
/// [`name`](Endpoint::name) (`images.generations`, `moderations`, ...).
pub fn gen_ai_operation_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        other => other.name(),
    }
}

/// Prometheus metrics: an [`Observer`] that counts every request, times it and its first
/// token, and sums the tokens answers reported, with label values bounded by configuration.
/// Cheap to clone (shared): hand one clone to the router
/// ([`AiRouterBuilder::observer`](crate::AiRouterBuilder::observer)) and
/// [`render`](Metrics::render) another at `/metrics`.
///
/// Names follow the OpenTelemetry GenAI semantic conventions v1.41 where they exist (their
/// Prometheus spelling: dots become `_`, seconds get `_seconds`, and the recommended bucket
/// boundaries); the router's own are `ai_router_*`:
///
/// | metric | type | labels |
/// |---|---|---|
/// | `gen_ai_server_request_duration_seconds` | histogram | `gen_ai_operation_name`, `gen_ai_provider_name`, `gen_ai_request_model`, `error_type` (failed only) |
/// | `gen_ai_server_time_to_first_token_seconds` | histogram, streams only, once per stream | `gen_ai_operation_name`, `gen_ai_provider_name`, `gen_ai_request_model` |
/// | `gen_ai_client_token_usage` | histogram | the same and `gen_ai_token_type` (`input`, `output`) |
/// | `ai_router_requests_total` | counter | `status`, `provider`, `model`, `key` |
/// | `ai_router_upstream_attempts_total` | counter | `outcome` (`ok`, `failed`) |
/// | `ai_router_rate_limited_total` | counter | `key` |
/// | `ai_router_limits_unchecked_total` | counter | `key` (served unchecked: the limiter's backend was down) |
/// | `ai_router_in_flight` | gauge | |
///
/// - **Label values are bounded**: a provider or model is its name only when configured
///   ([`MetricsBuilder::models`], [`MetricsBuilder::providers`]), a key only when listed
///   ([`MetricsBuilder::keys`]), anything else is `other`; `none` when the request never got
///   that far (a 401 has no key, a 404 for an unknown model no provider). `status` is the
///   numeric HTTP status the client got (`none`: no response at all). A label never holds a
///   key, only its name.
/// - **Operation names**: `chat` (chat completions and the Responses API), `text_completion`
///   (completions), `embeddings`, and the endpoint's name for the rest (`images.generations`,
///   `moderations`, `rerank`, `audio.speech`, `models.list`, ...); `none` before routing.
/// - **`gen_ai_request_model`** is the model id the provider got (`gpt-4o-mini`, with the
///   provider in its own label), an alias resolved.
/// - **`error_type`**, only on failed requests: the status the client got when it is 400 or
///   more (`429`, `502`), else how the body ended (`upstream_failed`, `idle_timeout`,
///   `client_gone`, `no_response`).
/// - **Upstream attempts**: a request that went upstream `n` times counts `n - 1` `failed`
///   (a plan moves on only from a failed attempt), and its last one `failed` when the client
///   got 401, 403, 429 or 5xx or its body failed upstream (error frame, idle timeout),
///   otherwise `ok` (a 400 or 404 from the provider is the provider answering). Requests the
///   router answered alone count none.
/// - **Rate limited**: 429s the router answered itself (no provider), by key name.
/// - **In flight**: requests between [`Observer::on_start`] and [`Observer::on_end`], streams
///   until their end.
/// - **Counts are exact**: every request the observer hears of adds one to
///   `ai_router_requests_total` and one observation to the duration histogram.
///
/// Cheap on the request path: a request looks up its series (the handles of every metric
/// for its labels, created once each) in one map behind a read lock, keyed by the identity of
/// its bounded label values, so it hashes a few words and allocates nothing once its series
/// exist. The GenAI conventions left the main repository after
/// v1.41 (`semantic-conventions-genai`); its draft counts tokens with
/// `gen_ai.client.inference.usage.input_tokens` / `.output_tokens` counters instead of the
/// token histogram.
///
/// # Example
/// ```
/// use ai_router::AiRouter;
/// use ai_router::auth::{MemoryKeyStore, Principal};
/// use ai_router::observe::Metrics;
///
/// let metrics = Metrics::builder()
///     .models(["openai/gpt-4o-mini", "openai/text-embedding-3-small"])
///     .keys(["team-a"])
///     .build();
/// let router = AiRouter::builder()
///     .keys(MemoryKeyStore::new().with_key("sk-team-a", Principal::new("team-a")))
///     .observer(metrics.clone())
///     .build()?;
/// // Serve `metrics.render()` (content type `Metrics::CONTENT_TYPE`) at `/metrics`.
/// assert!(metrics.render().contains("ai_router_in_flight 0"));
/// # let _ = router;
/// # Ok::<(), ai_router::BuildError>(())
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Builds [`Metrics`]: the providers, models and keys whose names may appear in labels.
#[derive(Debug, Default)]
#[must_use]
pub struct MetricsBuilder {
    providers: HashMap<Arc<str>, HashSet<Arc<str>, FastHash>, FastHash>,
    keys: HashSet<Arc<str>, FastHash>,
}

impl MetricsBuilder {
    /// Models named in labels, as `provider/model` (their providers too); other models of
    /// these providers are `other`. An entry without a `/` names a provider alone.
    pub fn models<I>(mut self, models: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        for model in models {
            let model = model.as_ref();
            let (provider, model) = model.split_once('/').unwrap_or((model, ""));
            let models = self.providers.entry(provider.into()).or_default();
            if !model.is_empty() {
                models.insert(model.into());
            }
        }
        self
    }

    /// Providers named in labels even without a listed model (their models are `other`).
    pub fn providers<I>(mut self, providers: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        for provider in providers {
            self.providers.entry(provider.as_ref().into()).or_default();
        }
        self
    }

    /// Key names named in labels (other keys are `other`). Names, never keys.
    pub fn keys<I>(mut self, keys: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.keys
            .extend(keys.into_iter().map(|k| Arc::from(k.as_ref())));
        self
    }

    /// The metrics, registered and at zero.
    pub fn build(self) -> Metrics {
        let inner = Inner {
            registry: Registry::default(),
            bounds: Bounds {
                providers: self.providers,
                keys: self.keys,
                none: Arc::from("none"),
                other: Arc::from("other"),
            },
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            first_token: Family::new_with_constructor(|| Histogram::new(TTFT_BUCKETS)),
            tokens: Family::new_with_constructor(|| Histogram::new(TOKEN_BUCKETS)),
            requests: Family::default(),
            attempts_ok: Counter::default(),
            attempts_failed: Counter::default(),
            rate_limited: Family::default(),
            limits_unchecked: Family::default(),
            in_flight: Gauge::default(),
            series: RwLock::default(),
        };
        Metrics {
            inner: Arc::new(inner.registered()),
        }
    }
}

/// The metrics and what they need to label a request.
struct Inner {
    registry: Registry,
    bounds: Bounds,
    duration: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    first_token: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    tokens: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    requests: Family<RequestLabels, Counter>,
    attempts_ok: Counter,
    attempts_failed: Counter,
    rate_limited: Family<KeyLabel, Counter>,
    limits_unchecked: Family<KeyLabel, Counter>,
    in_flight: Gauge,
    /// Every label set seen, with its handles.
    series: RwLock<HashMap<SeriesKey, Series, FastHash>>,
}

impl Inner {
    /// Registers every metric (the registry holds shared handles to the same values).
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register_with_unit(
            "gen_ai_server_request_duration",
            "Time from the request reaching the router to the end of its response body",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time from the request reaching the router's stream layer to a stream's first event",
            Unit::Seconds,
            self.first_token.clone(),
        );
        r.register(
            "gen_ai_client_token_usage",
            "Number of input and output tokens answers reported",
            self.tokens.clone(),
        );
        r.register(
            "ai_router_requests",
            "Requests, by the status the client got, provider, model and key name",
            self.requests.clone(),
        );
        let attempts = Family::<OutcomeLabel, Counter>::default();
        // The family's two counters are the ones counted (a counter is a shared handle).
        self.attempts_ok = attempts.get_or_create_owned(&OutcomeLabel("ok"));
        self.attempts_failed = attempts.get_or_create_owned(&OutcomeLabel("failed"));
        self.registry.register(
            "ai_router_upstream_attempts",
            "Upstream attempts, by outcome",
            attempts,
        );
        self.registry.register(
            "ai_router_rate_limited",
            "Requests the router refused with 429 for a key's limits, by key name",
            self.rate_limited.clone(),
        );
        self.registry.register(
            "ai_router_limits_unchecked",
            "Requests served without a limit check because the limiter's backend failed \
             (on_backend_error = allow), by key name",
            self.limits_unchecked.clone(),
        );
        self.registry.register(
            "ai_router_in_flight",
            "Requests in flight (a stream until its end)",
            self.in_flight.clone(),
        );
        self
    }
}

/// The names labels may carry.
struct Bounds {
    /// Configured providers, each with its configured models.
    providers: HashMap<Arc<str>, HashSet<Arc<str>, FastHash>, FastHash>,
    /// Configured key names.
    keys: HashSet<Arc<str>, FastHash>,
    none: Arc<str>,
    other: Arc<str>,
}

impl Bounds {
    /// The `(provider, model)` labels of a request.
    fn target(&self, provider: Option<&str>, model: Option<&str>) -> (Arc<str>, Arc<str>) {
        let Some(provider) = provider else {
            return (self.none.clone(), self.none.clone());
        };
        let Some((name, models)) = self.providers.get_key_value(provider) else {
            let model = model.map_or(&self.none, |_| &self.other);
            return (self.other.clone(), model.clone());
        };
        let model = match model {
            None => &self.none,
            Some(model) => models.get(model).unwrap_or(&self.other),
        };
        (name.clone(), model.clone())
    }

    /// The `key` label of a request.
    fn key(&self, key: Option<&str>) -> Arc<str> {
        match key {
            None => self.none.clone(),
            Some(key) => self.keys.get(key).unwrap_or(&self.other).clone(),
        }
    }
}

impl Metrics {
    /// The content type of [`render`](Self::render)'s text (Prometheus text format 0.0.4).
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// A builder (no provider, model or key named: every label value is `none` or `other`).
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder::default()
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a `String` cannot fail.
        let _ = self.encode(&mut text);
        text
    }

    /// Appends every metric to `out` in the Prometheus text format (version 0.0.4).
    pub fn encode(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.inner.registry)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.inner.in_flight.get()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Observer for Metrics {
    fn on_start(&self) {
        self.inner.in_flight.inc();
    }

    fn on_end(&self, s: &RequestSummary) {
        let m = &*self.inner;
        m.in_flight.dec();
        let (provider, model) = m.bounds.target(s.provider.as_deref(), s.model.as_deref());
        let key = m.bounds.key(s.key.as_deref());
        let status = s.status.as_ref().map(StatusCode::as_u16);

        if status == Some(429) && s.provider.is_none() {
            m.rate_limited.get_or_create(&KeyLabel(key.clone())).inc();
        }
        if s.limits_unchecked {
            m.limits_unchecked
                .get_or_create(&KeyLabel(key.clone()))
                .inc();
        }
        if s.attempts > 0 {
            m.attempts_failed.inc_by(u64::from(s.attempts - 1));
            if last_attempt_failed(status, s.outcome) {
                m.attempts_failed.inc();
            } else {
                m.attempts_ok.inc();
            }
        }

        let series_key = SeriesKey {
            operation: s.endpoint.map_or("none", gen_ai_operation_name),
            provider: Shared(provider),
            model: Shared(model),
            key: Shared(key),
            status,
            error: error_type(status, s.outcome),
        };
        m.with_series(series_key, |series| {
            series.duration.observe(s.duration.as_secs_f64());
            // Set by the stream layer only, once per stream; the conventions time successful
            // answers only.
            if let (Some(first_byte), Some(200..=299)) = (s.first_byte, status) {
                series
                    .first_token
                    .get_or_init(|| m.first_token.get_or_create_owned(&series.labels))
                    .observe(first_byte.as_secs_f64());
            }
            if let Some(usage) = s.usage {
                let mut labels = series.labels.clone();
                let [input, output] = &series.tokens;
                labels.token_type = Some("input");
                input
                    .get_or_init(|| m.tokens.get_or_create_owned(&labels))
                    .observe(usage.input_tokens as f64);
                labels.token_type = Some("output");
                output
                    .get_or_init(|| m.tokens.get_or_create_owned(&labels))
                    .observe(usage.output_tokens as f64);
            }
            series.requests.inc();
        });
    }
}

impl Inner {
    /// Runs `f` with the series of `key`, made (its duration and request count registered)
    /// the first time.
    fn with_series(&self, key: SeriesKey, f: impl FnOnce(&Series)) {
        {
            let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = series.get(&key) {
                return f(found);
            }
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let labels = GenAiLabels {
            operation: key.operation,
            provider: key.provider.0.clone(),
            model: key.model.0.clone(),
            error: key.error,
            token_type: None,
        };
        let requests = RequestLabels {
            status: key.status,
            provider: key.provider.0.clone(),
            model: key.model.0.clone(),
            key: key.key.0.clone(),
        };
        let found = series.entry(key).or_insert_with(|| Series {
            duration: self.duration.get_or_create_owned(&labels),
            requests: self.requests.get_or_create_owned(&requests),
            first_token: OnceLock::new(),
            tokens: [OnceLock::new(), OnceLock::new()],
            labels: GenAiLabels {
                error: None,
                ..labels
            },
        });
        f(found)
    }
}

/// What tells one request's label sets from another's: the label values, the bounded names
/// by identity (each is one of [`Bounds`]' shared strings).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SeriesKey {
    operation: &'static str,
    provider: Shared,
    model: Shared,
    key: Shared,
    status: Option<u16>,
    error: Option<ErrorType>,
}

/// One of [`Bounds`]' names, compared and hashed by address: each name is one shared string.
#[derive(Clone, Debug)]
struct Shared(Arc<str>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Shared {}

impl Hash for Shared {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(Arc::as_ptr(&self.0).cast::<u8>() as usize);
    }
}

/// The handles of one request's label sets (shared with the families, which render them).
struct Series {
    duration: Histogram,
    requests: Counter,
    /// Made on first use: a series never observed is not rendered.
    first_token: OnceLock<Histogram>,
    /// Input, output: made on first use.
    tokens: [OnceLock<Histogram>; 2],
    /// The GenAI labels without `error_type`, to make the lazy ones.
    labels: GenAiLabels,
}

/// The hasher of the metrics' own maps: a multiply-rotate word hash (as rustc's `FxHasher`).
/// Their keys are configured names and addresses, never chosen by a client, and few.
type FastHash = BuildHasherDefault<WordHasher>;

/// See [`FastHash`].
#[derive(Default)]
struct WordHasher(u64);

impl WordHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Whether a request's last upstream attempt failed: the statuses a plan moves on from (401,
/// 403, 429, 5xx), no response at all, or a body the upstream cut.
fn last_attempt_failed(status: Option<u16>, outcome: Outcome) -> bool {
    let status_failed = match status {
        None => true,
        Some(status) => matches!(status, 401 | 403 | 429 | 500..),
    };
    status_failed
        || matches!(
            outcome,
            Outcome::UpstreamFailed | Outcome::IdleTimeout | Outcome::NoResponse
        )
}

/// The `error_type` of a failed request: its status from 400 on, else how its body ended.
fn error_type(status: Option<u16>, outcome: Outcome) -> Option<ErrorType> {
    match (status, outcome) {
        (Some(status @ 400..), _) => Some(ErrorType::Status(status)),
        (_, Outcome::Completed) => None,
        (_, outcome) => Some(ErrorType::Outcome(outcome.as_str())),
    }
}

/// `error_type`'s value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum ErrorType {
    /// The status the client got.
    Status(u16),
    /// How the body ended.
    Outcome(&'static str),
}

impl EncodeLabelValue for ErrorType {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => EncodeLabelValue::encode(status, encoder),
            Self::Outcome(outcome) => EncodeLabelValue::encode(outcome, encoder),
        }
    }
}

/// The labels of the GenAI histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct GenAiLabels {
    operation: &'static str,
    provider: Arc<str>,
    model: Arc<str>,
    /// The duration histogram's, on failed requests.
    error: Option<ErrorType>,
    /// The token histogram's.
    token_type: Option<&'static str>,
}

impl EncodeLabelSet for GenAiLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        ("gen_ai_operation_name", self.operation).encode(encoder.encode_label())?;
        ("gen_ai_provider_name", &*self.provider).encode(encoder.encode_label())?;
        ("gen_ai_request_model", &*self.model).encode(encoder.encode_label())?;
        if let Some(token_type) = self.token_type {
            ("gen_ai_token_type", token_type).encode(encoder.encode_label())?;
        }
        if let Some(error) = self.error {
            ("error_type", error).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The labels of `ai_router_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RequestLabels {
    /// `None`: no response at all.
    status: Option<u16>,
    provider: Arc<str>,
    model: Arc<str>,
    key: Arc<str>,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        match self.status {
            Some(status) => ("status", status).encode(encoder.encode_label())?,
            None => ("status", "none").encode(encoder.encode_label())?,
        }
        ("provider", &*self.provider).encode(encoder.encode_label())?;
        ("model", &*self.model).encode(encoder.encode_label())?;
        ("key", &*self.key).encode(encoder.encode_label())
    }
}

/// The label of `ai_router_rate_limited_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct KeyLabel(Arc<str>);

impl EncodeLabelSet for KeyLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        ("key", &*self.0).encode(encoder.encode_label())
    }
}

/// The label of `ai_router_upstream_attempts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct OutcomeLabel(&'static str);

impl EncodeLabelSet for OutcomeLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        ("outcome", self.0).encode(encoder.encode_label())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use http::{Method, Uri};

    use super::*;
    use crate::extensions::RequestId;
    use crate::observe::{End, RequestHead, RequestLog, Usage};

    /// A finished chat request answered 200 by nobody yet (fields set by each test).
    fn summary() -> RequestSummary {
        let head = RequestHead {
            id: RequestId::generate(),
            method: Method::POST,
            uri: Uri::from_static("/v1/chat/completions"),
        };
        let end = End {
            status: Some(StatusCode::OK),
            latency: Duration::from_millis(5),
            duration: Duration::from_millis(30),
            outcome: Outcome::Completed,
        };
        RequestLog::new().summary(&head, end)
    }

    /// A request that went to `provider/model` with `key`, answered `status`.
    fn routed(provider: &str, model: &str, key: &str, status: u16) -> RequestSummary {
        let mut s = summary();
        s.endpoint = Some(Endpoint::ChatCompletions);
        s.provider = Some(provider.into());
        s.model = Some(model.into());
        s.key = Some(key.into());
        s.status = Some(StatusCode::from_u16(status).unwrap());
        s.attempts = 1;
        s
    }

    fn metrics() -> Metrics {
        Metrics::builder()
            .models(["demo/gpt-4o-mini", "openai/gpt-4o"])
            .providers(["ollama"])
            .keys(["team-a"])
            .build()
    }

    /// The value of the series `series` (name and labels exactly as rendered); `None` when
    /// absent.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
            Some(rest.parse().unwrap())
        })
    }

    /// The sum of every series of metric `name` (e.g. `ai_router_requests_total`).
    fn total(text: &str, name: &str) -> f64 {
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    #[test]
    fn label_values_are_configured_names_or_other_or_none() {
        let m = metrics();
        m.on_end(&routed("demo", "gpt-4o-mini", "team-a", 200));
        m.on_end(&routed("demo", "gpt-4.1", "team-b", 200));
        m.on_end(&routed("ollama", "llama3", "team-a", 200));
        m.on_end(&routed("groq", "llama3", "team-a", 200));
        let mut refused = summary();
        refused.status = Some(StatusCode::UNAUTHORIZED);
        m.on_end(&refused);
        let text = m.render();
        for (series, count) in [
            (
                r#"status="200",provider="demo",model="gpt-4o-mini",key="team-a""#,
                1.0,
            ),
            (
                r#"status="200",provider="demo",model="other",key="other""#,
                1.0,
            ),
            (
                r#"status="200",provider="ollama",model="other",key="team-a""#,
                1.0,
            ),
            (
                r#"status="200",provider="other",model="other",key="team-a""#,
                1.0,
            ),
            (
                r#"status="401",provider="none",model="none",key="none""#,
                1.0,
            ),
        ] {
            let series = format!("ai_router_requests_total{{{series}}}");
            assert_eq!(value(&text, &series), Some(count), "{series}\n{text}");
        }
        assert_eq!(total(&text, "ai_router_requests_total"), 5.0, "{text}");
        for unbounded in ["gpt-4.1", "team-b", "llama3", "groq"] {
            assert!(!text.contains(unbounded), "{unbounded}\n{text}");
        }
        let duration = r#"gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="none",gen_ai_provider_name="none",gen_ai_request_model="none",error_type="401"}"#;
        assert_eq!(value(&text, duration), Some(1.0), "{text}");
    }

    #[test]
    fn counts_are_exact_and_in_flight_balances() {
        let m = metrics();
        for _ in 0..7 {
            m.on_start();
        }
        assert_eq!(m.in_flight(), 7);
        assert!(m.render().contains("\nai_router_in_flight 7\n"));
        for _ in 0..7 {
            m.on_end(&routed("demo", "gpt-4o-mini", "team-a", 200));
        }
        assert_eq!(m.in_flight(), 0);
        let text = m.render();
        let labels = r#"{status="200",provider="demo",model="gpt-4o-mini",key="team-a"}"#;
        assert_eq!(
            value(&text, &format!("ai_router_requests_total{labels}")),
            Some(7.0)
        );
        let chat = r#"{gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="gpt-4o-mini"}"#;
        let count = format!("gen_ai_server_request_duration_seconds_count{chat}");
        assert_eq!(value(&text, &count), Some(7.0), "{text}");
        let sum = value(
            &text,
            &format!("gen_ai_server_request_duration_seconds_sum{chat}"),
        );
        assert!((sum.unwrap() - 0.21).abs() < 1e-9, "{text}");
        // 30 ms: above the 0.02 bucket, inside the 0.04 one.
        let bucket = |le: &str| {
            let labels = chat.trim_end_matches('}');
            value(
                &text,
                &format!("gen_ai_server_request_duration_seconds_bucket{labels},le=\"{le}\"}}"),
            )
        };
        assert_eq!((bucket("0.02"), bucket("0.04")), (Some(0.0), Some(7.0)));
        assert_eq!(bucket("+Inf"), Some(7.0));
        assert!(text.contains("# TYPE ai_router_requests_total counter"));
        assert!(text.contains("# TYPE gen_ai_server_request_duration_seconds histogram"));
        assert!(text.contains("# TYPE ai_router_in_flight gauge"));
    }

    #[test]
    fn attempts_count_the_failed_ones_before_the_last_and_the_last_by_its_status() {
        let m = metrics();
        let attempts = |m: &Metrics| {
            let text = m.render();
            (
                value(&text, r#"ai_router_upstream_attempts_total{outcome="ok"}"#),
                value(
                    &text,
                    r#"ai_router_upstream_attempts_total{outcome="failed"}"#,
                ),
            )
        };
        assert_eq!(attempts(&m), (Some(0.0), Some(0.0)));
        // Two fallbacks, then an answer.
        let mut s = routed("demo", "gpt-4o-mini", "team-a", 200);
        s.attempts = 3;
        m.on_end(&s);
        assert_eq!(attempts(&m), (Some(1.0), Some(2.0)));
        // Every attempt failed: the client got the last one's 502.
        let mut s = routed("demo", "gpt-4o-mini", "team-a", 502);
        s.attempts = 2;
        m.on_end(&s);
        assert_eq!(attempts(&m), (Some(1.0), Some(4.0)));
        // A 400 from the provider is an answer.
        m.on_end(&routed("demo", "gpt-4o-mini", "team-a", 400));
        assert_eq!(attempts(&m), (Some(2.0), Some(4.0)));
        // A stream cut by the upstream after its head.
        let mut s = routed("demo", "gpt-4o-mini", "team-a", 200);
        s.outcome = Outcome::UpstreamFailed;
        m.on_end(&s);
        assert_eq!(attempts(&m), (Some(2.0), Some(5.0)));
        // The router answered alone.
        let mut refused = summary();
        refused.status = Some(StatusCode::NOT_FOUND);
        m.on_end(&refused);
        assert_eq!(attempts(&m), (Some(2.0), Some(5.0)));
        let text = m.render();
        let failed = r#"gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="gpt-4o-mini",error_type="upstream_failed"}"#;
        assert_eq!(value(&text, failed), Some(1.0), "{text}");
    }

    #[test]
    fn requests_served_unchecked_are_counted_by_key() {
        let m = metrics();
        for checked in [true, false, false] {
            let mut s = routed("demo", "gpt-4o-mini", "team-a", 200);
            s.limits_unchecked = !checked;
            m.on_end(&s);
        }
        let text = m.render();
        assert_eq!(
            value(&text, r#"ai_router_limits_unchecked_total{key="team-a"}"#),
            Some(2.0)
        );
    }

    #[test]
    fn only_the_routers_own_429s_are_rate_limited() {
        let m = metrics();
        let mut limited = summary();
        limited.key = Some("team-a".into());
        limited.status = Some(StatusCode::TOO_MANY_REQUESTS);
        m.on_end(&limited);
        m.on_end(&limited);
        limited.key = Some("team-z".into());
        m.on_end(&limited);
        // The provider's 429 passed on.
        m.on_end(&routed("demo", "gpt-4o-mini", "team-a", 429));
        let text = m.render();
        assert_eq!(
            value(&text, r#"ai_router_rate_limited_total{key="team-a"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"ai_router_rate_limited_total{key="other"}"#),
            Some(1.0)
        );
        assert_eq!(total(&text, "ai_router_rate_limited_total"), 3.0);
    }

    #[test]
    fn first_token_is_observed_for_streams_only_and_tokens_by_type() {
        let m = metrics();
        let mut stream = routed("demo", "gpt-4o-mini", "team-a", 200);
        stream.first_byte = Some(Duration::from_millis(3));
        stream.usage = Some(Usage {
            input_tokens: 12,
            output_tokens: 300,
            ..Usage::default()
        });
        m.on_end(&stream);
        let mut plain = routed("demo", "gpt-4o-mini", "team-a", 200);
        plain.usage = Some(Usage {
            input_tokens: 8,
            output_tokens: 2,
            ..Usage::default()
        });
        m.on_end(&plain);
        let mut embeddings = routed("openai", "gpt-4o", "team-a", 200);
        embeddings.endpoint = Some(Endpoint::Embeddings);
        m.on_end(&embeddings);
        let text = m.render();
        let chat = r#"gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="gpt-4o-mini""#;
        let ttft = format!("gen_ai_server_time_to_first_token_seconds_count{{{chat}}}");
        assert_eq!(value(&text, &ttft), Some(1.0), "{text}");
        assert_eq!(
            total(&text, "gen_ai_server_time_to_first_token_seconds_count"),
            1.0
        );
        for (token_type, count, sum) in [("input", 2.0, 20.0), ("output", 2.0, 302.0)] {
            let labels = format!("{{{chat},gen_ai_token_type=\"{token_type}\"}}");
            let series = |part: &str| format!("gen_ai_client_token_usage_{part}{labels}");
            assert_eq!(value(&text, &series("count")), Some(count), "{text}");
            assert_eq!(value(&text, &series("sum")), Some(sum), "{text}");
        }
        let embeddings = r#"gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="embeddings",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o"}"#;
        assert_eq!(value(&text, embeddings), Some(1.0), "{text}");
    }

    #[test]
    fn operation_names_follow_the_conventions() {
        assert_eq!(gen_ai_operation_name(Endpoint::ChatCompletions), "chat");
        assert_eq!(gen_ai_operation_name(Endpoint::Responses), "chat");
        assert_eq!(
            gen_ai_operation_name(Endpoint::Completions),
            "text_completion"
        );
        assert_eq!(gen_ai_operation_name(Endpoint::Embeddings), "embeddings");
        assert_eq!(
            gen_ai_operation_name(Endpoint::ImagesGenerations),
            "images.generations"
        );
    }
}

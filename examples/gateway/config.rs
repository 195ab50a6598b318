//! The gateway's TOML configuration and its translation into router values.
//!
//! The library reads no files or environment variables; this is where the gateway does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ai_router::auth::{ApiKeyDigest, DEFAULT_CHECK_DEADLINE, MemoryKeyStore, Principal};
use ai_router::extensions::{MAX_RETRIES, Retry};
use ai_router::observe::Metrics;
use ai_router::provider::{AnthropicProvider, GeminiProvider, HttpProvider, ProviderAuth};
use ai_router::resilience::Cooldown;
use ai_router::route::Endpoint;
use ai_router::route::{AliasPolicy, Strategy};
use ai_router::sse::StreamSettings;
use http::HeaderName;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where the gateway listens.
    #[serde(default = "default_listen")]
    pub(crate) listen: SocketAddr,
    /// The path the router is served under.
    #[serde(default = "default_mount")]
    pub(crate) mount: String,
    /// The largest request body, in bytes.
    pub(crate) body_limit: Option<usize>,
    /// How long in-flight requests may finish after a shutdown signal.
    #[serde(default = "default_grace")]
    pub(crate) shutdown_grace_secs: u64,
    /// Router keys.
    #[serde(default)]
    pub(crate) keys: Vec<KeyConfig>,
    /// Providers by name.
    #[serde(default)]
    pub(crate) providers: BTreeMap<String, ProviderConfig>,
    /// Aliases by name.
    #[serde(default)]
    pub(crate) models: BTreeMap<String, AliasConfig>,
    /// Models used when a request has none, by endpoint path (`moderations`,
    /// `images/generations`, `responses`, ...).
    #[serde(default)]
    pub(crate) default_models: BTreeMap<String, String>,
    /// Body limits in bytes, by endpoint path.
    #[serde(default)]
    pub(crate) body_limits: BTreeMap<String, usize>,
    /// How connections and requests are served.
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// Logs (and later traces and metrics).
    #[serde(default)]
    pub(crate) telemetry: TelemetryConfig,
    /// Where per-key limits are kept.
    #[serde(default)]
    pub(crate) limits: LimitsConfig,
}

/// The `[limits]` table: where per-key limits (`rpm`, `tpm`, `max_concurrent`) are kept.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsConfig {
    /// `memory` (this process, the default) or `redis` (shared by a fleet; feature `redis`).
    pub(crate) backend: LimitsBackend,
    /// The Redis URL (`redis://[:password@]host:port/db`); never logged.
    pub(crate) redis_url: Option<String>,
    /// An environment variable holding the Redis URL (keeps a password out of the file).
    pub(crate) redis_url_env: Option<String>,
    /// What a request gets while Redis cannot answer: `allow` (served unchecked, the
    /// default) or `deny` (503 `limits_unavailable`).
    pub(crate) on_backend_error: OnBackendError,
    /// Seconds a concurrency slot lives without renewal (a router that dies frees its slots
    /// after this).
    pub(crate) lease_secs: Option<u64>,
    /// Milliseconds one Redis call may take.
    pub(crate) timeout_ms: Option<u64>,
}

impl std::fmt::Debug for LimitsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("LimitsConfig")
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("redis_url_env", &self.redis_url_env)
            .field("on_backend_error", &self.on_backend_error)
            .field("lease_secs", &self.lease_secs)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl LimitsConfig {
    /// Checks the table: the Redis settings only with `backend = "redis"`, which needs one
    /// way to the URL.
    fn check(&self) -> Result<(), ConfigError> {
        let redis_settings = [
            ("redis_url", self.redis_url.is_some()),
            ("redis_url_env", self.redis_url_env.is_some()),
            ("lease_secs", self.lease_secs.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            (
                "on_backend_error",
                self.on_backend_error != OnBackendError::default(),
            ),
        ];
        match self.backend {
            LimitsBackend::Memory => {
                if let Some((name, _)) = redis_settings.iter().find(|(_, set)| *set) {
                    return Err(ConfigError(format!(
                        "limits.{name}: only for backend = \"redis\""
                    )));
                }
            }
            LimitsBackend::Redis => {
                if self.redis_url.is_some() == self.redis_url_env.is_some() {
                    return Err(ConfigError(
                        "limits: with backend = \"redis\", set exactly one of `redis_url` or \
                         `redis_url_env`"
                            .into(),
                    ));
                }
                if self.lease_secs == Some(0) || self.timeout_ms == Some(0) {
                    return Err(ConfigError(
                        "limits: lease_secs and timeout_ms must be above 0".into(),
                    ));
                }
                // Past the key check's deadline, the deadline would answer 503 first, even
                // with on_backend_error = "allow".
                if self
                    .timeout_ms
                    .is_some_and(|ms| u128::from(ms) >= DEFAULT_CHECK_DEADLINE.as_millis())
                {
                    return Err(ConfigError(format!(
                        "limits.timeout_ms: must be under the key check's deadline ({} ms)",
                        DEFAULT_CHECK_DEADLINE.as_millis()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The Redis URL, from the file or the environment (`env`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // Read with the `redis` feature only.
    pub(crate) fn redis_url(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<String, ConfigError> {
        match (&self.redis_url, &self.redis_url_env) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(var)) => env(var).ok_or_else(|| {
                ConfigError(format!(
                    "limits.redis_url_env: the variable {var} is not set"
                ))
            }),
            (None, None) => Err(ConfigError("limits: no redis_url".into())),
        }
    }
}

/// A TOML error as its message, position and key, never the value: toml's own rendering
/// quotes the whole line, which may hold a secret (a Redis URL's password, a header).
fn parse_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return ConfigError(message.to_owned());
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - line_start + 1;
    let text_line = text
        .get(line_start..)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_default()
        .trim();
    // The key of a `key = value` line, or a table header; nothing else of the line.
    let key = match text_line.split_once('=') {
        Some((key, _)) => key.trim(),
        None if text_line.starts_with('[') => text_line,
        None => "",
    };
    if key.is_empty() {
        ConfigError(format!("line {line}, column {column}: {message}"))
    } else {
        ConfigError(format!("line {line}, column {column} (`{key}`): {message}"))
    }
}

/// Where per-key limits are kept.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LimitsBackend {
    /// In this process (`InProcessLimiter`).
    #[default]
    Memory,
    /// In Redis, shared by every gateway using it (`RedisLimiter`, feature `redis`).
    Redis,
}

/// What a request gets while the limits backend cannot answer.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnBackendError {
    /// Served unchecked (counted in `ai_router_limits_unchecked_total`).
    #[default]
    Allow,
    /// 503 `limits_unavailable`.
    Deny,
}

/// The `[server]` table: sockets, timeouts and caps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// Seconds a client has to send a request's head (also closes a keep-alive connection
    /// idle that long): slow or idle clients cannot hold connections forever.
    pub(crate) header_read_timeout_secs: u64,
    /// Connections open at once; past it, new ones wait in the listen queue.
    pub(crate) max_connections: usize,
    /// Requests in flight at once (a stream counts until its last byte); past it, 503
    /// `overloaded` with `retry-after`.
    pub(crate) max_in_flight: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 30,
            max_connections: 10_000,
            max_in_flight: 4096,
        }
    }
}

/// The `[telemetry]` table.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelemetryConfig {
    /// One line per request: `text` (default), `json` or `off`.
    #[serde(default)]
    pub(crate) access_log: AccessLogConfig,
    /// Where Prometheus text is served at `/metrics`; absent: `GET /metrics` on the main
    /// listener, beside `/health`.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// The OTLP/HTTP (protobuf) collector traces are exported to, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is appended); absent: no export. Needs the
    /// `otel` feature.
    pub(crate) otlp_endpoint: Option<String>,
    /// The exported spans' `service.name` (default `ai-router`).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))] // Read with the `otel` feature only.
    pub(crate) service_name: Option<String>,
    /// The share of new traces exported, 0 to 1 (default 1: all; only with `otlp_endpoint`).
    /// A client's `traceparent` keeps its own choice.
    pub(crate) sample_ratio: Option<f64>,
    /// Whether a client's `traceparent` is joined (default: yes); `false` for clients whose
    /// context is not trusted: every request starts its own trace, and the client's
    /// `traceparent` / `tracestate` never reach an upstream (export or not).
    pub(crate) join_client_traces: Option<bool>,
}

impl TelemetryConfig {
    /// The trace context policy of the gateway's requests.
    pub(crate) fn trace_policy(&self) -> ai_router::extensions::TracePolicy {
        ai_router::extensions::TracePolicy::new()
            .sample_ratio(self.sample_ratio.unwrap_or(1.0))
            .join_incoming(self.join_client_traces.unwrap_or(true))
    }

    /// Checks what serde cannot.
    fn check(&self) -> Result<(), ConfigError> {
        match self.sample_ratio {
            Some(ratio) if !(0.0..=1.0).contains(&ratio) => Err(ConfigError(
                "telemetry.sample_ratio: a share from 0 to 1 is needed".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// The access log's format.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AccessLogConfig {
    /// `key=value` lines.
    #[default]
    Text,
    /// One JSON object per line (diagnostics are JSON too).
    Json,
    /// No access log.
    Off,
}

/// One `[[keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyConfig {
    /// A name safe to log.
    pub(crate) name: String,
    /// The SHA-256 of the key, as 64 hex digits.
    pub(crate) key_sha256: Option<String>,
    /// An environment variable holding the key (hashed at load).
    pub(crate) key_env: Option<String>,
    /// Models this key may use: exact ids, aliases, globs (`openai/*`).
    pub(crate) models: Option<Vec<String>>,
    /// Requests per minute.
    pub(crate) rpm: Option<u32>,
    /// Requests in flight at once.
    pub(crate) max_concurrent: Option<u32>,
    /// Tokens per minute (input + output, from each answer's usage).
    pub(crate) tpm: Option<u32>,
    /// RFC 3339 time after which the key is refused.
    pub(crate) expires_at: Option<String>,
}

impl KeyConfig {
    /// The principal this key stands for.
    fn principal(&self) -> Result<Principal, String> {
        let mut principal = Principal::new(self.name.as_str());
        if let Some(models) = &self.models {
            principal = principal.allow_models(models.iter().cloned());
        }
        if let Some(rpm) = self.rpm {
            principal = principal.rpm(rpm);
        }
        if let Some(max) = self.max_concurrent {
            principal = principal.max_concurrent(max);
        }
        if let Some(tpm) = self.tpm {
            principal = principal.tpm(tpm);
        }
        if let Some(at) = &self.expires_at {
            let at = humantime::parse_rfc3339_weak(at)
                .map_err(|e| format!("expires_at `{at}` is not an RFC 3339 time: {e}"))?;
            principal = principal.expires_at(at);
        }
        Ok(principal)
    }
}

/// How a provider's key is sent.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum AuthConfig {
    /// `Authorization: Bearer <key>`.
    #[default]
    Bearer,
    /// `api-key: <key>` (Azure OpenAI).
    ApiKey,
    /// No key.
    None,
}

/// The API a provider speaks.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ProviderKind {
    /// OpenAI's (and every OpenAI-compatible server's): passed through.
    #[default]
    Openai,
    /// Anthropic's Messages API, translated.
    Anthropic,
    /// Google's Gemini API, translated.
    Gemini,
}

/// One `[providers.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderConfig {
    /// The API the provider speaks (default `openai`).
    #[serde(default)]
    pub(crate) kind: ProviderKind,
    /// Anthropic: `max_tokens` sent when the client set none (default 4096).
    pub(crate) default_max_tokens: Option<u32>,
    /// Anthropic and Gemini: drop OpenAI parameters the provider cannot honour instead of
    /// answering 400 `unsupported_parameter`.
    #[serde(default)]
    pub(crate) drop_params: bool,
    /// The provider's base URL, which may carry a path.
    pub(crate) base_url: Option<String>,
    /// The environment variable holding the provider key.
    pub(crate) api_key_env: Option<String>,
    /// How the key is sent.
    #[serde(default)]
    pub(crate) auth: AuthConfig,
    /// Static headers added to every upstream request.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    /// Models listed by `GET /models` as `NAME/<id>`.
    #[serde(default)]
    pub(crate) models: Vec<String>,
    /// Seconds the upstream has to send its response head.
    pub(crate) timeout_secs: Option<u64>,
    /// Seconds a stream may stay silent before the router ends it.
    pub(crate) idle_timeout_secs: Option<u64>,
    /// Ask this provider for usage on chat streams (`stream_options.include_usage`).
    #[serde(default)]
    pub(crate) stream_usage: bool,
    /// Serve this provider with the in-process mock upstream (offline demo).
    #[serde(default)]
    pub(crate) mock: bool,
    /// Whether any `NAME/<model>` routes (default), or only the listed `models`.
    #[serde(default = "default_true")]
    pub(crate) allow_any_model: bool,
    /// The provider's rerank path below `base_url` (default `/rerank`).
    pub(crate) rerank_path: Option<String>,
    /// Skip this provider's targets for a while after consecutive failures.
    pub(crate) cooldown: Option<CooldownConfig>,
}

/// One `[models."NAME"]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AliasConfig {
    /// Ordered `provider/model` targets: the fallback order.
    pub(crate) targets: Vec<String>,
    /// How the first target is picked.
    #[serde(default)]
    pub(crate) strategy: StrategyConfig,
    /// One weight per target (`strategy = "weighted"` only).
    pub(crate) weights: Option<Vec<f64>>,
    /// Retries of each target.
    pub(crate) retry: Option<RetryConfig>,
    /// Milliseconds an attempt has to get its response head.
    pub(crate) timeout_ms: Option<u64>,
    /// Milliseconds a stream attempt has to send its first event.
    pub(crate) first_byte_timeout_ms: Option<u64>,
}

/// `strategy` of a `[models."NAME"]` table.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StrategyConfig {
    /// The configured order, every time.
    #[default]
    Fallback,
    /// The first target picked at random by `weights`.
    Weighted,
    /// The first target taken in turn.
    RoundRobin,
}

/// `retry = { count, on_codes }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryConfig {
    /// More attempts at one target, 0 to 5.
    pub(crate) count: u8,
    /// The statuses retried (default: 429 and 5xx the usual ones).
    #[serde(default = "default_retry_codes")]
    pub(crate) on_codes: Vec<u16>,
}

/// `cooldown = { failures, secs }` of a provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CooldownConfig {
    /// Consecutive failed attempts that cool a target down (at least 1).
    pub(crate) failures: u32,
    /// How long it is skipped.
    pub(crate) secs: u64,
}

fn default_retry_codes() -> Vec<u16> {
    vec![429, 500, 502, 503, 504]
}

impl AliasConfig {
    /// The alias's policy, or a message saying which key is wrong.
    pub(crate) fn policy(&self) -> Result<AliasPolicy, String> {
        let strategy = match (self.strategy, &self.weights) {
            (StrategyConfig::Weighted, Some(weights)) => {
                if weights.len() != self.targets.len() {
                    return Err(format!(
                        "weights: {} weights for {} targets",
                        weights.len(),
                        self.targets.len()
                    ));
                }
                Strategy::Weighted(weights.clone())
            }
            (StrategyConfig::Weighted, None) => {
                return Err("weights: required by strategy = \"weighted\"".into());
            }
            (_, Some(_)) => return Err("weights: only for strategy = \"weighted\"".into()),
            (StrategyConfig::Fallback, None) => Strategy::Fallback,
            (StrategyConfig::RoundRobin, None) => Strategy::RoundRobin,
        };
        let mut policy = AliasPolicy::new().strategy(strategy);
        if let Some(retry) = &self.retry {
            if retry.count > MAX_RETRIES {
                return Err(format!("retry.count: at most {MAX_RETRIES}"));
            }
            if let Some(code) = retry.on_codes.iter().find(|c| !(100..=599).contains(*c)) {
                return Err(format!("retry.on_codes: {code} is not an HTTP status"));
            }
            policy = policy.retry(Retry::new(retry.count, retry.on_codes.iter().copied()));
        }
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
        ] {
            if value == Some(0) {
                return Err(format!("{key}: must be at least 1"));
            }
        }
        if let Some(ms) = self.timeout_ms {
            policy = policy.timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.first_byte_timeout_ms {
            policy = policy.first_byte_timeout(Duration::from_millis(ms));
        }
        Ok(policy)
    }
}

impl CooldownConfig {
    /// The cooldown, or a message saying which key is wrong.
    pub(crate) fn cooldown(&self) -> Result<Cooldown, String> {
        if self.failures == 0 || self.secs == 0 {
            return Err("cooldown: failures and secs must be at least 1".into());
        }
        Ok(Cooldown::new(self.failures, Duration::from_secs(self.secs)))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_mount() -> String {
    "/v3/router".to_owned()
}

fn default_grace() -> u64 {
    10
}

fn default_true() -> bool {
    true
}

/// The endpoint named by a config key, or an error naming the table and key.
pub(crate) fn endpoint(table: &str, key: &str) -> Result<Endpoint, ConfigError> {
    Endpoint::from_path(key).ok_or_else(|| {
        ConfigError(format!(
            "{table}.\"{key}\": not an endpoint path (e.g. \"chat/completions\", \"moderations\")"
        ))
    })
}

/// The label values a config names in metrics: anything else is counted as `other`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MetricNames {
    /// Provider names.
    pub(crate) providers: BTreeSet<String>,
    /// `provider/model` ids.
    pub(crate) models: BTreeSet<String>,
    /// Key names.
    pub(crate) keys: BTreeSet<String>,
}

impl MetricNames {
    /// Whether `self` names something `known` does not.
    pub(crate) fn adds_to(&self, known: &Self) -> bool {
        !(self.providers.is_subset(&known.providers)
            && self.models.is_subset(&known.models)
            && self.keys.is_subset(&known.keys))
    }
}

/// The settings that only a restart changes: the sockets and the serving code are set up
/// with them once, and the limiter with `[limits]` (a reload keeps the limiter and its state).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RestartOnly {
    listen: SocketAddr,
    mount: String,
    shutdown_grace_secs: u64,
    server: ServerConfig,
    telemetry: TelemetryConfig,
    limits: LimitsConfig,
}

impl RestartOnly {
    /// The names of the settings that differ between `self` and `other`.
    pub(crate) fn changed(&self, other: &Self) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != other.listen {
            changed.push("listen");
        }
        if self.mount != other.mount {
            changed.push("mount");
        }
        if self.shutdown_grace_secs != other.shutdown_grace_secs {
            changed.push("shutdown_grace_secs");
        }
        if self.server != other.server {
            changed.push("[server]");
        }
        if self.telemetry != other.telemetry {
            changed.push("[telemetry]");
        }
        if self.limits != other.limits {
            changed.push("[limits]");
        }
        changed
    }
}

/// A configuration problem, with the file and the key it concerns.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and parses the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config `{}`: {e}", path.display())))?;
        Self::parse(&text)
            .map_err(|e| ConfigError(format!("invalid config `{}`: {e}", path.display())))
    }

    /// The router's metrics, with label values bounded by this file: its providers, the
    /// `provider/model` ids it names (provider models, alias targets, default models), its
    /// key names.
    pub(crate) fn metrics(&self) -> Metrics {
        let names = self.metric_names();
        Metrics::builder()
            .providers(names.providers)
            .models(names.models)
            .keys(names.keys)
            .build()
    }

    /// The names this file gives metric labels (see [`Config::metrics`]).
    pub(crate) fn metric_names(&self) -> MetricNames {
        let listed = self.providers.iter().flat_map(|(name, provider)| {
            provider
                .models
                .iter()
                .map(move |model| format!("{name}/{model}"))
        });
        let targets = self
            .models
            .values()
            .flat_map(|alias| alias.targets.iter().cloned());
        MetricNames {
            providers: self.providers.keys().cloned().collect(),
            models: listed
                .chain(targets)
                .chain(self.default_models.values().cloned())
                .collect(),
            keys: self.keys.iter().map(|key| key.name.clone()).collect(),
        }
    }

    /// The settings a reload leaves as they were.
    pub(crate) fn restart_only(&self) -> RestartOnly {
        RestartOnly {
            listen: self.listen,
            mount: self.mount.clone(),
            shutdown_grace_secs: self.shutdown_grace_secs,
            server: self.server.clone(),
            telemetry: self.telemetry.clone(),
            limits: self.limits.clone(),
        }
    }

    /// The stream settings of a provider.
    pub(crate) fn stream_settings(provider: &ProviderConfig) -> StreamSettings {
        let mut settings = StreamSettings::new().inject_usage(provider.stream_usage);
        if let Some(secs) = provider.idle_timeout_secs {
            settings = settings.idle_timeout(Duration::from_secs(secs));
        }
        settings
    }

    /// Parses configuration text.
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        config.check()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    fn check(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut digests = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            // Names are what logs and metrics show: two keys with one name could not be told
            // apart (limits are per key either way).
            if !names.insert(key.name.as_str()) {
                return Err(ConfigError(format!(
                    "keys[{i}]: the name `{}` is used by another key",
                    key.name
                )));
            }
            if let Some(Ok(digest)) = key.key_sha256.as_deref().map(ApiKeyDigest::from_hex) {
                if !digests.insert(digest) {
                    return Err(ConfigError(format!(
                        "keys[{i}] (`{}`): key_sha256 is the same as another key's",
                        key.name
                    )));
                }
            }
            match (&key.key_sha256, &key.key_env) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(ConfigError(format!(
                        "keys[{i}] (`{}`): set exactly one of `key_sha256` or `key_env`",
                        key.name
                    )));
                }
                (Some(hex), None) => {
                    ApiKeyDigest::from_hex(hex).map_err(|e| {
                        ConfigError(format!("keys[{i}].key_sha256 (`{}`): {e}", key.name))
                    })?;
                }
                (None, Some(_)) => {}
            }
            key.principal()
                .map_err(|e| ConfigError(format!("keys[{i}] (`{}`): {e}", key.name)))?;
        }
        self.limits.check()?;
        self.telemetry.check()?;
        if !self.mount.starts_with('/') || self.mount.contains(['{', '}', '*', '?', '#']) {
            return Err(ConfigError(format!(
                "mount: `{}` must be a plain path starting with `/`",
                self.mount
            )));
        }
        for key in self.default_models.keys() {
            endpoint("default_models", key)?;
        }
        for key in self.body_limits.keys() {
            endpoint("body_limits", key)?;
        }
        let server = &self.server;
        if server.header_read_timeout_secs == 0
            || server.max_connections == 0
            || server.max_in_flight == 0
        {
            return Err(ConfigError(
                "server: header_read_timeout_secs, max_connections and max_in_flight must be at least 1".into(),
            ));
        }
        for (name, provider) in &self.providers {
            if !provider.mock && provider.base_url.is_none() {
                return Err(ConfigError(format!(
                    "providers.{name}: `base_url` is required (or `mock = true`)"
                )));
            }
            if let Some(cooldown) = &provider.cooldown {
                cooldown
                    .cooldown()
                    .map_err(|e| ConfigError(format!("providers.{name}.{e}")))?;
            }
            let translated = provider.kind != ProviderKind::Openai;
            let only = |field: &str, kinds: &str| {
                ConfigError(format!(
                    "providers.{name}: `{field}` applies only to kind = {kinds}"
                ))
            };
            if translated && provider.auth != AuthConfig::Bearer {
                return Err(only(
                    "auth",
                    "\"openai\" (anthropic and gemini send their own key header)",
                ));
            }
            if translated && provider.rerank_path.is_some() {
                return Err(only("rerank_path", "\"openai\""));
            }
            if provider.kind == ProviderKind::Gemini && provider.default_max_tokens.is_some() {
                return Err(only(
                    "default_max_tokens",
                    "\"anthropic\" (Gemini has its own default)",
                ));
            }
            if !translated && (provider.default_max_tokens.is_some() || provider.drop_params) {
                return Err(only(
                    "default_max_tokens` / `drop_params",
                    "\"anthropic\" or \"gemini\"",
                ));
            }
            if provider.default_max_tokens == Some(0) {
                return Err(ConfigError(format!(
                    "providers.{name}.default_max_tokens must be at least 1"
                )));
            }
        }
        for (name, alias) in &self.models {
            if let Err(e) = alias.policy() {
                return Err(ConfigError(format!("models.\"{name}\".{e}")));
            }
        }
        Ok(())
    }

    /// The key store: digests from the file, keys from the environment hashed now. Two keys
    /// with the same digest (the same key twice) are an error.
    pub(crate) fn key_store(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<MemoryKeyStore, ConfigError> {
        let mut store = MemoryKeyStore::new();
        for key in &self.keys {
            // Checked in `check`.
            let Ok(principal) = key.principal() else {
                continue;
            };
            let digest = if let Some(hex) = &key.key_sha256 {
                // Checked in `check`.
                ApiKeyDigest::from_hex(hex).ok()
            } else if let Some(var) = &key.key_env {
                let value = env(var).filter(|v| !v.is_empty());
                if value.is_none() {
                    tracing::warn!(key = %key.name, env = %var, "router key variable is not set; key skipped");
                }
                value.map(|value| ApiKeyDigest::of(&value))
            } else {
                None
            };
            let Some(digest) = digest else { continue };
            if store.find(&digest).is_some() {
                return Err(ConfigError(format!(
                    "keys: `{}` has the same key as another key",
                    key.name
                )));
            }
            store = store.with_digest(digest, principal);
        }
        Ok(store)
    }

    /// The base URL and key of provider `name`; `mock` (the demo mock's origin and key)
    /// stands in for `mock = true`.
    fn upstream(
        name: &str,
        provider: &ProviderConfig,
        mock: Option<(&str, &str)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> (String, Option<String>) {
        if let (true, Some((origin, key))) = (provider.mock, mock) {
            // The mock speaks each API at its real paths: OpenAI's below `/v1`, Anthropic's
            // and Gemini's below the origin.
            let url = match provider.kind {
                ProviderKind::Openai => format!("{origin}/v1"),
                ProviderKind::Anthropic | ProviderKind::Gemini => origin.to_owned(),
            };
            return (url, Some(key.to_owned()));
        }
        let url = provider.base_url.clone().unwrap_or_default();
        let key = provider
            .api_key_env
            .as_deref()
            .and_then(&env)
            .filter(|k| !k.is_empty());
        if key.is_none() && provider.auth != AuthConfig::None {
            tracing::warn!(
                provider = %name,
                env = provider.api_key_env.as_deref().unwrap_or("(api_key_env not set)"),
                "provider key is not set; its models will answer 503 provider_unavailable"
            );
        }
        (url, key)
    }

    /// Builds the OpenAI-compatible provider `name` (see [`Config::upstream`] for `mock`).
    pub(crate) fn http_provider(
        &self,
        name: &str,
        provider: &ProviderConfig,
        mock: Option<(&str, &str)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpProvider, ConfigError> {
        let (base_url, key) = Self::upstream(name, provider, mock, env);
        let auth = match provider.auth {
            AuthConfig::Bearer => ProviderAuth::Bearer,
            AuthConfig::ApiKey => ProviderAuth::Header(HeaderName::from_static("api-key")),
            AuthConfig::None => ProviderAuth::None,
        };
        let mut builder = HttpProvider::builder(base_url).auth(auth);
        if let Some(key) = key {
            builder = builder.api_key(key);
        }
        for (header, value) in &provider.headers {
            builder = builder.header(header.as_str(), value.as_str());
        }
        if let Some(secs) = provider.timeout_secs {
            builder = builder.timeout(Duration::from_secs(secs));
        }
        if let Some(path) = &provider.rerank_path {
            builder = builder.endpoint_path(Endpoint::Rerank, path.as_str());
        }
        builder
            .build()
            .map_err(|e| ConfigError(format!("providers.{name}: {e}")))
    }
}

/// Applies a provider table's settings to a translating provider's builder.
macro_rules! translating_provider {
    ($fn_name:ident, $provider:ty) => {
        impl Config {
            /// Builds the translating provider `name` (see [`Config::upstream`] for `mock`).
            pub(crate) fn $fn_name(
                &self,
                name: &str,
                provider: &ProviderConfig,
                mock: Option<(&str, &str)>,
                env: impl Fn(&str) -> Option<String>,
            ) -> Result<$provider, ConfigError> {
                let (base_url, key) = Self::upstream(name, provider, mock, env);
                let mut builder = <$provider>::builder(base_url).drop_params(provider.drop_params);
                if let Some(key) = key {
                    builder = builder.api_key(key);
                }
                for (header, value) in &provider.headers {
                    builder = builder.header(header.as_str(), value.as_str());
                }
                if let Some(secs) = provider.timeout_secs {
                    builder = builder.timeout(Duration::from_secs(secs));
                }
                if let Some(max_tokens) = provider.default_max_tokens {
                    builder = builder.default_max_tokens(max_tokens);
                }
                builder
                    .build()
                    .map_err(|e| ConfigError(format!("providers.{name}: {e}")))
            }
        }
    };
}

translating_provider!(anthropic_provider, AnthropicProvider);
translating_provider!(gemini_provider, GeminiProvider);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../gateway.toml");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.mount, "/v3/router");
        assert!(config.providers["demo"].mock);
        assert_eq!(config.models["fast"].targets, ["demo/gpt-4o-mini"]);
        let store = config.key_store(|_| None).unwrap();
        assert!(store.find(&ApiKeyDigest::of("sk-router-demo")).is_some());
        assert_eq!(config.telemetry.access_log, AccessLogConfig::Text);
        assert_eq!(config.server.header_read_timeout_secs, 30);
    }

    #[test]
    fn provider_kinds_are_read_and_their_settings_checked() {
        let config = Config::parse(
            r#"
            [providers.a]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            default_max_tokens = 1024
            drop_params = true
            [providers.g]
            kind = "gemini"
            base_url = "https://generativelanguage.googleapis.com"
            [providers.o]
            base_url = "https://api.openai.com/v1"
            "#,
        )
        .unwrap();
        assert_eq!(config.providers["a"].kind, ProviderKind::Anthropic);
        assert_eq!(config.providers["a"].default_max_tokens, Some(1024));
        assert!(config.providers["a"].drop_params);
        assert_eq!(config.providers["g"].kind, ProviderKind::Gemini);
        assert_eq!(config.providers["o"].kind, ProviderKind::Openai);
        let shipped = Config::parse(include_str!("../gateway.toml")).unwrap();
        assert_eq!(shipped.providers["anthropic"].kind, ProviderKind::Anthropic);
        assert_eq!(shipped.providers["demo-gemini"].kind, ProviderKind::Gemini);
        for (text, wanted) in [
            ("kind = \"claude\"", "kind"),
            ("kind = \"anthropic\"\nauth = \"none\"", "auth"),
            ("kind = \"gemini\"\nrerank_path = \"/r\"", "rerank_path"),
            ("default_max_tokens = 5", "default_max_tokens"),
            ("drop_params = true", "drop_params"),
            (
                "kind = \"anthropic\"\ndefault_max_tokens = 0",
                "default_max_tokens",
            ),
        ] {
            let text = format!("[providers.p]\nbase_url = \"http://h\"\n{text}");
            let error = Config::parse(&text).unwrap_err().to_string();
            assert!(error.contains(wanted), "{text}: {error}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let error = Config::parse("listen = 5").unwrap_err().to_string();
        assert!(error.contains("listen"), "{error}");
        let error = Config::parse("[providers.x]\nbase_ur = \"http://h\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("base_ur"), "{error}");
        let error = Config::parse("[[keys]]\nname = \"a\"\nkey_sha256 = \"zz\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("keys[0].key_sha256"), "{error}");
        let error = Config::parse("[providers.x]\nmodels = []")
            .unwrap_err()
            .to_string();
        assert!(error.contains("providers.x"), "{error}");
    }

    #[test]
    fn resilience_settings_are_read_and_checked() {
        let text = r#"
            [providers.a]
            base_url = "http://127.0.0.1:1/v1"
            cooldown = { failures = 3, secs = 30 }
            [providers.b]
            base_url = "http://127.0.0.1:2/v1"
            [models."smart"]
            targets = ["a/m", "b/m"]
            strategy = "weighted"
            weights = [0.7, 0.3]
            retry = { count = 2, on_codes = [429, 503] }
            timeout_ms = 30000
            first_byte_timeout_ms = 5000
            [models."turns"]
            targets = ["a/m", "b/m"]
            strategy = "round_robin"
        "#;
        let config = Config::parse(text).unwrap();
        let policy = config.models["smart"].policy().unwrap();
        assert_eq!(
            policy,
            AliasPolicy::new()
                .strategy(Strategy::Weighted(vec![0.7, 0.3]))
                .retry(Retry::new(2, [429, 503]))
                .timeout(Duration::from_secs(30))
                .first_byte_timeout(Duration::from_secs(5))
        );
        assert_eq!(
            config.models["turns"].policy().unwrap(),
            AliasPolicy::new().strategy(Strategy::RoundRobin)
        );
        let cooldown = config.providers["a"].cooldown.as_ref().unwrap();
        assert_eq!(
            cooldown.cooldown().unwrap(),
            Cooldown::new(3, Duration::from_secs(30))
        );
        // The default retry codes.
        let config =
            Config::parse("[models.\"x\"]\ntargets = [\"a/m\"]\nretry = { count = 1 }").unwrap();
        let retry = Retry::new(1, [429, 500, 502, 503, 504]);
        assert_eq!(
            config.models["x"].policy().unwrap(),
            AliasPolicy::new().retry(retry)
        );

        for (bad, names) in [
            ("strategy = \"weighted\"", "models.\"x\".weights"),
            (
                "strategy = \"weighted\"\nweights = [1.0, 2.0]",
                "models.\"x\".weights",
            ),
            ("weights = [1.0]", "models.\"x\".weights"),
            ("retry = { count = 6 }", "models.\"x\".retry.count"),
            (
                "retry = { count = 1, on_codes = [42] }",
                "models.\"x\".retry.on_codes",
            ),
            ("timeout_ms = 0", "models.\"x\".timeout_ms"),
            ("strategy = \"random\"", "strategy"),
            ("retry = { count = 1, on = [503] }", "on"),
        ] {
            let text = format!("[models.\"x\"]\ntargets = [\"a/m\"]\n{bad}");
            let error = Config::parse(&text).unwrap_err().to_string();
            assert!(error.contains(names), "{bad}: {error}");
        }
        let error = Config::parse(
            "[providers.a]\nbase_url = \"http://h\"\ncooldown = { failures = 0, secs = 5 }",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("providers.a.cooldown"), "{error}");
    }

    #[test]
    fn limits_are_read_and_misplaced_settings_refused() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.limits.backend, LimitsBackend::Memory);
        let config = Config::parse(
            "[limits]\nbackend = \"redis\"\nredis_url_env = \"REDIS_URL\"\n\
             on_backend_error = \"deny\"\nlease_secs = 10\ntimeout_ms = 100",
        )
        .unwrap();
        assert_eq!(config.limits.backend, LimitsBackend::Redis);
        assert_eq!(config.limits.on_backend_error, OnBackendError::Deny);
        let url = config
            .limits
            .redis_url(|var| (var == "REDIS_URL").then(|| "redis://:pw@h/0".to_owned()))
            .unwrap();
        assert_eq!(url, "redis://:pw@h/0");
        // The URL may hold a password: never in a debug print.
        let config =
            Config::parse("[limits]\nbackend = \"redis\"\nredis_url = \"redis://:hunter2@h/0\"")
                .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        // Nor in a parse error, which names the line without quoting it.
        for text in [
            "[limits]\nbackend = \"redis\"\nredis_ur = \"redis://:hunter2@h/0\"",
            "[limits]\nredis_url = \"redis://:hunter2@h/0",
        ] {
            let error = Config::parse(text).unwrap_err().to_string();
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains("line "), "{error}");
        }
        for (text, says) in [
            ("[limits]\nredis_url = \"redis://h\"", "limits.redis_url"),
            (
                "[limits]\non_backend_error = \"deny\"",
                "limits.on_backend_error",
            ),
            ("[limits]\nbackend = \"redis\"", "exactly one"),
            (
                "[limits]\nbackend = \"redis\"\nredis_url = \"redis://h\"\nredis_url_env = \"R\"",
                "exactly one",
            ),
            (
                "[limits]\nbackend = \"redis\"\nredis_url = \"redis://h\"\nlease_secs = 0",
                "above 0",
            ),
            (
                "[limits]\nbackend = \"redis\"\nredis_url = \"redis://h\"\ntimeout_ms = 5000",
                "deadline",
            ),
            ("[limits]\nbackend = \"etcd\"", "etcd"),
        ] {
            let error = Config::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn key_policy_is_read() {
        let text = r#"
            [[keys]]
            name = "team-a"
            key_env = "K"
            models = ["openai/*", "fast"]
            rpm = 600
            max_concurrent = 32
            tpm = 100000
            expires_at = "2027-01-01T00:00:00Z"
        "#;
        let config = Config::parse(text).unwrap();
        let store = config.key_store(|_| Some("sk-team".to_owned())).unwrap();
        let principal = store.find(&ApiKeyDigest::of("sk-team")).unwrap();
        assert!(principal.allows_model("openai/gpt-4o") && !principal.allows_model("groq/x"));
        assert_eq!(principal.limits().rpm.map(|r| r.get()), Some(600));
        assert_eq!(principal.limits().max_concurrent.map(|r| r.get()), Some(32));
        assert_eq!(principal.limits().tpm.map(|r| r.get()), Some(100_000));
        let in_2028 = humantime::parse_rfc3339("2028-01-01T00:00:00Z").unwrap();
        assert!(principal.is_expired_at(in_2028));
    }

    #[test]
    fn duplicate_names_and_keys_are_refused_at_load() {
        let key = |name: &str, line: &str| format!("[[keys]]\nname = \"{name}\"\n{line}\n");
        let digest = ApiKeyDigest::of("sk-same").to_hex();
        let text = key("team", "key_env = \"A\"") + &key("team", "key_env = \"B\"");
        let error = Config::parse(&text).unwrap_err().to_string();
        assert!(error.contains("`team` is used by another key"), "{error}");
        let line = format!("key_sha256 = \"{digest}\"");
        let text = key("a", &line)
            + &key(
                "b",
                &line.to_uppercase().replace("KEY_SHA256", "key_sha256"),
            );
        let error = Config::parse(&text).unwrap_err().to_string();
        assert!(error.contains("same as another key"), "{error}");
        // The same key in two variables, or in a variable and as a digest.
        let text = key("a", "key_env = \"A\"") + &key("b", &line);
        let config = Config::parse(&text).unwrap();
        let error = config
            .key_store(|_| Some("sk-same".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`b` has the same key"), "{error}");
    }

    #[test]
    fn server_and_telemetry_tables_are_read() {
        let config = Config::parse(
            "[server]\nheader_read_timeout_secs = 5\nmax_in_flight = 2\n[telemetry]\naccess_log = \"json\"",
        )
        .unwrap();
        assert_eq!(config.server.header_read_timeout_secs, 5);
        assert_eq!(config.server.max_in_flight, 2);
        assert_eq!(config.server.max_connections, 10_000);
        assert_eq!(config.telemetry.access_log, AccessLogConfig::Json);
        assert!(Config::parse("[server]\nmax_in_flight = 0").is_err());
        assert!(Config::parse("[telemetry]\naccess_log = \"xml\"").is_err());
    }

    #[test]
    fn otlp_settings_are_read() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert_eq!(config.telemetry.service_name, None);
        let config = Config::parse(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"edge\"",
        )
        .unwrap();
        assert_eq!(
            config.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(config.telemetry.service_name.as_deref(), Some("edge"));
    }

    #[test]
    fn trace_sampling_and_joining_are_read_and_checked() {
        use ai_router::extensions::TracePolicy;
        let config = Config::parse("").unwrap();
        assert_eq!(config.telemetry.trace_policy(), TracePolicy::new());
        let config = Config::parse(
            "[telemetry]
sample_ratio = 0.25
join_client_traces = false",
        )
        .unwrap();
        assert_eq!(
            config.telemetry.trace_policy(),
            TracePolicy::new().sample_ratio(0.25).join_incoming(false)
        );
        for wrong in ["-0.1", "1.5", "nan"] {
            let error = Config::parse(&format!(
                "[telemetry]
sample_ratio = {wrong}"
            ))
            .unwrap_err();
            assert!(error.0.contains("telemetry.sample_ratio"), "{}", error.0);
        }
    }

    #[test]
    fn metrics_listen_is_read() {
        assert_eq!(Config::parse("").unwrap().telemetry.metrics_listen, None);
        let config = Config::parse("[telemetry]\nmetrics_listen = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(
            config.telemetry.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        let error = Config::parse("[telemetry]\nmetrics_listen = \"nope\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("metrics_listen"), "{error}");
    }

    #[test]
    fn env_keys_are_hashed_at_load() {
        let config = Config::parse("[[keys]]\nname = \"dev\"\nkey_env = \"K\"").unwrap();
        let store = config
            .key_store(|var| (var == "K").then(|| "sk-from-env".to_owned()))
            .unwrap();
        assert_eq!(
            store.find(&ApiKeyDigest::of("sk-from-env")).unwrap().name(),
            "dev"
        );
        assert!(!format!("{store:?}").contains("sk-from-env"));
    }
}

#[cfg(test)]
mod proptests {
    //! Configuration text never panics the parser, whatever it holds.

    use proptest::prelude::*;

    use super::Config;

    /// A TOML-ish value: strings (with escapes), numbers, booleans, arrays, garbage.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,16}".prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            prop::collection::vec("[a-z/*:.-]{0,10}", 0..4).prop_map(|v| format!("{v:?}")),
            Just("\"2027-01-01T00:00:00Z\"".to_owned()),
            Just("\"127.0.0.1:0\"".to_owned()),
            Just("\"http://127.0.0.1:1/v1\"".to_owned()),
            Just("{ \"X-A\" = \"b\" }".to_owned()),
            Just(format!("\"{}\"", "a".repeat(64))),
            "[ -~]{0,12}",
        ]
    }

    /// A line of a config file, made of the keys and tables the gateway knows.
    fn line() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "listen",
            "mount",
            "body_limit",
            "shutdown_grace_secs",
            "name",
            "key_sha256",
            "key_env",
            "models",
            "rpm",
            "max_concurrent",
            "tpm",
            "expires_at",
            "base_url",
            "api_key_env",
            "auth",
            "headers",
            "timeout_secs",
            "idle_timeout_secs",
            "stream_usage",
            "mock",
            "allow_any_model",
            "rerank_path",
            "targets",
            "\"moderations\"",
            "\"images/edits\"",
            "\"nope\"",
        ]);
        let table = prop::sample::select(vec![
            "[[keys]]",
            "[providers.p]",
            "[providers.\"a b\"]",
            "[models.\"fast\"]",
            "[default_models]",
            "[body_limits]",
            "[providers.p.headers]",
        ]);
        prop_oneof![
            4 => (key, value()).prop_map(|(k, v)| format!("{k} = {v}")),
            1 => table.prop_map(str::to_owned),
            1 => "\\PC{0,20}",
        ]
    }

    /// `key = value` lines for a table, from that table's own keys.
    fn fields(keys: Vec<&'static str>) -> impl Strategy<Value = String> {
        prop::collection::vec((prop::sample::select(keys), value()), 0..4).prop_map(|fields| {
            fields
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>()
        })
    }

    /// A table the gateway knows, with its required keys and a few others, plausible or not.
    fn block() -> impl Strategy<Value = String> {
        let url = prop::sample::select(vec![
            "\"http://127.0.0.1:1/v1\"",
            "\"https://api.example.com/v1?x=1\"",
            "\"not a url\"",
            "\"\"",
            "\"http://[::1\"",
            "\"http://u:p@h/v1#f\"",
        ]);
        prop_oneof![
            fields(vec!["models", "rpm", "max_concurrent", "tpm", "expires_at"])
                .prop_map(|f| format!("[[keys]]\nname = \"k\"\nkey_env = \"K\"\n{f}")),
            fields(vec!["models", "rpm", "expires_at"]).prop_map(|f| format!(
                "[[keys]]\nname = \"d\"\nkey_sha256 = \"{}\"\n{f}",
                "ab".repeat(32)
            )),
            (
                url,
                fields(vec![
                    "auth",
                    "headers",
                    "timeout_secs",
                    "idle_timeout_secs",
                    "stream_usage",
                    "mock",
                    "allow_any_model",
                    "rerank_path",
                    "models",
                    "api_key_env",
                ])
            )
                .prop_map(|(url, f)| format!("[providers.p]\nbase_url = {url}\n{f}")),
            value().prop_map(|v| format!("[models.\"fast\"]\ntargets = {v}\n")),
            (
                prop::sample::select(vec!["\"moderations\"", "\"responses\"", "x"]),
                value()
            )
                .prop_map(|(k, v)| format!("[default_models]\n{k} = {v}\n")),
            (
                prop::sample::select(vec!["\"chat/completions\"", "x"]),
                value()
            )
                .prop_map(|(k, v)| format!("[body_limits]\n{k} = {v}\n")),
        ]
    }

    /// Exercises what the gateway does with a parsed config.
    fn use_config(config: &Config) {
        let _ = config.key_store(|_| Some("sk-from-env".to_owned()));
        for (name, provider) in &config.providers {
            let _ = Config::stream_settings(provider);
            let _ =
                config.http_provider(name, provider, Some(("http://127.0.0.1:1/v1", "k")), |_| {
                    Some("k".to_owned())
                });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            if let Ok(config) = Config::parse(&text) {
                use_config(&config);
            }
        }

        #[test]
        fn config_shaped_text_never_panics(lines in prop::collection::vec(line(), 0..16)) {
            if let Ok(config) = Config::parse(&lines.join("\n")) {
                use_config(&config);
            }
        }

        #[test]
        fn config_tables_never_panic(
            top in fields(vec!["listen", "mount", "body_limit", "shutdown_grace_secs"]),
            blocks in prop::collection::vec(block(), 0..5),
        ) {
            if let Ok(config) = Config::parse(&format!("{top}{}", blocks.concat())) {
                use_config(&config);
            }
        }
    }
}

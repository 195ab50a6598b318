//! The providers that speak another API than OpenAI's: [`AnthropicProvider`] (Messages API)
//! and [`GeminiProvider`] (Gemini API). Each is the shared HTTP transport plus a dialect
//! (`super::dialect`): the client's OpenAI request is translated before it is sent, the
//! answer after it arrives — a JSON answer once whole (bounded), an event stream event by
//! event as it arrives (never held), an error answer into OpenAI's error object and status.

mod body;
mod future;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tower_service::Service;

use super::body::UpstreamBody;
use super::client::HttpClient;
use super::dialect::{self, ErrorAnswer, Options, ReplyContext, StreamError, StreamTranslator};
use super::transport::{ProviderAuth, Transport, TransportBuilder};
use crate::error::{BuildError, Error};
use crate::extensions::{Endpoint, RequestId, RouteTarget, TRACEPARENT, TRACESTATE, X_REQUEST_ID};

pub(crate) use self::body::TranslatedStream;
pub use self::future::ResponseFuture;

/// The API a translating provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API.
    Gemini,
}

/// What the answer to a translated request is turned into.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A chat completion, translated once whole.
    Chat(ReplyContext),
    /// A chat completion stream, translated event by event.
    ChatStream(ReplyContext),
    /// Embeddings, translated once whole.
    Embeddings(ReplyContext),
}

impl Api {
    /// The provider type's name, for `Debug`.
    fn name(self) -> &'static str {
        match self {
            Self::Anthropic => "AnthropicProvider",
            Self::Gemini => "GeminiProvider",
        }
    }

    fn translate_request(
        self,
        target: &RouteTarget,
        body: &[u8],
        options: &Options,
    ) -> Result<(dialect::UpstreamCall, Reply), Error> {
        use dialect::{anthropic, gemini};
        let model = target.upstream_model();
        let (call, reply) = match (self, target.endpoint()) {
            (Self::Anthropic, Endpoint::ChatCompletions) => {
                let (call, context) = anthropic::chat_request(body, model, options)?;
                let reply = chat_reply(call.stream, context);
                (call, reply)
            }
            (Self::Gemini, Endpoint::ChatCompletions) => {
                let (call, context) = gemini::chat_request(body, model, options)?;
                let reply = chat_reply(call.stream, context);
                (call, reply)
            }
            (Self::Gemini, Endpoint::Embeddings) => {
                let (call, context) = gemini::embeddings_request(body, model, options)?;
                (call, Reply::Embeddings(context))
            }
            _ => {
                // Named as the client knows the model: `provider/model`.
                return Err(Error::unsupported_endpoint(
                    format!("{}/{model}", target.provider()),
                    target.endpoint().upstream_path(),
                ));
            }
        };
        Ok((call, reply))
    }

    fn translate_answer(self, reply: &Reply, body: &[u8]) -> Result<Vec<u8>, Error> {
        use dialect::{anthropic, gemini};
        match (self, reply) {
            (Self::Anthropic, Reply::Chat(context)) => anthropic::chat_response(body, context),
            (Self::Gemini, Reply::Chat(context)) => gemini::chat_response(body, context),
            (Self::Gemini, Reply::Embeddings(context)) => {
                gemini::embeddings_response(body, context)
            }
            _ => Err(Error::internal()),
        }
    }

    fn translate_error(self, status: StatusCode, body: &[u8]) -> ErrorAnswer {
        match self {
            Self::Anthropic => dialect::anthropic::error_answer(status, body),
            Self::Gemini => dialect::gemini::error_answer(status, body),
        }
    }

    fn stream_translator(self, context: ReplyContext) -> ChatTranslator {
        match self {
            Self::Anthropic => {
                ChatTranslator::Anthropic(dialect::anthropic::ChatStream::new(context))
            }
            Self::Gemini => ChatTranslator::Gemini(dialect::gemini::ChatStream::new(context)),
        }
    }
}

fn chat_reply(stream: bool, context: ReplyContext) -> Reply {
    if stream {
        Reply::ChatStream(context)
    } else {
        Reply::Chat(context)
    }
}

/// A chat stream translator of either API (an enum, not a box).
pub(crate) enum ChatTranslator {
    /// Anthropic's events.
    Anthropic(dialect::anthropic::ChatStream),
    /// Gemini's chunks.
    Gemini(dialect::gemini::ChatStream),
}

impl StreamTranslator for ChatTranslator {
    fn event(&mut self, name: &str, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        match self {
            Self::Anthropic(stream) => stream.event(name, data, out),
            Self::Gemini(stream) => stream.event(name, data, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        match self {
            Self::Anthropic(stream) => stream.finish(out),
            Self::Gemini(stream) => stream.finish(out),
        }
    }
}

/// The service behind [`AnthropicProvider`] and [`GeminiProvider`].
#[derive(Clone)]
struct Translating {
    api: Api,
    transport: Arc<Transport>,
    options: Arc<Options>,
}

/// Anthropic's API version header.
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

impl Translating {
    fn prepare(&self, request: Request<Bytes>) -> Result<(Request<Full<Bytes>>, Reply), Error> {
        self.transport.check_credential()?;
        let (parts, body) = request.into_parts();
        let target = parts
            .extensions
            .get::<RouteTarget>()
            .ok_or_else(Error::internal)?;
        let (call, reply) = self.api.translate_request(target, &body, &self.options)?;
        let uri = self
            .transport
            .uri(&call.path)
            .map_err(|_| Error::invalid_param("model", "not a model id this provider can serve"))?;
        // Fresh headers: nothing of the client's request (its SDK's headers mean nothing to
        // this API) reaches the provider but the trace context; no `accept-encoding`, so
        // answers stay readable.
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(
            header::ACCEPT,
            if call.stream {
                EVENT_STREAM
            } else {
                APPLICATION_JSON
            },
        );
        if self.api == Api::Anthropic {
            headers.insert(
                ANTHROPIC_VERSION,
                HeaderValue::from_static(dialect::anthropic::VERSION),
            );
        }
        if let Some(id) = parts.extensions.get::<RequestId>() {
            headers.insert(X_REQUEST_ID, id.header_value().clone());
        }
        // The attempt's trace context (the router's, or the client's as it came), before the
        // provider's own headers, which win.
        for name in [TRACEPARENT, TRACESTATE] {
            for value in parts.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        self.transport.add_headers(&mut headers);
        self.transport.record_server(&parts.extensions);
        let mut upstream = Request::new(Full::new(Bytes::from(call.body)));
        *upstream.method_mut() = Method::POST;
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = headers;
        Ok((upstream, reply))
    }

    fn call(&self, request: Request<Bytes>) -> ResponseFuture {
        match self.prepare(request) {
            Ok((request, reply)) => ResponseFuture::sending(
                self.transport.send(request),
                self.api,
                reply,
                self.transport.timeout,
            ),
            Err(error) => ResponseFuture::failed(error),
        }
    }

    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.api.name())
            .field("base_url", &format_args!("{}", self.transport.shown()))
            .field("credential", &self.transport.credential_state())
            .field("timeout", &self.transport.timeout)
            .field("default_max_tokens", &self.options.default_max_tokens)
            .field("drop_params", &self.options.drop_params)
            .finish()
    }
}

/// The settings both translating providers' builders share.
struct Settings {
    api: Api,
    transport: TransportBuilder,
    options: Options,
}

impl Settings {
    fn new(api: Api, base_url: String) -> Self {
        let header = match api {
            Api::Anthropic => "x-api-key",
            Api::Gemini => "x-goog-api-key",
        };
        Self {
            api,
            transport: TransportBuilder::new(
                base_url,
                ProviderAuth::Header(HeaderName::from_static(header)),
            ),
            options: Options::default(),
        }
    }

    fn build(self) -> Result<Translating, BuildError> {
        if self.options.default_max_tokens == 0 {
            return Err(BuildError::new("default_max_tokens must be at least 1"));
        }
        Ok(Translating {
            api: self.api,
            transport: Arc::new(self.transport.build()?),
            options: Arc::new(self.options),
        })
    }
}

macro_rules! translating_provider {
    (
        $(#[$doc:meta])*
        $provider:ident, $builder:ident, $api:expr
    ) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $provider {
            inner: Translating,
        }

        impl $provider {
            /// A builder for the provider at `base_url` (the API's origin, e.g.
            /// `https://api.anthropic.com`; the API's paths are joined below it).
            pub fn builder(base_url: impl Into<String>) -> $builder {
                $builder {
                    settings: Settings::new($api, base_url.into()),
                }
            }
        }

        impl fmt::Debug for $provider {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.inner.debug(f)
            }
        }

        impl Service<Request<Bytes>> for $provider {
            type Response = Response<UpstreamBody>;
            type Error = Error;
            type Future = ResponseFuture;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: Request<Bytes>) -> ResponseFuture {
                self.inner.call(request)
            }
        }

        #[doc = concat!("Builds a [`", stringify!($provider), "`].")]
        #[must_use]
        pub struct $builder {
            settings: Settings,
        }

        impl $builder {
            /// The provider's API key. Without one, calls answer 503 `provider_unavailable`.
            pub fn api_key(mut self, key: impl Into<String>) -> Self {
                self.settings.transport.api_key = Some(key.into());
                self
            }

            /// A static header added to every upstream request.
            pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
                self.settings.transport.headers.push((name.into(), value.into()));
                self
            }

            /// How long the upstream has to send its response head, and then a JSON answer
            /// its body (default 10 minutes): past it, 504 `upstream_timeout`.
            pub fn timeout(mut self, timeout: Duration) -> Self {
                self.settings.transport.timeout = timeout;
                self
            }

            /// Uses this client (and its pool) instead of the process-wide one.
            pub fn client(mut self, client: HttpClient) -> Self {
                self.settings.transport.client = Some(client);
                self
            }

            /// Anthropic only: `max_tokens` sent when the client set neither `max_tokens` nor
            /// `max_completion_tokens` (default 4096; Anthropic requires one). Gemini, which
            /// has a default of its own per model, ignores it.
            pub fn default_max_tokens(mut self, max_tokens: u32) -> Self {
                self.settings.options.default_max_tokens = max_tokens;
                self
            }

            /// Drops OpenAI parameters the provider cannot honour (`n` > 1, `logprobs`, ...)
            /// instead of answering 400 `unsupported_parameter` (the default).
            pub fn drop_params(mut self, drop: bool) -> Self {
                self.settings.options.drop_params = drop;
                self
            }

            /// Checks the URL and headers and builds the provider.
            pub fn build(self) -> Result<$provider, BuildError> {
                Ok($provider {
                    inner: self.settings.build()?,
                })
            }
        }

        impl fmt::Debug for $builder {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($builder))
                    .field("transport", &self.settings.transport)
                    .finish_non_exhaustive()
            }
        }
    };
}

translating_provider! {
    /// Anthropic's Messages API behind the OpenAI surface: `POST /chat/completions` (plain
    /// and streamed) is translated to `POST {base_url}/v1/messages` (`anthropic-version:
    /// 2023-06-01`, the key as `x-api-key`) and the answer back; other endpoints answer 400
    /// `unsupported_endpoint`.
    ///
    /// ```
    /// use ai_router::provider::AnthropicProvider;
    ///
    /// let claude = AnthropicProvider::builder("https://api.anthropic.com")
    ///     .api_key("sk-ant-...")
    ///     .default_max_tokens(8192)
    ///     .build()?;
    /// assert!(!format!("{claude:?}").contains("sk-ant"));
    /// # Ok::<(), ai_router::BuildError>(())
    /// ```
    AnthropicProvider, AnthropicProviderBuilder, Api::Anthropic
}

translating_provider! {
    /// Google's Gemini API behind the OpenAI surface: `POST /chat/completions` is translated
    /// to `{base_url}/v1beta/models/{model}:generateContent` (`:streamGenerateContent?alt=sse`
    /// when streamed) and `POST /embeddings` to `:embedContent` / `:batchEmbedContents`, the
    /// key sent as `x-goog-api-key`; other endpoints answer 400 `unsupported_endpoint`.
    ///
    /// ```
    /// use ai_router::provider::GeminiProvider;
    ///
    /// let gemini = GeminiProvider::builder("https://generativelanguage.googleapis.com")
    ///     .api_key("AIza...")
    ///     .build()?;
    /// assert!(!format!("{gemini:?}").contains("AIza"));
    /// # Ok::<(), ai_router::BuildError>(())
    /// ```
    GeminiProvider, GeminiProviderBuilder, Api::Gemini
}

//! Dialects: the translation between OpenAI's API (what clients speak) and a provider's own
//! API, as pure functions over bytes. The provider services ([`AnthropicProvider`],
//! [`GeminiProvider`]) do the I/O (transport, bounded collection of bodies, event splitting)
//! and call these; nothing here touches a socket, so each piece is tested on its own.
//!
//! Each dialect has, for each endpoint it serves:
//! - a request translation: the client's OpenAI JSON body (its `model` already rewritten to the
//!   upstream model) into an [`UpstreamCall`] (path below the base URL, body, whether the
//!   answer streams) and a [`ReplyContext`] for the answer; a parameter the provider cannot
//!   honour is `Error::unsupported_param` (unless [`Options::drop_params`]), a malformed one
//!   `Error::invalid_param`;
//! - a response translation: the provider's whole JSON answer (2xx) into OpenAI's JSON;
//! - a stream translation: a [`StreamTranslator`] fed one upstream SSE event at a time, writing
//!   OpenAI chunk frames as each arrives (never holding the stream back);
//! - an error translation: a provider error answer (status + body) into an [`ErrorAnswer`]
//!   (OpenAI's error object and status).
//!
//! OpenAI's side (the answer, chunk and usage objects, frames, error bodies, and the request
//! readers that do not depend on the provider) is written once, in [`openai`].
//!
//! [`AnthropicProvider`]: super::AnthropicProvider
//! [`GeminiProvider`]: super::GeminiProvider

pub(crate) mod anthropic;
pub(crate) mod gemini;
mod openai;

use std::fmt;

use http::StatusCode;

/// What a translating provider was configured with.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// `max_tokens` sent when the client set neither `max_tokens` nor
    /// `max_completion_tokens` (Anthropic requires one).
    pub(crate) default_max_tokens: u32,
    /// Drop OpenAI parameters the provider cannot honour instead of answering 400.
    pub(crate) drop_params: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            default_max_tokens: 4096,
            drop_params: false,
        }
    }
}

/// A translated request, ready for the transport.
#[derive(Debug)]
pub(crate) struct UpstreamCall {
    /// Path (and query, if any) below the provider's base URL, starting with `/`, e.g.
    /// `/v1/messages` or `/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`.
    pub(crate) path: String,
    /// The JSON body to send.
    pub(crate) body: Vec<u8>,
    /// The answer is an event stream (translate it with a [`StreamTranslator`]).
    pub(crate) stream: bool,
}

/// What the translated answer needs to know about the request.
#[derive(Clone, Debug)]
pub(crate) struct ReplyContext {
    /// The upstream model asked for: the answer's `model` when the provider reports none.
    pub(crate) model: String,
    /// The client asked for `stream_options.include_usage`: a stream ends with a usage chunk
    /// (`choices: []`) before `data: [DONE]`.
    pub(crate) include_usage: bool,
    /// `created` for the answer (seconds since the epoch, taken when the request was made).
    pub(crate) created: u64,
    /// Response format forced through a tool (Anthropic `json_schema` / `json_object`): the
    /// name of that tool, whose input is the answer's content.
    pub(crate) json_tool: Option<String>,
    /// For Gemini embeddings: answer `encoding_format: "base64"` (little-endian f32).
    pub(crate) base64: bool,
}

impl ReplyContext {
    /// A context for `model`, created now.
    pub(crate) fn new(model: impl Into<String>) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            model: model.into(),
            include_usage: false,
            created,
            json_tool: None,
            base64: false,
        }
    }
}

/// A provider's error answer in OpenAI's shape.
#[derive(Debug)]
pub(crate) struct ErrorAnswer {
    /// The status the client gets (e.g. Anthropic's 529 is 503). Our credential refused is
    /// 401 here: the errors layer above turns any upstream 401 into 502
    /// `provider_auth_failed`.
    pub(crate) status: StatusCode,
    /// `{"error":{"message","type","param","code"}}` with all four keys.
    pub(crate) body: Vec<u8>,
    /// Seconds to wait, when the provider said (Gemini's `RetryInfo.retryDelay`); a
    /// `retry-after` header the provider sent is kept by the transport anyway.
    pub(crate) retry_after: Option<u64>,
}

/// A stream that cannot go on (the provider sent an `error` event, or an event that is not
/// what its API defines): the stream ends with the router's error frame.
#[derive(Debug)]
pub(crate) struct StreamError(pub(crate) String);

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamError {}

/// Turns a provider's event stream into OpenAI chat completion chunks, event by event.
pub(crate) trait StreamTranslator: Send + 'static {
    /// One upstream SSE event: `name` is its `event:` field (`""` when absent), `data` its
    /// `data:` lines joined with `\n`. Appends zero or more whole OpenAI frames
    /// (`data: {json}\n\n`) to `out`.
    fn event(&mut self, name: &str, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError>;

    /// The upstream stream ended. Appends what is left (the usage chunk when asked, and
    /// `data: [DONE]\n\n` exactly once over the whole stream); an error if the stream ended
    /// before the provider's end of message.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError>;
}

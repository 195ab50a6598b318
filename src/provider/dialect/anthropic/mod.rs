//! Anthropic's Messages API behind OpenAI's Chat Completions.
//!
//! Follows `POST /v1/messages` as of `anthropic-version: 2023-06-01` (the only version; features
//! arrive as fields and event kinds, and no `anthropic-beta` header is needed here):
//! - [`chat_request`]: an OpenAI chat request into a Messages request (system and developer
//!   messages into `system`, turns merged by role, tool calls and results into `tool_use` /
//!   `tool_result` blocks, images and PDFs into base64 or URL sources, tools and `tool_choice`,
//!   and `response_format` as a forced tool whose input becomes the answer's content);
//! - [`chat_response`]: a Message into a `chat.completion`;
//! - [`ChatStream`]: Messages stream events into `chat.completion.chunk` frames, event by event;
//! - [`error_answer`]: an Anthropic error answer into OpenAI's error object and status.
//!
//! What cannot be translated (`n` > 1, `logprobs`, penalties, `seed`, audio, `file_id`, ...)
//! is a 400 `unsupported_parameter` naming the parameter, or dropped when the provider is set
//! to drop parameters. Anthropic answers 400 to any field it does not define, so nothing is
//! passed through untranslated.

mod error;
mod request;
mod response;
mod stream;

pub(crate) use self::error::error_answer;
pub(crate) use self::request::chat_request;
pub(crate) use self::response::chat_response;
pub(crate) use self::stream::ChatStream;

/// The API version this translation follows, sent as `anthropic-version`.
pub(crate) const VERSION: &str = "2023-06-01";

/// The provider's name in `unsupported_parameter` messages.
const PROVIDER: &str = "Anthropic";

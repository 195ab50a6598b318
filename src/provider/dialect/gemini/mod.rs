//! The Google Gemini API (`generativelanguage.googleapis.com`, version `v1beta`, as documented at
//! <https://ai.google.dev/api>) behind OpenAI's Chat Completions and Embeddings.
//!
//! - Chat: `POST /v1beta/models/{model}:generateContent`, or
//!   `:streamGenerateContent?alt=sse` when the client streams ([`chat_request`],
//!   [`chat_response`], [`ChatStream`]).
//! - Embeddings: one string is `:embedContent`, a list is one `:batchEmbedContents` call
//!   ([`embeddings_request`], [`embeddings_response`]).
//! - Errors: Google's `{"error":{"code","message","status","details"}}` ([`error_answer`]).
//!
//! Fields used beyond the original v1beta surface, all in the current reference:
//! `FunctionDeclaration.parametersJsonSchema` and `GenerationConfig.responseJsonSchema` (plain
//! JSON Schema, as OpenAI clients write it, rather than the OpenAPI subset of `parameters` /
//! `responseSchema`), `Part.thoughtSignature` and `FunctionCall.id`.
//!
//! # Tool-call ids
//! Gemini 2.5 and 3 attach an opaque `thoughtSignature` to `functionCall` parts, and Gemini 3
//! answers 400 when a function call of the current turn comes back without it
//! (<https://ai.google.dev/gemini-api/docs/thought-signatures>). OpenAI clients echo only a
//! tool call's `id`, so the signature (and Gemini's own call id, when it gives one) travel
//! inside that id; see [`call_id`]. Calls the client made up or got from another provider
//! carry neither; on Gemini 3 and later the first such call of a model turn gets Google's
//! documented placeholder signature so that history from elsewhere is accepted.
//! `parallel_tool_calls` is accepted and ignored: Gemini decides whether to call several
//! functions at once. Signatures on text parts (optional to return) are not kept.
//!
//! # What is not translated
//! Refused with 400 `unsupported_parameter` (dropped instead with `drop_params`): `logprobs`,
//! `top_logprobs`, `logit_bias`, `audio`, `modalities` other than text, `prediction`,
//! `reasoning_effort` (Gemini's thinking settings differ by model generation),
//! `web_search_options`, the deprecated `functions` / `function_call`, tools other than functions, `tool_choice`
//! `allowed_tools`, `file` parts by `file_id`, and any other key; embeddings' token-id inputs
//! (never dropped). Accepted and left out: `user`, `metadata`, `store`, `service_tier`,
//! `safety_identifier`, `prompt_cache_key`, a function's `strict`, an image's `detail`, a
//! message's `name`.

mod call_id;
mod embed;
mod error;
mod request;
mod response;
mod stream;

pub(crate) use self::embed::{embeddings_request, embeddings_response};
pub(crate) use self::error::error_answer;
pub(crate) use self::request::chat_request;
pub(crate) use self::response::chat_response;
pub(crate) use self::stream::ChatStream;

use crate::error::Error;

/// The provider's name in `unsupported_parameter` errors.
const PROVIDER: &str = "Gemini";

/// The model id as it goes in the path: `models/` stripped, only `[A-Za-z0-9._-]`.
fn model_id(model: &str) -> Result<&str, Error> {
    let id = model.strip_prefix("models/").unwrap_or(model);
    let valid = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(id)
    } else {
        Err(Error::invalid_param(
            "model",
            "a Gemini model id has only letters, digits, '.', '_' and '-'",
        ))
    }
}

/// OpenAI's `finish_reason` for a Gemini `finishReason`.
fn finish_reason(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// The refusal text for a prompt Gemini blocked before generating anything.
fn blocked_message(reason: &str) -> String {
    format!("The prompt was blocked by Gemini ({reason}).")
}

/// An error as the client sees its body (for the tests of every part).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn rendered(error: Error) -> serde_json::Value {
    let mut body = error.into_response().into_body();
    let std::task::Poll::Ready(Some(Ok(frame))) = body.poll_as::<std::convert::Infallible>() else {
        panic!("an error body is one frame");
    };
    serde_json::from_slice(&frame.into_data().unwrap()).unwrap()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn model_ids() {
        assert_eq!(model_id("gemini-2.5-flash").unwrap(), "gemini-2.5-flash");
        assert_eq!(
            model_id("models/gemini-2.5-flash").unwrap(),
            "gemini-2.5-flash"
        );
        assert_eq!(
            model_id("text_embedding.004").unwrap(),
            "text_embedding.004"
        );
        for bad in ["", "models/", "gemini/../x", "a:b", "a?b", "a b", "gémini"] {
            let error = model_id(bad).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason("STOP", false), "stop");
        assert_eq!(finish_reason("STOP", true), "tool_calls");
        assert_eq!(finish_reason("MAX_TOKENS", true), "length");
        for filtered in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(finish_reason(filtered, false), "content_filter");
        }
        assert_eq!(finish_reason("IMAGE_SAFETY", false), "content_filter");
        assert_eq!(finish_reason("OTHER", false), "stop");
        assert_eq!(finish_reason("MALFORMED_FUNCTION_CALL", false), "stop");
    }
}

//! OpenAI embeddings <-> Gemini `embedContent` (one input) and `batchEmbedContents` (a list,
//! in one call).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::super::{Options, ReplyContext, UpstreamCall};
use super::request::{parse_object, unsupported};
use crate::error::Error;

/// Translates a client's embeddings request for `model`.
pub(crate) fn embeddings_request(
    body: &[u8],
    model: &str,
    options: &Options,
) -> Result<(UpstreamCall, ReplyContext), Error> {
    let model = super::model_id(model)?;
    let request = parse_object(body)?;
    let mut dimensions = None;
    let mut base64 = false;
    for (key, value) in request.iter().filter(|(_, v)| !v.is_null()) {
        match key.as_str() {
            "model" | "input" | "user" => {}
            "dimensions" => match value.as_u64() {
                Some(n) if n > 0 && i32::try_from(n).is_ok() => dimensions = Some(n),
                _ => {
                    return Err(Error::invalid_param(
                        "dimensions",
                        "must be a positive integer",
                    ));
                }
            },
            "encoding_format" => {
                base64 = match value.as_str() {
                    Some("float") => false,
                    Some("base64") => true,
                    _ => {
                        return Err(Error::invalid_param(
                            "encoding_format",
                            "must be 'float' or 'base64'",
                        ));
                    }
                }
            }
            _ => unsupported(key.as_str(), options)?,
        }
    }
    let input = request
        .get("input")
        .filter(|i| !i.is_null())
        .ok_or_else(|| Error::missing_param("input"))?;
    let resource = format!("models/{model}");
    let embed_request = |text: &Value| {
        let mut one = Map::new();
        one.insert("model".into(), json!(resource));
        one.insert("content".into(), json!({ "parts": [{ "text": text }] }));
        if let Some(dimensions) = dimensions {
            one.insert("outputDimensionality".into(), json!(dimensions));
        }
        Value::Object(one)
    };
    let (path, body) = match input {
        Value::String(_) => (
            format!("/v1beta/models/{model}:embedContent"),
            embed_request(input),
        ),
        Value::Array(items) if items.is_empty() => {
            return Err(Error::invalid_param("input", "must not be empty"));
        }
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let requests: Vec<Value> = items.iter().map(embed_request).collect();
            (
                format!("/v1beta/models/{model}:batchEmbedContents"),
                json!({ "requests": requests }),
            )
        }
        // Token ids (an array of integers, or of arrays of them): Gemini takes only text.
        Value::Array(items) if items.iter().all(|i| i.is_number() || i.is_array()) => {
            return Err(Error::unsupported_param("input", super::PROVIDER));
        }
        _ => {
            return Err(Error::invalid_param(
                "input",
                "must be a string or an array of strings",
            ));
        }
    };
    let mut context = ReplyContext::new(model);
    context.base64 = base64;
    let body = serde_json::to_vec(&body).map_err(|e| Error::internal().with_source(e))?;
    Ok((
        UpstreamCall {
            path,
            body,
            stream: false,
        },
        context,
    ))
}

/// Gemini's answer: `embedding` for `embedContent`, `embeddings` for the batch.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedResponse {
    embedding: Option<Embedding>,
    embeddings: Option<Vec<Embedding>>,
    usage_metadata: Option<EmbedUsage>,
}

#[derive(Deserialize)]
struct Embedding {
    values: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedUsage {
    #[serde(default)]
    prompt_token_count: u64,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: ListUsage,
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f64>),
    Base64(String),
}

#[derive(Serialize)]
struct ListUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Translates Gemini's (2xx) embeddings answer into OpenAI's list.
pub(crate) fn embeddings_response(body: &[u8], context: &ReplyContext) -> Result<Vec<u8>, Error> {
    let response: EmbedResponse =
        serde_json::from_slice(body).map_err(|e| Error::upstream_protocol().with_source(e))?;
    let embeddings = match (response.embeddings, response.embedding) {
        (Some(many), _) => many,
        (None, Some(one)) => vec![one],
        (None, None) => {
            return Err(
                Error::upstream_protocol().with_source("a Gemini answer without embeddings")
            );
        }
    };
    let data = embeddings
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| Item {
            object: "embedding",
            index,
            embedding: if context.base64 {
                Vector::Base64(to_base64(&embedding.values))
            } else {
                Vector::Float(embedding.values)
            },
        })
        .collect();
    let tokens = response.usage_metadata.map_or(0, |u| u.prompt_token_count);
    let list = List {
        object: "list",
        data,
        model: &context.model,
        usage: ListUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    serde_json::to_vec(&list).map_err(|e| Error::internal().with_source(e))
}

/// OpenAI's base64 encoding: the vector as little-endian `f32`s.
fn to_base64(values: &[f64]) -> String {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for value in values {
        // Gemini's values are `float`s: narrowing loses nothing they had.
        bytes.extend_from_slice(&(*value as f32).to_le_bytes());
    }
    STANDARD.encode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn translate(
        request: Value,
        options: &Options,
    ) -> Result<(UpstreamCall, ReplyContext, Value), Error> {
        let body = serde_json::to_vec(&request).unwrap();
        let (call, context) = embeddings_request(&body, "models/text-embedding-004", options)?;
        let sent = serde_json::from_slice(&call.body).unwrap();
        Ok((call, context, sent))
    }

    fn answer(body: Value, context: &ReplyContext) -> Value {
        let out = embeddings_response(&serde_json::to_vec(&body).unwrap(), context).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn one_input() {
        let (call, context, sent) = translate(
            json!({ "model": "text-embedding-004", "input": "hello", "dimensions": 256, "user": "u" }),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(call.path, "/v1beta/models/text-embedding-004:embedContent");
        assert!(!call.stream);
        assert!(!context.base64);
        assert_eq!(
            sent,
            json!({
                "model": "models/text-embedding-004",
                "content": { "parts": [{ "text": "hello" }] },
                "outputDimensionality": 256,
            })
        );
        let got = answer(
            json!({ "embedding": { "values": [0.25, -1.5, 0.013168523] } }),
            &context,
        );
        assert_eq!(
            got,
            json!({
                "object": "list",
                "data": [{ "object": "embedding", "index": 0, "embedding": [0.25, -1.5, 0.013168523] }],
                "model": "text-embedding-004",
                "usage": { "prompt_tokens": 0, "total_tokens": 0 },
            })
        );
    }

    #[test]
    fn a_list_is_one_batch_call() {
        let (call, context, sent) = translate(
            json!({ "input": ["a", "b"], "encoding_format": "float" }),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(
            call.path,
            "/v1beta/models/text-embedding-004:batchEmbedContents"
        );
        assert_eq!(
            sent,
            json!({ "requests": [
                { "model": "models/text-embedding-004", "content": { "parts": [{ "text": "a" }] } },
                { "model": "models/text-embedding-004", "content": { "parts": [{ "text": "b" }] } },
            ]})
        );
        let got = answer(
            json!({ "embeddings": [{ "values": [1.0] }, { "values": [2.0] }], "usageMetadata": { "promptTokenCount": 4 } }),
            &context,
        );
        assert_eq!(
            got["data"][1],
            json!({ "object": "embedding", "index": 1, "embedding": [2.0] })
        );
        assert_eq!(
            got["usage"],
            json!({ "prompt_tokens": 4, "total_tokens": 4 })
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let (_, context, _) = translate(
            json!({ "input": ["a"], "encoding_format": "base64" }),
            &Options::default(),
        )
        .unwrap();
        assert!(context.base64);
        let values = [0.013_168_523_f32, -0.5, 3.25];
        let got = answer(json!({ "embeddings": [{ "values": values }] }), &context);
        let bytes = STANDARD
            .decode(got["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(decoded, values);
    }

    #[test]
    fn refusals() {
        let status_and_param = |request: Value, options: &Options| {
            let error = translate(request, options).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            let body = super::super::rendered(error);
            (
                body["error"]["param"].clone(),
                body["error"]["code"].clone(),
            )
        };
        let plain = Options::default();
        let dropping = Options {
            drop_params: true,
            ..Options::default()
        };
        assert_eq!(status_and_param(json!({ "input": [] }), &plain).0, "input");
        assert_eq!(status_and_param(json!({ "model": "x" }), &plain).0, "input");
        assert_eq!(status_and_param(json!({ "input": 5 }), &plain).0, "input");
        assert_eq!(
            status_and_param(json!({ "input": ["a", 1] }), &plain).0,
            "input"
        );
        for tokens in [json!([1, 2, 3]), json!([[1, 2], [3]])] {
            let got = status_and_param(json!({ "input": tokens }), &dropping);
            assert_eq!(got, (json!("input"), json!("unsupported_parameter")));
        }
        assert_eq!(
            status_and_param(json!({ "input": "a", "dimensions": 0 }), &plain).0,
            "dimensions"
        );
        assert_eq!(
            status_and_param(json!({ "input": "a", "encoding_format": "int8" }), &plain).0,
            "encoding_format"
        );
        let got = status_and_param(json!({ "input": "a", "task": "x" }), &plain);
        assert_eq!(got, (json!("task"), json!("unsupported_parameter")));
        let (_, _, sent) = translate(json!({ "input": "a", "task": "x" }), &dropping).unwrap();
        assert!(sent.get("task").is_none());
    }

    #[test]
    fn unreadable_answers_are_protocol_errors() {
        let context = ReplyContext::new("text-embedding-004");
        for body in [&b"nope"[..], b"{}", b"{\"embedding\":{}}"] {
            let error = embeddings_response(body, &context).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        }
    }
}

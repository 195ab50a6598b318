//! Per-request routing knobs (Orq AI Router's names), read from the top level of a JSON body,
//! checked, and stripped before the body goes anywhere.
//!
//! - `fallbacks: [{"model": "provider/model"}, ...]` (at most 5), tried after the primary;
//! - `retry: {"count": 1..5, "on_codes": [...]}` (`on_codes` defaults to `[429]`);
//! - `timeout: {"call_timeout": <ms>}`, per attempt;
//! - `load_balancer: {"type": "weight_based" | "round_robin", "models": [{"model", "weight"}]}`
//!   (weight 0.001..1, default 0.5, normalised) picks among these instead of `model`;
//! - `identity: {"id": ...}` and `thread: {"id": ...}`: stripped; their `id` strings (at most
//!   [`MAX_ID_BYTES`] bytes; another `id` is ignored) are recorded for telemetry (the end user
//!   and the conversation).
//!
//! An invalid knob is a 400 whose `param` names it (`retry.count`, `fallbacks[1].model`,
//! `load_balancer.models[0].weight`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::extensions::{MAX_RETRIES, Retry};
use crate::members::{members, without};

/// The knobs' names, in the order [`Knobs`] reads them.
pub(super) const NAMES: [&str; 6] = [
    "fallbacks",
    "retry",
    "timeout",
    "load_balancer",
    "identity",
    "thread",
];

/// The largest knob, in bytes of JSON.
const MAX_KNOB_BYTES: usize = 64 * 1024;
/// The longest `identity.id` / `thread.id` recorded.
pub(super) const MAX_ID_BYTES: usize = 256;
/// The most fallbacks a request may name.
const MAX_FALLBACKS: usize = 5;
/// The most models a request's load balancer may name.
const MAX_BALANCED: usize = 10;
/// The longest per-attempt timeout a request may ask for: 1 hour.
const MAX_CALL_TIMEOUT_MS: u64 = 3_600_000;

/// What a request's knobs ask for.
#[derive(Debug, Default)]
pub(super) struct Knobs {
    /// Model ids tried after the primary, in order.
    pub(super) fallbacks: Vec<String>,
    pub(super) retry: Option<Retry>,
    pub(super) call_timeout: Option<Duration>,
    pub(super) load_balancer: Option<LoadBalancer>,
    /// `identity.id`: the end user, for telemetry.
    pub(super) identity: Option<Arc<str>>,
    /// `thread.id`: the conversation, for telemetry.
    pub(super) thread: Option<Arc<str>>,
}

/// A request's own load balancer.
#[derive(Debug)]
pub(super) struct LoadBalancer {
    pub(super) round_robin: bool,
    /// Model ids with their weights (not yet normalised).
    pub(super) models: Vec<(String, f64)>,
}

impl LoadBalancer {
    /// The models in the order to try them: the one picked first (by weight, or by `turn`
    /// for round robin), then the others in the order the request gave.
    pub(super) fn order(&self, turn: usize) -> Vec<(usize, &str)> {
        let n = self.models.len();
        let first = if self.round_robin {
            turn % n
        } else {
            let total: f64 = self.models.iter().map(|(_, w)| w).sum();
            let mut draw = fastrand::f64() * total;
            self.models
                .iter()
                .position(|(_, w)| {
                    draw -= w;
                    draw < 0.0
                })
                .unwrap_or(n - 1)
        };
        std::iter::once(first)
            .chain((0..n).filter(|&i| i != first))
            .map(|i| (i, self.models[i].0.as_str()))
            .collect()
    }
}

/// Reads, checks and strips the knobs of a JSON object body: the knobs and the body without
/// them (every other byte kept).
pub(super) fn take(body: &Bytes) -> Result<(Knobs, Bytes), Error> {
    let found = members(body, &NAMES).ok_or_else(Error::invalid_json)?;
    let mut knobs = Knobs::default();
    for member in found.iter() {
        let Some(name) = member.name else { continue };
        let raw = body.get(member.value.clone()).ok_or_else(Error::internal)?;
        let knob = NAMES[name];
        if raw == b"null" {
            // As if absent (and stripped all the same).
            continue;
        }
        if raw.len() > MAX_KNOB_BYTES {
            // Read into a tree, a huge knob would cost many times its size.
            return Err(Error::invalid_param(
                knob,
                format!("must be at most {MAX_KNOB_BYTES} bytes of JSON"),
            ));
        }
        if matches!(knob, "identity" | "thread") {
            // Recorded by telemetry, never forwarded; valid JSON already (the body parsed).
            if raw.first() != Some(&b'{') {
                return Err(Error::invalid_param(knob, "must be an object"));
            }
            let id = knob_id(raw);
            if knob == "identity" {
                knobs.identity = id;
            } else {
                knobs.thread = id;
            }
            continue;
        }
        let value: Value =
            serde_json::from_slice(raw).map_err(|e| Error::invalid_json().with_source(e))?;
        match knob {
            "fallbacks" => knobs.fallbacks = fallbacks(&value)?,
            "retry" => knobs.retry = Some(retry(&value)?),
            "timeout" => knobs.call_timeout = Some(call_timeout(&value)?),
            _ => knobs.load_balancer = Some(load_balancer(&value)?),
        }
    }
    let stripped = without(body, &found, |m| m.name.is_some()).ok_or_else(Error::internal)?;
    Ok((knobs, stripped))
}

/// The `id` string of an `identity` or `thread` object, when it is one of at most
/// [`MAX_ID_BYTES`] bytes (anything else is ignored: the knob is for telemetry only).
fn knob_id(raw: &[u8]) -> Option<Arc<str>> {
    #[derive(Deserialize)]
    struct WithId<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
    }
    let raw = serde_json::from_slice::<WithId<'_>>(raw).ok()?.id?;
    // Borrowed when it has no escapes (the usual case), else unescaped.
    let id: Cow<'_, str> = match serde_json::from_str::<&str>(raw.get()) {
        Ok(id) => Cow::Borrowed(id),
        Err(_) => Cow::Owned(serde_json::from_str::<String>(raw.get()).ok()?),
    };
    (id.len() <= MAX_ID_BYTES).then(|| Arc::from(&*id))
}

fn object<'v>(value: &'v Value, param: &str) -> Result<&'v Map<String, Value>, Error> {
    value
        .as_object()
        .ok_or_else(|| Error::invalid_param(param, "must be an object"))
}

/// A non-empty model id string at `param`.
fn model_at(value: Option<&Value>, param: String) -> Result<String, Error> {
    match value.and_then(Value::as_str) {
        Some(model) if !model.is_empty() => Ok(model.to_owned()),
        _ => Err(Error::invalid_param(
            param,
            "must be a model id (a non-empty string)",
        )),
    }
}

fn fallbacks(value: &Value) -> Result<Vec<String>, Error> {
    let list = value
        .as_array()
        .ok_or_else(|| Error::invalid_param("fallbacks", "must be an array of {\"model\": ...}"))?;
    if list.len() > MAX_FALLBACKS {
        return Err(Error::invalid_param(
            "fallbacks",
            format!("must name at most {MAX_FALLBACKS} models"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let item = object(item, &format!("fallbacks[{i}]"))?;
            model_at(item.get("model"), format!("fallbacks[{i}].model"))
        })
        .collect()
}

fn retry(value: &Value) -> Result<Retry, Error> {
    let retry = object(value, "retry")?;
    let count = retry
        .get("count")
        .and_then(Value::as_u64)
        .filter(|count| (1..=u64::from(MAX_RETRIES)).contains(count))
        .ok_or_else(|| {
            Error::invalid_param(
                "retry.count",
                format!("must be an integer from 1 to {MAX_RETRIES}"),
            )
        })?;
    let on_codes = match retry.get("on_codes") {
        None => vec![429],
        Some(codes) => {
            let codes = codes.as_array().ok_or_else(|| {
                Error::invalid_param("retry.on_codes", "must be an array of HTTP status codes")
            })?;
            codes
                .iter()
                .enumerate()
                .map(|(i, code)| {
                    code.as_u64()
                        .filter(|code| (100..=599).contains(code))
                        .and_then(|code| u16::try_from(code).ok())
                        .ok_or_else(|| {
                            Error::invalid_param(
                                format!("retry.on_codes[{i}]"),
                                "must be an HTTP status code (100 to 599)",
                            )
                        })
                })
                .collect::<Result<Vec<u16>, Error>>()?
        }
    };
    // Checked above: 1 to 5.
    Ok(Retry::new(count as u8, on_codes))
}

fn call_timeout(value: &Value) -> Result<Duration, Error> {
    object(value, "timeout")?
        .get("call_timeout")
        .and_then(Value::as_u64)
        .filter(|ms| (1..=MAX_CALL_TIMEOUT_MS).contains(ms))
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Error::invalid_param(
                "timeout.call_timeout",
                format!("must be a number of milliseconds from 1 to {MAX_CALL_TIMEOUT_MS}"),
            )
        })
}

fn load_balancer(value: &Value) -> Result<LoadBalancer, Error> {
    let balancer = object(value, "load_balancer")?;
    let round_robin = match balancer.get("type").and_then(Value::as_str) {
        Some("weight_based") => false,
        Some("round_robin") => true,
        _ => {
            return Err(Error::invalid_param(
                "load_balancer.type",
                "must be \"weight_based\" or \"round_robin\"",
            ));
        }
    };
    let invalid_models = || {
        Error::invalid_param(
            "load_balancer.models",
            format!("must be an array of 1 to {MAX_BALANCED} {{\"model\", \"weight\"}} objects"),
        )
    };
    let list = balancer
        .get("models")
        .and_then(Value::as_array)
        .filter(|list| (1..=MAX_BALANCED).contains(&list.len()))
        .ok_or_else(invalid_models)?;
    let models = list
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = object(item, &format!("load_balancer.models[{i}]"))?;
            let model = model_at(
                item.get("model"),
                format!("load_balancer.models[{i}].model"),
            )?;
            let weight = match item.get("weight") {
                None => 0.5,
                Some(weight) => weight
                    .as_f64()
                    .filter(|w| (0.001..=1.0).contains(w))
                    .ok_or_else(|| {
                        Error::invalid_param(
                            format!("load_balancer.models[{i}].weight"),
                            "must be a number from 0.001 to 1",
                        )
                    })?,
            };
            Ok((model, weight))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(LoadBalancer {
        round_robin,
        models,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn take_str(body: &str) -> Result<(Knobs, String), Error> {
        take(&Bytes::copy_from_slice(body.as_bytes()))
            .map(|(knobs, body)| (knobs, String::from_utf8(body.to_vec()).unwrap()))
    }

    fn param(body: &str) -> String {
        let error = take_str(body).unwrap_err();
        let response = error.into_response();
        assert_eq!(response.status(), 400);
        let json: Value = serde_json::from_slice(
            &futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                response.into_body(),
            ))
            .unwrap()
            .unwrap()
            .to_bytes(),
        )
        .unwrap();
        json["error"]["param"].as_str().unwrap().to_owned()
    }

    #[test]
    fn knobs_are_read_and_stripped_leaving_every_other_byte() {
        let body = r#"{"model":"a/b", "fallbacks":[{"model":"c/d"}],"messages":[],"retry":{"count":2},"timeout":{"call_timeout":1500},"identity":{"id":"u1"},"thread":{"id":"t"}}"#;
        let (knobs, stripped) = take_str(body).unwrap();
        assert_eq!(stripped, r#"{"model":"a/b","messages":[]}"#);
        assert_eq!(knobs.fallbacks, ["c/d"]);
        let retry = knobs.retry.unwrap();
        assert_eq!((retry.count(), retry.on_codes()), (2, &[429][..]));
        assert_eq!(knobs.call_timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn identity_and_thread_ids_are_read_when_they_are_short_strings() {
        let (knobs, stripped) =
            take_str(r#"{"identity":{"id":"user1","name":"x"},"thread":{"id":"t-9"},"model":"m"}"#)
                .unwrap();
        assert_eq!(stripped, r#"{"model":"m"}"#);
        assert_eq!(knobs.identity.as_deref(), Some("user1"));
        assert_eq!(knobs.thread.as_deref(), Some("t-9"));
        let long = "a".repeat(MAX_ID_BYTES + 1);
        for body in [
            format!(r#"{{"identity":{{"id":"{long}"}}}}"#),
            r#"{"identity":{"id":7}}"#.to_owned(),
            r#"{"identity":{"name":"x"}}"#.to_owned(),
        ] {
            let (knobs, stripped) = take_str(&body).unwrap();
            assert_eq!((knobs.identity, stripped.as_str()), (None, "{}"), "{body}");
        }
        let exact = "a".repeat(MAX_ID_BYTES);
        let (knobs, _) = take_str(&format!(r#"{{"thread":{{"id":"{exact}"}}}}"#)).unwrap();
        assert_eq!(knobs.thread.as_deref(), Some(exact.as_str()));
    }

    #[test]
    fn invalid_knobs_name_their_param() {
        for (body, expected) in [
            (r#"{"retry":{"count":0}}"#, "retry.count"),
            (r#"{"retry":{"count":6}}"#, "retry.count"),
            (
                r#"{"retry":{"count":1,"on_codes":[99]}}"#,
                "retry.on_codes[0]",
            ),
            (r#"{"retry":3}"#, "retry"),
            (
                r#"{"fallbacks":[{"model":"a/b"},{"model":""}]}"#,
                "fallbacks[1].model",
            ),
            (r#"{"fallbacks":[{},{},{},{},{},{}]}"#, "fallbacks"),
            (r#"{"timeout":{"call_timeout":0}}"#, "timeout.call_timeout"),
            (
                r#"{"load_balancer":{"type":"random","models":[{"model":"a/b"}]}}"#,
                "load_balancer.type",
            ),
            (
                r#"{"load_balancer":{"type":"round_robin","models":[]}}"#,
                "load_balancer.models",
            ),
            (
                r#"{"load_balancer":{"type":"weight_based","models":[{"model":"a/b","weight":2}]}}"#,
                "load_balancer.models[0].weight",
            ),
            (r#"{"identity":"me"}"#, "identity"),
        ] {
            assert_eq!(param(body), expected, "{body}");
        }
    }

    #[test]
    fn balancers_pick_every_model_and_keep_the_others_as_fallbacks() {
        let (knobs, _) = take_str(
            r#"{"load_balancer":{"type":"round_robin","models":[{"model":"a/1"},{"model":"b/2"},{"model":"c/3"}]}}"#,
        )
        .unwrap();
        let balancer = knobs.load_balancer.unwrap();
        let models = |turn| {
            balancer
                .order(turn)
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
        };
        assert_eq!(models(0), ["a/1", "b/2", "c/3"]);
        assert_eq!(models(1), ["b/2", "a/1", "c/3"]);
        assert_eq!(models(5), ["c/3", "a/1", "b/2"]);
        assert_eq!(
            balancer.order(1)[1],
            (0, "a/1"),
            "indices are the request's"
        );
        let weighted = LoadBalancer {
            round_robin: false,
            models: vec![("a".into(), 0.001), ("b".into(), 1.0)],
        };
        let firsts = (0..200).filter(|_| weighted.order(0)[0].1 == "b").count();
        assert!(firsts > 180, "{firsts}");
    }
}

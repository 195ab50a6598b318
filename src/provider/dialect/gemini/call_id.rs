//! OpenAI tool-call ids that carry what Gemini needs back on the next turn.
//!
//! An id is `call_<random>`, then `_id_<hex of Gemini's call id>` when Gemini gave one, then
//! `_ts_<base64url of the thought signature>` when it gave one. Every piece is
//! `[A-Za-z0-9_-]`, so the id stays acceptable to providers that restrict ids (Anthropic's
//! `tool_use` ids) when a conversation moves on to another provider. The random part is
//! alphanumeric and hex has no `_`, so the tags cannot occur inside the pieces before them;
//! the signature is the rest of the id. Anything else (an id the client or another provider
//! made) decodes to nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "call_";
const ID_TAG: &str = "_id_";
const SIGNATURE_TAG: &str = "_ts_";

/// What an OpenAI tool-call id carried back from an earlier Gemini answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Carried {
    /// Gemini's `functionCall.id`.
    pub(super) id: Option<String>,
    /// The part's `thoughtSignature`, exactly as Gemini sent it.
    pub(super) signature: Option<String>,
}

/// A fresh OpenAI tool-call id carrying Gemini's call `id` and `signature`, if any.
pub(super) fn encode(id: Option<&str>, signature: Option<&str>) -> String {
    let mut out = String::from(PREFIX);
    out.push_str(&super::super::random_id());
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        out.push_str(ID_TAG);
        for byte in id.bytes() {
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0xf));
        }
    }
    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
        out.push_str(SIGNATURE_TAG);
        URL_SAFE_NO_PAD.encode_string(signature, &mut out);
    }
    out
}

/// What `id` carries; nothing for an id [`encode`] did not make.
pub(super) fn decode(id: &str) -> Carried {
    try_decode(id).unwrap_or_default()
}

fn try_decode(id: &str) -> Option<Carried> {
    let rest = id.strip_prefix(PREFIX)?;
    let random_len = rest.find('_').unwrap_or(rest.len());
    let (random, mut rest) = rest.split_at(random_len);
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut carried = Carried::default();
    if let Some(tail) = rest.strip_prefix(ID_TAG) {
        let end = tail.find('_').unwrap_or(tail.len());
        let (hex, tail) = tail.split_at(end);
        carried.id = Some(from_hex(hex)?);
        rest = tail;
    }
    if let Some(tail) = rest.strip_prefix(SIGNATURE_TAG) {
        let bytes = URL_SAFE_NO_PAD.decode(tail).ok()?;
        carried.signature = Some(String::from_utf8(bytes).ok()?);
        rest = "";
    }
    rest.is_empty().then_some(carried)
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0xf)])
}

fn from_hex(hex: &str) -> Option<String> {
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let value = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => Some(value(*high)? << 4 | value(*low)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn is_portable(id: &str) -> bool {
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    #[test]
    fn plain_ids_carry_nothing() {
        let id = encode(None, None);
        assert!(id.starts_with("call_") && id.len() == 5 + 24, "{id}");
        assert_eq!(decode(&id), Carried::default());
        assert_ne!(encode(None, None), id, "ids are random");
    }

    #[test]
    fn signatures_and_ids_round_trip() {
        // A real signature is standard base64 with `+`, `/` and padding.
        let signature = "CiQB0e2Kb+/x_ts_==";
        for (gemini_id, signature) in [
            (Some("fc-1_ts_x"), Some(signature)),
            (None, Some(signature)),
            (Some("abc"), None),
        ] {
            let id = encode(gemini_id, signature);
            assert!(is_portable(&id), "{id}");
            let carried = decode(&id);
            assert_eq!(carried.id.as_deref(), gemini_id);
            assert_eq!(carried.signature.as_deref(), signature);
        }
    }

    #[test]
    fn foreign_ids_carry_nothing() {
        for foreign in [
            "toolu_01A09q90qw90lq917835lq9",
            "call_abc123",
            "call_",
            "call_a_b",
            "call_abc_id_zz",
            "call_abc_id_616",
            "call_abc_ts_%%%",
            "call_abc_ts_YQ_x",
            "call_abc_ts__ts_YQ",
            "",
        ] {
            assert_eq!(decode(foreign), Carried::default(), "{foreign}");
        }
    }
}

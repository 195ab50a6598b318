//! OpenAI tool-call ids for Gemini's function calls, and what Gemini needs back with them.
//!
//! Gemini answers a function call with its own call id and, on thinking models, a thought
//! signature (opaque, often kilobytes) that must come back with the call on the next turn
//! (Gemini 3 refuses the turn without it). OpenAI clients echo only the tool call's `id`, and
//! OpenAI itself refuses ids over 40 characters, so a conversation that moves to another
//! provider (a fallback) must not carry the signature in the id. The id is therefore short,
//! `call_<24 random alphanumerics>`, and what it stands for is kept here, in process, bounded
//! ([`MAX_BYTES`], oldest first out). An id this process did not make, or has forgotten (a
//! restart, another process of a fleet), carries nothing: the request then sends Gemini's
//! documented placeholder signature, as it does for calls another provider made.

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex, PoisonError};

const PREFIX: &str = "call_";
/// What the remembered signatures may take in all (ids and signatures, plus a little per entry).
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Counted per entry beyond its strings (map and queue slots).
const ENTRY_OVERHEAD: usize = 64;

/// What an OpenAI tool-call id carried back from an earlier Gemini answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Carried {
    /// Gemini's `functionCall.id`.
    pub(super) id: Option<String>,
    /// The part's `thoughtSignature`, exactly as Gemini sent it.
    pub(super) signature: Option<String>,
}

impl Carried {
    fn size(&self, key: &str) -> usize {
        key.len()
            + self.id.as_ref().map_or(0, String::len)
            + self.signature.as_ref().map_or(0, String::len)
            + ENTRY_OVERHEAD
    }
}

/// Ids made here and what they stand for, oldest first out past `max_bytes`.
#[derive(Debug)]
struct Remembered {
    map: HashMap<String, Carried>,
    order: VecDeque<String>,
    bytes: usize,
    max_bytes: usize,
}

impl Remembered {
    fn new(max_bytes: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    fn insert(&mut self, key: String, carried: Carried) {
        let size = carried.size(&key);
        if size > self.max_bytes {
            return;
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        self.map.insert(key, carried);
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.map.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(gone.size(&oldest));
            }
        }
    }

    fn get(&self, key: &str) -> Option<Carried> {
        self.map.get(key).cloned()
    }
}

static REMEMBERED: LazyLock<Mutex<Remembered>> =
    LazyLock::new(|| Mutex::new(Remembered::new(MAX_BYTES)));

/// A fresh OpenAI tool-call id standing for Gemini's call `id` and `signature`, if any.
pub(super) fn encode(id: Option<&str>, signature: Option<&str>) -> String {
    let mut out = String::with_capacity(PREFIX.len() + 24);
    out.push_str(PREFIX);
    out.push_str(&super::super::openai::random_id());
    let carried = Carried {
        id: id.filter(|id| !id.is_empty()).map(str::to_owned),
        signature: signature.filter(|s| !s.is_empty()).map(str::to_owned),
    };
    if carried != Carried::default() {
        REMEMBERED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(out.clone(), carried);
    }
    out
}

/// What `id` stands for; nothing for an id [`encode`] did not make here (or has forgotten).
pub(super) fn decode(id: &str) -> Carried {
    if !id.starts_with(PREFIX) {
        return Carried::default();
    }
    REMEMBERED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(id)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_carry_nothing() {
        let id = encode(None, None);
        assert!(id.starts_with("call_") && id.len() == 5 + 24, "{id}");
        assert_eq!(decode(&id), Carried::default());
        assert_ne!(encode(None, None), id, "ids are random");
    }

    #[test]
    fn signatures_and_ids_round_trip_in_ids_openai_accepts() {
        let signature = "CiQB0e2Kb+/x_ts_==".repeat(100);
        for (gemini_id, signature) in [
            (Some("fc-1_ts_x"), Some(signature.as_str())),
            (None, Some(signature.as_str())),
            (Some("abc"), None),
        ] {
            let id = encode(gemini_id, signature);
            // OpenAI refuses tool call ids over 40 characters; Anthropic takes [A-Za-z0-9_-].
            assert!(id.len() <= 40, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            let carried = decode(&id);
            assert_eq!(carried.id.as_deref(), gemini_id);
            assert_eq!(carried.signature.as_deref(), signature);
        }
    }

    #[test]
    fn foreign_ids_carry_nothing() {
        for foreign in ["toolu_01A09q90qw90lq917835lq9", "call_abc123", "call_", ""] {
            assert_eq!(decode(foreign), Carried::default(), "{foreign}");
        }
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let mut remembered = Remembered::new(10_000);
        let carried = |n: usize| Carried {
            id: None,
            signature: Some("s".repeat(n)),
        };
        for i in 0..100 {
            remembered.insert(format!("call_{i}"), carried(900));
            assert!(remembered.bytes <= 10_000);
        }
        assert!(remembered.get("call_0").is_none());
        assert_eq!(remembered.get("call_99"), Some(carried(900)));
        assert_eq!(remembered.map.len(), remembered.order.len());
        // One larger than the whole bound is not kept (and evicts nothing).
        remembered.insert("call_huge".into(), carried(20_000));
        assert!(remembered.get("call_huge").is_none());
        assert!(remembered.get("call_99").is_some());
    }
}

//! [`RequestId`]: the id of one request, as the client and the logs see it.

use std::hash::BuildHasher as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

/// `x-request-id`, the header the id travels in both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, as a request extension set by
/// [`SetRequestId`](crate::request_id::SetRequestId). Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ids made of visible ASCII are ever stored, so this cannot fail.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// Keeps a client's id when it is 1 to 128 characters of `[A-Za-z0-9._:-]`.
    pub(crate) fn from_incoming(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        valid.then(|| Self(value.clone()))
    }

    /// A new id, `req_` and 24 hex digits: unique in the process (a counter), different in
    /// every process (a random seed mixed in).
    pub(crate) fn generate() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let seed = *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0));
        let mut id = *b"req_000000000000000000000000";
        write_hex(&mut id[4..20], splitmix64(seed.wrapping_add(n)));
        write_hex(&mut id[20..], n & 0xffff_ffff);
        // One allocation that clones share: the header value on the response, the copy sent
        // upstream and the one in the logs are the same bytes.
        let value = HeaderValue::from_maybe_shared(Bytes::from_owner(id));
        // Hex digits and '_' are always a valid header value.
        Self(value.unwrap_or(HeaderValue::from_static("req_unknown")))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SplitMix64's output function: a cheap bijective mixer, so consecutive counters give ids
/// that look unrelated.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes the low `out.len() * 4` bits of `value` as lowercase hex, most significant first.
fn write_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_well_formed() {
        let ids: Vec<RequestId> = (0..1000).map(|_| RequestId::generate()).collect();
        for id in &ids {
            assert_eq!(id.as_str().len(), 28);
            assert!(id.as_str().starts_with("req_"));
            assert!(RequestId::from_incoming(id.header_value()).is_some());
        }
        let mut texts: Vec<&str> = ids.iter().map(RequestId::as_str).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), 1000);
    }

    #[test]
    fn incoming_ids_are_checked() {
        let ok = HeaderValue::from_static("client-42:a.b_c");
        assert_eq!(
            RequestId::from_incoming(&ok).unwrap().as_str(),
            "client-42:a.b_c"
        );
        for bad in ["", "has space", "semi;colon"] {
            assert!(RequestId::from_incoming(&HeaderValue::from_static(bad)).is_none());
        }
        let long = HeaderValue::try_from("a".repeat(129)).unwrap();
        assert!(RequestId::from_incoming(&long).is_none());
    }
}

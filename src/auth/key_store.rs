//! Router keys: digests, principals and the stores that know them.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::BoxError;
use crate::extensions::Principal;

/// The SHA-256 digest of a router key: the only form in which keys are kept.
///
/// `Debug` shows nothing of it. See the [module docs](crate::auth).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyDigest([u8; 32]);

impl ApiKeyDigest {
    /// Hashes a presented key.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Reads a digest written as 64 hex digits (as `sha256sum` prints it).
    pub fn from_hex(hex: &str) -> Result<Self, InvalidDigest> {
        let hex = hex.trim().as_bytes();
        if hex.len() != 64 {
            return Err(InvalidDigest(()));
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or(InvalidDigest(()))?;
            let low = hex_value(pair[1]).ok_or(InvalidDigest(()))?;
            *byte = (high << 4) | low;
        }
        Ok(Self(digest))
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compares two digests in constant time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// A short, non-secret bucket for lookups: the first 8 bytes.
    fn bucket(&self) -> u64 {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(prefix)
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for ApiKeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyDigest(..)")
    }
}

/// A digest that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDigest(());

impl fmt::Display for InvalidDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key digest must be 64 hex digits (the SHA-256 of the key)")
    }
}

impl std::error::Error for InvalidDigest {}

/// Finds the [`Principal`] for a key digest.
///
/// Implement it to back router keys with your own database; [`MemoryKeyStore`] is the
/// default. An `Err` is answered 503: a store that cannot answer never lets a request in.
pub trait KeyStore: Clone + Send + Sync + 'static {
    /// The lookup's future.
    type Future: Future<Output = Result<Option<Principal>, KeyStoreError>> + Send + 'static;

    /// Looks `digest` up; `Ok(None)` when no key has it.
    fn lookup(&self, digest: &ApiKeyDigest) -> Self::Future;
}

/// A key store could not answer.
#[derive(Debug)]
pub struct KeyStoreError {
    source: BoxError,
}

impl KeyStoreError {
    /// Wraps the store's own error (logged, never shown to the client).
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the key store could not answer")
    }
}

impl std::error::Error for KeyStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Router keys held in memory as SHA-256 digests, compared in constant time.
///
/// ```
/// use ai_router::auth::{ApiKeyDigest, MemoryKeyStore, Principal};
///
/// let store = MemoryKeyStore::new()
///     .with_key("sk-router-dev", Principal::new("dev"))
///     .with_digest(ApiKeyDigest::of("sk-router-ci"), Principal::new("ci"));
/// assert_eq!(store.len(), 2);
/// assert!(!format!("{store:?}").contains("sk-router"));
/// ```
#[derive(Clone, Default)]
pub struct MemoryKeyStore {
    /// Buckets by digest prefix; each entry is compared in full, in constant time.
    keys: Arc<HashMap<u64, Vec<(ApiKeyDigest, Principal)>>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key given in clear; only its digest is kept.
    #[must_use]
    pub fn with_key(self, key: &str, principal: Principal) -> Self {
        self.with_digest(ApiKeyDigest::of(key), principal)
    }

    /// Adds a key by its digest.
    #[must_use]
    pub fn with_digest(mut self, digest: ApiKeyDigest, principal: Principal) -> Self {
        let keys = Arc::make_mut(&mut self.keys);
        let bucket = keys.entry(digest.bucket()).or_default();
        bucket.retain(|(known, _)| !known.ct_eq(&digest));
        bucket.push((digest, principal));
        self
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The principal of `digest`, if any (synchronous form of [`KeyStore::lookup`]).
    pub fn find(&self, digest: &ApiKeyDigest) -> Option<Principal> {
        let bucket = self.keys.get(&digest.bucket())?;
        // Compare against every entry of the bucket, so time does not depend on which matched.
        let mut found = None;
        for (known, principal) in bucket {
            if known.ct_eq(digest) {
                found = Some(principal.clone());
            }
        }
        found
    }
}

impl KeyStore for MemoryKeyStore {
    type Future = Ready<Result<Option<Principal>, KeyStoreError>>;

    fn lookup(&self, digest: &ApiKeyDigest) -> Self::Future {
        ready(Ok(self.find(digest)))
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .keys
            .values()
            .flatten()
            .map(|(_, principal)| principal.name())
            .collect();
        f.debug_struct("MemoryKeyStore")
            .field("keys", &names)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_matches_sha256sum() {
        // printf 'sk-test' | sha256sum
        let digest = ApiKeyDigest::of("sk-test");
        let hex = digest.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(ApiKeyDigest::from_hex(&hex).unwrap(), digest);
        assert_eq!(ApiKeyDigest::from_hex(&hex.to_uppercase()).unwrap(), digest);
        assert!(ApiKeyDigest::from_hex("abc").is_err());
        assert!(ApiKeyDigest::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn finds_only_known_keys() {
        let store = MemoryKeyStore::new().with_key("sk-a", Principal::new("a"));
        assert_eq!(store.find(&ApiKeyDigest::of("sk-a")).unwrap().name(), "a");
        assert!(store.find(&ApiKeyDigest::of("sk-b")).is_none());
    }

    #[test]
    fn bucket_collisions_are_settled_by_the_constant_time_comparison() {
        // Same 8-byte bucket, different digests: only the full comparison tells them apart.
        let known =
            ApiKeyDigest::from_hex(&format!("{}{}", "ab".repeat(8), "00".repeat(24))).unwrap();
        let other =
            ApiKeyDigest::from_hex(&format!("{}{}", "ab".repeat(8), "01".repeat(24))).unwrap();
        assert_eq!(known.bucket(), other.bucket());
        assert!(known.ct_eq(&known) && !known.ct_eq(&other));
        let store = MemoryKeyStore::new().with_digest(known, Principal::new("known"));
        assert!(store.find(&other).is_none());
        assert_eq!(store.find(&known).unwrap().name(), "known");
    }

    #[test]
    fn debug_prints_no_secret() {
        let store = MemoryKeyStore::new().with_key("sk-very-secret", Principal::new("team"));
        let debug = format!("{store:?} {:?}", ApiKeyDigest::of("sk-very-secret"));
        assert!(debug.contains("team"));
        assert!(!debug.contains("secret"));
        assert!(!debug.contains(&ApiKeyDigest::of("sk-very-secret").to_hex()[..8]));
    }
}

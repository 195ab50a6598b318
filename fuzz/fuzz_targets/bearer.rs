//! `Authorization` parsing on arbitrary header values (one or several): never a panic; a key
//! is read only from exactly one header, and is a non-empty, trimmed part of it.

#![no_main]

use ai_router::__fuzz::bearer_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|values: Vec<&[u8]>| {
    let Some(key) = bearer_key(&values) else {
        return;
    };
    let valid: Vec<&[u8]> = values
        .iter()
        .copied()
        .filter(|v| http_value_ok(v))
        .collect();
    assert_eq!(valid.len(), 1, "a key read from {} headers", valid.len());
    assert!(!key.is_empty());
    assert_eq!(key.trim(), key);
    let value = String::from_utf8_lossy(valid[0]);
    assert!(value.contains(&key));
    let scheme = value.trim_start().get(..6).unwrap_or_default();
    assert!(scheme.eq_ignore_ascii_case("bearer"), "{value:?}");
});

/// What `http::HeaderValue::from_bytes` accepts: visible ASCII, space, tab, obs-text.
fn http_value_ok(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

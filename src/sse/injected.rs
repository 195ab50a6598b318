//! Usage injection, the stream side: what asking for usage on the client's behalf adds to a
//! chat stream (the usage chunk, and `"usage": null` in every other chunk), taken away again
//! so the client sees the stream it asked for.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::members::{Member, members, without};

/// Whether the event may hold a `"usage"` key whose value is `null` (a cheap check before the
/// exact one in [`without_null_usage`]).
pub(super) fn may_have_null_usage(event: &[u8]) -> bool {
    memchr::memmem::find_iter(event, b"\"usage\"").any(|at| {
        let rest = &event[at + 7..];
        let value = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b':' | b'\n' | b'\r'))
            .map(|start| &rest[start..]);
        value.is_some_and(|v| v.starts_with(b"null"))
    })
}

/// The event without the top-level `"usage": null` member of its JSON data, every other byte
/// kept; `None` when the event is not one `data:` line holding a JSON object with that member.
pub(super) fn without_null_usage(event: &[u8]) -> Option<Bytes> {
    let data = single_data_line(event)?;
    let json = &event[data.clone()];
    let found = members(json, &["usage"])?;
    let is_null_usage =
        |m: &Member| m.name == Some(0) && json.get(m.value.clone()) == Some(b"null");
    if !found.iter().any(is_null_usage) {
        return None;
    }
    let stripped = without(json, &found, is_null_usage)?;
    let mut out = BytesMut::with_capacity(event.len());
    out.extend_from_slice(&event[..data.start]);
    out.extend_from_slice(&stripped);
    out.extend_from_slice(&event[data.end..]);
    Some(out.freeze())
}

/// Where the value of the event's only `data` line lies (after `data:` and one optional space,
/// before the line ending).
pub(super) fn single_data_line(event: &[u8]) -> Option<Range<usize>> {
    let mut found = None;
    let mut line_start = 0;
    while line_start < event.len() {
        let line_end = memchr::memchr2(b'\n', b'\r', &event[line_start..])
            .map_or(event.len(), |offset| line_start + offset);
        let line = &event[line_start..line_end];
        if let Some(rest) = line.strip_prefix(b"data") {
            let value_start = match rest.first() {
                None => line_start + 4,
                Some(b':') if rest.get(1) == Some(&b' ') => line_start + 6,
                Some(b':') => line_start + 5,
                // `dataX: ...` is another field.
                Some(_) => line_start + line.len() + 1,
            };
            if value_start <= line_end {
                if found.is_some() {
                    return None;
                }
                found = Some(value_start..line_end);
            }
        }
        line_start = line_end + 1;
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strip(event: &str) -> Option<String> {
        without_null_usage(event.as_bytes()).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn the_null_usage_member_goes_and_nothing_else() {
        assert_eq!(
            strip("data: {\"id\":\"c\",\"choices\":[],\"usage\":null}\n\n").unwrap(),
            "data: {\"id\":\"c\",\"choices\":[]}\n\n"
        );
        assert_eq!(
            strip("data: {\"usage\": null, \"id\":\"c\"}\r\n\r\n").unwrap(),
            "data: { \"id\":\"c\"}\r\n\r\n"
        );
        assert_eq!(
            strip("data:{ \"usage\" : null }\n\n").unwrap(),
            "data:{ }\n\n"
        );
        assert_eq!(
            strip("data: {\"a\":1 , \"usage\" :null,\"b\":2}\n\n").unwrap(),
            "data: {\"a\":1,\"b\":2}\n\n"
        );
        // An escaped key is the same key.
        assert_eq!(
            strip("data: {\"a\":1,\"usag\\u0065\":null}\n\n").unwrap(),
            "data: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn other_events_are_left_alone() {
        // Nested, a usage object, text that mentions it, two data lines, not JSON.
        for event in [
            "data: {\"choices\":[{\"delta\":{\"usage\":null}}]}\n\n",
            "data: {\"usage\":{\"total_tokens\":1}}\n\n",
            "data: {\"content\":\"\\\"usage\\\":null\"}\n\n",
            "data: {\"a\":1,\ndata: \"usage\":null}\n\n",
            "data: [DONE]\n\n",
            "event: x\n\n",
        ] {
            assert_eq!(strip(event), None, "{event}");
        }
        assert!(may_have_null_usage(b"data: {\"usage\" : null}"));
        assert!(!may_have_null_usage(b"data: {\"usage\":{}}"));
    }
}

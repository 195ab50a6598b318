//! Usage injection, the stream side: what asking for usage on the client's behalf adds to a
//! chat stream (the usage chunk, and `"usage": null` in every other chunk), taken away again
//! so the client sees the stream it asked for.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

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
    let removed = null_usage_member(&event[data.clone()])?;
    let (start, end) = (data.start + removed.start, data.start + removed.end);
    let mut out = BytesMut::with_capacity(event.len() - (end - start));
    out.extend_from_slice(&event[..start]);
    out.extend_from_slice(&event[end..]);
    Some(out.freeze())
}

/// Where the value of the event's only `data` line lies (after `data:` and one optional space,
/// before the line ending).
fn single_data_line(event: &[u8]) -> Option<Range<usize>> {
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

/// The span to cut from a JSON object so that its top-level `"usage": null` member goes, with
/// one separating comma; `None` without such a member or when `json` is not an object.
fn null_usage_member(json: &[u8]) -> Option<Range<usize>> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let members = de::Deserializer::deserialize_map(
        &mut deserializer,
        MemberSpans {
            base: json.as_ptr() as usize,
        },
    )
    .ok()?;
    deserializer.end().ok()?;
    let index = members.iter().position(|m| m.null_usage)?;
    if index > 0 {
        // `,"usage":null`: from the end of the previous value to the end of this one.
        return Some(members[index - 1].value.end..members[index].value.end);
    }
    // The first member: from just after `{` through the comma that follows it, if any.
    let open = json.iter().position(|&b| b == b'{')? + 1;
    let end = members[0].value.end;
    match members.get(1) {
        None => Some(open..end),
        Some(_) => {
            let comma = end + json[end..].iter().position(|&b| b == b',')?;
            Some(open..comma + 1)
        }
    }
}

/// One member of a JSON object: where its value lies, and whether it is `"usage": null`.
struct Member {
    value: Range<usize>,
    null_usage: bool,
}

/// Reads an object's members as raw values, noting where each value lies in the input.
struct MemberSpans {
    base: usize,
}

impl<'de> Visitor<'de> for MemberSpans {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Member>, A::Error> {
        let mut members = Vec::new();
        while let Some(IsUsage(is_usage)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            let text = value.get();
            let start = (text.as_ptr() as usize)
                .checked_sub(self.base)
                .ok_or_else(|| de::Error::custom("value outside the input"))?;
            members.push(Member {
                value: start..start + text.len(),
                null_usage: is_usage && text == "null",
            });
        }
        Ok(members)
    }
}

/// A key, read only for whether it is `usage` (escaped or not).
struct IsUsage(bool);

impl<'de> Deserialize<'de> for IsUsage {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = IsUsage;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<IsUsage, E> {
                Ok(IsUsage(key == "usage"))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
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

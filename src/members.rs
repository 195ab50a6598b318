//! The top-level members of a JSON object: where each lies in the bytes, so some can be
//! removed and every other byte kept. A leaf module.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One top-level member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Which of the names asked about it is (escaped keys are read as their text), if any.
    pub(crate) name: Option<usize>,
    /// Where its value lies.
    pub(crate) value: Range<usize>,
}

/// The members of the JSON object `json`, in order, with the keys among `names` recognised;
/// `None` when `json` is not one whole JSON object.
pub(crate) fn members(json: &[u8], names: &[&str]) -> Option<Vec<Member>> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let members = de::Deserializer::deserialize_map(
        &mut deserializer,
        Members {
            base: json.as_ptr() as usize,
            names,
        },
    )
    .ok()?;
    deserializer.end().ok()?;
    Some(members)
}

/// `json` (an object whose `members` these are) without the members `drop` selects: every other
/// member keeps its bytes, and the separators before them; the object's opening and its tail
/// (`}` and what follows) are kept too. `None` if the bytes are not as `members` says.
pub(crate) fn without(
    json: &[u8],
    members: &[Member],
    drop: impl Fn(&Member) -> bool,
) -> Option<Bytes> {
    let open = json.iter().position(|&b| b == b'{')?;
    let mut out = BytesMut::with_capacity(json.len());
    out.extend_from_slice(&json[..=open]);
    let mut emitted = false;
    let mut previous_end = open + 1;
    for member in members {
        // Between the previous value (or `{`) and this key: whitespace, and a comma unless it
        // is the first member.
        // The comma, when there is one, is the first byte after the spacing (a key may hold
        // commas of its own: never look past its opening quote).
        let gap = json.get(previous_end..member.value.start)?;
        let first = gap.iter().position(|b| !b.is_ascii_whitespace())?;
        let comma = (gap[first] == b',').then_some(first);
        let after_comma = comma.map_or(0, |c| c + 1);
        let key_start = previous_end
            + after_comma
            + gap[after_comma..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())?;
        if !drop(member) {
            if emitted {
                // The separator as the client wrote it: the comma and the spacing after it.
                let from = previous_end + comma?;
                out.extend_from_slice(json.get(from..key_start)?);
            } else if let Some(comma) = comma {
                // The first member kept, after dropped ones: its leading spacing only.
                out.extend_from_slice(json.get(previous_end + comma + 1..key_start)?);
            } else {
                out.extend_from_slice(json.get(previous_end..key_start)?);
            }
            out.extend_from_slice(json.get(key_start..member.value.end)?);
            emitted = true;
        }
        previous_end = member.value.end;
    }
    out.extend_from_slice(json.get(previous_end..)?);
    Some(out.freeze())
}

/// Reads an object's members as raw values, noting where each value lies in the input.
struct Members<'n> {
    base: usize,
    names: &'n [&'n str],
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Member>, A::Error> {
        let mut members = Vec::new();
        while let Some(name) = map.next_key_seed(KeyName(self.names))? {
            let value: &'de RawValue = map.next_value()?;
            let text = value.get();
            let start = (text.as_ptr() as usize)
                .checked_sub(self.base)
                .ok_or_else(|| de::Error::custom("value outside the input"))?;
            members.push(Member {
                name,
                value: start..start + text.len(),
            });
        }
        Ok(members)
    }
}

/// A key, read only for which of the names asked about it is.
struct KeyName<'n>(&'n [&'n str]);

impl<'de> DeserializeSeed<'de> for KeyName<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        struct KeyVisitor<'n>(&'n [&'n str]);
        impl Visitor<'_> for KeyVisitor<'_> {
            type Value = Option<usize>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
                Ok(self.0.iter().position(|name| *name == key))
            }
        }
        deserializer.deserialize_str(KeyVisitor(self.0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strip(json: &str, names: &[&str]) -> String {
        let members = members(json.as_bytes(), names).unwrap();
        let out = without(json.as_bytes(), &members, |m| m.name.is_some()).unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn members_are_found_with_their_values() {
        let json = r#"{ "a": 1, "usag\u0065" : null,"b":[1,{"usage":2}] }"#;
        let found = members(json.as_bytes(), &["usage", "b"]).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].name, None);
        assert_eq!(&json[found[1].value.clone()], "null");
        assert_eq!(found[1].name, Some(0));
        assert_eq!(&json[found[2].value.clone()], r#"[1,{"usage":2}]"#);
        assert!(members(b"[1]", &[]).is_none());
        assert!(members(b"{} x", &[]).is_none());
    }

    #[test]
    fn dropped_members_go_with_one_separator_and_nothing_else_moves() {
        assert_eq!(strip(r#"{"a":1,"x":2,"b":3}"#, &["x"]), r#"{"a":1,"b":3}"#);
        // The first member kept keeps the spacing that led to it.
        assert_eq!(strip(r#"{"x":2, "a":1}"#, &["x"]), r#"{ "a":1}"#);
        assert_eq!(
            strip(r#"{ "x" : 2 , "y":{}, "a" : 1 }"#, &["x", "y"]),
            r#"{ "a" : 1 }"#
        );
        assert_eq!(strip(r#"{"a":1, "x":2}"#, &["x"]), r#"{"a":1}"#);
        assert_eq!(strip(r#"{"x":2}"#, &["x"]), r#"{}"#);
        assert_eq!(
            strip("{\n  \"a\": 1,\n  \"x\": 2,\n  \"b\": 3\n}\n", &["x"]),
            "{\n  \"a\": 1,\n  \"b\": 3\n}\n"
        );
        assert_eq!(
            strip(r#"{"a":"x,\"y\"","x":1}"#, &["x"]),
            r#"{"a":"x,\"y\""}"#
        );
        // Commas inside keys are not separators.
        assert_eq!(
            strip(r#"{"a,b":1,"x":{"c":2},"d,e" : 3}"#, &["x"]),
            r#"{"a,b":1,"d,e" : 3}"#
        );
        assert_eq!(strip(r#"{"x":1,",":2}"#, &["x"]), r#"{",":2}"#);
    }
}

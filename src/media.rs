//! Media types: what a `Content-Type` header says, as the layers care. A leaf module.

use http::{HeaderMap, header};

/// Whether the `Content-Type` is `essence` (`type/subtype`, any parameters, any case).
pub(crate) fn content_type_is(headers: &HeaderMap, essence: &str) -> bool {
    essence_of(headers).is_some_and(|v| v.eq_ignore_ascii_case(essence))
}

/// The `type/subtype` of the `Content-Type`, trimmed.
fn essence_of(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    value.split(';').next().map(str::trim)
}

/// A request body's type, as routing reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentType {
    /// `application/json`.
    Json,
    /// `multipart/form-data`.
    Form,
    /// Another `multipart/*` type: no form at all, and not JSON either.
    OtherMultipart,
    /// Anything else, or none (`curl -d` labels JSON as a URL-encoded form).
    Other,
}

impl ContentType {
    /// Reads the request's `Content-Type` once.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        match essence_of(headers) {
            Some(e) if e.eq_ignore_ascii_case("application/json") => Self::Json,
            Some(e) if e.eq_ignore_ascii_case("multipart/form-data") => Self::Form,
            Some(e)
                if e.get(..10)
                    .is_some_and(|p| p.eq_ignore_ascii_case("multipart/")) =>
            {
                Self::OtherMultipart
            }
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn of(value: &str) -> ContentType {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
        ContentType::of(&headers)
    }

    #[test]
    fn content_types_are_read_by_essence() {
        assert_eq!(of("application/json; charset=utf-8"), ContentType::Json);
        assert_eq!(of("Multipart/Form-Data; boundary=x"), ContentType::Form);
        assert_eq!(
            of("multipart/mixed; boundary=x"),
            ContentType::OtherMultipart
        );
        assert_eq!(of("application/x-www-form-urlencoded"), ContentType::Other);
        assert_eq!(ContentType::of(&HeaderMap::new()), ContentType::Other);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        assert!(content_type_is(&headers, "TEXT/EVENT-STREAM"));
    }
}

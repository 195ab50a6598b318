//! Header hygiene between client, router and upstream.
//!
//! Each direction is one pass over the headers present (a few, usually), classifying names by
//! string match and removing only those found: cheaper than asking the map for every name on
//! the lists.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the usual proxy ones): one connection's business.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// What belongs to the client's relation with the router (or the host in front of it) and
/// never goes to a provider: credentials and account headers (OpenAI answers 401 when
/// `OpenAI-Organization`/`OpenAI-Project` do not match our provider key), the host's cookies,
/// the client's addresses as proxies saw them, and what the router sets itself (`Host`,
/// `Content-Length`, `Accept-Encoding`; hyper answers `100-continue` to the client itself, so
/// the upstream gets a whole body without `Expect`).
fn is_client_only(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "api-key"
            | "x-api-key"
            | "openai-organization"
            | "openai-project"
            | "cookie"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-real-ip"
            | "expect"
            | "host"
            | "content-length"
            | "accept-encoding"
    )
}

/// What belongs to the router's relation with the provider and never reaches a client: the
/// provider account the answer was billed to, its cookies, and policies the provider sets for
/// its own origin that a client would apply to the router's (`alt-svc` would send it to an
/// HTTP/3 endpoint the router does not have; `strict-transport-security` pins TLS on the
/// router's host).
fn is_provider_only(name: &str) -> bool {
    matches!(
        name,
        "openai-organization"
            | "openai-project"
            | "set-cookie"
            | "alt-svc"
            | "strict-transport-security"
    )
}

/// The header an upstream's own request id is returned in.
pub(crate) const X_UPSTREAM_REQUEST_ID: HeaderName =
    HeaderName::from_static("x-upstream-request-id");

/// Removes every header `doomed` selects, and the headers a `Connection` header names.
fn strip(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    // Most requests have nothing or one or two names to drop: collect them without allocating
    // until one is found.
    let mut found: Vec<HeaderName> = Vec::new();
    let mut has_connection = false;
    for name in headers.keys() {
        has_connection |= name == header::CONNECTION;
        if doomed(name.as_str()) {
            found.push(name.clone());
        }
    }
    if has_connection {
        let named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok());
        found.extend(named);
    }
    for name in &found {
        headers.remove(name);
    }
}

/// Prepares the client's headers for the upstream: hop-by-hop headers and the client-only
/// ones removed; the upstream is asked for an uncompressed answer, so error bodies and event
/// streams stay readable to the router.
pub(crate) fn to_upstream(headers: &mut HeaderMap) {
    strip(headers, |name| is_hop_by_hop(name) || is_client_only(name));
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// Prepares an upstream's headers for the client: hop-by-hop and provider-only headers
/// removed, the upstream's `x-request-id` moved to `x-upstream-request-id` (the router sets
/// its own).
pub(crate) fn to_client(headers: &mut HeaderMap) {
    strip(headers, |name| {
        is_hop_by_hop(name) || is_provider_only(name)
    });
    if let Some(id) = headers.remove(crate::extensions::X_REQUEST_ID) {
        headers.insert(X_UPSTREAM_REQUEST_ID, id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_and_hop_headers_never_go_upstream() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer sk-router"),
            ("api-key", "sk-router"),
            ("openai-organization", "org"),
            ("openai-project", "proj"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("host", "router.local"),
            ("content-length", "12"),
            ("accept-encoding", "gzip"),
            ("cookie", "session=host-secret"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-api-key", "sk-router"),
            ("expect", "100-continue"),
            ("x-stainless-lang", "python"),
            ("content-type", "application/json"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        to_upstream(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(
            left,
            ["accept-encoding", "content-type", "x-stainless-lang"]
        );
        assert_eq!(headers["accept-encoding"], "identity");
    }

    #[test]
    fn upstream_request_id_is_renamed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req_up"));
        headers.insert("connection", HeaderValue::from_static("close"));
        headers.insert("retry-after", HeaderValue::from_static("3"));
        for name in [
            "openai-organization",
            "openai-project",
            "set-cookie",
            "alt-svc",
            "strict-transport-security",
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("provider"),
            );
        }
        headers.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("9"),
        );
        to_client(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "retry-after",
                "x-ratelimit-remaining-requests",
                "x-upstream-request-id"
            ]
        );
        assert_eq!(headers["x-upstream-request-id"], "req_up");
        assert!(headers.get("x-request-id").is_none());
        assert!(headers.get("connection").is_none());
        assert_eq!(headers["retry-after"], "3");
    }
}

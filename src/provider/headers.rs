//! Header hygiene between client, router and upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the usual proxy ones): one connection's business.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// What belongs to the client's relation with the router (or the host in front of it) and
/// never goes to a provider: credentials and account headers (OpenAI answers 401 when
/// `OpenAI-Organization`/`OpenAI-Project` do not match our provider key), the host's cookies,
/// and the client's addresses as proxies saw them.
const CLIENT_ONLY: [HeaderName; 12] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
    header::COOKIE,
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-real-ip"),
    // hyper answers `100-continue` to the client itself; the upstream gets a whole body.
    header::EXPECT,
];

/// The header an upstream's own request id is returned in.
pub(crate) const X_UPSTREAM_REQUEST_ID: HeaderName =
    HeaderName::from_static("x-upstream-request-id");

/// Removes hop-by-hop headers, including any that `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Prepares the client's headers for the upstream: hop-by-hop, `Host`, `Content-Length` and
/// the client's credentials removed; the upstream is asked for an uncompressed answer, so
/// error bodies and event streams stay readable to the router.
pub(crate) fn to_upstream(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in &CLIENT_ONLY {
        headers.remove(name);
    }
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// Prepares an upstream's headers for the client: hop-by-hop removed, the upstream's
/// `x-request-id` moved to `x-upstream-request-id` (the router sets its own).
pub(crate) fn to_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    if let Some(id) = headers.remove(crate::request_id::X_REQUEST_ID) {
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
        to_client(&mut headers);
        assert_eq!(headers["x-upstream-request-id"], "req_up");
        assert!(headers.get("x-request-id").is_none());
        assert!(headers.get("connection").is_none());
        assert_eq!(headers["retry-after"], "3");
    }
}

//! [`TraceContext`]: the request's W3C trace context, as the router carries it.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`'s name.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`'s name.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A request's W3C trace context: the trace it belongs to and the span the router opens for
/// it (the SERVER span), a child of the caller's span when the request came with a valid
/// `traceparent`, else the root of a new trace.
///
/// Set by [`SetRequestId`](crate::request_id::SetRequestId) when its `trace_context` knob is
/// on; [`Resilience`](crate::resilience::Resilience) then sends each upstream attempt a
/// `traceparent` naming that attempt's own span (a child of this one) and passes `tracestate`
/// through, and the request's summary carries it
/// ([`RequestSummary::trace`](crate::observe::RequestSummary::trace)) so an exporter can
/// write the spans without any `tracing` subscriber.
///
/// Ids are drawn from a fast non-cryptographic generator (trace ids need to be unique, not
/// secret).
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    /// `traceparent`'s flags: sampled (`01`) and, from W3C Trace Context level 2, random
    /// (`02`: the trace id's right part is random), as the caller sent them.
    flags: u8,
    state: Option<HeaderValue>,
}

impl TraceContext {
    /// The context of a request with `headers`: a child of their `traceparent` when it is
    /// valid (keeping its flags and `tracestate`), else a new sampled trace. Two `traceparent`
    /// headers are invalid (W3C Trace Context); several `tracestate` headers are one list,
    /// trimmed to 32 members and [`MAX_TRACE_STATE`] bytes as the spec asks (it travels with
    /// every attempt and span).
    /// See [`TracePolicy`] to refuse the caller's context or sample new traces.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::joined(headers).unwrap_or_else(Self::new_root)
    }

    /// A child of the caller's valid `traceparent`, if there is one.
    fn joined(headers: &HeaderMap) -> Option<Self> {
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let (trace_id, parent_span_id, flags) = match (parents.next(), parents.next()) {
            (Some(value), None) => parse_traceparent(value.as_bytes())?,
            _ => return None,
        };
        Some(Self {
            trace_id,
            span_id: new_span_id(),
            parent_span_id: Some(parent_span_id),
            flags: flags & (FLAG_SAMPLED | FLAG_RANDOM),
            state: trace_state(headers),
        })
    }

    /// The root of a new trace (sampled).
    pub fn new_root() -> Self {
        Self {
            // Never zero (an invalid id).
            trace_id: fastrand::u128(1..).to_be_bytes(),
            span_id: new_span_id(),
            parent_span_id: None,
            flags: FLAG_SAMPLED,
            state: None,
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the router's span for the request.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The caller's span, when the request joined a trace.
    pub fn parent_span_id(&self) -> Option<[u8; 8]> {
        self.parent_span_id
    }

    /// Whether the trace is recorded: the caller's `traceparent`'s sampled flag, or for a new
    /// trace the [`TracePolicy`]'s draw (every new trace by default).
    pub fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The caller's `tracestate`, passed on unchanged.
    pub fn trace_state(&self) -> Option<&HeaderValue> {
        self.state.as_ref()
    }

    /// A new span id, for a child span of this one (an upstream attempt).
    pub fn new_child_span_id(&self) -> [u8; 8] {
        new_span_id()
    }

    /// The `traceparent` naming span `span_id` of this trace: `00-{trace}-{span}-{flags}`.
    pub fn traceparent(&self, span_id: [u8; 8]) -> HeaderValue {
        let mut value = [b'-'; 55];
        value[..2].copy_from_slice(b"00");
        hex(&mut value[3..35], &self.trace_id);
        hex(&mut value[36..52], &span_id);
        hex(&mut value[53..55], &[self.flags]);
        // Only hex digits and dashes: always a valid header value.
        HeaderValue::from_bytes(&value).unwrap_or(HeaderValue::from_static(""))
    }

    /// Writes the context of child span `span_id` into `headers` (an upstream request's):
    /// `traceparent`, and the caller's `tracestate` or none (what the client sent belonged
    /// to its own span).
    pub fn inject(&self, span_id: [u8; 8], headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent(span_id));
        match &self.state {
            Some(state) => headers.insert(TRACESTATE, state.clone()),
            None => headers.remove(TRACESTATE),
        };
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let traceparent = self.traceparent(self.span_id);
        f.debug_struct("TraceContext")
            .field("traceparent", &traceparent)
            .field("parent_span_id", &self.parent_span_id.map(HexId))
            .finish_non_exhaustive()
    }
}

/// `traceparent` flag: the caller records the trace.
const FLAG_SAMPLED: u8 = 0x01;
/// `traceparent` flag (W3C Trace Context level 2): the trace id is random; passed on as the
/// caller sent it.
const FLAG_RANDOM: u8 = 0x02;

/// The longest `tracestate` kept, in bytes (the spec asks to keep at least 512).
pub const MAX_TRACE_STATE: usize = 512;

/// The caller's `tracestate`: its headers' list members joined with commas (empty members
/// left out), trimmed as W3C Trace Context asks when it is too long: members over 128 bytes
/// go first, then members from the end, until at most 32 members and [`MAX_TRACE_STATE`] bytes
/// are left; `None` when nothing is left.
fn trace_state(headers: &HeaderMap) -> Option<HeaderValue> {
    let values = headers.get_all(TRACESTATE);
    let mut members: Vec<&[u8]> = values
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|member| !member.is_empty())
        .collect();
    let length = |members: &[&[u8]]| {
        members.iter().map(|m| m.len()).sum::<usize>() + members.len().saturating_sub(1)
    };
    if length(&members) > MAX_TRACE_STATE {
        members.retain(|member| member.len() <= 128);
    }
    members.truncate(32);
    while length(&members) > MAX_TRACE_STATE {
        members.pop();
    }
    if members.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&members.join(&b","[..])).ok()
}

/// How requests get their [`TraceContext`]: whether a caller's `traceparent` is joined, and
/// which share of new traces is sampled (recorded, and exported).
///
/// A router facing clients it does not trust may refuse their context
/// ([`join_incoming(false)`](Self::join_incoming)): every request then starts a trace of its
/// own, and the caller's `traceparent` and `tracestate` go no further. Sampling a share of new
/// traces bounds what exporting costs; an unsampled request still sends upstream a
/// `traceparent` saying so (flags `00`), so the upstream does not record it either.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracePolicy {
    join_incoming: bool,
    sample_ratio: f64,
}

impl TracePolicy {
    /// Join a caller's valid `traceparent` (keeping its sampled flag), sample every new trace.
    pub fn new() -> Self {
        Self {
            join_incoming: true,
            sample_ratio: 1.0,
        }
    }

    /// Whether a caller's `traceparent` (and `tracestate`) is joined (default: yes).
    #[must_use]
    pub fn join_incoming(mut self, join: bool) -> Self {
        self.join_incoming = join;
        self
    }

    /// Whether a caller's context is joined.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))] // Read with the `otel` feature only.
    pub(crate) fn joins_incoming(&self) -> bool {
        self.join_incoming
    }

    /// The share of new traces that are sampled, from 0 (none) to 1 (all, the default); out of
    /// that range (or NaN), the nearest end (NaN: all). A joined trace keeps the caller's choice.
    #[must_use]
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = if ratio.is_nan() {
            1.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self
    }

    /// The context of a request with `headers`.
    pub fn context_for(&self, headers: &HeaderMap) -> TraceContext {
        if self.join_incoming {
            if let Some(context) = TraceContext::joined(headers) {
                return context;
            }
        }
        let mut context = TraceContext::new_root();
        if self.sample_ratio < 1.0 && fastrand::f64() >= self.sample_ratio {
            context.flags &= !FLAG_SAMPLED;
        }
        context
    }
}

impl Default for TracePolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// An id shown in hex.
struct HexId([u8; 8]);

impl fmt::Debug for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A new span id (never zero, an invalid id).
fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Reads a `traceparent` (W3C Trace Context level 1): trace id, parent span id and flags; `None`
/// when it is not valid (then the request starts a trace of its own). A version above `00` may
/// carry more after the flags (read as version `00`, as the spec asks); `ff` is invalid.
fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&value[..2])?[0];
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if version > 0 && value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let trace_id = unhex::<16>(&value[3..35])?;
    let span_id = unhex::<8>(&value[36..52])?;
    let flags = unhex::<1>(&value[53..55])?[0];
    (trace_id != [0; 16] && span_id != [0; 8]).then_some((trace_id, span_id, flags))
}

/// `N` bytes from `2 * N` lowercase hex digits (uppercase is invalid in a `traceparent`).
fn unhex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn digit(d: u8) -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(traceparent: &str, tracestate: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, traceparent.parse().unwrap());
        if let Some(state) = tracestate {
            headers.insert(TRACESTATE, state.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_valid_traceparent_is_joined_and_its_state_passed_on() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let context = TraceContext::from_headers(&headers(incoming, Some("vendor=x1")));
        assert_eq!(
            context.parent_span_id(),
            Some(0xb7ad6b7169203331u64.to_be_bytes())
        );
        assert!(context.is_sampled());
        assert_ne!(context.span_id(), [0; 8]);
        let child = context.new_child_span_id();
        let mut out = HeaderMap::new();
        out.insert(TRACESTATE, "client=own".parse().unwrap());
        context.inject(child, &mut out);
        let expected = format!(
            "00-0af7651916cd43dd8448eb211c80319c-{:016x}-01",
            u64::from_be_bytes(child)
        );
        assert_eq!(out[TRACEPARENT], expected.as_str());
        assert_eq!(out[TRACESTATE], "vendor=x1");

        // Level 2's random flag is passed on.
        let random = incoming.replace("-01", "-03");
        let context = TraceContext::from_headers(&headers(&random, None));
        assert!(context.is_sampled());
        assert!(
            context
                .traceparent([1; 8])
                .to_str()
                .unwrap()
                .ends_with("-03")
        );

        // Not sampled: kept so.
        let unsampled = incoming.replace("-01", "-00");
        let context = TraceContext::from_headers(&headers(&unsampled, None));
        assert!(!context.is_sampled());
        let mut out = HeaderMap::new();
        out.insert(TRACESTATE, "client=own".parse().unwrap());
        context.inject([1; 8], &mut out);
        assert!(
            out[TRACEPARENT]
                .to_str()
                .unwrap()
                .ends_with("-0101010101010101-00")
        );
        assert!(!out.contains_key(TRACESTATE));

        // A later version with more fields after the flags.
        let later = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds";
        assert!(
            TraceContext::from_headers(&headers(later, None))
                .parent_span_id()
                .is_some()
        );
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        for wrong in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        ] {
            let context = TraceContext::from_headers(&headers(wrong, Some("vendor=x1")));
            assert_eq!(context.parent_span_id(), None, "{wrong}");
            assert!(context.is_sampled());
            assert_eq!(context.trace_state(), None, "{wrong}");
            assert_ne!(context.trace_id(), [0; 16]);
        }
        let a = TraceContext::from_headers(&HeaderMap::new());
        let b = TraceContext::from_headers(&HeaderMap::new());
        assert_ne!(a.trace_id(), b.trace_id());
        let shown = format!("{a:?}");
        assert!(shown.contains(&format!("{:032x}", u128::from_be_bytes(a.trace_id()))));
    }

    #[test]
    fn two_traceparents_start_a_new_trace_and_tracestates_are_one_bounded_list() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut two = headers(incoming, None);
        two.append(TRACEPARENT, incoming.parse().unwrap());
        assert_eq!(TraceContext::from_headers(&two).parent_span_id(), None);

        let mut states = headers(incoming, Some("a=1"));
        states.append(TRACESTATE, "b=2".parse().unwrap());
        let context = TraceContext::from_headers(&states);
        assert_eq!(context.trace_state().unwrap(), "a=1,b=2");

        // Too long: members over 128 bytes go first, then from the end; empty ones never count.
        let long = format!("big={},a=1,,b=2", "x".repeat(MAX_TRACE_STATE));
        let context = TraceContext::from_headers(&headers(incoming, Some(&long)));
        assert!(context.parent_span_id().is_some());
        assert_eq!(context.trace_state().unwrap(), "a=1,b=2");
        let only_big = format!("big={}", "x".repeat(MAX_TRACE_STATE));
        let context = TraceContext::from_headers(&headers(incoming, Some(&only_big)));
        assert_eq!(context.trace_state(), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let context = TraceContext::from_headers(&headers(incoming, Some(&many.join(","))));
        assert_eq!(
            context.trace_state().unwrap(),
            many[..32].join(",").as_str()
        );
        let wide: Vec<String> = (0..20)
            .map(|i| format!("k{i:02}={}", "v".repeat(30)))
            .collect();
        let context = TraceContext::from_headers(&headers(incoming, Some(&wide.join(","))));
        let kept = context.trace_state().unwrap().to_str().unwrap().to_owned();
        assert!(
            kept.len() <= MAX_TRACE_STATE && wide.join(",").starts_with(&kept),
            "{kept}"
        );
    }

    #[test]
    fn a_policy_can_refuse_the_callers_context_and_sample_new_traces() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let with_caller = headers(incoming, Some("vendor=x1"));
        let joined = TracePolicy::new().context_for(&with_caller);
        assert!(joined.parent_span_id().is_some());
        let refused = TracePolicy::new()
            .join_incoming(false)
            .context_for(&with_caller);
        assert_eq!(refused.parent_span_id(), None);
        assert_ne!(refused.trace_id(), joined.trace_id());
        assert_eq!(refused.trace_state(), None);
        assert!(refused.is_sampled());

        // None of 200 new traces sampled at 0, all at 1 (and NaN); a caller's choice stands.
        let none = TracePolicy::new().sample_ratio(0.0);
        assert!((0..200).all(|_| !none.context_for(&HeaderMap::new()).is_sampled()));
        assert!(none.context_for(&with_caller).is_sampled());
        let unsampled = none.context_for(&HeaderMap::new());
        assert!(
            unsampled
                .traceparent([1; 8])
                .to_str()
                .unwrap()
                .ends_with("-00")
        );
        for all in [
            TracePolicy::new(),
            TracePolicy::new().sample_ratio(f64::NAN),
            TracePolicy::new().sample_ratio(7.0),
        ] {
            assert!((0..200).all(|_| all.context_for(&HeaderMap::new()).is_sampled()));
        }
        // About half at 0.5 (bounds far outside what 1000 draws can miss).
        let half = TracePolicy::new().sample_ratio(0.5);
        let sampled = (0..1000)
            .filter(|_| half.context_for(&HeaderMap::new()).is_sampled())
            .count();
        assert!((350..650).contains(&sampled), "{sampled}");
    }
}

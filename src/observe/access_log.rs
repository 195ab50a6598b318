//! [`AccessLog`]: one line per request, as text or JSON.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::{Observer, RequestSummary};
use crate::extensions::Endpoint;

/// The line format of an [`AccessLog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessLogFormat {
    /// `2026-01-01T00:00:00.000Z request id=... method=POST ... status=200 ...`: `key=value`
    /// pairs, values quoted when they hold spaces, quotes or `=`.
    Text,
    /// One JSON object per line: `{"ts":...,"id":...,"status":200,...}`.
    Json,
}

/// An [`Observer`] writing one line per request to a writer: request id, method, path, key
/// name (never the key), the `identity` and `thread` knobs' ids, endpoint, provider, model,
/// status, attempts, latency, duration, time to first byte, outcome and tokens (input, output,
/// cached). Fields the router did not learn are left out.
///
/// The line is formatted into a per-thread buffer and written with one `write_all`; give it a
/// non-blocking writer (e.g. `tracing_appender::non_blocking`) so a slow terminal or disk never
/// holds a request.
pub struct AccessLog<W> {
    format: AccessLogFormat,
    writer: Mutex<W>,
}

impl<W: Write + Send + 'static> AccessLog<W> {
    /// Lines in `format` to `writer`.
    pub fn new(format: AccessLogFormat, writer: W) -> Self {
        Self {
            format,
            writer: Mutex::new(writer),
        }
    }
}

impl<W> fmt::Debug for AccessLog<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<W: Write + Send + 'static> Observer for AccessLog<W> {
    fn on_end(&self, summary: &RequestSummary) {
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.clear();
            let now = SystemTime::now();
            match self.format {
                AccessLogFormat::Text => write_text(&mut line, now, summary),
                AccessLogFormat::Json => write_json(&mut line, now, summary),
            }
            line.push(b'\n');
            let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            // A log that cannot be written must not fail the request it describes.
            let _ = writer.write_all(&line);
        });
    }
}

/// The fields of a line, in order, borrowed from the summary. `plain` says whether a text
/// value is known to need no quoting or escaping (ids, methods, names the router made).
struct Fields<'a> {
    text: [(&'static str, Option<&'a str>, bool); 10],
    numbers: [(&'static str, Option<u64>); 8],
}

fn fields(summary: &RequestSummary) -> Fields<'_> {
    let usage = summary.usage;
    let micros = |d: Duration| d.as_micros() as u64;
    Fields {
        text: [
            ("id", Some(summary.id.as_str()), true),
            ("method", Some(summary.method.as_str()), true),
            ("path", Some(summary.uri.path()), false),
            ("key", summary.key.as_deref(), false),
            ("identity", summary.identity.as_deref(), false),
            ("thread", summary.thread.as_deref(), false),
            ("endpoint", summary.endpoint.map(Endpoint::name), true),
            ("provider", summary.provider.as_deref(), false),
            ("model", summary.model.as_deref(), false),
            ("outcome", Some(summary.outcome.as_str()), true),
        ],
        numbers: [
            ("status", summary.status.map(|s| u64::from(s.as_u16()))),
            ("attempts", Some(u64::from(summary.attempts))),
            ("latency_us", Some(micros(summary.latency))),
            ("duration_us", Some(micros(summary.duration))),
            ("first_byte_us", summary.first_byte.map(micros)),
            ("input_tokens", usage.map(|u| u.input_tokens)),
            ("output_tokens", usage.map(|u| u.output_tokens)),
            ("cached_tokens", usage.map(|u| u.cached_tokens)),
        ],
    }
}

fn write_text(line: &mut Vec<u8>, now: SystemTime, summary: &RequestSummary) {
    write_timestamp(line, now);
    line.extend_from_slice(b" request");
    let fields = fields(summary);
    for (name, value, known_plain) in fields.text {
        let Some(value) = value else { continue };
        line.push(b' ');
        line.extend_from_slice(name.as_bytes());
        line.push(b'=');
        let plain = known_plain
            || !value.is_empty()
                && !value.bytes().any(|b| {
                    b.is_ascii_whitespace() || b.is_ascii_control() || b == b'"' || b == b'='
                });
        if plain {
            line.extend_from_slice(value.as_bytes());
        } else {
            write_json_string(line, value);
        }
    }
    write_numbers(line, &fields.numbers, b" ", b"=");
}

fn write_json(line: &mut Vec<u8>, now: SystemTime, summary: &RequestSummary) {
    line.extend_from_slice(b"{\"ts\":\"");
    write_timestamp(line, now);
    line.push(b'"');
    let fields = fields(summary);
    for (name, value, known_plain) in fields.text {
        let Some(value) = value else { continue };
        line.extend_from_slice(b",\"");
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(b"\":");
        if known_plain {
            line.push(b'"');
            line.extend_from_slice(value.as_bytes());
            line.push(b'"');
        } else {
            write_json_string(line, value);
        }
    }
    write_numbers(line, &fields.numbers, b",\"", b"\":");
    line.push(b'}');
}

/// `<before>name<between>value` for each number that is known.
fn write_numbers(
    line: &mut Vec<u8>,
    numbers: &[(&str, Option<u64>)],
    before: &[u8],
    between: &[u8],
) {
    let mut digits = itoa::Buffer::new();
    for (name, value) in numbers {
        if let Some(value) = value {
            line.extend_from_slice(before);
            line.extend_from_slice(name.as_bytes());
            line.extend_from_slice(between);
            line.extend_from_slice(digits.format(*value).as_bytes());
        }
    }
}

/// A JSON string (quoted, escaped); the common case, nothing to escape, is copied as is.
fn write_json_string(line: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        let _ = serde_json::to_writer(&mut *line, value);
    } else {
        line.push(b'"');
        line.extend_from_slice(value.as_bytes());
        line.push(b'"');
    }
}

/// RFC 3339 UTC with milliseconds (`2026-01-01T00:00:00.000Z`). The part up to the second is
/// formatted once per second per thread; the rest is three digits.
fn write_timestamp(line: &mut Vec<u8>, now: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [b'0'; 19])) };
    }
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (since_epoch.as_secs(), since_epoch.subsec_millis());
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let second = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let text = humantime::format_rfc3339_seconds(second).to_string();
            // `2026-01-01T00:00:00Z`: keep all but the `Z`.
            if let Some(prefix) = text.as_bytes().get(..19) {
                cached.1.copy_from_slice(prefix);
                cached.0 = secs;
            }
        }
        line.extend_from_slice(&cached.1);
    });
    let mut digits = itoa::Buffer::new();
    let millis = digits.format(1000 + millis);
    line.push(b'.');
    line.extend_from_slice(&millis.as_bytes()[1..]);
    line.push(b'Z');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::extensions::{Principal, RequestId, RouteTarget};
    use crate::observe::{
        AnswerDetails, End, Outcome, RequestHead, RequestLog, RequestParams, Usage,
    };
    use http::{Method, StatusCode, Uri};

    fn summary() -> RequestSummary {
        let log = RequestLog::new();
        log.record_principal(&Principal::new("team a"));
        log.record_request(
            RequestParams::default(),
            Some(Arc::from("user \"7\"")),
            Some(Arc::from("t-1")),
        );
        log.record_target(&RouteTarget::new(
            "openai",
            "gpt-4o-mini",
            Endpoint::ChatCompletions,
        ));
        log.record_body(
            AnswerDetails {
                usage: Some(Usage {
                    input_tokens: 3,
                    output_tokens: 5,
                    total_tokens: 8,
                    cached_tokens: 2,
                }),
                ..AnswerDetails::default()
            },
            Some(Duration::from_micros(40)),
            Outcome::IdleTimeout,
        );
        let head = RequestHead {
            id: RequestId::generate(),
            method: Method::POST,
            uri: Uri::from_static("/v3/router/chat/completions"),
        };
        log.summary(
            &head,
            End {
                status: Some(StatusCode::OK),
                latency: Duration::from_micros(120),
                duration: Duration::from_micros(900),
                outcome: Outcome::Completed,
            },
        )
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_failure_recorded_inside_wins_over_a_clean_end() {
        let summary = summary();
        assert_eq!(summary.outcome, Outcome::IdleTimeout);
        assert_eq!(summary.key.as_deref(), Some("team a"));
        assert_eq!(summary.model.as_deref(), Some("gpt-4o-mini"));
    }

    #[test]
    fn json_lines_hold_each_field_once() {
        let lines = Lines::default();
        AccessLog::new(AccessLogFormat::Json, lines.clone()).on_end(&summary());
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["key"], "team a");
        assert_eq!(json["status"], 200);
        assert_eq!(json["outcome"], "idle_timeout");
        assert_eq!(json["input_tokens"], 3);
        assert_eq!(json["output_tokens"], 5);
        assert_eq!(json["cached_tokens"], 2);
        assert_eq!(json["identity"], "user \"7\"");
        assert_eq!(json["thread"], "t-1");
        assert_eq!(json["first_byte_us"], 40);
        assert!(json["ts"].as_str().unwrap().ends_with('Z'));
        // Each key once: as many `"key":` in the text as members in the object.
        let object = json.as_object().unwrap();
        for key in object.keys() {
            assert_eq!(
                text.matches(&format!("\"{key}\":")).count(),
                1,
                "{key}: {text}"
            );
        }
        assert_eq!(object.len(), 19, "{text}");
    }

    #[test]
    fn unknown_fields_are_left_out() {
        let log = RequestLog::new();
        let head = RequestHead {
            id: RequestId::generate(),
            method: Method::GET,
            uri: Uri::from_static("/v1/models"),
        };
        let end = End {
            status: Some(StatusCode::OK),
            latency: Duration::from_micros(1),
            duration: Duration::from_micros(2),
            outcome: Outcome::Completed,
        };
        let summary = log.summary(&head, end);
        for format in [AccessLogFormat::Json, AccessLogFormat::Text] {
            let lines = Lines::default();
            AccessLog::new(format, lines.clone()).on_end(&summary);
            let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
            for absent in ["identity", "thread", "tokens", "key", "provider"] {
                assert!(!text.contains(absent), "{absent}: {text}");
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_millis() {
        let mut line = Vec::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_042);
        write_timestamp(&mut line, at);
        write_timestamp(&mut line, at + Duration::from_millis(1_001));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "2026-01-01T00:00:00.042Z2026-01-01T00:00:01.043Z"
        );
    }

    #[test]
    fn text_lines_quote_what_needs_it() {
        let lines = Lines::default();
        AccessLog::new(AccessLogFormat::Text, lines.clone()).on_end(&summary());
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains(" key=\"team a\" "), "{text}");
        assert!(text.contains(" identity=\"user \\\"7\\\"\" "), "{text}");
        assert!(text.contains(" thread=t-1 "), "{text}");
        assert!(
            text.contains(" input_tokens=3 output_tokens=5 cached_tokens=2"),
            "{text}"
        );
        assert!(text.contains(" provider=openai "), "{text}");
        assert!(text.contains(" status=200 "), "{text}");
        assert_eq!(text.matches("status=").count(), 1, "{text}");
        assert!(!text.contains('\u{1b}'), "no colour codes: {text}");
    }
}

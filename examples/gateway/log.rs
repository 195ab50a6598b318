//! The gateway's diagnostics: `RUST_LOG`'s filter and the `fmt` layer's format.

use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::Layer as _;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::AccessLogConfig;
use crate::log_writer::LogWriter;

/// Diagnostics to `writer`, filtered by `RUST_LOG` (default `info`); JSON when the access log
/// is JSON, colours only on a terminal. The router opens no GenAI `tracing` span in the
/// gateway (traces are written from the request summaries), and the log would format their
/// every field for each request if it did: their target stays off.
pub(crate) fn init(format: AccessLogConfig, writer: LogWriter) {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = if format == AccessLogConfig::Json {
        fmt.json().fmt_fields(JsonSpanFields).boxed()
    } else {
        fmt.boxed()
    };
    // One layer: its filter is the subscriber's (a per-layer filter would be looked up on
    // every span enter and exit, several times per request).
    let (targets, env) = match log_filter(std::env::var("RUST_LOG").ok().as_deref()) {
        LogFilter::Targets(targets) => (Some(targets), None),
        LogFilter::Env(env) => (None, Some(*env)),
    };
    tracing_subscriber::registry()
        .with(targets)
        .with(env)
        .with(fmt)
        .init();
}

/// The log's filter, from `RUST_LOG`.
#[derive(Debug)]
pub(crate) enum LogFilter {
    /// Targets and levels only (`info`, `warn,ai_router=debug`): decided once per callsite,
    /// nothing to do when a span is entered or left.
    Targets(Targets),
    /// Directives that match spans or fields (`[request]=debug`): `EnvFilter` keeps a table of
    /// the spans it matched and looks each one up (under a lock) at every enter and exit,
    /// several times per request, so it is used only when asked for.
    Env(Box<EnvFilter>),
}

/// `RUST_LOG` as a filter (unset, blank or invalid: `info`), with the GenAI target off.
pub(crate) fn log_filter(rust_log: Option<&str>) -> LogFilter {
    let spec = rust_log.map(str::trim).filter(|spec| !spec.is_empty());
    let genai = ai_router::request_id::GENAI_TARGET;
    let spec_or_info = spec.unwrap_or("info");
    // `[` opens a span or field directive (`Targets` would read `[request]` as a target name).
    let static_only = !spec_or_info.contains(|c: char| c == '[' || c.is_whitespace());
    if let Some(targets) = static_only
        .then(|| spec_or_info.parse::<Targets>().ok())
        .flatten()
    {
        return LogFilter::Targets(targets.with_target(genai, LevelFilter::OFF));
    }
    let env = spec
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    LogFilter::Env(Box::new(match format!("{genai}=off").parse() {
        Ok(directive) => env.add_directive(directive),
        Err(_) => env,
    }))
}

/// The JSON log's span fields, written as the JSON object `tracing-subscriber`'s `JsonFields`
/// writes (`{"id":"req_…"}`), straight to the span's text: `JsonFields` builds a map of
/// `serde_json::Value`s first and serialises it, for the request span of every request (3.5k
/// instructions per request in the gateway, as much as the JSON access line). Text that needs
/// escaping is escaped by `serde_json`; a field recorded again later is appended, and the
/// JSON formatter (which reads the object back with `serde_json`) keeps its last value, as
/// `JsonFields` does.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        writer.write_char('{')?;
        let mut members = Members::new(&mut writer, true);
        fields.record(&mut members);
        members.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        // Reopen the object: its `}` goes, the new members follow, a `}` closes it again.
        let first = match current.fields.pop() {
            Some('}') => current.fields == "{",
            _ => {
                current.fields.clear();
                current.fields.push('{');
                true
            }
        };
        let mut writer = current.as_writer();
        let mut members = Members::new(&mut writer, first);
        fields.record(&mut members);
        members.result?;
        writer.write_char('}')
    }
}

/// Writes each recorded field as a JSON member (`"name":value`), commas between them.
struct Members<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl<'a, 'writer> Members<'a, 'writer> {
    fn new(writer: &'a mut Writer<'writer>, first: bool) -> Self {
        Self {
            writer,
            first,
            result: Ok(()),
        }
    }

    /// `"name":` and the value `write` writes, after a comma unless it is the first.
    fn member(&mut self, name: &str, write: impl FnOnce(&mut Writer<'writer>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "\"" } else { ",\"" };
        self.first = false;
        self.result = self
            .writer
            .write_str(separator)
            .and_then(|()| Escaped(self.writer).write_str(name))
            .and_then(|()| self.writer.write_str("\":"))
            .and_then(|()| write(self.writer));
    }

    /// A member whose value `serde_json` writes (numbers, booleans, bytes).
    fn json_member(&mut self, name: &str, value: impl Serialize) {
        self.member(name, |writer| {
            serde_json::to_writer(Utf8Writer(writer), &value).map_err(|_| fmt::Error)
        });
    }
}

impl Visit for Members<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field.name(), |writer| {
            writer.write_char('"')?;
            Escaped(writer).write_str(value)?;
            writer.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.json_member(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.json_member(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.json_member(field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.json_member(field.name(), value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.json_member(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Named as `JsonFields` names it (a raw identifier without its `r#`), escaped as it
        // is formatted: no string in between.
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.member(name, |writer| {
            writer.write_char('"')?;
            write!(Escaped(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

/// Writes text as the inside of a JSON string: as is when nothing in it needs escaping (ids,
/// names, most values), else escaped by `serde_json`.
struct Escaped<'a, 'writer>(&'a mut Writer<'writer>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return self.0.write_str(text);
        }
        let quoted = serde_json::to_string(text).map_err(|_| fmt::Error)?;
        self.0
            .write_str(quoted.get(1..quoted.len() - 1).ok_or(fmt::Error)?)
    }
}

/// An `io::Write` over a `fmt` writer, for `serde_json`: it writes whole UTF-8 pieces (the
/// parts of a string between escapes, escapes and numbers are ASCII), so each piece is text.
struct Utf8Writer<'a, 'writer>(&'a mut Writer<'writer>);

impl std::io::Write for Utf8Writer<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(bytes).map_err(std::io::Error::other)?;
        self.0.write_str(text).map_err(std::io::Error::other)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

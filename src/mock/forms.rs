//! The form endpoints of the mock: image edits (multipart or JSON) and variations, audio
//! transcriptions and translations.
//!
//! Forms are parsed with `multer`; a missing boundary or a malformed or truncated form is
//! a 400 OpenAI error, never a panic. Every JSON answer carries a `mock_received` member
//! describing what arrived (the `model`, the part names in order, and each file part's name,
//! file name, content type, length and SHA-256), which the official clients ignore.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::body::MockBody;
use super::endpoints::{self, CREATED, Reply};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// The pretend bit rate of uploaded audio, for durations: 32 kB per second.
const AUDIO_BYTES_PER_SECOND: f64 = 32_000.0;

/// What an audio endpoint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Task {
    /// `POST /v1/audio/transcriptions`
    Transcribe,
    /// `POST /v1/audio/translations`
    Translate,
}

impl Task {
    fn noun(self) -> &'static str {
        match self {
            Self::Transcribe => "transcript",
            Self::Translate => "translation",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Transcribe => "transcribe",
            Self::Translate => "translate",
        }
    }
}

/// One part of a form, as received.
#[derive(Debug)]
struct Part {
    name: Option<String>,
    filename: Option<String>,
    content_type: Option<String>,
    data: Bytes,
}

impl Part {
    fn is_named(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }

    fn describe(&self) -> Value {
        json!({
            "name": self.name,
            "filename": self.filename,
            "content_type": self.content_type,
            "len": self.data.len(),
            "sha256": sha256_hex(&self.data),
        })
    }
}

/// A parsed `multipart/form-data` body, in part order.
#[derive(Debug)]
struct Form {
    parts: Vec<Part>,
}

impl Form {
    /// Parses a whole form, or answers 400 (wrong content type, no boundary, malformed).
    fn parse(content_type: Option<&str>, body: &Bytes) -> Result<Self, Reply> {
        let content_type = content_type.unwrap_or("");
        if !is_multipart(content_type) {
            return Err(wrong_content_type(content_type));
        }
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            endpoints::bad_request(
                "Invalid multipart/form-data request: the Content-Type header has no boundary.",
            )
        })?;
        let parsed = parse_now(boundary, body, |mut multipart| async move {
            let mut parts = Vec::new();
            while let Some(field) = multipart.next_field().await? {
                let name = field.name().map(str::to_owned);
                let filename = field.file_name().map(str::to_owned);
                let content_type = field
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                let data = field.bytes().await?;
                parts.push(Part {
                    name,
                    filename,
                    content_type,
                    data,
                });
            }
            Ok(parts)
        });
        match parsed {
            Some(Ok(parts)) => Ok(Self { parts }),
            Some(Err(err)) => Err(endpoints::bad_request(&format!(
                "Invalid multipart/form-data request: {err}."
            ))),
            None => Err(endpoints::bad_request(
                "Invalid multipart/form-data request: the body is incomplete.",
            )),
        }
    }

    /// The first part called `name`.
    fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.is_named(name))
    }

    /// The text of the first part called `name` (`None` if absent or not UTF-8).
    fn text(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(&self.part(name)?.data).ok()
    }

    /// The texts of every part called `name`.
    fn texts(&self, name: &str) -> Vec<&str> {
        self.parts
            .iter()
            .filter(|p| p.is_named(name))
            .filter_map(|p| std::str::from_utf8(&p.data).ok())
            .collect()
    }

    /// The `mock_received` member: the model, the part names in order and the file parts.
    fn received(&self, model: Option<&str>) -> Value {
        let names: Vec<Option<&str>> = self.parts.iter().map(|p| p.name.as_deref()).collect();
        let files: Vec<Value> = self
            .parts
            .iter()
            .filter(|p| p.filename.is_some())
            .map(Part::describe)
            .collect();
        json!({"model": model, "form": true, "parts": names, "files": files})
    }
}

/// Runs `parse` over a `multer` parser of `body`, which is all in memory, so the parser
/// never waits: `None` means it wanted more, i.e. the form is incomplete.
fn parse_now<T, F, Fut>(
    boundary: String,
    body: &Bytes,
    parse: F,
) -> Option<Result<T, multer::Error>>
where
    F: FnOnce(multer::Multipart<'static>) -> Fut,
    Fut: Future<Output = Result<T, multer::Error>>,
{
    let stream = futures_util::stream::once(std::future::ready(Ok::<_, Infallible>(body.clone())));
    let mut parse = pin!(parse(multer::Multipart::new(stream, boundary)));
    let mut cx = Context::from_waker(Waker::noop());
    match parse.as_mut().poll(&mut cx) {
        Poll::Ready(result) => Some(result),
        Poll::Pending => None,
    }
}

/// The model of a `multipart/form-data` body: the text of its first part called `model`,
/// as the form endpoints read it. `None` if the body is not such a form, has no such part
/// (or not as UTF-8), or breaks before it. Parts before it are skipped, not copied.
pub(super) fn model(content_type: Option<&str>, body: &Bytes) -> Option<String> {
    let boundary = multer::parse_boundary(content_type.filter(|ct| is_multipart(ct))?).ok()?;
    let found = parse_now(boundary, body, |mut multipart| async move {
        while let Some(field) = multipart.next_field().await? {
            if field.name() == Some("model") {
                return Ok(Some(field.bytes().await?));
            }
        }
        Ok(None)
    });
    let data = found?.ok()??;
    String::from_utf8(data.into()).ok()
}

/// Whether a `Content-Type` is `multipart/form-data` (any parameters).
pub(super) fn is_multipart(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("multipart/form-data")
}

fn wrong_content_type(content_type: &str) -> Reply {
    endpoints::error(
        StatusCode::BAD_REQUEST,
        &format!(
            "Invalid Content-Type header ({content_type}), expected multipart/form-data. (HINT: \
             If you're using curl, you can pass -H 'Content-Type: multipart/form-data')"
        ),
        "invalid_request_error",
        Some("unsupported_content_type"),
    )
}

fn missing(param: &str) -> Reply {
    endpoints::error_with_param(
        StatusCode::BAD_REQUEST,
        &format!("Missing required parameter: '{param}'."),
        "invalid_request_error",
        Some(param),
        None,
    )
}

fn invalid(param: &str, value: &str) -> Reply {
    endpoints::error_with_param(
        StatusCode::BAD_REQUEST,
        &format!("Invalid value for '{param}': '{value}'."),
        "invalid_request_error",
        Some(param),
        None,
    )
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A form's `n`: absent is `None`, a number is kept, anything else is a 400.
fn form_n(form: &Form) -> Result<Option<u32>, Reply> {
    match form.text("n") {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid("n", text)),
    }
}

/// An images answer with `mock_received`.
fn images_reply(
    count: Option<u32>,
    response_format: Option<&str>,
    n: u64,
    received: Value,
) -> Reply {
    Reply::json(&json!({
        "created": CREATED,
        "data": endpoints::image_data(count, response_format, n),
        "mock_received": received,
    }))
}

// --------------------------------------------------------------- images

#[derive(Deserialize)]
struct ImageEditJson {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    images: Option<Vec<Value>>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    response_format: Option<String>,
}

/// `POST /v1/images/edits`: a multipart form with `image` or `image[]` parts and a
/// `prompt`, or JSON with `images: [{image_url}]` and `prompt`; answered like
/// generations.
pub(super) fn image_edits(content_type: Option<&str>, body: &Bytes, n: u64) -> Reply {
    if !content_type.is_some_and(is_multipart) {
        let request: ImageEditJson = match endpoints::parse(body) {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        let images = match request.images.as_deref() {
            Some(images) if !images.is_empty() => images,
            _ => return missing("images"),
        };
        if request.prompt.is_none() {
            return missing("prompt");
        }
        let received = json!({
            "model": request.model,
            "form": false,
            "images": images.len(),
            "files": [],
        });
        return images_reply(request.n, request.response_format.as_deref(), n, received);
    }
    let form = match Form::parse(content_type, body) {
        Ok(form) => form,
        Err(reply) => return reply,
    };
    if !form
        .parts
        .iter()
        .any(|p| p.is_named("image") || p.is_named("image[]"))
    {
        return missing("image");
    }
    if form.part("prompt").is_none() {
        return missing("prompt");
    }
    let count = match form_n(&form) {
        Ok(count) => count,
        Err(reply) => return reply,
    };
    let received = form.received(form.text("model"));
    images_reply(count, form.text("response_format"), n, received)
}

/// `POST /v1/images/variations`: a multipart form with an `image` part.
pub(super) fn image_variations(content_type: Option<&str>, body: &Bytes, n: u64) -> Reply {
    let form = match Form::parse(content_type, body) {
        Ok(form) => form,
        Err(reply) => return reply,
    };
    if form.part("image").is_none() {
        return missing("image");
    }
    let count = match form_n(&form) {
        Ok(count) => count,
        Err(reply) => return reply,
    };
    let received = form.received(form.text("model"));
    images_reply(count, form.text("response_format"), n, received)
}

// ---------------------------------------------------------------- audio

/// `POST /v1/audio/transcriptions` and `/v1/audio/translations`: the text is
/// `mock transcript of <filename> (<len> bytes)` (`mock translation of ...` for
/// translations), as JSON (default), `text`, `srt`, `vtt` or `verbose_json`; a transcription
/// with the form field `stream=true` is an SSE stream of `transcript.text.delta` events and
/// one `transcript.text.done`.
pub(super) fn audio(content_type: Option<&str>, body: &Bytes, task: Task) -> Reply {
    let form = match Form::parse(content_type, body) {
        Ok(form) => form,
        Err(reply) => return reply,
    };
    let Some(file) = form.part("file") else {
        return missing("file");
    };
    let Some(model) = form.text("model").filter(|m| !m.trim().is_empty()) else {
        return missing("model");
    };
    let filename = file.filename.as_deref().unwrap_or("file");
    let len = file.data.len();
    let text = format!("mock {} of {filename} ({len} bytes)", task.noun());
    // Rounded to milliseconds, so it prints the same everywhere.
    let duration = (len as f64 / AUDIO_BYTES_PER_SECOND * 1000.0).round() / 1000.0;

    if task == Task::Transcribe && form.text("stream") == Some("true") {
        return transcript_stream(&text, len);
    }
    let received = form.received(Some(model));
    match form.text("response_format").unwrap_or("json") {
        "json" => {
            let mut value = json!({"text": text, "mock_received": received});
            if let (Task::Transcribe, Some(object)) = (task, value.as_object_mut()) {
                object.insert(
                    "usage".to_owned(),
                    json!({"type": "duration", "seconds": duration}),
                );
            }
            Reply::json(&value)
        }
        "text" => plain(text),
        "srt" => plain(format!(
            "1\n00:00:00,000 --> {}\n{text}\n\n",
            timestamp(duration, ',')
        )),
        "vtt" => plain(format!(
            "WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n",
            timestamp(duration, '.')
        )),
        "verbose_json" => {
            let language = form.text("language").unwrap_or("english");
            let language = if task == Task::Translate {
                "english"
            } else {
                language
            };
            let mut value = json!({
                "task": task.verb(),
                "language": language,
                "duration": duration,
                "text": text,
                "segments": [],
                "mock_received": received,
            });
            if let Some(object) = value.as_object_mut() {
                if task == Task::Transcribe {
                    object.insert(
                        "usage".to_owned(),
                        json!({"type": "duration", "seconds": duration}),
                    );
                }
                let granularities = form.texts("timestamp_granularities[]");
                if granularities.contains(&"word") {
                    object.insert("words".to_owned(), words(&text, duration));
                }
            }
            Reply::json(&value)
        }
        other => invalid("response_format", other),
    }
}

/// A `text/plain; charset=utf-8` answer.
fn plain(text: String) -> Reply {
    Reply {
        status: StatusCode::OK,
        content_type: TEXT_PLAIN,
        body: MockBody::full(text),
    }
}

/// `HH:MM:SS<sep>mmm` for a subtitle cue.
fn timestamp(seconds: f64, separator: char) -> String {
    let millis = (seconds * 1000.0).round().max(0.0) as u64;
    let (h, m, s, ms) = (
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

/// The words of `text` spread evenly over `duration`.
fn words(text: &str, duration: f64) -> Value {
    let words: Vec<&str> = text.split_whitespace().collect();
    let step = duration / words.len().max(1) as f64;
    let words: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, word)| json!({"word": word, "start": i as f64 * step, "end": (i + 1) as f64 * step}))
        .collect();
    Value::Array(words)
}

/// The SSE answer of a streamed transcription.
fn transcript_stream(text: &str, len: usize) -> Reply {
    let mut frames: Vec<Bytes> = endpoints::word_chunks(text)
        .map(|delta| endpoints::sse_data(&json!({"type": "transcript.text.delta", "delta": delta})))
        .collect();
    let input_tokens = len.div_ceil(1000) as u64;
    let output_tokens = frames.len() as u64;
    frames.push(endpoints::sse_data(&json!({
        "type": "transcript.text.done",
        "text": text,
        "usage": {
            "type": "tokens",
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    })));
    Reply::event_stream(frames)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unit_tests {
    use super::*;

    #[test]
    fn timestamps_and_digests() {
        assert_eq!(timestamp(0.0, ','), "00:00:00,000");
        assert_eq!(timestamp(3723.5, '.'), "01:02:03.500");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bad_forms_are_400_not_panics() {
        let body = Bytes::from_static(b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n");
        for content_type in [
            None,
            Some("application/json"),
            Some("multipart/form-data"),
            Some("multipart/form-data; boundary=b"),
            Some("multipart/form-data; boundary=\"\""),
        ] {
            let reply = audio(content_type, &body, Task::Transcribe);
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{content_type:?}");
            let reply = image_variations(content_type, &body, 1);
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{content_type:?}");
        }
        let reply = image_edits(Some("application/json"), &Bytes::from_static(b"{"), 1);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let reply = image_edits(None, &Bytes::new(), 1);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
}

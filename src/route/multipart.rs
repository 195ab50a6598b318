//! `multipart/form-data` bodies: read `model` wherever it sits, and re-encode the form with a
//! new `model` and a fresh boundary, every other part's headers and bytes kept.

use std::convert::Infallible;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use memchr::memmem;

use crate::error::Error;

/// The most parts a form may have (OpenAI's forms have a few dozen at most); bounds the
/// memory and time spent parsing.
const MAX_PARTS: usize = 1000;

/// One part of a form.
#[derive(Clone, Debug)]
struct Part {
    headers: HeaderMap,
    name: Option<String>,
    data: Bytes,
}

/// A parsed form, in the client's part order.
#[derive(Clone, Debug)]
pub(crate) struct Form {
    parts: Vec<Part>,
}

/// The boundary of a `multipart/form-data` content type, or a 400 naming what is wrong.
///
/// The boundary must be what RFC 2046 allows (1 to 70 characters from its alphabet, no
/// trailing space): an empty one would make every `--` at a line start a delimiter.
pub(crate) fn boundary(content_type: &str) -> Result<String, Error> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        Error::invalid_body("a multipart body needs a `boundary` in its Content-Type")
            .with_source(e)
    })?;
    if !is_rfc2046_boundary(&boundary) {
        return Err(Error::invalid_body(
            "the multipart `boundary` must be 1 to 70 characters of RFC 2046's alphabet",
        ));
    }
    Ok(boundary)
}

/// RFC 2046 section 5.1.1: `bchars` (digits, letters, `'()+_,-./:=?` and space), 1 to 70 of
/// them, not ending with a space.
fn is_rfc2046_boundary(boundary: &str) -> bool {
    let bchar = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    (1..=70).contains(&boundary.len()) && boundary.bytes().all(bchar) && !boundary.ends_with(' ')
}

impl Form {
    /// Parses a whole form held in memory.
    ///
    /// Every part must carry exactly one `Content-Disposition` that reads one way only (see
    /// [`Disposition::parse`]): a part the router names one way (`name="x"; name="model"`,
    /// `name*=`, two dispositions) could be read as `model` by the upstream's parser and slip
    /// past routing and the allow-list. A form must have parts, and its first delimiter must
    /// start a line: multer finds it anywhere, so `------b--` (one dash pair too many) would
    /// otherwise end the form before its parts.
    pub(crate) fn parse(body: Bytes, boundary: &str) -> Result<Self, Error> {
        enum Refusal {
            Malformed(multer::Error),
            TooManyParts,
            Ambiguous,
            RepeatedHeader,
            Empty,
        }
        if !first_delimiter_starts_a_line(&body, boundary) {
            return Err(Error::invalid_body(
                "the multipart body does not start with its boundary",
            ));
        }
        let raw = body.clone();
        let stream = futures_util::stream::once(std::future::ready(Ok::<_, Infallible>(body)));
        let mut multipart = multer::Multipart::new(stream, boundary);
        let parse = async move {
            let mut parts = Vec::new();
            while let Some(field) = multipart.next_field().await.map_err(Refusal::Malformed)? {
                if parts.len() == MAX_PARTS {
                    return Err(Refusal::TooManyParts);
                }
                let disposition = field
                    .headers()
                    .get(http::header::CONTENT_DISPOSITION)
                    .ok_or(Refusal::Ambiguous)?;
                // Our strict reading and multer's must agree on the name, and the name must
                // not be `model` in disguise.
                let name = Disposition::parse(disposition.as_bytes())
                    .map(|d| d.name)
                    .filter(|name| field.name() == Some(name.as_str()))
                    .filter(|name| !could_mean_model(name))
                    .ok_or(Refusal::Ambiguous)?;
                let headers = field.headers().clone();
                let data = field.bytes().await.map_err(Refusal::Malformed)?;
                parts.push(Part {
                    headers,
                    name: Some(name),
                    data,
                });
            }
            if parts.is_empty() {
                return Err(Refusal::Empty);
            }
            // multer keeps the last of two same-named headers: a second disposition (or
            // content type) would vanish unseen.
            match repeated_part_header(&raw, boundary) {
                Some(name) if name == "content-disposition" => Err(Refusal::Ambiguous),
                Some(_) => Err(Refusal::RepeatedHeader),
                None => Ok(parts),
            }
        };
        // The input is already in memory, so the parser never waits: drive it here instead
        // of holding a boxed future in the route's state machine. `MAX_PARTS` bounds the work.
        let mut parse = pin!(parse);
        let mut cx = Context::from_waker(Waker::noop());
        let parts = match parse.as_mut().poll(&mut cx) {
            Poll::Ready(parts) => parts,
            Poll::Pending => return Err(Error::internal()),
        };
        let parts = parts.map_err(|refusal| match refusal {
            Refusal::Malformed(e) => {
                Error::invalid_body("the multipart body is malformed or truncated").with_source(e)
            }
            Refusal::TooManyParts => Error::invalid_body("the form has too many parts"),
            Refusal::Ambiguous => Error::invalid_body(
                "every form part needs exactly one `Content-Disposition: form-data; \
                 name=\"...\"` with one plain `name` (not `model` in another spelling), at \
                 most one `filename` and no `name*`",
            ),
            Refusal::RepeatedHeader => Error::invalid_body("a form part repeats a header"),
            Refusal::Empty => Error::invalid_body("the form has no parts"),
        })?;
        Ok(Self { parts })
    }

    /// Every part: name, headers, data, in order.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn parts(&self) -> impl Iterator<Item = (&str, &HeaderMap, &Bytes)> {
        self.parts
            .iter()
            .map(|p| (p.name.as_deref().unwrap_or_default(), &p.headers, &p.data))
    }

    /// The bytes of the first part called `name` (shared, no copy).
    pub(crate) fn value(&self, name: &str) -> Option<&Bytes> {
        self.parts
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| &p.data)
    }

    /// The form re-encoded with `model`, leaving this one as it is (for another target).
    pub(crate) fn encoded_with_model(&self, model: &str) -> (Bytes, HeaderValue) {
        self.clone().encode_with_model(model)
    }

    /// The text of the first part called `name`.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        let part = self
            .parts
            .iter()
            .find(|p| p.name.as_deref() == Some(name))?;
        std::str::from_utf8(&part.data).ok()
    }

    /// How many parts are called `name`.
    pub(crate) fn count(&self, name: &str) -> usize {
        self.parts
            .iter()
            .filter(|p| p.name.as_deref() == Some(name))
            .count()
    }

    /// Whether the form has a part called `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.parts.iter().any(|p| {
            p.name.as_deref() == Some(name)
                || p.name.as_deref().and_then(|n| n.strip_suffix("[]")) == Some(name)
        })
    }

    /// The form with `model` set to `model` (replaced in place, or added first), encoded with
    /// a fresh boundary; returns the body and its `Content-Type`.
    pub(crate) fn encode_with_model(mut self, model: &str) -> (Bytes, HeaderValue) {
        match self
            .parts
            .iter_mut()
            .find(|p| p.name.as_deref() == Some("model"))
        {
            Some(part) => part.data = Bytes::copy_from_slice(model.as_bytes()),
            None => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("form-data; name=\"model\""),
                );
                self.parts.insert(
                    0,
                    Part {
                        headers,
                        name: Some("model".into()),
                        data: Bytes::copy_from_slice(model.as_bytes()),
                    },
                );
            }
        }
        let boundary = self.fresh_boundary();
        let size: usize = self
            .parts
            .iter()
            .map(|p| p.data.len() + 64 + boundary.len() + p.headers.len() * 64)
            .sum();
        let mut out = BytesMut::with_capacity(size + boundary.len() + 8);
        for part in &self.parts {
            out.extend_from_slice(b"--");
            out.extend_from_slice(boundary.as_bytes());
            out.extend_from_slice(b"\r\n");
            for (name, value) in &part.headers {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&part.data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"--\r\n");
        let content_type =
            HeaderValue::try_from(format!("multipart/form-data; boundary={boundary}"))
                .unwrap_or(HeaderValue::from_static("multipart/form-data"));
        (out.freeze(), content_type)
    }

    /// A boundary that occurs in no part.
    fn fresh_boundary(&self) -> String {
        static STATE: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let state = STATE.get_or_init(Default::default);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let boundary = format!(
                "ai-router-{:016x}{:016x}",
                state.hash_one(n),
                state.hash_one(!n)
            );
            let clash = self.parts.iter().any(|p| {
                memmem::find(&p.data, boundary.as_bytes()).is_some()
                    || p.headers
                        .values()
                        .any(|v| memmem::find(v.as_bytes(), boundary.as_bytes()).is_some())
            });
            if !clash {
                return boundary;
            }
        }
    }
}

/// Whether the first `--boundary` in `body` starts the body or a line (RFC 2046). multer
/// takes the first occurrence anywhere as the first delimiter.
fn first_delimiter_starts_a_line(body: &[u8], boundary: &str) -> bool {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary.as_bytes());
    match memmem::find(body, &delimiter) {
        Some(at) => at == 0 || body[..at].ends_with(b"\r\n"),
        None => false,
    }
}

/// The (lowercase) name of a header given twice in one part's head, if any. For a body
/// multer parsed: parts are found where multer finds them, after the first `--boundary` and
/// at each `\r\n--boundary`; a head ends at its first empty line.
fn repeated_part_header(body: &[u8], boundary: &str) -> Option<String> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 4);
    delimiter.extend_from_slice(b"\r\n--");
    delimiter.extend_from_slice(boundary.as_bytes());
    let first = memmem::find(body, &delimiter[2..])?;
    let later = memmem::find_iter(&body[first..], &delimiter).map(|at| first + at + 2);
    for start in std::iter::once(first).chain(later) {
        let rest = body.get(start + delimiter.len() - 2..)?;
        if rest.starts_with(b"--") {
            break;
        }
        let head_start = memmem::find(rest, b"\r\n")? + 2;
        let mut names: Vec<String> = Vec::new();
        for line in rest[head_start..].split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = String::from_utf8_lossy(&line[..colon])
                .trim()
                .to_ascii_lowercase();
            if names.contains(&name) {
                return Some(name);
            }
            names.push(name);
        }
    }
    None
}

/// Whether a part name other than `model` could be read as `model` by some parser:
/// percent-decoded, trimmed, in another case, or as the array `model[]`.
fn could_mean_model(name: &str) -> bool {
    if name == "model" {
        return false;
    }
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let trimmed = decoded.trim();
    let bare = trimmed.strip_suffix("[]").unwrap_or(trimmed).trim();
    bare.eq_ignore_ascii_case("model")
}

/// A `Content-Disposition` header of a form part, read strictly.
#[derive(Debug, PartialEq, Eq)]
struct Disposition {
    name: String,
    filename: Option<String>,
}

impl Disposition {
    /// Reads `form-data; name="..."[; filename="..."]` (type and parameter names in any
    /// case, values as tokens or quoted strings). `None` for anything parsers could read two
    /// ways: another type than `form-data`, a parameter given twice (`name`, `filename`, in any
    /// case), an extended parameter (`name*=`), an escaped quote or a `;...=` inside a quoted
    /// value (a parser that ends values at the first quote, or splits at `;`, would see
    /// another parameter there), no `name` or an empty one, or any syntax error.
    fn parse(value: &[u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?;
        let (kind, mut rest) = match value.find(';') {
            Some(at) => (&value[..at], Some(&value[at + 1..])),
            None => (value, None),
        };
        if !kind.trim_matches(is_ows).eq_ignore_ascii_case("form-data") {
            return None;
        }
        let mut seen: Vec<String> = Vec::new();
        let (mut name, mut filename) = (None, None);
        while let Some(params) = rest {
            let params = params.trim_start_matches(is_ows);
            let key_end = params.find(|c: char| !is_tchar(c)).unwrap_or(params.len());
            let key = params[..key_end].to_ascii_lowercase();
            if key.is_empty() || key.contains('*') || seen.contains(&key) {
                return None;
            }
            let after_key = params[key_end..].trim_start_matches(is_ows);
            let after_eq = after_key.strip_prefix('=')?.trim_start_matches(is_ows);
            let (param_value, after_value) = match after_eq.strip_prefix('"') {
                Some(quoted) => quoted_string(quoted)?,
                None => {
                    let end = after_eq
                        .find(|c: char| !is_tchar(c))
                        .unwrap_or(after_eq.len());
                    if end == 0 {
                        return None;
                    }
                    (after_eq[..end].to_owned(), &after_eq[end..])
                }
            };
            let after_value = after_value.trim_start_matches(is_ows);
            rest = match after_value.strip_prefix(';') {
                Some(next) => Some(next),
                None if after_value.is_empty() => None,
                None => return None,
            };
            match key.as_str() {
                "name" => name = Some(param_value),
                "filename" => filename = Some(param_value),
                _ => {}
            }
            seen.push(key);
        }
        Some(Self {
            name: name.filter(|name| !name.is_empty())?,
            filename,
        })
    }
}

/// A quoted string's value and what follows its closing quote; `quoted` starts after the
/// opening quote. `None` when unterminated, holding a control character, an escaped quote, or
/// a `;` followed by `=`.
fn quoted_string(quoted: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                let split_param = value
                    .find(';')
                    .is_some_and(|semicolon| value[semicolon..].contains('='));
                return (!split_param).then(|| (value, &quoted[at + 1..]));
            }
            '\\' => match chars.next() {
                Some((_, '"')) | None => return None,
                Some((_, escaped)) if escaped.is_control() => return None,
                Some((_, escaped)) => value.push(escaped),
            },
            c if c.is_control() && c != '\t' => return None,
            c => value.push(c),
        }
    }
    None
}

/// Optional whitespace (RFC 9110): space or horizontal tab.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A token character (RFC 9110 `tchar`).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn form(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Bytes {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        Bytes::from(out)
    }

    #[test]
    fn model_is_found_first_or_last_and_rewritten() {
        let png: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for model_first in [true, false] {
            let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![
                ("image[]", Some("a.png"), &png),
                ("prompt", None, b"a cat\r\n--not-a-boundary"),
            ];
            let model: (&str, Option<&str>, &[u8]) = ("model", None, b"openai/gpt-image-1");
            if model_first {
                parts.insert(0, model);
            } else {
                parts.push(model);
            }
            let body = form("XyZ", &parts);
            let parsed = Form::parse(body, "XyZ").unwrap();
            assert_eq!(parsed.text("model"), Some("openai/gpt-image-1"));
            assert!(parsed.has("image"));
            let (encoded, content_type) = parsed.encode_with_model("gpt-image-1");
            let boundary = boundary(content_type.to_str().unwrap()).unwrap();
            let again = Form::parse(encoded, &boundary).unwrap();
            assert_eq!(again.text("model"), Some("gpt-image-1"));
            assert_eq!(again.text("prompt"), Some("a cat\r\n--not-a-boundary"));
            let image = again
                .parts
                .iter()
                .find(|p| p.name.as_deref() == Some("image[]"))
                .unwrap();
            assert_eq!(&image.data[..], &png[..]);
            assert_eq!(image.headers["content-type"], "image/png");
            assert!(
                image.headers["content-disposition"]
                    .to_str()
                    .unwrap()
                    .contains("filename=\"a.png\"")
            );
        }
    }

    #[test]
    fn parts_are_counted() {
        let body = form("b", &[("model", None, b"a"), ("model", None, b"b")]);
        assert_eq!(Form::parse(body, "b").unwrap().count("model"), 2);
    }

    #[test]
    fn a_missing_model_is_added() {
        let body = form("b", &[("file", Some("a.wav"), b"RIFF")]);
        let parsed = Form::parse(body, "b").unwrap();
        assert_eq!(parsed.text("model"), None);
        let (encoded, content_type) = parsed.encode_with_model("whisper-1");
        let again =
            Form::parse(encoded, &boundary(content_type.to_str().unwrap()).unwrap()).unwrap();
        assert_eq!(again.text("model"), Some("whisper-1"));
        assert!(again.has("file"));
    }

    #[test]
    fn parts_the_router_cannot_name_are_refused() {
        let smuggled = "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmock/a\r\n\
             --b\r\nContent-Disposition: form-data; NAME=\"model\"\r\n\r\nexpensive\r\n--b--\r\n";
        let error = Form::parse(Bytes::from(smuggled), "b").unwrap_err();
        assert!(error.to_string().contains("Content-Disposition"), "{error}");
        let twice = "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\
             Content-Disposition: form-data; name=\"model\"\r\n\r\nx\r\n--b--\r\n";
        let error = Form::parse(Bytes::from(twice), "b").unwrap_err();
        assert!(error.to_string().contains("Content-Disposition"), "{error}");
    }

    #[test]
    fn dispositions_are_read_one_way_or_refused() {
        let read = |value: &str| Disposition::parse(value.as_bytes());
        let named = |name: &str, filename: Option<&str>| {
            Some(Disposition {
                name: name.to_owned(),
                filename: filename.map(str::to_owned),
            })
        };
        for (value, expected) in [
            (r#"form-data; name="model""#, named("model", None)),
            ("form-data; name=model", named("model", None)),
            ("Form-Data ;Name = \"a b\" ", named("a b", None)),
            (
                r#"form-data; name="f"; filename="a;b.png""#,
                named("f", Some("a;b.png")),
            ),
            (r#"form-data; filename=""; name="f""#, named("f", Some(""))),
            (r#"form-data; name="a\\b""#, named("a\\b", None)),
            (
                "form-data; name=\"\u{4f60}\u{597d}\"",
                named("\u{4f60}\u{597d}", None),
            ),
            (r#"form-data; name="x"; size=12"#, named("x", None)),
        ] {
            assert_eq!(read(value), expected, "{value}");
        }
        for value in [
            r#"form-data; name="x"; name="model""#,
            r#"form-data; name="x"; NAME="model""#,
            r#"form-data; name="x"; filename="a"; filename="b""#,
            r#"form-data; name="x"; FileName="a"; filename="b""#,
            r#"form-data; name*=UTF-8''model"#,
            r#"form-data; name="x"; filename*=UTF-8''a.png"#,
            r#"attachment; name="x""#,
            r#"inline; name="x""#,
            r#"form-data"#,
            r#"form-data; filename="a.png""#,
            r#"form-data; name="""#,
            r#"form-data; name="x"#,
            r#"form-data; name="x" name="model""#,
            r#"form-data; name="x";"#,
            r#"form-data;; name="x""#,
            r#"form-data; name=; filename="a""#,
            r#"form-data; name="a\"b""#,
            r#"form-data; name="x"; filename="a\"; name=\"model""#,
            r#"form-data; name="x"; filename="; name=model""#,
            "form-data; name=\"x\ry\"",
            r#"form-data name="x""#,
            r#"; name="x""#,
            "",
        ] {
            assert_eq!(read(value), None, "{value}");
        }
        assert_eq!(Disposition::parse(b"form-data; name=\"\xff\""), None);
    }

    #[test]
    fn names_that_could_mean_model_are_spotted() {
        for name in [
            "MODEL",
            "Model",
            "%6Dodel",
            "%6d%6f%64%65%6c",
            " model",
            "model[]",
        ] {
            assert!(could_mean_model(name), "{name}");
        }
        for name in ["model", "models", "prompt", "image[]", "%zz", ""] {
            assert!(!could_mean_model(name), "{name}");
        }
    }

    #[test]
    fn ambiguous_parts_are_refused_by_the_form() {
        for disposition in [
            r#"form-data; name="x"; name="model""#,
            r#"form-data; name="x"; name*=UTF-8''model"#,
            r#"form-data; name="MODEL""#,
            r#"attachment; name="x""#,
        ] {
            let body = format!(
                "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n\
                 --b\r\nContent-Disposition: {disposition}\r\n\r\nx\r\n--b--\r\n"
            );
            let error = Form::parse(Bytes::from(body), "b").unwrap_err();
            assert!(error.to_string().contains("Content-Disposition"), "{error}");
        }
    }

    #[test]
    fn the_first_delimiter_must_start_a_line() {
        let part = "Content-Disposition: form-data; name=\"image\"\r\n\r\nPNG\r\n----x--\r\n";
        for body in [
            format!("------x--\r\n----x\r\n{part}"),
            format!("preamble ----x--\r\n----x\r\n{part}"),
            format!("\n----x\r\n{part}"),
        ] {
            let error = Form::parse(Bytes::from(body.clone()), "--x").unwrap_err();
            assert_eq!(error.status(), 400, "{body}");
        }
        for body in [
            format!("----x\r\n{part}"),
            format!("a preamble\r\n----x\r\n{part}"),
        ] {
            let form = Form::parse(Bytes::from(body), "--x").unwrap();
            assert!(form.has("image"));
        }
    }

    #[test]
    fn repeated_part_headers_are_refused() {
        let twice = "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
             --b\r\nContent-Type: text/plain\r\ncontent-type: image/png\r\n\
             Content-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--b--\r\n";
        let error = Form::parse(Bytes::from(twice), "b").unwrap_err();
        assert!(error.to_string().contains("repeats a header"), "{error}");
        assert_eq!(
            repeated_part_header(twice.as_bytes(), "b").unwrap(),
            "content-type"
        );
        let once = "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\
             Content-Disposition: x\r\nContent-Disposition: y\r\n--b--\r\n";
        assert_eq!(repeated_part_header(once.as_bytes(), "b"), None);
    }

    #[test]
    fn empty_forms_are_refused() {
        for body in ["--b--\r\n", "--b--", "preamble\r\n--b--\r\nepilogue"] {
            let error = Form::parse(Bytes::from(body), "b").unwrap_err();
            assert!(error.to_string().contains("no parts"), "{body}: {error}");
        }
    }

    #[test]
    fn boundaries_follow_rfc_2046() {
        let of = |value: &str| boundary(&format!("multipart/form-data; boundary={value}"));
        for ok in ["b", "--xyz", "\"'()+_,-./:=? x\"", &"a".repeat(70)] {
            assert!(of(ok).is_ok(), "{ok}");
        }
        for bad in ["\"\"", "\"a \"", "\"a;b\"", "\"a\\\"b\"", &"a".repeat(71)] {
            assert!(of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_many_parts_are_refused() {
        let parts: Vec<(&str, Option<&str>, &[u8])> = vec![("x", None, b"1"); MAX_PARTS + 1];
        let error = Form::parse(form("b", &parts), "b").unwrap_err();
        assert!(error.to_string().contains("too many parts"));
        let parts: Vec<(&str, Option<&str>, &[u8])> = vec![("x", None, b"1"); MAX_PARTS];
        assert!(Form::parse(form("b", &parts), "b").is_ok());
    }

    #[test]
    fn malformed_forms_are_400() {
        assert!(boundary("multipart/form-data").is_err());
        let body = form("b", &[("model", None, b"x")]);
        let truncated = body.slice(..body.len() - 8);
        assert_eq!(Form::parse(truncated, "b").unwrap_err().status(), 400);
        assert_eq!(
            Form::parse(Bytes::from_static(b"garbage"), "b")
                .unwrap_err()
                .status(),
            400
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod proptests {
    //! For any boundary and part order, re-encoding keeps every other part's headers and bytes.

    use proptest::prelude::*;

    use super::*;

    /// RFC 2046 `bchars`.
    const BCHARS: &str =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ";

    fn rfc2046_boundary() -> impl Strategy<Value = String> {
        let chars: Vec<char> = BCHARS.chars().collect();
        prop::collection::vec(prop::sample::select(chars), 1..=70).prop_map(|mut chars| {
            if chars.last() == Some(&' ') {
                chars.pop();
                chars.push('-');
            }
            chars.into_iter().collect()
        })
    }

    /// Part data with plenty of line breaks and dashes.
    fn data() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(|b| vec![b]),
                Just(b"\r\n".to_vec()),
                Just(b"--".to_vec()),
                Just(b"\r\n--".to_vec()),
                Just(b"\r\n\r\n".to_vec()),
            ],
            0..24,
        )
        .prop_map(|pieces| pieces.concat())
    }

    /// One generated part: its header lines (in order) and data.
    #[derive(Clone, Debug)]
    struct GenPart {
        name: String,
        headers: Vec<(String, String)>,
        data: Vec<u8>,
    }

    fn part() -> impl Strategy<Value = GenPart> {
        let name = "[a-z_]{1,8}(\\[\\])?"
            .prop_filter("not model", |n| n != "model" && !could_mean_model(n));
        let filename = prop::option::of("[a-zA-Z0-9 ._;()-]{0,12}");
        let content_type = prop::option::of(prop::sample::select(vec![
            "image/png",
            "audio/wav",
            "text/plain; charset=utf-8",
            "application/octet-stream",
        ]));
        let note = prop::option::of("[!-~]([ -~]{0,16}[!-~])?");
        (name, filename, content_type, note, any::<bool>(), data()).prop_map(
            |(name, filename, content_type, note, type_first, data)| {
                let disposition = match &filename {
                    Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
                    None => format!("form-data; name=\"{name}\""),
                };
                let mut headers = vec![("Content-Disposition".to_owned(), disposition)];
                if let Some(t) = content_type {
                    let at = if type_first { 0 } else { 1 };
                    headers.insert(at, ("Content-Type".to_owned(), t.to_owned()));
                }
                if let Some(note) = note {
                    headers.push(("X-Note".to_owned(), note));
                }
                GenPart {
                    name,
                    headers,
                    data,
                }
            },
        )
    }

    fn model_part(model: &str) -> GenPart {
        GenPart {
            name: "model".to_owned(),
            headers: vec![(
                "Content-Disposition".to_owned(),
                "form-data; name=\"model\"".to_owned(),
            )],
            data: model.as_bytes().to_vec(),
        }
    }

    fn encode(boundary: &str, parts: &[GenPart]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            for (name, value) in &part.headers {
                out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&part.data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    /// A part's headers in order, names lowercased.
    fn header_list(part: &GenPart) -> Vec<(String, Vec<u8>)> {
        part.headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
            .collect()
    }

    /// Parsed headers in order.
    fn parsed_list(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn other_parts_keep_their_headers_and_bytes(
            boundary in rfc2046_boundary(),
            mut parts in prop::collection::vec(part(), 1..6),
            model in prop::option::of(("[a-z0-9/.:-]{1,20}", any::<prop::sample::Index>())),
            new_model in "[a-z0-9/.:-]{1,20}",
        ) {
            let delimiter = format!("\r\n--{boundary}");
            prop_assume!(parts
                .iter()
                .all(|p| memmem::find(&p.data, delimiter.as_bytes()).is_none()));
            if let Some((model, at)) = &model {
                parts.insert(at.index(parts.len() + 1), model_part(model));
            }
            let body = Bytes::from(encode(&boundary, &parts));
            let content_type = format!("multipart/form-data; boundary=\"{boundary}\"");
            let read = super::boundary(&content_type).unwrap();
            prop_assert_eq!(&read, &boundary);

            let form = Form::parse(body, &read).unwrap();
            prop_assert_eq!(form.parts.len(), parts.len());
            for (got, want) in form.parts.iter().zip(&parts) {
                prop_assert_eq!(got.name.as_deref(), Some(want.name.as_str()));
                prop_assert_eq!(parsed_list(&got.headers), header_list(want));
                prop_assert_eq!(&got.data[..], &want.data[..]);
            }
            prop_assert_eq!(form.text("model"), model.as_ref().map(|(m, _)| m.as_str()));

            let (encoded, content_type) = form.encode_with_model(&new_model);
            let again = Form::parse(encoded, &super::boundary(content_type.to_str().unwrap()).unwrap()).unwrap();
            let mut expected = parts.clone();
            match expected.iter_mut().find(|p| p.name == "model") {
                Some(part) => part.data = new_model.as_bytes().to_vec(),
                None => expected.insert(0, model_part(&new_model)),
            }
            prop_assert_eq!(again.parts.len(), expected.len());
            for (got, want) in again.parts.iter().zip(&expected) {
                prop_assert_eq!(got.name.as_deref(), Some(want.name.as_str()));
                prop_assert_eq!(parsed_list(&got.headers), header_list(want));
                prop_assert_eq!(&got.data[..], &want.data[..]);
            }
        }
    }
}

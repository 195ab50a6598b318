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
#[derive(Debug)]
struct Part {
    headers: HeaderMap,
    name: Option<String>,
    data: Bytes,
}

/// A parsed form, in the client's part order.
#[derive(Debug)]
pub(crate) struct Form {
    parts: Vec<Part>,
}

/// The boundary of a `multipart/form-data` content type, or a 400 naming what is wrong.
pub(crate) fn boundary(content_type: &str) -> Result<String, Error> {
    multer::parse_boundary(content_type).map_err(|e| {
        Error::invalid_body("a multipart body needs a `boundary` in its Content-Type")
            .with_source(e)
    })
}

impl Form {
    /// Parses a whole form held in memory.
    ///
    /// Every part must carry exactly one `Content-Disposition` with a name the parser reads:
    /// a part the router cannot name (`NAME="model"`, `name*=`, two dispositions) could be
    /// read as `model` by the upstream's parser and slip past routing and the allow-list.
    pub(crate) fn parse(body: Bytes, boundary: &str) -> Result<Self, Error> {
        enum Refusal {
            Malformed(multer::Error),
            TooManyParts,
            Unnamed,
        }
        let stream = futures_util::stream::once(std::future::ready(Ok::<_, Infallible>(body)));
        let mut multipart = multer::Multipart::new(stream, boundary);
        let parse = async move {
            let mut parts = Vec::new();
            while let Some(field) = multipart.next_field().await.map_err(Refusal::Malformed)? {
                if parts.len() == MAX_PARTS {
                    return Err(Refusal::TooManyParts);
                }
                let dispositions = field
                    .headers()
                    .get_all(http::header::CONTENT_DISPOSITION)
                    .iter()
                    .count();
                let Some(name) = field
                    .name()
                    .filter(|_| dispositions == 1)
                    .map(str::to_owned)
                else {
                    return Err(Refusal::Unnamed);
                };
                let headers = field.headers().clone();
                let data = field.bytes().await.map_err(Refusal::Malformed)?;
                parts.push(Part {
                    headers,
                    name: Some(name),
                    data,
                });
            }
            Ok(parts)
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
            Refusal::Unnamed => Error::invalid_body(
                "every form part needs one `Content-Disposition: form-data; name=\"...\"`",
            ),
        })?;
        Ok(Self { parts })
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
        // The parser keeps one of the two; what goes upstream names the part the same way.
        if let Ok(form) = Form::parse(Bytes::from(twice), "b") {
            let name = form.parts[0].name.clone().unwrap();
            let (encoded, _) = form.encode_with_model("m");
            let text = String::from_utf8_lossy(&encoded);
            assert_eq!(text.matches("content-disposition").count(), 1, "{text}");
            assert!(text.contains(&format!("name=\"{name}\"")), "{text}");
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

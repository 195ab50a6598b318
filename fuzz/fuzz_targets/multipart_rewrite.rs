//! Multipart parse and re-encode: never a panic; an accepted form re-encoded with a model
//! parses back to the same parts (headers and bytes), with that model.
//!
//! Inputs are forms built from fuzzer-chosen parts (so the fuzzer reaches past the
//! boundary), then optionally damaged, or raw bytes under a fuzzer-chosen boundary.

#![no_main]

use ai_router::__fuzz::{FormPart, parse_form, rewrite_form};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Disposition {
    /// `form-data; name="<name>"[; filename="<filename>"]`, as clients write it.
    Plain {
        name: String,
        filename: Option<String>,
    },
    /// `model` itself.
    Model,
    /// Anything.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Part {
    disposition: Disposition,
    headers: Vec<(String, String)>,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Built {
        parts: Vec<Part>,
        /// Bytes overwritten after building: (offset, byte).
        damage: Vec<(u16, u8)>,
        epilogue: Vec<u8>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    boundary: String,
    /// Use `boundary` as is; otherwise it is made an RFC 2046 boundary first.
    raw_boundary: bool,
    quoted: bool,
    model: String,
    body: Body,
}

fn build(boundary: &str, parts: &[Part], damage: &[(u16, u8)], epilogue: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match &part.disposition {
            Disposition::Plain {
                name,
                filename: None,
            } => format!("form-data; name=\"{name}\""),
            Disposition::Plain {
                name,
                filename: Some(filename),
            } => format!("form-data; name=\"{name}\"; filename=\"{filename}\""),
            Disposition::Model => "form-data; name=\"model\"".to_owned(),
            Disposition::Raw(raw) => raw.clone(),
        };
        out.extend_from_slice(format!("Content-Disposition: {disposition}\r\n").as_bytes());
        for (name, value) in &part.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&part.data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out.extend_from_slice(epilogue);
    for &(at, byte) in damage {
        if let Some(slot) = out.get_mut(usize::from(at)) {
            *slot = byte;
        }
    }
    out
}

/// `raw` made an RFC 2046 boundary: other characters replaced, 1 to 70 long, no trailing
/// space.
fn rfc2046(raw: &str) -> String {
    let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    let mut boundary: String = raw
        .chars()
        .map(|c| if bchar(c) { c } else { 'x' })
        .take(70)
        .collect();
    if boundary.is_empty() || boundary.ends_with(' ') {
        boundary.pop();
        boundary.push('b');
    }
    boundary
}

fuzz_target!(|input: Input| {
    let boundary = if input.raw_boundary {
        input.boundary.clone()
    } else {
        rfc2046(&input.boundary)
    };
    let body = match &input.body {
        Body::Built {
            parts,
            damage,
            epilogue,
        } => build(&boundary, parts, damage, epilogue),
        Body::Raw(bytes) => bytes.clone(),
    };
    let content_type = if input.quoted {
        format!("multipart/form-data; boundary=\"{boundary}\"")
    } else {
        format!("multipart/form-data; boundary={boundary}")
    };
    let Some(parts) = parse_form(&content_type, &body) else {
        assert!(rewrite_form(&content_type, &body, &input.model).is_none());
        return;
    };
    assert!(!parts.is_empty());
    let (encoded, encoded_type) =
        rewrite_form(&content_type, &body, &input.model).expect("an accepted form re-encodes");
    let Some(again) = parse_form(&encoded_type, &encoded) else {
        panic!(
            "the re-encoded form is refused: {:?}",
            String::from_utf8_lossy(&encoded)
        );
    };
    let mut expected: Vec<FormPart> = parts.clone();
    match expected.iter_mut().find(|p| p.name == "model") {
        Some(part) => part.data = input.model.as_bytes().to_vec(),
        None => expected.insert(
            0,
            FormPart {
                name: "model".to_owned(),
                headers: vec![(
                    "content-disposition".to_owned(),
                    b"form-data; name=\"model\"".to_vec(),
                )],
                data: input.model.as_bytes().to_vec(),
            },
        ),
    }
    assert_eq!(again, expected);
});

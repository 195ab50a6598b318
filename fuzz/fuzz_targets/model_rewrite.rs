//! `model` peek and rewrite on arbitrary bytes: never a panic; when a body is accepted, the
//! rewrite changes the top-level `model` only and leaves exactly one.

#![no_main]

use ai_router::__fuzz::{peek_model, rewrite_model};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|input: (String, &[u8])| {
    let (model, body) = input;
    let Some(sent) = peek_model(body) else {
        assert!(rewrite_model(body, &model).is_none());
        return;
    };
    let out = rewrite_model(body, &model).expect("a body peek accepts is rewritten");
    // Exactly one `model` (peek refuses a duplicate), holding the new value.
    assert_eq!(peek_model(&out), Some(Some(model.clone())), "{sent:?}");
    // Every other member is unchanged (when serde_json can build both trees: its depth
    // limit is lower than the skipping parser's).
    if let (Ok(Value::Object(mut before)), Ok(Value::Object(mut after))) = (
        serde_json::from_slice::<Value>(body),
        serde_json::from_slice::<Value>(&out),
    ) {
        before.remove("model");
        assert_eq!(after.remove("model"), Some(Value::String(model)));
        assert_eq!(before, after);
    }
});

//! The scanner finds the same events, and forwards the same bytes, for every split of the same
//! stream into chunks.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;

use bytes::Bytes;
use proptest::prelude::*;

use super::scanner::EventScanner;
use super::usage::Usage;

/// One line of an event, without its line ending.
fn line() -> impl Strategy<Value = String> {
    let text = "[a-zA-Z0-9 {}\":,\\[\\]_.]{0,24}";
    prop_oneof![
        4 => text.prop_map(|t| format!("data: {t}")),
        1 => text.prop_map(|t| format!("data:{t}")),
        1 => Just("data".to_owned()),
        1 => "[a-z._]{1,20}".prop_map(|t| format!("event: {t}")),
        1 => (0..1000u32).prop_map(|n| format!("id: {n}")),
        1 => text.prop_map(|t| format!(": {t}")),
        1 => Just(":".to_owned()),
        1 => Just("retry: 1000".to_owned()),
        1 => Just("data: [DONE]".to_owned()),
        1 => text.prop_map(|t| format!("dataX: {t}")),
        2 => (0..1000u32, 0..1000u32).prop_map(|(p, c)| format!(
            "data: {{\"id\":\"c\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{p},\
             \"completion_tokens\":{c},\"total_tokens\":{}}}}}",
            p + c
        )),
        1 => (0..1000u32).prop_map(|t| format!(
            "data: {{\"type\":\"response.completed\",\"response\":{{\"usage\":\
             {{\"input_tokens\":1,\"output_tokens\":2,\"total_tokens\":{t}}}}}}}"
        )),
        1 => Just("data: {\"choices\":[],\"usage\":null}".to_owned()),
    ]
}

fn ending() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["\n", "\r\n", "\r"])
}

/// A stream of events: lines with mixed endings, each event closed by an empty line, and
/// sometimes an unfinished last event.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let event = (prop::collection::vec((line(), ending()), 1..5), ending());
    (
        prop::collection::vec(event, 0..8),
        prop::option::of((line(), prop::option::of(ending()))),
    )
        .prop_map(|(events, tail)| {
            let mut out = String::new();
            for (lines, end) in events {
                for (line, ending) in lines {
                    out.push_str(&line);
                    out.push_str(ending);
                }
                out.push_str(end);
            }
            if let Some((line, ending)) = tail {
                out.push_str(&line);
                out.push_str(ending.unwrap_or(""));
            }
            out.into_bytes()
        })
}

/// Feeds `stream` cut at `cuts`; returns what the client gets, the event count and the usage.
fn run(stream: &[u8], cuts: &[usize], strip: bool) -> (Vec<u8>, u64, Option<Usage>) {
    let mut scanner = EventScanner::new(strip);
    let mut out = VecDeque::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        scanner.feed(Bytes::copy_from_slice(&stream[last..cut]), &mut out);
        last = cut;
    }
    let mut bytes: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
    bytes.extend_from_slice(&scanner.finish().unwrap_or_default());
    (bytes, scanner.events(), scanner.usage())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_split_gives_the_same_bytes_and_events(
        stream in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        strip in any::<bool>(),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let whole = run(&stream, &[], strip);
        if !strip {
            prop_assert_eq!(&whole.0, &stream);
        }
        let split = run(&stream, &cuts, strip);
        prop_assert_eq!(&split.0, &whole.0, "cuts {:?}", cuts);
        prop_assert_eq!(split.1, whole.1);
        prop_assert_eq!(split.2, whole.2);
        // One byte at a time, too.
        let every: Vec<usize> = (1..stream.len()).collect();
        let bytewise = run(&stream, &every, strip);
        prop_assert_eq!(&bytewise.0, &whole.0);
        prop_assert_eq!(bytewise.1, whole.1);
        prop_assert_eq!(bytewise.2, whole.2);
    }
}

//! The SSE scanner on arbitrary bytes cut at fuzzer-chosen points: never a panic; without
//! stripping, the client gets the input byte for byte; the events, usage and output are the
//! same for every cut.

#![no_main]

use ai_router::__fuzz::SseScanner;
use libfuzzer_sys::fuzz_target;

fn run(stream: &[u8], cuts: &[usize], strip: bool) -> (Vec<u8>, u64, Option<(u64, u64, u64)>) {
    let mut scanner = SseScanner::new(strip);
    let mut out = Vec::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        out.extend_from_slice(&scanner.feed(&stream[last..cut]));
        last = cut;
    }
    out.extend_from_slice(&scanner.finish());
    let usage = scanner
        .usage()
        .map(|u| (u.input_tokens, u.output_tokens, u.total_tokens));
    (out, scanner.events(), usage)
}

fuzz_target!(|input: (bool, Vec<u16>, &[u8])| {
    let (strip, cuts, stream) = input;
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let whole = run(stream, &[], strip);
    if !strip {
        assert_eq!(whole.0, stream);
    }
    let split = run(stream, &cuts, strip);
    assert_eq!(split, whole, "cuts {cuts:?}");
});

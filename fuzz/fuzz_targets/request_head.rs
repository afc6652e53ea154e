//! The raw request head check and the path canonicaliser, on bytes as a client
//! could send them: the head tap (the byte-stream state machine that copies
//! each head off the wire) must find the same heads however the bytes are split
//! into reads; `check_raw_head` must never panic; and any request target it
//! lets through is canonicalised with the invariants of `portcullis::path`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::gateway::head_tap::{HeadTap, RawHead};
use portcullis_fuzz::check_path_invariants;

/// Every head the tap copies from `input`, fed in reads of the given sizes.
fn tap(input: &[u8], reads: &[u8]) -> (Vec<RawHead>, bool) {
    let (mut tap, queue) = HeadTap::new();
    let mut rest = input;
    let mut sizes = reads.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().map_or(rest.len(), |&s| usize::from(s).max(1));
        let (now, later) = rest.split_at(n.min(rest.len()));
        tap.feed(now);
        rest = later;
    }
    let mut heads = Vec::new();
    while let Some(h) = queue.pop() {
        heads.push(h);
    }
    (heads, tap.is_passthrough())
}

fuzz_target!(|data: &[u8]| {
    // The first byte says how to cut the stream into reads (0: one read).
    let (cut, stream) = match data.split_first() {
        Some((&c, rest)) => (c, rest),
        None => return,
    };
    let whole = tap(stream, &[]);
    let split = tap(stream, &[cut.max(1), cut.wrapping_mul(7) | 1, 1]);
    assert_eq!(
        whole, split,
        "the heads found depend on how the bytes were read"
    );

    for http10 in [false, true] {
        let _ = portcullis::gateway::framing::check_raw_head(stream, http10);
    }
    for head in &whole.0 {
        if head.check().is_err() {
            continue;
        }
        // The check accepted the head: its target goes on to the path check.
        let line = head
            .bytes()
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        let mut words = line.split(|&b| b == b' ');
        let (_method, target) = (words.next(), words.next());
        if let Some(target) = target.and_then(|t| std::str::from_utf8(t).ok()) {
            let path = target.split('?').next().unwrap_or_default();
            check_path_invariants(path);
        }
    }
    // The raw bytes as a path, too: the canonicaliser sees every spelling.
    if let Ok(text) = std::str::from_utf8(stream) {
        check_path_invariants(text);
    }
});

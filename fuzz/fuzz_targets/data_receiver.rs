//! The DATA receiver (`smtp::data::DataReceiver`): framing, dot-unstuffing and
//! the SMTP smuggling rules, on any byte stream after `354`.
//!
//! Properties:
//! - It agrees with a naive line-by-line reference: only `CRLF.CRLF` (or `.CRLF`
//!   right after DATA) ends the message, any bare CR or LF before that aborts,
//!   a leading dot is removed, NUL, long lines and size are errors.
//! - The result does not depend on how the stream is split into reads.
//! - An accepted message holds only CRLF line ends and no NUL, and dot-stuffed
//!   again for the upstream (`message_text::dot_stuff`) it has exactly one
//!   terminator, at its end, and reads back as the same message.

#![no_main]

mod common;

use common::{assert_crlf_only, find};
use libfuzzer_sys::fuzz_target;
use smarthost::smtp::data::{DataError, DataReceiver, Feed, Limits};
use smarthost::message_text::dot_stuff;

const LIMITS: [Limits; 2] = [
    Limits {
        max_size: 1 << 20,
        max_line: 998,
    },
    Limits {
        max_size: 64,
        max_line: 12,
    },
];

fuzz_target!(|wire: &[u8]| {
    for limits in LIMITS {
        let want = reference(wire, limits);
        let whole = run(wire, limits, &[wire.len()]);
        assert_eq!(whole, want, "whole: {wire:?}");
        // One byte a read, and reads of pseudo-random sizes.
        assert_eq!(run(wire, limits, &[1]), want, "byte by byte: {wire:?}");
        let mut x = wire.len() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        let cuts: Vec<usize> = (0..wire.len())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1 + (x % 17) as usize
            })
            .collect();
        assert_eq!(run(wire, limits, &cuts), want, "random reads: {wire:?}");
        if let (Outcome::Done(consumed), Ok(message)) = &want {
            check_accepted(&wire[..*consumed], message, limits);
        }
    }
});

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The terminator ended after this many bytes of the stream.
    Done(usize),
    NeedMore,
    Abort,
}

type Result = (Outcome, std::result::Result<Vec<u8>, DataError>);

/// Feeds `wire` in reads of the sizes in `cuts`, the last one repeated.
fn run(wire: &[u8], limits: Limits, cuts: &[usize]) -> Result {
    let mut rx = DataReceiver::new(limits);
    let mut pos = 0;
    let repeat = cuts.last().copied().unwrap_or(1);
    let mut sizes = cuts.iter().copied().chain(std::iter::repeat(repeat));
    let outcome = loop {
        let n = sizes.next().unwrap_or(1).max(1);
        let chunk = &wire[pos..(pos + n).min(wire.len())];
        match rx.feed(chunk) {
            Feed::NeedMore => {
                pos += chunk.len();
                if pos >= wire.len() {
                    break Outcome::NeedMore;
                }
            }
            Feed::Done { consumed } => {
                assert!(consumed <= chunk.len());
                break Outcome::Done(pos + consumed);
            }
            Feed::Abort => break Outcome::Abort,
        }
    };
    // Feeding after the end changes nothing.
    match &outcome {
        Outcome::Done(_) => assert_eq!(rx.feed(b"MAIL FROM:<x@y>\r\n"), Feed::Done { consumed: 0 }),
        Outcome::Abort => assert_eq!(rx.feed(b".\r\n"), Feed::Abort),
        Outcome::NeedMore => {}
    }
    (outcome, rx.finish())
}

/// The rules, written as plainly as possible: split at CRLF, one line at a
/// time, one byte at a time. The first limit crossed, in byte order, is the
/// error; a line's own bytes are counted before its CRLF.
fn reference(wire: &[u8], limits: Limits) -> Result {
    let mut out = Vec::new();
    let mut error: Option<DataError> = None;
    let mut pos = 0;
    loop {
        let rest = &wire[pos..];
        // The line runs to the first CR or LF; it must be a CRLF.
        let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            return (Outcome::NeedMore, Err(DataError::BareLineEnding));
        };
        let line = &rest[..end];
        let after = &rest[end..];
        if after[0] == b'\n' || after.get(1).is_some_and(|&b| b != b'\n') {
            return (Outcome::Abort, Err(DataError::BareLineEnding));
        }
        if after.len() < 2 {
            // A CR at the very end: the line's fate is not known yet.
            return (Outcome::NeedMore, Err(DataError::BareLineEnding));
        }
        if line == b"." {
            let done = Outcome::Done(pos + end + 2);
            return match error {
                Some(e) => (done, Err(e)),
                None => (done, Ok(out)),
            };
        }
        if error.is_none() {
            error = line_error(line, out.len(), limits);
        }
        if error.is_none() {
            let kept = line.strip_prefix(b".").unwrap_or(line);
            out.extend_from_slice(kept);
            out.extend_from_slice(b"\r\n");
        }
        pos += end + 2;
    }
}

/// The first limit this line crosses, given `stored` bytes kept before it.
fn line_error(line: &[u8], stored: usize, limits: Limits) -> Option<DataError> {
    let mut kept = 0;
    for (i, &b) in line.iter().enumerate() {
        if i + 1 > limits.max_line {
            return Some(DataError::LineTooLong);
        }
        if b == 0 {
            return Some(DataError::Nul);
        }
        if i == 0 && b == b'.' {
            continue;
        }
        kept += 1;
        if stored + kept > limits.max_size {
            return Some(DataError::TooLarge);
        }
    }
    (stored + kept + 2 > limits.max_size).then_some(DataError::TooLarge)
}

/// What the upstream will be sent for an accepted message.
fn check_accepted(framed: &[u8], message: &[u8], limits: Limits) {
    assert!(framed.ends_with(b"\r\n.\r\n") || framed == b".\r\n");
    assert!(message.len() <= limits.max_size);
    assert!(!message.contains(&0));
    assert_crlf_only(message);
    assert!(message.is_empty() || message.ends_with(b"\r\n"));
    let stuffed = dot_stuff(message);
    let first_end = find(&stuffed, b"\r\n.\r\n")
        .map(|i| i + 5)
        .or_else(|| stuffed.starts_with(b".\r\n").then_some(3));
    assert_eq!(
        first_end,
        Some(stuffed.len()),
        "early terminator in {stuffed:?}"
    );
    let roomy = Limits {
        max_size: message.len(),
        max_line: usize::MAX,
    };
    let mut rx = DataReceiver::new(roomy);
    assert_eq!(
        rx.feed(&stuffed),
        Feed::Done {
            consumed: stuffed.len()
        }
    );
    assert_eq!(rx.finish().as_deref(), Ok(message));
}

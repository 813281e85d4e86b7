//! The conversion for upstreams (`smarthost::upstream::downgrade`) on any
//! message the queue could hold: CRLF lines, ending with CRLF.
//!
//! Properties: nothing panics; a message that is converted has no line over
//! 998 octets, and no 8-bit octet when the upstream takes none; the output
//! is the same whatever the chunks it is read in; a message the scan leaves
//! unchanged comes out byte for byte as it went in.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smarthost::upstream::downgrade::{Convert, Scan};

fn run(message: &[u8], seven_bit: bool, chunk: usize) -> Option<(bool, Vec<u8>)> {
    let mut scan = Scan::default();
    message.chunks(chunk).for_each(|c| scan.feed(c));
    let plan = scan.finish(seven_bit).ok()?;
    let changes = plan.changes;
    let mut conv = Convert::new(plan);
    let mut out = Vec::new();
    message.chunks(chunk).for_each(|c| conv.feed(c, &mut out));
    conv.finish(&mut out);
    Some((changes, out))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // As the spool holds it: every line ends in CRLF, no bare CR or LF.
    let mut message = Vec::with_capacity(rest.len() + 2);
    for line in rest.split(|&b| b == b'\n') {
        message.extend(line.iter().filter(|&&b| b != b'\r'));
        message.extend_from_slice(b"\r\n");
    }
    let seven_bit = flags & 1 == 1;
    let chunk = usize::from(flags >> 1).max(1);
    let Some((changes, whole)) = run(&message, seven_bit, usize::MAX) else {
        return;
    };
    let (_, chunked) = run(&message, seven_bit, chunk).expect("the same plan");
    assert_eq!(whole, chunked, "chunks of {chunk}");
    if !changes {
        assert_eq!(whole, message);
        return;
    }
    for line in whole.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "a line of {} octets", line.len());
        assert!(!seven_bit || line.iter().all(|&b| b < 0x80));
    }
});

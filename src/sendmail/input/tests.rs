use super::*;

fn whole(input: &Input) -> Vec<u8> {
    let mut all = input.head.clone();
    if let Some(rest) = &input.rest {
        rest.reader().unwrap().read_to_end(&mut all).unwrap();
    }
    all
}

/// A message with an attachment: LF line ends, a long body.
fn large(lines: usize) -> Vec<u8> {
    let mut m = b"Subject: big\nTo: a@example.net\n\n".to_vec();
    for i in 0..lines {
        m.extend_from_slice(
            format!("line {i} of the attachment, some text to fill it\n").as_bytes(),
        );
    }
    m
}

/// Past the hold, the rest goes to the file; head and rest together are
/// what the whole read gives, and the head holds the header section.
#[test]
fn a_large_message_is_spilled_after_its_header_section() {
    let raw = large(60_000);
    let expected = read_message(&raw[..], true, u64::MAX).unwrap();
    let input = read_spilling(&raw[..], true, u64::MAX, 998).unwrap();
    let rest = input.rest.as_ref().expect("spilled");
    assert!(input.head.len() <= HOLD + CHUNK, "{}", input.head.len());
    assert!(input
        .head
        .starts_with(b"Subject: big\r\nTo: a@example.net\r\n\r\n"));
    assert!(
        input.head.ends_with(b"\r\n"),
        "only whole lines stay behind"
    );
    assert_eq!(input.head.len() as u64 + rest.len, expected.len() as u64);
    assert_eq!(whole(&input), expected);
    assert!(!rest.eight_bit);
    assert_eq!(
        rest.longest_line,
        "line 59999 of the attachment, some text to fill it".len()
    );
    // The rest reads again from its start (one copy per batch).
    assert_eq!(whole(&input), expected);
}

/// A small message, or one whose header section never ends, stays whole
/// in memory.
#[test]
fn small_or_all_header_messages_stay_in_memory() {
    let small = read_spilling(&b"Subject: x\n\nhi\n"[..], true, u64::MAX, 998).unwrap();
    assert!(small.rest.is_none());
    assert_eq!(small.head, b"Subject: x\r\n\r\nhi\r\n");
    let mut headers = Vec::new();
    for i in 0..40_000 {
        headers.extend_from_slice(format!("X-Field-{i}: value\n").as_bytes());
    }
    let all = read_spilling(&headers[..], true, u64::MAX, 998).unwrap();
    assert!(all.rest.is_none());
    assert_eq!(
        all.head,
        read_message(&headers[..], true, u64::MAX).unwrap()
    );
}

/// The size limit and the lone dot work across the spill; 8-bit bytes and
/// long lines of the rest are noted.
#[test]
fn limits_and_the_lone_dot_hold_in_the_rest() {
    let raw = large(60_000);
    let limit = raw.len() as u64;
    assert!(matches!(
        read_spilling(&raw[..], true, limit, 998),
        Err(InputError::TooLarge { .. })
    ));
    let mut dotted = raw.clone();
    dotted.extend_from_slice(".\nnot part of it\n".as_bytes());
    let input = read_spilling(&dotted[..], false, u64::MAX, 998).unwrap();
    assert_eq!(
        whole(&input),
        read_message(&raw[..], true, u64::MAX).unwrap()
    );
    let mut odd = raw;
    odd.extend_from_slice("gr\u{fc}n\n.".as_bytes());
    odd.extend_from_slice(&[b'x'; 2000]);
    odd.push(b'\n');
    let input = read_spilling(&odd[..], true, u64::MAX, 4000).unwrap();
    let rest = input.rest.unwrap();
    assert!(rest.eight_bit);
    assert_eq!(rest.longest_line, 2002, "the stuffing dot counts");
}

/// Output of a script with no header at all (the first line ends the
/// header section, as `prepare` decides) spills like any other.
#[test]
fn body_only_input_is_spilled_too() {
    let mut raw = Vec::new();
    for i in 0..60_000 {
        raw.extend_from_slice(format!("cron output line {i} with some words in it\n").as_bytes());
    }
    let input = read_spilling(&raw[..], true, u64::MAX, 998).unwrap();
    assert!(input.rest.is_some(), "held whole");
    assert_eq!(
        whole(&input),
        read_message(&raw[..], true, u64::MAX).unwrap()
    );
}

/// A line over the limit is refused while it arrives, never held whole.
#[test]
fn an_endless_line_is_refused_as_it_arrives() {
    struct Endless(usize);
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            // Far more than any limit: reaching the end would be the bug.
            assert!(self.0 < 64 << 20, "read on past the line limit");
            buf.fill(b'x');
            Ok(buf.len())
        }
    }
    let r = read_spilling(Endless(0), true, u64::MAX, 998);
    assert!(matches!(r, Err(InputError::LineTooLong { limit: 998 })));
}

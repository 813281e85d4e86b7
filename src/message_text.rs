//! Helpers on the text of a message, shared by the inbound side, delivery,
//! bounces, sendmail and the queue commands: its header section, one header's
//! value, and SMTP transparency (dot-stuffing, RFC 5321 4.5.2).

/// Cap on the returned header section, so a hostile sender cannot make us
/// store and transmit an arbitrarily large bounce.
const MAX_HEADER_SECTION: usize = 64 * 1024;

/// The header section of a raw message (up to and excluding the first empty line), CRLF line endings, bounded to 64 KiB so a giant header cannot blow up a bounce.
pub fn header_section(message: &[u8]) -> &[u8] {
    let mut end = 0;
    while end < message.len() && message[end] != b'\n' && !message[end..].starts_with(b"\r\n") {
        end = match message[end..].iter().position(|&b| b == b'\n') {
            Some(i) => end + i + 1,
            None => message.len(),
        };
    }
    let section = &message[..end];
    if section.len() <= MAX_HEADER_SECTION {
        return section;
    }
    // Cut after a whole line so we never return half a field.
    let bounded = &section[..MAX_HEADER_SECTION];
    let cut = bounded.iter().rposition(|&b| b == b'\n');
    cut.map_or(bounded, |i| &bounded[..=i])
}

/// The unfolded value of the first header field called `name` (lower case), for
/// the Message-ID that `queue find` looks up. Only the header section is read.
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    let mut lines = message.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let field = line.get(..colon).unwrap_or_default();
        if !field.eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let mut value = String::from_utf8_lossy(line.get(colon + 1..).unwrap_or_default())
            .trim()
            .to_string();
        while let Some(next) = lines.peek() {
            if !next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                break;
            }
            let next = next.strip_suffix(b"\r").unwrap_or(next);
            value.push(' ');
            value.push_str(String::from_utf8_lossy(next).trim());
            lines.next();
        }
        // Bounded: it is stored in the envelope and printed in logs.
        let value: String = value
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(512)
            .collect();
        return (!value.is_empty()).then_some(value);
    }
    None
}

/// The message as it goes on the wire after `354`, as slices: RFC 5321 4.5.2
/// transparency (a `.` before every line that starts with one), a CRLF if the
/// body lacks a final one, and the terminating `.CRLF`. No blank line is
/// added to a body that already ends in CRLF.
pub fn stuffed(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let needs_crlf = !body.is_empty() && !body.ends_with(b"\r\n");
    let mut rest = body;
    let mut dot_due = body.first() == Some(&b'.');
    let mut ending: &[&[u8]] = if needs_crlf {
        &[b"\r\n", b".\r\n"]
    } else {
        &[b".\r\n"]
    };
    std::iter::from_fn(move || {
        if dot_due {
            dot_due = false;
            return Some(&b"."[..]);
        }
        if !rest.is_empty() {
            let (run, tail) = match next_dot_line(rest) {
                Some(at) => rest.split_at(at),
                None => (rest, &b""[..]),
            };
            dot_due = !tail.is_empty();
            rest = tail;
            return Some(run);
        }
        let (first, others) = ending.split_first()?;
        ending = others;
        Some(*first)
    })
}

/// Where the next line starting with `.` begins in `bytes`, after offset 0.
fn next_dot_line(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|&b| b == b'\n') {
        let start = from + i + 1;
        if bytes.get(start) == Some(&b'.') {
            return Some(start);
        }
        from = start;
    }
    None
}

/// [`stuffed`] in one buffer, for tests and fuzzing: delivery streams it.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    for part in stuffed(body) {
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_stops_at_the_blank_line_and_is_bounded() {
        let msg = b"A: 1\r\nB: 2\r\n\r\nX\r\n\r\n";
        assert_eq!(header_section(msg), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_section(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2");
        assert_eq!(header_section(b"\r\nbody"), b"");
        let line = format!("X-Big: {}\r\n", "a".repeat(1000));
        let cut = header_section(format!("{}\r\nbody", line.repeat(100)).as_bytes()).len();
        assert!(cut <= MAX_HEADER_SECTION && cut.is_multiple_of(line.len()));
    }

    #[test]
    fn finds_folded_message_id_in_headers_only() {
        let m = b"Subject: x\r\nMessage-ID:\r\n <abc@example.com>\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(
            header_value(m, "message-id").as_deref(),
            Some("<abc@example.com>")
        );
        assert_eq!(
            header_value(b"A: b\r\n\r\nMessage-ID: <x>\r\n", "message-id"),
            None
        );
        assert_eq!(header_value(b"", "message-id"), None);
    }

    /// The line-by-line stuffing this module replaced, as the reference.
    fn reference(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        for line in body.split_inclusive(|&b| b == b'\n') {
            if at_line_start && line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            at_line_start = line.ends_with(b"\n");
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn stuffing() {
        let table: [(&[u8], &[u8]); 8] = [
            (b"a\r\n", b"a\r\n.\r\n"),
            (b".a\r\n..b\r\nc.\r\n", b"..a\r\n...b\r\nc.\r\n.\r\n"),
            (b"", b".\r\n"),
            (b"no newline", b"no newline\r\n.\r\n"),
            (b"x\r\n.\r\n", b"x\r\n..\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b"\r\n.\r\n.\r\n", b"\r\n..\r\n..\r\n.\r\n"),
            (b"a\n.b\r\n", b"a\n..b\r\n.\r\n"),
        ];
        for (body, wire) in table {
            assert_eq!(dot_stuff(body), wire, "{:?}", String::from_utf8_lossy(body));
        }
    }

    /// The body is passed through as slices of itself: only the stuffing
    /// dots and the ending are extra.
    #[test]
    fn stuffing_borrows_the_body() {
        let body = b"Subject: x\r\n\r\n.one\r\ntwo\r\n.\r\n";
        let parts: Vec<&[u8]> = stuffed(body).collect();
        assert_eq!(
            parts,
            [
                &b"Subject: x\r\n\r\n"[..],
                b".",
                b".one\r\ntwo\r\n",
                b".",
                b".\r\n",
                b".\r\n"
            ]
        );
        let range = body.as_ptr_range();
        let borrowed: usize = parts
            .iter()
            .filter(|p| range.contains(&p.as_ptr()))
            .map(|p| p.len())
            .sum();
        assert_eq!(borrowed, body.len());
    }

    /// Agrees with the reference on every body made of the bytes that matter.
    #[test]
    fn stuffing_matches_the_reference() {
        let alphabet = b".\r\na";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..40 {
            for _ in 0..200 {
                let body: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        alphabet[(seed >> 62) as usize]
                    })
                    .collect();
                assert_eq!(dot_stuff(&body), reference(&body), "{body:?}");
            }
        }
    }
}

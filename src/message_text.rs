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

/// The message as it goes on the wire after `354`, given in pieces of any
/// size: RFC 5321 4.5.2 transparency (a `.` before every line that starts
/// with one, wherever the pieces were cut), a CRLF if the body lacks a final
/// one, and the terminating `.CRLF`. No blank line is added to a body that
/// already ends in CRLF.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two bytes of the body so far (0 where there were none).
    last: [u8; 2],
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            last: [0, 0],
            empty: true,
        }
    }
}

impl DotStuffer {
    /// Appends `piece`, stuffed, to `out`: the runs between lines that
    /// start with a dot are copied whole.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = piece.last() else {
            return;
        };
        if self.at_line_start && piece.first() == Some(&b'.') {
            out.push(b'.');
        }
        let mut rest = piece;
        while let Some(at) = next_dot_line(rest) {
            let (run, tail) = rest.split_at(at);
            out.extend_from_slice(run);
            out.push(b'.');
            rest = tail;
        }
        out.extend_from_slice(rest);
        self.at_line_start = last == b'\n';
        self.empty = false;
        self.last = match piece {
            [.., a, b] => [*a, *b],
            _ => [self.last[1], last],
        };
    }

    /// Appends the end of the message to `out`.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if !self.empty && self.last != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Where the next line starting with `.` begins in `bytes`, after offset 0.
fn next_dot_line(bytes: &[u8]) -> Option<usize> {
    static DOT_LINE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n."));
    DOT_LINE.find(bytes).map(|at| at + 1)
}

/// [`DotStuffer`] in one buffer, for a message held whole.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    let mut stuffer = DotStuffer::default();
    stuffer.push(body, &mut out);
    stuffer.finish(&mut out);
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

    /// However the body is cut into pieces, the wire form is the same.
    #[test]
    fn stuffing_does_not_depend_on_the_pieces() {
        let body = b"Subject: x\r\n\r\n.one\r\ntwo\r\n.\r\n.";
        let whole = dot_stuff(body);
        for cut in 0..=body.len() {
            for second in cut..=body.len() {
                let mut out = Vec::new();
                let mut stuffer = DotStuffer::default();
                stuffer.push(&body[..cut], &mut out);
                stuffer.push(&body[cut..second], &mut out);
                stuffer.push(&body[second..], &mut out);
                stuffer.finish(&mut out);
                assert_eq!(out, whole, "cut at {cut} and {second}");
            }
        }
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

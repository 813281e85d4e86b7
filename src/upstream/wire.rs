//! Bytes on a ready upstream session: replies read one at a time, and the
//! message written dot-stuffed.
//!
//! A pipelining server answers a whole command group in one segment, so the
//! reader keeps whatever arrived after the reply it returns for the next read
//! (mail-send's `read` drops it). The message goes out as slices of the stored
//! body with the stuffing dots between them, through one bounded buffer, so an
//! attempt never copies the whole message.

use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::Response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

/// Why no reply could be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The server closed the connection.
    Closed,
    Io(std::io::Error),
    /// Bytes that are no SMTP reply (or one over 4 KiB).
    Unparseable,
}

/// Reads the next reply from `stream`. `unread` holds the bytes received
/// after the previous reply; on success it holds those after this one. A
/// reply split over several segments is put together.
pub(super) async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
    unread: &mut Vec<u8>,
) -> Result<Response<String>, ReadError> {
    let mut parser = ResponseReceiver::default();
    let mut pending = std::mem::take(unread);
    let mut chunk = [0u8; 2048];
    loop {
        if !pending.is_empty() {
            let mut bytes = pending.iter();
            match parser.parse(&mut bytes) {
                Ok(reply) => {
                    *unread = bytes.as_slice().to_vec();
                    return Ok(reply);
                }
                // The parser has taken every byte into its own state.
                Err(smtp_proto::Error::NeedsMoreData { .. }) => pending.clear(),
                Err(_) => return Err(ReadError::Unparseable),
            }
        }
        let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        pending.extend_from_slice(&chunk[..n]);
    }
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

/// Small runs (between dot lines) are gathered into writes of this size;
/// larger ones go to the stream as they are.
const WRITE_BUFFER: usize = 64 * 1024;

/// Writes the message (see [`stuffed`]) and flushes it.
pub(super) async fn write_message<W: AsyncWrite + Unpin>(
    stream: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, stream);
    for part in stuffed(body) {
        out.write_all(part).await?;
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn write_message_streams_the_stuffed_body() {
        let mut body = Vec::new();
        for i in 0..20_000 {
            body.extend_from_slice(format!(".line {i}\r\nplain {i}\r\n").as_bytes());
        }
        let mut out = Vec::new();
        write_message(&mut out, &body).await.expect("write");
        assert_eq!(out, reference(&body));
    }

    async fn replies(wire: &[u8], n: usize) -> (Vec<Result<u16, String>>, Vec<u8>) {
        let mut stream = wire;
        let mut unread = Vec::new();
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(
                read_reply(&mut stream, &mut unread)
                    .await
                    .map(|r| r.code)
                    .map_err(|e| format!("{e:?}")),
            );
        }
        (got, unread)
    }

    /// A pipelined group's replies in one segment come out one by one.
    #[tokio::test]
    async fn replies_in_one_segment_are_read_in_order() {
        let wire = b"250 2.1.0 Ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n354 go\r\n";
        let (got, unread) = replies(wire, 3).await;
        assert_eq!(got, [Ok(250), Ok(550), Ok(354)]);
        assert!(unread.is_empty());
    }

    #[tokio::test]
    async fn leftover_after_the_last_reply_is_kept() {
        let (got, unread) = replies(b"250 Ok\r\n221 Bye\r\n", 1).await;
        assert_eq!(got, [Ok(250)]);
        assert_eq!(unread, b"221 Bye\r\n");
    }

    #[tokio::test]
    async fn eof_and_garbage_are_errors() {
        let (got, _) = replies(b"250 Ok\r\n25", 2).await;
        assert_eq!(got[0], Ok(250));
        assert_eq!(got[1], Err("Closed".to_string()));
        let (got, _) = replies(b"hello\r\n", 1).await;
        assert_eq!(got, [Err("Unparseable".to_string())]);
    }
}

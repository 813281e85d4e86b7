//! Bytes on an upstream session: every reply of the connection, from the
//! greeting to QUIT, read by one reader ([`Wire`]), and the message written
//! dot-stuffed.
//!
//! A pipelining server answers a whole command group in one segment, so the
//! reader keeps whatever arrived after the reply it returns for the next read
//! (mail-send's `read` drops it). The message goes out as it is read from the
//! queue, stuffed on the way, through one bounded buffer, so an attempt never
//! holds the whole message.

use smtp_proto::response::parser::ResponseReceiver;

use std::time::Duration;

use smtp_proto::{EhloResponse, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::message_text::DotStuffer;
use crate::spool::{BodyReader, StoreError};

/// Why no reply could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The server closed the connection.
    Closed,
    Io(std::io::Error),
    /// Bytes that are no SMTP reply (or one over 4 KiB).
    Unparseable,
}

/// A connection's stream and the bytes that arrived after the last reply
/// read: the one reader of its replies.
pub struct Wire<T> {
    pub stream: T,
    pub unread: Vec<u8>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Wire<T> {
    pub fn new(stream: T) -> Wire<T> {
        Wire {
            stream,
            unread: Vec::new(),
        }
    }

    /// The next reply.
    pub async fn read(&mut self) -> Result<Response<String>, ReadError> {
        read_reply(&mut self.stream, &mut self.unread).await
    }

    /// Writes one command line (CRLF included) and reads its reply.
    pub async fn cmd(&mut self, line: &[u8]) -> Result<Response<String>, ReadError> {
        self.stream.write_all(line).await.map_err(ReadError::Io)?;
        self.stream.flush().await.map_err(ReadError::Io)?;
        self.read().await
    }

    /// EHLO: the capabilities of a 250 reply, or the reply that refused it.
    pub async fn ehlo(
        &mut self,
        helo: &str,
    ) -> Result<Result<EhloResponse<String>, Response<String>>, ReadError> {
        let line = format!("EHLO {helo}\r\n");
        self.stream
            .write_all(line.as_bytes())
            .await
            .map_err(ReadError::Io)?;
        self.stream.flush().await.map_err(ReadError::Io)?;
        let mut chunk = [0u8; 2048];
        loop {
            if !self.unread.is_empty() {
                let mut bytes = self.unread.iter();
                match EhloResponse::parse(&mut bytes) {
                    Ok(caps) => {
                        self.unread = bytes.as_slice().to_vec();
                        return Ok(Ok(caps));
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    // Not a 250, or one smtp_proto cannot read as EHLO: read
                    // it as the reply it is. A 250 it cannot read offers
                    // nothing we could use.
                    Err(_) => {
                        let reply = self.read().await?;
                        return Ok(match reply.code {
                            250 => Ok(EhloResponse::default()),
                            _ => Err(reply),
                        });
                    }
                }
            }
            let n = self.stream.read(&mut chunk).await.map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.unread.extend_from_slice(&chunk[..n]);
        }
    }
}

impl ReadError {
    /// `{what}: …` for the log and the attempt's reason.
    pub fn describe(&self, what: &str) -> String {
        match self {
            ReadError::Closed | ReadError::Unparseable => {
                format!("{what}: connection closed or unparseable reply")
            }
            ReadError::Io(e) => format!("{what}: {e}"),
        }
    }
}

/// Reads the next reply from `stream`. `unread` holds the bytes received
/// after the previous reply; on success it holds those after this one. A
/// reply split over several segments is put together.
pub async fn read_reply<S: AsyncRead + Unpin>(
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

/// Stuffed bytes gathered into each write.
const WRITE_BUFFER: usize = 64 * 1024;

/// RFC 5321 4.5.3.2.5: each write of the message may take this long. A
/// whole message may take as long as it needs, so a large one gets through
/// a slow link; a server that stops reading is given up on after this.
pub(super) const DATA_BLOCK: Duration = Duration::from_secs(180);

/// Why the message could not be written.
#[derive(Debug)]
pub(super) enum WriteError {
    Io(std::io::Error),
    /// One write of up to 64 KiB took longer than [`DATA_BLOCK`].
    TimedOut,
    /// The queued body could not be read: the final dot was not sent, so
    /// the server discards what it got when the connection closes.
    Body(StoreError),
}

/// Writes the message, dot-stuffed as it is read (see [`DotStuffer`]),
/// and flushes it: at most one buffer of it in memory.
pub(super) async fn write_message<W: AsyncWrite + Unpin>(
    stream: &mut W,
    body: &mut BodyReader,
    block: Duration,
) -> Result<(), WriteError> {
    let mut stuffer = DotStuffer::default();
    let mut out = Vec::with_capacity(WRITE_BUFFER + 1024);
    while let Some(piece) = body.next().await.map_err(WriteError::Body)? {
        stuffer.push(&piece, &mut out);
        if out.len() >= WRITE_BUFFER {
            write_block(stream, &out, block).await?;
            out.clear();
        }
    }
    stuffer.finish(&mut out);
    write_block(stream, &out, block).await?;
    match tokio::time::timeout(block, stream.flush()).await {
        Ok(r) => r.map_err(WriteError::Io),
        Err(_) => Err(WriteError::TimedOut),
    }
}

async fn write_block<W: AsyncWrite + Unpin>(
    stream: &mut W,
    bytes: &[u8],
    block: Duration,
) -> Result<(), WriteError> {
    match tokio::time::timeout(block, stream.write_all(bytes)).await {
        Ok(r) => r.map_err(WriteError::Io),
        Err(_) => Err(WriteError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_message_streams_the_stuffed_body() {
        let mut body = Vec::new();
        for i in 0..20_000 {
            body.extend_from_slice(format!(".line {i}\r\nplain {i}\r\n").as_bytes());
        }
        let mut out = Vec::new();
        let mut reader = BodyReader::from_bytes(body.clone());
        write_message(&mut out, &mut reader, DATA_BLOCK)
            .await
            .expect("write");
        assert_eq!(out, crate::message_text::dot_stuff(&body));
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

//! Reading a message from `sendmail`'s standard input: every line end (LF,
//! CRLF, a bare CR) becomes CRLF, NUL is refused, the size limit holds while
//! reading, and without `-i` a lone "." ends the input.

use std::io::{ErrorKind, Read};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the message: {0}")]
    Io(#[from] std::io::Error),
    #[error("message contains NUL bytes")]
    Nul,
    #[error("message exceeds the maximum size of {limit} bytes")]
    TooLarge { limit: u64 },
}

const CHUNK: usize = 64 * 1024;

/// Reads the message from `input`, normalizing every line end (LF, CRLF or a
/// bare CR) to CRLF. Unless `ignore_dots`, a line with a single "." ends the
/// input and is not part of the message. Input is not dot-stuffed: ".." stays.
pub fn read_message<R: Read>(
    mut input: R,
    ignore_dots: bool,
    max_size: u64,
) -> Result<Vec<u8>, InputError> {
    let mut norm = Normalizer::new(ignore_dots, max_size);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let len = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => len,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(InputError::Io(e)),
        };
        // A misbehaving reader could claim more than the buffer holds.
        let chunk = buf.get(..len).unwrap_or(&buf);
        if norm.feed(chunk)? == Flow::End {
            return Ok(norm.out);
        }
    }
    norm.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    More,
    End,
}

/// Streaming line-end normalizer. State survives chunk boundaries, so a CRLF
/// split across two reads is still one line end.
pub(super) struct Normalizer {
    out: Vec<u8>,
    line_start: usize,
    pending_cr: bool,
    ignore_dots: bool,
    max_size: u64,
}

impl Normalizer {
    pub(super) fn new(ignore_dots: bool, max_size: u64) -> Self {
        Self {
            out: Vec::new(),
            line_start: 0,
            pending_cr: false,
            ignore_dots,
            max_size,
        }
    }

    pub(super) fn feed(&mut self, mut data: &[u8]) -> Result<Flow, InputError> {
        while !data.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                if data.first() == Some(&b'\n') {
                    data = data.get(1..).unwrap_or_default();
                }
                if self.end_line()? == Flow::End {
                    return Ok(Flow::End);
                }
                continue;
            }
            let special = data.iter().position(|&b| matches!(b, 0 | b'\r' | b'\n'));
            let Some(at) = special else {
                self.out.extend_from_slice(data);
                self.check_size()?;
                break;
            };
            self.out
                .extend_from_slice(data.get(..at).unwrap_or_default());
            self.check_size()?;
            match data.get(at) {
                Some(0) => return Err(InputError::Nul),
                Some(b'\r') => self.pending_cr = true,
                _ => {
                    if self.end_line()? == Flow::End {
                        return Ok(Flow::End);
                    }
                }
            }
            data = data.get(at + 1..).unwrap_or_default();
        }
        Ok(Flow::More)
    }

    fn is_lone_dot(&self) -> bool {
        !self.ignore_dots && self.out.get(self.line_start..) == Some(b".".as_slice())
    }

    fn end_line(&mut self) -> Result<Flow, InputError> {
        if self.is_lone_dot() {
            self.out.truncate(self.line_start);
            return Ok(Flow::End);
        }
        self.out.extend_from_slice(b"\r\n");
        self.line_start = self.out.len();
        self.check_size()?;
        Ok(Flow::More)
    }

    fn check_size(&self) -> Result<(), InputError> {
        // A pending lone "." may yet be the terminator, which is not counted.
        if self.out.len() as u64 > self.max_size && !self.is_lone_dot() {
            return Err(InputError::TooLarge {
                limit: self.max_size,
            });
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Vec<u8>, InputError> {
        if self.pending_cr || self.line_start < self.out.len() {
            self.pending_cr = false;
            self.end_line()?;
        }
        Ok(self.out)
    }
}

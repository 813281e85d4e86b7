//! Reading a message from `sendmail`'s standard input: every line end (LF,
//! CRLF, a bare CR) becomes CRLF, NUL is refused, the size limit holds while
//! reading, and without `-i` a lone "." ends the input.

use std::io::{ErrorKind, Read};

use super::message::field_name_len;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the message: {0}")]
    Io(#[from] std::io::Error),
    #[error("message contains NUL bytes")]
    Nul,
    #[error("message exceeds the maximum size of {limit} bytes")]
    TooLarge { limit: u64 },
    /// Found while reading, before the line is held whole.
    #[error("message has a line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// The part of a large message past its head could not be kept in a
    /// temporary file.
    #[error("cannot keep the message in a temporary file: {0}")]
    Spill(std::io::Error),
}

const CHUNK: usize = 64 * 1024;
/// What stays in memory: a message larger than this (with its whole header
/// section inside it) goes on to a temporary file as it is read.
pub const HOLD: usize = 1024 * 1024;

/// Reads the message from `input`, normalizing every line end (LF, CRLF or a
/// bare CR) to CRLF. Unless `ignore_dots`, a line with a single "." ends the
/// input and is not part of the message. Input is not dot-stuffed: ".." stays.
pub fn read_message<R: Read>(
    input: R,
    ignore_dots: bool,
    max_size: u64,
) -> Result<Vec<u8>, InputError> {
    let mut norm = Normalizer::new(ignore_dots, max_size);
    match each_read(input, |chunk| norm.feed(chunk))? {
        Flow::End => Ok(norm.out),
        Flow::More => norm.finish(),
    }
}

/// Hands `input` to `feed` a read at a time, until its end or until `feed`
/// says [`Flow::End`] (a lone dot); which of the two it was.
fn each_read<R: Read>(
    mut input: R,
    mut feed: impl FnMut(&[u8]) -> Result<Flow, InputError>,
) -> Result<Flow, InputError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let len = match input.read(&mut buf) {
            Ok(0) => return Ok(Flow::More),
            Ok(len) => len,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(InputError::Io(e)),
        };
        // A misbehaving reader could claim more than the buffer holds.
        if feed(buf.get(..len).unwrap_or(&buf))? == Flow::End {
            return Ok(Flow::End);
        }
    }
}

/// A message read from standard input: its start in memory (the whole
/// header section at least, which is all [`super::message::prepare`] edits)
/// and, past [`HOLD`], the rest in an unnamed temporary file, so a large
/// attachment is never held whole.
pub struct Input {
    pub head: Vec<u8>,
    pub rest: Option<Rest>,
}

/// The part of a message past its head, normalized, in a temporary file
/// that vanishes with the process.
pub struct Rest {
    file: std::fs::File,
    pub len: u64,
    pub eight_bit: bool,
    /// The longest line as an SMTP receiver counts it (see
    /// [`crate::dropdir::line_too_long`]).
    pub longest_line: usize,
}

impl Rest {
    fn new() -> std::io::Result<Rest> {
        Ok(Rest {
            file: tempfile::tempfile()?,
            len: 0,
            eight_bit: false,
            longest_line: 0,
        })
    }

    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.eight_bit |= lines.iter().any(|&b| b >= 0x80);
        for line in lines.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let stuffed = usize::from(line.first() == Some(&b'.'));
            self.longest_line = self.longest_line.max(line.len() + stuffed);
        }
        self.len += lines.len() as u64;
        (&self.file).write_all(lines)
    }

    /// The rest from its start, to be read as many times as needed (a copy
    /// per batch of recipients, the drop directory after a failed submit).
    pub fn reader(&self) -> std::io::Result<impl Read + '_> {
        use std::io::{Seek, SeekFrom};
        (&self.file).seek(SeekFrom::Start(0))?;
        Ok(&self.file)
    }
}

/// [`read_message`], keeping at most about [`HOLD`] bytes in memory once
/// the header section is complete, and refusing a line longer than
/// `max_line` (as an SMTP receiver counts it) as soon as it is.
pub fn read_spilling<R: Read>(
    input: R,
    ignore_dots: bool,
    max_size: u64,
    max_line: usize,
) -> Result<Input, InputError> {
    let mut norm = Normalizer::new(ignore_dots, max_size);
    let mut spill = Spill {
        max_line,
        ..Spill::default()
    };
    let flow = each_read(input, |chunk| {
        let flow = norm.feed(chunk)?;
        spill.step(&mut norm)?;
        Ok(flow)
    })?;
    match flow {
        Flow::End => spill.end(norm.out),
        Flow::More => spill.end(norm.finish()?),
    }
}

/// Where [`read_spilling`] puts what leaves memory.
#[derive(Default)]
struct Spill {
    head: Option<Vec<u8>>,
    rest: Option<Rest>,
    max_line: usize,
    /// How far the search for the header section's end has looked, and
    /// whether it found it.
    searched: usize,
    header_done: bool,
}

impl Spill {
    fn step(&mut self, norm: &mut Normalizer) -> Result<(), InputError> {
        self.check_line(norm)?;
        if let Some(rest) = &mut self.rest {
            if norm.out.len() >= CHUNK {
                rest.append(&norm.take_lines()).map_err(InputError::Spill)?;
            }
        } else if norm.out.len() >= HOLD && self.header_complete(&norm.out) {
            self.rest = Some(Rest::new().map_err(InputError::Spill)?);
            self.head = Some(norm.take_lines());
        }
        Ok(())
    }

    /// The line under way, refused once it is too long: never held whole.
    fn check_line(&self, norm: &Normalizer) -> Result<(), InputError> {
        let line = norm.out.get(norm.line_start..).unwrap_or_default();
        let stuffed = usize::from(line.first() == Some(&b'.'));
        if line.len() + stuffed > self.max_line {
            return Err(InputError::LineTooLong {
                limit: self.max_line,
            });
        }
        Ok(())
    }

    /// Whether the header section ends within the complete lines of `out`,
    /// by `prepare`'s rule: at the blank line or at the first line that is
    /// no header field (a leading mbox "From " line aside).
    fn header_complete(&mut self, out: &[u8]) -> bool {
        while !self.header_done {
            let Some(rest) = out.get(self.searched..) else {
                return false;
            };
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                return false;
            };
            let first = self.searched == 0;
            let line = rest.get(..nl).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.searched += nl + 1;
            let continues = !first && matches!(line.first(), Some(b' ' | b'\t'));
            let mbox = first && line.starts_with(b"From ");
            self.header_done = !continues && !mbox && field_name_len(line).is_none();
        }
        true
    }

    fn end(self, out: Vec<u8>) -> Result<Input, InputError> {
        match (self.head, self.rest) {
            (Some(head), Some(mut rest)) => {
                rest.append(&out).map_err(InputError::Spill)?;
                Ok(Input {
                    head,
                    rest: Some(rest),
                })
            }
            _ => Ok(Input {
                head: out,
                rest: None,
            }),
        }
    }
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
    /// Bytes of output already taken by [`Normalizer::take_lines`].
    taken: u64,
    line_start: usize,
    pending_cr: bool,
    ignore_dots: bool,
    max_size: u64,
}

impl Normalizer {
    pub(super) fn new(ignore_dots: bool, max_size: u64) -> Self {
        Self {
            out: Vec::new(),
            taken: 0,
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
        if self.taken + self.out.len() as u64 > self.max_size && !self.is_lone_dot() {
            return Err(InputError::TooLarge {
                limit: self.max_size,
            });
        }
        Ok(())
    }

    /// The complete lines of output so far, leaving the line under way.
    fn take_lines(&mut self) -> Vec<u8> {
        let partial = self.out.split_off(self.line_start);
        let lines = std::mem::replace(&mut self.out, partial);
        self.taken += lines.len() as u64;
        self.line_start = 0;
        lines
    }

    pub(super) fn finish(mut self) -> Result<Vec<u8>, InputError> {
        if self.pending_cr || self.line_start < self.out.len() {
            self.pending_cr = false;
            self.end_line()?;
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests;

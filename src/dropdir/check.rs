//! What a drop file must be to be queued: checked as strictly as an SMTP
//! client's message, the body as it streams past.

use super::{DropEnvelope, Refused, FORMAT_VERSION};
use crate::config::Limits;
use crate::smtp::address::validate_mailbox;

/// A drop file may come from any member of the drop group: check it as strictly
/// as an SMTP client.
#[cfg(test)]
pub(super) fn check(env: &DropEnvelope, body: &[u8], limits: &Limits) -> Result<(), Refused> {
    check_envelope(env, limits)?;
    let mut check = BodyCheck::new(limits);
    check.feed(body)?;
    check.finish().map(|_| ())
}

pub(super) fn check_envelope(env: &DropEnvelope, limits: &Limits) -> Result<(), Refused> {
    if env.version != FORMAT_VERSION {
        return Err(Refused::Version(env.version));
    }
    if !env.sender.is_empty() {
        validate_mailbox(&env.sender).map_err(|e| Refused::Sender {
            address: env.sender.clone(),
            reason: e.to_string(),
        })?;
    }
    if env.recipients.is_empty() {
        return Err(Refused::NoRecipients);
    }
    if env.recipients.len() > limits.max_recipients {
        return Err(Refused::TooManyRecipients(limits.max_recipients));
    }
    for r in &env.recipients {
        validate_mailbox(r).map_err(|e| Refused::Recipient {
            address: r.clone(),
            reason: e.to_string(),
        })?;
    }
    // The ENVID is passed upstream as written: hold it to the SMTP grammar.
    if let Some(envid) = &env.dsn.envid {
        crate::dsn::parse_envid(envid)?;
    }
    Ok(())
}

/// What the SMTP path would accept, checked as the message streams past:
/// CRLF only, no NUL, lines and size within the limits, a final CRLF.
pub(super) struct BodyCheck {
    max_size: u64,
    max_line: usize,
    size: u64,
    prev: u8,
    /// The current line so far, as the SMTP receiver counts it (with the
    /// dot that transparency adds to a line starting with ".").
    line: usize,
    eight_bit: bool,
}

impl BodyCheck {
    pub(super) fn new(limits: &Limits) -> BodyCheck {
        BodyCheck {
            max_size: limits.max_message_size,
            max_line: limits.max_line_length,
            size: 0,
            prev: b'\n',
            line: 0,
            eight_bit: false,
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            return Err(Refused::TooLarge);
        }
        for &b in bytes {
            let bad =
                b == 0 || (self.prev == b'\r' && b != b'\n') || (b == b'\n' && self.prev != b'\r');
            if bad {
                return Err(Refused::BadLineEnding);
            }
            match b {
                b'\n' => self.line = 0,
                b'\r' => {}
                b'.' if self.prev == b'\n' => self.line += 2,
                _ => self.line += 1,
            }
            if self.line > self.max_line {
                return Err(Refused::LineTooLong(self.max_line));
            }
            self.eight_bit |= b >= 0x80;
            self.prev = b;
        }
        Ok(())
    }

    /// Whether the message has 8-bit bytes, once it is whole.
    pub(super) fn finish(self) -> Result<bool, Refused> {
        if self.prev == b'\r' {
            return Err(Refused::BadLineEnding);
        }
        if self.size > 0 && self.prev != b'\n' {
            return Err(Refused::NoFinalCrlf);
        }
        Ok(self.eight_bit)
    }
}

/// Whether a line of the (CRLF, unstuffed) message is longer than `max`
/// octets as the SMTP receiver counts it: without the CRLF, with the dot that
/// transparency adds to a line starting with ".".
pub fn line_too_long(message: &[u8], max: usize) -> bool {
    message.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let stuffed = usize::from(line.first() == Some(&b'.'));
        line.len() + stuffed > max
    })
}

//! Handing a prepared message to the daemon: SMTP over the local submission
//! socket, so the daemon applies exactly the checks and the durable write it
//! applies to network clients. sendmail reports success only after the daemon's
//! `250`, which it sends only after the fsync.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::input::Rest;
use crate::message_text::DotStuffer;

/// Generous: the daemon answers DATA only after its fsync.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Nothing was acknowledged: the drop directory may take the message.
    #[error("{0}")]
    Unreachable(String),
    /// The daemon refused the message or a recipient.
    #[error("{command}: {reply}")]
    Refused { command: &'static str, reply: Reply },
    /// The message could not be read back (from its temporary file) while
    /// it was sent; the daemon got no final dot, so it kept nothing.
    #[error("reading the message back: {0}")]
    Unreadable(std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// One message to submit.
pub struct Submission<'a> {
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// The message's start, in memory.
    pub head: &'a [u8],
    /// The rest of a large message (see [`Rest`]).
    pub rest: Option<&'a Rest>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// `-N`, `-R`, `-V`.
    pub notices: &'a crate::dropdir::Notices,
}

impl Submission<'_> {
    /// The whole message from its first byte, read as it is sent.
    pub fn message(&self) -> std::io::Result<Box<dyn Read + '_>> {
        let head = std::io::Cursor::new(self.head);
        Ok(match self.rest {
            Some(rest) => Box::new(head.chain(rest.reader()?)),
            None => Box::new(head),
        })
    }
}

/// Submits the message; returns the daemon's queue id. With `verbose`, the
/// dialogue is written to stderr.
pub fn submit(socket: &Path, m: &Submission<'_>, verbose: bool) -> Result<String, SubmitError> {
    let lost = |e: std::io::Error| SubmitError::Unreachable(e.to_string());
    let stream = UnixStream::connect(socket)
        .map_err(|e| SubmitError::Unreachable(format!("{}: {e}", socket.display())))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(lost)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(lost)?;
    let mut writer = stream.try_clone().map_err(lost)?;
    let mut reader = BufReader::new(stream);
    let mut conv = Conversation {
        reader: &mut reader,
        verbose,
    };
    conv.expect("greeting", 220)?;
    let say = |w: &mut UnixStream, line: &str| -> Result<(), SubmitError> {
        if verbose {
            eprintln!(">>> {line}");
        }
        w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\r\n"))
            .map_err(lost)
    };
    say(&mut writer, "EHLO localhost")?;
    conv.expect("EHLO", 250)?;
    let mut mail = format!("MAIL FROM:<{}>", m.sender);
    if m.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if m.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str(&m.notices.mail.esmtp_params());
    say(&mut writer, &mail)?;
    conv.expect("MAIL FROM", 250)?;
    let notify = match m.notices.notify {
        Some(n) => format!(" NOTIFY={}", n.value()),
        None => String::new(),
    };
    for r in m.recipients {
        say(&mut writer, &format!("RCPT TO:<{r}>{notify}"))?;
        conv.expect("RCPT TO", 250)?;
    }
    say(&mut writer, "DATA")?;
    conv.expect("DATA", 354)?;
    send_message(&mut writer, m)?;
    let reply = conv.expect("end of data", 250)?;
    let _ = say(&mut writer, "QUIT");
    let id = reply
        .text
        .rsplit_once("queued as ")
        .map(|(_, id)| id.trim().to_string())
        .unwrap_or_default();
    Ok(id)
}

/// The message, dot-stuffed as it is read, in writes of [`CHUNK`] bytes.
fn send_message(writer: &mut UnixStream, m: &Submission<'_>) -> Result<(), SubmitError> {
    let lost = |e: std::io::Error| SubmitError::Unreachable(e.to_string());
    let mut message = m.message().map_err(SubmitError::Unreadable)?;
    let mut stuffer = DotStuffer::default();
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + 1024);
    loop {
        let n = match message.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SubmitError::Unreadable(e)),
        };
        stuffer.push(buf.get(..n).unwrap_or_default(), &mut out);
        writer.write_all(&out).map_err(lost)?;
        out.clear();
    }
    stuffer.finish(&mut out);
    writer.write_all(&out).map_err(lost)
}

const CHUNK: usize = 64 * 1024;

struct Conversation<'a, R> {
    reader: &'a mut BufReader<R>,
    verbose: bool,
}

impl<R: Read> Conversation<'_, R> {
    /// Reads a (multi-line) reply; anything but `want` is a refusal, except
    /// that a vanished daemon means nothing was acknowledged.
    fn expect(&mut self, command: &'static str, want: u16) -> Result<Reply, SubmitError> {
        let mut text = Vec::new();
        let code = loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| SubmitError::Unreachable(format!("{command}: {e}")))?;
            if n == 0 {
                return Err(SubmitError::Unreachable(format!(
                    "{command}: the daemon closed the connection"
                )));
            }
            if self.verbose {
                eprint!("<<< {line}");
            }
            let line = line.trim_end();
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| {
                SubmitError::Unreachable(format!("{command}: malformed reply {line:?}"))
            })?;
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                break code;
            }
        };
        let reply = Reply {
            code,
            text: text.join(" "),
        };
        if code == want {
            Ok(reply)
        } else if code == 421 {
            // The daemon is shutting down: nothing was acknowledged.
            Err(SubmitError::Unreachable(format!("{command}: {reply}")))
        } else {
            Err(SubmitError::Refused { command, reply })
        }
    }
}

/// `sendmail -bs`: the caller speaks SMTP on stdin/stdout; relay it to the
/// daemon's submission socket unchanged.
pub fn proxy(socket: &Path) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    let mut to_daemon = stream.try_clone()?;
    let mut from_daemon = stream;
    let upstream = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let r = std::io::copy(&mut stdin, &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
        r
    });
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from_daemon.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stdout.write_all(buf.get(..n).unwrap_or_default())?;
        stdout.flush()?;
    }
    // The daemon ended the session (QUIT); stdin may stay open, don't wait on it.
    drop(upstream);
    Ok(())
}

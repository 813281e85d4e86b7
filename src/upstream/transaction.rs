//! One mail transaction on a ready session (RFC 5321 3.3): MAIL, a RCPT per
//! recipient, DATA, the message; an [`Outcome`] per recipient.
//!
//! With PIPELINING (RFC 2920) MAIL, every RCPT and DATA leave in one write
//! and their replies are read in order; without it each command waits for its
//! reply. Both run the same loop, so every combination of replies means the
//! same in both. A transaction leaves the session in one of three states:
//! ready for the next MAIL (it ended with the reply to the data, or sent
//! nothing), in step but holding a half-done transaction (RSET first: see
//! [`Connection::reset`]), or no use any more.

use std::fmt::Write as _;
use std::time::Duration;

use smtp_proto::{Response, EXT_8BIT_MIME, EXT_DSN, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8};
use tokio::io::AsyncWriteExt;

use super::wire::{self, ReadError, WriteError};
use super::{timed_out, Connection, Transaction};
use crate::config::Timeouts;
use crate::dsn::{MailDsn, RcptDsn};
use crate::outcome::{self, Outcome};
use crate::spool::BodyReader;

/// One message's envelope, as it goes upstream.
pub struct Outgoing<'a> {
    pub sender: &'a str,
    pub recipients: Vec<(&'a str, RcptDsn)>,
    pub smtputf8: bool,
    pub eight_bit: bool,
    pub dsn: &'a MailDsn,
}

/// Commands per write when pipelining. RFC 2920 3.2 (deadlock): the client
/// must read the replies before they fill the socket buffers; 128 commands
/// and their replies stay well inside them, and a message has more
/// recipients than that only if `max_recipients` was raised.
const GROUP: usize = 128;

/// A reply that did not come: the session is no use any more.
struct Lost {
    reason: String,
    /// The server closed the connection (or said it would, with 421), as
    /// opposed to falling silent.
    closed: bool,
}

/// Where the envelope (MAIL, RCPTs, DATA) left the transaction.
enum Envelope {
    /// DATA got 354: the message is due.
    GoAhead,
    /// Over before the message, the session still in step. `verdict` is for
    /// the recipients still open (DATA was refused), if any.
    Refused { verdict: Option<Outcome> },
    /// No reply to command `at` (0 is MAIL): the recipients still open are
    /// deferred.
    Lost { lost: Lost, at: usize },
}

/// The replies so far. `rcpts[i]` is None while recipient `i` has no verdict:
/// accepted and waiting for the one after the data, or not answered yet.
struct Replies {
    rcpts: Vec<Option<Outcome>>,
    mail_refused: bool,
    data: Option<Response<String>>,
}

impl Replies {
    fn accepted(&self) -> bool {
        !self.mail_refused && self.rcpts.iter().any(Option::is_none)
    }

    /// Takes the reply to command `at`: MAIL, RCPT `at - 1`, or DATA.
    fn take(&mut self, at: usize, reply: Response<String>) {
        let n = self.rcpts.len();
        if at == 0 {
            if !is_positive(&reply) {
                // RFC 5321 4.1.1.2: without a sender there is no transaction;
                // the RCPTs and DATA pipelined after it are refused (503) and
                // say nothing about the recipients.
                self.rcpts = vec![Some(outcome::from_reply(&reply)); n];
                self.mail_refused = true;
            }
        } else if at <= n {
            if !self.mail_refused {
                self.rcpts[at - 1] = (!is_positive(&reply)).then(|| outcome::from_reply(&reply));
            }
        } else {
            self.data = Some(reply);
        }
    }

    /// Whether the lock-step client stops before sending command `next`: there
    /// is nothing left to learn once MAIL is refused, and DATA is not sent
    /// when every recipient was refused.
    fn stop_before(&self, next: usize) -> bool {
        self.mail_refused || (next == self.rcpts.len() + 1 && !self.accepted())
    }
}

fn is_positive(reply: &Response<String>) -> bool {
    (200..300).contains(&reply.code)
}

/// The verdict of a refused DATA for the accepted recipients. A 2xx is not
/// the 354 asked for: not delivered, not final.
fn data_refused(reply: &Response<String>) -> Outcome {
    match outcome::from_reply(reply) {
        Outcome::Sent { .. } => Outcome::deferred(format!(
            "DATA: unexpected reply {}",
            outcome::reply_text(reply)
        )),
        other => other,
    }
}

/// An outcome per recipient: those decided keep theirs, the others get `rest`.
fn settle(rcpts: Vec<Option<Outcome>>, rest: &Outcome) -> Vec<Outcome> {
    rcpts
        .into_iter()
        .map(|o| o.unwrap_or_else(|| rest.clone()))
        .collect()
}

/// `RCPT TO` for `RCPT TO:<a@b>`: timeouts and errors name the command.
fn verb(line: &str) -> &str {
    match line.split_once(':') {
        Some((verb, _)) => verb,
        None => line.trim_end(),
    }
}

impl Connection {
    /// Readies a reused connection for the next message: RSET, but only if
    /// the last transaction was abandoned half-way. One that ended with the
    /// reply to its data leaves the session ready for MAIL (RFC 5321 3.3,
    /// 4.1.4). False if the session is no use any more.
    pub async fn reset(&mut self, t: &Timeouts) -> bool {
        if !self.needs_reset {
            return true;
        }
        match self.command("RSET\r\n", t.upstream_command).await {
            Ok(r) if r.code == 250 => {
                self.needs_reset = false;
                true
            }
            _ => false,
        }
    }

    /// One transaction: MAIL, RCPT per recipient, DATA, the message. `body`
    /// must have CRLF line endings (the queue only holds such messages).
    pub async fn send(
        &mut self,
        m: &Outgoing<'_>,
        body: &mut BodyReader,
        t: &Timeouts,
    ) -> Transaction {
        let reused = self.messages > 0;
        self.messages += 1;
        let recipients = &m.recipients;
        let size = usize::try_from(body.size()).unwrap_or(usize::MAX);
        let params = match self.mail_params(size, m) {
            Ok(p) => p,
            // Nothing was sent: the session is as ready as it was.
            Err(o) => return Transaction::all(o, recipients.len(), true),
        };
        let mut lines = Vec::with_capacity(recipients.len() + 2);
        lines.push(format!("MAIL FROM:<{}>{params}\r\n", m.sender));
        let dsn = self.takes_dsn();
        lines.extend(recipients.iter().map(|(r, d)| {
            let mut line = format!("RCPT TO:<{r}>");
            if dsn {
                line.push_str(&d.esmtp_params());
            }
            line + "\r\n"
        }));
        lines.push("DATA\r\n".to_string());
        let mut replies = Replies {
            rcpts: vec![None; recipients.len()],
            mail_refused: false,
            data: None,
        };
        self.needs_reset = true;
        match self.envelope(&lines, &mut replies, t).await {
            Envelope::GoAhead => self.data(replies, body, t).await,
            Envelope::Refused { verdict } => {
                let rest = verdict.unwrap_or_else(|| Outcome::deferred("not sent"));
                Transaction {
                    outcomes: settle(replies.rcpts, &rest),
                    reusable: self.client.unread.is_empty(),
                    stale: false,
                    unreadable: None,
                }
            }
            Envelope::Lost { lost, at } => Transaction {
                outcomes: settle(replies.rcpts, &Outcome::deferred(lost.reason)),
                reusable: false,
                // Nothing about this message was heard: a kept connection
                // that the server closed while it idled.
                stale: reused && lost.closed && at == 0,
                unreadable: None,
            },
        }
    }

    /// Whether this session passes RFC 3461 parameters on: its EHLO offered
    /// DSN. Without it, the relay itself owes a "relayed" notice to whoever
    /// asked NOTIFY=SUCCESS.
    pub fn takes_dsn(&self) -> bool {
        self.caps.has_capability(EXT_DSN)
    }

    /// Whether this session takes 8-bit octets (RFC 6152).
    pub fn takes_8bit(&self) -> bool {
        self.caps.has_capability(EXT_8BIT_MIME)
    }

    /// The MAIL parameters, or why the message cannot go to this server.
    fn mail_params(&self, size: usize, m: &Outgoing<'_>) -> Result<String, Outcome> {
        let (smtputf8, eight_bit) = (m.smtputf8, m.eight_bit);
        let mut params = String::new();
        if smtputf8 {
            if !self.caps.has_capability(EXT_SMTP_UTF8) {
                return Err(Outcome::bounced(
                    "5.6.7",
                    "the smarthost does not support SMTPUTF8, which this message needs",
                ));
            }
            params.push_str(" SMTPUTF8");
        }
        if eight_bit && self.caps.has_capability(EXT_8BIT_MIME) {
            params.push_str(" BODY=8BITMIME");
        }
        if self.caps.has_capability(EXT_SIZE) {
            if self.caps.size > 0 && size > self.caps.size {
                return Err(Outcome::bounced(
                    "5.3.4",
                    format!(
                        "message of {size} bytes exceeds the smarthost's limit of {} bytes",
                        self.caps.size
                    ),
                ));
            }
            let _ = write!(params, " SIZE={size}");
        }
        // RFC 3461 5.2.1: passed on unchanged, and only what the sender gave.
        if self.takes_dsn() {
            params.push_str(&m.dsn.esmtp_params());
        }
        Ok(params)
    }

    /// Sends `lines` (MAIL, RCPTs, DATA) and reads their replies in order:
    /// all at once when the server pipelines (RFC 2920 3.1: DATA ends the
    /// group), else one at a time. Every reply to a command sent is read, so
    /// the session stays in step whatever they say.
    async fn envelope(
        &mut self,
        lines: &[String],
        replies: &mut Replies,
        t: &Timeouts,
    ) -> Envelope {
        let group = if self.caps.has_capability(EXT_PIPELINING) {
            GROUP
        } else {
            1
        };
        let limit = t.upstream_command;
        let mut sent = 0;
        for (at, line) in lines.iter().enumerate() {
            if at == sent {
                if replies.stop_before(at) {
                    break;
                }
                let end = (at + group).min(lines.len());
                if let Err(lost) = self.write_lines(&lines[at..end], limit).await {
                    return Envelope::Lost { lost, at };
                }
                sent = end;
            }
            match self.read(verb(line), limit).await {
                Ok(reply) => replies.take(at, reply),
                Err(lost) => return Envelope::Lost { lost, at },
            }
        }
        match &replies.data {
            Some(r) if r.code == 354 => Envelope::GoAhead,
            Some(r) => Envelope::Refused {
                verdict: Some(data_refused(r)),
            },
            None => Envelope::Refused { verdict: None },
        }
    }

    /// After 354: the message, then the verdict for the accepted recipients.
    async fn data(&mut self, replies: Replies, body: &mut BodyReader, t: &Timeouts) -> Transaction {
        let stream = &mut self.client.stream;
        let written = if replies.accepted() {
            wire::write_message(stream, body, wire::DATA_BLOCK).await
        } else {
            // RFC 2920 3.1: a pipelining client must read the reply to
            // DATA even when every recipient (or MAIL) was refused; if
            // the server said 354 all the same, the client "should send
            // a single dot". The message itself must not go to nobody,
            // and the reply to the dot says nothing about any recipient.
            let dot = async {
                stream.write_all(b".\r\n").await?;
                stream.flush().await
            };
            match tokio::time::timeout(wire::DATA_BLOCK, dot).await {
                Ok(r) => r.map_err(WriteError::Io),
                Err(_) => Err(WriteError::TimedOut),
            }
        };
        let reason = match written {
            Ok(()) => None,
            Err(WriteError::Io(e)) => Some(format!("sending message: {e}")),
            Err(WriteError::TimedOut) => Some(format!(
                "sending message: a 64 KiB write took over {}s",
                wire::DATA_BLOCK.as_secs()
            )),
            Err(WriteError::Body(e)) => {
                let reason = format!("reading the queued message: {e}");
                let mut tr = Transaction::settled(replies.rcpts, Outcome::deferred(reason), false);
                tr.unreadable = Some(e);
                return tr;
            }
        };
        if let Some(reason) = reason {
            return Transaction::settled(replies.rcpts, Outcome::deferred(reason), false);
        }
        // A connection lost here may have delivered: deferring risks a
        // duplicate, which is acceptable; anything else risks a loss, which
        // is not.
        match self.read("after end of data", t.upstream_data).await {
            Err(lost) => Transaction::settled(replies.rcpts, Outcome::deferred(lost.reason), false),
            Ok(reply) => {
                // The reply to the end of data ends the transaction, whatever
                // it says (RFC 5321 4.1.1.4).
                self.needs_reset = false;
                let reusable = self.client.unread.is_empty();
                Transaction::settled(replies.rcpts, outcome::from_reply(&reply), reusable)
            }
        }
    }

    /// Sends one command and reads its reply.
    async fn command(&mut self, line: &str, limit: Duration) -> Result<Response<String>, Lost> {
        self.write_lines(std::slice::from_ref(&line.to_string()), limit)
            .await?;
        self.read(verb(line), limit).await
    }

    /// Writes `lines` in one go; an error names the first command.
    async fn write_lines(&mut self, lines: &[String], limit: Duration) -> Result<(), Lost> {
        let what = lines.first().map_or("", |l| verb(l));
        let group: String = lines.concat();
        let stream = &mut self.client.stream;
        let write = async {
            stream.write_all(group.as_bytes()).await?;
            stream.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Lost {
                reason: format!("{what}: {e}"),
                closed: true,
            }),
            Err(_) => Err(Lost {
                reason: timed_out(what, limit),
                closed: false,
            }),
        }
    }

    /// Reads the reply to `what` within `limit`. A 421 is the server closing
    /// the connection (RFC 5321 3.8): nothing else will come.
    async fn read(&mut self, what: &str, limit: Duration) -> Result<Response<String>, Lost> {
        let read = self.client.read();
        let (reason, closed) = match tokio::time::timeout(limit, read).await {
            Ok(Ok(r)) if r.code == 421 => (outcome::reply_text(&r), true),
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(ReadError::Closed | ReadError::Unparseable)) => (
                format!("{what}: connection closed or unparseable reply"),
                true,
            ),
            Ok(Err(ReadError::Io(e))) => (format!("{what}: {e}"), true),
            Err(_) => (timed_out(what, limit), false),
        };
        Err(Lost { reason, closed })
    }
}

impl Transaction {
    fn all(o: Outcome, n: usize, reusable: bool) -> Transaction {
        Transaction {
            outcomes: vec![o; n],
            reusable,
            stale: false,
            unreadable: None,
        }
    }

    fn settled(rcpts: Vec<Option<Outcome>>, rest: Outcome, reusable: bool) -> Transaction {
        Transaction {
            outcomes: settle(rcpts, &rest),
            reusable,
            stale: false,
            unreadable: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Response<String> {
        Response {
            code,
            esc: [0, 0, 0],
            message: text.to_string(),
        }
    }

    fn replies(n: usize) -> Replies {
        Replies {
            rcpts: vec![None; n],
            mail_refused: false,
            data: None,
        }
    }

    #[test]
    fn verbs_name_the_command() {
        assert_eq!(verb("MAIL FROM:<a@b> SIZE=1\r\n"), "MAIL FROM");
        assert_eq!(verb("RCPT TO:<a@b>\r\n"), "RCPT TO");
        assert_eq!(verb("DATA\r\n"), "DATA");
        assert_eq!(verb("RSET\r\n"), "RSET");
    }

    #[test]
    fn settle_keeps_decided_outcomes() {
        let bounced = Outcome::bounced("5.1.1", "no");
        let rest = Outcome::deferred("later");
        assert_eq!(
            settle(vec![None, Some(bounced.clone()), None], &rest),
            [rest.clone(), bounced, rest]
        );
    }

    /// Mixed RCPT replies: each refused recipient keeps its own outcome; the
    /// accepted one waits for the data.
    #[test]
    fn rcpt_replies_decide_each_recipient() {
        let mut r = replies(3);
        r.take(0, reply(250, "ok"));
        r.take(1, reply(250, "ok"));
        r.take(2, reply(451, "later"));
        r.take(3, reply(550, "unknown"));
        r.take(4, reply(354, "go"));
        assert!(r.accepted() && !r.mail_refused);
        let states: Vec<Option<&str>> = r
            .rcpts
            .iter()
            .map(|o| o.as_ref().map(Outcome::status_word))
            .collect();
        assert_eq!(states, [None, Some("deferred"), Some("bounced")]);
        assert_eq!(r.data.map(|d| d.code), Some(354));
    }

    /// A refused MAIL decides everyone; the 503s to the pipelined RCPTs (or a
    /// server's odd 250) change nothing.
    #[test]
    fn refused_mail_decides_every_recipient() {
        let mut r = replies(2);
        r.take(0, reply(451, "greylisted"));
        r.take(1, reply(503, "need MAIL"));
        r.take(2, reply(250, "ok?"));
        r.take(3, reply(503, "need RCPT"));
        assert!(!r.accepted());
        for o in &r.rcpts {
            assert_eq!(o.as_ref().map(Outcome::detail), Some("451 greylisted"));
        }
    }

    /// Lock-step stops after a refused MAIL, and before DATA when no
    /// recipient was accepted; otherwise it goes on.
    #[test]
    fn lock_step_stops_when_nothing_is_left_to_learn() {
        let mut r = replies(2);
        assert!(!r.stop_before(0));
        r.take(0, reply(250, "ok"));
        assert!(!r.stop_before(1) && !r.stop_before(2));
        r.take(1, reply(550, "no"));
        r.take(2, reply(550, "no"));
        assert!(r.stop_before(3));

        let mut r = replies(2);
        r.take(0, reply(250, "ok"));
        r.take(1, reply(550, "no"));
        r.take(2, reply(250, "ok"));
        assert!(!r.stop_before(3));

        let mut r = replies(2);
        r.take(0, reply(550, "no"));
        assert!(r.stop_before(1));
    }

    #[test]
    fn refused_data_verdict() {
        assert_eq!(data_refused(&reply(554, "no")).status_word(), "bounced");
        assert_eq!(data_refused(&reply(451, "later")).status_word(), "deferred");
        assert_eq!(
            data_refused(&reply(250, "odd")),
            Outcome::deferred("DATA: unexpected reply 250 odd")
        );
    }
}

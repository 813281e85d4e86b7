//! One inbound SMTP session (RFC 5321): the I/O loop around the pure grammar in
//! [`super::grammar`] and the DATA receiver in [`super::data`].
//!
//! Replies are buffered and flushed only when the client has nothing more
//! pipelined (RFC 2920), so a pipelining client gets one write per batch. The
//! `250` after DATA is sent only once the message is fsynced in the queue.

use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::grammar::{self, Body, Command, Reply};
use crate::config::Config;
use crate::intake::Peer;
use crate::intake::{Intake, Rcpt};

/// RFC 5321 allows 512 octets a command line; extensions (SMTPUTF8 addresses,
/// parameters) make real lines longer, so allow some room before refusing.
const MAX_COMMAND_LINE: usize = 2048;
/// After this many refused commands the client is cut off, as Postfix does.
const MAX_ERRORS: u32 = 20;
/// A message must arrive at least this fast on average (bytes a second, as
/// Postfix's `smtpd_min_data_rate`): DATA may take the data timeout plus a second
/// for every this many bytes received. Without it a client trickling a byte just
/// within each timeout would hold its connection slot for ever (slowloris).
const MIN_DATA_RATE: u64 = 500;

mod auth;
mod data_phase;

struct Transaction {
    from: String,
    smtputf8: bool,
    eight_bit: bool,
    dsn: crate::dsn::MailDsn,
    rcpts: Vec<Rcpt>,
}

pub struct Session<R, W> {
    intake: Intake,
    /// The settings the session started with: a reload applies to new sessions.
    config: Arc<Config>,
    peer: Peer,
    trusted: bool,
    reader: BufReader<R>,
    writer: W,
    out: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    /// On a submission listener: its TLS, password check and throttle.
    sub: Option<Arc<super::submission::SubmissionCtx>>,
    /// The connection is encrypted (STARTTLS done, or implicit TLS).
    tls: bool,
    /// Who logged in (AUTH), once someone has.
    identity: Option<String>,
    auth_failures: u32,
    /// STARTTLS was accepted: the caller takes the connection for the
    /// handshake.
    upgrade: bool,
}

enum Line {
    Command(Vec<u8>),
    TooLong,
    Eof,
    Timeout,
    Stopping,
}

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Command,
    End,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    pub fn new(intake: Intake, peer: Peer, reader: R, writer: W) -> Self {
        let config = intake.config();
        let trusted = match &peer {
            Peer::Tcp(addr) => config.is_trusted(addr.ip()),
            // Local users may submit, as they may through sendmail.
            Peer::Local { .. } => true,
        };
        Session {
            intake,
            config,
            peer,
            trusted,
            reader: BufReader::with_capacity(16 * 1024, reader),
            writer,
            out: Vec::with_capacity(1024),
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            sub: None,
            tls: false,
            identity: None,
            auth_failures: 0,
            upgrade: false,
        }
    }

    /// A session on a submission listener: nobody relays without logging
    /// in, whatever network it comes from.
    pub fn submission(
        intake: Intake,
        peer: Peer,
        reader: R,
        writer: W,
        ctx: Arc<super::submission::SubmissionCtx>,
        tls: bool,
    ) -> Self {
        let mut s = Self::new(intake, peer, reader, writer);
        s.trusted = false;
        s.sub = Some(ctx);
        s.tls = tls;
        s
    }

    fn reply(&mut self, r: Reply) {
        let wire = r.to_wire(self.esmtp);
        self.out.extend_from_slice(&wire);
    }

    fn send(&mut self, code: u16, enhanced: &'static str, text: impl Into<String>) {
        self.reply(Reply::new(code, Some(enhanced), text));
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        self.writer.flush().await
    }

    /// Runs the session to its end. I/O errors just end it: nothing half-received
    /// was ever acknowledged. `greet`: send the 220 (not after STARTTLS,
    /// RFC 3207). Returns the connection when the client's STARTTLS was
    /// accepted, for the handshake.
    pub async fn run(mut self, greet: bool) -> Option<(R, W)> {
        if greet {
            let host = self.config.hostname.clone();
            // The greeting has no enhanced code (RFC 2034 applies after EHLO).
            self.out = format!("220 {host} ESMTP smarthost\r\n").into_bytes();
        }
        if let Err(e) = self.serve().await {
            tracing::debug!(peer = %self.peer, error = %e, "session ended");
            return None;
        }
        self.upgrade
            .then(|| (self.reader.into_inner(), self.writer))
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        loop {
            if self.reader.buffer().is_empty() {
                self.flush().await?;
            }
            let Some(line) = self.next_line().await? else {
                return self.flush().await;
            };
            let cmd = match grammar::parse_command(&line) {
                Ok(c) => c,
                Err(e) => {
                    self.reply(e.reply());
                    if self.too_many_errors() {
                        return self.flush().await;
                    }
                    continue;
                }
            };
            if self.command(cmd).await? == Next::End {
                return self.flush().await;
            }
        }
    }

    /// The next command line, or None when the session ends (the client
    /// left, timed out, or the daemon is stopping; the reply is queued).
    async fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let host = self.config.hostname.clone();
            match self.read_line().await? {
                Line::Command(l) => return Ok(Some(l)),
                Line::Eof => return Ok(None),
                Line::Timeout => {
                    self.send(421, "4.4.2", format!("{host} Error: timeout exceeded"));
                    return Ok(None);
                }
                Line::Stopping => {
                    let text = format!("{host} Service shutting down, try again later");
                    self.send(421, "4.3.2", text);
                    return Ok(None);
                }
                Line::TooLong => {
                    self.send(500, "5.5.2", "Error: line too long");
                    // It counts like any other error: endless long lines
                    // end the session as endless bad commands do.
                    if self.too_many_errors() {
                        self.flush().await?;
                        return Ok(None);
                    }
                    // Answered now unless more pipelined commands wait.
                    if self.reader.buffer().is_empty() {
                        self.flush().await?;
                    }
                }
            }
        }
    }

    /// Counts a command error; true (with the 421 queued) once there were
    /// too many.
    fn too_many_errors(&mut self) -> bool {
        self.errors += 1;
        if self.errors < MAX_ERRORS {
            return false;
        }
        self.send(421, "4.7.0", "Error: too many errors");
        true
    }

    /// One command, by its verb.
    async fn command(&mut self, cmd: Command) -> std::io::Result<Next> {
        if let Some(refusal) = self.before_tls(&cmd) {
            self.send(530, "5.7.0", refusal);
            return Ok(Next::Command);
        }
        match cmd {
            Command::Ehlo(name) => self.ehlo(name),
            Command::Helo(name) => self.helo(name),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, dsn } => self.rcpt(to, dsn),
            Command::Data => {
                if !self.data().await? {
                    return Ok(Next::End);
                }
            }
            Command::Rset => self.rset(),
            Command::Noop => self.send(250, "2.0.0", "Ok"),
            Command::Quit => {
                self.send(221, "2.0.0", "Bye");
                return Ok(Next::End);
            }
            Command::Vrfy => self.send(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Command::Help => self.send(214, "2.0.0", "See RFC 5321"),
            Command::StartTls => return Ok(self.starttls()),
            Command::Auth { mechanism, initial } => return self.auth(&mechanism, initial).await,
        }
        Ok(Next::Command)
    }

    /// EHLO (RFC 5321 4.1.1.1): a new session state and the extensions.
    fn ehlo(&mut self, name: String) {
        self.esmtp = true;
        self.helo = Some(name);
        self.tx = None;
        let l = &self.config.limits;
        let mut text = format!(
            "250-{}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n",
            self.config.hostname, l.max_message_size
        );
        text.push_str(self.auth_extensions());
        text.push_str("250 ENHANCEDSTATUSCODES\r\n");
        self.out.extend_from_slice(text.as_bytes());
    }

    /// HELO: plain SMTP, no extensions (and so no enhanced codes).
    fn helo(&mut self, name: String) {
        self.esmtp = false;
        self.helo = Some(name);
        self.tx = None;
        let text = format!("250 {}\r\n", self.config.hostname);
        self.out.extend_from_slice(text.as_bytes());
    }

    /// RSET (RFC 5321 4.1.1.5): the transaction is abandoned, the session stays.
    fn rset(&mut self) {
        self.tx = None;
        self.send(250, "2.0.0", "Ok");
    }

    fn mail(&mut self, from: String, params: grammar::MailParams) {
        if self.helo.is_none() {
            return self.send(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.tx.is_some() {
            return self.send(503, "5.5.1", "Error: nested MAIL command");
        }
        let max = self.config.limits.max_message_size;
        if params.size.is_some_and(|s| s > max) {
            return self.send(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        }
        if let Err((code, enhanced, text)) = self.sender_allowed(&from) {
            return self.send(code, enhanced, text);
        }
        let smtputf8 = params.smtputf8 || grammar::needs_smtputf8(&from);
        self.tx = Some(Transaction {
            from,
            smtputf8,
            eight_bit: params.body == Some(Body::EightBitMime),
            dsn: params.dsn,
            rcpts: Vec::new(),
        });
        self.send(250, "2.1.0", "Ok");
    }

    fn rcpt(&mut self, to: String, dsn: crate::dsn::RcptDsn) {
        let max = self.config.limits.max_recipients;
        let trusted = self.trusted || self.identity.is_some();
        let Some(tx) = self.tx.as_mut() else {
            return self.send(503, "5.5.1", "Error: need MAIL command");
        };
        if !trusted {
            // Never an open intake: only trusted networks may send anywhere.
            return self.send(554, "5.7.1", format!("<{to}>: Relay access denied"));
        }
        // RFC 6531 3.4: a non-ASCII address only in an SMTPUTF8 transaction.
        if grammar::needs_smtputf8(&to) && !tx.smtputf8 {
            return self.send(
                553,
                "5.6.7",
                "Non-ASCII recipient address requires SMTPUTF8",
            );
        }
        // Local names (root@<this host>, postmaster) go where /etc/aliases
        // and the rest of [local] say.
        let resolved = match Rcpt::resolved(&self.config.local, &to, dsn) {
            Ok(r) => r,
            Err(e) if e.is_temporary() => {
                tracing::error!("local aliases cannot be used: {e}");
                return self.send(451, "4.3.0", format!("<{to}>: local aliases unavailable"));
            }
            Err(e) => return self.send(550, "5.1.1", format!("<{to}>: {e}")),
        };
        if tx.rcpts.len() + resolved.len() > max {
            return self.send(452, "4.5.3", "Error: too many recipients");
        }
        for r in resolved {
            if !tx
                .rcpts
                .iter()
                .any(|o| o.address.eq_ignore_ascii_case(&r.address))
            {
                tx.rcpts.push(r);
            }
        }
        self.send(250, "2.1.5", "Ok");
    }

    /// The next command line. When the daemon stops, a session between
    /// transactions is told so at once; one with a transaction open (MAIL given)
    /// may finish it first, within the daemon's stop bound.
    async fn read_line(&mut self) -> std::io::Result<Line> {
        let timeout = self.config.timeouts.command;
        let intake = self.intake.clone();
        let stop = async {
            if self.tx.is_some() {
                std::future::pending::<()>().await;
            }
            intake.stopped().await
        };
        tokio::select! {
            biased;
            _ = stop => Ok(Line::Stopping),
            r = tokio::time::timeout(timeout, read_bounded_line(&mut self.reader)) => match r {
                Ok(r) => r,
                Err(_) => Ok(Line::Timeout),
            },
        }
    }
}

/// Reads one line up to LF without ever buffering more than the limit: an endless
/// line is consumed and reported, not accumulated.
async fn read_bounded_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            let room = MAX_COMMAND_LINE.saturating_sub(line.len());
            if take > room {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&buf[..take]);
            }
        }
        reader.consume(take);
        if done {
            if too_long {
                return Ok(Line::TooLong);
            }
            while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                line.pop();
            }
            return Ok(Line::Command(line));
        }
    }
}

//! The DATA phase of a session: the message read up to its final dot and
//! handed to the spool as it comes (never held whole), then queued and
//! answered, `250` only once it is synced.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite};

use super::super::data::{DataError, DataReceiver, Feed, Limits};
use super::{Session, Transaction, MIN_DATA_RATE};
use crate::intake::{Incoming, Receiving};
use crate::spool::StoreError;

/// How the DATA phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    Dot,
    /// The client closed the connection.
    Left,
    TimedOut,
    /// A bare CR or LF: the framing is unknowable (SMTP smuggling).
    Unframed,
}

/// Where the message is going while it arrives: the spool, or the error
/// that stopped it there (answered after the final dot, as SMTP requires).
enum Stored {
    Writing(Receiving),
    Failed(StoreError),
    /// The DATA receiver refused the message (too large, a long line):
    /// nothing of it is kept.
    Refused,
}

impl Stored {
    async fn write(&mut self, bytes: &[u8]) {
        if let Stored::Writing(r) = self {
            if bytes.is_empty() {
                return;
            }
            if let Err(e) = r.write(bytes).await {
                // Dropping the writer removes what reached the disk.
                *self = Stored::Failed(e);
            }
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Returns false when the connection must close.
    pub(super) async fn data(&mut self) -> std::io::Result<bool> {
        let Some(mut body) = self.open_body().await else {
            return Ok(true);
        };
        // RFC 2034 gives enhanced codes to 2xx, 4xx and 5xx replies only.
        self.reply(crate::smtp::grammar::Reply::new(
            354,
            None,
            "End data with <CR><LF>.<CR><LF>",
        ));
        self.flush().await?;
        let limits = &self.config.limits;
        let mut rx = DataReceiver::new(Limits {
            max_size: usize::try_from(limits.max_message_size).unwrap_or(usize::MAX),
            max_line: limits.max_line_length,
        });
        let received = self.receive(&mut rx, &mut body).await?;
        if received != Received::Dot {
            self.tx = None;
            return self.unfinished(received).await;
        }
        let Some(tx) = self.tx.take() else {
            return Ok(true);
        };
        match rx.finish() {
            Err(e) => {
                let (code, esc, text) = e.reply();
                self.send(code, esc, text);
            }
            Ok(rest) => {
                body.write(&rest).await;
                self.queue(tx, body).await;
            }
        }
        Ok(true)
    }

    /// The queue's receiver for this transaction's message, or None after
    /// the reply that says why not. A queue that cannot take the message
    /// says so before the client sends it, not after 25 MB.
    async fn open_body(&mut self) -> Option<Stored> {
        let tx = match &self.tx {
            None => {
                self.send(503, "5.5.1", "Error: need RCPT command");
                return None;
            }
            Some(tx) if tx.rcpts.is_empty() => {
                self.send(554, "5.5.1", "Error: no valid recipients");
                return None;
            }
            Some(tx) => tx,
        };
        match self.intake.receive(&self.incoming(tx)).await {
            Ok(r) => Some(Stored::Writing(r)),
            Err(e) => {
                self.refuse_queue(&e);
                None
            }
        }
    }

    /// A message that never reached its final dot: nothing was acknowledged,
    /// and the connection closes (after saying why, where the client is
    /// still there to hear it).
    async fn unfinished(&mut self, received: Received) -> std::io::Result<bool> {
        match received {
            Received::Dot | Received::Left => {}
            Received::TimedOut => {
                let host = self.config.hostname.clone();
                self.send(421, "4.4.2", format!("{host} Error: timeout exceeded"));
                self.flush().await?;
            }
            Received::Unframed => {
                let (code, esc, text) = DataError::BareLineEnding.reply();
                self.send(code, esc, text);
                self.flush().await?;
            }
        }
        Ok(false)
    }

    /// Reads the message up to its final dot, handing it to `body` as it
    /// comes: never more than a read buffer of it in memory here.
    async fn receive(
        &mut self,
        rx: &mut DataReceiver,
        body: &mut Stored,
    ) -> std::io::Result<Received> {
        let timeout = self.config.timeouts.data;
        let started = tokio::time::Instant::now();
        let mut received = 0u64;
        loop {
            let earned = std::time::Duration::from_secs(received / MIN_DATA_RATE);
            let deadline = (started + timeout + earned).min(tokio::time::Instant::now() + timeout);
            let chunk = match tokio::time::timeout_at(deadline, self.reader.fill_buf()).await {
                Ok(r) => r?,
                Err(_) => return Ok(Received::TimedOut),
            };
            if chunk.is_empty() {
                return Ok(Received::Left);
            }
            let n = chunk.len();
            received += n as u64;
            let fed = rx.feed(chunk);
            match fed {
                Feed::NeedMore => self.reader.consume(n),
                Feed::Done { consumed } => self.reader.consume(consumed),
                Feed::Abort => return Ok(Received::Unframed),
            }
            if rx.failed() {
                // Refused already (too large, a long line): keep nothing.
                *body = Stored::Refused;
            }
            body.write(rx.pending()).await;
            rx.taken();
            if fed != Feed::NeedMore {
                return Ok(Received::Dot);
            }
        }
    }

    /// The final dot of a message that passed every check: queue it, then
    /// answer (`250` only once it is synced).
    async fn queue(&mut self, tx: Transaction, body: Stored) {
        let result = match body {
            Stored::Writing(r) => self.intake.enqueue(self.incoming(&tx), r).await,
            Stored::Failed(e) => Err(e),
            // The receiver's refusal was answered instead.
            Stored::Refused => return,
        };
        match result {
            Ok(id) => self.send(250, "2.0.0", format!("Ok: queued as {id}")),
            Err(e) => self.refuse_queue(&e),
        }
    }

    /// The queue could not take the message: `452` for a full disk, `451`
    /// for the rest; the client keeps it and tries again.
    fn refuse_queue(&mut self, e: &StoreError) {
        tracing::error!(peer = %self.peer, "cannot queue message: {e}");
        if e.is_disk_full() {
            self.send(452, "4.3.1", "Insufficient system storage");
        } else {
            self.send(451, "4.3.0", "Queue unavailable, try again later");
        }
    }

    pub(super) fn incoming<'a>(&'a self, tx: &Transaction) -> Incoming<'a> {
        // RFC 3848: S for TLS, A for a login; RFC 6531 for UTF8.
        let protocol = match (tx.smtputf8, self.esmtp, self.tls, self.identity.is_some()) {
            (true, _, false, false) => "UTF8SMTP",
            (true, _, true, false) => "UTF8SMTPS",
            (true, _, false, true) => "UTF8SMTPA",
            (true, _, true, true) => "UTF8SMTPSA",
            (false, true, false, false) => "ESMTP",
            (false, true, true, false) => "ESMTPS",
            (false, true, false, true) => "ESMTPA",
            (false, true, true, true) => "ESMTPSA",
            (false, false, _, _) => "SMTP",
        };
        Incoming {
            peer: &self.peer,
            helo: self.helo.as_deref(),
            protocol,
            sender: tx.from.clone(),
            recipients: tx.rcpts.clone(),
            dsn: tx.dsn.clone(),
            smtputf8: tx.smtputf8,
            eight_bit: tx.eight_bit,
            auth: self.identity.as_deref(),
            auth_header: self.config.submission.received_auth_header,
        }
    }
}

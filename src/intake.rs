//! How a message enters the queue. SMTP sessions (TCP or the local submission
//! socket) and the drop-directory pickup all end here, so every message gets the
//! same Received header, the same durable write, and the same log line.
//!
//! [`Intake`] is all the inbound side holds of the daemon: the configuration
//! in force, whether the daemon is stopping, and [`Intake::enqueue`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::{rfc5322, unix_now};
use crate::config::Config;
use crate::daemon::shared::Shared;
use crate::dsn::{MailDsn, RcptDsn};
use crate::message_text::header_value;
use crate::spool::{BodyWriter, Envelope, Recipient, StoreError};

/// Who handed us a message.
#[derive(Debug, Clone)]
pub enum Peer {
    /// An SMTP client on the network (loopback included).
    Tcp(SocketAddr),
    /// A local program, through the submission socket or the drop directory.
    Local { uid: u32 },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Local { uid } => write!(f, "local uid={uid}"),
        }
    }
}

/// A message's envelope, as its client gave it.
pub struct Incoming<'a> {
    pub peer: &'a Peer,
    /// HELO/EHLO name, if the message came over SMTP.
    pub helo: Option<&'a str>,
    /// `ESMTP`, `SMTP` or `UTF8SMTP` for the Received header's `with` (RFC
    /// 3848, 6531); a local peer's header has none.
    pub protocol: &'a str,
    pub sender: String,
    pub recipients: Vec<Rcpt>,
    /// RET and ENVID, if the sender gave them.
    pub dsn: MailDsn,
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// Who logged in (submission listeners), kept with the message.
    pub auth: Option<&'a str>,
    /// Name the login in the Received header (`[auth] received_auth_header`).
    pub auth_header: bool,
}

/// One recipient as its client gave it, with its NOTIFY and ORCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub address: String,
    pub dsn: RcptDsn,
}

impl Rcpt {
    /// The recipients `address` stands for once local names are resolved
    /// (`/etc/aliases` and the rest: `config::Local::resolve`). A recipient
    /// that changed keeps where it came from as its ORCPT, unless the
    /// client gave one (RFC 3461 4.2).
    pub fn resolved(
        local: &crate::config::Local,
        address: &str,
        dsn: RcptDsn,
    ) -> Result<Vec<Rcpt>, crate::local::AliasError> {
        let targets = local.resolve(address)?;
        let original = crate::dsn::Orcpt {
            addr_type: "rfc822".into(),
            xtext: crate::dsn::xtext_encode(address.as_bytes()),
        };
        Ok(targets
            .into_iter()
            .map(|target| {
                let mut dsn = dsn.clone();
                if target != address && dsn.orcpt.is_none() && address.contains('@') {
                    dsn.orcpt = Some(original.clone());
                }
                Rcpt {
                    address: target,
                    dsn,
                }
            })
            .collect())
    }

    /// A recipient given without DSN parameters.
    pub fn plain(address: impl Into<String>) -> Rcpt {
        Rcpt {
            address: address.into(),
            dsn: RcptDsn::default(),
        }
    }
}

/// A message whose body is arriving: written to the spool as it comes, in
/// bounded buffers, queued only by [`Intake::enqueue`]. Dropped before that,
/// nothing of it stays.
pub struct Receiving {
    id: String,
    body: BodyWriter,
    /// The header section so far (bounded), for the Message-ID.
    head: Vec<u8>,
    head_done: bool,
    /// What the message holds, for delivery: any 8-bit octet, and the
    /// longest line (with its CRLF) so far and the one under way.
    eight_bit: bool,
    longest: usize,
    line: usize,
}

/// Header bytes kept for the Message-ID: a header section is rarely a
/// tenth of this, and one larger is read no further.
const HEAD_MAX: usize = 64 * 1024;

impl Receiving {
    /// Appends message bytes (unstuffed, CRLF).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.head_done {
            let room = HEAD_MAX.saturating_sub(self.head.len());
            // Only the new bytes (and the three before them) are searched.
            let from = self.head.len().saturating_sub(3);
            self.head
                .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
            let tail = self.head.get(from..).unwrap_or_default();
            self.head_done = self.head.len() >= HEAD_MAX
                || self.head.starts_with(b"\r\n")
                || tail.windows(4).any(|w| w == b"\r\n\r\n");
        }
        self.eight_bit |= bytes.iter().any(|&b| b >= 0x80);
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            self.line += piece.len();
            if piece.ends_with(b"\n") {
                self.longest = self.longest.max(self.line);
                self.line = 0;
            }
        }
        self.body.write(bytes).await
    }

    /// The queue id the message will have.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The inbound side's handle on the daemon.
#[derive(Clone)]
pub struct Intake {
    shared: Arc<Shared>,
}

impl Intake {
    pub fn new(shared: Arc<Shared>) -> Intake {
        Intake { shared }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    /// The daemon's counters (the drop directory reports what it sets aside).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// Resolves once the daemon has begun to stop.
    pub async fn stopped(&self) {
        self.shared.stopped().await
    }

    /// Starts a message from `m`: its queue id, and the Received header as
    /// the first bytes of its body.
    pub async fn receive(&self, m: &Incoming<'_>) -> Result<Receiving, StoreError> {
        let id = self.shared.spool.new_id()?;
        let received = received(m, &self.shared.config().hostname, &id);
        let mut body = self.shared.spool.body_writer(&id);
        body.write(received.as_bytes()).await?;
        Ok(Receiving {
            id,
            body,
            head: Vec::new(),
            head_done: false,
            eight_bit: false,
            longest: 0,
            line: 0,
        })
    }

    /// Queues a received message: durable write, log line, schedule.
    /// Returns the queue id only once the message is on stable storage.
    pub async fn enqueue(&self, m: Incoming<'_>, r: Receiving) -> Result<String, StoreError> {
        enqueue(&self.shared, m, r).await
    }
}

async fn enqueue(shared: &Shared, m: Incoming<'_>, r: Receiving) -> Result<String, StoreError> {
    let spool = &shared.spool;
    let now = unix_now();
    let client = client(&m);
    let mut env = Envelope {
        id: r.id.clone(),
        route_sender: m.sender.clone(),
        sender: m.sender,
        recipients: m
            .recipients
            .iter()
            .map(|r| Recipient {
                notify: r.dsn.notify,
                orcpt: r.dsn.orcpt.clone(),
                ..Recipient::new(&r.address, now)
            })
            .collect(),
        dsn: m.dsn,
        arrived: now,
        smtputf8: m.smtputf8,
        // RFC 6152: 8-bit content goes with BODY=8BITMIME, declared or not.
        eight_bit: m.eight_bit || r.eight_bit,
        long_lines: r.longest.max(r.line) > crate::upstream::downgrade::MAX_LINE + 2,
        client,
        message_id: header_value(&r.head, "message-id"),
        auth: m.auth.map(str::to_string),
        ..Default::default()
    };
    env.event(now, format!("received from {}", env.client));
    spool.accept(&mut env, r.body).await?;
    tracing::info!(
        id = %env.id,
        from = %env.sender,
        size = env.size,
        nrcpt = env.recipients.len(),
        client = %env.client,
        sasl_username = env.auth.as_deref(),
        "message-id" = env.message_id.as_deref(),
    );
    shared.metrics.accepted(&shared.route_name(&env), &env);
    shared.schedule(&env);
    Ok(env.id)
}

/// The Received header (RFC 5321 4.4: the one header a relay adds). The
/// HELO name stands as the From-domain only when it is a domain or an
/// address literal; anything else goes into a comment, escaped, so that no
/// client can change the field's syntax. Mail from `sendmail` has no `with`
/// clause, as Postfix's pickup writes it.
fn received(m: &Incoming<'_>, host: &str, id: &str) -> String {
    let for_clause = match m.recipients.as_slice() {
        [one] => format!("\r\n\tfor <{}>", one.address),
        _ => String::new(),
    };
    let date = rfc5322(SystemTime::now());
    match m.peer {
        Peer::Tcp(addr) => {
            let from = from_clause(m.helo, addr.ip());
            // Postfix's smtpd_sasl_authenticated_header, as it writes it.
            let auth = match (m.auth, m.auth_header) {
                (Some(a), true) => format!("\r\n\t(Authenticated sender: {})", comment_text(a)),
                _ => String::new(),
            };
            format!(
                "Received: from {from}{auth}\r\n\tby {host} (smarthost) with {} id {id}{for_clause};\r\n\t{date}\r\n",
                m.protocol
            )
        }
        Peer::Local { uid } => format!(
            "Received: by {host} (smarthost, from userid {uid})\r\n\tid {id}{for_clause};\r\n\t{date}\r\n"
        ),
    }
}

/// `helo ([ip])`, or `[ip] (helo=…)` when the HELO argument is not a domain
/// or address literal.
fn from_clause(helo: Option<&str>, ip: std::net::IpAddr) -> String {
    let literal = match ip {
        std::net::IpAddr::V4(v4) => format!("[{v4}]"),
        std::net::IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    match helo {
        Some(h) if crate::smtp::address::validate_domain(h).is_ok() => format!("{h} ({literal})"),
        Some(h) => format!("{literal} (helo={})", comment_text(h)),
        None => format!("{literal} ({literal})"),
    }
}

/// Text safe inside a comment (RFC 5322 3.2.2): printable ASCII, with `(`,
/// `)` and `\` quoted, at most 255 characters.
fn comment_text(s: &str) -> String {
    let mut out = String::new();
    for c in s
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(255)
    {
        if matches!(c, '(' | ')' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The client as logs name it: `helo [ip]` or `local uid=N`.
fn client(m: &Incoming<'_>) -> String {
    match m.peer {
        Peer::Tcp(addr) => {
            let helo = m.helo.map_or_else(|| "unknown".into(), sanitize);
            format!("{helo} [{}]", addr.ip())
        }
        Peer::Local { uid } => format!("local uid={uid}"),
    }
}

/// A HELO name goes into a header: keep it to printable ASCII without spaces.
pub fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_from_clauses() {
        let v4: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let cases = [
            (Some("mx.example.org"), v4, "mx.example.org ([192.0.2.1])"),
            (Some("[192.0.2.1]"), v4, "[192.0.2.1] ([192.0.2.1])"),
            (
                Some("[IPv6:2001:db8::1]"),
                v6,
                "[IPv6:2001:db8::1] ([IPv6:2001:db8::1])",
            ),
            (None, v4, "[192.0.2.1] ([192.0.2.1])"),
            (Some("x; by evil"), v4, "[192.0.2.1] (helo=x; by evil)"),
            (Some("a(b)c\\d"), v4, "[192.0.2.1] (helo=a\\(b\\)c\\\\d)"),
            (Some("bad\r\nX: 1"), v6, "[IPv6:2001:db8::1] (helo=badX: 1)"),
            (Some("under_score"), v4, "[192.0.2.1] (helo=under_score)"),
        ];
        for (helo, ip, want) in cases {
            assert_eq!(from_clause(helo, ip), want, "{helo:?}");
        }
        assert_eq!(comment_text(&"x".repeat(300)).len(), 255);
    }

    #[test]
    fn helo_names_are_sanitized() {
        assert_eq!(sanitize("a b\r\nc"), "abc");
        assert_eq!(sanitize(" "), "unknown");
    }
}

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
use crate::spool::{Envelope, Recipient, StoreError};

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

/// A complete message, ready to be queued.
pub struct Incoming<'a> {
    pub peer: &'a Peer,
    /// HELO/EHLO name, if the message came over SMTP.
    pub helo: Option<&'a str>,
    /// `ESMTP`, `SMTP`, `UTF8SMTP` or `local` for the Received header.
    pub protocol: &'a str,
    pub sender: String,
    pub recipients: Vec<String>,
    pub smtputf8: bool,
    pub eight_bit: bool,
    pub body: Vec<u8>,
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

    /// Resolves once the daemon has begun to stop.
    pub async fn stopped(&self) {
        self.shared.stopped().await
    }

    /// Queues a message: Received header, durable write, log line, schedule.
    /// Returns the queue id only once the message is on stable storage.
    pub async fn enqueue(&self, m: Incoming<'_>) -> Result<String, StoreError> {
        enqueue(&self.shared, m).await
    }
}

async fn enqueue(shared: &Shared, m: Incoming<'_>) -> Result<String, StoreError> {
    let spool = &shared.spool;
    let id = spool.new_id()?;
    let now = unix_now();
    let (received, client) = received(&m, &shared.config().hostname, &id);
    let message_id = header_value(&m.body, "message-id");

    let mut env = Envelope {
        id: id.clone(),
        route_sender: m.sender.clone(),
        sender: m.sender,
        recipients: m
            .recipients
            .iter()
            .map(|r| Recipient::new(r, now))
            .collect(),
        arrived: now,
        smtputf8: m.smtputf8,
        eight_bit: m.eight_bit,
        client,
        message_id,
        ..Default::default()
    };
    env.event(now, format!("received from {}", env.client));
    spool.accept(&mut env, received.as_bytes(), &m.body).await?;
    drop(m.body);
    tracing::info!(
        id = %id,
        from = %env.sender,
        size = env.size,
        nrcpt = env.recipients.len(),
        client = %env.client,
        "message-id" = env.message_id.as_deref(),
    );
    shared.metrics.accepted(&shared.route_name(&env), &env);
    shared.schedule(&env);
    Ok(id)
}

/// The Received header (RFC 5321 4.4: the one header a relay adds) and the
/// client as logs name it.
fn received(m: &Incoming<'_>, host: &str, id: &str) -> (String, String) {
    let for_clause = match m.recipients.as_slice() {
        [one] => format!("\r\n\tfor <{one}>"),
        _ => String::new(),
    };
    let date = rfc5322(SystemTime::now());
    let helo = m.helo.map(sanitize);
    match m.peer {
        Peer::Tcp(addr) => {
            let helo = helo.unwrap_or_else(|| "unknown".into());
            (
                format!(
                    "Received: from {helo} ([{}])\r\n\tby {host} (smarthost) with {} id {id}{for_clause};\r\n\t{date}\r\n",
                    addr.ip(),
                    m.protocol
                ),
                format!("{helo} [{}]", addr.ip()),
            )
        }
        Peer::Local { uid } => (
            format!(
                "Received: by {host} (smarthost, from userid {uid})\r\n\twith {} id {id}{for_clause};\r\n\t{date}\r\n",
                m.protocol
            ),
            format!("local uid={uid}"),
        ),
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

/// The unfolded value of the first header field called `name` (lower case), for
/// the Message-ID that `queue find` looks up. Only the header section is read.
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    let mut lines = message.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let field = line.get(..colon).unwrap_or_default();
        if !field.eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let mut value = String::from_utf8_lossy(line.get(colon + 1..).unwrap_or_default())
            .trim()
            .to_string();
        while let Some(next) = lines.peek() {
            if !next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                break;
            }
            let next = next.strip_suffix(b"\r").unwrap_or(next);
            value.push(' ');
            value.push_str(String::from_utf8_lossy(next).trim());
            lines.next();
        }
        // Bounded: it is stored in the envelope and printed in logs.
        let value: String = value
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(512)
            .collect();
        return (!value.is_empty()).then_some(value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_folded_message_id_in_headers_only() {
        let m = b"Subject: x\r\nMessage-ID:\r\n <abc@example.com>\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(
            header_value(m, "message-id").as_deref(),
            Some("<abc@example.com>")
        );
        assert_eq!(
            header_value(b"A: b\r\n\r\nMessage-ID: <x>\r\n", "message-id"),
            None
        );
        assert_eq!(header_value(b"", "message-id"), None);
    }

    #[test]
    fn helo_names_are_sanitized() {
        assert_eq!(sanitize("a b\r\nc"), "abc");
        assert_eq!(sanitize(" "), "unknown");
    }
}

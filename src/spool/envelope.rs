//! A queued message's envelope and per-recipient delivery state.
//!
//! The envelope is stored separately from the body so that the scheduler and the
//! delivery bookkeeping never have to read message bytes.

use serde::{Deserialize, Serialize};

use crate::dsn::{MailDsn, Notify, Orcpt, RcptDsn};

/// Where one recipient stands. Each recipient of a message moves on its own: one
/// can be delivered while another is deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not tried yet.
    Pending,
    /// Failed temporarily; retried at `next_attempt`.
    Deferred,
    Delivered,
    Bounced,
}

impl State {
    pub fn is_final(self) -> bool {
        matches!(self, State::Delivered | State::Bounced)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    pub state: State,
    pub attempts: u32,
    /// Unix seconds of the first temporary failure: retry cutoffs count from here.
    pub first_failure: Option<u64>,
    /// Unix seconds; meaningful while pending or deferred.
    pub next_attempt: u64,
    /// The previous retry interval in seconds, for geometric (`G`) rules.
    pub last_interval: Option<u64>,
    /// The last upstream reply or local reason, for `mailq` and bounces.
    pub last_error: Option<String>,
    /// The relay that gave the final answer, `host[ip]:port`.
    pub relay: Option<String>,
    /// RCPT's NOTIFY (RFC 3461); None when the sender did not give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// RCPT's ORCPT, passed upstream and named in notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<Orcpt>,
}

impl Recipient {
    pub fn new(address: impl Into<String>, now: u64) -> Self {
        Recipient {
            address: address.into(),
            state: State::Pending,
            attempts: 0,
            first_failure: None,
            next_attempt: now,
            last_interval: None,
            last_error: None,
            relay: None,
            notify: None,
            orcpt: None,
        }
    }

    /// What this recipient's sender asked of notices.
    pub fn dsn(&self) -> RcptDsn {
        RcptDsn {
            notify: self.notify,
            orcpt: self.orcpt.clone(),
        }
    }
}

/// One line of a message's attempt history, for `queue show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    pub text: String,
}

/// A message keeps only its most recent events: a message deferred every 15
/// minutes for four days must not grow an unbounded envelope.
pub const MAX_EVENTS: usize = 24;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    /// MAIL FROM; empty for the null sender (bounces).
    pub sender: String,
    /// The address the route table is asked about. Equal to `sender`, except for
    /// bounces, which leave through the route of the original sender's domain.
    pub route_sender: String,
    pub recipients: Vec<Recipient>,
    /// Unix seconds of acceptance.
    pub arrived: u64,
    /// Body size in bytes.
    pub size: u64,
    /// How many chunks the body is stored in (records); 0 for a body in a
    /// file of its own.
    pub chunks: u32,
    /// The body is in its own file (see `spool::body`), not in records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_file: bool,
    /// The client asked for SMTPUTF8 (or an address needs it).
    pub smtputf8: bool,
    /// The client declared BODY=8BITMIME, or the message holds 8-bit octets.
    pub eight_bit: bool,
    /// Some line is longer than 998 octets: delivery re-encodes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub long_lines: bool,
    /// Who handed it to us, for logs: `helo [ip]`.
    pub client: String,
    /// Put on hold by the operator: stays queued, never tried, never expires
    /// while held.
    #[serde(default)]
    pub held: bool,
    /// The Message-ID header, for `queue find`.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The attempt history, oldest first, at most [`MAX_EVENTS`].
    #[serde(default)]
    pub events: Vec<Event>,
    /// A delay warning has been sent (one per message).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay_warned: bool,
    /// MAIL's RET and ENVID (RFC 3461).
    #[serde(default, skip_serializing_if = "MailDsn::is_empty")]
    pub dsn: MailDsn,
    /// Who logged in to send it (submission listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

impl Envelope {
    pub fn event(&mut self, at: u64, text: impl Into<String>) {
        if self.events.len() >= MAX_EVENTS {
            // Keep the first event (arrival) and drop the oldest after it.
            self.events.remove(1.min(self.events.len() - 1));
        }
        self.events.push(Event {
            at,
            text: text.into(),
        });
    }

    /// Which recipients are not final yet.
    pub fn unfinished(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| !r.state.is_final())
    }

    /// Recipients still to be tried, due at `now` or earlier.
    pub fn due_recipients(&self, now: u64) -> Vec<usize> {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.state.is_final() && r.next_attempt <= now)
            .map(|(i, _)| i)
            .collect()
    }

    /// The earliest time any unfinished recipient is due, or None when all are final.
    pub fn next_due(&self) -> Option<u64> {
        self.recipients
            .iter()
            .filter(|r| !r.state.is_final())
            .map(|r| r.next_attempt)
            .min()
    }

    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.state.is_final())
    }

    /// How a message whose every recipient is final ended.
    pub fn ending(&self) -> Ending {
        let delivered = self
            .recipients
            .iter()
            .filter(|r| r.state == State::Delivered)
            .count();
        match delivered {
            0 => Ending::Bounced,
            n if n == self.recipients.len() => Ending::Delivered,
            _ => Ending::PartlyBounced,
        }
    }
}

/// How a finished message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Delivered,
    Bounced,
    PartlyBounced,
}

impl Ending {
    /// The word its history record and `queue find` use.
    pub fn word(self) -> &'static str {
        match self {
            Ending::Delivered => "delivered",
            Ending::Bounced => "bounced",
            Ending::PartlyBounced => "partly bounced",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            id: "X".into(),
            sender: "a@example.com".into(),
            route_sender: "a@example.com".into(),
            recipients: vec![
                Recipient::new("b@example.net", 100),
                Recipient::new("c@example.net", 100),
            ],
            arrived: 100,
            size: 10,
            chunks: 1,
            smtputf8: false,
            eight_bit: false,
            client: "test [127.0.0.1]".into(),
            ..Default::default()
        }
    }

    #[test]
    fn due_and_finished() {
        let mut e = env();
        assert_eq!(e.due_recipients(100), vec![0, 1]);
        e.recipients[0].state = State::Delivered;
        e.recipients[1].state = State::Deferred;
        e.recipients[1].next_attempt = 200;
        assert_eq!(e.due_recipients(150), Vec::<usize>::new());
        assert_eq!(e.next_due(), Some(200));
        assert!(!e.is_finished());
        e.recipients[1].state = State::Bounced;
        assert!(e.is_finished());
        assert_eq!(e.next_due(), None);
    }

    #[test]
    fn events_are_bounded() {
        let mut e = env();
        for i in 0..100 {
            e.event(i, format!("event {i}"));
        }
        assert_eq!(e.events.len(), MAX_EVENTS);
        assert_eq!(e.events[0].text, "event 0");
        assert_eq!(e.events[MAX_EVENTS - 1].text, "event 99");
    }

    #[test]
    fn old_envelopes_still_decode() {
        let old = r#"{"id":"X","sender":"","route_sender":"","recipients":[],"arrived":1,"size":0,"chunks":0,"smtputf8":false,"eight_bit":false,"client":"c"}"#;
        let e: Envelope = serde_json::from_str(old).unwrap();
        assert!(!e.held);
        assert!(e.events.is_empty());
    }

    #[test]
    fn serde_roundtrip() {
        let e = env();
        let bytes = serde_json::to_vec(&e).unwrap();
        let back: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(e, back);
    }
}

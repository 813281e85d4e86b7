//! A queued message's envelope and per-recipient delivery state.
//!
//! The envelope is stored separately from the body so that the scheduler and the
//! delivery bookkeeping never have to read message bytes.

use serde::{Deserialize, Serialize};

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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// How many chunks the body is stored in.
    pub chunks: u32,
    /// The client asked for SMTPUTF8 (or an address needs it).
    pub smtputf8: bool,
    /// The client declared BODY=8BITMIME.
    pub eight_bit: bool,
    /// Who handed it to us, for logs: `helo [ip]`.
    pub client: String,
}

impl Envelope {
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
    fn serde_roundtrip() {
        let e = env();
        let bytes = serde_json::to_vec(&e).unwrap();
        let back: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(e, back);
    }
}

//! Recently finished messages, so `queue find` can say where a message went after
//! it left the queue. Written in the same atomic batch as the message's removal,
//! so no extra fsync is spent on it.

use serde::{Deserialize, Serialize};

use super::envelope::{Envelope, State};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedRecipient {
    pub address: String,
    pub state: State,
    /// The relay that answered, `host[ip]:port`.
    pub relay: Option<String>,
    /// Its reply, or the reason for the bounce.
    pub reply: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub id: String,
    pub message_id: Option<String>,
    pub sender: String,
    pub arrived: u64,
    pub finished: u64,
    pub size: u64,
    /// Why it left the queue: "delivered", "bounced", "deleted" (by the operator).
    pub outcome: String,
    pub recipients: Vec<FinishedRecipient>,
}

impl Finished {
    pub fn from_envelope(env: &Envelope, now: u64, outcome: &str) -> Finished {
        Finished {
            id: env.id.clone(),
            message_id: env.message_id.clone(),
            sender: env.sender.clone(),
            arrived: env.arrived,
            finished: now,
            size: env.size,
            outcome: outcome.to_string(),
            recipients: env
                .recipients
                .iter()
                .map(|r| FinishedRecipient {
                    address: r.address.clone(),
                    state: r.state,
                    relay: r.relay.clone(),
                    reply: r.last_error.clone(),
                })
                .collect(),
        }
    }

    /// Whether this record answers `query`: a queue id, a Message-ID (with or
    /// without angle brackets) or an address (sender or recipient).
    pub fn matches(&self, query: &str) -> bool {
        let q = query.trim();
        let bare = q.trim_start_matches('<').trim_end_matches('>');
        self.id.eq_ignore_ascii_case(q)
            || self
                .message_id
                .as_deref()
                .map(|m| m.trim_start_matches('<').trim_end_matches('>') == bare)
                .unwrap_or(false)
            || self.sender.eq_ignore_ascii_case(bare)
            || self
                .recipients
                .iter()
                .any(|r| r.address.eq_ignore_ascii_case(bare))
    }
}

/// The key sorts by finish time, so pruning walks from the oldest.
pub(super) fn key(finished: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 9);
    k.push(b'h');
    k.extend_from_slice(&finished.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Recipient;

    #[test]
    fn matching() {
        let mut env = Envelope {
            id: "ABC123".into(),
            sender: "App@Example.com".into(),
            message_id: Some("<m1@example.com>".into()),
            recipients: vec![Recipient::new("b@example.net", 0)],
            ..Default::default()
        };
        env.recipients[0].state = State::Delivered;
        let f = Finished::from_envelope(&env, 5, "delivered");
        for q in [
            "abc123",
            "<m1@example.com>",
            "m1@example.com",
            "app@example.com",
            "<B@example.net>",
        ] {
            assert!(f.matches(q), "{q}");
        }
        assert!(!f.matches("m2@example.com"));
        assert!(key(1, "a") < key(2, "a"));
        assert!(key(255, "z") < key(256, "a"));
    }
}

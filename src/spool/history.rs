//! Recently finished messages, so `queue find` can say where a message went after
//! it left the queue. Written in the same atomic batch as the message's removal,
//! so no extra fsync is spent on it.

use serde::{Deserialize, Serialize};

use super::envelope::{Envelope, State};
use super::records::capped;

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
    /// Recipients left out to keep the record small (the log has each one's
    /// fate).
    #[serde(default)]
    pub more_recipients: usize,
}

/// The bytes of recipients one history record keeps: well under the smallest
/// record bound (`records::record_bound` of a 1 MiB segment, 15420 bytes).
const RECIPIENT_BUDGET: usize = 8 * 1024;
/// A reply as a history record keeps it.
const HISTORY_REPLY: usize = 200;

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
            recipients: Vec::new(),
            more_recipients: 0,
        }
        .with_recipients(env)
    }

    /// Keeps recipients, their texts capped, while they fit the budget.
    fn with_recipients(mut self, env: &Envelope) -> Finished {
        let mut used = 0;
        for r in &env.recipients {
            let kept = FinishedRecipient {
                address: r.address.clone(),
                state: r.state,
                relay: r.relay.as_deref().map(|t| capped(t, HISTORY_REPLY)),
                reply: r.last_error.as_deref().map(|t| capped(t, HISTORY_REPLY)),
            };
            // JSON adds quotes, names and escapes: count generously.
            let size = 64
                + 2 * (kept.address.len()
                    + kept.relay.as_ref().map_or(0, String::len)
                    + kept.reply.as_ref().map_or(0, String::len));
            if used + size > RECIPIENT_BUDGET {
                self.more_recipients += 1;
                continue;
            }
            used += size;
            self.recipients.push(kept);
        }
        self
    }

    /// Whether this record answers `query` (see [`answers`]).
    pub fn matches(&self, query: &str) -> bool {
        let rcpts = self.recipients.iter().map(|r| r.address.as_str());
        answers(
            query,
            &self.id,
            self.message_id.as_deref(),
            &self.sender,
            rcpts,
        )
    }
}

/// Whether a message answers `query` in `queue find`: its queue id, its
/// Message-ID (with or without angle brackets) or an address (the sender or a
/// recipient). One rule for queued and finished messages alike.
pub fn answers<'a>(
    query: &str,
    id: &str,
    message_id: Option<&str>,
    sender: &str,
    mut recipients: impl Iterator<Item = &'a str>,
) -> bool {
    let q = query.trim();
    let bare = q.trim_start_matches('<').trim_end_matches('>');
    id.eq_ignore_ascii_case(q)
        || message_id.is_some_and(|m| m.trim_start_matches('<').trim_end_matches('>') == bare)
        || sender.eq_ignore_ascii_case(bare)
        || recipients.any(|r| r.eq_ignore_ascii_case(bare))
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
    use crate::spool::Recipient;

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

    #[test]
    fn a_thousand_recipients_make_a_small_record() {
        let mut env = Envelope {
            id: "ABC123".into(),
            recipients: (0..1000)
                .map(|i| Recipient::new(format!("user{i}@example.net"), 0))
                .collect(),
            ..Default::default()
        };
        for r in &mut env.recipients {
            r.last_error = Some(format!("451 4.7.1 {}", "x".repeat(500)));
        }
        let f = Finished::from_envelope(&env, 5, "bounced");
        let size = serde_json::to_vec(&f).unwrap().len();
        assert!(size < 12 * 1024, "{size}");
        assert_eq!(f.recipients.len() + f.more_recipients, 1000);
        assert!(f.recipients.len() >= 10);
    }
}

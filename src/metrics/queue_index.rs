//! What the queue gauges need, kept in memory so a scrape never scans the
//! store: every queued message by arrival, with its count of recipients still
//! to be tried.
//!
//! Updates are upserts and removals keyed by (arrival, queue id), so calling
//! them twice for the same message changes nothing: the gauges cannot drift
//! when two code paths report the same event.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::spool::Envelope;

#[derive(Default)]
pub struct QueueIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    messages: BTreeMap<(u64, String), Entry>,
    /// The sum of every entry's `pending`.
    recipients: u64,
}

struct Entry {
    /// Acceptance time with sub-second precision where this process accepted
    /// the message; the stored whole second for messages found at start.
    accepted: f64,
    pending: u64,
}

/// The queue gauges at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSnapshot {
    pub messages: u64,
    pub recipients: u64,
    /// Arrival of the oldest queued message (Unix time), if any is queued.
    pub oldest: Option<u64>,
}

impl QueueIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a queued message, or its new count of pending recipients; a
    /// finished message is forgotten. `accepted` is the precise acceptance
    /// time, when known; an entry keeps the one it was first given.
    pub fn track(&self, env: &Envelope, accepted: Option<f64>) {
        if env.is_finished() {
            self.forget(env);
            return;
        }
        let pending = env
            .recipients
            .iter()
            .filter(|r| !r.state.is_final())
            .count() as u64;
        let mut inner = self.lock();
        let key = (env.arrived, env.id.clone());
        let entry = inner.messages.entry(key).or_insert(Entry {
            accepted: accepted.unwrap_or(env.arrived as f64),
            pending: 0,
        });
        let before = std::mem::replace(&mut entry.pending, pending);
        inner.recipients = inner.recipients.saturating_sub(before) + pending;
    }

    /// Removes a message that left the queue; returns its acceptance time.
    pub fn forget(&self, env: &Envelope) -> Option<f64> {
        let mut inner = self.lock();
        let entry = inner.messages.remove(&(env.arrived, env.id.clone()))?;
        inner.recipients = inner.recipients.saturating_sub(entry.pending);
        Some(entry.accepted)
    }

    /// When the message was accepted, as precisely as known.
    pub fn accepted(&self, env: &Envelope) -> f64 {
        self.lock()
            .messages
            .get(&(env.arrived, env.id.clone()))
            .map(|e| e.accepted)
            .unwrap_or(env.arrived as f64)
    }

    pub fn snapshot(&self) -> QueueSnapshot {
        let inner = self.lock();
        QueueSnapshot {
            messages: inner.messages.len() as u64,
            recipients: inner.recipients,
            oldest: inner.messages.keys().next().map(|(arrived, _)| *arrived),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Recipient, State};

    fn env(id: &str, arrived: u64, rcpts: usize) -> Envelope {
        Envelope {
            id: id.into(),
            arrived,
            recipients: (0..rcpts)
                .map(|i| Recipient::new(format!("r{i}@example.net"), arrived))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn counts_messages_pending_recipients_and_the_oldest_arrival() {
        let q = QueueIndex::default();
        assert_eq!(
            q.snapshot(),
            QueueSnapshot {
                messages: 0,
                recipients: 0,
                oldest: None
            }
        );
        let mut a = env("A", 200, 3);
        let b = env("B", 100, 1);
        q.track(&a, Some(200.5));
        q.track(&b, None);
        // Reporting the same message twice changes nothing.
        q.track(&a, Some(999.0));
        assert_eq!(
            q.snapshot(),
            QueueSnapshot {
                messages: 2,
                recipients: 4,
                oldest: Some(100)
            }
        );
        assert_eq!(q.accepted(&a), 200.5);
        assert_eq!(q.accepted(&b), 100.0);

        a.recipients[0].state = State::Delivered;
        a.recipients[1].state = State::Bounced;
        q.track(&a, None);
        assert_eq!(q.snapshot().recipients, 2);

        assert_eq!(q.forget(&b), Some(100.0));
        assert_eq!(q.forget(&b), None);
        assert_eq!(
            q.snapshot(),
            QueueSnapshot {
                messages: 1,
                recipients: 1,
                oldest: Some(200)
            }
        );

        a.recipients[2].state = State::Delivered;
        q.track(&a, None);
        assert_eq!(q.snapshot().messages, 0);
        assert_eq!(q.snapshot().recipients, 0);
    }
}

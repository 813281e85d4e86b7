//! When recently accepted messages were accepted, to the microsecond: the
//! delivery latency of a message relayed in 40 ms is not "0 or 1 s". The
//! queue stores whole seconds; this keeps the precise time of the messages
//! accepted by this process, up to [`CAP`] of them, so a queue of a million
//! costs no more memory than one of [`CAP`]. A message it forgot (the
//! queue grew past that, or it was accepted before a restart) falls back
//! to the stored second.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::spool::Envelope;

/// Acceptance times kept at most.
pub const CAP: usize = 50_000;

#[derive(Default)]
pub struct Accepted {
    times: Mutex<HashMap<String, f64>>,
}

impl Accepted {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, f64>> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Message `id` was accepted at `at` (Unix time, fractional).
    pub fn note(&self, id: &str, at: f64) {
        let mut times = self.lock();
        if times.len() >= CAP {
            // A backlog this large is measured in minutes: seconds will do.
            times.clear();
        }
        times.insert(id.to_string(), at);
    }

    /// When `env` was accepted, as precisely as known.
    pub fn of(&self, env: &Envelope) -> f64 {
        self.lock()
            .get(&env.id)
            .copied()
            .unwrap_or(env.arrived as f64)
    }

    /// `id` left the queue.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precise_while_kept_the_stored_second_after() {
        let a = Accepted::default();
        let env = Envelope {
            id: "A".into(),
            arrived: 100,
            ..Default::default()
        };
        assert_eq!(a.of(&env), 100.0);
        a.note("A", 100.25);
        assert_eq!(a.of(&env), 100.25);
        a.forget("A");
        assert_eq!(a.of(&env), 100.0);
        for n in 0..CAP + 10 {
            a.note(&n.to_string(), 1.5);
        }
        assert!(a.lock().len() <= CAP, "bounded");
    }
}

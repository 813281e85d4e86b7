//! The queue's counts: messages, recipients still to deliver, held
//! messages, per route. Kept exact by the spool as it applies each change
//! (under one lock with the change itself), so the queue gauges and the
//! summary of `queue list` never read the queue, however long it is.
//!
//! A clean close keeps the counts in its marker (`Store::set_close_note`),
//! which the next open takes back and removes, so a crash leaves none, and
//! neither does the clean close of an older version (its marker is empty).
//! Without them the queue is counted again while the daemon already runs
//! ([`Spool::recount`]): the count walks the
//! messages in id order, and a change to a message the walk has passed is
//! added to the count, one to a message ahead of it is left for the walk to
//! see. Until the walk ends the counts say they are incomplete.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::due::Router;
use super::envelope::Envelope;
use super::records;
use super::store::Store;
use super::{Spool, StoreError};

/// Counts of one route, or of the whole queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub messages: u64,
    /// Recipients still to be delivered.
    pub recipients: u64,
    /// Messages the operator holds.
    pub held: u64,
}

/// The queue's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub total: Counts,
    /// By the route each message was counted under (the route its sender
    /// had at its last change).
    pub routes: BTreeMap<String, Counts>,
    /// False while the queue is being counted again: the counts are what
    /// the walk has seen so far.
    #[serde(skip, default = "complete")]
    pub complete: bool,
}

fn complete() -> bool {
    true
}

/// What one queued message adds to the counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub route: String,
    pub pending: u64,
    pub held: bool,
}

impl Share {
    pub fn of(env: &Envelope, route: String) -> Share {
        Share {
            route,
            pending: env.unfinished().count() as u64,
            held: env.held,
        }
    }
}

impl Counts {
    fn add(&mut self, s: &Share, sign: i8) {
        let step = |n: &mut u64, by: u64| {
            *n = if sign > 0 {
                n.saturating_add(by)
            } else {
                n.saturating_sub(by)
            }
        };
        step(&mut self.messages, 1);
        step(&mut self.recipients, s.pending);
        step(&mut self.held, u64::from(s.held));
    }
}

impl Tally {
    /// Adds (`sign` 1) or takes away (-1) one message's share.
    fn add(&mut self, s: &Share, sign: i8) {
        self.total.add(s, sign);
        let route = self.routes.entry(s.route.clone()).or_default();
        route.add(s, sign);
        if route.messages == 0 {
            self.routes.remove(&s.route);
        }
    }

    /// A message going from `before` to `after` (None: not queued).
    fn change(&mut self, before: Option<&Share>, after: Option<&Share>) {
        if let Some(b) = before {
            self.add(b, -1);
        }
        if let Some(a) = after {
            self.add(a, 1);
        }
    }
}

/// A walk counting the queue again.
struct Walk {
    /// The last id counted.
    passed: Option<String>,
    /// The last id of the page being counted, and those of its ids not
    /// counted yet: a message accepted meanwhile with an id inside the
    /// page (ids are taken when a message begins, so they arrive out of
    /// order) is not in it, and the walk would never see it.
    page_end: Option<String>,
    ahead: std::collections::HashSet<String>,
    counted: Tally,
}

impl Walk {
    /// Whether a change of message `id` is one the walk will not see.
    fn behind(&self, id: &str) -> bool {
        let passed = self.passed.as_deref().is_some_and(|p| id <= p);
        let in_page = self.page_end.as_deref().is_some_and(|e| id <= e);
        passed || (in_page && !self.ahead.contains(id))
    }
}

#[derive(Default)]
pub(super) struct Tallies {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tally: Tally,
    walk: Option<Walk>,
}

/// Held while a change is built and applied: the counts follow it.
pub(super) struct Counting<'a>(MutexGuard<'a, State>);

impl Counting<'_> {
    /// Message `id` goes from `before` to `after`.
    pub fn change(&mut self, id: &str, before: Option<&Share>, after: Option<&Share>) {
        self.0.tally.change(before, after);
        if let Some(walk) = &mut self.0.walk {
            if walk.behind(id) {
                walk.counted.change(before, after);
            }
        }
    }
}

impl Tallies {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn counting(&self) -> Counting<'_> {
        Counting(self.lock())
    }

    pub fn snapshot(&self) -> Tally {
        let state = self.lock();
        match &state.walk {
            Some(walk) => Tally {
                complete: false,
                ..walk.counted.clone()
            },
            None => state.tally.clone(),
        }
    }

    /// Starts from counts a clean close stored.
    pub fn restore(&self, tally: Tally) {
        self.lock().tally = Tally {
            complete: true,
            ..tally
        };
    }

    fn begin_walk(&self) {
        self.lock().walk = Some(Walk {
            passed: None,
            page_end: None,
            ahead: Default::default(),
            counted: Tally::default(),
        });
    }

    /// A walk that failed: the counts stay what the changes made them.
    fn abandon_walk(&self) {
        self.lock().walk = None;
    }

    fn end_walk(&self) {
        let mut state = self.lock();
        if let Some(walk) = state.walk.take() {
            state.tally = walk.counted;
            state.tally.complete = true;
        }
    }
}

/// What a clean close keeps for the next open.
#[derive(Serialize, Deserialize)]
struct Note {
    tally: Tally,
    /// The routing table's [`Router::fingerprint`].
    routing: String,
}

/// Hands the counts to the store's clean close as the last clone of the
/// spool goes, for the next open: unless they are incomplete. A store that
/// does not close cleanly leaves no marker, and the next open counts again.
pub(super) struct Closer {
    store: Store,
    router: Arc<std::sync::RwLock<Router>>,
    tallies: Arc<Tallies>,
    recount_needed: Arc<AtomicBool>,
}

impl Closer {
    pub fn new(
        store: &Store,
        router: &Arc<std::sync::RwLock<Router>>,
        tallies: &Arc<Tallies>,
        recount_needed: &Arc<AtomicBool>,
    ) -> Closer {
        Closer {
            store: store.clone(),
            router: router.clone(),
            tallies: tallies.clone(),
            recount_needed: recount_needed.clone(),
        }
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        let tally = self.tallies.snapshot();
        if !tally.complete || self.recount_needed.load(Ordering::Relaxed) {
            return;
        }
        let note = Note {
            tally,
            routing: self
                .router
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .fingerprint
                .clone(),
        };
        // Serializing a plain struct of strings and integers cannot fail.
        self.store
            .set_close_note(serde_json::to_vec(&note).unwrap_or_default());
    }
}

impl Spool {
    /// Takes back the counts the last clean close kept; without them, or
    /// if the queue was closed under another routing table (messages may
    /// be indexed under a route they no longer have), the queue is to be
    /// counted again, and checked (an empty queue needs neither).
    pub(super) fn restore_tally(&self) -> Result<(), StoreError> {
        let fingerprint = self.router().fingerprint.clone();
        let restored = self
            .store
            .close_note()
            .and_then(|v| serde_json::from_slice::<Note>(v).ok())
            .filter(|n| n.routing == fingerprint)
            .map(|n| n.tally);
        match restored {
            Some(tally) => self.tallies.restore(tally),
            None if self.ids_after(None, 1)?.is_empty() => self.tallies.restore(Tally::default()),
            None => self.recount_later(),
        }
        Ok(())
    }

    /// The counts cannot be trusted (a change failed halfway, the queue was
    /// reopened): [`Spool::recount`] is due.
    pub fn recount_later(&self) {
        self.recount_needed.store(true, Ordering::Relaxed);
    }

    /// Up to `limit` queued ids after `after`, in order (arrival order).
    pub fn ids_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let after = after.map_or_else(Vec::new, records::meta_key);
        let keys = self.store.keys_after(b"m", &after, limit)?;
        Ok(keys
            .iter()
            .filter_map(|k| std::str::from_utf8(k.get(1..)?).ok())
            .map(str::to_string)
            .collect())
    }

    /// The arrival of the oldest queued message (ids sort by arrival):
    /// the first meta record's, quarantined ones passed over.
    pub fn oldest_arrival(&self) -> Result<Option<u64>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Arrived {
            arrived: u64,
        }
        for item in self.store.scan(b"m").take(1000) {
            let (key, meta) = item?;
            let id = key.get(1..).unwrap_or_default();
            let mut damage = b"d".to_vec();
            damage.extend_from_slice(id);
            if self.store.contains(&damage)? {
                continue;
            }
            if let Ok(a) = serde_json::from_slice::<Arrived>(&meta) {
                return Ok(Some(a.arrived));
            }
        }
        Ok(None)
    }

    /// The queue's counts now.
    pub fn tally(&self) -> Tally {
        self.tallies.snapshot()
    }

    /// Whether the counts must be made again (see [`Spool::recount`]).
    pub fn needs_recount(&self) -> bool {
        self.recount_needed.load(Ordering::Relaxed)
    }

    /// Counts the queue again, while it is in use: see the module's
    /// documentation. `visit` sees each queued id first (the daemon repairs
    /// the message's index entry there). One count at a time; one that
    /// fails leaves the counts to be made again. Blocking: reads every
    /// message.
    pub fn recount(&self, mut visit: impl FnMut(&str)) -> Result<(), StoreError> {
        let _one = self.recounting.lock().unwrap_or_else(|p| p.into_inner());
        self.recount_needed.store(false, Ordering::Relaxed);
        self.tallies.begin_walk();
        let walked = self.walk(&mut visit);
        match &walked {
            Ok(()) => self.tallies.end_walk(),
            Err(_) => {
                self.tallies.abandon_walk();
                self.recount_later();
            }
        }
        walked
    }

    fn walk(&self, visit: &mut impl FnMut(&str)) -> Result<(), StoreError> {
        // Taken before the counts' lock, as a change takes them.
        let router = self.router().clone();
        loop {
            // The page is read under the counts' lock, so every change is
            // either in it (ahead, counted when reached) or not (behind).
            let ids = {
                let mut state = self.tallies.lock();
                let Some(walk) = state.walk.as_mut() else {
                    return Ok(());
                };
                let ids = self.ids_after(walk.passed.as_deref(), 1000)?;
                walk.page_end = ids.last().cloned();
                walk.ahead = ids.iter().cloned().collect();
                ids
            };
            if ids.is_empty() {
                return Ok(());
            }
            for id in ids {
                visit(&id);
                // Under the lock, so no change of the message slips between
                // reading it and moving past it.
                let mut state = self.tallies.lock();
                let share = self.share_of(&id, &router)?;
                if let Some(walk) = &mut state.walk {
                    if let Some(s) = &share {
                        walk.counted.add(s, 1);
                    }
                    walk.ahead.remove(&id);
                    walk.passed = Some(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Which message is due next, per route, from a bounded window of the queue.
//!
//! Every queued message that may be tried has an entry in the spool's due
//! index on disk (`spool::due`), sorted by (due time, id). Memory holds a
//! window of it: every entry up to a horizon, at most `limit` of them, so a
//! queue of a million messages costs no more memory than one of `limit`, and
//! a start reads one page of the index rather than the whole queue.
//!
//! The invariant that keeps every message on a schedule: an entry at or
//! below the horizon is in the window (or its message is in an attempt,
//! whose end schedules it again); one above the horizon is read back from
//! the index by a refill ([`Scheduler::refill_from`], run by the daemon)
//! once the window has room. Scheduling a message above the horizon
//! therefore only drops it from memory: the spool has already written its
//! entry. A window over its limit forgets its latest entries and lowers
//! the horizon below them. Retries that live only in memory (a message a
//! queue command holds, a failed bookkeeping write) are pinned: never
//! forgotten, whatever the horizon.
//!
//! Each message has at most one entry in the window; the envelope in the
//! store decides what is really due.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::unix_now;

/// Messages kept in memory when the configuration does not say.
pub const DEFAULT_LIMIT: usize = 20_000;

type Key = (u64, String);

/// How much of the due index the window covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Horizon {
    /// Nothing yet: a refill reads from the start.
    Start,
    /// Every entry up to and including this one.
    Upto(Key),
    /// All of it.
    End,
}

struct Entry {
    route: String,
    pinned: bool,
}

struct Window {
    order: BTreeMap<Key, Entry>,
    routes: HashMap<String, BTreeSet<Key>>,
    due: HashMap<String, u64>,
    pinned: usize,
    horizon: Horizon,
    /// Changed whenever the horizon moves other than by a refill, so that a
    /// refill read against the old one is not applied.
    epoch: u64,
    /// While a refill reads the index: the entries scheduled beyond the
    /// horizon meanwhile, by id. The page may have been read before they
    /// were written; the refill adds those its new horizon covers.
    skipped: Option<HashMap<String, (Key, String)>>,
}

struct Shared {
    window: Mutex<Window>,
    limit: usize,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    refill: Notify,
}

/// A refill to do: the index entries after `after`, `room` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill {
    pub after: Option<Key>,
    pub room: usize,
    epoch: u64,
}

#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// A scheduler keeping at most `limit` messages in memory (at least 2).
    pub fn new(limit: usize) -> Self {
        Scheduler {
            shared: Arc::new(Shared {
                window: Mutex::new(Window {
                    order: BTreeMap::new(),
                    routes: HashMap::new(),
                    due: HashMap::new(),
                    pinned: 0,
                    horizon: Horizon::Start,
                    epoch: 0,
                    skipped: None,
                }),
                limit: limit.max(2),
                wakers: Mutex::default(),
                refill: Notify::new(),
            }),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.shared.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waker(&self, route: &str) -> Arc<Notify> {
        let mut wakers = self.shared.wakers.lock().unwrap_or_else(|p| p.into_inner());
        wakers.entry(route.to_string()).or_default().clone()
    }

    /// Makes `id` due on `route` at unix second `at`, replacing its earlier
    /// entry; kept in memory only if the window covers it (the index has it).
    pub fn schedule(&self, route: &str, at: u64, id: String) {
        self.put(route, at, id, false);
    }

    /// Like [`Scheduler::schedule`], for a retry the index does not know
    /// about: kept in memory whatever the horizon.
    pub fn retry_soon(&self, route: &str, at: u64, id: String) {
        self.put(route, at, id, true);
    }

    fn put(&self, route: &str, at: u64, id: String, pinned: bool) {
        let wake = {
            let mut w = self.window();
            w.remove(&id);
            let key = (at, id);
            let admitted = pinned || w.covers(&key);
            if admitted {
                w.insert(key, route.to_string(), pinned);
                if w.evict_over(self.shared.limit) {
                    self.shared.refill.notify_one();
                }
            } else if let Some(skipped) = &mut w.skipped {
                skipped.insert(key.1.clone(), (key, route.to_string()));
            }
            self.if_wanted_refill(&w);
            admitted
        };
        if wake {
            self.waker(route).notify_waiters();
        }
    }

    /// Forgets the whole window (a reload, a reopened queue): the next refill
    /// reads the index from the start. Wakes every waiting worker.
    pub fn clear(&self) {
        {
            let mut w = self.window();
            w.order.clear();
            w.routes.clear();
            w.due.clear();
            w.pinned = 0;
            w.horizon = Horizon::Start;
            w.epoch += 1;
        }
        self.shared.refill.notify_one();
        let wakers: Vec<_> = {
            let wakers = self.shared.wakers.lock().unwrap_or_else(|p| p.into_inner());
            wakers.values().cloned().collect()
        };
        for waker in wakers {
            waker.notify_waiters();
        }
    }

    /// Takes `id` out of the window (held or deleted messages).
    pub fn unschedule(&self, id: &str) {
        let mut w = self.window();
        w.remove(id);
        if let Some(skipped) = &mut w.skipped {
            skipped.remove(id);
        }
        self.if_wanted_refill(&w);
    }

    /// Wakes the refill task if the window wants a page: after anything
    /// that shrank it (a pop, an unschedule, an entry moved beyond the
    /// horizon), or the entries past its horizon would wait for a pop that
    /// may never come.
    fn if_wanted_refill(&self, w: &Window) {
        if w.wanted(self.shared.limit).is_some() {
            self.shared.refill.notify_one();
        }
    }

    /// Messages in the window on a route (due or not).
    pub fn len(&self, route: &str) -> usize {
        self.window().routes.get(route).map_or(0, BTreeSet::len)
    }

    /// Messages in the window.
    pub fn in_memory(&self) -> usize {
        self.window().order.len()
    }

    pub fn is_empty(&self, route: &str) -> bool {
        self.len(route) == 0
    }

    /// The refill the window wants now, if any (once it is down to half its
    /// limit and the index has entries beyond it), started: the caller reads
    /// the page and hands it to [`Scheduler::refilled`]. One refill at a
    /// time (the caller makes sure): starting one forgets what another
    /// noted as skipped.
    pub fn refill_from(&self) -> Option<Refill> {
        let mut w = self.window();
        let after = w.wanted(self.shared.limit)?;
        let room = self.shared.limit.saturating_sub(w.order.len());
        w.skipped = Some(HashMap::new());
        Some(Refill {
            after,
            room,
            epoch: w.epoch,
        })
    }

    /// Waits until a refill is wanted.
    pub async fn wait_refill(&self) {
        loop {
            let notified = self.shared.refill.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.window().wanted(self.shared.limit).is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Applies a refill: `found` are the entries read after `refill.after`
    /// that still stand, as (route, due, id); `last` the last entry read;
    /// `complete` whether the index ended before the page did. False if the
    /// window moved meanwhile: the caller reads again.
    pub fn refilled(
        &self,
        refill: &Refill,
        found: Vec<(String, u64, String)>,
        last: Option<Key>,
        complete: bool,
    ) -> bool {
        let mut routes = Vec::new();
        {
            let mut w = self.window();
            let skipped = w.skipped.take().unwrap_or_default();
            if w.epoch != refill.epoch || w.after() != refill.after {
                return false;
            }
            w.horizon = match last {
                _ if complete => Horizon::End,
                Some(key) => Horizon::Upto(key),
                None => w.horizon.clone(),
            };
            // Scheduled while the page was read: newer than what it says.
            let skipped: Vec<_> = skipped
                .into_values()
                .filter(|(key, _)| w.covers(key))
                .collect();
            let found = found.into_iter().map(|(route, at, id)| ((at, id), route));
            for (key, route) in skipped.into_iter().chain(found) {
                if w.due.contains_key(&key.1) {
                    continue;
                }
                routes.push(route.clone());
                w.insert(key, route, false);
            }
            w.evict_over(self.shared.limit);
        }
        routes.sort();
        routes.dedup();
        for route in routes {
            self.waker(&route).notify_waiters();
        }
        true
    }

    /// Waits for the next due message of `route`. With `idle`, gives up after that
    /// long without one (so a worker can close its idle connection) and returns None.
    pub async fn next(&self, route: &str, idle: Option<Duration>) -> Option<String> {
        let waker = self.waker(route);
        let give_up = idle.map(|d| Instant::now() + d);
        loop {
            let notified = waker.notified();
            tokio::pin!(notified);
            // Registered before looking, so a schedule() in between is not missed.
            notified.as_mut().enable();
            let wait = match self.take_due(route) {
                Ok(id) => return Some(id),
                Err(wait) => wait,
            };
            let due = wait.map(|w| Instant::now() + w);
            notified_or_until(notified.as_mut(), earliest(due, give_up)).await;
            if let Some(g) = give_up {
                if Instant::now() >= g {
                    return None;
                }
            }
        }
    }

    /// The first due message of `route`, taken out of the window; or how long
    /// until its first entry is due (None: it has none).
    fn take_due(&self, route: &str) -> Result<String, Option<Duration>> {
        let mut w = self.window();
        let first = w.routes.get(route).and_then(|s| s.first().cloned());
        let Some((at, id)) = first else {
            return Err(None);
        };
        let now = unix_now();
        if at > now {
            return Err(Some(Duration::from_secs(at - now)));
        }
        w.remove(&id);
        self.if_wanted_refill(&w);
        Ok(id)
    }
}

impl Window {
    /// Where a refill would read from, if one is wanted: the window is down
    /// to half of `limit` and the index has entries beyond it.
    fn wanted(&self, limit: usize) -> Option<Option<Key>> {
        let room = limit.saturating_sub(self.order.len());
        match &self.horizon {
            Horizon::End => None,
            Horizon::Start => Some(None),
            Horizon::Upto(key) => (room * 2 >= limit).then(|| Some(key.clone())),
        }
    }

    fn covers(&self, key: &Key) -> bool {
        match &self.horizon {
            Horizon::Start => false,
            Horizon::Upto(h) => key <= h,
            Horizon::End => true,
        }
    }

    /// Where the next refill reads from.
    fn after(&self) -> Option<Key> {
        match &self.horizon {
            Horizon::Upto(key) => Some(key.clone()),
            Horizon::Start | Horizon::End => None,
        }
    }

    fn insert(&mut self, key: Key, route: String, pinned: bool) {
        self.pinned += usize::from(pinned);
        self.due.insert(key.1.clone(), key.0);
        self.routes
            .entry(route.clone())
            .or_default()
            .insert(key.clone());
        self.order.insert(key, Entry { route, pinned });
    }

    fn remove(&mut self, id: &str) {
        let Some(at) = self.due.remove(id) else {
            return;
        };
        let key = (at, id.to_string());
        if let Some(entry) = self.order.remove(&key) {
            self.pinned -= usize::from(entry.pinned);
            if let Some(set) = self.routes.get_mut(&entry.route) {
                set.remove(&key);
                if set.is_empty() {
                    self.routes.remove(&entry.route);
                }
            }
        }
    }

    /// Forgets the latest unpinned entries beyond `limit` (the index has
    /// them) and lowers the horizon to the last one kept. True if any went.
    fn evict_over(&mut self, limit: usize) -> bool {
        if self.order.len() <= limit || self.pinned == self.order.len() {
            return false;
        }
        let mut over = self.order.len() - limit;
        let mut last_gone = None;
        while over > 0 {
            let Some(key) = self
                .order
                .iter()
                .rev()
                .find(|(_, e)| !e.pinned)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&key.1);
            last_gone = Some(key);
            over -= 1;
        }
        let Some(gone) = last_gone else {
            return false;
        };
        // Everything kept sorts before what went; the horizon is the last
        // unpinned entry kept, or just before the first that went.
        self.horizon = match self.order.iter().rev().find(|(_, e)| !e.pinned) {
            Some((k, _)) => Horizon::Upto(k.clone()),
            None => Horizon::Upto((gone.0.saturating_sub(1), String::new())),
        };
        self.epoch += 1;
        true
    }
}

/// The earlier of two optional instants (None: never).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Waits until `notified` fires or `until` passes, whichever comes first
/// (without `until`, for the notification alone). The workers' sleeps, here
/// and in the rate limiter, are all this: never a poll.
pub(crate) async fn notified_or_until(notified: Pin<&mut Notified<'_>>, until: Option<Instant>) {
    match until {
        Some(at) => {
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        None => notified.await,
    }
}

#[cfg(test)]
mod tests;

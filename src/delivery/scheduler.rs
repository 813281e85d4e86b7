//! Which message is due next, per route, from a bounded window of the queue.
//!
//! Every queued message that may be tried has an entry in the spool's due
//! index on disk (`spool::due`), sorted by route, then (due time, id). Each
//! route has a lane here: a window of its part of the index, every entry up
//! to a horizon, at most `limit` of them. A queue of a million messages then
//! costs no more memory than `limit` per route, a start reads one page of
//! each route's index rather than the whole queue, and a route that is slow
//! or rate-limited fills only its own lane: the others' messages come in
//! through theirs.
//!
//! The invariant that keeps every message on a schedule: an entry at or
//! below its lane's horizon is in the lane (or its message is in an
//! attempt, whose end schedules it again); one above it is read back from
//! the index by a refill ([`Scheduler::refill_from`], run by the daemon)
//! once the lane has room. Scheduling a message above the horizon
//! therefore only drops it from memory: the spool has already written its
//! entry. A lane over its limit forgets its latest entries and lowers its
//! horizon below them. Retries that live only in memory (a message a queue
//! command holds, a failed bookkeeping write) are pinned: never forgotten,
//! whatever the horizon.
//!
//! Each message has at most one entry in memory, on one lane; the envelope
//! in the store decides what is really due.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::unix_now;

/// Messages of a route kept in memory when the configuration does not say.
pub const DEFAULT_LIMIT: usize = 20_000;

type Key = (u64, String);

/// Gives every lane an epoch no earlier lane had.
static EPOCHS: AtomicU64 = AtomicU64::new(0);

/// How much of its route's part of the due index a lane covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Horizon {
    /// Nothing yet: a refill reads from the start.
    Start,
    /// Every entry up to and including this one.
    Upto(Key),
    /// All of it.
    End,
}

/// One route's window.
struct Lane {
    /// The entries, each with whether it is pinned.
    order: BTreeMap<Key, bool>,
    pinned: usize,
    horizon: Horizon,
    /// Changed whenever the horizon moves other than by a refill, so that a
    /// refill read against the old one is not applied.
    epoch: u64,
    /// While a refill reads the index: the entries scheduled beyond the
    /// horizon meanwhile, by id. The page may have been read before they
    /// were written; the refill adds those its new horizon covers.
    skipped: Option<HashMap<String, Key>>,
}

struct Window {
    lanes: HashMap<String, Lane>,
    /// Where each message in memory is: its route and due time.
    due: HashMap<String, (String, u64)>,
}

struct Shared {
    window: Mutex<Window>,
    limit: usize,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    refill: Notify,
}

/// A refill to do: the entries of `route`'s index after `after`, `room` of
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill {
    pub route: String,
    pub after: Option<Key>,
    pub room: usize,
    epoch: u64,
}

#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// A scheduler keeping at most `limit` messages of each route in memory
    /// (at least 2).
    pub fn new(limit: usize) -> Self {
        Scheduler {
            shared: Arc::new(Shared {
                window: Mutex::new(Window {
                    lanes: HashMap::new(),
                    due: HashMap::new(),
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
    /// entry; kept in memory only if the lane covers it (the index has it).
    pub fn schedule(&self, route: &str, at: u64, id: String) {
        self.put(route, at, id, false);
    }

    /// Like [`Scheduler::schedule`], for a retry the index does not know
    /// about: kept in memory whatever the horizon.
    pub fn retry_soon(&self, route: &str, at: u64, id: String) {
        self.put(route, at, id, true);
    }

    fn put(&self, route: &str, at: u64, id: String, pinned: bool) {
        let limit = self.shared.limit;
        let wake = {
            let mut w = self.window();
            w.forget(&id);
            let key = (at, id);
            let lane = w.lane(route);
            let admitted = pinned || lane.covers(&key);
            let mut evicted = Vec::new();
            if admitted {
                lane.insert(key.clone(), pinned);
                evicted = lane.evict_over(limit);
            } else if let Some(skipped) = &mut lane.skipped {
                skipped.insert(key.1.clone(), key.clone());
            }
            if admitted {
                w.due.insert(key.1, (route.to_string(), at));
            }
            for gone in &evicted {
                w.due.remove(gone);
            }
            self.if_wanted_refill(&w);
            admitted
        };
        if wake {
            self.waker(route).notify_waiters();
        }
    }

    /// Forgets every lane (a reload, a reopened queue) and starts one for
    /// each of `routes`: the next refill reads each route's index from the
    /// start. Wakes every waiting worker.
    pub fn reset<'a>(&self, routes: impl IntoIterator<Item = &'a String>) {
        {
            let mut w = self.window();
            w.lanes.clear();
            w.due.clear();
            for route in routes {
                w.lane(route);
            }
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

    /// Takes `id` out of memory (held or deleted messages).
    pub fn unschedule(&self, id: &str) {
        let mut w = self.window();
        w.forget(id);
        self.if_wanted_refill(&w);
    }

    /// Wakes the refill task if a lane wants a page: after anything that
    /// shrank one (a pop, an unschedule, an entry moved beyond the horizon),
    /// or the entries past its horizon would wait for a pop that may never
    /// come.
    fn if_wanted_refill(&self, w: &Window) {
        if w.wanting(self.shared.limit).is_some() {
            self.shared.refill.notify_one();
        }
    }

    /// Messages in memory on a route (due or not).
    pub fn len(&self, route: &str) -> usize {
        self.window().lanes.get(route).map_or(0, |l| l.order.len())
    }

    /// Messages in memory.
    pub fn in_memory(&self) -> usize {
        self.window().due.len()
    }

    pub fn is_empty(&self, route: &str) -> bool {
        self.len(route) == 0
    }

    /// A refill some lane wants now, if any (once it is down to half its
    /// limit and the index has entries beyond it), started: the caller reads
    /// the page and hands it to [`Scheduler::refilled`]. One refill at a
    /// time (the caller makes sure): starting one forgets what another
    /// noted as skipped.
    pub fn refill_from(&self) -> Option<Refill> {
        let mut w = self.window();
        let (route, after) = w.wanting(self.shared.limit)?;
        let lane = w.lanes.get_mut(&route)?;
        let room = self.shared.limit.saturating_sub(lane.order.len());
        lane.skipped = Some(HashMap::new());
        Some(Refill {
            route,
            after,
            room,
            epoch: lane.epoch,
        })
    }

    /// Waits until a refill is wanted.
    pub async fn wait_refill(&self) {
        loop {
            let notified = self.shared.refill.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.window().wanting(self.shared.limit).is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Applies a refill: `found` are the entries of the route read after
    /// `refill.after` that still stand, as (due, id); `last` the last entry
    /// read; `complete` whether the index ended before the page did. False
    /// if the lane moved meanwhile: the caller reads again.
    pub fn refilled(
        &self,
        refill: &Refill,
        found: Vec<Key>,
        last: Option<Key>,
        complete: bool,
    ) -> bool {
        let limit = self.shared.limit;
        let added = {
            let mut w = self.window();
            let Window { lanes, due, .. } = &mut *w;
            let Some(lane) = lanes.get_mut(&refill.route) else {
                return false;
            };
            let skipped = lane.skipped.take().unwrap_or_default();
            if lane.epoch != refill.epoch || lane.after() != refill.after {
                return false;
            }
            lane.horizon = match last {
                _ if complete => Horizon::End,
                Some(key) => Horizon::Upto(key),
                None => lane.horizon.clone(),
            };
            // Scheduled while the page was read: newer than what it says.
            let skipped: Vec<Key> = skipped
                .into_values()
                .filter(|key| lane.covers(key))
                .collect();
            let mut added = 0;
            for key in skipped.into_iter().chain(found) {
                if due.contains_key(&key.1) {
                    continue;
                }
                due.insert(key.1.clone(), (refill.route.clone(), key.0));
                lane.insert(key, false);
                added += 1;
            }
            for gone in lane.evict_over(limit) {
                due.remove(&gone);
            }
            added
        };
        if added > 0 {
            self.waker(&refill.route).notify_waiters();
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

    /// The first due message of `route`, taken out of memory; or how long
    /// until its first entry is due (None: it has none).
    fn take_due(&self, route: &str) -> Result<String, Option<Duration>> {
        let mut w = self.window();
        let first = w
            .lanes
            .get(route)
            .and_then(|l| l.order.first_key_value())
            .map(|(k, _)| k.clone());
        let Some((at, id)) = first else {
            return Err(None);
        };
        let now = unix_now();
        if at > now {
            return Err(Some(Duration::from_secs(at - now)));
        }
        w.forget(&id);
        self.if_wanted_refill(&w);
        Ok(id)
    }
}

impl Window {
    /// The lane of `route`, started (from the start of its index) if new.
    fn lane(&mut self, route: &str) -> &mut Lane {
        self.lanes
            .entry(route.to_string())
            .or_insert_with(Lane::new)
    }

    /// Takes `id` out of memory, and out of any refill's notes.
    fn forget(&mut self, id: &str) {
        if let Some((route, at)) = self.due.remove(id) {
            if let Some(lane) = self.lanes.get_mut(&route) {
                lane.remove(&(at, id.to_string()));
            }
        }
        for lane in self.lanes.values_mut() {
            if let Some(skipped) = &mut lane.skipped {
                skipped.remove(id);
            }
        }
    }

    /// A lane that wants a refill, and where it would read from.
    fn wanting(&self, limit: usize) -> Option<(String, Option<Key>)> {
        self.lanes
            .iter()
            .find_map(|(route, lane)| lane.wanted(limit).map(|after| (route.clone(), after)))
    }
}

impl Lane {
    fn new() -> Lane {
        Lane {
            order: BTreeMap::new(),
            pinned: 0,
            horizon: Horizon::Start,
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            skipped: None,
        }
    }

    /// Where a refill would read from, if one is wanted: the lane is down
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

    fn insert(&mut self, key: Key, pinned: bool) {
        self.pinned += usize::from(pinned);
        self.order.insert(key, pinned);
    }

    fn remove(&mut self, key: &Key) {
        if let Some(pinned) = self.order.remove(key) {
            self.pinned -= usize::from(pinned);
        }
    }

    /// Forgets the latest unpinned entries beyond `limit` (the index has
    /// them) and lowers the horizon to the last one kept. Returns the ids
    /// forgotten.
    fn evict_over(&mut self, limit: usize) -> Vec<String> {
        let mut gone = Vec::new();
        if self.order.len() <= limit || self.pinned == self.order.len() {
            return gone;
        }
        let mut over = self.order.len() - limit;
        let mut last_gone = None;
        while over > 0 {
            let Some(key) = self
                .order
                .iter()
                .rev()
                .find(|(_, pinned)| !**pinned)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&key);
            gone.push(key.1.clone());
            last_gone = Some(key);
            over -= 1;
        }
        let Some(last) = last_gone else {
            return gone;
        };
        // Everything kept sorts before what went; the horizon is the last
        // unpinned entry kept, or just before the first that went.
        self.horizon = match self.order.iter().rev().find(|(_, pinned)| !**pinned) {
            Some((k, _)) => Horizon::Upto(k.clone()),
            None => Horizon::Upto((last.0.saturating_sub(1), String::new())),
        };
        self.epoch = EPOCHS.fetch_add(1, Ordering::Relaxed);
        gone
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

//! Per-route rate limits: never more than `count` messages in any rolling
//! window of each of the route's `rate`s, shared by all the route's workers.
//!
//! A worker takes a [`Permit`] before it asks the scheduler for a message, so
//! mail the route may not send yet stays on the schedule, unclaimed, where a
//! reload, a flush or a hold still finds it; a worker without a permit sleeps
//! until the exact instant one frees up (or a permit is given back), never
//! polling.
//!
//! The invariant: a send holds one slot of every window from the moment its
//! permit is taken until one window after its attempt *ended*, and no more
//! than `count` slots are ever held. The upstream sees each message at some
//! instant within its attempt, so all the messages it sees in a window
//! `(x, x + window]` still hold their slots at `x + window`: never more than
//! `count`, however long connecting or sending took.
//!
//! Why a sliding log and not a token bucket: a bucket that allows a burst of
//! `count` refills while it drains, so "30/min" would let 59 through in the
//! first minute; a bucket without burst spaces "2000/day" to one message every
//! 43 seconds. Providers count over rolling windows, and a log of send times
//! is the one shape that allows the full `count` at once and never more in any
//! window. It costs 16 bytes per send in the longest window (10,000/day: 160
//! KB), bounded by [`crate::config::rate::MAX_COUNT`].
//!
//! The log lives in memory: after a restart the daily allowance starts full.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::scheduler::{earliest, notified_or_until};
use crate::config::rate::Rate;
use crate::config::Config;

/// The limiter of every rate-limited route, by route name.
#[derive(Default)]
pub struct Limiters {
    routes: Mutex<HashMap<String, Arc<RouteLimiter>>>,
}

impl Limiters {
    pub fn new(config: &Config) -> Limiters {
        let limiters = Limiters::default();
        limiters.configure(config);
        limiters
    }

    /// Puts a (re)loaded configuration's rates in force. A route that keeps a
    /// limit keeps its limiter, with what it sent and what is in flight, even
    /// if the numbers changed: otherwise a reload would be a way to send a
    /// second burst within the window. A route that loses its limit loses its
    /// limiter.
    pub fn configure(&self, config: &Config) {
        let mut routes = self.lock();
        routes.retain(|name, _| config.routes.get(name).is_some_and(|r| !r.rates.is_empty()));
        for route in config.routes.values().filter(|r| !r.rates.is_empty()) {
            match routes.get(&route.name) {
                Some(limiter) => limiter.set_rates(&route.rates),
                None => {
                    let limiter = Arc::new(RouteLimiter::new(&route.rates));
                    routes.insert(route.name.clone(), limiter);
                }
            }
        }
    }

    /// The route's limiter; None for a route without `rate`.
    pub fn get(&self, route: &str) -> Option<Arc<RouteLimiter>> {
        self.lock().get(route).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<RouteLimiter>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct RouteLimiter {
    state: Mutex<State>,
    /// Woken when a slot may have freed up other than by time passing: a
    /// permit was given back or spent, or the rates changed.
    settled: Notify,
}

struct State {
    rates: Vec<Rate>,
    /// When each recent attempt ended, oldest first; kept for the longest window.
    sent: VecDeque<Instant>,
    /// Permits handed out and not yet spent or given back.
    pending: usize,
}

/// When the next permit can be had.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Now,
    At(Instant),
    /// Only once a pending permit settles: every slot is held by one.
    Settle,
}

impl RouteLimiter {
    pub fn new(rates: &[Rate]) -> RouteLimiter {
        RouteLimiter {
            state: Mutex::new(State {
                rates: rates.to_vec(),
                sent: VecDeque::new(),
                pending: 0,
            }),
            settled: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_rates(&self, rates: &[Rate]) {
        {
            let mut s = self.lock();
            if s.rates == rates {
                return;
            }
            s.rates = rates.to_vec();
        }
        self.settled.notify_waiters();
    }

    /// Waits for a permit to send one message. With `give_up`, returns None if
    /// none is free by then (so the worker can close its idle connection).
    /// Cancel-safe: nothing is reserved until it returns a permit.
    pub async fn acquire(self: &Arc<Self>, give_up: Option<Instant>) -> Option<Permit> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before looking, so a permit settling in between is not missed.
            settled.as_mut().enable();
            let now = Instant::now();
            let free_at = {
                let mut s = self.lock();
                s.forget_expired(now);
                match s.next(now) {
                    Next::Now => {
                        s.pending += 1;
                        return Some(Permit {
                            limiter: self.clone(),
                            spent: false,
                        });
                    }
                    Next::At(at) => Some(at),
                    Next::Settle => None,
                }
            };
            if give_up.is_some_and(|g| now >= g) {
                return None;
            }
            notified_or_until(settled.as_mut(), earliest(free_at, give_up)).await;
        }
    }
}

impl State {
    /// Drops the sends that no window counts any more.
    fn forget_expired(&mut self, now: Instant) {
        let longest = self
            .rates
            .iter()
            .map(Rate::window)
            .max()
            .unwrap_or_default();
        while self.sent.front().is_some_and(|&t| expired(t, longest, now)) {
            self.sent.pop_front();
        }
    }

    fn next(&self, now: Instant) -> Next {
        let mut free_at: Option<Instant> = None;
        for rate in &self.rates {
            let window = rate.window();
            let count = rate.count as usize;
            let first_live = self.sent.partition_point(|&t| expired(t, window, now));
            let used = self.sent.len() - first_live + self.pending;
            if used < count {
                continue;
            }
            if self.pending >= count {
                return Next::Settle;
            }
            // `used - count + 1` live sends must leave the window; this is the
            // last of them (it exists because pending < count).
            let last = first_live + (used - count);
            match self.sent.get(last).and_then(|t| t.checked_add(window)) {
                Some(at) => free_at = Some(free_at.map_or(at, |f| f.max(at))),
                None => return Next::Settle,
            }
        }
        free_at.map_or(Next::Now, Next::At)
    }
}

/// A send at `t` no longer counts in a window of `window` at `now`. One whose
/// end lies past the clock's range counts for ever rather than panicking.
fn expired(t: Instant, window: Duration, now: Instant) -> bool {
    t.checked_add(window).is_some_and(|end| end <= now)
}

/// The right to send one message. Spend it when the attempt has ended; a
/// permit dropped unspent (no message was due, the worker stopped) frees its
/// slot for another worker at once.
pub struct Permit {
    limiter: Arc<RouteLimiter>,
    spent: bool,
}

impl Permit {
    pub fn spend(mut self) {
        self.spent = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut s = self.limiter.lock();
            s.pending = s.pending.saturating_sub(1);
            // An attempt that panicked may have sent: count it.
            if self.spent || std::thread::panicking() {
                s.sent.push_back(Instant::now());
            }
        }
        self.limiter.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests;

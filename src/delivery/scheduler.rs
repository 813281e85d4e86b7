//! Which message is due next, per route. Only ids and due times live here (a few
//! dozen bytes a message), so the queue can hold far more mail than memory.
//!
//! Each message has at most one live entry: scheduling it again (a queue flush,
//! a release) replaces its due time, and the heap entries left behind are
//! skipped as stale when they come up. The scheduler is only a hint; the envelope
//! in the store decides what is really due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::unix_now;

#[derive(Default)]
struct Entries {
    heap: BinaryHeap<Reverse<(u64, String)>>,
    /// The live due time of each scheduled id.
    due: HashMap<String, u64>,
}

#[derive(Default)]
struct RouteQueue {
    heap: Mutex<Entries>,
    notify: Notify,
}

#[derive(Clone, Default)]
pub struct Scheduler {
    routes: Arc<Mutex<HashMap<String, Arc<RouteQueue>>>>,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    fn route(&self, name: &str) -> Arc<RouteQueue> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.entry(name.to_string()).or_default().clone()
    }

    /// Every route's queue, taken out of the map's lock.
    fn queues(&self) -> Vec<Arc<RouteQueue>> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Makes `id` due on `route` at unix second `at`, replacing an earlier entry.
    pub fn schedule(&self, route: &str, at: u64, id: String) {
        let q = self.route(route);
        {
            let mut e = q.heap.lock().unwrap_or_else(|p| p.into_inner());
            e.due.insert(id.clone(), at);
            e.heap.push(Reverse((at, id)));
        }
        q.notify.notify_waiters();
    }

    /// Forgets every entry of every route (a reload schedules the queue anew)
    /// and wakes the waiting workers.
    pub fn clear(&self) {
        for q in self.queues() {
            {
                let mut e = q.heap.lock().unwrap_or_else(|p| p.into_inner());
                e.heap.clear();
                e.due.clear();
            }
            q.notify.notify_waiters();
        }
    }

    /// Takes `id` off `route`'s schedule (held or deleted messages).
    pub fn unschedule(&self, route: &str, id: &str) {
        let q = self.route(route);
        let mut e = q.heap.lock().unwrap_or_else(|p| p.into_inner());
        e.due.remove(id);
    }

    /// Number of messages scheduled on a route (due or not).
    pub fn len(&self, route: &str) -> usize {
        self.route(route)
            .heap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .due
            .len()
    }

    /// Number of messages scheduled on all routes.
    pub fn total(&self) -> usize {
        self.queues()
            .iter()
            .map(|q| q.heap.lock().unwrap_or_else(|p| p.into_inner()).due.len())
            .sum()
    }

    pub fn is_empty(&self, route: &str) -> bool {
        self.len(route) == 0
    }

    /// Waits for the next due message of `route`. With `idle`, gives up after that
    /// long without one (so a worker can close its idle connection) and returns None.
    pub async fn next(&self, route: &str, idle: Option<Duration>) -> Option<String> {
        let q = self.route(route);
        let give_up = idle.map(|d| Instant::now() + d);
        loop {
            let notified = q.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a schedule() in between is not missed.
            notified.as_mut().enable();
            let wait = {
                let mut e = q.heap.lock().unwrap_or_else(|p| p.into_inner());
                let now = unix_now();
                loop {
                    let (at, live) = match e.heap.peek() {
                        Some(Reverse((at, id))) => (*at, e.due.get(id) == Some(at)),
                        None => break None,
                    };
                    if !live {
                        e.heap.pop();
                        continue;
                    }
                    if at > now {
                        break Some(Duration::from_secs(at - now));
                    }
                    if let Some(Reverse((_, id))) = e.heap.pop() {
                        e.due.remove(&id);
                        return Some(id);
                    }
                }
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn due_order_and_wakeup() {
        let s = Scheduler::new();
        let now = unix_now();
        s.schedule("r", now + 3600, "later".into());
        s.schedule("r", now, "b".into());
        s.schedule("r", now.saturating_sub(5), "a".into());
        assert_eq!(s.next("r", None).await.as_deref(), Some("a"));
        assert_eq!(s.next("r", None).await.as_deref(), Some("b"));
        // Nothing due: an idle wait gives up.
        assert_eq!(s.next("r", Some(Duration::from_millis(50))).await, None);
        // A waiting worker is woken by a new message.
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.next("r", None).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.schedule("r", now, "c".into());
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.as_deref(), Some("c"));
        assert_eq!(s.len("r"), 1);
        assert!(s.is_empty("other"));
    }

    #[tokio::test]
    async fn rescheduling_replaces_and_unscheduling_removes() {
        let s = Scheduler::new();
        let now = unix_now();
        s.schedule("r", now + 3600, "m".into());
        // A flush: due now, the old entry becomes stale.
        s.schedule("r", now, "m".into());
        assert_eq!(s.len("r"), 1);
        assert_eq!(s.next("r", None).await.as_deref(), Some("m"));
        assert_eq!(s.next("r", Some(Duration::from_millis(20))).await, None);
        // Scheduled twice at the same time: still handed out once.
        s.schedule("r", now, "n".into());
        s.schedule("r", now, "n".into());
        assert_eq!(s.next("r", None).await.as_deref(), Some("n"));
        assert_eq!(s.next("r", Some(Duration::from_millis(20))).await, None);
        s.schedule("r", now, "held".into());
        s.unschedule("r", "held");
        assert!(s.is_empty("r"));
        assert_eq!(s.next("r", Some(Duration::from_millis(20))).await, None);
    }
}

//! Which message is due next, per route. Only ids and due times live here (a few
//! dozen bytes a message), so the queue can hold far more mail than memory.
//!
//! Each message has exactly one entry at a time: added on acceptance or at start-up,
//! taken by a worker, added again by that worker if recipients remain.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::unix_now;

#[derive(Default)]
struct RouteQueue {
    heap: Mutex<BinaryHeap<Reverse<(u64, String)>>>,
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

    /// Makes `id` due on `route` at unix second `at`.
    pub fn schedule(&self, route: &str, at: u64, id: String) {
        let q = self.route(route);
        q.heap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Reverse((at, id)));
        q.notify.notify_waiters();
    }

    /// Number of entries for a route (due or not).
    pub fn len(&self, route: &str) -> usize {
        self.route(route)
            .heap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self, route: &str) -> bool {
        self.len(route) == 0
    }

    /// Waits for the next due message of `route`. With `idle`, gives up after that
    /// long without one (so a worker can close its idle connection) and returns None.
    pub async fn next(&self, route: &str, idle: Option<Duration>) -> Option<String> {
        let q = self.route(route);
        let give_up = idle.map(|d| tokio::time::Instant::now() + d);
        loop {
            let notified = q.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a schedule() in between is not missed.
            notified.as_mut().enable();
            let wait = {
                let mut heap = q.heap.lock().unwrap_or_else(|p| p.into_inner());
                let now = unix_now();
                match heap.peek() {
                    Some(Reverse((at, _))) if *at <= now => {
                        return heap.pop().map(|Reverse((_, id))| id);
                    }
                    Some(Reverse((at, _))) => Some(Duration::from_secs(at - now)),
                    None => None,
                }
            };
            let wake = match (wait, give_up) {
                (Some(w), Some(g)) => Some((tokio::time::Instant::now() + w).min(g)),
                (Some(w), None) => Some(tokio::time::Instant::now() + w),
                (None, g) => g,
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
            if let Some(g) = give_up {
                if tokio::time::Instant::now() >= g {
                    return None;
                }
            }
        }
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
}

use std::collections::BTreeSet;

use super::*;

/// A scheduler with one route, "r", whose lane has not read its index yet.
fn one_route(limit: usize) -> Scheduler {
    let s = Scheduler::new(limit);
    s.reset([&"r".to_string()]);
    s
}

/// A scheduler that has read an empty index: it covers everything.
fn covering_all(limit: usize) -> Scheduler {
    let s = one_route(limit);
    let r = s.refill_from().unwrap();
    assert!(s.refilled(&r, Vec::new(), None, true));
    s
}

#[tokio::test]
async fn due_order_and_wakeup() {
    let s = covering_all(100);
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
    tokio::task::yield_now().await;
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
    let s = covering_all(100);
    let now = unix_now();
    s.schedule("r", now + 3600, "m".into());
    // A flush: due now, the old entry is gone.
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
    s.unschedule("held");
    assert!(s.is_empty("r"));
    assert_eq!(s.next("r", Some(Duration::from_millis(20))).await, None);
}

fn id(n: u64) -> String {
    format!("{n:014X}")
}

/// A stand-in for the spool's due index of route "r": a sorted set of
/// (due, id).
struct Index(BTreeSet<Key>);

impl Index {
    fn refill(&self, s: &Scheduler) -> bool {
        let Some(r) = s.refill_from() else {
            return false;
        };
        assert_eq!(r.route, "r");
        let page: Vec<Key> = self
            .0
            .iter()
            .filter(|k| r.after.as_ref().is_none_or(|a| *k > a))
            .take(r.room.max(1))
            .cloned()
            .collect();
        let complete = page.len() < r.room.max(1);
        let last = page.last().cloned();
        assert!(s.refilled(&r, page, last, complete));
        true
    }
}

/// A window of 10 over 1,000 entries hands out every one, in due order,
/// each once, refilling as it empties; what is scheduled meanwhile (inside
/// or beyond the horizon) is not lost.
#[tokio::test]
async fn a_small_window_hands_out_every_entry_once_in_order() {
    let s = one_route(10);
    let now = unix_now();
    let mut index = Index((0..1000u64).map(|n| (now - 2000 + n, id(n))).collect());
    assert!(index.refill(&s));
    assert_eq!(s.in_memory(), 10);
    assert!(s.refill_from().is_none(), "full: no refill");
    let mut seen = Vec::new();
    while let Some(got) = s.next("r", Some(Duration::from_millis(1))).await {
        let at = index.0.iter().find(|k| k.1 == got).unwrap().clone();
        index.0.remove(&at);
        seen.push(at);
        if seen.len() == 500 {
            // Arrivals: one due before everything, one due after it all.
            for (at, n) in [(now - 5000, 5000), (now - 1, 5001)] {
                index.0.insert((at, id(n)));
                s.schedule("r", at, id(n));
            }
        }
        while index.refill(&s) {}
    }
    assert!(index.0.is_empty(), "left: {:?}", index.0);
    assert_eq!(seen.len(), 1002);
    // The early arrival next, the late one last, the rest in due order.
    assert_eq!(seen[500], (now - 5000, id(5000)));
    assert_eq!(seen.last(), Some(&(now - 1, id(5001))));
    let rest: Vec<Key> = [&seen[..500], &seen[501..]].concat();
    let mut sorted = rest.clone();
    sorted.sort();
    assert_eq!(rest, sorted);
}

/// An entry scheduled beyond the horizon while a refill reads the index
/// (after the page was read) is added by that refill if it covers it.
#[test]
fn a_schedule_during_a_refill_is_not_lost() {
    let s = one_route(4);
    let r = s.refill_from().unwrap();
    // The page, read before "late" was written: two entries, more follow.
    s.schedule("r", 15, "late".into());
    let found = vec![(10, "a".into()), (20, "b".into())];
    assert!(s.refilled(&r, found, Some((20, "b".into())), false));
    assert_eq!(s.in_memory(), 3, "a, late and b");
    // Beyond the new horizon: left to the index.
    s.schedule("r", 30, "c".into());
    assert_eq!(s.in_memory(), 3);
}

/// Over its limit the window forgets its latest entries and lowers its
/// horizon; pinned retries stay whatever happens.
#[test]
fn over_the_limit_the_latest_go_and_pins_stay() {
    let s = covering_all(3);
    s.retry_soon("r", 1_000, "pinned".into());
    for n in 1..=4u64 {
        s.schedule("r", n, id(n));
    }
    assert_eq!(s.in_memory(), 3, "1, 2 and the pin");
    // The horizon is now entry 2: 3 and later wait in the index.
    s.schedule("r", 3, id(3));
    assert_eq!(s.in_memory(), 3);
    let r = s.refill_from();
    assert!(r.is_none(), "no room yet");
    // A reset forgets everything, pins too; the next refill starts over.
    s.reset([&"r".to_string()]);
    assert_eq!(s.in_memory(), 0);
    assert_eq!(s.refill_from().map(|r| r.after), Some(None));
}

/// A refill read against a lane that moved (a reset) is refused.
#[test]
fn a_refill_against_a_moved_window_is_refused() {
    let s = one_route(10);
    let r = s.refill_from().unwrap();
    s.reset([&"r".to_string()]);
    assert!(!s.refilled(&r, vec![(1, "a".into())], None, true));
    assert_eq!(s.in_memory(), 0);
}

/// A window emptied by queue commands, with entries past its horizon, asks
/// for a refill: nothing else would (no pop is coming).
#[tokio::test]
async fn emptying_the_window_asks_for_a_refill() {
    let s = one_route(4);
    let r = s.refill_from().unwrap();
    let found = (0..4u64).map(|n| (n, id(n))).collect();
    assert!(s.refilled(&r, found, Some((3, id(3))), false));
    let waiting = tokio::spawn({
        let s = s.clone();
        async move { s.wait_refill().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "a full window wants nothing");
    for n in 0..4u64 {
        s.unschedule(&id(n));
    }
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the refill task is woken")
        .unwrap();
}

/// A route whose lane is full of messages due long ago (its upstream is
/// slow or rate-limited) keeps no other route's message waiting: each lane
/// reads its own route's index, and a new message on another route is
/// handed out at once.
#[tokio::test]
async fn a_full_lane_holds_up_no_other_route() {
    let s = Scheduler::new(4);
    s.reset([&"slow".to_string(), &"fast".to_string()]);
    let now = unix_now();
    let mut refills = 0;
    while let Some(r) = s.refill_from() {
        refills += 1;
        let page = if r.route == "slow" {
            (0..4u64).map(|n| (now - 10_000 + n, id(n))).collect()
        } else {
            Vec::new()
        };
        let last = page.last().cloned();
        let complete = r.route == "fast";
        assert!(s.refilled(&r, page, last, complete));
    }
    assert_eq!(refills, 2, "one page for each route");
    assert_eq!(s.len("slow"), 4, "the slow lane is full");
    // A message on the other route, due now, later than every slow one.
    s.schedule("fast", now, "urgent".into());
    assert_eq!(
        s.next("fast", Some(Duration::from_secs(5)))
            .await
            .as_deref(),
        Some("urgent")
    );
    assert_eq!(s.len("slow"), 4, "untouched");
    // The slow lane's own late arrival waits in its index.
    s.schedule("slow", now, "later".into());
    assert_eq!(s.len("slow"), 4);
}

/// A message moved from one route's lane to another's (a reload) while the
/// old lane's refill reads the index is not brought back to the old lane
/// by it: it comes in on its new lane's page.
#[test]
fn a_message_moved_between_lanes_is_on_one_only() {
    let s = Scheduler::new(10);
    s.reset([&"a".to_string(), &"b".to_string()]);
    let r = s.refill_from().unwrap();
    let (old, new) = if r.route == "a" {
        ("a", "b")
    } else {
        ("b", "a")
    };
    // Written beyond the old lane's horizon as its page is read...
    s.schedule(old, 5, "m".into());
    // ...then moved.
    s.schedule(new, 5, "m".into());
    assert!(s.refilled(&r, Vec::new(), None, true));
    assert_eq!(s.in_memory(), 0, "the new lane has not read its index yet");
    let r = s.refill_from().unwrap();
    assert_eq!(r.route, new);
    assert!(s.refilled(&r, vec![(5, "m".into())], None, true));
    assert_eq!(s.len(new), 1);
    assert!(s.is_empty(old));
    assert!(s.refill_from().is_none());
}

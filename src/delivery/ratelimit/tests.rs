//! The limiter on tokio's paused clock: time moves only when every task
//! sleeps, so the instants below are exact, and a limiter that polled instead
//! of sleeping would show up as extra polls (or hang the test).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use super::*;
use crate::config::rate::Unit;

fn limiter(rates: &[Rate]) -> Arc<RouteLimiter> {
    Arc::new(RouteLimiter::new(rates))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `acquire`, counting its polls: each poll after the first is a wakeup.
async fn acquire_counting(
    l: &Arc<RouteLimiter>,
    give_up: Option<Instant>,
    polls: &AtomicUsize,
) -> Option<Permit> {
    let mut f = std::pin::pin!(l.acquire(give_up));
    std::future::poll_fn(|cx| {
        polls.fetch_add(1, SeqCst);
        f.as_mut().poll(cx)
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn permits_are_spaced_by_the_window_and_never_early() {
    let l = limiter(&[Rate::new(3, Unit::Second)]);
    let start = Instant::now();
    let mut at = Vec::new();
    for _ in 0..10 {
        let polls = AtomicUsize::new(0);
        let p = acquire_counting(&l, None, &polls).await.expect("permit");
        // Ready at once, or one sleep until the exact instant: no polling.
        assert!(
            polls.load(SeqCst) <= 2,
            "{} polls for one permit",
            polls.load(SeqCst)
        );
        at.push(start.elapsed());
        p.spend();
    }
    let want: Vec<Duration> = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3].map(secs).to_vec();
    assert_eq!(at, want);
}

#[tokio::test(start_paused = true)]
async fn workers_sharing_a_route_never_exceed_the_limit_in_any_window() {
    let l = limiter(&[Rate::new(3, Unit::Second)]);
    let start = Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let left = Arc::new(AtomicUsize::new(12));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (l, seen, left) = (l.clone(), seen.clone(), left.clone());
        workers.push(tokio::spawn(async move {
            while left
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let p = l.acquire(None).await.expect("permit");
                // An attempt of 100 ms; the upstream sees the message halfway.
                tokio::time::sleep(Duration::from_millis(50)).await;
                seen.lock().unwrap().push(start.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
                p.spend();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen.len(), 12);
    for four in seen.windows(4) {
        assert!(four[3] - four[0] >= secs(1), "4 sends within 1s: {seen:?}");
    }
    // A slot comes back one window after its attempt ended: 3 every 1.1 s.
    let ms = |m: u64| Duration::from_millis(m);
    let want = [
        50, 50, 50, 1150, 1150, 1150, 2250, 2250, 2250, 3350, 3350, 3350,
    ]
    .map(ms);
    assert_eq!(seen, want);
}

#[tokio::test(start_paused = true)]
async fn every_rate_holds_and_a_day_is_a_day() {
    let l = limiter(&[Rate::new(2, Unit::Second), Rate::new(5, Unit::Day)]);
    let start = Instant::now();
    let mut at = Vec::new();
    for _ in 0..8 {
        let p = l.acquire(None).await.expect("permit");
        at.push(start.elapsed());
        p.spend();
    }
    let day = 86_400;
    let want = [0, 0, 1, 1, 2, day, day, day + 1].map(secs);
    assert_eq!(at, want);
}

#[tokio::test(start_paused = true)]
async fn a_slot_is_held_until_a_window_after_the_attempt_ended() {
    let l = limiter(&[Rate::new(1, Unit::Minute)]);
    let start = Instant::now();
    let p = l.acquire(None).await.expect("permit");
    tokio::time::sleep(secs(10)).await;
    p.spend();
    let _next = l.acquire(None).await.expect("permit");
    assert_eq!(start.elapsed(), secs(70));
}

#[tokio::test(start_paused = true)]
async fn an_unspent_permit_frees_its_slot_at_once() {
    let l = limiter(&[Rate::new(1, Unit::Minute)]);
    let start = Instant::now();
    // A worker holds the only slot while it waits for mail.
    let held = l.acquire(None).await.expect("permit");
    // Another gives up at its deadline: the slot is pending, not timed.
    assert!(l.acquire(Some(start + secs(3600))).await.is_none());
    assert_eq!(start.elapsed(), secs(3600));

    let l2 = l.clone();
    let waiter = tokio::spawn(async move {
        let polls = AtomicUsize::new(0);
        let p = acquire_counting(&l2, None, &polls).await;
        (Instant::now(), p.is_some(), polls.load(SeqCst))
    });
    tokio::time::sleep(secs(5)).await;
    drop(held);
    let (at, got, polls) = waiter.await.unwrap();
    assert!(got);
    assert_eq!(at - start, secs(3605));
    assert_eq!(polls, 2, "woken once, by the permit coming back");
}

#[tokio::test(start_paused = true)]
async fn giving_up_only_when_no_permit_is_free_by_then() {
    let l = limiter(&[Rate::new(1, Unit::Minute)]);
    let start = Instant::now();
    l.acquire(None).await.expect("permit").spend();
    assert!(l.acquire(Some(start + secs(5))).await.is_none());
    assert_eq!(start.elapsed(), secs(5));
    // Free exactly at the deadline: taken, not given up.
    let p = l.acquire(Some(start + secs(60))).await;
    assert!(p.is_some());
    assert_eq!(start.elapsed(), secs(60));
}

#[tokio::test(start_paused = true)]
async fn changed_rates_wake_the_waiters() {
    let l = limiter(&[Rate::new(1, Unit::Hour)]);
    let start = Instant::now();
    l.acquire(None).await.expect("permit").spend();
    let l2 = l.clone();
    let waiter = tokio::spawn(async move { l2.acquire(None).await.map(|_| Instant::now()) });
    tokio::time::sleep(secs(1)).await;
    l.set_rates(&[Rate::new(2, Unit::Hour)]);
    let at = waiter.await.unwrap().expect("permit");
    assert_eq!(at - start, secs(1));
}

fn config(routes: &str) -> Config {
    let text = format!("{routes}\n[routing]\ndefault = \"up\"\n");
    Config::parse(&text, "test.toml", Path::new("/tmp")).expect("config")
}

fn route(name: &str, rate: Option<&str>) -> String {
    let rate = rate
        .map(|r| format!("rate = \"{r}\"\n"))
        .unwrap_or_default();
    format!("[[route]]\nname = \"{name}\"\ntype = \"directory\"\npath = \"/tmp/x\"\n{rate}")
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_what_each_limited_route_has_sent() {
    let limiters = Limiters::new(&config(&format!(
        "{}{}{}",
        route("up", Some("1/min")),
        route("free", None),
        route("gone", Some("1/s"))
    )));
    assert!(limiters.get("free").is_none());
    assert!(limiters.get("gone").is_some());
    let up = limiters.get("up").expect("limited");
    up.acquire(None).await.expect("permit").spend();
    let now = Instant::now();

    // Same limits: the same limiter, still used up.
    limiters.configure(&config(&route("up", Some("1/min"))));
    let same = limiters.get("up").expect("limited");
    assert!(Arc::ptr_eq(&up, &same));
    assert!(same.acquire(Some(now)).await.is_none());
    assert!(limiters.get("gone").is_none());

    // Raised: the send already made counts towards the new limit.
    limiters.configure(&config(&route("up", Some("2/min"))));
    let raised = limiters.get("up").expect("limited");
    assert!(Arc::ptr_eq(&up, &raised));
    raised
        .acquire(Some(now))
        .await
        .expect("second of two")
        .spend();
    assert!(raised.acquire(Some(now)).await.is_none());

    // Unlimited: no limiter at all.
    limiters.configure(&config(&route("up", None)));
    assert!(limiters.get("up").is_none());
}

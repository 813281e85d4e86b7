//! The exim retry-schedule parser (`retry::Schedule`, the `retry` setting) and
//! the schedule it yields.
//!
//! Properties: a schedule that parses prints (`Display`, what `check` shows and
//! the queue stores) as text that parses back to the same schedule and prints
//! the same again; its cutoffs increase; `next` never panics, never schedules
//! into the past and gives up exactly after the final cutoff.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use smarthost::retry::{Retry, Schedule};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(schedule) = text.parse::<Schedule>() else {
        return;
    };
    let shown = schedule.to_string();
    let again: Schedule = shown
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} printed as {shown:?}, which fails: {e}"));
    assert_eq!(again, schedule, "{text:?} -> {shown:?}");
    assert_eq!(again.to_string(), shown);

    let cutoffs: Vec<Duration> = schedule.rules().iter().map(|r| r.cutoff()).collect();
    assert!(!cutoffs.is_empty() && !cutoffs[0].is_zero());
    assert!(cutoffs.windows(2).all(|w| w[0] < w[1]), "{shown}");
    let last = schedule.final_cutoff();
    assert_eq!(Some(&last), cutoffs.last());

    // Replay a few failures: punctual ones from a fixed start, and around the
    // extremes of the clock.
    let final_secs = last.as_secs();
    for first in [0u64, 1_700_000_000, u64::MAX - 10] {
        let (mut now, mut previous) = (first, None);
        for _ in 0..64 {
            match schedule.next(first, now, previous) {
                Retry::At { time, interval } => {
                    assert!(time >= now, "{shown}: scheduled into the past");
                    assert!(now - first < final_secs || final_secs == 0, "{shown}");
                    assert!(!interval.is_zero() || last.as_secs() == 0, "{shown}");
                    if time == now {
                        break;
                    }
                    (now, previous) = (time, Some(interval));
                }
                Retry::GiveUp => {
                    assert!(
                        now.saturating_sub(first) >= final_secs,
                        "{shown}: gave up early"
                    );
                    break;
                }
            }
        }
        if let Some(end) = first.checked_add(final_secs) {
            assert_eq!(schedule.next(first, end, None), Retry::GiveUp, "{shown}");
            let before = schedule.next(first, end - 1, None);
            assert!(matches!(before, Retry::At { .. }), "{shown}: {before:?}");
        }
    }
});

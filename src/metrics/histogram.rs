//! A fixed-bucket histogram of durations, updated with atomics only, so that a
//! delivery worker never waits for a scrape.
//!
//! Counts are kept per bucket (not cumulative) and summed at scrape time; the
//! `+Inf` count is derived from the same reads, so `_count` always equals it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds in seconds for delivery latency: a message through a healthy
/// smarthost takes well under a second, a deferred one minutes to hours, and
/// the default retry schedule gives up after four days.
pub const DELIVERY_BUCKETS: [f64; 17] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
    43200.0, 86400.0,
];

pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Observations above the last bound.
    overflow: AtomicU64,
    /// The sum in microseconds: integer atomics are all std offers, and a
    /// microsecond is far below what a mail relay's latency can resolve.
    sum_micros: AtomicU64,
}

/// What a scrape reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub overflow: u64,
    pub sum: f64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(self.overflow, |a, n| a.saturating_add(*n))
    }
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            overflow: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        // `le` is inclusive: a value equal to a bound belongs to that bucket.
        match self.bounds.iter().position(|b| seconds <= *b) {
            Some(i) => {
                if let Some(c) = self.counts.get(i) {
                    c.fetch_add(1, Relaxed);
                }
            }
            None => {
                self.overflow.fetch_add(1, Relaxed);
            }
        }
        // The float-to-int cast saturates, so no latency can wrap the sum.
        self.sum_micros
            .fetch_add((seconds * 1e6).round() as u64, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            overflow: self.overflow.load(Relaxed),
            sum: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        static BOUNDS: [f64; 3] = [0.5, 1.0, 60.0];
        let h = Histogram::new(&BOUNDS);
        for s in [0.0, 0.5, 0.75, 1.0, 59.0, 61.0, -3.0, f64::NAN] {
            h.observe(s);
        }
        let s = h.snapshot();
        // 0, 0.5, -3 (as 0) and NaN (as 0) | 0.75, 1 | 59 | 61
        assert_eq!(s.counts, vec![4, 2, 1]);
        assert_eq!(s.overflow, 1);
        assert_eq!(s.count(), 8);
        assert!((s.sum - 122.25).abs() < 1e-6, "{}", s.sum);
    }

    #[test]
    fn delivery_buckets_ascend_from_a_tenth_of_a_second_to_a_day() {
        assert!(DELIVERY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(DELIVERY_BUCKETS.first(), Some(&0.1));
        assert_eq!(DELIVERY_BUCKETS.last(), Some(&86400.0));
    }
}

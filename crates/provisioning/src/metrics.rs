//! What `/metrics` shows of the handlers' calls, counted by the delivery engine and the
//! before chain.

use std::collections::HashMap;
use std::sync::Mutex;

/// Counters for `/metrics`, shared by the delivery engine and the before chain.
#[derive(Default)]
pub struct Metrics {
    /// (handlers_id, outcome) → count; outcome is success, retry or failed.
    pub deliveries: Mutex<HashMap<(i64, &'static str), u64>>,
    /// Before-stage calls: (handlers_id, verdict) → count; verdict is allow, forbid or
    /// failure.
    pub before_calls: Mutex<HashMap<(i64, &'static str), u64>>,
    /// Call durations by handler (handlers_id → histogram), both stages: which endpoint
    /// is slow, and which before handler every request it judges waits for.
    pub durations: Mutex<HashMap<i64, Histogram>>,
}

impl Metrics {
    /// Counts a call of `handlers_id` under `label` in `counts`, and its duration.
    pub fn record(
        &self,
        counts: &Mutex<HashMap<(i64, &'static str), u64>>,
        handlers_id: i64,
        label: &'static str,
        duration: std::time::Duration,
    ) {
        *counts
            .lock()
            .expect("not poisoned")
            .entry((handlers_id, label))
            .or_default() += 1;
        self.durations
            .lock()
            .expect("not poisoned")
            .entry(handlers_id)
            .or_default()
            .observe(duration.as_secs_f64());
    }
}

/// A Prometheus histogram of call durations in seconds.
#[derive(Default, Debug, Clone)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// Bucket bounds in seconds.
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    /// One with no observation: every bucket at 0.
    pub fn empty() -> Self {
        Histogram {
            buckets: BUCKETS.iter().map(|b| (*b, 0)).collect(),
            ..Histogram::default()
        }
    }

    fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            *self = Histogram::empty();
        }
        for (bound, n) in &mut self.buckets {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

//! `billhook bench --recovering-handler SECS`: a second after handler whose endpoint
//! answers 503 for SECS once the events start, then 200, retried every second: every
//! client's queue for it waits behind a failing head meanwhile, and when the endpoint
//! comes back all of those heads fall due at once. The bench reports how long the
//! engine takes to deliver everything that piled up, beside the first handler's figures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

/// The receiver's side of the recovering endpoint.
#[derive(Default)]
pub struct Recovering {
    /// When it starts answering 200; none: not yet started (it answers 503).
    back_at: Mutex<Option<Instant>>,
    delivered: AtomicUsize,
    last: Mutex<Option<Instant>>,
}

impl Recovering {
    /// The handler's registration: every attempt a second apart, for as long as the
    /// schedule allows (50 delays).
    pub fn handler(task: &str) -> serde_json::Value {
        serde_json::json!({"name": "recovering", "event": "accounting.payments.create",
                           "task": task, "retry_schedule": vec![1; 50]})
    }

    /// Answers one call: 503 while down, else 200 (counted).
    pub fn answer(&self) -> StatusCode {
        let now = Instant::now();
        match *self.back_at.lock().expect("not poisoned") {
            Some(at) if now >= at => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                *self.last.lock().expect("not poisoned") = Some(now);
                StatusCode::OK
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The endpoint comes back `after` from now.
    pub fn back_after(&self, after: Duration) {
        *self.back_at.lock().expect("not poisoned") = Some(Instant::now() + after);
    }

    /// Waits until `n` deliveries have succeeded (or five minutes have passed); how many
    /// did, and how long after the endpoint came back the last one arrived.
    pub async fn drained(&self, n: usize) -> (usize, Option<Duration>) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.delivered.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let back_at = *self.back_at.lock().expect("not poisoned");
        let last = *self.last.lock().expect("not poisoned");
        let took = back_at
            .zip(last)
            .map(|(b, l)| l.saturating_duration_since(b));
        (self.delivered.load(Ordering::Relaxed), took)
    }
}

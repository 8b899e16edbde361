//! The logs' retention: what is older than it is pruned in the background (see
//! [`billhook_store::retention`]), in small batches so that other writes go between them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use billhook_domain::Timestamp;
use billhook_store::retention::{self, Position, Pruned};
use billhook_store::Db;
use tokio::sync::watch;

/// Rows of each kind one write transaction prunes at most.
const BATCH: i64 = 500;

/// Rows pruned since the process started, for `/metrics`: executions, events,
/// deliveries.
static PRUNED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// What this process pruned since it started.
pub fn pruned_so_far() -> Pruned {
    let [executions, events, deliveries] = &PRUNED;
    Pruned {
        executions: executions.load(Ordering::Relaxed),
        events: events.load(Ordering::Relaxed),
        deliveries: deliveries.load(Ordering::Relaxed),
    }
}

/// How often to look for what fell past `keep`: a tenth of it, between 1 s and 10 min.
pub fn interval(keep: Duration) -> Duration {
    (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// Prunes what is older than `keep`, now and then every [`interval`], until `stop`
/// turns true.
pub async fn run(db: Db, keep: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        match pass(&db, keep, &stop).await {
            Ok(p) if p != Pruned::default() => tracing::info!(
                executions = p.executions,
                events = p.events,
                deliveries = p.deliveries,
                "pruned the logs past their retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the logs failed; retrying later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval(keep)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Prunes batch after batch until one leaves nothing; returns the totals.
pub async fn pass(
    db: &Db,
    keep: Duration,
    stop: &watch::Receiver<bool>,
) -> Result<Pruned, billhook_store::StoreError> {
    let keep = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
    let cutoff = Timestamp::from_micros(Timestamp::now().micros().saturating_sub(keep));
    let mut total = Pruned::default();
    let mut from = Position::default();
    loop {
        let (p, next) = retention::prune(db, cutoff, from, BATCH).await?;
        from = next;
        for (counter, n) in PRUNED.iter().zip([p.executions, p.events, p.deliveries]) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
        total += p;
        if !p.full(BATCH) || *stop.borrow() {
            return Ok(total);
        }
        // The writer is free for the requests waiting between two batches.
        tokio::task::yield_now().await;
    }
}

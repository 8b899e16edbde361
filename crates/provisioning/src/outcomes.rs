//! The delivery engine's writer: the outcomes of attempts, and deliveries given back
//! untried, written in batches by one task — one transaction for many deliveries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use billhook_domain::Timestamp;
use billhook_store::deliveries::{self, Lease, Look, Outcome};
use billhook_store::executions::{self, Execution};
use billhook_store::{Db, StoreError};
use tokio::sync::{mpsc, Notify};

/// What the writer task writes.
pub(crate) enum Written {
    /// An attempt's outcome.
    Attempt(Box<Finished>),
    /// A delivery given back untried: its lease ends so that it can be claimed again.
    Release(Lease),
    /// A delivery put aside untried for this long from when it is written: its lease
    /// ends then, and no claim takes it before.
    PutAside(Lease, Duration),
}

/// An attempt's outcome, waiting to be written.
pub(crate) struct Finished {
    pub lease: Lease,
    pub attempts: i64,
    pub outcome: Outcome,
    /// The log row; none when the attempt was skipped (the handler no longer an enabled
    /// after handler).
    pub execution: Option<Execution>,
}

/// How long the writer waits for more outcomes after the first of a batch.
const GATHER: Duration = Duration::from_millis(1);

/// Writes outcomes in batches until every sender is gone. A batch that cannot be
/// written is retried a few times; after that its leases expire and the deliveries are
/// made again (at least once, never lost).
pub(crate) async fn write_results(db: Db, mut rx: mpsc::Receiver<Written>, wake: Arc<Notify>) {
    while let Some(first) = rx.recv().await {
        // Outcomes that come in within a millisecond are written together: deliveries
        // started one by one as their events commit also finish one by one, and a
        // write transaction each cost more than their calls.
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + GATHER;
        while batch.len() < 512 {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(f)) => batch.push(f),
                _ => break,
            }
        }
        let mut to_claim = true;
        let (mut attempt, mut undone) = (0, 0);
        while attempt < 5 {
            match write_batch(&db, &batch, undone).await {
                Ok(claimable) => {
                    to_claim = claimable;
                    break;
                }
                // Undone by another transaction's failure: nothing of it was written.
                Err(StoreError::Undone) => undone += 1,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "writing delivery outcomes failed");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        // Finished deliveries may unblock the next ones of their clients; retries and
        // deliveries given back wait for a claim too. A batch of successes with nothing
        // waiting behind them (the usual case under light load) needs no claim.
        if to_claim {
            wake.notify_one();
        }
    }
}

/// Writes one batch, after `undone` tries that another transaction's failure undid
/// (see `Db::begin_attempt`); returns whether it may have made deliveries claimable.
async fn write_batch(db: &Db, batch: &[Written], undone: usize) -> Result<bool, StoreError> {
    let now = Timestamp::now();
    let mut tx = db.begin_attempt(undone).await?;
    let mut succeeded = Vec::new();
    let mut others = Vec::new();
    let mut finished = Vec::new();
    let mut released = Vec::new();
    let mut aside: BTreeMap<Duration, Vec<Lease>> = BTreeMap::new();
    let mut rows = Vec::new();
    for w in batch {
        match w {
            Written::Release(lease) => released.push(*lease),
            Written::PutAside(lease, d) => aside.entry(*d).or_default().push(*lease),
            Written::Attempt(f) => {
                match &f.outcome {
                    Outcome::Succeeded => succeeded.push(f.lease),
                    other => others.push((f.lease, f.attempts, other)),
                }
                if !matches!(f.outcome, Outcome::Retry { .. }) {
                    finished.push(f.lease.id);
                }
                rows.extend(f.execution.as_ref());
            }
        }
    }
    let followers = deliveries::finish_succeeded(&mut tx, &succeeded, now).await?;
    deliveries::finish_many(&mut tx, &others, now).await?;
    deliveries::release(&mut tx, &released).await?;
    for (period, leases) in &aside {
        deliveries::put_aside(&mut tx, leases, now.add_duration(*period)).await?;
    }
    // Deliveries that stay pending, of a handler archived (or made a before handler)
    // while they were leased: nothing will call them again, so they fail now, as the
    // change failed the rest (see `deliveries::fail_uncalled`); those put aside once
    // their lease ends, by the engine's periodic walk.
    let requeued = !released.is_empty()
        || others
            .iter()
            .any(|(_, _, outcome)| matches!(outcome, Outcome::Retry { .. }));
    if requeued {
        deliveries::fail_uncalled(&mut tx, None, now).await?;
    }
    executions::insert_many(&mut tx, &rows).await?;
    tx.commit().await?;
    let promoted = promote_after_commit(db, &finished).await;
    // Anything but a success is a retry, a delivery given back or a failure with
    // possibly a next delivery behind it.
    Ok(followers || promoted || succeeded.len() < batch.len())
}

/// PostgreSQL: flags the next delivery of each finished one's queue, now that the
/// outcomes are committed (see `deliveries::claim`); whether any waits. Its failure is
/// only logged: the outcomes are written (writing them again would log the calls twice)
/// and the engine's periodic walk flags what this missed.
async fn promote_after_commit(db: &Db, finished: &[i64]) -> bool {
    let promoted = deliveries::promote_after_commit(db, finished, Look::Finished).await;
    promoted.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "flagging the next deliveries of finished ones failed");
        true
    })
}

//! The delivery engine's writer: the outcomes of attempts, and deliveries given back
//! untried, written in batches by one task — one transaction for many deliveries.

use std::sync::Arc;
use std::time::Duration;

use billhook_domain::Timestamp;
use billhook_store::deliveries::{self, Lease, Outcome};
use billhook_store::executions::{self, Execution};
use billhook_store::{Db, StoreError};
use tokio::sync::{mpsc, Notify};

/// What the writer task writes.
pub(crate) enum Written {
    /// An attempt's outcome.
    Attempt(Box<Finished>),
    /// A delivery given back untried: its lease ends so that it can be claimed again.
    Release(Lease),
}

/// An attempt's outcome, waiting to be written.
pub(crate) struct Finished {
    pub lease: Lease,
    pub attempts: i64,
    pub outcome: Outcome,
    /// The log row; none when the attempt was skipped (handler disabled).
    pub execution: Option<Execution>,
}

/// Writes outcomes in batches until every sender is gone. A batch that cannot be
/// written is retried a few times; after that its leases expire and the deliveries are
/// made again (at least once, never lost).
pub(crate) async fn write_results(db: Db, mut rx: mpsc::Receiver<Written>, wake: Arc<Notify>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        for attempt in 1..=5 {
            match write_batch(&db, &batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "writing delivery outcomes failed");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        // Finished deliveries may unblock the next ones of their clients.
        wake.notify_one();
    }
}

async fn write_batch(db: &Db, batch: &[Written]) -> Result<(), StoreError> {
    let now = Timestamp::now();
    let mut tx = db.begin().await?;
    let mut succeeded = Vec::new();
    let mut released = Vec::new();
    let mut rows = Vec::new();
    for w in batch {
        match w {
            Written::Release(lease) => released.push(*lease),
            Written::Attempt(f) => {
                match &f.outcome {
                    Outcome::Succeeded => succeeded.push(f.lease),
                    other => deliveries::finish(&mut tx, f.lease, f.attempts, other, now).await?,
                }
                rows.extend(f.execution.as_ref());
            }
        }
    }
    deliveries::finish_succeeded(&mut tx, &succeeded, now).await?;
    deliveries::release(&mut tx, &released).await?;
    executions::insert_many(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(())
}

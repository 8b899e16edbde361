//! The scheduler: starts pending subscriptions whose start came, renews active ones
//! whose period ended, and ends DID holds. Every change is an action of the pipeline,
//! which re-checks under lock that it is still due, so two schedulers on one database
//! never renew twice.

use std::time::Duration;

use billhook_domain::entities::{DidAction, DidStatus, SubscriptionAction};
use billhook_domain::Timestamp;
use billhook_store::{dids, subscriptions};
use tokio::sync::watch;

use crate::actions::dids::{DidActionRequest, DidChange, DidInput};
use crate::actions::subscriptions::ChangeSubscription;
use crate::{AppError, Pipeline};

/// How many objects one pass takes of each kind; the next pass takes the rest.
const BATCH: i64 = 200;

/// Runs passes every `every` until `stop` turns true.
pub async fn run(pipeline: Pipeline, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = pass(&pipeline).await {
            tracing::warn!(error = %e, "scheduler pass failed; retrying next tick");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One pass over everything due now; returns how many changes it made.
pub async fn pass(pipeline: &Pipeline) -> Result<usize, AppError> {
    let now = Timestamp::now();
    let db = pipeline.db();
    let (starts, renewals, holds) = {
        let mut conn = db.read.acquire().await?;
        (
            subscriptions::due_for_start(&mut conn, now, BATCH).await?,
            subscriptions::due_for_renewal(&mut conn, now, BATCH).await?,
            dids::hold_expired(&mut conn, now, BATCH).await?,
        )
    };
    let mut done = 0;
    for (ids, action) in [
        (starts, SubscriptionAction::Activate),
        (renewals, SubscriptionAction::Renew),
    ] {
        for id in ids {
            let change = ChangeSubscription::scheduled(id, action);
            report(pipeline.run(change).await, "subscription", id, &mut done);
        }
    }
    for id in holds {
        let mut conn = db.read.acquire().await?;
        let Some(did) = dids::get(&mut conn, id, false).await? else {
            continue;
        };
        drop(conn);
        let after = did.status_after_hold.unwrap_or(DidStatus::Stock);
        let Some(action) = DidAction::leading_to(after) else {
            continue;
        };
        let change = DidActionRequest {
            id,
            change: DidChange::HoldEnded(action),
            input: DidInput::default(),
        };
        report(pipeline.run(change).await, "DID", id, &mut done);
    }
    Ok(done)
}

fn report<T>(result: Result<T, AppError>, what: &str, id: i64, done: &mut usize) {
    match result {
        Ok(_) => *done += 1,
        Err(e) => tracing::warn!(error = %e, "scheduled change of {what} {id} failed"),
    }
}

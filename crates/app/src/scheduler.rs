//! The scheduler: starts pending subscriptions whose start came, renews active ones
//! whose period ended, and ends DID holds. Every change is an action of the pipeline,
//! which re-checks under lock that it is still due, so two schedulers on one database
//! never renew twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use billhook_domain::entities::{DidAction, DidStatus, SubscriptionAction};
use billhook_domain::Timestamp;
use billhook_store::{dids, subscriptions};
use tokio::sync::watch;

use crate::actions::dids::{DidActionRequest, DidChange, DidInput};
use crate::actions::subscriptions::ChangeSubscription;
use crate::{AppError, Pipeline};

/// How many objects one pass takes of each kind; the next pass takes the rest.
const BATCH: i64 = 200;

/// The first wait before a change the scheduler could not make is tried again; it
/// doubles with each refusal, up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// Changes the scheduler could not make (a before handler forbade the activation of a
/// subscription, or failed; a check refused it), each with when it may be tried again
/// and the wait after that. Tried on every pass, a refused change called the handler and
/// logged its refusal several times a second for as long as the handler said no; now
/// the tries thin out, and one that goes through starts afresh.
#[derive(Default)]
pub struct Refused(HashMap<(&'static str, i64), (Instant, Duration)>);

impl Refused {
    fn may_try(&self, what: &'static str, id: i64, now: Instant) -> bool {
        self.0.get(&(what, id)).is_none_or(|(at, _)| *at <= now)
    }

    fn note(&mut self, what: &'static str, id: i64, refused: bool, now: Instant) {
        if !refused {
            self.0.remove(&(what, id));
            return;
        }
        let wait = self
            .0
            .get(&(what, id))
            .map_or(FIRST_WAIT, |(_, wait)| (*wait * 2).min(LONGEST_WAIT));
        self.0.insert((what, id), (now + wait, wait));
    }
}

/// Runs passes every `every` until `stop` turns true.
pub async fn run(pipeline: Pipeline, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut refused = Refused::default();
    loop {
        if let Err(e) = pass(&pipeline, &mut refused).await {
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

/// One pass over everything due now but what was `refused` lately; returns how many
/// changes it made.
pub async fn pass(pipeline: &Pipeline, refused: &mut Refused) -> Result<usize, AppError> {
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
    // What is no longer due (made by another scheduler, closed, deleted) is forgotten.
    refused.0.retain(|(what, id), _| match *what {
        "DID" => holds.contains(id),
        _ => starts.contains(id) || renewals.contains(id),
    });
    let mut done = 0;
    for (ids, action) in [
        (starts, SubscriptionAction::Activate),
        (renewals, SubscriptionAction::Renew),
    ] {
        for id in ids {
            if !refused.may_try("subscription", id, Instant::now()) {
                continue;
            }
            let change = ChangeSubscription::scheduled(id, action);
            let ok = report(pipeline.run(change).await, "subscription", id, &mut done);
            refused.note("subscription", id, !ok, Instant::now());
        }
    }
    for id in holds {
        if !refused.may_try("DID", id, Instant::now()) {
            continue;
        }
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
        let ok = report(pipeline.run(change).await, "DID", id, &mut done);
        refused.note("DID", id, !ok, Instant::now());
    }
    Ok(done)
}

/// Counts a change made, or logs why it was not; whether it was made.
fn report<T>(result: Result<T, AppError>, what: &str, id: i64, done: &mut usize) -> bool {
    match result {
        Ok(_) => {
            *done += 1;
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "scheduled change of {what} {id} failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_change_waits_longer_each_time_and_starts_afresh_once_made() {
        let mut r = Refused::default();
        let t = Instant::now();
        assert!(r.may_try("DID", 1, t));
        r.note("DID", 1, true, t);
        assert!(!r.may_try("DID", 1, t));
        assert!(r.may_try("DID", 2, t), "others are not held up");
        assert!(r.may_try("DID", 1, t + FIRST_WAIT));
        r.note("DID", 1, true, t);
        assert!(!r.may_try("DID", 1, t + FIRST_WAIT));
        assert!(r.may_try("DID", 1, t + FIRST_WAIT * 2));
        for _ in 0..20 {
            r.note("DID", 1, true, t);
        }
        assert!(r.may_try("DID", 1, t + LONGEST_WAIT), "capped");
        r.note("DID", 1, false, t);
        assert!(r.may_try("DID", 1, t));
    }
}

//! Pruning the logs past their retention, so that they do not grow without bound: calls
//! of the execution log, and events all of whose deliveries succeeded, with those
//! deliveries. An event with a delivery still pending or failed stays, whatever its
//! age: nothing that may yet be delivered, retried or recovered is ever pruned.
//!
//! Safe beside the engine and other servers: a delivery is only inserted with its new
//! event (the outbox, one statement), and no delivery leaves `succeeded`; so an event
//! found with every delivery succeeded before the cutoff stays so. Each step deletes in
//! one statement what it selects, and two servers pruning at once delete each row once
//! (on PostgreSQL each skips the rows the other is deleting).

use billhook_domain::Timestamp;

use crate::sql::query;

use crate::{Db, Dialect, StoreError};

/// What one batch pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub executions: u64,
    pub events: u64,
    pub deliveries: u64,
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, p: Pruned) {
        self.executions += p.executions;
        self.events += p.events;
        self.deliveries += p.deliveries;
    }
}

impl Pruned {
    /// Whether a step of the batch found `batch` rows: more may be left.
    pub fn full(&self, batch: i64) -> bool {
        let batch = u64::try_from(batch).unwrap_or(0);
        self.executions >= batch || self.events >= batch
    }
}

/// Where a pass has got to in the event log: the time and id of the last event it
/// pruned. The events before it that it kept (a delivery failed or pending, which may
/// pile up behind a handler left broken) are not read again by the pass's next batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    dt: i64,
    id: i64,
}

impl Default for Position {
    /// Before the first event.
    fn default() -> Self {
        Position {
            dt: i64::MIN,
            id: i64::MIN,
        }
    }
}

/// Prunes at most `batch` calls made before `cutoff`, and at most `batch` events raised
/// before it and after `from` with their deliveries (each of which succeeded before
/// it), in one short write transaction; returns what it pruned and where the next batch
/// starts.
pub async fn prune(
    db: &Db,
    cutoff: Timestamp,
    from: Position,
    batch: i64,
) -> Result<(Pruned, Position), StoreError> {
    let mut tx = db.begin().await?;
    let executions = query(&locking(EXECUTIONS, db.dialect))
        .bind(cutoff.micros())
        .bind(batch)
        .execute(&mut tx)
        .await?
        .rows_affected();
    // The event log's two steps select the same events: past `from`, before the cutoff.
    let events_step = |sql| {
        query(&locking(sql, db.dialect))
            .bind(cutoff.micros())
            .bind(batch)
            .bind(from.dt)
            .bind(from.id)
    };
    let deliveries = events_step(DELIVERIES)
        .execute(&mut tx)
        .await?
        .rows_affected();
    let events = events_step(EVENTS).fetch_all(&mut tx).await?;
    tx.commit().await?;
    let mut next = from;
    for row in &events {
        let at = Position {
            dt: row.try_get(0usize)?,
            id: row.try_get(1usize)?,
        };
        if (at.dt, at.id) > (next.dt, next.id) {
            next = at;
        }
    }
    let pruned = Pruned {
        executions,
        events: events.len() as u64,
        deliveries,
    };
    Ok((pruned, next))
}

/// Where each statement's selection takes its rows: on PostgreSQL, servers pruning at
/// once take different rows (`SKIP LOCKED`), rather than wait for each other's (and
/// deadlock, locking the same rows in another order).
const LOCK: &str = "{lock}";

fn locking(sql: &str, dialect: Dialect) -> String {
    debug_assert!(sql.contains(LOCK), "a statement without its lock: {sql}");
    match dialect {
        Dialect::Postgres => sql.replace(LOCK, "FOR UPDATE SKIP LOCKED"),
        Dialect::Sqlite => sql.replace(LOCK, ""),
    }
}

/// Calls made before the cutoff (`$1`), `$2` at most.
const EXECUTIONS: &str = "DELETE FROM executions WHERE id IN
    (SELECT id FROM executions WHERE dt < $1 ORDER BY dt LIMIT $2 {lock})";

/// The deliveries of events raised before the cutoff and after the position (`$3`,
/// `$4`) whose deliveries all succeeded before the cutoff (a retry may have delivered
/// an old event yesterday: its calls are still in the log).
const DELIVERIES: &str = "DELETE FROM deliveries WHERE event_seq IN
    (SELECT e.id FROM events e WHERE e.dt < $1 AND (e.dt > $3 OR (e.dt = $3 AND e.id > $4))
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.id
                         AND (d.status <> 'succeeded' OR d.updated_at >= $1))
     ORDER BY e.dt, e.id LIMIT $2 {lock})";

/// Those events, once without deliveries, and any that had none (no handler matched).
const EVENTS: &str = "DELETE FROM events WHERE id IN
    (SELECT e.id FROM events e WHERE e.dt < $1 AND (e.dt > $3 OR (e.dt = $3 AND e.id > $4))
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.id)
     ORDER BY e.dt, e.id LIMIT $2 {lock})
    RETURNING dt, id";

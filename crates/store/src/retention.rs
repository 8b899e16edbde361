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

impl Pruned {
    /// Whether a step of the batch found `batch` rows: more may be left.
    pub fn full(&self, batch: i64) -> bool {
        let batch = u64::try_from(batch).unwrap_or(0);
        self.executions >= batch || self.events >= batch
    }
}

/// Prunes at most `batch` calls made before `cutoff`, and at most `batch` events raised
/// before it with their deliveries (each of which succeeded before it), in one short
/// write transaction.
pub async fn prune(db: &Db, cutoff: Timestamp, batch: i64) -> Result<Pruned, StoreError> {
    let mut tx = db.begin().await?;
    let mut pruned = [0; 3];
    for (n, sql) in [EXECUTIONS, DELIVERIES, EVENTS].into_iter().enumerate() {
        // PostgreSQL: servers pruning at once take different rows, rather than wait for
        // each other's (and deadlock, locking the same rows in another order).
        let sql = match db.dialect {
            Dialect::Postgres => sql.replace(" LIMIT $2)", " LIMIT $2 FOR UPDATE SKIP LOCKED)"),
            Dialect::Sqlite => sql.to_string(),
        };
        pruned[n] = query(&sql)
            .bind(cutoff.micros())
            .bind(batch)
            .execute(&mut tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    let [executions, deliveries, events] = pruned;
    Ok(Pruned {
        executions,
        events,
        deliveries,
    })
}

/// Calls made before the cutoff (`$1`), `$2` at most.
const EXECUTIONS: &str = "DELETE FROM executions WHERE id IN
    (SELECT id FROM executions WHERE dt < $1 ORDER BY dt LIMIT $2)";

/// The deliveries of events raised before the cutoff whose deliveries all succeeded
/// before it (a retry may have delivered an old event yesterday: its calls are still in
/// the log).
const DELIVERIES: &str = "DELETE FROM deliveries WHERE event_seq IN
    (SELECT e.id FROM events e WHERE e.dt < $1
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.id
                         AND (d.status <> 'succeeded' OR d.updated_at >= $1))
     ORDER BY e.dt LIMIT $2)";

/// Those events, once without deliveries, and any that had none (no handler matched).
const EVENTS: &str = "DELETE FROM events WHERE id IN
    (SELECT e.id FROM events e WHERE e.dt < $1
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.id)
     ORDER BY e.dt LIMIT $2)";

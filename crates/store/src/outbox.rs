//! The outbox write: an action's events and their deliveries, in the action's
//! transaction. On SQLite a delivery at the head of its queue is leased there and then
//! and handed to this process's engine once the transaction commits (see
//! [`crate::handoff`]).

use std::sync::{Arc, OnceLock};

use billhook_domain::Timestamp;
use serde_json::value::RawValue;

use crate::deliveries::Claimed;
use crate::events::{Event, EventText};
use crate::query::to_json_text;
use crate::sql::{query, Query, Tx};
use crate::{Dialect, StoreError};

/// Inserts `events` in order (their `seq` is ignored) and, for each, one pending
/// delivery per enabled after handler whose pattern matches it. Matching is done in SQL
/// so that every process sees the same handlers as the transaction does.
pub async fn append(
    tx: &mut Tx,
    dialect: Dialect,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    match dialect {
        Dialect::Sqlite => {
            for e in events {
                append_sqlite(tx, e, now).await?;
            }
        }
        // PostgreSQL takes one statement per call: a data-modifying CTE per event. Its
        // deliveries are claimed: a head check made here could miss a delivery of the
        // same queue that a concurrent transaction is inserting.
        Dialect::Postgres => {
            static SQL: OnceLock<String> = OnceLock::new();
            let sql = SQL.get_or_init(postgres_statement);
            for e in events {
                bind(query(sql), e, now).execute(&mut *tx).await?;
            }
            tx.queued_to_claim();
        }
    }
    Ok(())
}

/// One event and its deliveries on SQLite, whose one writer sees every statement in
/// turn: a delivery with nothing pending before it in its queue is its head, leased and
/// handed over if the transaction has a place in the hand-over.
async fn append_sqlite(tx: &mut Tx, e: &Event, now: Timestamp) -> Result<(), StoreError> {
    static SQL: OnceLock<(String, String)> = OnceLock::new();
    let (insert_event, insert_deliveries) = SQL.get_or_init(|| {
        let columns = "event_seq, handlers_id, ordering_key, status, attempts, next_at, \
                       lease_until, created_at, updated_at, head";
        (
            insert_event(0),
            // The event by its uid: last_insert_rowid() changes as the delivery rows go
            // in. `$5`: the lease's start (now plus the engine's margin), 0 for none; the
            // lease then runs for the handler's timeout, as a claim's does.
            format!(
                "INSERT INTO deliveries ({columns})
                 SELECT (SELECT id FROM events WHERE uid = $1), h.id, $3, 'pending', 0, $4,
                        CASE WHEN $5 > 0 AND h.head THEN $5 + h.timeout_ms * 1000 ELSE 0 END,
                        $4, $4, h.head
                 FROM (SELECT h.id, h.timeout_ms, NOT EXISTS (
                         SELECT 1 FROM deliveries q WHERE q.handlers_id = h.id
                           AND q.ordering_key = $3 AND q.status = 'pending') AS head
                       FROM handlers h WHERE {}) h
                 RETURNING id, event_seq, handlers_id, lease_until",
                matching_handlers("$2")
            ),
        )
    });
    let lease_base = tx.handoff().map(|r| now.add_duration(r.margin));
    let data = to_json_text(&e.data);
    let previous = to_json_text(&e.previous);
    bind_event(query(insert_event), e, data.clone(), previous.clone())
        .execute(&mut *tx)
        .await?;
    let rows = query(insert_deliveries)
        .bind(e.uid.as_str())
        .bind(e.events_id.as_str())
        .bind(e.ordering_key.as_str())
        .bind(now.micros())
        .bind(lease_base.map_or(0, |t| t.micros()))
        .fetch_all(&mut *tx)
        .await?;
    let mut leased = Vec::new();
    let mut seq = 0;
    for row in &rows {
        seq = row.try_get("event_seq")?;
        let lease_until: i64 = row.try_get("lease_until")?;
        if lease_until == 0 {
            tx.queued_to_claim();
            continue;
        }
        leased.push(Claimed {
            id: row.try_get("id")?,
            event_seq: seq,
            handlers_id: row.try_get("handlers_id")?,
            ordering_key: e.ordering_key.clone(),
            attempts: 0,
            lease_until: Timestamp::from_micros(lease_until),
        });
    }
    if leased.is_empty() {
        return Ok(());
    }
    let raw = |text: String| {
        RawValue::from_string(text).map_err(|e| StoreError::Corrupt(format!("event JSON: {e}")))
    };
    let event = Arc::new(EventText {
        seq,
        uid: e.uid.clone(),
        events_id: e.events_id.clone(),
        object_id: e.object_id,
        dt: e.dt,
        data: raw(data)?,
        previous: raw(previous)?,
    });
    let handoff = &mut tx.handoff().expect("leased only with a place").handoff;
    handoff.deliveries.extend(leased);
    handoff.events.push(event);
    Ok(())
}

fn bind_event(q: Query, e: &Event, data: String, previous: String) -> Query {
    q.bind(e.uid.as_str())
        .bind(e.events_id.as_str())
        .bind(e.object_id)
        .bind(e.ordering_key.as_str())
        .bind(e.dt.micros())
        .bind(data)
        .bind(previous)
}

fn bind(q: Query, e: &Event, now: Timestamp) -> Query {
    bind_event(q, e, to_json_text(&e.data), to_json_text(&e.previous)).bind(now.micros())
}

/// The INSERT of an event whose 7 arguments start after `$base`: uid, events_id,
/// object_id, ordering_key, dt, data, previous.
fn insert_event(base: usize) -> String {
    let p = |n: usize| format!("${}", base + n);
    format!(
        "INSERT INTO events (uid, events_id, object_id, ordering_key, dt, data, previous)
         VALUES ({}, {}, {}, {}, {}, {}, {})",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7)
    )
}

/// The enabled after handlers `h` whose pattern matches the event name in `event`.
fn matching_handlers(event: &str) -> String {
    format!(
        "h.status = 'enabled' AND h.stage = 'after' AND (h.event = '*' OR h.event = {event}
           OR (h.event LIKE '%.*' AND {event} LIKE REPLACE(h.event, '*', '%')))"
    )
}

/// PostgreSQL's statement for one event: its INSERT and its deliveries' in one
/// data-modifying CTE. Its 8 arguments: the event's 7, then now. PostgreSQL does not
/// keep the head flag (see deliveries::claim).
fn postgres_statement() -> String {
    format!(
        "WITH e AS ({} RETURNING id)
         INSERT INTO deliveries (event_seq, handlers_id, ordering_key, status, attempts,
                                 next_at, lease_until, created_at, updated_at, head)
         SELECT e.id, h.id, $4, 'pending', 0, $8, 0, $8, $8, 0
         FROM e, handlers h WHERE {}",
        insert_event(0),
        matching_handlers("$2")
    )
}

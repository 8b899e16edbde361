//! The outbox write: an action's events and their deliveries, in the action's
//! transaction. A delivery at the head of its queue is leased there and then and handed
//! to this process's engine once the transaction commits (see [`crate::handoff`]).

use std::sync::{Arc, OnceLock};

use billhook_domain::Timestamp;
use serde_json::value::RawValue;

use crate::deliveries::Claimed;
use crate::events::{Event, EventText};
use crate::query::to_json_text;
use crate::sql::{query, Query, Row, Tx};
use crate::{Dialect, StoreError};

/// Inserts `events` in order (their `seq` is ignored) and, for each, one pending
/// delivery per enabled after handler whose pattern matches it. Matching is done in SQL
/// so that every process sees the same handlers as the transaction does.
///
/// A delivery with nothing pending before it in its queue (its head) is leased and
/// handed over if the transaction has a place in the hand-over. The check sees every
/// delivery of the queue: SQLite has one writer; on PostgreSQL the transactions that
/// queue events of one ordering key hold that key's row lock (the client's, or the
/// object's own: see the actions' `load`), the lock the claim's order relies on too.
pub async fn append(
    tx: &mut Tx,
    dialect: Dialect,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    for e in events {
        // From the clock, not `now`: an action's `now` may be from before its before
        // handlers ran, seconds ago.
        let lease_base = tx
            .handoff()
            .map_or(0, |r| Timestamp::now().add_duration(r.margin).micros());
        let data = to_json_text(&e.data);
        let previous = to_json_text(&e.previous);
        let rows = match dialect {
            // Without RETURNING: SQLite would open a temporary table for each statement
            // to hold what it returns. The deliveries are read back by their event.
            Dialect::Sqlite => {
                let seq = bind_event(query(sqlite_event()), e, &data, &previous)
                    .insert_id(&mut *tx)
                    .await?;
                query(sqlite_deliveries())
                    .bind(seq)
                    .bind(e.events_id.as_str())
                    .bind(e.ordering_key.as_str())
                    .bind(now.micros())
                    .bind(lease_base)
                    .execute(&mut *tx)
                    .await?;
                query(SQLITE_INSERTED).bind(seq).fetch_all(&mut *tx).await?
            }
            // PostgreSQL takes one statement per call: a data-modifying CTE.
            Dialect::Postgres => {
                bind_event(query(postgres_statement()), e, &data, &previous)
                    .bind(now.micros())
                    .bind(lease_base)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        hand_over(tx, e, &rows, data, previous)?;
    }
    Ok(())
}

/// Notes the deliveries just inserted (rows of [`RETURNING`]; a lease of 0 is none): the
/// leased ones go to the hand-over with their event, the others wait for a claim. On
/// PostgreSQL those queued behind another delivery have their queue looked at again
/// after the commit (see [`crate::deliveries::claim`]).
fn hand_over(
    tx: &mut Tx,
    e: &Event,
    rows: &[Row],
    data: String,
    previous: String,
) -> Result<(), StoreError> {
    let mut leased = Vec::new();
    for row in rows {
        let delivery = Claimed::from_row(row)?;
        if delivery.lease_until.micros() == 0 {
            tx.queued_to_claim();
            let head: i32 = row.try_get(6)?;
            if head == 0 {
                tx.queued_behind(delivery.id);
            }
        } else {
            leased.push(delivery);
        }
    }
    let Some(seq) = leased.first().map(|c| c.event_seq) else {
        return Ok(());
    };
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

/// Whether handler `h`'s queue for the ordering key in `key` has nothing pending: a
/// delivery inserted now is its head.
fn is_head(key: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM deliveries q WHERE q.handlers_id = h.id
           AND q.ordering_key = {key} AND q.status = 'pending')"
    )
}

/// The lease of a delivery inserted for handler `h`, leased if `head`, with `lease` the
/// lease's start (now plus the engine's margin; 0 for no lease): it runs for the
/// handler's timeout from there, as a claim's does.
fn lease_if(lease: &str, head: &str) -> String {
    format!("CASE WHEN {lease} > 0 AND {head} THEN {lease} + h.timeout_ms * 1000 ELSE 0 END")
}

/// SQLite's INSERT of an event, giving its id to [`crate::sql::Query::insert_id`].
fn sqlite_event() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| format!("{INSERT_EVENT} RETURNING id"))
}

/// SQLite's INSERT of an event's deliveries, after the event's; its arguments: the
/// event's id, events_id, ordering_key, now, the lease's start.
fn sqlite_deliveries() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        // SQLite flags the heads (see deliveries::claim).
        format!(
            "INSERT INTO deliveries (event_seq, handlers_id, ordering_key, status, attempts,
                                     next_at, lease_until, created_at, updated_at, head)
             SELECT $1, h.id, $3, 'pending', 0, $4, {}, $4, $4, h.head
             FROM (SELECT h.id, h.timeout_ms, {} AS head FROM handlers h WHERE {}) h",
            lease_if("$5", "h.head"),
            is_head("$3"),
            matching_handlers("$2")
        )
    })
}

/// PostgreSQL's statement for one event: its INSERT and its deliveries' in one
/// data-modifying CTE. Its 9 arguments: the event's 7, now, the lease's start.
/// Both databases flag the heads (see deliveries::claim).
fn postgres_statement() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH e AS ({} RETURNING id)
             INSERT INTO deliveries (event_seq, handlers_id, ordering_key, status, attempts,
                                     next_at, lease_until, created_at, updated_at, head)
             SELECT e.id, h.id, $4, 'pending', 0, $8, {}, $8, $8, h.head
             FROM e, (SELECT h.id, h.timeout_ms, CASE WHEN {} THEN 1 ELSE 0 END AS head
                      FROM handlers h WHERE {}) h
             {RETURNING}",
            INSERT_EVENT,
            lease_if("$9", "h.head = 1"),
            is_head("$4"),
            matching_handlers("$2")
        )
    })
}

fn bind_event(q: Query, e: &Event, data: &str, previous: &str) -> Query {
    q.bind(e.uid.as_str())
        .bind(e.events_id.as_str())
        .bind(e.object_id)
        .bind(e.ordering_key.as_str())
        .bind(e.dt.micros())
        .bind(data)
        .bind(previous)
}

/// What the INSERT of deliveries returns: the columns of [`Claimed::from_row`], then
/// the head flag.
const RETURNING: &str =
    "RETURNING id, event_seq, handlers_id, ordering_key, attempts, lease_until, head";

/// The same columns of an event's deliveries on SQLite, read after their INSERT; the
/// argument is the event's id.
const SQLITE_INSERTED: &str =
    "SELECT id, event_seq, handlers_id, ordering_key, attempts, lease_until, head
     FROM deliveries WHERE event_seq = $1 ORDER BY id";

/// The INSERT of an event; its 7 arguments: uid, events_id, object_id, ordering_key,
/// dt, data, previous.
const INSERT_EVENT: &str =
    "INSERT INTO events (uid, events_id, object_id, ordering_key, dt, data, previous)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The enabled after handlers `h` whose pattern matches the event name in `event`.
fn matching_handlers(event: &str) -> String {
    format!(
        "h.status = 'enabled' AND h.stage = 'after' AND (h.event = '*' OR h.event = {event}
           OR (h.event LIKE '%.*' AND {event} LIKE REPLACE(h.event, '*', '%')))"
    )
}

//! The outbox write: an action's events and their deliveries, in the action's
//! transaction. A delivery at the head of its queue is leased there and then and handed
//! to this process's engine once the transaction commits (see [`crate::handoff`]).

use std::sync::{Arc, OnceLock};

use billhook_domain::Timestamp;
use serde_json::value::{to_raw_value, RawValue};

use crate::deliveries::Claimed;
use crate::events::{Event, EventText};
use crate::sql::{query, Query, Tx};
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
        // Serialised once: the text is stored and handed over as it is (a RawValue made
        // from a String would parse it again).
        let data = to_raw_value(&e.data).expect("JSON values serialise");
        let previous = to_raw_value(&e.previous).expect("JSON values serialise");
        let inserted = match dialect {
            Dialect::Sqlite => {
                sqlite_insert(tx, e, data.get(), previous.get(), now, lease_base).await?
            }
            // PostgreSQL takes one statement per call: a data-modifying CTE.
            Dialect::Postgres => {
                let rows = bind_event(query(postgres_statement()), e, data.get(), previous.get())
                    .bind(now.micros())
                    .bind(lease_base)
                    .fetch_all(&mut *tx)
                    .await?;
                rows.iter()
                    .map(|row| Ok((Claimed::from_row(row)?, row.try_get::<i32, _>(6)? == 1)))
                    .collect::<Result<Vec<_>, StoreError>>()?
            }
        };
        hand_over(tx, e, inserted, data, previous)?;
    }
    Ok(())
}

/// SQLite's insert of an event and its deliveries: the event, the matching handlers with
/// whether the delivery is its queue's head, then a delivery each. Not one INSERT …
/// SELECT: its SELECT reads `deliveries`, so SQLite first copies what it selects into a
/// temporary table (a B-tree opened and closed per event), and the rows had to be read
/// back afterwards; here every value is known without reading anything back.
async fn sqlite_insert(
    tx: &mut Tx,
    e: &Event,
    data: &str,
    previous: &str,
    now: Timestamp,
    lease_base: i64,
) -> Result<Vec<(Claimed, bool)>, StoreError> {
    let seq = bind_event(query(sqlite_event()), e, data, previous)
        .insert_id(&mut *tx)
        .await?;
    let targets = query(sqlite_targets())
        .bind(e.events_id.as_str())
        .bind(e.ordering_key.as_str())
        .bind(lease_base)
        .fetch_all(&mut *tx)
        .await?;
    let mut inserted = Vec::with_capacity(targets.len());
    for target in &targets {
        let (handlers_id, lease_until): (i64, i64) = (target.try_get(0)?, target.try_get(1)?);
        let head = target.try_get::<i64, _>(2)? == 1;
        let id = query(SQLITE_DELIVERY)
            .bind(seq)
            .bind(handlers_id)
            .bind(e.ordering_key.as_str())
            .bind(now.micros())
            .bind(lease_until)
            .bind(i64::from(head))
            .insert_id(&mut *tx)
            .await?;
        let delivery = Claimed {
            id,
            event_seq: seq,
            handlers_id,
            ordering_key: e.ordering_key.clone(),
            attempts: 0,
            lease_until: Timestamp::from_micros(lease_until),
        };
        inserted.push((delivery, head));
    }
    Ok(inserted)
}

/// Notes the deliveries just inserted, each with whether it is its queue's head (a
/// lease of 0 is none): the leased ones go to the hand-over with their event, the
/// others wait for a claim. On PostgreSQL those queued behind another delivery have
/// their queue looked at again after the commit (see [`crate::deliveries::claim`]).
fn hand_over(
    tx: &mut Tx,
    e: &Event,
    inserted: Vec<(Claimed, bool)>,
    data: Box<RawValue>,
    previous: Box<RawValue>,
) -> Result<(), StoreError> {
    let mut leased = Vec::new();
    for (delivery, head) in inserted {
        if delivery.lease_until.micros() == 0 {
            tx.queued_to_claim();
            if !head {
                tx.queued_behind(delivery.id);
            }
        } else {
            leased.push(delivery);
        }
    }
    let Some(seq) = leased.first().map(|c| c.event_seq) else {
        return Ok(());
    };
    let event = Arc::new(EventText {
        seq,
        uid: e.uid.clone(),
        events_id: e.events_id.clone(),
        object_id: e.object_id,
        dt: e.dt,
        data,
        previous,
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

/// The enabled after handlers matching an event (`$1`, its name), each with the lease of
/// its delivery (from the lease's start `$3`, see [`lease_if`]) and whether the delivery
/// is its queue's head for the ordering key `$2` (see deliveries::claim): id,
/// lease_until, head (1 or 0).
fn sqlite_targets() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT h.id, {}, h.head
             FROM (SELECT h.id, h.timeout_ms, {} AS head FROM handlers h WHERE {}) h
             ORDER BY h.id",
            lease_if("$3", "h.head"),
            is_head("$2"),
            matching_handlers("$1")
        )
    })
}

/// SQLite's INSERT of one delivery; its arguments: the event's id, the handler's, the
/// ordering key, now, the lease (0 for none), the head flag.
const SQLITE_DELIVERY: &str =
    "INSERT INTO deliveries (event_seq, handlers_id, ordering_key, status, attempts,
                             next_at, lease_until, created_at, updated_at, head)
     VALUES ($1, $2, $3, 'pending', 0, $4, $5, $4, $4, $6) RETURNING id";

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

/// The INSERT of an event; its 7 arguments: uid, events_id, object_id, ordering_key,
/// dt, data, previous.
const INSERT_EVENT: &str =
    "INSERT INTO events (uid, events_id, object_id, ordering_key, dt, data, previous)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The enabled after handlers `h` whose pattern matches the event name in `event`.
fn matching_handlers(event: &str) -> String {
    format!(
        "h.status = 'enabled' AND h.stage = 'after' AND {}",
        crate::handlers::pattern_matches("h.event", event)
    )
}

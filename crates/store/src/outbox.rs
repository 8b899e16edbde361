//! The outbox write: an action's events and their deliveries, in the action's
//! transaction, in as few round trips as the database allows — on SQLite each statement
//! through sqlx was a hand-off to the connection's thread; with our own SQLite driver the
//! statements of one string still go in one call.

use std::borrow::Cow;
use std::sync::OnceLock;

use billhook_domain::Timestamp;

use crate::events::Event;
use crate::query::to_json_text;
use crate::sql::{query, Conn, Query};
use crate::{Dialect, StoreError};

/// Inserts `events` in order (their `seq` is ignored) and, for each, one pending
/// delivery per enabled after handler whose pattern matches it. Matching is done in SQL
/// so that every process sees the same handlers as the transaction does.
pub async fn append(
    conn: &mut Conn,
    dialect: Dialect,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    match dialect {
        // One call for all: SQLite runs the statements of one query string in order,
        // binding `$N` to the N-th argument across all of them.
        Dialect::Sqlite => {
            let sql = sqlite_sql(events.len());
            let mut q = query(&sql);
            for e in events {
                q = bind(q, e, now);
            }
            q.execute(conn).await?;
        }
        // PostgreSQL takes one statement per call: a data-modifying CTE per event.
        Dialect::Postgres => {
            static SQL: OnceLock<String> = OnceLock::new();
            let sql = SQL.get_or_init(|| statements(0, Dialect::Postgres));
            for e in events {
                bind(query(sql), e, now).execute(&mut *conn).await?;
            }
        }
    }
    Ok(())
}

/// The SQLite SQL for `n` events, built once for the usual counts (an action raises
/// one event, sometimes two or three).
fn sqlite_sql(n: usize) -> Cow<'static, str> {
    const CACHED: usize = 4;
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let build = |n: usize| {
        (0..n)
            .map(|i| statements(i * 8, Dialect::Sqlite))
            .collect::<Vec<_>>()
            .join(";\n")
    };
    if n <= CACHED {
        let all = SQL.get_or_init(|| (0..=CACHED).map(build).collect());
        Cow::Borrowed(all[n].as_str())
    } else {
        Cow::Owned(build(n))
    }
}

fn bind(q: Query, e: &Event, now: Timestamp) -> Query {
    q.bind(e.uid.as_str())
        .bind(e.events_id.as_str())
        .bind(e.object_id)
        .bind(e.ordering_key.as_str())
        .bind(e.dt.micros())
        .bind(to_json_text(&e.data))
        .bind(to_json_text(&e.previous))
        .bind(now.micros())
}

/// The SQL for one event whose 8 arguments start after `$base`: uid, events_id,
/// object_id, ordering_key, dt, data, previous, now.
fn statements(base: usize, dialect: Dialect) -> String {
    let p = |n: usize| format!("${}", base + n);
    let insert_event = format!(
        "INSERT INTO events (uid, events_id, object_id, ordering_key, dt, data, previous)
         VALUES ({}, {}, {}, {}, {}, {}, {})",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7)
    );
    let matches = format!(
        "h.status = 'enabled' AND h.stage = 'after' AND (h.event = '*' OR h.event = {ev}
           OR (h.event LIKE '%.*' AND {ev} LIKE REPLACE(h.event, '*', '%')))",
        ev = p(2)
    );
    let columns = "event_seq, handlers_id, ordering_key, status, attempts, next_at, lease_until, \
                   created_at, updated_at, head";
    match dialect {
        // By uid, not last_insert_rowid(): that changes as the delivery rows go in. The
        // head of its queue when nothing is pending before it (see deliveries::claim).
        Dialect::Sqlite => format!(
            "{insert_event};
             INSERT INTO deliveries ({columns})
             SELECT (SELECT id FROM events WHERE uid = {uid}), h.id, {key}, 'pending', 0,
                    {now}, 0, {now}, {now},
                    NOT EXISTS (SELECT 1 FROM deliveries q WHERE q.handlers_id = h.id
                      AND q.ordering_key = {key} AND q.status = 'pending')
             FROM handlers h WHERE {matches}",
            uid = p(1),
            key = p(4),
            now = p(8),
        ),
        // PostgreSQL does not keep the head flag (see deliveries::claim).
        Dialect::Postgres => format!(
            "WITH e AS ({insert_event} RETURNING id)
             INSERT INTO deliveries ({columns})
             SELECT e.id, h.id, {key}, 'pending', 0, {now}, 0, {now}, {now}, 0
             FROM e, handlers h WHERE {matches}",
            key = p(4),
            now = p(8),
        ),
    }
}

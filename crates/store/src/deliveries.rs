//! Deliveries: one row per (event, after handler), written in the event's own
//! transaction, claimed with leases, finished with the outcome of each attempt.

use crate::sql::{query, query_scalar, Conn, Row, Tx};
use billhook_domain::entities::DeliveryStatus;
use billhook_domain::Timestamp;
use serde::Serialize;

use crate::query::{Bind, Filter, Listing};
use crate::{Dialect, Page, StoreError};

/// The check that a flagged head is still the oldest pending delivery of its queue (a
/// flag may outlive that, see [`claim`]), answered from the pending index.
const HEADS_BY_PROBING: &str = " AND NOT EXISTS (
       SELECT 1 FROM deliveries e
       WHERE e.handlers_id = d.handlers_id AND e.ordering_key = d.ordering_key
         AND e.status = 'pending' AND e.id < d.id)";

/// PostgreSQL: the CTE `heads` of every queue's oldest pending delivery, found by
/// skipping from queue to queue through the pending index (one seek per queue, however
/// many deliveries wait in it). Needs `WITH RECURSIVE`. Only [`flag_every_head`] walks
/// it: its cost grows with the number of queues, thousands with a handler down.
const PG_HEADS: &str = "heads AS MATERIALIZED (
       (SELECT handlers_id, ordering_key, id FROM deliveries WHERE status = 'pending'
        ORDER BY handlers_id, ordering_key, id LIMIT 1)
       UNION ALL
       SELECT n.handlers_id, n.ordering_key, n.id FROM heads h CROSS JOIN LATERAL (
         SELECT handlers_id, ordering_key, id FROM deliveries
         WHERE status = 'pending'
           AND (handlers_id, ordering_key) > (h.handlers_id, h.ordering_key)
         ORDER BY handlers_id, ordering_key, id LIMIT 1) n)";

/// A head put back by hand (retried or recovered after it failed: it has been tried)
/// waits while a later delivery of its queue is in flight: one that went while it had
/// failed. Without this the two were called at once. Fresh heads skip the probe (nothing
/// can be in flight behind them). It reads the queue's pending rows after the head until
/// one in flight: usually the first (a claim leases a run of a queue's first pending
/// rows), else all of them, the price of a head that goes. It is made only for the heads
/// a claim walks up to its limit, not for every due one. On PostgreSQL a claim not yet
/// committed is made visible first by the put-back itself ([`hold_queues_behind`]).
const NOTHING_IN_FLIGHT_BEHIND: &str = " AND (d.attempts = 0 OR NOT EXISTS (
       SELECT 1 FROM deliveries e
       WHERE e.handlers_id = d.handlers_id AND e.ordering_key = d.ordering_key
         AND e.status = 'pending' AND e.id > d.id AND e.lease_until >= $2))";

/// Only deliveries of enabled handlers are claimed: those of a disabled (or archived)
/// handler wait untouched, in order, and go as soon as it is enabled again. Written as a
/// lookup per candidate row: as `handlers_id IN (…)` SQLite drove the claim from the
/// handlers through every delivery of each, instead of walking the due heads (a third
/// more CPU per event in the bench).
const ENABLED: &str =
    " AND (SELECT h.status FROM handlers h WHERE h.id = d.handlers_id) = 'enabled'";

/// The lease: `$1` plus the handler's own timeout.
const LEASE: &str =
    "$1 + (SELECT h.timeout_ms FROM handlers h WHERE h.id = deliveries.handlers_id) * 1000";

/// A delivery as leased: its id and the lease it was claimed with. Writes about it apply
/// only while that lease is still its own (a fencing token): a holder whose lease ran
/// out, and whose delivery was taken again, cannot overwrite the new holder's outcome
/// or free its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: i64,
    pub until: Timestamp,
}

/// A delivery taken by a worker until `lease_until`.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub event_seq: i64,
    pub handlers_id: i64,
    pub ordering_key: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub lease_until: Timestamp,
}

impl Claimed {
    /// From a row of `id, event_seq, handlers_id, ordering_key, attempts, lease_until`,
    /// in that order (a claim's or an insert's RETURNING).
    pub(crate) fn from_row(r: &Row) -> Result<Claimed, StoreError> {
        Ok(Claimed {
            id: r.try_get(0)?,
            event_seq: r.try_get(1)?,
            handlers_id: r.try_get(2)?,
            ordering_key: r.try_get(3)?,
            attempts: r.try_get(4)?,
            lease_until: Timestamp::from_micros(r.try_get(5)?),
        })
    }

    /// Its lease, for writing its outcome.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            until: self.lease_until,
        }
    }
}

/// Leases the heads of up to `queues` (handler, ordering key) queues with due work until
/// `lease_base` plus the handler's timeout: a short lease lets another process (or this
/// one, restarted) take over soon after a crash. Leases, not locks: nothing is held
/// while the handler is called.
///
/// A delivery is due when it is pending, its time has come, its lease (if any) expired
/// — which is how a crashed worker's deliveries come back — and no earlier delivery of
/// the same handler and ordering key is unfinished: the head of its queue.
///
/// Heads are flagged (`head = 1`) so that the claim walks only them, in due order: a
/// delivery is flagged when it is queued with nothing pending before it, or when the
/// deliveries before it finish ([`promote_heads`]); a delivery put back to pending by
/// hand is flagged too, and so is the oldest pending delivery of every queue of a
/// handler that takes after deliveries again ([`flag_heads_of`]: its archive failed its
/// deliveries without flagging what came after them). A flag may be left on a delivery
/// that is no longer its queue's head (harmless: the claim checks the order itself),
/// never missing from one that is.
///
/// On SQLite, whose one writer sees every statement in turn, the flag is set in the
/// transactions that queue and finish deliveries. On PostgreSQL a delivery queued while
/// the one before it finishes in another transaction could be missed by both (each sees
/// the other's row as it was), so the heads of finished deliveries' queues are flagged
/// once their outcomes are committed, and the transaction that queues a delivery behind
/// another has its queue looked at once it has committed ([`promote_after_commit`]):
/// whichever commits second sees both. The engine makes both looks for its process, and
/// [`flag_every_head`] walks every queue now and then for what a process that died
/// between a commit and its look left unflagged. (Flagging in the outcome's own
/// transaction as well cost a tenth of the throughput in the bench.)
///
/// Each head comes with up to `per_queue - 1` deliveries that follow it in its
/// queue, due and unleased with nothing in between that is not, for the worker to make
/// in order. A client with a burst of events is then not served one event per claim.
/// The rows come in id order within a queue.
pub async fn claim(
    conn: &mut Conn,
    dialect: Dialect,
    now: Timestamp,
    lease_base: Timestamp,
    queues: i64,
    per_queue: i64,
) -> Result<Vec<Claimed>, StoreError> {
    // Only the head of each (handler, key) queue can go: the oldest pending one.
    let sql = match dialect {
        // Each step is computed once (MATERIALIZED): on a table without statistics yet
        // the planner otherwise ran the locking subquery again for every pending row.
        // The due heads come from the flagged heads in the order they could go (the
        // later of due time and lease end, as on SQLite: a delivery put aside goes
        // behind those that could go before its put-aside ended; the deliveries
        // waiting behind a head, and the heads not due, a failing endpoint's, are not
        // read); each is checked to be its queue's oldest pending one. Heads are locked
        // (SKIP LOCKED) and leased; a follower is only ever reached through its queue's
        // head, so two processes never take the same one. The outer conditions are
        // checked again on the row version the update locks.
        //
        // Each head is locked by its id, in a subquery the planner may not flatten (FOR
        // UPDATE), and the rows taken are updated by their ids (`= ANY`): as
        // joins of deliveries with heads or with the rows taken, a fresh table's stale
        // statistics made it read every due delivery instead, the backlog behind a
        // failing endpoint included (420 ms a claim with 18,000 waiting). The due heads
        // are locked one after the other in due order until `$3` are (a CTE is read in
        // the order it was written; the limit stops the locking): limited before
        // locking, a claim running beside another one took the same heads, skipped
        // them all and came back empty with other queues due. (Limited to a multiple
        // of `$3` in the heads index's order, which needs no sort, the heads put back
        // by hand that wait for a call in flight behind them could fill that limit, and
        // leaving them out before it cost more than the sort of every due head saved:
        // `bench --recovering-handler`.)
        Dialect::Postgres => format!(
            "WITH due AS MATERIALIZED (
               SELECT d.id FROM deliveries d
               WHERE d.status = 'pending' AND d.head = 1
                 AND GREATEST(d.next_at, d.lease_until) <= $2
                 AND d.next_at <= $2 AND d.lease_until < $2{ENABLED}{HEADS_BY_PROBING}
               ORDER BY GREATEST(d.next_at, d.lease_until)),
             chosen AS MATERIALIZED (
               SELECT d.id, d.handlers_id, d.ordering_key FROM due CROSS JOIN LATERAL (
                 SELECT d.id, d.handlers_id, d.ordering_key FROM deliveries d
                 WHERE d.id = due.id AND d.status = 'pending' AND d.next_at <= $2
                   AND d.lease_until < $2{NOTHING_IN_FLIGHT_BEHIND}
                 FOR UPDATE SKIP LOCKED) d
               LIMIT $3),
             taken AS MATERIALIZED (
               SELECT f.id FROM chosen c CROSS JOIN LATERAL (
                 SELECT g.id FROM deliveries g
                 WHERE g.handlers_id = c.handlers_id AND g.ordering_key = c.ordering_key
                   AND g.status = 'pending' AND g.id >= c.id
                 ORDER BY g.id LIMIT $4) f)
             UPDATE deliveries SET lease_until = {LEASE}
             WHERE deliveries.id = ANY (ARRAY(SELECT id FROM taken))
               AND deliveries.status = 'pending'
               AND deliveries.next_at <= $2 AND deliveries.lease_until < $2
               AND NOT EXISTS (
                 SELECT 1 FROM deliveries g
                 WHERE g.handlers_id = deliveries.handlers_id
                   AND g.ordering_key = deliveries.ordering_key
                   AND g.status = 'pending' AND g.id < deliveries.id
                   AND (g.next_at > $2 OR g.lease_until >= $2))
             RETURNING deliveries.id, deliveries.event_seq, deliveries.handlers_id,
               deliveries.ordering_key, deliveries.attempts, deliveries.lease_until"
        ),
        // SQLite has one writer, so the inner query's view is the one the update
        // sees; repeating its conditions outside made SQLite scan every pending row
        // through an index on them instead of fetching the chosen ids. The heads come
        // from the flagged heads walked in the index's order (when each can go) up to
        // the limit, which needs no sort: ordered otherwise, every due head was read and
        // sorted for each claim, and with 8,000 queues retrying every second the first
        // handler's deliveries slowed by a fifth (the rows waiting behind a head are not
        // in that index, however many there are); each brings
        // the first pending rows of its queue that are due with none before them that
        // is not. The probe keeps the order even where a flag is out of date.
        Dialect::Sqlite => format!(
            "UPDATE deliveries SET lease_until = {LEASE}
             WHERE id IN (
               SELECT f.id FROM (
                   SELECT d.handlers_id, d.ordering_key FROM deliveries d
                   WHERE d.status = 'pending' AND d.head = 1
                     AND max(d.next_at, d.lease_until) <= $2
                     AND d.next_at <= $2 AND d.lease_until < $2{ENABLED}{HEADS_BY_PROBING}{NOTHING_IN_FLIGHT_BEHIND}
                   ORDER BY max(d.next_at, d.lease_until) LIMIT $3) h
               JOIN deliveries f ON f.id IN (
                   SELECT g.id FROM deliveries g
                   WHERE g.handlers_id = h.handlers_id AND g.ordering_key = h.ordering_key
                     AND g.status = 'pending'
                   ORDER BY g.id LIMIT $4)
               WHERE f.next_at <= $2 AND f.lease_until < $2 AND NOT EXISTS (
                   SELECT 1 FROM deliveries g
                   WHERE g.handlers_id = f.handlers_id AND g.ordering_key = f.ordering_key
                     AND g.status = 'pending' AND g.id < f.id
                     AND (g.next_at > $2 OR g.lease_until >= $2)))
             RETURNING id, event_seq, handlers_id, ordering_key, attempts, lease_until"
        ),
    };
    let q = query(&sql)
        .bind(lease_base.micros())
        .bind(now.micros())
        .bind(queues);
    let rows = q.bind(per_queue.max(1)).fetch_all(conn).await?;
    let mut claimed = rows
        .iter()
        .map(Claimed::from_row)
        .collect::<Result<Vec<_>, StoreError>>()?;
    // RETURNING gives no order: put each queue's rows in the order they must go.
    claimed.sort_by_key(|c| c.id);
    Ok(claimed)
}

/// The outcome of an attempt, as it is written back.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded,
    /// Try again at `next_at`.
    Retry {
        next_at: Timestamp,
        error: String,
    },
    /// The schedule is exhausted.
    Failed {
        error: String,
    },
}

/// Records the outcomes of attempts in one statement, each only if its lease is still
/// held (then its lease ends). One statement per outcome made the engine's one writer
/// of outcomes its bottleneck behind a failing endpoint: every call failed and was
/// written alone, the writer fell behind, and calls to every handler waited for it.
pub async fn finish_many(
    conn: &mut Conn,
    finished: &[(Lease, i64, &Outcome)],
    now: Timestamp,
) -> Result<(), StoreError> {
    if finished.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = finished
        .iter()
        .map(|(lease, attempts, outcome)| {
            let (status, next_at, error) = match outcome {
                Outcome::Succeeded => ("succeeded", now, None),
                Outcome::Retry { next_at, error } => ("pending", *next_at, Some(error.as_str())),
                Outcome::Failed { error } => ("failed", now, Some(error.as_str())),
            };
            serde_json::json!([
                lease.id,
                lease.until.micros(),
                status,
                attempts,
                next_at.micros(),
                error
            ])
        })
        .collect();
    let sql = format!(
        "UPDATE deliveries SET status = v.status, attempts = v.attempts, next_at = v.next_at,
         last_error = v.error, lease_until = 0, updated_at = $2
         FROM ({}) v WHERE deliveries.id = v.id AND deliveries.lease_until = v.lease AND {}",
        outcome_rows(conn),
        crate::query::in_ids(conn, "deliveries.id", 3)
    );
    let ids: Vec<i64> = finished.iter().map(|(lease, ..)| lease.id).collect();
    query(&sql)
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(now.micros())
        .bind(crate::query::ids_json(&ids))
        .execute(conn)
        .await?;
    let left: Vec<i64> = finished
        .iter()
        .filter(|(_, _, outcome)| !matches!(outcome, Outcome::Retry { .. }))
        .map(|(lease, ..)| lease.id)
        .collect();
    if !left.is_empty() {
        promote_heads(conn, &left).await?;
    }
    Ok(())
}

/// The rows `(id, lease, status, attempts, next_at, error)` of [`finish_many`]'s `$1`.
fn outcome_rows(conn: &Conn) -> &'static str {
    if conn.is_sqlite() {
        "SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS lease,
                json_extract(value, '$[2]') AS status, json_extract(value, '$[3]') AS attempts,
                json_extract(value, '$[4]') AS next_at, json_extract(value, '$[5]') AS error
         FROM json_each($1)"
    } else {
        "SELECT (e->>0)::bigint AS id, (e->>1)::bigint AS lease, e->>2 AS status,
                (e->>3)::bigint AS attempts, (e->>4)::bigint AS next_at, e->>5 AS error
         FROM jsonb_array_elements($1::jsonb) e"
    }
}

/// Records many successful attempts in one statement: each row's `attempts` grows by
/// the one attempt its lease was for. Returns whether deliveries wait behind them (on
/// SQLite; PostgreSQL tells after the commit, see [`promote_after_commit`]).
pub async fn finish_succeeded(
    conn: &mut Conn,
    leases: &[Lease],
    now: Timestamp,
) -> Result<bool, StoreError> {
    if leases.is_empty() {
        return Ok(false);
    }
    let sql = format!(
        "UPDATE deliveries SET status = 'succeeded', attempts = attempts + 1, next_at = $1,
         last_error = NULL, lease_until = 0, updated_at = $1 WHERE {}",
        crate::query::in_leases(conn, 2)
    );
    query(&sql)
        .bind(now.micros())
        .bind(crate::query::leases_json(leases))
        .execute(conn)
        .await?;
    let ids: Vec<i64> = leases.iter().map(|l| l.id).collect();
    promote_heads(conn, &ids).await
}

/// Flags the head of the queue of each of `ids`, deliveries that just left pending:
/// the next pending delivery of that queue, if any. SQLite only, in the transaction that
/// finished them; PostgreSQL looks after the commit instead ([`promote_after_commit`]),
/// and this returns false there. Returns whether a queue has a next delivery. A head
/// already flagged (a delivery retried by hand is) is written again, so that it counts.
async fn promote_heads(conn: &mut Conn, ids: &[i64]) -> Result<bool, StoreError> {
    if !conn.is_sqlite() {
        return Ok(false);
    }
    let sql = format!(
        "UPDATE deliveries SET head = 1 WHERE id IN ({})",
        next_pending(conn)
    );
    flags_any(conn, &sql, ids).await
}

/// Runs a flagging statement over `ids` (bound as `$1`); whether it flagged any row.
async fn flags_any(conn: &mut Conn, sql: &str, ids: &[i64]) -> Result<bool, StoreError> {
    let done = query(sql)
        .bind(crate::query::ids_json(ids))
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The oldest pending delivery of the queue of each delivery in `$1` (see
/// [`crate::query::in_ids`]).
fn next_pending(conn: &Conn) -> String {
    format!(
        "SELECT (SELECT MIN(g.id) FROM deliveries g
                 WHERE g.handlers_id = d.handlers_id AND g.ordering_key = d.ordering_key
                   AND g.status = 'pending')
         FROM deliveries d WHERE {}",
        crate::query::in_ids(conn, "d.id", 1)
    )
}

/// What [`promote_after_commit`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The queues of deliveries just finished: whether a delivery waits in any, flagged
    /// before or not (one retried by hand is), for the claim to be woken.
    Finished,
    /// The queues of deliveries queued behind others: whether it flagged a head that was
    /// not (the usual head of such a queue is flagged and in flight).
    QueuedBehind,
}

/// PostgreSQL, after the commit that finished or queued the deliveries `ids`: flags the
/// oldest pending delivery of each of their queues (see [`claim`]), on a connection of
/// its own. Returns what `look` asks. Nothing on SQLite, whose transactions flag heads
/// themselves.
///
/// Rows another transaction holds are skipped rather than waited for (a wait could close
/// a deadlock with a claim locking heads in due order): a claim leasing one delivers it,
/// whose outcome looks at its queue again; an outcome finishing one looks after its own
/// commit; the rare rest is left to [`flag_every_head`].
pub async fn promote_after_commit(
    db: &crate::Db,
    ids: &[i64],
    look: Look,
) -> Result<bool, StoreError> {
    if ids.is_empty() || db.dialect != Dialect::Postgres {
        return Ok(false);
    }
    let conn = &mut db.write.acquire().await?;
    let unflagged = match look {
        Look::Finished => "",
        Look::QueuedBehind => " AND n.head = 0",
    };
    let sql = format!(
        "UPDATE deliveries SET head = 1 WHERE id = ANY (ARRAY(
           SELECT n.id FROM deliveries n WHERE n.id = ANY (ARRAY({})){unflagged}
           FOR UPDATE SKIP LOCKED))",
        next_pending(conn)
    );
    flags_any(conn, &sql, ids).await
}

/// PostgreSQL: the look after their commits at the queues this process's transactions
/// queued deliveries behind others in (see [`crate::head_checks`]): takes every such
/// delivery noted so far and flags its queue's head if none is. Whether it flagged one.
pub async fn look_at_queued_behind(db: &crate::Db) -> Result<bool, StoreError> {
    let behind = db.head_checks().take();
    promote_after_commit(db, &behind, Look::QueuedBehind).await
}

/// PostgreSQL: flags the oldest pending delivery of every queue that has none flagged;
/// returns how many it flagged. It reads one row per queue: a safety net, run now and
/// then, for what [`promote_after_commit`] could not do (a process that died between a
/// commit and its look, a row it skipped).
pub async fn flag_every_head(db: &crate::Db) -> Result<u64, StoreError> {
    if db.dialect != Dialect::Postgres {
        return Ok(0);
    }
    let sql = format!(
        "WITH RECURSIVE {PG_HEADS}
         UPDATE deliveries SET head = 1 WHERE id = ANY (ARRAY(
           SELECT n.id FROM deliveries n
           WHERE n.id = ANY (ARRAY(SELECT id FROM heads)) AND n.head = 0
           FOR UPDATE SKIP LOCKED))"
    );
    let conn = &mut db.write.acquire().await?;
    Ok(query(&sql).execute(conn).await?.rows_affected())
}

/// Gives leases back (graceful shutdown) so another process may deliver at once.
pub async fn release(conn: &mut Conn, leases: &[Lease]) -> Result<(), StoreError> {
    end_leases(conn, leases, 0).await
}

/// Puts leased deliveries aside untried until `until`: their leases end then, and no
/// claim takes them before (nor anything behind them in their queues).
pub async fn put_aside(
    conn: &mut Conn,
    leases: &[Lease],
    until: Timestamp,
) -> Result<(), StoreError> {
    end_leases(conn, leases, until.micros()).await
}

/// Moves the end of leases that are still as given to `end` (0: now).
async fn end_leases(conn: &mut Conn, leases: &[Lease], end: i64) -> Result<(), StoreError> {
    if leases.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE deliveries SET lease_until = $2 WHERE status = 'pending' AND {}",
        crate::query::in_leases(conn, 1)
    );
    query(&sql)
        .bind(crate::query::leases_json(leases))
        .bind(end)
        .execute(conn)
        .await?;
    Ok(())
}

/// When the next delivery that can go is due after `after`, if any: the earliest due
/// time (or end of lease) of the queues' heads later than that. A wake-up too early is
/// harmless, one too late is not. `after` is when the last claim looked: a head due by
/// then and not claimed is blocked behind a delivery in flight (whose end wakes the
/// engine), and as the earliest it hid every later one, so that the engine slept its
/// whole fallback poll (1 s) while queues put aside for a few milliseconds came due.
pub async fn next_due(conn: &mut Conn, after: Timestamp) -> Result<Option<Timestamp>, StoreError> {
    // Heads only (see `claim`): the backlog waiting behind them would otherwise be read
    // in full every time the engine goes idle, and, being due, would say "now" while
    // nothing can go, so that the engine slept its whole fallback poll. The first
    // through the heads index, which is keyed by exactly that, instead of every flagged
    // head (one per queue behind a failing endpoint).
    let can_go = if conn.is_sqlite() {
        "max(d.next_at, d.lease_until)"
    } else {
        "GREATEST(d.next_at, d.lease_until)"
    };
    let sql = format!(
        "SELECT {can_go} FROM deliveries d
         WHERE d.status = 'pending' AND d.head = 1{ENABLED} AND {can_go} > $1
         ORDER BY {can_go} LIMIT 1"
    );
    let at = query_scalar::<Option<i64>>(&sql)
        .bind(after.micros())
        .fetch_optional(conn)
        .await?
        .flatten();
    Ok(at.map(Timestamp::from_micros))
}

/// What [`analyze_if_stale`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analyzed {
    /// Nothing: the statistics are fresh enough, another process is taking them, the
    /// table was busy (autovacuum), or the database is SQLite.
    Nothing,
    /// It took them.
    Done,
    /// PostgreSQL skipped it: the database user may not analyze the table (only its
    /// owner may); PostgreSQL only warns about that.
    NotAllowed,
}

/// PostgreSQL: refreshes the planner's statistics of `deliveries` when a tenth of its
/// rows (and at least 1,000) changed since they were last taken. The claim's plans
/// depend on them, and autovacuum takes them only every minute or so: on a table filling
/// up from empty the planner, believing few deliveries pending, read the whole backlog
/// behind a failing endpoint at every claim (seconds each). One process at a time does it
/// (an advisory lock), and it gives way at once to an autovacuum of the table: a lock
/// request waiting on one longer than `deadlock_timeout` would cancel the vacuum.
pub async fn analyze_if_stale(db: &crate::Db) -> Result<Analyzed, StoreError> {
    if db.dialect != Dialect::Postgres {
        return Ok(Analyzed::Nothing);
    }
    const COUNT: &str =
        "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'deliveries'::regclass";
    let mut tx = db.begin().await?;
    let ours: bool = query_scalar("SELECT pg_try_advisory_xact_lock(7201943361)")
        .fetch_one(&mut tx)
        .await?;
    let stale: Option<bool> = query_scalar(
        "SELECT n_mod_since_analyze > GREATEST(1000, n_live_tup / 10)
         FROM pg_stat_user_tables WHERE relid = 'deliveries'::regclass",
    )
    .fetch_optional(&mut tx)
    .await?;
    if !ours || stale != Some(true) {
        tx.rollback().await?;
        return Ok(Analyzed::Nothing);
    }
    let before: Option<i64> = query_scalar(COUNT).fetch_optional(&mut tx).await?;
    crate::db::lock_timeout(&mut tx, 200).await?;
    match query("ANALYZE deliveries").execute(&mut tx).await {
        Ok(_) => tx.commit().await?,
        Err(e) if e.is_lock_timeout() => {
            tx.rollback().await?;
            return Ok(Analyzed::Nothing);
        }
        Err(e) => return Err(e),
    }
    let mut conn = db.read.acquire().await?;
    let after: Option<i64> = query_scalar(COUNT).fetch_optional(&mut conn).await?;
    Ok(if after > before {
        Analyzed::Done
    } else {
        Analyzed::NotAllowed
    })
}

/// Why [`fail_uncalled`] failed a delivery of an archived handler.
pub const ARCHIVED: &str = "the handler was archived";
/// Why [`fail_uncalled`] failed a delivery of a handler made a before handler.
pub const MADE_BEFORE: &str = "the handler became a before handler";

/// Handlers `h` whose after deliveries are kept, pending until called: after handlers
/// not archived (a disabled one's wait for it to be enabled again). The others' fail
/// ([`fail_uncalled`]).
const KEEPS_DELIVERIES: &str = "h.stage = 'after' AND h.status <> 'archived'";

/// Fails the pending deliveries of handlers that no longer take after deliveries:
/// archived ones, and ones made before handlers (of `handlers_id` only, if given), but
/// not those leased: in flight, or about to be. Such a handler is called no more for
/// them (a before handler would have got after payloads), and they would otherwise stay
/// pending for ever, counted in the backlog and its age, and keep their events from
/// being pruned. `recover` puts them back once it is an enabled after handler again.
/// A call in flight ends as it ends: one the receiver took was failed here once, then
/// put back by `recover` and sent twice. What a call leaves pending (its retry, the
/// deliveries taken with it and given back untried) fails too: the outcome writer calls
/// this, over every handler, in the transaction that ends their leases. Those put aside
/// for a moment, and those of a process that died, are failed by the engine's periodic
/// walk once their leases end. Returns how many it failed.
pub async fn fail_uncalled(
    conn: &mut Conn,
    handlers_id: Option<i64>,
    now: Timestamp,
) -> Result<u64, StoreError> {
    // Through the pending deliveries' index: without statistics SQLite took the
    // handler's index and read every delivery an archived handler ever had (its failed
    // backlog, kept), 94 ms per million at each walk, holding the writer.
    static SQL: [std::sync::OnceLock<String>; 2] = [const { std::sync::OnceLock::new() }; 2];
    let sqlite = conn.is_sqlite();
    let sql = SQL[usize::from(sqlite)].get_or_init(|| {
        let table = match sqlite {
            true => "deliveries INDEXED BY deliveries_pending",
            false => "deliveries",
        };
        format!(
            "UPDATE {table} SET status = 'failed',
               last_error = (SELECT CASE WHEN h.status = 'archived' THEN '{ARCHIVED}'
                                    ELSE '{MADE_BEFORE}' END
                             FROM handlers h WHERE h.id = deliveries.handlers_id),
               next_at = $1, lease_until = 0, updated_at = $1
             WHERE status = 'pending' AND lease_until < $1 AND handlers_id IN (
               SELECT id FROM handlers h
               WHERE NOT ({KEEPS_DELIVERIES}) AND ($2 = 0 OR id = $2))"
        )
    });
    let done = query(sql)
        .bind(now.micros())
        .bind(handlers_id.unwrap_or(0))
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// What [`retry`] did, or why it did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// A failed delivery is pending again, due now.
    Requeued,
    /// A pending one waiting for its next attempt is due now (one already due stays so).
    MadeDue,
    /// A pending one is leased: being called, or set aside for a moment.
    Leased,
    Succeeded,
    NotFound,
}

/// The handler of delivery `id`, if it exists.
pub async fn handler_of(conn: &mut Conn, id: i64) -> Result<Option<i64>, StoreError> {
    let row = query("SELECT handlers_id FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// A delivery tried again now: a failed one back to pending for one more attempt, or a
/// pending one waiting for its next attempt (a schedule's hours, a `Retry-After`) made
/// due, once its endpoint is mended. A failed one is flagged as a head: harmless where
/// it is not its queue's oldest pending one (see [`claim`]). A pending one keeps its
/// place, and its flag: an earlier delivery of its queue still goes first.
pub async fn retry(conn: &mut Conn, id: i64, now: Timestamp) -> Result<Retried, StoreError> {
    let done = query(
        "UPDATE deliveries SET status = 'pending', next_at = $1, lease_until = 0, updated_at = $1,
           head = 1
         WHERE id = $2 AND status = 'failed'",
    )
    .bind(now.micros())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        hold_queues_behind(conn, &[id]).await?;
        return Ok(Retried::Requeued);
    }
    let done = query(
        "UPDATE deliveries SET next_at = $1, updated_at = $1
         WHERE id = $2 AND status = 'pending' AND lease_until < $1 AND next_at > $1",
    )
    .bind(now.micros())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(Retried::MadeDue);
    }
    let row = query("SELECT status, lease_until FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(Retried::NotFound);
    };
    Ok(match row.try_get::<String, _>(0)?.as_str() {
        "succeeded" => Retried::Succeeded,
        _ if row.try_get::<i64, _>(1)? >= now.micros() => Retried::Leased,
        // Pending, due and not leased: it waits for a claim, or for an earlier
        // delivery of its queue.
        _ => Retried::MadeDue,
    })
}

/// PostgreSQL: locks (`FOR SHARE`, until the transaction ends) the first pending delivery
/// after each of `ids`, deliveries just put back to pending by hand. A claim that has
/// leased that queue and not yet committed holds that row: this waits for it, so that its
/// lease is committed before the put-back is and the next claim sees what is in flight
/// behind the put-back delivery ([`NOTHING_IN_FLIGHT_BEHIND`]). A claim that comes
/// meanwhile skips the locked row. SQLite's one writer needs none of this.
async fn hold_queues_behind(conn: &mut Conn, ids: &[i64]) -> Result<(), StoreError> {
    if conn.is_sqlite() || ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT g.id FROM deliveries g WHERE g.id = ANY (ARRAY(
           SELECT (SELECT MIN(e.id) FROM deliveries e
                   WHERE e.handlers_id = d.handlers_id AND e.ordering_key = d.ordering_key
                     AND e.status = 'pending' AND e.id > d.id)
           FROM deliveries d WHERE {}))
         FOR SHARE",
        crate::query::in_ids(conn, "d.id", 1)
    );
    query(&sql)
        .bind(crate::query::ids_json(ids))
        .fetch_all(conn)
        .await?;
    Ok(())
}

/// Re-queues a handler's failed deliveries of events raised in `[since, until]`.
pub async fn recover(
    tx: &mut Tx,
    handlers_id: i64,
    since: Timestamp,
    until: Timestamp,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let requeued: Vec<i64> = query_scalar(
        "UPDATE deliveries SET status = 'pending', next_at = $1, lease_until = 0, updated_at = $1
         WHERE handlers_id = $2 AND status = 'failed'
           AND event_seq IN (SELECT id FROM events WHERE dt >= $3 AND dt <= $4)
         RETURNING id",
    )
    .bind(now.micros())
    .bind(handlers_id)
    .bind(since.micros())
    .bind(until.micros())
    .fetch_all(&mut *tx)
    .await?;
    hold_queues_behind(tx, &requeued).await?;
    // A delivery before a recovered one may be finishing in a transaction this one
    // cannot see; their queues are looked at again after the commit.
    requeued.iter().for_each(|id| tx.queued_behind(*id));
    // Each of the handler's queues has its oldest pending delivery flagged, whether that
    // is a recovered one or the head it had.
    flag_heads_of(tx, handlers_id).await?;
    Ok(requeued.len() as u64)
}

/// Flags the oldest pending delivery of each of handler `handlers_id`'s queues (see
/// [`claim`]), leased or not: after `recover`, and when the handler takes after
/// deliveries again (enabled, an after handler). What its archive failed, it failed
/// without flagging the next of each queue, and a delivery leased then and given back
/// later, once it was enabled again, stayed unflagged: never claimed, with its client's
/// later deliveries queued behind it.
pub async fn flag_heads_of(conn: &mut Conn, handlers_id: i64) -> Result<(), StoreError> {
    query(
        "UPDATE deliveries SET head = 1 WHERE head = 0 AND id IN (
           SELECT MIN(id) FROM deliveries WHERE handlers_id = $1 AND status = 'pending'
           GROUP BY ordering_key)",
    )
    .bind(handlers_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_uid: String,
    pub events_id: String,
    pub handlers_id: i64,
    pub handler: String,
    pub ordering_key: String,
    pub status: String,
    pub attempts: i64,
    pub next_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const VIEW: &str = "(SELECT d.id, e.uid AS event_uid, e.events_id, d.event_seq, d.handlers_id, h.name AS handler,
    d.ordering_key, d.status, d.attempts, d.next_at, d.last_error, d.created_at, d.updated_at
    FROM deliveries d JOIN events e ON e.id = d.event_seq JOIN handlers h ON h.id = d.handlers_id) v";

const VIEW_COLUMNS: &str = "id, event_uid, events_id, handlers_id, handler, ordering_key, status, attempts, next_at, last_error, created_at, updated_at";

fn from_row(row: &Row) -> Result<Delivery, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        event_uid: row.try_get("event_uid")?,
        events_id: row.try_get("events_id")?,
        handlers_id: row.try_get("handlers_id")?,
        handler: row.try_get("handler")?,
        ordering_key: row.try_get("ordering_key")?,
        next_at: (status == "pending")
            .then(|| row.try_get("next_at").map(Timestamp::from_micros))
            .transpose()?,
        status,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Filters of the delivery list.
#[derive(Debug, Default)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
    pub handlers_id: Option<i64>,
    pub event_seq: Option<i64>,
    pub id: Option<i64>,
}

/// The delivery list, newest first; counted in the table, since the view only joins
/// names in: one event and one handler for each delivery (an event is only pruned in the
/// transaction that deletes its deliveries first, see `retention`; a handler goes with
/// its deliveries).
pub const LIST: Listing = Listing {
    columns: VIEW_COLUMNS,
    table: VIEW,
    count_from: "deliveries",
    order: "id DESC",
};

/// Lists deliveries, newest first.
pub async fn list(
    conn: &mut Conn,
    q: &DeliveryQuery,
    page: Page,
) -> Result<(Vec<Delivery>, i64), StoreError> {
    let (rows, total) = filter(q).list(conn, &LIST, page).await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// The `WHERE` clause of [`list`].
pub fn filter(q: &DeliveryQuery) -> Filter {
    let mut filter = Filter::default();
    filter
        // Pending and failed deliveries have partial indexes.
        .eq_word("status", q.status)
        .eq_int("handlers_id", q.handlers_id)
        .eq_int("id", q.id);
    if let Some(seq) = q.event_seq {
        filter.add("event_seq = ?", vec![Bind::Int(seq)]);
    }
    filter
}

/// One handler's pending deliveries: how many, and when the oldest was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub handlers_id: i64,
    pub pending: i64,
    pub oldest: Option<Timestamp>,
}

/// Pending deliveries by handler, in the order of their ids: every handler that keeps
/// after deliveries (at 0 when none waits), and any other with some. The count is read
/// from the pending deliveries' index (its first column is the handler). The oldest is a queue's head (its oldest pending delivery), so it is
/// looked for among the heads only: the whole backlog's times took a second per million
/// pending deliveries at each scrape of `/metrics`, while a handler was down. (On
/// PostgreSQL a head is flagged just after its commit: for that moment the age may be a
/// newer head's.)
pub async fn backlog(conn: &mut Conn) -> Result<Vec<Backlog>, StoreError> {
    let counts = query(
        "SELECT handlers_id, COUNT(*) FROM deliveries WHERE status = 'pending'
         GROUP BY handlers_id ORDER BY handlers_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let oldest = query(
        "SELECT handlers_id, MIN(created_at) FROM deliveries
         WHERE status = 'pending' AND head = 1 GROUP BY handlers_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    // Every handler that keeps deliveries has its series, at 0 when nothing waits: a
    // series that comes and goes shows as gaps, and an alert on it needs `absent()`.
    let handlers = query(&format!(
        "SELECT h.id FROM handlers h WHERE {KEEPS_DELIVERIES} ORDER BY h.id"
    ))
    .fetch_all(conn)
    .await?;
    let mut oldest_of = std::collections::HashMap::new();
    for row in &oldest {
        oldest_of.insert(
            row.try_get::<i64, _>(0usize)?,
            row.try_get::<i64, _>(1usize)?,
        );
    }
    let mut by_handler = std::collections::BTreeMap::new();
    for row in &handlers {
        by_handler.insert(row.try_get::<i64, _>(0usize)?, 0);
    }
    for row in &counts {
        by_handler.insert(row.try_get::<i64, _>(0usize)?, row.try_get(1usize)?);
    }
    Ok(by_handler
        .into_iter()
        .map(|(handlers_id, pending)| Backlog {
            handlers_id,
            pending,
            oldest: oldest_of
                .get(&handlers_id)
                .map(|t| Timestamp::from_micros(*t)),
        })
        .collect())
}

//! Pruning past the logs' retention, on SQLite or (with `BILLHOOK_TEST_DATABASE_URL`)
//! PostgreSQL: batch after batch, every call before the cutoff goes, and every event
//! before it whose deliveries all succeeded before it, with those deliveries; an event
//! with a delivery failed or pending stays, and so do the newer rows.

use billhook_domain::Timestamp;
use billhook_store::events::Event;
use billhook_store::outbox;
use billhook_store::retention::{prune, Position, Pruned};
use billhook_store::sql::query;
use serde_json::json;

mod common;
use common::{scalar, Fresh};

const OLD: usize = 1200;
const BATCH: i64 = 500;

#[tokio::test]
async fn batches_prune_what_was_delivered_before_the_cutoff_and_nothing_else() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let (old, cutoff, new) = (1_000_000, 2_000_000, 3_000_000);
    let event = |n: usize, dt: i64| Event {
        seq: 0,
        uid: format!("uid-{n}"),
        events_id: "clients.update".into(),
        object_id: Some(n as i64),
        ordering_key: format!("clients:{n}"),
        dt: Timestamp::from_micros(dt),
        data: json!({"n": n}),
        previous: json!({}),
    };
    let mut tx = db.begin().await.unwrap();
    let old_events: Vec<Event> = (0..OLD).map(|n| event(n, old)).collect();
    for chunk in old_events.chunks(100) {
        outbox::append(&mut tx, dialect, chunk, Timestamp::from_micros(old))
            .await
            .unwrap();
    }
    outbox::append(
        &mut tx,
        dialect,
        &[event(OLD, new)],
        Timestamp::from_micros(new),
    )
    .await
    .unwrap();
    for sql in [
        // Every delivery (two per event: two handlers) succeeded long ago, but those of
        // three old events: one failed, one is pending, one succeeded only after the
        // cutoff (a retry by hand); and the new event's.
        format!("UPDATE deliveries SET status = 'succeeded', updated_at = {old}"),
        "UPDATE deliveries SET status = 'failed' WHERE event_seq = 6 AND handlers_id = 1".into(),
        "UPDATE deliveries SET status = 'pending' WHERE event_seq = 7 AND handlers_id = 2".into(),
        format!("UPDATE deliveries SET updated_at = {new} WHERE event_seq = 8"),
        format!(
            "UPDATE deliveries SET updated_at = {new} WHERE event_seq = {}",
            OLD + 1
        ),
        // A call for every old delivery and ten new ones.
        format!(
            "INSERT INTO executions (dt, handlers_id, handler, events_id, event_uid, object_id,
               stage, attempt, status, duration_ms, request, response_status, response_body,
               error, modified, deliveries_id)
             SELECT CASE WHEN d.id <= 10 THEN {new} ELSE {old} END, d.handlers_id, 'h',
               'clients.update', 'u', 1, 'after', 1, 'success', 3, '{{}}', 200, '', NULL,
               NULL, d.id
             FROM deliveries d"
        ),
    ] {
        query(&sql).execute(&mut tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut total = Pruned::default();
    let mut batches = 0;
    let mut from = Position::default();
    loop {
        // Every old event has the same time: the position goes by the id among them.
        let (p, next) = prune(db, Timestamp::from_micros(cutoff), from, BATCH)
            .await
            .unwrap();
        assert!(
            p.events == 0 || next != from,
            "the position moves with what goes"
        );
        from = next;
        batches += 1;
        total += p;
        if !p.full(BATCH) {
            break;
        }
        assert!(batches < 20, "pruning never ends: {total:?}");
    }
    let deliveries = 2 * (OLD + 1) as u64;
    assert_eq!(
        total,
        Pruned {
            executions: deliveries - 10,
            events: OLD as u64 - 3,
            deliveries: deliveries - 2 * 4,
        }
    );
    // 2,392 old calls, 500 a batch.
    assert_eq!(batches, 5, "{BATCH} rows of each kind at most per batch");
    let (again, _) = prune(
        db,
        Timestamp::from_micros(cutoff),
        Position::default(),
        BATCH,
    )
    .await
    .unwrap();
    assert_eq!(again, Pruned::default(), "a new pass finds nothing left");
    let mut conn = db.read.acquire().await.unwrap();
    let left = scalar(&mut conn, "SELECT COUNT(*) FROM executions").await;
    assert_eq!(left, 10, "the calls made after the cutoff");
    let kept = query("SELECT id FROM events ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<i64, _>(0usize).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(kept, vec![6, 7, 8, OLD as i64 + 1]);
    let orphans = scalar(
        &mut conn,
        "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS
           (SELECT 1 FROM events e WHERE e.id = d.event_seq)",
    )
    .await;
    assert_eq!(orphans, 0, "no delivery outlives its event");
    assert_eq!(
        scalar(&mut conn, "SELECT COUNT(*) FROM deliveries").await,
        8,
        "the kept events keep both their deliveries"
    );
    drop(conn);
    fresh.drop_database().await;
}

/// PostgreSQL: a server pruning beside another skips the rows the other is deleting
/// instead of waiting for them (or deadlocking, locking the same rows in another order).
#[tokio::test]
async fn a_prune_beside_another_skips_the_rows_it_holds() {
    let Some(fresh) = Fresh::postgres_only("no prune runs beside another").await else {
        return;
    };
    let db = &fresh.db;
    let mut tx = db.begin().await.unwrap();
    query(
        "INSERT INTO executions (dt, handlers_id, handler, events_id, event_uid, object_id,
           stage, attempt, status, duration_ms, request, response_status, response_body,
           error, modified, deliveries_id)
         SELECT n, 1, 'h', 'clients.update', 'u', 1, 'after', 1, 'success', 3, '{}', 200, '',
           NULL, NULL, n
         FROM generate_series(1, 600) AS n",
    )
    .execute(&mut tx)
    .await
    .unwrap();
    // Twenty old events that no handler matched.
    query(
        "INSERT INTO events (uid, events_id, object_id, ordering_key, dt, data, previous)
         SELECT 'u' || n, 'clients.update', 1, 'clients:1', n, '{}', '{}'
         FROM generate_series(1, 20) AS n",
    )
    .execute(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // The other server's batch: the ten oldest calls and five oldest events, being
    // deleted.
    let mut other = db.begin().await.unwrap();
    for sql in [
        "SELECT id FROM executions ORDER BY dt LIMIT 10 FOR UPDATE",
        "SELECT id FROM events ORDER BY dt LIMIT 5 FOR UPDATE",
    ] {
        query(sql).fetch_all(&mut other).await.unwrap();
    }
    let cutoff = Timestamp::from_micros(1_000_000);
    let start = Position::default();
    let beside = prune(db, cutoff, start, BATCH);
    let (p, _) = tokio::time::timeout(std::time::Duration::from_secs(5), beside)
        .await
        .expect("the prune waited for the rows another holds")
        .unwrap();
    assert_eq!((p.executions, p.events), (BATCH as u64, 15));
    let left = scalar(&mut other, "SELECT COUNT(*) FROM executions WHERE dt <= 10").await;
    assert_eq!(left, 10, "the held calls are left to their holder");
    let left = scalar(&mut other, "SELECT COUNT(*) FROM events WHERE dt <= 5").await;
    assert_eq!(left, 5, "the held events are left to their holder");
    other.commit().await.unwrap();
    let (p, _) = prune(db, cutoff, start, BATCH).await.unwrap();
    assert_eq!((p.executions, p.events), (100, 5));
    fresh.drop_database().await;
}

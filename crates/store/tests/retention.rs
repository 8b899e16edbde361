//! Pruning past the logs' retention, on SQLite or (with `BILLHOOK_TEST_DATABASE_URL`)
//! PostgreSQL: batch after batch, every call before the cutoff goes, and every event
//! before it whose deliveries all succeeded before it, with those deliveries; an event
//! with a delivery failed or pending stays, and so do the newer rows.

use billhook_domain::Timestamp;
use billhook_store::events::Event;
use billhook_store::outbox;
use billhook_store::retention::{prune, Pruned};
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
    loop {
        let p = prune(db, Timestamp::from_micros(cutoff), BATCH)
            .await
            .unwrap();
        batches += 1;
        total.executions += p.executions;
        total.events += p.events;
        total.deliveries += p.deliveries;
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

//! SQLite's migration 0008 (the outbox's tables rebuilt without AUTOINCREMENT where no id
//! is ever deleted, deliveries without foreign keys), run on a database made by the
//! migrations before it and holding data: every row stays as it was, and no id is
//! handed out twice — not even the ids of deliveries deleted with their handler before
//! the migration. SQLite only: PostgreSQL's tables did not change.

use std::path::Path;

use billhook_domain::Timestamp;
use billhook_store::events::Event;
use billhook_store::sql::{query, Conn};
use billhook_store::{outbox, Db, Dialect};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// The version of the migration under test.
const REBUILT_IN: i64 = 8;

async fn scalar(conn: &mut Conn, sql: &str) -> i64 {
    query(sql)
        .fetch_one(conn)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// What the rebuilt tables hold, row by row, as text.
async fn contents(conn: &mut Conn) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT json_array(id, uid, events_id, object_id, ordering_key, dt, data, previous)
         FROM events ORDER BY id",
        "SELECT json_array(id, event_seq, handlers_id, ordering_key, status, attempts, next_at,
           lease_until, last_error, created_at, updated_at, head) FROM deliveries ORDER BY id",
        "SELECT json_array(id, dt, handlers_id, handler, events_id, event_uid, object_id, stage,
           attempt, status, duration_ms, request, response_status, response_body, error,
           modified, deliveries_id) FROM executions ORDER BY id",
    ] {
        for row in query(sql).fetch_all(&mut *conn).await.unwrap() {
            out.push(row.try_get::<String, _>(0).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn the_outbox_tables_keep_their_rows_and_never_reuse_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");

    // The database as the migrations before 0008 left it.
    let mut earlier = Migrator::new(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/sqlite"
    )))
    .await
    .unwrap();
    earlier.migrations = earlier
        .migrations
        .iter()
        .filter(|m| m.version < REBUILT_IN)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert!(earlier.iter().any(|m| m.version == REBUILT_IN - 1));
    let mut c = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    earlier.run(&mut c).await.unwrap();
    // Two handlers, four events each delivered to `kept` and the last two to `gone` too,
    // a call logged; then `gone` is deleted with its deliveries, which held the
    // highest delivery ids (5 and 6).
    c.execute(
        "INSERT INTO handlers (name, status, priority, event, stage, type, task, timeout_ms,
           on_failure, retry_schedule, secret, created_at, updated_at)
         VALUES ('kept', 'enabled', 0, '*', 'after', 'http', 'http://127.0.0.1:9/', 1000,
                 'continue', '[]', 's', 0, 0),
                ('gone', 'enabled', 0, '*', 'after', 'http', 'http://127.0.0.1:9/', 1000,
                 'continue', '[]', 's', 0, 0);
         INSERT INTO events (uid, events_id, object_id, ordering_key, dt, data, previous)
         VALUES ('u1', 'clients.update', 1, 'clients:1', 10, '{\"n\":1}', '{}'),
                ('u2', 'clients.update', 1, 'clients:1', 20, '{\"n\":2}', '{\"name\":\"a\"}'),
                ('u3', 'clients.update', 2, 'clients:2', 30, '{\"n\":3}', '{}'),
                ('u4', 'clients.update', 2, 'clients:2', 40, '{\"n\":4}', '{}');
         INSERT INTO deliveries (event_seq, handlers_id, ordering_key, status, attempts, next_at,
           lease_until, last_error, created_at, updated_at, head)
         VALUES (1, 1, 'clients:1', 'succeeded', 1, 11, 0, NULL, 10, 11, 0),
                (2, 1, 'clients:1', 'failed', 3, 21, 0, 'HTTP 500', 20, 21, 0),
                (3, 1, 'clients:2', 'pending', 0, 30, 0, NULL, 30, 30, 1),
                (4, 1, 'clients:2', 'pending', 0, 40, 0, NULL, 40, 40, 0),
                (3, 2, 'clients:2', 'pending', 0, 30, 0, NULL, 30, 30, 1),
                (4, 2, 'clients:2', 'pending', 0, 40, 0, NULL, 40, 40, 0);
         INSERT INTO executions (dt, handlers_id, handler, events_id, event_uid, object_id,
           stage, attempt, status, duration_ms, request, response_status, response_body, error,
           modified, deliveries_id)
         VALUES (11, 1, 'kept', 'clients.update', 'u1', 1, 'after', 1, 'success', 3,
                 '{\"n\":1}', 200, 'ok', NULL, NULL, 1),
                (40, 2, 'gone', 'clients.update', 'u4', 2, 'after', 1, 'fail', 5,
                 '{\"n\":4}', 500, 'no', 'HTTP 500', NULL, 6);
         DELETE FROM deliveries WHERE handlers_id = 2;
         DELETE FROM handlers WHERE id = 2;",
    )
    .await
    .unwrap();
    c.close().await.unwrap();

    let url = format!("sqlite:{}", path.display());
    let db = Db::connect(&url).await.unwrap();
    let before = contents(&mut db.write.acquire().await.unwrap()).await;
    assert_eq!(before.len(), 4 + 4 + 2);
    db.migrate().await.unwrap();
    let mut conn = db.write.acquire().await.unwrap();
    assert_eq!(contents(&mut conn).await, before, "the rows as they were");
    for (table, autoincrement) in [("events", 0), ("executions", 0), ("deliveries", 1)] {
        let sql =
            format!("SELECT sql LIKE '%AUTOINCREMENT%' FROM sqlite_master WHERE name = '{table}'");
        assert_eq!(scalar(&mut conn, &sql).await, autoincrement, "{table}");
    }
    let indexes = scalar(
        &mut conn,
        "SELECT count(*) FROM sqlite_master WHERE type = 'index'
           AND tbl_name IN ('events', 'deliveries', 'executions')",
    )
    .await;
    // events: uid's own, type, object, dt; deliveries: event, pending, failed, handler,
    // heads, and all failed (0009); executions: handler, event, dt, and failed and a
    // handler's failed (0009).
    assert_eq!(indexes, 4 + 6 + 5);
    assert_eq!(
        scalar(
            &mut conn,
            "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check <> 'ok'"
        )
        .await,
        0
    );
    drop(conn);

    // A new event for the handler that stays: the next event id, and a delivery id
    // above those deleted with the other handler.
    let mut tx = db.begin().await.unwrap();
    let event = Event {
        seq: 0,
        uid: "u5".into(),
        events_id: "clients.update".into(),
        object_id: Some(3),
        ordering_key: "clients:3".into(),
        dt: Timestamp::from_micros(50),
        data: json!({"n": 5}),
        previous: json!({}),
    };
    outbox::append(
        &mut tx,
        Dialect::Sqlite,
        &[event],
        Timestamp::from_micros(50),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut conn = db.write.acquire().await.unwrap();
    assert_eq!(
        scalar(&mut conn, "SELECT id FROM events WHERE uid = 'u5'").await,
        5
    );
    assert_eq!(
        scalar(&mut conn, "SELECT id FROM deliveries WHERE event_seq = 5").await,
        7,
        "deliveries 5 and 6, deleted with their handler, stay used"
    );
    drop(conn);
    db.close().await;
}

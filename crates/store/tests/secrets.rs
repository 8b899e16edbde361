//! A handler's signing secrets through rotations, at explicit times, on SQLite or, with
//! `BILLHOOK_TEST_DATABASE_URL`, PostgreSQL: every secret replaced keeps signing until
//! its own end, however many rotations follow within the day; after the current one,
//! newest first; those past their end are dropped when the secret is rotated again. And
//! the migration to the list keeps the one previous secret the schema held before.

mod common;

use std::path::Path;

use billhook_domain::Timestamp;
use billhook_store::handlers::{self, Secrets};
use billhook_store::sql::query;
use billhook_store::Dialect;
use common::Fresh;
use sqlx::migrate::Migrator;

/// The grace the API gives a replaced secret, in hours.
const GRACE: i64 = 24;

/// `hours` after a fixed start (2023-11-14), to the second.
fn at(hours: f64) -> Timestamp {
    Timestamp::from_micros(1_700_000_000_000_000).add_seconds((hours * 3600.0) as i64)
}

async fn secrets(fresh: &Fresh, id: i64) -> Secrets {
    let mut conn = fresh.db.read.acquire().await.unwrap();
    handlers::secrets(&mut conn, id).await.unwrap().unwrap()
}

/// Rotates handler `id`'s secret to `new` at `now`, as the API does.
async fn rotate(fresh: &Fresh, id: i64, new: &str, now: Timestamp) -> bool {
    let mut tx = fresh.db.begin().await.unwrap();
    let until = now.add_seconds(GRACE * 3600);
    let found = handlers::rotate_secret(&mut tx, id, new, now, until)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    found
}

#[tokio::test]
async fn every_replaced_secret_signs_until_its_own_end() {
    let fresh = Fresh::new().await;
    // Handler 1 was created with the secret "s"; three rotations within two hours.
    assert!(rotate(&fresh, 1, "s1", at(0.0)).await);
    assert!(rotate(&fresh, 1, "s2", at(1.0)).await);
    assert!(rotate(&fresh, 1, "s3", at(2.0)).await);
    let s = secrets(&fresh, 1).await;
    assert_eq!(s.current, "s3");
    assert_eq!(
        s.previous,
        vec![
            ("s2".to_string(), at(26.0)),
            ("s1".to_string(), at(25.0)),
            ("s".to_string(), at(24.0)),
        ],
        "each with the end of its own 24 hours, newest first"
    );
    assert_eq!(s.signing(at(2.0)), ["s3", "s2", "s1", "s"], "all four sign");
    assert_eq!(s.signing(at(23.99)), ["s3", "s2", "s1", "s"]);
    assert_eq!(
        s.signing(at(24.0)),
        ["s3", "s2", "s1"],
        "the first one's day is over"
    );
    assert_eq!(s.signing(at(25.5)), ["s3", "s2"]);
    assert_eq!(s.signing(at(26.0)), ["s3"], "only the current one left");

    // A rotation drops those past their end: the list does not grow without bound.
    assert!(rotate(&fresh, 1, "s4", at(24.5)).await);
    let s = secrets(&fresh, 1).await;
    assert_eq!(s.current, "s4");
    let kept: Vec<&str> = s.previous.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(kept, ["s3", "s2", "s1"], "\"s\" ended at 24 h: dropped");
    assert_eq!(s.previous[0].1, at(48.5));
    assert_eq!(s.signing(at(25.0)), ["s4", "s3", "s2"]);
    assert!(rotate(&fresh, 1, "s5", at(100.0)).await);
    let s = secrets(&fresh, 1).await;
    assert_eq!(
        s.previous,
        vec![("s4".to_string(), at(124.0))],
        "a day on: one left"
    );

    // The other handler's secrets are its own; a handler that is not there is said so.
    let other = secrets(&fresh, 2).await;
    assert_eq!((other.current.as_str(), other.previous.len()), ("s", 0));
    assert!(!rotate(&fresh, 99, "x", at(0.0)).await, "no handler 99");
    fresh.drop_database().await;
}

/// The migration that made the list (0010 on SQLite, 0011 on PostgreSQL).
fn list_migration(dialect: Dialect) -> (i64, &'static str) {
    match dialect {
        Dialect::Sqlite => (10, "sqlite"),
        Dialect::Postgres => (11, "postgres"),
    }
}

#[tokio::test]
async fn the_migration_keeps_the_previous_secret() {
    let fresh = Fresh::unmigrated().await;
    let (version, dir) = list_migration(fresh.db.dialect);
    // The database as the migrations before the list left it.
    let path = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut earlier = Migrator::new(Path::new(&path)).await.unwrap();
    assert!(earlier.iter().any(|m| m.version == version), "{path}");
    earlier.migrations = earlier
        .migrations
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&fresh.url)
        .await
        .unwrap();
    earlier.run(&pool).await.unwrap();
    pool.close().await;
    // One handler mid-rotation, one never rotated.
    for (name, previous, until) in [
        ("rotated", Some("old"), Some(at(24.0))),
        ("not", None, None),
    ] {
        query(
            "INSERT INTO handlers (name, status, priority, event, stage, type, task,
               timeout_ms, on_failure, retry_schedule, secret, previous_secret,
               previous_secret_until, created_at, updated_at)
             VALUES ($1, 'enabled', 0, '*', 'after', 'http', 'http://127.0.0.1:9/', 1000,
               'continue', '[]', 'new', $2, $3, 0, 0)",
        )
        .bind(name.to_string())
        .bind(previous.map(String::from))
        .bind(until.map(Timestamp::micros))
        .execute(&mut fresh.db.write.acquire().await.unwrap())
        .await
        .unwrap();
    }

    fresh.db.migrate().await.unwrap();
    let s = secrets(&fresh, 1).await;
    assert_eq!(s.current, "new");
    assert_eq!(s.previous, vec![("old".to_string(), at(24.0))]);
    assert_eq!(
        s.signing(at(1.0)),
        ["new", "old"],
        "still signing until its end"
    );
    let s = secrets(&fresh, 2).await;
    assert_eq!((s.current.as_str(), s.previous.len()), ("new", 0));
    // And rotates on from there.
    assert!(rotate(&fresh, 1, "newer", at(2.0)).await);
    assert_eq!(
        secrets(&fresh, 1).await.signing(at(3.0)),
        ["newer", "new", "old"]
    );
    fresh.drop_database().await;
}

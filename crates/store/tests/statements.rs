//! SQLite statements kept per connection (`store::statements`): bindings cleared and statements reset on every exit, schema changes made by another connection followed, constraint errors classified as before, the per-connection limit, texts numbered once across threads.

use std::sync::Arc;

use billhook_store::sql::{query, Arg, Conn, LitePool, NullKind, Pool};
use billhook_store::{Db, StoreError};

fn pool(dir: &tempfile::TempDir, size: usize) -> (Pool, String) {
    let path = dir.path().join("t.db").display().to_string();
    let p = LitePool::open(
        &path,
        size,
        "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=2000;",
    )
    .unwrap();
    (Pool::Lite(p), path)
}

async fn exec(c: &mut Conn, sql: &str) {
    query(sql).execute(c).await.unwrap();
}

/// The first column of the one row `q` gives, as an integer.
async fn scalar(c: &mut Conn, q: billhook_store::sql::Query) -> i64 {
    q.fetch_one(c).await.unwrap().try_get(0).unwrap()
}

async fn one_text(
    c: &mut Conn,
    sql: &str,
    args: Vec<Arg>,
) -> Result<Vec<Option<String>>, StoreError> {
    let mut q = query(sql);
    for a in args {
        q = q.bind_arg(a);
    }
    let row = q.fetch_one(c).await?;
    let mut out = Vec::new();
    for i in 0.. {
        match row.try_get::<Option<String>, _>(i) {
            Ok(v) => out.push(v),
            Err(StoreError::Corrupt(m)) if m.starts_with("no column") => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn code(e: &StoreError) -> Option<i32> {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => Some(f.extended_code),
        _ => None,
    }
}

#[tokio::test]
async fn unique_and_primary_key_violations_are_still_classified() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("d.db").display());
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let mut c = db.write.acquire().await.unwrap();
    let ins = "INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES ($1, 'p', $2, 0)";
    query(ins)
        .bind("a")
        .bind("h")
        .execute(&mut c)
        .await
        .unwrap();
    let e = query(ins)
        .bind("b")
        .bind("h")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(e.is_unique_violation(), "{e:?}");
    assert_eq!(code(&e), Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE));
    assert!(
        format!("{e}").contains("UNIQUE constraint failed: api_keys.key_hash"),
        "{e}"
    );
    // PRIMARY KEY
    let e = query("INSERT INTO api_keys (id, name, prefix, key_hash, created_at) VALUES (1, 'x', 'p', 'other', 0)")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(e.is_unique_violation(), "{e:?}");
    // NOT NULL is a constraint but not a unique violation.
    let e = query(ins)
        .bind_arg(Arg::Null(NullKind::Text))
        .bind("z")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(!e.is_unique_violation(), "{e:?}");
    assert_eq!(code(&e), Some(rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL));
    // Through a transaction of the group commit too (the writer is one connection).
    drop(c);
    let mut tx = db.begin().await.unwrap();
    let e = query(ins)
        .bind("c")
        .bind("h")
        .execute(&mut tx)
        .await
        .unwrap_err();
    assert!(e.is_unique_violation());
    tx.rollback().await.unwrap();
    let mut c = db.write.acquire().await.unwrap();
    // Through fetch (RETURNING) too.
    let e = query("INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES ('q', 'p', 'h', 0) RETURNING id")
        .fetch_optional(&mut c)
        .await
        .err()
        .unwrap();
    assert!(e.is_unique_violation(), "{e:?}");
    drop(c);
    db.close().await;
}

#[tokio::test]
async fn bindings_are_cleared_after_ok_after_a_callback_error_and_after_a_step_error() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pool(&dir, 1);
    let mut c = p.acquire().await.unwrap();
    let sql = "SELECT $1, $2";
    assert_eq!(
        one_text(
            &mut c,
            sql,
            vec![Arg::Text("a".repeat(100)), Arg::Text("b".into())]
        )
        .await
        .unwrap(),
        vec![Some("a".repeat(100)), Some("b".into())]
    );
    // Fewer args: the rest NULL (not the previous run's values, whose Strings are gone).
    assert_eq!(
        one_text(&mut c, sql, vec![]).await.unwrap(),
        vec![None, None]
    );

    // Early exit from the row callback (invalid UTF-8 -> Corrupt) with a text bound.
    let bad = "SELECT CASE WHEN $2 IS NULL THEN 'ok' ELSE CAST(x'ff' AS TEXT) END, $1";
    let e = one_text(&mut c, bad, vec![Arg::Text("x".repeat(64)), Arg::Int(1)])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
    assert_eq!(
        one_text(&mut c, bad, vec![]).await.unwrap(),
        vec![Some("ok".into()), None]
    );

    // Step error (constraint) with a text bound.
    exec(&mut c, "CREATE TABLE u (a TEXT UNIQUE)").await;
    let ins = "INSERT INTO u (a) VALUES ($1)";
    query(ins)
        .bind("v".repeat(50))
        .execute(&mut c)
        .await
        .unwrap();
    let e = query(ins)
        .bind("v".repeat(50))
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(e.is_unique_violation());
    query(ins).execute(&mut c).await.unwrap(); // NULL, not the stale text
    let n = scalar(&mut c, query("SELECT count(*) FROM u WHERE a IS NULL")).await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn statements_are_reset_after_early_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pool(&dir, 1);
    let mut c = p.acquire().await.unwrap();
    exec(&mut c, "CREATE TABLE t (a INTEGER, s TEXT)").await;
    for i in 0..10 {
        query("INSERT INTO t VALUES ($1, $2)")
            .bind(i as i64)
            .bind(if i == 3 { "\u{0}" } else { "ok" })
            .execute(&mut c)
            .await
            .unwrap();
    }
    exec(&mut c, "UPDATE t SET s = CAST(x'ff' AS TEXT) WHERE a = 3").await;
    // Errors in the callback at row 4 of 10.
    let e = query("SELECT a, s FROM t ORDER BY a")
        .fetch_all(&mut c)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::Corrupt(_)));
    // limit 1 of 10
    query("SELECT a FROM t ORDER BY a")
        .fetch_optional(&mut c)
        .await
        .unwrap();
    // A statement left running would make DROP TABLE fail ("database table is locked").
    exec(&mut c, "DROP TABLE t").await;
}

#[tokio::test]
async fn limit_still_steps_every_row_and_multi_statements_sum_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pool(&dir, 1);
    let mut c = p.acquire().await.unwrap();
    exec(
        &mut c,
        "CREATE TABLE t (a INTEGER PRIMARY KEY, n INTEGER, x TEXT)",
    )
    .await;
    let done = query("INSERT INTO t (a, n) VALUES ($1, 0); INSERT INTO t (a, n) VALUES ($1 + 1, 0); INSERT INTO t (a, n, x) VALUES ($2, 0, $3);")
        .bind(1i64)
        .bind(10i64)
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 3);
    let x: Option<String> = query("SELECT x FROM t WHERE a = 10")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(x, None, "$3 beyond the args is NULL");
    let r = query("UPDATE t SET n = n + 1 RETURNING a")
        .fetch_optional(&mut c)
        .await
        .unwrap();
    assert!(r.is_some());
    let s = scalar(&mut c, query("SELECT sum(n) FROM t")).await;
    assert_eq!(s, 3, "every row updated though only one was read");
    let done = query("UPDATE t SET n = 5 WHERE a < $1")
        .bind(5i64)
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 2);
    let id = query("INSERT INTO t (n) VALUES (7) RETURNING id")
        .insert_id(&mut c)
        .await
        .unwrap();
    assert_eq!(id, 11);
}

#[tokio::test]
async fn kept_statements_follow_schema_changes_made_by_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (p, path) = pool(&dir, 1);
    let mut c = p.acquire().await.unwrap();
    exec(&mut c, "CREATE TABLE t (a INTEGER, b TEXT)").await;
    exec(&mut c, "INSERT INTO t VALUES (1, 'one')").await;
    let sel = "SELECT b FROM t WHERE a = $1";
    assert_eq!(
        one_text(&mut c, sel, vec![Arg::Int(1)]).await.unwrap(),
        vec![Some("one".into())]
    );

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("DROP TABLE t; CREATE TABLE t (b TEXT, z INTEGER, a INTEGER); INSERT INTO t VALUES ('uno', 0, 1);").unwrap();
    assert_eq!(
        one_text(&mut c, sel, vec![Arg::Int(1)]).await.unwrap(),
        vec![Some("uno".into())]
    );

    // Dropped and not there: an error, and the kept statement still works afterwards.
    other.execute_batch("DROP TABLE t").unwrap();
    let e = one_text(&mut c, sel, vec![Arg::Int(1)]).await.unwrap_err();
    assert!(format!("{e}").contains("no such table"), "{e}");
    other
        .execute_batch("CREATE TABLE t (a INTEGER, b TEXT); INSERT INTO t VALUES (1, 'eins');")
        .unwrap();
    assert_eq!(
        one_text(&mut c, sel, vec![Arg::Int(1)]).await.unwrap(),
        vec![Some("eins".into())]
    );

    // Writes too.
    let upd = "UPDATE t SET b = $2 WHERE a = $1";
    assert_eq!(
        query(upd)
            .bind(1i64)
            .bind("x")
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected(),
        1
    );
    other.execute_batch("DROP TABLE t; CREATE TABLE t (q INTEGER, b TEXT, a INTEGER); INSERT INTO t VALUES (0, 'y', 1);").unwrap();
    assert_eq!(
        query(upd)
            .bind(1i64)
            .bind("z")
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected(),
        1
    );
    assert_eq!(
        one_text(&mut c, sel, vec![Arg::Int(1)]).await.unwrap(),
        vec![Some("z".into())]
    );
}

/// Pre-existing hazard, now reachable in debug builds: column names are cached per text,
/// a `SELECT *` whose table gains a column. The row callback's debug_assert panics; the
/// connection must come back usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_the_row_callback_leaves_the_connection_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (p, path) = pool(&dir, 1);
    let mut c = p.acquire().await.unwrap();
    exec(&mut c, "CREATE TABLE w (a INTEGER)").await;
    exec(&mut c, "INSERT INTO w VALUES (1), (2)").await;
    let star = "SELECT * FROM w WHERE a > $1";
    query(star).bind("0").fetch_all(&mut c).await.unwrap();
    drop(c);
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("ALTER TABLE w ADD COLUMN b TEXT")
        .unwrap();
    let p2 = p.clone();
    let r = tokio::spawn(async move {
        let mut c = p2.acquire().await.unwrap();
        query(star)
            .bind("0".to_string())
            .fetch_all(&mut c)
            .await
            .map(|v| v.len())
    })
    .await;
    eprintln!("after ALTER: {:?}", r.as_ref().map_err(|e| e.is_panic()));
    let mut c = p.acquire().await.unwrap();
    // Not left running: DROP works, and a fresh statement runs.
    exec(&mut c, "DROP TABLE w").await;
    assert_eq!(
        one_text(&mut c, "SELECT $1", vec![Arg::Text("k".into())])
            .await
            .unwrap(),
        vec![Some("k".into())]
    );
}

#[tokio::test]
async fn many_distinct_texts_past_the_per_connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pool(&dir, 1);
    let mut c = p.acquire().await.unwrap();
    exec(&mut c, "CREATE TABLE t (a INTEGER)").await;
    for i in 0..1300i64 {
        // Multi-statement text: eviction may fall between its parts.
        query(&format!(
            "INSERT INTO t VALUES ($1); UPDATE t SET a = a + {i} - {i} WHERE a = $1"
        ))
        .bind(i)
        .execute(&mut c)
        .await
        .unwrap();
        let n = scalar(
            &mut c,
            query("SELECT count(*) FROM t WHERE a <= $1").bind(i),
        )
        .await;
        assert_eq!(n, i + 1);
    }
}

#[tokio::test]
async fn empty_and_odd_texts_bind() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pool(&dir, 1);
    let mut c = p.acquire().await.unwrap();
    let r = one_text(&mut c, "SELECT $1, CAST(length($1) AS TEXT), CAST($1 = '' AS TEXT), $1 || 'x', upper($1), CAST($1 LIKE '' AS TEXT)", vec![Arg::Text(String::new())]).await.unwrap();
    assert_eq!(
        r,
        vec![
            Some("".into()),
            Some("0".into()),
            Some("1".into()),
            Some("x".into()),
            Some("".into()),
            Some("1".into())
        ]
    );
    let r = one_text(
        &mut c,
        "SELECT $1, CAST(length($1) AS TEXT)",
        vec![Arg::Text("a\u{0}b".into())],
    )
    .await
    .unwrap();
    assert_eq!(r, vec![Some("a\u{0}b".into()), Some("1".into())]);
    // blob column
    let row = query("SELECT x'', x'00ff', zeroblob(0)")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(row.try_get::<String, _>(0).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sight_of_texts_on_several_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pool(&dir, 4);
    {
        let mut c = p.acquire().await.unwrap();
        exec(&mut c, "CREATE TABLE t (k INTEGER, v TEXT)").await;
        exec(&mut c, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')").await;
    }
    let p = Arc::new(p);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..200 {
                let k = (round % 3) + 1;
                let mut c = p.acquire().await.unwrap();
                // Distinct texts that each thread sees for the first time at about once.
                let sql = format!("SELECT v, {round} FROM t WHERE k = $1");
                let row = query(&sql).bind(k as i64).fetch_one(&mut c).await.unwrap();
                let v: String = row.try_get(0).unwrap();
                let r: i64 = row.try_get(1).unwrap();
                assert_eq!(
                    (v.as_str(), r),
                    (["a", "b", "c"][k - 1], round as i64),
                    "task {t}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

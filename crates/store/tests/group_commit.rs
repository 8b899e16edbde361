//! The SQLite writer's group commit: many concurrent transactions, some undone, some
//! failing; each committed one is stored, the others leave nothing, and a commit returns
//! only once its group is durable (visible to a fresh connection).

use std::sync::Arc;

use billhook_store::sql::query;
use billhook_store::Db;

async fn count(db: &Db) -> i64 {
    let mut conn = db.read.acquire().await.unwrap();
    query("SELECT COUNT(*) FROM api_keys")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .try_get(0usize)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_commit_or_undo_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("g.db").display());
    let db = Arc::new(Db::connect(&url).await.unwrap());
    db.migrate().await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            query(
                "INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES ($1, 'p', $2, 0)",
            )
            .bind(format!("k{i}"))
            .bind(format!("hash{i}"))
            .execute(&mut tx)
            .await
            .unwrap();
            match i % 4 {
                // Dropped without commit: undone.
                0 => {
                    drop(tx);
                    false
                }
                // A statement fails (duplicate hash), then the transaction is undone.
                1 => {
                    let dup = query(
                        "INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES ('d', 'p', $1, 0)",
                    )
                    .bind(format!("hash{i}"))
                    .execute(&mut tx)
                    .await;
                    assert!(dup.unwrap_err().is_unique_violation());
                    tx.rollback().await.unwrap();
                    false
                }
                _ => {
                    tx.commit().await.unwrap();
                    // Durable and visible to other connections once commit returns.
                    let mut conn = db.read.acquire().await.unwrap();
                    let n: i64 = query("SELECT COUNT(*) FROM api_keys WHERE key_hash = $1")
                        .bind(format!("hash{i}"))
                        .fetch_one(&mut conn)
                        .await
                        .unwrap()
                        .try_get(0usize)
                        .unwrap();
                    assert_eq!(n, 1, "transaction {i} visible after commit");
                    true
                }
            }
        }));
    }
    let mut committed = 0;
    for t in tasks {
        if t.await.unwrap() {
            committed += 1;
        }
    }
    assert_eq!(committed, 100);
    assert_eq!(count(&db).await, 100);

    // A fresh connection (another process, in effect) sees the same.
    db.close().await;
    let again = Db::connect(&url).await.unwrap();
    assert_eq!(count(&again).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_statement_on_the_writer_never_joins_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("p.db").display());
    let db = Arc::new(Db::connect(&url).await.unwrap());
    db.migrate().await.unwrap();
    let insert = |name: &str| {
        query("INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES ($1, 'p', $1, 0)")
            .bind(name.to_string())
    };

    // A holds the writer; B waits for it to run a statement outside any transaction.
    let mut a = db.begin().await.unwrap();
    insert("a").execute(&mut a).await.unwrap();
    let b = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut conn = db.write.acquire().await.unwrap();
            insert("b").execute(&mut conn).await.unwrap();
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // A commits while B waits: the group stays open for B, and B must end it first.
    a.commit().await.unwrap();
    b.await.unwrap();
    // C is undone: only C.
    let mut c = db.begin().await.unwrap();
    insert("c").execute(&mut c).await.unwrap();
    drop(c);
    assert_eq!(count(&db).await, 2);
    db.close().await;
    assert_eq!(count(&Db::connect(&url).await.unwrap()).await, 2);
}

//! The VFS that writes a commit's WAL frames together (`wal_writes`): whatever a commit
//! returned is in the files at once — a copy of them taken while the writer is still
//! open, as a killed process leaves them, holds every committed row — and readers see
//! each commit whole. Covered: commits of many frames (written in several calls),
//! transactions that spill pages before their commit and write them again (SQLite then
//! rewrites frame headers), and transactions rolled back after spilling.

use std::path::Path;

use billhook_store::Db;
use rusqlite::{params, Connection};

/// Registers the VFS (as opening a database does) and checks it is the default.
async fn with_vfs(dir: &Path) {
    let url = format!("sqlite:{}", dir.join("setup.db").display());
    Db::connect(&url).await.unwrap();
    // SAFETY: the default VFS and its name live as long as the process.
    let name = unsafe {
        let vfs = rusqlite::ffi::sqlite3_vfs_find(std::ptr::null());
        std::ffi::CStr::from_ptr((*vfs).zName)
    };
    assert_eq!(name.to_str().unwrap(), "billhook-wal-writes");
}

fn open(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;",
    )
    .unwrap();
    c
}

/// Copies the database and its WAL (not the shared memory index: the copy recovers
/// from the WAL alone, as after a crash) and returns the sum and count of `t.v` there.
fn crash_copy(dir: &Path, name: &str) -> (i64, i64) {
    let copy = dir.join(format!("{name}.db"));
    std::fs::copy(dir.join("w.db"), &copy).unwrap();
    std::fs::copy(dir.join("w.db-wal"), dir.join(format!("{name}.db-wal"))).unwrap();
    let c = Connection::open(&copy).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    c.query_row("SELECT COALESCE(SUM(v), 0), COUNT(*) FROM t", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

#[tokio::test]
async fn what_a_commit_returned_is_in_the_files_and_readers_see_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    with_vfs(dir.path()).await;
    let path = dir.path().join("w.db");
    let mut w = open(&path);
    w.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
        .unwrap();
    let reader = open(&path);
    let read = |c: &Connection| -> (i64, i64) {
        c.query_row("SELECT COALESCE(SUM(v), 0), COUNT(*) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    let (mut sum, mut count) = (0i64, 0i64);
    let insert = |tx: &rusqlite::Transaction, n: i64, v: i64| {
        for _ in 0..n {
            tx.execute(
                "INSERT INTO t (v, pad) VALUES (?1, zeroblob(3000))",
                params![v],
            )
            .unwrap();
        }
    };

    // Small commits, one frame or a few each.
    for v in 1..=20 {
        let tx = w.transaction().unwrap();
        insert(&tx, 1, v);
        tx.commit().unwrap();
        (sum, count) = (sum + v, count + 1);
        assert_eq!(read(&reader), (sum, count));
    }
    assert_eq!(crash_copy(dir.path(), "small"), (sum, count));

    // A commit of about 300 pages: gathered past the most one write may hold, and past
    // the most gathered at all.
    let tx = w.transaction().unwrap();
    insert(&tx, 300, 7);
    tx.commit().unwrap();
    (sum, count) = (sum + 2100, count + 300);
    assert_eq!(read(&reader), (sum, count));
    assert_eq!(crash_copy(dir.path(), "large"), (sum, count));

    // A cache of a few pages: the transaction spills pages to the WAL before its commit
    // and changes some again, so that its commit rewrites frames already written.
    w.execute_batch("PRAGMA cache_size=5").unwrap();
    let tx = w.transaction().unwrap();
    insert(&tx, 200, 3);
    tx.execute("UPDATE t SET v = v + 1 WHERE id <= 20", [])
        .unwrap();
    insert(&tx, 50, 3);
    tx.commit().unwrap();
    (sum, count) = (sum + 750 + 20, count + 250);
    assert_eq!(read(&reader), (sum, count));
    assert_eq!(crash_copy(dir.path(), "spilled"), (sum, count));

    // Spilled, then rolled back: nothing of it is seen, and the next commit, written
    // over the frames it left, is whole.
    let tx = w.transaction().unwrap();
    insert(&tx, 200, 1000);
    tx.rollback().unwrap();
    assert_eq!(read(&reader), (sum, count));
    let tx = w.transaction().unwrap();
    insert(&tx, 10, 5);
    tx.commit().unwrap();
    (sum, count) = (sum + 50, count + 10);
    assert_eq!(read(&reader), (sum, count));
    assert_eq!(crash_copy(dir.path(), "after_rollback"), (sum, count));

    // The WAL starts over after a checkpoint; commits after it are whole too.
    w.execute_batch("PRAGMA wal_checkpoint(RESTART)").unwrap();
    let tx = w.transaction().unwrap();
    insert(&tx, 40, 2);
    tx.commit().unwrap();
    (sum, count) = (sum + 80, count + 40);
    assert_eq!(read(&reader), (sum, count));
    assert_eq!(crash_copy(dir.path(), "restarted"), (sum, count));
    drop(reader);
    drop(w);
}

/// Frames a connection spilled and then rolled back must not reach the file after
/// another connection committed over the same place in the WAL.
#[tokio::test]
async fn frames_of_a_rolled_back_transaction_never_overwrite_another_connections_commit() {
    let dir = tempfile::tempdir().unwrap();
    with_vfs(dir.path()).await;
    let path = dir.path().join("w.db");
    let a = open(&path);
    a.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
        .unwrap();
    let mut a = a;
    let b = open(&path);
    for round in 0..3 {
        // A starts the WAL over, spills pages of a transaction and rolls it back.
        a.execute_batch("PRAGMA cache_size=5; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let tx = a.transaction().unwrap();
        for _ in 0..100 {
            tx.execute("INSERT INTO t (v, pad) VALUES (1000, zeroblob(3000))", [])
                .unwrap();
        }
        tx.rollback().unwrap();
        // B commits where A's frames were.
        b.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..100 {
            b.execute("INSERT INTO t (v, pad) VALUES (1, zeroblob(3000))", [])
                .unwrap();
        }
        b.execute_batch("COMMIT").unwrap();
        // A uses its WAL again: reads, and on the last round closes.
        let seen: (i64, i64) = a
            .query_row("SELECT COALESCE(SUM(v), 0), COUNT(*) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let want = (100 * (round + 1), 100 * (round + 1));
        assert_eq!(seen, want, "round {round}, as A sees it");
        if round == 2 {
            drop(a);
            let fresh = open(&path);
            let check: String = fresh
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok");
            assert_eq!(crash_copy(dir.path(), "two_writers"), want);
            break;
        }
    }
}

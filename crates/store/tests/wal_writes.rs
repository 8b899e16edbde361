//! The VFS that writes a commit's WAL frames together (`wal_writes`): whatever a commit
//! returned is in the files at once — a copy of them taken while the writer is still
//! open, as a killed process leaves them, holds every committed row — and readers see
//! each commit whole. Covered: commits of many frames (written in several calls),
//! transactions that spill pages before their commit and write them again (SQLite then
//! rewrites frame headers), transactions rolled back after spilling, and that a commit
//! takes a few write calls rather than two per page.

use std::path::Path;

use billhook_store::Db;
use rusqlite::{params, Connection};

/// The tests run one at a time: one counts the process's write calls.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// The sum and count of `t.v` as `c` sees them.
fn totals(c: &Connection) -> (i64, i64) {
    c.query_row("SELECT COALESCE(SUM(v), 0), COUNT(*) FROM t", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

fn assert_intact(c: &Connection) {
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// Inserts `n` rows of value `v`, about a page each.
fn insert(c: &Connection, n: i64, v: i64) {
    for _ in 0..n {
        c.execute(
            "INSERT INTO t (v, pad) VALUES (?1, zeroblob(3000))",
            params![v],
        )
        .unwrap();
    }
}

/// Inserts `n` rows of value `v` in a transaction of their own.
fn commit(w: &mut Connection, n: i64, v: i64) {
    let tx = w.transaction().unwrap();
    insert(&tx, n, v);
    tx.commit().unwrap();
}

/// The write system calls this process has made (Linux's `/proc/self/io`).
fn write_calls() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// Copies the database and its WAL (not the shared memory index: the copy recovers
/// from the WAL alone, as after a crash) and returns the totals there.
fn crash_copy(dir: &Path, name: &str) -> (i64, i64) {
    let copy = dir.join(format!("{name}.db"));
    std::fs::copy(dir.join("w.db"), &copy).unwrap();
    std::fs::copy(dir.join("w.db-wal"), dir.join(format!("{name}.db-wal"))).unwrap();
    let c = Connection::open(&copy).unwrap();
    assert_intact(&c);
    totals(&c)
}

/// What has been committed, and where it must be seen.
struct Committed<'a> {
    dir: &'a Path,
    reader: &'a Connection,
    sum: i64,
    count: i64,
}

impl Committed<'_> {
    /// Counts a commit of `n` rows adding `sum`, and checks that the reader and a crash
    /// copy named `name` (if any) see everything committed so far.
    fn add(&mut self, n: i64, sum: i64, name: Option<&str>) {
        (self.sum, self.count) = (self.sum + sum, self.count + n);
        self.check(name);
    }

    fn check(&self, name: Option<&str>) {
        let want = (self.sum, self.count);
        assert_eq!(totals(self.reader), want, "as the reader sees it");
        if let Some(name) = name {
            assert_eq!(crash_copy(self.dir, name), want, "in the copy {name}");
        }
    }
}

#[tokio::test]
async fn what_a_commit_returned_is_in_the_files_and_readers_see_it_whole() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    with_vfs(dir.path()).await;
    let path = dir.path().join("w.db");
    let mut w = open(&path);
    w.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
        .unwrap();
    let reader = open(&path);
    let mut committed = Committed {
        dir: dir.path(),
        reader: &reader,
        sum: 0,
        count: 0,
    };

    // Small commits, one frame or a few each.
    for v in 1..=20 {
        commit(&mut w, 1, v);
        committed.add(1, v, None);
    }
    committed.check(Some("small"));

    // A commit of about 300 pages: gathered past the most one write may hold, and past
    // the most gathered at all; a few dozen write calls, not two per page.
    let writes_before = write_calls();
    commit(&mut w, 300, 7);
    let writes = write_calls() - writes_before;
    assert!(
        writes < 100,
        "{writes} write calls for a commit of 300 pages"
    );
    committed.add(300, 2100, Some("large"));

    // A cache of a few pages: the transaction spills pages to the WAL before its commit
    // and changes some again, so that its commit rewrites frames already written.
    w.execute_batch("PRAGMA cache_size=5").unwrap();
    let tx = w.transaction().unwrap();
    insert(&tx, 200, 3);
    tx.execute("UPDATE t SET v = v + 1 WHERE id <= 20", [])
        .unwrap();
    insert(&tx, 50, 3);
    tx.commit().unwrap();
    committed.add(250, 750 + 20, Some("spilled"));

    // Spilled, then rolled back: nothing of it is seen, and the next commit, written
    // over the frames it left, is whole.
    let tx = w.transaction().unwrap();
    insert(&tx, 200, 1000);
    tx.rollback().unwrap();
    committed.check(None);
    commit(&mut w, 10, 5);
    committed.add(10, 50, Some("after_rollback"));

    // The WAL starts over after a checkpoint; commits after it are whole too.
    w.execute_batch("PRAGMA wal_checkpoint(RESTART)").unwrap();
    commit(&mut w, 40, 2);
    committed.add(40, 80, Some("restarted"));
}

/// Frames a connection spilled and then rolled back must not reach the file after
/// another connection committed over the same place in the WAL.
#[tokio::test]
async fn frames_of_a_rolled_back_transaction_never_overwrite_another_connections_commit() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    with_vfs(dir.path()).await;
    let path = dir.path().join("w.db");
    let mut a = open(&path);
    a.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
        .unwrap();
    let b = open(&path);
    for round in 1..=3 {
        // A starts the WAL over, spills pages of a transaction and rolls it back.
        a.execute_batch("PRAGMA cache_size=5; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let tx = a.transaction().unwrap();
        insert(&tx, 100, 1000);
        tx.rollback().unwrap();
        // B commits where A's frames were.
        b.execute_batch("BEGIN IMMEDIATE").unwrap();
        insert(&b, 100, 1);
        b.execute_batch("COMMIT").unwrap();
        // A uses its WAL again.
        assert_eq!(
            totals(&a),
            (100 * round, 100 * round),
            "round {round}, as A sees it"
        );
    }
    // A closes, writing whatever it still held.
    drop(a);
    assert_intact(&open(&path));
    assert_eq!(crash_copy(dir.path(), "two_writers"), (300, 300));
}

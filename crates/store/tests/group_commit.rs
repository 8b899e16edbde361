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

/// The names of the keys stored, in order.
async fn names(db: &Db) -> Vec<String> {
    let mut conn = db.read.acquire().await.unwrap();
    query("SELECT name FROM api_keys ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0usize).unwrap())
        .collect()
}

/// A migrated database in a new directory (kept while the returned guard lives), and
/// its URL for opening it again.
async fn fresh_db() -> (tempfile::TempDir, String, Arc<Db>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("g.db").display());
    let db = Arc::new(Db::connect(&url).await.unwrap());
    db.migrate().await.unwrap();
    (dir, url, db)
}

fn insert(name: &str, hash: &str) -> billhook_store::sql::Query {
    query("INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES ($1, 'p', $2, 0)")
        .bind(name.to_string())
        .bind(hash.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_commit_or_undo_alone() {
    let (_dir, url, db) = fresh_db().await;

    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            insert(&format!("k{i}"), &format!("hash{i}"))
                .execute(&mut tx)
                .await
                .unwrap();
            match i % 4 {
                // Dropped without commit: undone.
                0 => drop(tx),
                // A statement fails (duplicate hash), then the transaction is undone.
                1 => {
                    let dup = insert("d", &format!("hash{i}")).execute(&mut tx).await;
                    assert!(dup.unwrap_err().is_unique_violation());
                    tx.rollback().await.unwrap();
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
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        count(&db).await,
        100,
        "the 100 committed, nothing of the others"
    );

    // A fresh connection (another process, in effect) sees the same.
    db.close().await;
    let again = Db::connect(&url).await.unwrap();
    assert_eq!(count(&again).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_statement_on_the_writer_never_joins_a_group() {
    let (_dir, url, db) = fresh_db().await;

    // A holds the writer; B waits for it to run a statement outside any transaction.
    let mut a = db.begin().await.unwrap();
    insert("a", "a").execute(&mut a).await.unwrap();
    let b = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut conn = db.write.acquire().await.unwrap();
            insert("b", "b").execute(&mut conn).await.unwrap();
            drop(conn);
            // Had B's statement joined A's group, neither would be committed yet.
            assert_eq!(
                count(&db).await,
                2,
                "A and B committed once B's statement ran"
            );
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // A commits while B waits: the group stays open for B, and B must end it first.
    a.commit().await.unwrap();
    b.await.unwrap();
    // C is undone: only C.
    let mut c = db.begin().await.unwrap();
    insert("c", "c").execute(&mut c).await.unwrap();
    drop(c);
    assert_eq!(count(&db).await, 2);
    db.close().await;
    assert_eq!(count(&Db::connect(&url).await.unwrap()).await, 2);
}

/// A writer in a task of its own: inserts `name`, then commits or drops its transaction.
fn writer(db: &Arc<Db>, name: impl Into<String>, commit: bool) -> tokio::task::JoinHandle<()> {
    let (db, name) = (db.clone(), name.into());
    tokio::spawn(async move {
        let mut tx = db.begin().await.unwrap();
        insert(&name, &format!("h-{name}"))
            .execute(&mut tx)
            .await
            .unwrap();
        if commit {
            tx.commit().await.unwrap();
        }
    })
}

/// The transaction that opens a group runs without a savepoint: undoing it rolls the
/// group back, and a writer that waited for it starts a group of its own; once it has
/// committed into the group, a later member undone leaves its work in place. (The pauses
/// let the second writer queue for the writer connection; the rows asserted are the
/// same if it has not yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_that_opens_a_group_is_undone_alone() {
    let (_dir, _url, db) = fresh_db().await;
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(50));

    let mut first = db.begin().await.unwrap();
    insert("undone", "h-undone")
        .execute(&mut first)
        .await
        .unwrap();
    let waiting = writer(&db, "kept", true);
    pause().await;
    first.rollback().await.unwrap();
    waiting.await.unwrap();
    assert_eq!(count(&db).await, 1, "only the waiting writer's row");

    // A group opened by a transaction that commits, joined by one that is undone.
    let mut opener = db.begin().await.unwrap();
    insert("opener", "h-opener")
        .execute(&mut opener)
        .await
        .unwrap();
    let joiner = writer(&db, "joiner", false);
    pause().await;
    opener.commit().await.unwrap();
    joiner.await.unwrap();
    assert_eq!(names(&db).await, ["kept", "opener"]);
}

/// A member whose task is dropped while it waits for its group's COMMIT (an API client
/// that went away) still has the deliveries it leased handed over once the group is
/// committed, by whoever commits it: they would otherwise wait for their leases to run
/// out. (One thread: so that the other writer cannot commit the group before the
/// member is dropped.)
#[tokio::test(flavor = "current_thread")]
async fn a_member_dropped_while_its_group_commits_still_hands_over() {
    let (_dir, _url, db) = fresh_db().await;
    let mut conn = db.write.acquire().await.unwrap();
    query(
        "INSERT INTO handlers (name, status, priority, event, stage, type, task, timeout_ms,
           on_failure, retry_schedule, secret, created_at, updated_at)
         VALUES ('h', 'enabled', 0, '*', 'after', 'http', 'http://127.0.0.1:9/', 1000,
           'continue', '[]', 's', 0, 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let mut handed = db.handoffs().open(std::time::Duration::from_secs(10), 8);
    let event = |n: u64| billhook_store::events::Event {
        seq: 0,
        uid: format!("uid-{n}"),
        events_id: "clients.update".into(),
        object_id: Some(1),
        ordering_key: format!("clients:{n}"),
        dt: billhook_domain::Timestamp::now(),
        data: serde_json::json!({"n": n}),
        previous: serde_json::json!({}),
    };
    // The member must find the writer waited for within the group's first 2 ms (else
    // it commits at once): tried until it does.
    for n in 0..50 {
        let mut first = db.begin().await.unwrap();
        let now = billhook_domain::Timestamp::now();
        billhook_store::outbox::append(&mut first, db.dialect, &[event(n)], now)
            .await
            .unwrap();
        let joiner = writer(&db, format!("joiner{n}"), true);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        // One poll: the member joins the group and, a writer waiting, waits for the
        // group's COMMIT; then its future is dropped.
        let mut commit = Box::pin(first.commit());
        let waited = tokio::select! {
            biased;
            done = &mut commit => {
                done.unwrap();
                false
            }
            () = std::future::ready(()) => true,
        };
        drop(commit);
        joiner.await.unwrap();
        let handoff = tokio::time::timeout(std::time::Duration::from_secs(5), handed.recv())
            .await
            .expect("handed over")
            .unwrap();
        assert_eq!(handoff.deliveries.len(), 1);
        assert_eq!(handoff.events[0].uid, format!("uid-{n}"));
        if waited {
            let mut conn = db.read.acquire().await.unwrap();
            let events: i64 = query("SELECT COUNT(*) FROM events")
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .try_get(0usize)
                .unwrap();
            assert_eq!(events, n as i64 + 1, "committed with the group");
            return;
        }
    }
    panic!("the member never waited for its group: the case was not tried");
}

/// Commits a group of two (the second writer waits while the first writes), so that the
/// next member that finds nobody waiting lingers for a round before committing. Tried
/// again (its rows deleted) when the two made a group each: on a loaded machine the
/// second may reach the writer only after the first's group is 2 ms old or committed.
async fn share_a_group(db: &Arc<Db>) {
    for _ in 0..20 {
        let before = db.writer_stats().unwrap();
        let mut a = db.begin().await.unwrap();
        let second = db.clone();
        let b = tokio::spawn(async move {
            let mut b = second.begin().await.unwrap();
            insert("b", "h-b").execute(&mut b).await.unwrap();
            b.commit().await.unwrap();
        });
        // `b` is waiting for the writer before `a` commits.
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if db.writer_stats().unwrap().waiting > 0 {
                break;
            }
        }
        insert("a", "h-a").execute(&mut a).await.unwrap();
        a.commit().await.unwrap();
        b.await.unwrap();
        let after = db.writer_stats().unwrap();
        let made = (
            after.commits - before.commits,
            after.transactions - before.transactions,
        );
        if made == (1, 2) {
            return;
        }
        let mut conn = db.write.acquire().await.unwrap();
        query("DELETE FROM api_keys")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    panic!("the two writers never shared a group in 20 tries");
}

#[tokio::test(flavor = "current_thread")]
async fn a_lingering_member_dropped_during_its_commit_is_still_committed() {
    let (_dir, url, db) = fresh_db().await;
    share_a_group(&db).await;
    let mut c = db.begin().await.unwrap();
    insert("c", "h-c").execute(&mut c).await.unwrap();
    // Its commit is polled once, then dropped (a client that went away): nobody else is
    // due to commit the group.
    {
        let commit = c.commit();
        tokio::pin!(commit);
        tokio::select! {
            biased;
            _ = &mut commit => panic!("a member that lingers does not commit at once"),
            _ = std::future::ready(()) => {}
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count(&db).await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped member's group was never committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Committed, not held open: another connection can write.
    let other = rusqlite::Connection::open(url.strip_prefix("sqlite:").unwrap()).unwrap();
    other
        .busy_timeout(std::time::Duration::from_millis(500))
        .unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .expect("the writer is free");
}

#[tokio::test(flavor = "current_thread")]
async fn a_lingering_member_does_not_wait_for_a_long_transaction_once_committed() {
    let (_dir, _url, db) = fresh_db().await;
    share_a_group(&db).await;
    let mut c = db.begin().await.unwrap();
    insert("c", "h-c").execute(&mut c).await.unwrap();
    let started = std::time::Instant::now();
    let member = tokio::spawn(async move {
        c.commit().await.unwrap();
        started.elapsed()
    });
    // An import's long transaction takes the writer meanwhile (ending the group first)
    // and keeps it for 3 s.
    let long_db = db.clone();
    let long = tokio::spawn(async move {
        let tx = long_db.begin_long().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        tx.commit().await.unwrap();
    });
    let took = member.await.unwrap();
    assert!(
        took < std::time::Duration::from_secs(1),
        "the member's commit returned after {took:?}, behind the long transaction"
    );
    assert_eq!(count(&db).await, 3);
    long.await.unwrap();
}

/// How a member of [`group_of`] ends.
#[derive(Clone, Copy, PartialEq)]
enum End {
    Commits,
    /// Dropped without commit.
    Fails,
    /// Its transaction is rolled back under it, as SQLite does by itself after some
    /// errors (SQLITE_FULL, IOERR), then it commits.
    LosesItsTransaction,
}

/// What a member of [`group_of`] does: begins (undoable or not), writes a row unless
/// `writes` is false, then ends.
#[derive(Clone, Copy)]
struct Member {
    undoable: bool,
    writes: bool,
    end: End,
}

/// What the members of a group got from their commits (the opener's first), and the
/// names stored afterwards.
type Group = (Vec<Result<(), billhook_store::StoreError>>, Vec<String>);

/// Runs `opener`, writing "o", then has the `joiners` queue for the writer behind it,
/// so that all share its group. One thread: the joiners run in the order they queued,
/// each once the one before has let the writer go.
async fn group_of(db: &Arc<Db>, opener: Member, joiners: &[Member]) -> Group {
    // The group is arranged by task order, not by time: on a loaded machine the opener
    // reached its commit after the 2 ms a group may stay open, and committed alone.
    db.widen_group_window(500);
    let mut o = begin(db, opener.undoable).await;
    insert("o", "h-o").execute(&mut o).await.unwrap();
    let mut tasks = Vec::new();
    for (i, m) in joiners.iter().copied().enumerate() {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = begin(&db, m.undoable).await;
            if m.writes {
                insert(&format!("j{i}"), &format!("h-j{i}"))
                    .execute(&mut tx)
                    .await
                    .unwrap();
            } else {
                query("SELECT COUNT(*) FROM api_keys")
                    .fetch_one(&mut tx)
                    .await
                    .unwrap();
            }
            match m.end {
                End::Fails => {
                    drop(tx);
                    Ok(())
                }
                End::LosesItsTransaction => {
                    query("ROLLBACK").execute(&mut tx).await.unwrap();
                    tx.commit().await
                }
                End::Commits => tx.commit().await,
            }
        }));
        tokio::task::yield_now().await;
    }
    let mut commits = vec![o.commit().await];
    for t in tasks {
        commits.push(t.await.unwrap());
    }
    (commits, names(db).await)
}

/// An undoable transaction (a first attempt), or one that nothing else can undo (the
/// last attempt, as a plain `begin`): see `Db::begin_attempt`.
async fn begin(db: &Db, undoable: bool) -> billhook_store::Tx {
    let attempt = match undoable {
        true => 0,
        false => billhook_store::UNDOABLE_ATTEMPTS,
    };
    db.begin_attempt(attempt).await.unwrap()
}

const UNDOABLE: Member = Member {
    undoable: true,
    writes: true,
    end: End::Commits,
};

const PLAIN: Member = Member {
    undoable: false,
    ..UNDOABLE
};

const FAILING: Member = Member {
    end: End::Fails,
    ..UNDOABLE
};

fn undone(r: &Result<(), billhook_store::StoreError>) -> bool {
    matches!(r, Err(billhook_store::StoreError::Undone))
}

/// Undoable members share no savepoint: when one fails after writing, the group is
/// rolled back and the others' commits say so (their callers run them again); the
/// writer is free for the next group at once.
#[tokio::test(flavor = "current_thread")]
async fn an_undoable_member_failing_after_writing_undoes_its_undoable_group() {
    let (_dir, _url, db) = fresh_db().await;
    let (commits, names) = group_of(&db, UNDOABLE, &[UNDOABLE, FAILING]).await;
    assert!(
        undone(&commits[0]) && undone(&commits[1]),
        "the others are told they were undone: {commits:?}"
    );
    assert!(
        names.is_empty(),
        "nothing of the group is stored: {names:?}"
    );

    let mut again = db.begin_undoable().await.unwrap();
    insert("again", "h-again")
        .execute(&mut again)
        .await
        .unwrap();
    again.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
}

/// An undoable member that fails before writing anything undoes nothing.
#[tokio::test(flavor = "current_thread")]
async fn an_undoable_member_failing_before_writing_undoes_nothing() {
    let (_dir, _url, db) = fresh_db().await;
    let reader = Member {
        writes: false,
        ..FAILING
    };
    let (commits, names) = group_of(&db, UNDOABLE, &[reader, UNDOABLE]).await;
    assert!(commits[0].is_ok() && commits[2].is_ok(), "{commits:?}");
    assert_eq!(names, ["j1", "o"]);
}

/// Once a member that must not be undone by others is in the group, whether it opened
/// it or joined it, the undoable members after it take savepoints: one failing undoes
/// only itself.
#[tokio::test(flavor = "current_thread")]
async fn undoable_members_after_one_that_is_not_fail_alone() {
    let (_dir, _url, db) = fresh_db().await;
    let (commits, names) = group_of(&db, UNDOABLE, &[PLAIN, FAILING, UNDOABLE]).await;
    assert!(
        commits[0].is_ok() && commits[1].is_ok() && commits[3].is_ok(),
        "{commits:?}"
    );
    assert_eq!(names, ["j0", "j2", "o"]);
    let stats = db.writer_stats().unwrap();
    assert_eq!(
        (stats.commits, stats.transactions),
        (1, 3),
        "one group: the three that committed"
    );

    let (_dir, _url, db) = fresh_db().await;
    let (commits, names) = group_of(&db, PLAIN, &[FAILING, UNDOABLE]).await;
    assert!(commits[0].is_ok() && commits[2].is_ok(), "{commits:?}");
    assert_eq!(names, ["j1", "o"]);
}

/// SQLite may roll a transaction back by itself after an error (SQLITE_FULL, IOERR):
/// the group then ends as failed, for every member in it, and the next writer starts
/// a new one instead of writing outside any transaction.
#[tokio::test(flavor = "current_thread")]
async fn a_transaction_rolled_back_under_the_group_fails_the_group() {
    let (_dir, _url, db) = fresh_db().await;
    let lost = Member {
        end: End::LosesItsTransaction,
        ..UNDOABLE
    };
    let (commits, names) = group_of(&db, UNDOABLE, &[lost, UNDOABLE]).await;
    assert!(
        matches!(commits[0], Err(billhook_store::StoreError::Commit(_)))
            && matches!(commits[1], Err(billhook_store::StoreError::Commit(_))),
        "the group's members fail: {commits:?}"
    );
    assert!(commits[2].is_ok(), "the next writer commits: {commits:?}");
    assert_eq!(names, ["j1"], "only the next writer's row");
}

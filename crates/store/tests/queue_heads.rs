//! Delivery queues and their heads, on SQLite or (with `BILLHOOK_TEST_DATABASE_URL`)
//! PostgreSQL: through any mix of outcomes, manual retries and recoveries, the claim
//! hands out only heads and the deliveries that follow them, in order; the oldest pending
//! delivery of every (handler, ordering key) queue is flagged as its head (on PostgreSQL
//! once the engine's look after the commit is made: [`after_commit`]), and a queue
//! blocked behind a head that waits for its retry keeps its backlog out of the index the
//! claim walks. Heads leased by the transaction that queues them are handed over at its
//! commit only, and keep the same order.

use billhook_domain::Timestamp;
use billhook_store::deliveries::{self, Analyzed, Claimed, Lease, Look, Outcome};
use billhook_store::events::Event;
use billhook_store::sql::{query, Conn, Tx};
use billhook_store::{handlers, outbox, Db, Dialect};
use serde_json::json;

mod common;
use common::{scalar, Fresh};

fn event(n: u64, key: &str) -> Event {
    Event {
        seq: 0,
        uid: format!("uid-{n}"),
        events_id: "clients.update".into(),
        object_id: Some(1),
        ordering_key: key.into(),
        dt: Timestamp::from_micros(1),
        data: json!({"n": n}),
        previous: json!({}),
    }
}

/// Queues whose oldest pending delivery is not flagged: must be none, or it would never
/// be claimed.
async fn unflagged_heads(conn: &mut Conn) -> i64 {
    scalar(
        conn,
        "SELECT COUNT(*) FROM (SELECT MIN(id) AS id FROM deliveries WHERE status = 'pending'
           GROUP BY handlers_id, ordering_key) m JOIN deliveries d ON d.id = m.id
         WHERE d.head = 0",
    )
    .await
}

/// What the engine and its outcome writer do after a commit on PostgreSQL (see
/// `deliveries::claim`): flag the heads of the queues of `finished`, and of those of the
/// deliveries queued behind others. Whether any of those queues has a head. Nothing on
/// SQLite, whose transactions flag the heads themselves.
async fn after_commit(db: &Db, finished: &[i64]) -> bool {
    let finished_wait = deliveries::promote_after_commit(db, finished, Look::Finished)
        .await
        .unwrap();
    let behind_wait = deliveries::look_at_queued_behind(db).await.unwrap();
    finished_wait || behind_wait
}

/// Claimed deliveries with an earlier pending delivery of their queue that was not
/// claimed with them: must be none (per-queue order).
async fn out_of_order(conn: &mut Conn, claimed: &[Claimed]) -> usize {
    let mut bad = 0;
    for c in claimed {
        let earlier: Vec<i64> = query(
            "SELECT id FROM deliveries WHERE handlers_id = $1 AND ordering_key = $2
               AND status = 'pending' AND id < $3",
        )
        .bind(c.handlers_id)
        .bind(c.ordering_key.clone())
        .bind(c.id)
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0usize).unwrap())
        .collect();
        bad += earlier
            .iter()
            .filter(|id| !claimed.iter().any(|o| o.id == **id))
            .count();
    }
    bad
}

/// A small deterministic generator (the test must fail the same way every time).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[tokio::test]
async fn every_queue_keeps_its_order_and_head_through_any_outcome() {
    let fresh = Fresh::new().await;
    model_run(&fresh.db, false).await;
    fresh.drop_database().await;
}

/// The same with the hand-over of fresh deliveries open: the heads leased by their own
/// transactions are made like claimed ones.
#[tokio::test]
async fn every_queue_keeps_its_order_and_head_with_fresh_deliveries_handed_over() {
    let fresh = Fresh::new().await;
    model_run(&fresh.db, true).await;
    fresh.drop_database().await;
}

/// Random steps of appends, manual retries, recoveries, claims and outcomes, each in
/// one transaction, checking the order of every delivery taken and that every queue's
/// head is flagged (on PostgreSQL once the looks after the commit are made). With `hand_over`, the events of a step are appended
/// last (after that step's outcomes, as an API transaction comes after the outcomes
/// committed before it) and the deliveries handed over at its commit are made at the
/// next step along with the claimed ones.
async fn model_run(db: &Db, hand_over: bool) {
    let dialect = db.dialect;
    let mut rng = Lcg(7);
    let mut next_event = 0;
    let mut failed: Vec<i64> = Vec::new();
    let mut handed_over =
        hand_over.then(|| db.handoffs().open(std::time::Duration::from_secs(10), 64));
    let mut handed: Vec<Claimed> = Vec::new();
    let mut handed_in_all = 0;
    for step in 0..400i64 {
        let now = Timestamp::from_micros(1_000_000_000 + step * 1_000_000);
        let mut tx = db.begin().await.unwrap();
        // New events, in bursts, for random keys.
        let burst = rng.below(4);
        if !hand_over {
            append_burst(&mut tx, &mut rng, &mut next_event, burst, now).await;
        }
        // Now and then a failed delivery comes back by hand, or all of a handler's.
        if !failed.is_empty() && rng.below(10) == 0 {
            let id = failed.swap_remove(rng.below(failed.len() as u64) as usize);
            assert_eq!(
                deliveries::retry(&mut tx, id, now).await.unwrap(),
                deliveries::Retried::Requeued
            );
        }
        if rng.below(40) == 0 {
            let since = Timestamp::from_micros(0);
            deliveries::recover(&mut tx, 1 + rng.below(2) as i64, since, now, now)
                .await
                .unwrap();
            failed.clear();
            let rows = query("SELECT id FROM deliveries WHERE status = 'failed'")
                .fetch_all(&mut tx)
                .await
                .unwrap();
            failed.extend(rows.iter().map(|r| r.try_get::<i64, _>(0usize).unwrap()));
        }
        let lease_base = now.add_seconds(10);
        let per_queue = 1 + rng.below(3) as i64;
        let claimed = deliveries::claim(&mut tx, dialect, now, lease_base, 64, per_queue)
            .await
            .unwrap();
        assert_eq!(out_of_order(&mut tx, &claimed).await, 0, "step {step}");
        // Never two deliveries of one queue in flight: those handed over at the last
        // commit are, until this step makes them.
        let in_flight: Vec<(i64, &str)> = handed
            .iter()
            .map(|c| (c.handlers_id, c.ordering_key.as_str()))
            .collect();
        assert!(
            claimed
                .iter()
                .all(|c| !in_flight.contains(&(c.handlers_id, c.ordering_key.as_str()))),
            "step {step}: a queue with a delivery in flight was claimed"
        );
        // Each queue's deliveries go in order; the first that does not succeed stops
        // its queue, and the rest of the queue is given back, as the engine does.
        let mut taken: Vec<Claimed> = handed.drain(..).chain(claimed).collect();
        taken.sort_by_key(|c| c.id);
        let mut stopped: Vec<(i64, String)> = Vec::new();
        let mut succeeded = Vec::new();
        let mut others = Vec::new();
        let mut finished = Vec::new();
        for c in &taken {
            let queue = (c.handlers_id, c.ordering_key.clone());
            if stopped.contains(&queue) {
                deliveries::release(&mut tx, &[c.lease()]).await.unwrap();
                continue;
            }
            let outcome = match rng.below(10) {
                0..=5 => {
                    succeeded.push(c.lease());
                    finished.push(c.id);
                    continue;
                }
                6 | 7 => Outcome::Retry {
                    next_at: now,
                    error: "try again".into(),
                },
                _ => {
                    failed.push(c.id);
                    finished.push(c.id);
                    Outcome::Failed {
                        error: "gave up".into(),
                    }
                }
            };
            stopped.push(queue);
            others.push((c.lease(), c.attempts + 1, outcome));
        }
        // Written together, as the engine's writer of outcomes does.
        let others: Vec<_> = others.iter().map(|(l, a, o)| (*l, *a, o)).collect();
        deliveries::finish_many(&mut tx, &others, now)
            .await
            .unwrap();
        deliveries::finish_succeeded(&mut tx, &succeeded, now)
            .await
            .unwrap();
        if hand_over {
            append_burst(&mut tx, &mut rng, &mut next_event, burst, now).await;
        }
        if dialect == Dialect::Sqlite {
            assert_eq!(unflagged_heads(&mut tx).await, 0, "step {step}");
        }
        tx.commit().await.unwrap();
        if dialect == Dialect::Postgres {
            after_commit(db, &finished).await;
            let mut conn = db.read.acquire().await.unwrap();
            assert_eq!(unflagged_heads(&mut conn).await, 0, "step {step}");
        }
        // The backlog's oldest, looked for among the heads, is the oldest of all, and
        // each handler's count and oldest are its own.
        let mut conn = db.read.acquire().await.unwrap();
        let backlog = deliveries::backlog(&mut conn).await.unwrap();
        let oldest = backlog.iter().filter_map(|b| b.oldest).min();
        let all = "SELECT COALESCE(MIN(created_at), -1) FROM deliveries WHERE status = 'pending'";
        let want = scalar(&mut conn, all).await;
        assert_eq!(oldest.map_or(-1, |t| t.micros()), want, "step {step}");
        let handlers =
            "SELECT COUNT(DISTINCT handlers_id) FROM deliveries WHERE status = 'pending'";
        let waiting: Vec<_> = backlog.iter().filter(|b| b.pending > 0).collect();
        assert_eq!(
            waiting.len() as i64,
            scalar(&mut conn, handlers).await,
            "step {step}"
        );
        // The others are the after handlers with nothing pending, at 0.
        let after = "SELECT COUNT(*) FROM handlers WHERE stage = 'after' AND status <> 'archived'";
        let idle = backlog
            .iter()
            .filter(|b| b.pending == 0 && b.oldest.is_none());
        assert_eq!(
            idle.count() as i64,
            scalar(&mut conn, after).await - waiting.len() as i64,
            "step {step}"
        );
        for b in waiting {
            let of = format!(
                "FROM deliveries WHERE status = 'pending' AND handlers_id = {}",
                b.handlers_id
            );
            let count = scalar(&mut conn, &format!("SELECT COUNT(*) {of}")).await;
            assert_eq!(b.pending, count, "step {step}, handler {}", b.handlers_id);
            let first = scalar(&mut conn, &format!("SELECT MIN(created_at) {of}")).await;
            assert_eq!(b.oldest.map(|t| t.micros()), Some(first), "step {step}");
        }
        drop(conn);
        if let Some(rx) = &mut handed_over {
            while let Ok(handoff) = rx.try_recv() {
                let mut conn = db.read.acquire().await.unwrap();
                assert_eq!(
                    out_of_order(&mut conn, &handoff.deliveries).await,
                    0,
                    "step {step}: a delivery handed over is its queue's head"
                );
                for c in &handoff.deliveries {
                    // From the clock: the margin, then the handler's timeout (1 s).
                    let clock = Timestamp::now();
                    assert!(c.lease_until > clock.add_seconds(10), "step {step}");
                    assert!(c.lease_until <= clock.add_seconds(11), "step {step}");
                    assert!(handoff.events.iter().any(|e| e.seq == c.event_seq));
                }
                handed_in_all += handoff.deliveries.len();
                handed.extend(handoff.deliveries);
            }
        }
    }
    assert!(next_event > 300, "the run queued events: {next_event}");
    if hand_over {
        assert!(
            handed_in_all > 100,
            "deliveries were handed over: {handed_in_all}"
        );
    }
}

/// Appends `n` events, one at a time, for random keys.
async fn append_burst(tx: &mut Tx, rng: &mut Lcg, next_event: &mut u64, n: u64, now: Timestamp) {
    let keys = ["clients:1", "clients:2", "clients:3", "dids:9"];
    let dialect = if tx.is_sqlite() {
        Dialect::Sqlite
    } else {
        Dialect::Postgres
    };
    for _ in 0..n {
        *next_event += 1;
        let key = keys[rng.below(keys.len() as u64) as usize];
        outbox::append(tx, dialect, &[event(*next_event, key)], now)
            .await
            .unwrap();
    }
}

/// A transaction hands over the heads it queued only once it commits: undone, it hands
/// over nothing; and when the hand-over has no room, its deliveries wait for a claim.
#[tokio::test]
async fn fresh_deliveries_are_handed_over_at_commit_only() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::now();
    let mut rx = db.handoffs().open(std::time::Duration::from_secs(10), 1);

    // Undone: nothing handed over, nothing left.
    let mut tx = db.begin().await.unwrap();
    outbox::append(&mut tx, dialect, &[event(1, "clients:1")], now)
        .await
        .unwrap();
    assert!(rx.try_recv().is_err(), "not before the commit");
    tx.rollback().await.unwrap();
    assert!(rx.try_recv().is_err(), "nothing after a rollback");

    // Committed: both handlers' deliveries, leased, with their event; a second event
    // of the same client in the same transaction waits behind them.
    let mut tx = db.begin().await.unwrap();
    outbox::append(&mut tx, dialect, &[event(2, "clients:1")], now)
        .await
        .unwrap();
    assert!(!tx.has_deliveries_to_claim());
    outbox::append(&mut tx, dialect, &[event(3, "clients:1")], now)
        .await
        .unwrap();
    assert!(tx.has_deliveries_to_claim(), "the second event's wait");
    tx.commit().await.unwrap();
    let handoff = rx.try_recv().expect("handed over at the commit");
    assert_eq!(handoff.deliveries.len(), 2, "{handoff:?}");
    assert_eq!(handoff.events.len(), 1);
    assert_eq!(handoff.events[0].uid, "uid-2");
    assert_eq!(handoff.events[0].data.get(), r#"{"n":2}"#);
    let mut tx = db.begin().await.unwrap();
    let claimed = deliveries::claim(&mut tx, dialect, now, now.add_seconds(10), 64, 16)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "leased, and the rest wait: {claimed:?}");
    let done: Vec<Lease> = handoff.deliveries.iter().map(Claimed::lease).collect();
    deliveries::finish_succeeded(&mut tx, &done, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ids: Vec<i64> = done.iter().map(|l| l.id).collect();
    after_commit(db, &ids).await;
    let mut tx = db.begin().await.unwrap();
    let claimed = deliveries::claim(&mut tx, dialect, now, now.add_seconds(10), 64, 16)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2, "the second event's, claimed: {claimed:?}");
    tx.commit().await.unwrap();

    // No room (one transaction's deliveries wait unread): the next ones are claimed.
    for (n, key) in [(4, "clients:2"), (5, "clients:3")] {
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, dialect, &[event(n, key)], now)
            .await
            .unwrap();
        assert_eq!(tx.has_deliveries_to_claim(), n == 5, "event {n}");
        tx.commit().await.unwrap();
    }
    let mut tx = db.begin().await.unwrap();
    let claimed = deliveries::claim(&mut tx, dialect, now, now.add_seconds(10), 64, 16)
        .await
        .unwrap();
    let keys: Vec<&str> = claimed.iter().map(|c| c.ordering_key.as_str()).collect();
    assert_eq!(keys, ["clients:3", "clients:3"]);
    tx.commit().await.unwrap();
    drop(rx);
    fresh.drop_database().await;
}

#[tokio::test]
async fn a_queue_waiting_for_its_retry_keeps_its_backlog_out_of_the_claim() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::from_micros(1_000_000_000);
    let mut tx = db.begin().await.unwrap();
    for n in 0..500 {
        outbox::append(&mut tx, dialect, &[event(n, "clients:1")], now)
            .await
            .unwrap();
    }
    outbox::append(&mut tx, dialect, &[event(999, "clients:2")], now)
        .await
        .unwrap();
    // Both handlers' heads of clients:1 fail and wait an hour.
    let claimed = deliveries::claim(&mut tx, dialect, now, now.add_seconds(10), 64, 1)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4, "two handlers, two clients: {claimed:?}");
    let later = now.add_seconds(3600);
    for c in claimed.iter().filter(|c| c.ordering_key == "clients:1") {
        let retry = Outcome::Retry {
            next_at: later,
            error: "down".into(),
        };
        deliveries::finish_many(&mut tx, &[(c.lease(), 1, &retry)], now)
            .await
            .unwrap();
    }
    let done: Vec<Lease> = claimed
        .iter()
        .filter(|c| c.ordering_key == "clients:2")
        .map(Claimed::lease)
        .collect();
    deliveries::finish_succeeded(&mut tx, &done, now)
        .await
        .unwrap();

    // 998 deliveries wait behind the two heads; only the heads are flagged.
    let waiting = scalar(
        &mut tx,
        "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
    )
    .await;
    assert_eq!(waiting, 1000);
    let flagged = scalar(
        &mut tx,
        "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND head = 1",
    )
    .await;
    assert_eq!(flagged, 2, "the backlog is not in the claim's index");
    let soon = now.add_seconds(60);
    let claimed = deliveries::claim(&mut tx, dialect, soon, soon.add_seconds(10), 64, 16)
        .await
        .unwrap();
    assert!(
        claimed.is_empty(),
        "nothing may go before the heads: {claimed:?}"
    );
    tx.commit().await.unwrap();
    let mut conn = db.read.acquire().await.unwrap();
    let due = deliveries::next_due(&mut conn, now).await.unwrap();
    assert_eq!(due, Some(later), "the engine sleeps until the heads' retry");
    let due = deliveries::next_due(&mut conn, later).await.unwrap();
    assert_eq!(due, None, "nothing falls due after it");
    drop(conn);

    // Heads in flight: the engine wakes when their lease would run out, if sooner.
    let mut tx = db.begin().await.unwrap();
    outbox::append(&mut tx, dialect, &[event(1000, "clients:3")], now)
        .await
        .unwrap();
    let flying = deliveries::claim(&mut tx, dialect, now, now.add_seconds(10), 64, 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(flying.len(), 2, "the new client's heads: {flying:?}");
    let mut conn = db.read.acquire().await.unwrap();
    let due = deliveries::next_due(&mut conn, now).await.unwrap();
    assert_eq!(due, Some(flying[0].lease_until), "the end of their lease");
    drop(conn);
    fresh.drop_database().await;
}

/// On PostgreSQL the planner's statistics of the deliveries are taken again once many
/// rows changed (the claim's plans depend on them), and not again while few did. SQLite
/// has nothing to refresh.
#[tokio::test]
async fn statistics_of_a_filling_deliveries_table_are_refreshed() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::from_micros(1_000_000_000);
    if dialect == Dialect::Sqlite {
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, dialect, &[event(1, "clients:1")], now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let did = deliveries::analyze_if_stale(db).await.unwrap();
        assert_eq!(did, Analyzed::Nothing);
        return fresh.drop_database().await;
    }
    assert_eq!(
        deliveries::analyze_if_stale(db).await.unwrap(),
        Analyzed::Nothing,
        "an empty table has nothing to refresh"
    );
    // PostgreSQL counts a backend's writes once it flushes its statistics, which an
    // idle backend does only after 10 s unless asked to (it then does before it
    // answers the COMMIT).
    let mut tx = db.begin().await.unwrap();
    for n in 0..800 {
        outbox::append(&mut tx, dialect, &[event(n, "clients:1")], now)
            .await
            .unwrap();
    }
    query("SELECT pg_stat_force_next_flush()")
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // 1,600 deliveries (two handlers) since the last statistics: stale.
    assert_eq!(
        deliveries::analyze_if_stale(db).await.unwrap(),
        Analyzed::Done
    );
    assert_eq!(
        deliveries::analyze_if_stale(db).await.unwrap(),
        Analyzed::Nothing,
        "nothing changed since"
    );
    fresh.drop_database().await;
}

/// PostgreSQL: a claim made while another one holds its heads takes the next due queues
/// instead of coming back empty (several server processes on one database).
#[tokio::test]
async fn a_claim_beside_another_takes_the_next_queues() {
    let Some(fresh) = Fresh::postgres_only("claims never run side by side").await else {
        return;
    };
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::from_micros(1_000_000_000);
    let mut tx = db.begin().await.unwrap();
    for n in 0..10 {
        outbox::append(&mut tx, dialect, &[event(n, &format!("clients:{n}"))], now)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    // 20 queues (two handlers, ten clients), one delivery each.
    let lease = now.add_seconds(10);
    let mut first = db.begin().await.unwrap();
    let a = deliveries::claim(&mut first, dialect, now, lease, 4, 1)
        .await
        .unwrap();
    let mut second = db.begin().await.unwrap();
    let b = deliveries::claim(&mut second, dialect, now, lease, 4, 1)
        .await
        .unwrap();
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(b.len(), 4, "the second claim takes other queues: {b:?}");
    assert!(
        b.iter().all(|c| a.iter().all(|d| d.id != c.id)),
        "never the same delivery twice: {a:?} {b:?}"
    );
    second.commit().await.unwrap();
    first.commit().await.unwrap();
    fresh.drop_database().await;
}

/// Outcomes written together land each on its own delivery, only under the lease it
/// was taken with: a retry keeps it pending until its time with its error, a failure ends
/// it, and an outcome whose lease has meanwhile been replaced changes nothing.
#[tokio::test]
async fn outcomes_written_together_each_land_on_their_own_delivery_under_its_lease() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::now();
    let mut tx = db.begin().await.unwrap();
    for (n, key) in [(1, "clients:1"), (2, "clients:2")] {
        outbox::append(&mut tx, dialect, &[event(n, key)], now)
            .await
            .unwrap();
    }
    let lease = now.add_seconds(10);
    let mut claimed = deliveries::claim(&mut tx, dialect, now, lease, 64, 1)
        .await
        .unwrap();
    claimed.sort_by_key(|c| c.id);
    assert_eq!(claimed.len(), 4, "two events, two handlers");
    let later = now.add_seconds(60);
    let retry = Outcome::Retry {
        next_at: later,
        error: "HTTP 503: \"busy\" \u{2014} again".into(),
    };
    let failed = Outcome::Failed {
        error: "gave up".into(),
    };
    let stale = Lease {
        id: claimed[2].id,
        until: claimed[2].lease_until.add_seconds(1),
    };
    let written = [
        (claimed[0].lease(), 3, &retry),
        (claimed[1].lease(), 7, &failed),
        (stale, 2, &failed),
        (claimed[3].lease(), 1, &Outcome::Succeeded),
    ];
    deliveries::finish_many(&mut tx, &written, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = db.read.acquire().await.unwrap();
    let mut rows = Vec::new();
    for c in &claimed {
        let row = query(
            "SELECT status, attempts, next_at, last_error, lease_until FROM deliveries
             WHERE id = $1",
        )
        .bind(c.id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let status: String = row.try_get(0usize).unwrap();
        let attempts: i64 = row.try_get(1usize).unwrap();
        let next_at: i64 = row.try_get(2usize).unwrap();
        let error: Option<String> = row.try_get(3usize).unwrap();
        let lease_until: i64 = row.try_get(4usize).unwrap();
        rows.push((status, attempts, next_at, error, lease_until));
    }
    let error = |e: &str| Some(e.to_string());
    assert_eq!(
        rows[0],
        (
            "pending".into(),
            3,
            later.micros(),
            error("HTTP 503: \"busy\" \u{2014} again"),
            0
        )
    );
    assert_eq!(
        rows[1],
        ("failed".into(), 7, now.micros(), error("gave up"), 0)
    );
    assert_eq!(
        (rows[2].0.as_str(), rows[2].1, rows[2].4),
        ("pending", 0, claimed[2].lease_until.micros()),
        "written under a lease it no longer has: untouched"
    );
    assert_eq!(rows[3], ("succeeded".into(), 1, now.micros(), None, 0));
    drop(conn);
    fresh.drop_database().await;
}

/// A failed delivery retried by hand while a later one of its queue is in flight (it
/// went once the first had failed) waits until that one is done: the two are never
/// called at once. Then it goes, first of what is left in its queue.
#[tokio::test]
async fn a_delivery_retried_by_hand_waits_while_a_later_one_is_in_flight() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::now();
    let lease = now.add_seconds(10);
    let mut tx = db.begin().await.unwrap();
    for n in 1..=2 {
        outbox::append(&mut tx, dialect, &[event(n, "clients:1")], now)
            .await
            .unwrap();
    }
    // Only the first handler's queue matters here: the second's deliveries succeed.
    let claim = async |tx: &mut Tx| -> Vec<Claimed> {
        let claimed = deliveries::claim(tx, dialect, now, lease, 64, 1)
            .await
            .unwrap();
        let (mine, theirs): (Vec<Claimed>, Vec<Claimed>) =
            claimed.into_iter().partition(|c| c.handlers_id == 1);
        let theirs: Vec<Lease> = theirs.iter().map(Claimed::lease).collect();
        deliveries::finish_succeeded(tx, &theirs, now)
            .await
            .unwrap();
        mine
    };
    let first = claim(&mut tx).await;
    assert_eq!(first.len(), 1);
    let gave_up = Outcome::Failed {
        error: "gave up".into(),
    };
    deliveries::finish_many(&mut tx, &[(first[0].lease(), 1, &gave_up)], now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    after_commit(db, &[first[0].id]).await;

    // The second goes, and is in flight when the first is retried.
    let mut tx = db.begin().await.unwrap();
    let second = claim(&mut tx).await;
    assert_eq!(second.len(), 1);
    assert!(second[0].id > first[0].id);
    assert_eq!(
        deliveries::retry(&mut tx, first[0].id, now).await.unwrap(),
        deliveries::Retried::Requeued
    );
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    assert_eq!(
        claim(&mut tx).await.len(),
        0,
        "the retried delivery waits for the one in flight"
    );
    deliveries::finish_succeeded(&mut tx, &[second[0].lease()], now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    after_commit(db, &[second[0].id]).await;
    let mut tx = db.begin().await.unwrap();
    let again = claim(&mut tx).await;
    let ids: Vec<i64> = again.iter().map(|c| c.id).collect();
    assert_eq!(ids, [first[0].id], "then it goes");
    tx.commit().await.unwrap();
    fresh.drop_database().await;
}

/// PostgreSQL: a retry by hand racing a claim of the same queue, in either order, never
/// leaves two of its deliveries in flight. Claimed first (not yet committed), the claim's
/// lease of the delivery behind is made visible before the retry commits, and the next
/// claim leaves the retried one waiting; retried first, the claim skips the queue.
#[tokio::test]
async fn a_retry_by_hand_racing_a_claim_never_leaves_two_of_a_queue_in_flight() {
    for claim_first in [true, false] {
        let Some(fresh) = Fresh::postgres_only("claims race only with several writers").await
        else {
            return;
        };
        let (db, dialect) = (fresh.db.clone(), fresh.db.dialect);
        let now = Timestamp::now();
        let lease = now.add_seconds(10);
        // Leases what can go now; the first handler's ids.
        let claim = async |tx: &mut Tx| -> Vec<i64> {
            let claimed = deliveries::claim(tx, dialect, now, lease, 64, 1)
                .await
                .unwrap();
            claimed
                .iter()
                .filter(|c| c.handlers_id == 1)
                .map(|c| c.id)
                .collect()
        };
        let mut tx = db.begin().await.unwrap();
        for n in 1..=2 {
            outbox::append(&mut tx, dialect, &[event(n, "clients:1")], now)
                .await
                .unwrap();
        }
        let first = deliveries::claim(&mut tx, dialect, now, lease, 64, 1)
            .await
            .unwrap();
        let a = first.iter().find(|c| c.handlers_id == 1).unwrap().clone();
        let gave_up = Outcome::Failed {
            error: "gave up".into(),
        };
        deliveries::finish_many(&mut tx, &[(a.lease(), 1, &gave_up)], now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        after_commit(&db, &[a.id]).await;

        let retry = {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.unwrap();
                assert_eq!(
                    deliveries::retry(&mut tx, a.id, now).await.unwrap(),
                    deliveries::Retried::Requeued
                );
                tx
            }
        };
        let took_first = if claim_first {
            let mut c1 = db.begin().await.unwrap();
            let took = claim(&mut c1).await;
            assert_eq!(took.len(), 1, "the delivery behind the failed one");
            // The retry waits for the claim's row, so it cannot commit before the claim
            // does; another claim comes meanwhile, before the first one commits.
            let retrying = tokio::spawn(async move { retry.await.commit().await.unwrap() });
            // Until the retry has committed, or waits for a row lock.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                if retrying.is_finished() || waiting_for_locks(&db).await > 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the retry neither committed nor waited"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let mut c2 = db.begin().await.unwrap();
            let took_meanwhile = claim(&mut c2).await;
            c2.commit().await.unwrap();
            c1.commit().await.unwrap();
            retrying.await.unwrap();
            assert!(
                took_meanwhile.is_empty(),
                "took {took_meanwhile:?} meanwhile"
            );
            took
        } else {
            let r = retry.await;
            let mut c1 = db.begin().await.unwrap();
            let took = claim(&mut c1).await;
            c1.commit().await.unwrap();
            r.commit().await.unwrap();
            took
        };
        after_commit(&db, &[a.id]).await;
        let mut c2 = db.begin().await.unwrap();
        let took_then = claim(&mut c2).await;
        c2.commit().await.unwrap();
        let mut conn = db.read.acquire().await.unwrap();
        let in_flight = scalar(
            &mut conn,
            "SELECT COUNT(*) FROM deliveries
             WHERE handlers_id = 1 AND status = 'pending' AND lease_until > 0",
        )
        .await;
        drop(conn);
        assert_eq!(
            in_flight, 1,
            "claim first: {claim_first}; took {took_first:?}, then {took_then:?}"
        );
        if !claim_first {
            assert!(took_first.is_empty(), "the claim skipped the queue");
            assert_eq!(took_then, [a.id], "then the retried delivery goes");
        }
        fresh.drop_database().await;
    }
}

/// Heads put back by hand that wait for a call in flight behind them, more of them than
/// a claim reads before locking and first in due order, do not hide a queue that can go.
#[tokio::test]
async fn put_back_heads_waiting_for_calls_in_flight_do_not_hide_a_queue_that_can_go() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::now();
    let lease = now.add_seconds(60);
    let blocked = 300;
    let mut tx = db.begin().await.unwrap();
    for q in 0..blocked {
        let key = format!("clients:{q}");
        for n in 0..2 {
            outbox::append(&mut tx, dialect, &[event(q * 2 + n, &key)], now)
                .await
                .unwrap();
        }
    }
    // The first of each queue fails; the second goes (and stays in flight); the first
    // is retried by hand.
    let firsts = deliveries::claim(&mut tx, dialect, now, lease, 1000, 1)
        .await
        .unwrap();
    assert_eq!(firsts.len() as u64, blocked * 2, "two handlers");
    let gave_up = Outcome::Failed {
        error: "gave up".into(),
    };
    let failed: Vec<_> = firsts.iter().map(|c| (c.lease(), 1, &gave_up)).collect();
    deliveries::finish_many(&mut tx, &failed, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ids: Vec<i64> = firsts.iter().map(|c| c.id).collect();
    after_commit(db, &ids).await;
    let mut tx = db.begin().await.unwrap();
    let seconds = deliveries::claim(&mut tx, dialect, now, lease, 1000, 1)
        .await
        .unwrap();
    assert_eq!(seconds.len() as u64, blocked * 2);
    for c in &firsts {
        assert_eq!(
            deliveries::retry(&mut tx, c.id, now).await.unwrap(),
            deliveries::Retried::Requeued
        );
    }
    // A queue that can go, due after all of them.
    let later = now.add_seconds(1);
    outbox::append(&mut tx, dialect, &[event(10_000, "clients:free")], later)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let claimed = deliveries::claim(&mut tx, dialect, later.add_seconds(1), lease, 64, 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let keys: Vec<&str> = claimed.iter().map(|c| c.ordering_key.as_str()).collect();
    assert_eq!(
        keys,
        ["clients:free", "clients:free"],
        "both handlers' deliveries"
    );
    fresh.drop_database().await;
}

/// A success says whether a delivery waits behind it (the engine claims only then),
/// also when that one was already flagged as a head: a delivery retried by hand is.
#[tokio::test]
async fn a_success_tells_whether_a_delivery_waits_behind_it() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::now();
    let mut tx = db.begin().await.unwrap();
    for n in 1..=2 {
        outbox::append(&mut tx, dialect, &[event(n, "clients:1")], now)
            .await
            .unwrap();
    }
    let lease = now.add_seconds(10);
    let claimed = deliveries::claim(&mut tx, dialect, now, lease, 64, 2)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4, "two events, two handlers");
    let gave_up = Outcome::Failed {
        error: "gave up".into(),
    };
    for c in &claimed {
        deliveries::finish_many(&mut tx, &[(c.lease(), 1, &gave_up)], now)
            .await
            .unwrap();
    }
    // Both of the first handler's, back by hand, in order: each is flagged.
    let mine: Vec<i64> = claimed
        .iter()
        .filter(|c| c.handlers_id == claimed[0].handlers_id)
        .map(|c| c.id)
        .collect();
    for id in &mine {
        assert_eq!(
            deliveries::retry(&mut tx, *id, now).await.unwrap(),
            deliveries::Retried::Requeued
        );
    }
    tx.commit().await.unwrap();
    // Claims the heads, one per queue, and records their success: the ids claimed and
    // whether a delivery waits behind them (on PostgreSQL, told after the commit).
    let claim_and_succeed = || async move {
        let mut tx = db.begin().await.unwrap();
        let heads = deliveries::claim(&mut tx, dialect, now, lease, 64, 1)
            .await
            .unwrap();
        let leases: Vec<Lease> = heads.iter().map(Claimed::lease).collect();
        let waits = deliveries::finish_succeeded(&mut tx, &leases, now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let ids: Vec<i64> = heads.iter().map(|c| c.id).collect();
        let told_after = after_commit(db, &ids).await;
        (ids, waits || told_after)
    };
    let (ids, waits) = claim_and_succeed().await;
    assert_eq!(ids, [mine[0]]);
    assert!(waits, "the second retried delivery waits behind the first");
    let (ids, waits) = claim_and_succeed().await;
    assert_eq!(ids, [mine[1]]);
    assert!(!waits, "nothing waits behind");
    fresh.drop_database().await;
}

/// PostgreSQL: a delivery queued while the one before it finishes in a concurrent
/// transaction is seen by neither (each reads the other's row as it was), so neither
/// flags it; whichever of the two commits second flags it when it looks after its
/// commit, in either order, and the claim then takes it.
#[tokio::test]
async fn a_delivery_queued_while_the_one_before_it_finishes_is_flagged_after_the_commits() {
    let Some(fresh) = Fresh::postgres_only("the two transactions never overlap").await else {
        return;
    };
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::now();
    let lease = now.add_seconds(10);
    for (round, outcome_first) in [(0u64, true), (1, false)] {
        let key = format!("clients:{round}");
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, dialect, &[event(round * 10, &key)], now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        let before = deliveries::claim(&mut tx, dialect, now, lease, 64, 1)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            before.len(),
            2,
            "round {round}: both handlers' first deliveries"
        );

        // The outcome is written, not committed; the next event is queued beside it.
        let mut outcome = db.begin().await.unwrap();
        let leases: Vec<Lease> = before.iter().map(Claimed::lease).collect();
        deliveries::finish_succeeded(&mut outcome, &leases, now)
            .await
            .unwrap();
        let mut queued = db.begin().await.unwrap();
        outbox::append(&mut queued, dialect, &[event(round * 10 + 1, &key)], now)
            .await
            .unwrap();
        assert!(queued.has_deliveries_to_claim(), "round {round}: behind");
        let finished: Vec<i64> = before.iter().map(|c| c.id).collect();
        let told = if outcome_first {
            outcome.commit().await.unwrap();
            assert!(
                !after_commit(db, &finished).await,
                "not committed yet: not seen"
            );
            queued.commit().await.unwrap();
            after_commit(db, &[]).await
        } else {
            queued.commit().await.unwrap();
            after_commit(db, &[]).await;
            outcome.commit().await.unwrap();
            after_commit(db, &finished).await
        };
        assert!(told, "round {round}: the claim is told a delivery waits");
        let mut conn = db.read.acquire().await.unwrap();
        assert_eq!(unflagged_heads(&mut conn).await, 0, "round {round}");
        drop(conn);
        let mut tx = db.begin().await.unwrap();
        let next = deliveries::claim(&mut tx, dialect, now, lease, 64, 1)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(next.len(), 2, "round {round}: the second event's, claimed");
        assert!(next.iter().all(|c| c.ordering_key == key));
        let leases: Vec<Lease> = next.iter().map(Claimed::lease).collect();
        let mut tx = db.begin().await.unwrap();
        deliveries::finish_succeeded(&mut tx, &leases, now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    fresh.drop_database().await;
}

/// PostgreSQL: a delivery recovered behind one that finishes meanwhile in another
/// transaction is flagged once the recovery has committed.
#[tokio::test]
async fn a_delivery_recovered_while_the_one_before_it_finishes_is_flagged_after_the_commits() {
    let Some(fresh) = Fresh::postgres_only("the two transactions never overlap").await else {
        return;
    };
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::now();
    let lease = now.add_seconds(10);
    let gave_up = Outcome::Failed {
        error: "gave up".into(),
    };
    // Claims the queues' heads (and `per_queue - 1` followers each); with `outcome`,
    // records it for all of them; commits and looks.
    let claim = |per_queue: i64, outcome: Option<Outcome>| async move {
        let mut tx = db.begin().await.unwrap();
        let heads = deliveries::claim(&mut tx, dialect, now, lease, 64, per_queue)
            .await
            .unwrap();
        if let Some(outcome) = &outcome {
            for c in &heads {
                deliveries::finish_many(&mut tx, &[(c.lease(), 1, outcome)], now)
                    .await
                    .unwrap();
            }
        }
        tx.commit().await.unwrap();
        let ids: Vec<i64> = heads.iter().map(|c| c.id).collect();
        after_commit(db, &ids).await;
        heads
    };
    let mut tx = db.begin().await.unwrap();
    for n in 1..=2 {
        outbox::append(&mut tx, dialect, &[event(n, "clients:1")], now)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    // Both events' deliveries fail, taken together (the second unflagged, a follower);
    // the first handler's first comes back by hand and is in flight again.
    let taken = claim(2, Some(gave_up)).await;
    assert_eq!(taken.len(), 4);
    let handler = taken[0].handlers_id;
    let d1 = taken.iter().find(|c| c.handlers_id == handler).unwrap().id;
    let mut tx = db.begin().await.unwrap();
    assert_eq!(
        deliveries::retry(&mut tx, d1, now).await.unwrap(),
        deliveries::Retried::Requeued
    );
    tx.commit().await.unwrap();
    let in_flight = claim(1, None).await;
    assert_eq!(in_flight.iter().map(|c| c.id).collect::<Vec<_>>(), [d1]);

    // Its success is written while the second is recovered; the success commits and
    // looks first, not seeing the recovered one.
    let mut outcome = db.begin().await.unwrap();
    deliveries::finish_succeeded(&mut outcome, &[in_flight[0].lease()], now)
        .await
        .unwrap();
    let mut recovery = db.begin().await.unwrap();
    let since = Timestamp::from_micros(0);
    let recovered = deliveries::recover(&mut recovery, handler, since, now, now)
        .await
        .unwrap();
    assert_eq!(recovered, 1);
    outcome.commit().await.unwrap();
    assert!(
        !after_commit(db, &[d1]).await,
        "the recovered one is not seen yet"
    );
    recovery.commit().await.unwrap();
    assert!(after_commit(db, &[]).await, "its own look flags it");
    let mut conn = db.read.acquire().await.unwrap();
    assert_eq!(unflagged_heads(&mut conn).await, 0);
    drop(conn);
    let next = claim(1, None).await;
    assert_eq!(next.len(), 1, "the recovered delivery, claimed: {next:?}");
    assert!(next[0].id != d1 && next[0].handlers_id == handler);
    fresh.drop_database().await;
}

/// PostgreSQL: the sessions of the test's database that wait for a lock.
async fn waiting_for_locks(db: &Db) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await
}

/// PostgreSQL: waits until `n` sessions of the test's database wait for a lock.
async fn until_waiting_for_locks(db: &Db, n: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting = waiting_for_locks(db).await;
        if waiting >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{waiting} of {n} waiting for a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A count read on a connection of its own.
async fn count(db: &Db, sql: &str) -> i64 {
    let mut conn = db.read.acquire().await.unwrap();
    scalar(&mut conn, sql).await
}

/// A transaction that has queued event `n` of `key` (a delivery to each handler), not
/// committed.
async fn queueing(db: &Db, n: u64, key: &str) -> Tx {
    let mut tx = db.begin().await.unwrap();
    outbox::append(&mut tx, db.dialect, &[event(n, key)], Timestamp::now())
        .await
        .unwrap();
    tx
}

/// Deletes handler `id` in a transaction of its own.
fn delete_handler(db: &Db, id: i64) -> tokio::task::JoinHandle<Result<(), String>> {
    let db = db.clone();
    tokio::spawn(async move {
        let mut tx = db.begin().await.map_err(|e| e.to_string())?;
        handlers::delete(&mut tx, id)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())
    })
}

/// Deliveries of a handler that no longer exists: must be none, or they would wait for
/// ever (a claim takes only deliveries of enabled handlers).
const ORPHANS: &str = "SELECT COUNT(*) FROM deliveries d
     WHERE NOT EXISTS (SELECT 1 FROM handlers h WHERE h.id = d.handlers_id)";

const DELIVERIES: &str = "SELECT COUNT(*) FROM deliveries";

/// After handler 1 was deleted behind one event queued for both: no delivery of it is
/// left, and handler 2's is.
async fn only_the_other_handlers_delivery_is_left(db: &Db) {
    assert_eq!(
        count(db, ORPHANS).await,
        0,
        "no delivery of the deleted handler"
    );
    let kept = count(db, DELIVERIES).await;
    assert_eq!(kept, 1, "the other handler's delivery stays");
}

/// PostgreSQL, where deliveries have no foreign key to their handler: deleting a handler
/// waits for a transaction that is queueing a delivery for it, then deletes that one
/// too. None is left behind.
#[tokio::test]
async fn a_handler_deleted_while_a_delivery_for_it_is_queued_leaves_none_behind() {
    let Some(fresh) = Fresh::postgres_only("the two transactions never overlap").await else {
        return;
    };
    let db = &fresh.db;
    let queued = queueing(db, 1, "clients:1").await;
    let deleting = delete_handler(db, 1);
    until_waiting_for_locks(db, 1).await;
    assert!(!deleting.is_finished(), "the delete waits");
    queued.commit().await.unwrap();
    deleting.await.unwrap().unwrap();
    only_the_other_handlers_delivery_is_left(db).await;
    fresh.drop_database().await;
}

/// PostgreSQL: an event queued while a handler's delete is under way waits for it, and
/// then has no delivery for that handler.
#[tokio::test]
async fn an_event_queued_while_its_handler_is_deleted_waits_and_leaves_it_out() {
    let Some(fresh) = Fresh::postgres_only("the two transactions never overlap").await else {
        return;
    };
    let db = &fresh.db;
    let mut deleting = db.begin().await.unwrap();
    handlers::delete(&mut deleting, 1).await.unwrap();
    let queued = tokio::spawn({
        let db = db.clone();
        async move { queueing(&db, 1, "clients:1").await.commit().await.unwrap() }
    });
    until_waiting_for_locks(db, 1).await;
    assert!(!queued.is_finished(), "the event waits for the delete");
    deleting.commit().await.unwrap();
    queued.await.unwrap();
    only_the_other_handlers_delivery_is_left(db).await;
    fresh.drop_database().await;
}

/// PostgreSQL: two handlers deleted at once, both behind a transaction queueing
/// deliveries, are both deleted (their locks do not deadlock).
#[tokio::test]
async fn two_handlers_deleted_at_once_are_both_deleted() {
    let Some(fresh) = Fresh::postgres_only("the transactions never overlap").await else {
        return;
    };
    let db = &fresh.db;
    let queued = queueing(db, 1, "clients:1").await;
    let (one, two) = (delete_handler(db, 1), delete_handler(db, 2));
    until_waiting_for_locks(db, 2).await;
    queued.commit().await.unwrap();
    one.await.unwrap().expect("the first delete");
    two.await.unwrap().expect("the second delete");
    assert_eq!(count(db, DELIVERIES).await, 0);
    assert_eq!(count(db, "SELECT COUNT(*) FROM handlers").await, 0);
    fresh.drop_database().await;
}

/// PostgreSQL: behind a long transaction writing deliveries (an import) a handler's
/// delete gives up after a moment instead of holding every event up, and events are
/// queued again at once.
#[tokio::test]
async fn a_delete_behind_a_long_transaction_gives_up_and_holds_nothing_up() {
    let Some(fresh) = Fresh::postgres_only("the transactions never overlap").await else {
        return;
    };
    let db = &fresh.db;
    let long = queueing(db, 1, "clients:1").await;
    let started = std::time::Instant::now();
    let mut tx = db.begin().await.unwrap();
    let gave_up = handlers::delete(&mut tx, 1).await.unwrap_err();
    assert!(gave_up.is_lock_timeout(), "{gave_up}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    tx.rollback().await.unwrap();
    queueing(db, 2, "clients:2").await.commit().await.unwrap();
    long.commit().await.unwrap();
    let kept = count(db, DELIVERIES).await;
    assert_eq!(kept, 4, "both events' deliveries, to both handlers");
    fresh.drop_database().await;
}

/// A handler archived while a claim holds a queue's head and the deliveries after it:
/// the head's failed attempt fails it for the archive (as the outcome writer does), and
/// the others, given back untried only once the handler is enabled again, are still that
/// queue's next: `flag_heads_of` at the re-enable flags the oldest (leased or not), so
/// the queue is claimed again rather than stuck behind an unflagged delivery.
#[tokio::test]
async fn a_queue_given_back_after_an_archive_and_a_re_enable_is_not_stuck() {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::from_micros(1_000_000_000);
    let mut tx = db.begin().await.unwrap();
    for n in 1..=3 {
        outbox::append(&mut tx, dialect, &[event(n, "clients:1")], now)
            .await
            .unwrap();
    }
    // Handler 2 is left out: only handler 1's queue is looked at.
    query("UPDATE handlers SET status = 'disabled' WHERE id = 2")
        .execute(&mut tx)
        .await
        .unwrap();
    let claimed = deliveries::claim(&mut tx, dialect, now, now.add_seconds(10), 64, 3)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mine: Vec<&Claimed> = claimed.iter().filter(|c| c.handlers_id == 1).collect();
    assert_eq!(mine.len(), 3, "the head and its followers: {claimed:?}");

    let later = now.add_seconds(1);
    let mut tx = db.begin().await.unwrap();
    query("UPDATE handlers SET status = 'archived' WHERE id = 1")
        .execute(&mut tx)
        .await
        .unwrap();
    let failed = deliveries::fail_uncalled(&mut tx, Some(1), later)
        .await
        .unwrap();
    assert_eq!(failed, 0, "all three are leased: in flight, or about to be");
    tx.commit().await.unwrap();

    // The head's call fails: its retry fails for the archive, in the outcome's
    // transaction; the two after it are not given back yet.
    let mut tx = db.begin().await.unwrap();
    let retry = Outcome::Retry {
        next_at: later,
        error: "500".into(),
    };
    deliveries::finish_many(&mut tx, &[(mine[0].lease(), 1, &retry)], later)
        .await
        .unwrap();
    let failed = deliveries::fail_uncalled(&mut tx, Some(1), later)
        .await
        .unwrap();
    assert_eq!(failed, 1, "the head's retry");
    tx.commit().await.unwrap();

    // Enabled again, then the two are given back.
    let mut tx = db.begin().await.unwrap();
    query("UPDATE handlers SET status = 'enabled' WHERE id = 1")
        .execute(&mut tx)
        .await
        .unwrap();
    deliveries::flag_heads_of(&mut tx, 1).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let rest: Vec<Lease> = mine[1..].iter().map(|c| c.lease()).collect();
    deliveries::release(&mut tx, &rest).await.unwrap();
    tx.commit().await.unwrap();

    let mut conn = db.write.acquire().await.unwrap();
    assert_eq!(
        unflagged_heads(&mut conn).await,
        0,
        "every queue has its head"
    );
    drop(conn);
    let mut tx = db.begin().await.unwrap();
    let again = deliveries::claim(&mut tx, dialect, later, later.add_seconds(10), 64, 3)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ids: Vec<i64> = again.iter().map(|c| c.id).collect();
    assert_eq!(ids, [mine[1].id, mine[2].id], "claimed again, in order");
    fresh.drop_database().await;
}

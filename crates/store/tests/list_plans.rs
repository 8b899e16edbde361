//! The execution log, the delivery list and the event list, on SQLite or (with
//! `BILLHOOK_TEST_DATABASE_URL`) PostgreSQL, read each page in order from an index under
//! every filter the API has, instead of sorting every row the filter matched: a log of
//! millions of calls must page as fast as an empty one. The plans are checked on tables
//! of some thousands of rows, with statistics on PostgreSQL (whose planner weighs them).

use billhook_domain::catalogue::Stage;
use billhook_domain::entities::{CallStatus, DeliveryStatus};
use billhook_domain::Timestamp;
use billhook_store::deliveries::{self, DeliveryQuery};
use billhook_store::events::{self, Event, EventQuery};
use billhook_store::executions::{self, ExecutionQuery};
use billhook_store::sql::query;
use billhook_store::{outbox, Dialect, Page};
use billhook_store::{Filter, Listing};
use serde_json::json;

mod common;
use common::Fresh;

const EVENTS: u64 = 3000;

/// `EVENTS` events, each delivered to both handlers (ids 1 and 2) and its call logged:
/// one in three deliveries failed, the rest succeeded but the last few, still pending.
async fn filled() -> Fresh {
    let fresh = Fresh::new().await;
    let (db, dialect) = (&fresh.db, fresh.db.dialect);
    let now = Timestamp::from_micros(1_000_000_000);
    let mut tx = db.begin().await.unwrap();
    let events: Vec<Event> = (0..EVENTS)
        .map(|n| Event {
            seq: 0,
            uid: format!("uid-{n}"),
            events_id: "clients.update".into(),
            object_id: Some(n as i64 % 40),
            ordering_key: format!("clients:{}", n % 40),
            dt: Timestamp::from_micros(1_000_000 + n as i64),
            data: json!({"n": n}),
            previous: json!({}),
        })
        .collect();
    for chunk in events.chunks(100) {
        outbox::append(&mut tx, dialect, chunk, now).await.unwrap();
    }
    for sql in [
        "UPDATE deliveries SET status = CASE WHEN id % 3 = 0 THEN 'failed' ELSE 'succeeded' END
         WHERE id <= (SELECT MAX(id) - 20 FROM deliveries)",
        "INSERT INTO executions (dt, handlers_id, handler, events_id, event_uid, object_id,
           stage, attempt, status, duration_ms, request, response_status, response_body,
           error, modified, deliveries_id)
         SELECT 2000000 + d.id, d.handlers_id, 'h', e.events_id, e.uid, e.object_id, 'after',
           1, CASE WHEN d.status = 'failed' THEN 'fail' ELSE 'success' END, 3, '{}', 200, '',
           NULL, NULL, d.id
         FROM deliveries d JOIN events e ON e.id = d.event_seq",
    ] {
        query(sql).execute(&mut tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    if dialect == Dialect::Postgres {
        let mut conn = db.write.acquire().await.unwrap();
        query("ANALYZE").execute(&mut conn).await.unwrap();
    }
    fresh
}

/// Whether a page's plan sorts the rows the filter matched: on SQLite at all, on
/// PostgreSQL more than a few hundred of them (it rightly sorts a few dozen pending
/// deliveries rather than walk an index for them; every filter below that it should
/// read in order matches more than `FEW`).
fn sorts(plan: &[String]) -> bool {
    const FEW: u64 = 400;
    plan.iter().any(|l| {
        let rows = || {
            let at = l.find("rows=")? + "rows=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        };
        l.contains("TEMP B-TREE") || (l.contains("Sort  (") && rows().is_none_or(|n| n > FEW))
    })
}

/// SQLite's plan reads from `index` (a name, not the start of a longer one).
fn reads_from(plan: &[String], index: &str) -> bool {
    let step = format!("INDEX {index}");
    plan.iter().any(|l| {
        l.match_indices(&step).any(|(at, _)| {
            !l[at + step.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
    })
}

/// A list's filters with their defaults but what `f` sets.
fn with<Q: Default>(f: &dyn Fn(&mut Q)) -> Q {
    let mut q = Q::default();
    f(&mut q);
    q
}

/// Checks that `filter`'s page of `listing` is not sorted and, on SQLite (without
/// statistics, its choice is fixed), read from `index` when one is named; PostgreSQL may
/// read another in the same order, as it estimates cheaper. Returns the count's plan.
async fn reads_in_order(
    fresh: &Fresh,
    what: &str,
    filter: Filter,
    listing: &Listing<'_>,
    index: &str,
) -> Vec<String> {
    let mut conn = fresh.db.read.acquire().await.unwrap();
    let (count, page) = filter
        .explain(&mut conn, fresh.db.dialect, listing)
        .await
        .unwrap();
    assert!(!sorts(&page), "{what}: the page is sorted: {page:#?}");
    if fresh.db.dialect == Dialect::Sqlite && !index.is_empty() {
        assert!(
            reads_from(&page, index),
            "{what}: not read from {index}: {page:#?}"
        );
    }
    count
}

#[tokio::test]
async fn every_filter_of_the_execution_log_reads_its_page_from_an_index() {
    let fresh = filled().await;
    let q = with::<ExecutionQuery>;
    let t = Some(Timestamp::from_micros(2_000_000 + 3000));
    // The event's uid is left out: its own index finds a call or two, sorted at once.
    let filters = [
        ("none", q(&|_| {}), ""),
        (
            "a handler",
            q(&|q| q.handlers_id = Some(2)),
            "executions_handler",
        ),
        (
            "failures",
            q(&|q| q.status = Some(CallStatus::Fail)),
            "executions_failed",
        ),
        (
            "successes",
            q(&|q| q.status = Some(CallStatus::Success)),
            "",
        ),
        (
            "a handler's failures",
            q(&|q| {
                q.handlers_id = Some(2);
                q.status = Some(CallStatus::Fail);
            }),
            "executions_handler_failed",
        ),
        (
            "a handler's successes",
            q(&|q| {
                q.handlers_id = Some(1);
                q.status = Some(CallStatus::Success);
            }),
            "",
        ),
        (
            "a handler from a time",
            q(&|q| {
                q.handlers_id = Some(1);
                q.from = t;
            }),
            "",
        ),
        ("up to a time", q(&|q| q.to = t), ""),
        (
            "an event type and stage",
            q(&|q| {
                q.events_id = Some("clients.update".into());
                q.stage = Some(Stage::After);
            }),
            "",
        ),
        ("an object", q(&|q| q.object_id = Some(7)), ""),
        ("text", q(&|q| q.q = Some("uid-7".into())), ""),
    ];
    for (what, q, index) in &filters {
        let filter = executions::filter(q);
        reads_in_order(&fresh, what, filter, &executions::LIST, index).await;
    }
    fresh.drop_database().await;
}

#[tokio::test]
async fn the_event_list_reads_its_page_from_an_index_by_type_and_object() {
    // Its order is the id's (the order of the changes), not the time's: a window of time
    // is read from the newest event down to it, and is not checked here.
    let fresh = filled().await;
    let q = with::<EventQuery>;
    let filters = [
        ("none", q(&|_| {}), ""),
        (
            "a type",
            q(&|q| q.events_id = Some("clients.update".into())),
            "events_type",
        ),
        ("an object", q(&|q| q.object_id = Some(7)), "events_object"),
    ];
    for (what, q, index) in &filters {
        reads_in_order(&fresh, what, events::filter(q), &events::LIST, index).await;
    }
    fresh.drop_database().await;
}

#[tokio::test]
async fn the_delivery_list_reads_its_page_from_an_index_and_counts_without_joins() {
    let fresh = filled().await;
    let q = |status: Option<DeliveryStatus>, handler: Option<i64>| DeliveryQuery {
        status,
        handlers_id: handler,
        ..DeliveryQuery::default()
    };
    let filters = [
        ("none", q(None, None), ""),
        ("a handler", q(None, Some(2)), ""),
        (
            "failed",
            q(Some(DeliveryStatus::Failed), None),
            "deliveries_failed_all",
        ),
        (
            "a handler's failed",
            q(Some(DeliveryStatus::Failed), Some(2)),
            "deliveries_failed",
        ),
        ("pending", q(Some(DeliveryStatus::Pending), None), ""),
        ("succeeded", q(Some(DeliveryStatus::Succeeded), Some(1)), ""),
    ];
    for (what, q, index) in &filters {
        let filter = deliveries::filter(q);
        let count = reads_in_order(&fresh, what, filter, &deliveries::LIST, index).await;
        let joins = count.iter().any(|l| {
            l.contains("Join")
                || l.contains("Nested Loop")
                || l.contains(" e ")
                || l.contains(" h ")
        });
        assert!(!joins, "{what}: the count joins: {count:#?}");
        // The count, made without the view, is the list's.
        let all = Page {
            limit: 1000,
            offset: 0,
        };
        let mut conn = fresh.db.read.acquire().await.unwrap();
        let (items, total) = deliveries::list(&mut conn, q, all).await.unwrap();
        assert!(total > 0, "{what}");
        assert_eq!(items.len() as i64, total.min(1000), "{what}");
    }
    fresh.drop_database().await;
}

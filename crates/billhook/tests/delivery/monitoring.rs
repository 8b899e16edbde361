//! Monitoring: `GET /events/{uid}` with its deliveries, the execution log and its
//! filters, and the delivery metrics.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::harness::{assert_error, wait_for, Server};
use crate::receiver::Receiver;
use crate::util::{
    client, create_handler, executions, http_handler, metric, metrics, micros, rename, uid_of,
    wait_deliveries,
};

/// Three handlers of `clients.create` whose deliveries end succeeded, failed, pending.
struct Three {
    ok: i64,
    bad: i64,
    waiting: i64,
    /// A handler of `dids.*`: never called.
    idle: i64,
    _receivers: (Receiver, Receiver),
}

async fn three_states(s: &Server) -> (Three, String) {
    let good = Receiver::start().await;
    let broken = Receiver::start().await;
    broken.fail_always();
    let ok = http_handler(s, "clients.create", &good.url("/ok"), &[0]).await;
    let bad = http_handler(s, "clients.create", &broken.url("/bad"), &[]).await;
    let waiting = http_handler(s, "clients.*", &broken.url("/wait"), &[3600]).await;
    let idle = http_handler(s, "dids.*", &good.url("/dids"), &[0]).await;
    let c = client(s, "Monitored").await;
    let uid = uid_of(s, "clients.create", c).await;
    let id = |h: &Value| h["id"].as_i64().unwrap();
    let t = Three {
        ok: id(&ok),
        bad: id(&bad),
        waiting: id(&waiting),
        idle: id(&idle),
        _receivers: (good, broken),
    };
    wait_deliveries(s, t.ok, "succeeded", 1, 30).await;
    wait_deliveries(s, t.bad, "failed", 1, 30).await;
    wait_for(30, "a failed attempt of the waiting handler", || async {
        let log = executions(s, &format!("handlers_id={}", t.waiting)).await;
        (!log.is_empty()).then_some(())
    })
    .await;
    (t, uid)
}

#[tokio::test]
async fn an_event_shows_the_delivery_state_of_each_handler() {
    let s = Server::start().await;
    let (t, uid) = three_states(&s).await;
    let (st, ev) = s.get(&format!("/api/v1/events/{uid}")).await;
    assert_eq!(st, 200, "{ev}");
    assert_eq!(ev["event"]["uid"], uid);
    assert_eq!(ev["event"]["events_id"], "clients.create");
    assert_eq!(ev["data"]["name"], "Monitored");
    let list = ev["deliveries"].as_array().expect("deliveries");
    let state = |h: i64| -> Value {
        let found: Vec<&Value> = list.iter().filter(|d| d["handlers_id"] == h).collect();
        assert_eq!(found.len(), 1, "one delivery per handler: {ev}");
        found[0].clone()
    };
    assert_eq!(list.len(), 3, "the dids.* handler has none: {ev}");
    assert_eq!(state(t.ok)["status"], "succeeded");
    assert_eq!(state(t.ok)["attempts"], 1);
    assert_eq!(state(t.bad)["status"], "failed");
    assert!(state(t.bad)["last_error"].is_string());
    let w = state(t.waiting);
    assert_eq!(w["status"], "pending", "{w}");
    assert_eq!(w["attempts"], 1, "{w}");
    assert!(micros(&w["next_at"]) > micros(&w["updated_at"]) + 2_000_000_000);

    // The same UUID in upper case (as another tool may show it) is the same event.
    let upper = uid.to_ascii_uppercase();
    let (st, same) = s.get(&format!("/api/v1/events/{upper}")).await;
    assert_eq!((st, &same["event"]["uid"]), (200, &json!(uid)), "{same}");
    let calls = executions(&s, &format!("event_uid={upper}")).await;
    assert!(!calls.is_empty(), "the log by the upper-case uid");
    assert_eq!(calls, executions(&s, &format!("event_uid={uid}")).await);
    assert!(calls.iter().all(|c| c["event_uid"] == uid), "{calls:?}");

    let (st, v) = s.get("/api/v1/events/no-such-uid").await;
    assert_eq!(st, 404, "{v}");
    assert_error(&v, "not_found");
}

#[tokio::test]
async fn metrics_count_deliveries_durations_and_the_backlog() {
    let s = Server::start().await;
    let (t, _) = three_states(&s).await;
    let text = metrics(&s).await;
    for name in [
        "billhook_deliveries_total",
        "billhook_call_duration_seconds",
        "billhook_deliveries_pending",
        "billhook_oldest_pending_delivery_age_seconds",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("# TYPE ") && l[7..].starts_with(name)),
            "{name} has a TYPE line:\n{text}"
        );
    }
    // Every handler has its three outcomes' series, at 0 for what did not happen.
    let count = |h: i64, outcome: &str| {
        let name =
            format!("billhook_deliveries_total{{handlers_id=\"{h}\",outcome=\"{outcome}\"}}");
        metric(&text, &name).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    let counts = |h: i64| ["success", "retry", "failed"].map(|o| count(h, o));
    assert_eq!(
        counts(t.ok),
        [1.0, 0.0, 0.0],
        "one attempt, a success:\n{text}"
    );
    assert_eq!(
        counts(t.bad),
        [0.0, 0.0, 1.0],
        "one attempt, failed for good:\n{text}"
    );
    assert!(count(t.waiting, "retry") >= 1.0, "{text}");
    assert_eq!(counts(t.idle), [0.0; 3], "never called:\n{text}");
    let series = text
        .lines()
        .filter(|l| l.starts_with("billhook_deliveries_total{"))
        .count();
    assert_eq!(series, 12, "four handlers, three outcomes each:\n{text}");
    // Call durations by handler: one call each for the one that succeeded and the one
    // that failed for good, every call in the +Inf bucket.
    for (h, calls) in [(t.ok, 1.0), (t.bad, 1.0), (t.idle, 0.0)] {
        let series =
            |name: &str| format!("billhook_call_duration_seconds_{name}{{handlers_id=\"{h}\"}}");
        let count = metric(&text, &series("count")).expect("count");
        assert_eq!(count, calls, "{text}");
        let inf =
            format!("billhook_call_duration_seconds_bucket{{handlers_id=\"{h}\",le=\"+Inf\"}}");
        assert_eq!(metric(&text, &inf), Some(count), "{text}");
        // The exact durations are summed: whole milliseconds summed a quick receiver's
        // calls to 0.
        let sum = metric(&text, &series("sum")).expect("sum");
        assert_eq!(sum > 0.0, calls > 0.0, "{text}");
    }
    let pending = metric(&text, "billhook_deliveries_pending").expect("pending");
    assert!(pending >= 1.0, "the waiting delivery: {text}");
    let age = metric(&text, "billhook_oldest_pending_delivery_age_seconds").expect("age");
    assert!(age > 0.0 && age < 600.0, "{text}");
    // By handler: only the one with a delivery waiting has a backlog.
    let of = |name: &str, h: i64| metric(&text, &format!("{name}{{handlers_id=\"{h}\"}}"));
    let waiting = of("billhook_handler_deliveries_pending", t.waiting).expect("its backlog");
    assert_eq!(
        waiting, pending,
        "the waiting handler's backlog is all of it: {text}"
    );
    let its_age = of(
        "billhook_handler_oldest_pending_delivery_age_seconds",
        t.waiting,
    );
    assert!(its_age.is_some_and(|a| a > 0.0 && a <= age + 1.0), "{text}");
    // The others read 0: a series that came and went showed as gaps.
    for h in [t.ok, t.bad] {
        assert_eq!(
            of("billhook_handler_deliveries_pending", h),
            Some(0.0),
            "{text}"
        );
        let age = of("billhook_handler_oldest_pending_delivery_age_seconds", h);
        assert_eq!(age, Some(0.0), "{text}");
    }
}

#[tokio::test]
async fn the_execution_log_filters() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    r.reply("/ok", r#"{"marker":"zq-reply-marker"}"#);
    let broken = Receiver::start().await;
    broken.fail_always();
    let h1 = http_handler(&s, "clients.*", &r.url("/ok"), &[0]).await["id"].clone();
    let h2 = http_handler(&s, "clients.create", &broken.url("/bad"), &[]).await["id"].clone();
    let a = client(&s, "Alfa Corp").await;
    let b = client(&s, "Bravo Corp").await;
    // Quotes and a backslash: escaped in the request's JSON text, found as typed.
    rename(&s, a, "Alfa \"Two\" a\\b").await;
    wait_deliveries(&s, h1.as_i64().unwrap(), "succeeded", 3, 30).await;
    wait_deliveries(&s, h2.as_i64().unwrap(), "failed", 2, 30).await;

    let all = executions(&s, "").await;
    assert_eq!(all.len(), 5, "3 + 2 calls: {all:?}");
    for e in &all {
        for field in [
            "id",
            "dt",
            "handlers_id",
            "handler",
            "events_id",
            "event_uid",
            "object_id",
            "stage",
            "attempt",
            "status",
            "duration_ms",
            "request",
            "response_status",
            "response_body",
            "error",
            "modified",
        ] {
            assert!(e.get(field).is_some(), "execution lacks {field}: {e}");
        }
    }
    let dts: Vec<i64> = all.iter().map(|e| micros(&e["dt"])).collect();
    assert!(dts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let ids = |rows: &[Value]| -> BTreeSet<i64> {
        rows.iter().map(|e| e["id"].as_i64().unwrap()).collect()
    };
    let expect = |pred: &dyn Fn(&Value) -> bool| -> BTreeSet<i64> {
        all.iter()
            .filter(|e| pred(e))
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let check = |query: String, want: BTreeSet<i64>, n: usize| {
        let s = &s;
        async move {
            let got = ids(&executions(s, &query).await);
            assert_eq!(got, want, "{query}");
            assert_eq!(got.len(), n, "{query}");
        }
    };
    check(
        format!("handlers_id={h1}"),
        expect(&|e| e["handlers_id"] == h1),
        3,
    )
    .await;
    check(
        format!("handlers_id={h2}"),
        expect(&|e| e["handlers_id"] == h2),
        2,
    )
    .await;
    check("status=fail".into(), expect(&|e| e["handlers_id"] == h2), 2).await;
    check(
        "status=success".into(),
        expect(&|e| e["handlers_id"] == h1),
        3,
    )
    .await;
    // A handler's failures and successes (indexes of their own).
    check(
        format!("handlers_id={h2}&status=fail"),
        expect(&|e| e["handlers_id"] == h2),
        2,
    )
    .await;
    check(format!("handlers_id={h1}&status=fail"), BTreeSet::new(), 0).await;
    check(
        format!("handlers_id={h1}&status=success"),
        expect(&|e| e["handlers_id"] == h1),
        3,
    )
    .await;
    let upd = |e: &Value| e["events_id"] == "clients.update";
    check("events_id=clients.update".into(), expect(&upd), 1).await;
    check("stage=after".into(), expect(&|_| true), 5).await;
    check("stage=before".into(), BTreeSet::new(), 0).await;
    check(
        format!("object_id={a}"),
        expect(&|e| e["object_id"] == a),
        3,
    )
    .await;
    check(
        format!("object_id={b}"),
        expect(&|e| e["object_id"] == b),
        2,
    )
    .await;
    let b_create = |e: &Value| e["object_id"] == b && e["handlers_id"] == h1;
    check(
        format!("handlers_id={h1}&events_id=clients.create&object_id={b}"),
        expect(&b_create),
        1,
    )
    .await;
    // q searches the response body, the request and the error.
    check(
        "q=zq-reply-marker".into(),
        expect(&|e| e["handlers_id"] == h1),
        3,
    )
    .await;
    check("q=Bravo".into(), expect(&|e| e["object_id"] == b), 2).await;
    check("q=no-such-text-anywhere".into(), BTreeSet::new(), 0).await;
    for typed in ["%22two%22", "a%5Cb", "Alfa%20%22Two%22%20a%5Cb"] {
        check(format!("q={typed}"), expect(&upd), 1).await;
    }
    let errs: Vec<String> = all
        .iter()
        .filter_map(|e| e["error"].as_str().map(str::to_string))
        .collect();
    assert_eq!(errs.len(), 2, "the failed calls say why");

    // from/to bound dt inclusively.
    let mid = &all[2]["dt"];
    let t = micros(mid);
    let enc = mid.as_str().unwrap();
    check(format!("from={enc}"), expect(&|e| micros(&e["dt"]) >= t), 3).await;
    check(format!("to={enc}"), expect(&|e| micros(&e["dt"]) <= t), 3).await;
    check(
        format!("from={enc}&to={enc}"),
        expect(&|e| e["dt"] == *mid),
        1,
    )
    .await;
    let (st, v) = s.get("/api/v1/executions?from=yesterday").await;
    assert!(st == 400 || st == 422, "a bad time is refused: {st} {v}");
    // A window ending before it starts is a mistake, not "nothing happened then".
    for list in ["executions", "events"] {
        let path = format!("/api/v1/{list}?from=2026-12-06T00:00:00Z&to=2026-12-04T00:00:00Z");
        let (st, v) = s.get(&path).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert_error(&v, "bad_request");
        assert_eq!(
            v["error"]["message"], "query string: to is before from",
            "{v}"
        );
        let same = format!("/api/v1/{list}?from=2026-12-06T00:00:00Z&to=2026-12-06T00:00:00Z");
        assert_eq!(s.get(&same).await.0, 200, "{same}");
    }
}

/// A filter's word outside its set is refused, naming the words it may be, rather than
/// answered with an empty list: a call's status is `fail` where a delivery's is
/// `failed`, and "no failures" would be the wrong reading of a typo. Empty is no filter.
#[tokio::test]
async fn list_filters_refuse_words_outside_their_set() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    http_handler(&s, "clients.create", &r.url("/ok"), &[0]).await;
    for (path, word) in [
        ("/api/v1/executions?status=failed", "success, fail"),
        ("/api/v1/executions?stage=later", "before, after"),
        (
            "/api/v1/deliveries?status=fail",
            "pending, succeeded, failed",
        ),
        ("/api/v1/handlers?status=on", "enabled, disabled, archived"),
        ("/api/v1/handlers?type=webhook", "http, script"),
        ("/api/v1/handlers?stage=during", "before, after"),
        // An event id outside the catalogue (a typo listed nothing, "none happened").
        (
            "/api/v1/executions?events_id=clients.creat",
            "not an event id",
        ),
        ("/api/v1/events?events_id=client.create", "not an event id"),
        ("/api/v1/handlers?event=clients.creat", "`clients.*`"),
        ("/api/v1/handlers?event=nope.nope", "`clients.*`"),
        ("/api/v1/handlers?event=nope.*", "`clients.*`"),
        ("/api/v1/handlers?matches=dids.*", "not an event id"),
        ("/api/v1/handlers?matches=nope.nope", "not an event id"),
        // A parameter the list does not have: a misspelt `handlers_id` answered every
        // handler's calls as if they were that one's.
        (
            "/api/v1/executions?handler_id=1",
            "unknown parameter \"handler_id\"",
        ),
        (
            "/api/v1/deliveries?events_id=x",
            "unknown parameter \"events_id\"",
        ),
        (
            "/api/v1/events?status=failed",
            "unknown parameter \"status\"",
        ),
        ("/api/v1/handlers?q=crm&limit=5", "unknown parameter \"q\""),
        (
            "/api/v1/clients?limit=5&nmae=x",
            "unknown parameter \"nmae\"",
        ),
    ] {
        let (st, v) = s.get(path).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert_error(&v, "bad_request");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(word), "{path}: {message}");
    }
    for path in [
        "/api/v1/executions?status=&stage=",
        "/api/v1/deliveries?status=",
        "/api/v1/handlers?status=&type=&stage=&event=&matches=",
        "/api/v1/executions?events_id=",
        "/api/v1/events?events_id=",
        "/api/v1/executions?handlers_id=1&limit=5&offset=0",
        "/api/v1/clients?q=x&limit=5&offset=1",
    ] {
        let (st, v) = s.get(path).await;
        assert_eq!(st, 200, "{path}: {v}");
    }
    let (_, v) = s
        .get("/api/v1/handlers?type=http&stage=after&status=enabled")
        .await;
    assert_eq!(v["total"], 1, "{v}");
}

/// `q` matches letters of any case beyond A to Z: SQLite's own `lower` only knew those,
/// so "ÉCOLE" was found by neither "ÉCOLE" nor "école" there.
#[tokio::test]
async fn a_search_ignores_case_beyond_ascii() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let h = http_handler(&s, "clients.create", &r.url("/ok"), &[0]).await;
    let h = h["id"].as_i64().unwrap();
    let c = client(&s, "ÉCOLE Größe Ärzte").await;
    wait_for(30, "the call", || async {
        let log = executions(&s, &format!("handlers_id={h}")).await;
        (!log.is_empty()).then_some(())
    })
    .await;
    for typed in ["%C3%89COLE", "%C3%A9cole", "gr%C3%B6%C3%9Fe", "%C3%A4RZTE"] {
        let log = executions(&s, &format!("handlers_id={h}&q={typed}")).await;
        assert_eq!(log.len(), 1, "q={typed}: {log:?}");
        let (_, v) = s.get(&format!("/api/v1/clients?q={typed}")).await;
        assert_eq!(v["items"][0]["id"], c, "q={typed}: {v}");
    }
    let log = executions(&s, &format!("handlers_id={h}&q=%C3%89COLES")).await;
    assert!(log.is_empty(), "{log:?}");
}

/// A search text is at most 1,000 characters: a longer one is a 400 naming the limit,
/// not the 500 of SQLite refusing the LIKE pattern (over 50,000 bytes); 1,000 quotes,
/// each escaped twice in the request's JSON pattern, still search.
#[tokio::test]
async fn a_search_text_over_1000_characters_is_refused() {
    let s = Server::start().await;
    // One over the limit, and beyond what SQLite's LIKE takes (a 500 before).
    let (just_over, long) = ("a".repeat(1001), "a".repeat(50_001));
    let lists = [
        "executions?q=",
        "clients?q=",
        "dids?q=",
        "rate_tables?name=",
    ];
    for (path, text) in lists.iter().flat_map(|p| [(p, &just_over), (p, &long)]) {
        let (st, v) = s.get(&format!("/api/v1/{path}{text}")).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert_error(&v, "bad_request");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("at most 1000 characters"), "{message}");
        assert!(!message.contains("Failed to deserialize"), "{message}");
    }
    let quotes = "%22".repeat(1000);
    let (st, v) = s.get(&format!("/api/v1/executions?q={quotes}")).await;
    assert_eq!((st, &v["total"]), (200, &json!(0)), "{v}");
}

#[tokio::test]
async fn a_before_call_is_logged_with_stage_before() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let h = create_handler(
        &s,
        json!({"name": "gate", "event": "clients.update", "stage": "before",
               "task": r.url("/before")}),
    )
    .await;
    let c = client(&s, "Gated").await;
    rename(&s, c, "Gated 2").await;
    assert_eq!(r.hits_on("/before").len(), 1, "called before the update");
    let log = executions(&s, "stage=before").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["handlers_id"], h["id"]);
    assert_eq!(log[0]["events_id"], "clients.update");
    assert_eq!(log[0]["request"]["event"]["stage"], "before");
    assert_eq!(log[0]["object_id"], c);
    assert!(executions(&s, "stage=after").await.is_empty());
}

#[tokio::test]
async fn the_log_keeps_the_first_64_kib_of_a_response() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let big = "x".repeat(100 * 1024);
    r.reply("/big", &big);
    let h = http_handler(&s, "clients.create", &r.url("/big"), &[0]).await;
    client(&s, "Big").await;
    wait_deliveries(&s, h["id"].as_i64().unwrap(), "succeeded", 1, 30).await;
    let log = executions(&s, &format!("handlers_id={}", h["id"])).await;
    let body = log[0]["response_body"].as_str().expect("body");
    assert_eq!(body.len(), 64 * 1024, "the first 64 KiB");
    assert!(big.starts_with(body));
}

/// PostgreSQL's text cannot hold a NUL: a handler answering one must not make its
/// outcome, and the others written with it, fail to be written (and be called again for
/// ever). The log shows U+FFFD in its place, on both databases.
#[tokio::test]
async fn a_response_with_a_nul_is_logged_and_its_delivery_succeeds() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    r.reply("/nul", "ok\u{0}done");
    let h = http_handler(&s, "clients.create", &r.url("/nul"), &[0]).await;
    client(&s, "Nul").await;
    wait_deliveries(&s, h["id"].as_i64().unwrap(), "succeeded", 1, 30).await;
    let log = executions(&s, &format!("handlers_id={}", h["id"])).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["response_body"], "ok\u{fffd}done");
    assert_eq!(r.hits_on("/nul").len(), 1, "called once");
}

/// SQLite's one writer: how long it was in use and how many write transactions each
/// group commit held grow with every write. PostgreSQL has no such writer: no series.
#[tokio::test]
async fn metrics_show_how_busy_the_sqlite_writer_is() {
    let s = Server::start().await;
    let series = [
        "billhook_sqlite_writer_busy_seconds_total",
        "billhook_sqlite_commits_total",
        "billhook_sqlite_committed_transactions_total",
    ];
    let before = metrics(&s).await;
    if std::env::var("BILLHOOK_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        for name in series {
            assert_eq!(
                metric(&before, name),
                None,
                "{name} on PostgreSQL:\n{before}"
            );
        }
        return;
    }
    let value = |text: &str, name: &str| {
        metric(text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    for _ in 0..5 {
        client(&s, "writes").await;
    }
    let after = metrics(&s).await;
    for name in series {
        assert!(
            after.contains(&format!("# TYPE {name} counter")),
            "{name} is a counter:\n{after}"
        );
        assert!(
            value(&after, name) > value(&before, name),
            "{name} grows with writes:\n{before}\n{after}"
        );
    }
    let transactions = value(&after, series[2]) - value(&before, series[2]);
    let commits = value(&after, series[1]) - value(&before, series[1]);
    assert!(
        transactions >= 5.0 && commits >= 1.0 && commits <= transactions,
        "five clients created: {transactions} transactions in {commits} commits"
    );
}

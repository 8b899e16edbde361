//! Order and independence: one handler gets each client's events in the order they
//! happened (through a receiver outage and a server crash), while a slow client does not
//! hold up another's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::Server;
use crate::receiver::{Hit, Receiver};
use crate::util::{
    client, executions, first_seen, http_handler, rename, uid_of, uids, wait_deliveries,
};

/// Raised uids per client (`clients.*` events only), oldest first.
async fn raised_per_client(s: &Server) -> BTreeMap<i64, Vec<String>> {
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for e in s.events().await {
        let id = e["data"]["id"].as_i64().expect("client id");
        let uid = e["event"]["uid"].as_str().unwrap().to_string();
        out.entry(id).or_default().push(uid);
    }
    out
}

/// Received uids per client, first arrival of each.
fn received_per_client(hits: &[Hit]) -> BTreeMap<i64, Vec<String>> {
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for h in hits {
        out.entry(h.client().expect("a client's event"))
            .or_default()
            .push(h.uid());
    }
    out.into_iter().map(|(k, v)| (k, first_seen(v))).collect()
}

async fn wait_all(r: &Receiver, path: &str, n: usize, secs: u64) -> Vec<Hit> {
    let what = format!("{n} distinct events on {path}");
    crate::harness::wait_for(secs, &what, || async {
        let hits = r.hits_on(path);
        (first_seen(uids(&hits)).len() >= n).then_some(hits)
    })
    .await
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_every_event_in_per_client_order() {
    let s = Server::start().await;
    let r = Receiver::reserved();
    http_handler(&s, "clients.*", &r.url("/h"), &[1; 50]).await;
    let a = client(&s, "A").await;
    let b = client(&s, "B").await;
    rename(&s, a, "A2").await;
    rename(&s, b, "B2").await;
    rename(&s, a, "A3").await;
    // Let the head of each client's queue fail against the closed port.
    crate::harness::wait_for(30, "failed attempts against the closed port", || async {
        let log = executions(&s, "status=fail").await;
        (log.len() >= 2).then_some(())
    })
    .await;
    r.up().await;
    rename(&s, b, "B3").await;
    rename(&s, a, "A4").await;
    let hits = wait_all(&r, "/h", 7, 60).await;
    assert_eq!(
        received_per_client(&hits),
        raised_per_client(&s).await,
        "every event, each client's in order"
    );
    let log = executions(&s, "status=fail").await;
    assert!(
        log.iter().all(|e| e["response_status"].is_null()),
        "attempts against a closed port have no response: {log:?}"
    );
}

#[tokio::test]
async fn a_slow_receiver_for_one_client_does_not_hold_up_another() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let h = crate::util::create_handler(
        &s,
        serde_json::json!({"name": "slow", "event": "clients.*", "task": r.url("/h"),
               "timeout_ms": 20000, "retry_schedule": [0]}),
    )
    .await;
    let slow = client(&s, "Slow").await;
    let delay = Duration::from_secs(4);
    r.slow_for_client(slow, delay);
    rename(&s, slow, "Slow 2").await;
    let slow_update = uid_of(&s, "clients.update", slow).await;
    let first_slow = r.wait_hits("/h", 2, 30).await;
    let first_slow = first_slow
        .into_iter()
        .find(|h| h.uid() == slow_update)
        .expect("the slow client's first slow call");
    let fast = client(&s, "Fast").await;
    rename(&s, fast, "Fast 2").await;
    rename(&s, fast, "Fast 3").await;
    rename(&s, slow, "Slow 3").await;
    let fast_hits = crate::harness::wait_for(30, "the fast client's 3 events", || async {
        let got: Vec<Hit> = r
            .hits_on("/h")
            .into_iter()
            .filter(|h| h.client() == Some(fast))
            .collect();
        (got.len() >= 3).then_some(got)
    })
    .await;
    for hit in &fast_hits {
        assert!(
            hit.at < first_slow.at + delay,
            "{} arrived {:?} after the slow call started, while it was still running",
            hit.events_id(),
            hit.at - first_slow.at
        );
    }
    let hits = wait_all(&r, "/h", 6, 60).await;
    let slow_hits: Vec<&Hit> = hits.iter().filter(|h| h.client() == Some(slow)).collect();
    let last = slow_hits.last().expect("slow hits");
    assert!(
        last.at >= first_slow.at + delay,
        "the slow client's next event waited for the slow call to finish"
    );
    assert_eq!(received_per_client(&hits), raised_per_client(&s).await);
    let log = executions(&s, &format!("handlers_id={}&status=success", h["id"])).await;
    let slow_call = log
        .iter()
        .find(|e| e["event_uid"] == slow_update)
        .expect("logged");
    assert!(
        slow_call["duration_ms"].as_i64().unwrap() >= 3900,
        "{slow_call}"
    );
}

#[tokio::test]
async fn a_killed_server_loses_no_acknowledged_event() {
    let mut s = Server::start().await;
    let r = Receiver::reserved();
    http_handler(&s, "clients.*", &r.url("/h"), &[1; 50]).await;
    let a = client(&s, "K1").await;
    let b = client(&s, "K2").await;
    rename(&s, a, "K1 2").await;
    rename(&s, b, "K2 2").await;
    rename(&s, a, "K1 3").await;
    s.kill();
    s.spawn();
    r.up().await;
    rename(&s, b, "K2 3").await;
    let hits = wait_all(&r, "/h", 6, 90).await;
    let raised: BTreeMap<i64, Vec<String>> = raised_per_client(&s).await;
    assert_eq!(raised.values().map(Vec::len).sum::<usize>(), 6);
    assert_eq!(received_per_client(&hits), raised);
}

#[tokio::test]
async fn a_clients_accounts_payments_and_dids_share_its_order() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    http_handler(&s, "*", &r.url("/h"), &[0]).await;
    let c = client(&s, "Owner").await;
    // Each call about the client takes a while: anything keyed elsewhere overtakes.
    r.slow_for_client(c, Duration::from_millis(400));
    let account = json!({"clients_id": c, "name": "acc", "auth_type": "name",
                         "login": "acc", "password": "secret-pass-1"});
    s.ok("/api/v1/accounts", account, 201).await;
    s.ok(
        "/api/v1/payments",
        json!({"clients_id": c, "amount": "10"}),
        201,
    )
    .await;
    let did = s
        .ok("/api/v1/dids", json!({"number": "+14155550123"}), 201)
        .await;
    let act = |action: &'static str, body: Value| {
        let (s, id) = (&s, did["id"].clone());
        async move {
            let (st, v) = s.post(&format!("/api/v1/dids/{id}/{action}"), body).await;
            assert_eq!(st, 200, "{action}: {v}");
            v
        }
    };
    act("activate", json!({"clients_id": c})).await;
    act("block", json!({})).await;
    let stocked = act("stock", json!({})).await;
    assert!(stocked["clients_id"].is_null(), "detached: {stocked}");

    let events = s.events().await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["events_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "clients.create",
            "clients.accounts.create",
            "accounting.payments.create",
            "clients.balance_notzero",
            "dids.create",
            "dids.activate",
            "dids.block",
            "dids.stock"
        ]
    );
    let clients: Vec<String> = events
        .iter()
        .filter(|e| e["event"]["events_id"] != "dids.create")
        .map(|e| e["event"]["uid"].as_str().unwrap().to_string())
        .collect();
    let hits = wait_all(&r, "/h", events.len(), 60).await;
    let did_create = events[4]["event"]["uid"].as_str().unwrap();
    let got: Vec<String> = first_seen(uids(&hits))
        .into_iter()
        .filter(|u| u != did_create)
        .collect();
    assert_eq!(
        got, clients,
        "the client's own events, its account's, payment's and DID's (the stock that \
         detached it too) in the order they happened"
    );
}

#[tokio::test]
async fn two_servers_on_one_database_deliver_as_one() {
    let s1 = Server::start().await;
    let s2 = Server::start_on(&s1.db.url()).await;
    let r = Receiver::start().await;
    http_handler(&s1, "clients.*", &r.url("/h"), &[0]).await;
    let a = client(&s1, "Two A").await;
    let b = client(&s2, "Two B").await;
    r.slow_for_client(a, Duration::from_millis(150));
    for i in 0..5 {
        let (x, y) = if i % 2 == 0 { (&s1, &s2) } else { (&s2, &s1) };
        rename(x, a, &format!("Two A {i}")).await;
        rename(y, b, &format!("Two B {i}")).await;
    }
    let hits = wait_all(&r, "/h", 12, 60).await;
    assert_eq!(received_per_client(&hits), raised_per_client(&s1).await);
    let all = uids(&r.hits_on("/h"));
    assert_eq!(
        all.len(),
        first_seen(all.clone()).len(),
        "each event delivered once, as by one server: {all:?}"
    );
}

/// A burst for one client goes out in order (a claim takes several deliveries of one
/// client); when one of them fails, the ones behind it wait for its retry instead of
/// going on.
#[tokio::test]
async fn a_failure_inside_a_burst_holds_back_the_rest_of_the_burst() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let h = http_handler(&s, "clients.*", &r.url("/h"), &[1; 5]).await["id"]
        .as_i64()
        .unwrap();
    let a = client(&s, "A").await;
    r.wait_hits("/h", 1, 30).await;
    // The 3rd request from now fails once.
    r.plan(&[
        (200, Duration::ZERO),
        (200, Duration::ZERO),
        (500, Duration::ZERO),
    ]);
    for n in 1..=20 {
        rename(&s, a, &format!("A{n}")).await;
    }
    let raised = raised_per_client(&s).await.remove(&a).expect("A's events");
    // Every delivery finished: no call is still to come.
    wait_deliveries(&s, h, "succeeded", raised.len(), 60).await;
    let arrived: Vec<String> = r.hits_on("/h").iter().map(|h| h.uid()).collect();
    let mut expected = raised.clone();
    expected.insert(4, raised[3].clone());
    assert_eq!(
        arrived, expected,
        "each event once, in order, the failed one twice and nothing after it before its retry"
    );
}

/// Changes of one client requested at the same time reach the handler in the order they
/// were committed (the order of their events), though each is sent as soon as nothing
/// of its client is pending before it: on PostgreSQL concurrent transactions check that
/// while holding the client's row lock.
#[tokio::test]
async fn concurrent_changes_of_one_client_arrive_in_the_order_they_committed() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    http_handler(&s, "clients.*", &r.url("/h"), &[1; 5]).await;
    let ids = [client(&s, "A").await, client(&s, "B").await];
    let names: Vec<String> = (0..60).map(|i| format!("N{i}")).collect();
    let renames = names
        .iter()
        .enumerate()
        .map(|(i, n)| rename(&s, ids[i % 2], n));
    futures::future::join_all(renames).await;
    let hits = wait_all(&r, "/h", 62, 60).await;
    assert_eq!(
        received_per_client(&hits),
        raised_per_client(&s).await,
        "each client's events in the order they were committed"
    );
}

/// Handlers whose endpoints hang until the call's timeout, with more clients due than
/// the engine has slots, do not set the pace of another handler of the same events.
/// Queues waiting for their handler's turn held the engine's slots: one hanging handler
/// took them all, and, once a handler was held to a share of them, two did; the other
/// handler's deliveries then waited for their calls to time out (here 30 s).
#[tokio::test]
async fn handlers_that_hang_do_not_hold_up_another_handler() {
    let s = Server::start().await;
    let hang = [Receiver::start().await, Receiver::start().await];
    for (n, r) in hang.iter().enumerate() {
        r.plan(&[(200, Duration::from_secs(120)); 500]);
        crate::util::create_handler(
            &s,
            json!({"name": format!("hangs {n}"), "event": "clients.create", "task": r.url("/h"),
                   "timeout_ms": 30000, "retry_schedule": [3600]}),
        )
        .await;
    }
    let fast = Receiver::start().await;
    http_handler(&s, "clients.create", &fast.url("/h"), &[0]).await;
    // More than the engine's 320 slots, so that each hanging handler's queues could take
    // them all.
    let clients = 400;
    futures::StreamExt::for_each_concurrent(futures::stream::iter(0..clients), 16, |n| {
        let s = &s;
        async move {
            client(s, &format!("Client {n}")).await;
        }
    })
    .await;
    // Within half the hanging handlers' timeout.
    wait_all(&fast, "/h", clients, 15).await;
    for r in &hang {
        assert_eq!(
            r.most_in_flight(),
            64,
            "calls at once to a hanging handler (handler_concurrency 64)"
        );
    }
}

/// Twelve clients' events to one slow handler: calls for different clients run at once,
/// as many as `handler_concurrency` allows and no more.
#[tokio::test]
async fn calls_to_one_handler_run_in_parallel_up_to_its_concurrency_limit() {
    for (limit, expected) in [(Some("3"), 3), (None, 12)] {
        let env = limit.map(|l| vec![("BILLHOOK_HANDLER_CONCURRENCY", l)]);
        let s = Server::start_with(env.unwrap_or_default()).await;
        let r = Receiver::start().await;
        // Long enough that every event is raised before the first call ends.
        r.plan(&[(200, Duration::from_millis(1500)); 12]);
        http_handler(&s, "clients.create", &r.url("/h"), &[0]).await;
        for n in 0..12 {
            client(&s, &format!("Client {n}")).await;
        }
        let hits = wait_all(&r, "/h", 12, 60).await;
        assert_eq!(hits.len(), 12, "each client's event once");
        assert_eq!(
            r.most_in_flight(),
            expected,
            "calls at once with handler_concurrency {limit:?} (default 64)"
        );
    }
}

/// `delivery_max_calls` bounds the calls in flight over all handlers: three handlers of
/// three calls each, under a limit of six, make six at once, not nine.
#[tokio::test]
async fn calls_over_all_handlers_stay_within_delivery_max_calls() {
    for (limit, expected) in [(Some("6"), 6), (None, 9)] {
        let mut env = vec![("BILLHOOK_HANDLER_CONCURRENCY", "3")];
        env.extend(limit.map(|l| ("BILLHOOK_DELIVERY_MAX_CALLS", l)));
        let s = Server::start_with(env).await;
        let r = Receiver::start().await;
        // Long enough that every event is raised before the first call ends.
        r.plan(&[(200, Duration::from_millis(1500)); 36]);
        for path in ["/a", "/b", "/c"] {
            http_handler(&s, "clients.create", &r.url(path), &[0]).await;
        }
        for n in 0..12 {
            client(&s, &format!("Client {n}")).await;
        }
        for path in ["/a", "/b", "/c"] {
            let hits = wait_all(&r, path, 12, 60).await;
            assert_eq!(hits.len(), 12, "each client's event once to {path}");
        }
        assert_eq!(
            r.most_in_flight(),
            expected,
            "calls at once over three handlers with delivery_max_calls {limit:?}"
        );
    }
}

//! Which handlers an event goes to: exact ids, prefix patterns, `*`; and disabled
//! handlers, which get nothing until enabled again.

use serde_json::{json, Value};

use crate::harness::{assert_error, wait_for, Server};
use crate::receiver::Receiver;
use crate::util::{
    all_uids, client, deliveries, delivery_of, executions, http_handler, metric, metrics, micros,
    now_micros, rename, settle, uids, HANDLERS,
};

#[tokio::test]
async fn patterns_choose_the_handlers_an_event_goes_to() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let mut hs = Vec::new();
    for (path, event) in [
        ("/prefix", "clients.*"),
        ("/exact", "clients.create"),
        ("/all", "*"),
        ("/dids", "dids.*"),
        ("/update", "clients.update"),
        ("/accounts", "clients.accounts.*"),
        ("/payments", "accounting.payments.create"),
    ] {
        let h = http_handler(&s, event, &r.url(path), &[0]).await;
        hs.push((path, h["id"].as_i64().unwrap()));
    }
    let c = client(&s, "Pattern").await;
    rename(&s, c, "Pattern 2").await;
    let body = json!({"clients_id": c, "name": "acc1", "auth_type": "name",
                      "login": "acc1", "password": "secret-pass-1"});
    s.ok("/api/v1/accounts", body, 201).await;
    s.ok("/api/v1/dids", json!({"number": "+14155550100"}), 201)
        .await;
    let raised = all_uids(&s).await;
    let kinds: Vec<String> = s
        .events()
        .await
        .iter()
        .map(|e| e["event"]["events_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "clients.create",
            "clients.update",
            "clients.accounts.create",
            "dids.create"
        ]
    );
    let expect =
        |which: &[usize]| -> Vec<String> { which.iter().map(|i| raised[*i].clone()).collect() };
    let cases = [
        ("/prefix", expect(&[0, 1, 2])),
        ("/exact", expect(&[0])),
        ("/all", expect(&[0, 1, 2, 3])),
        ("/dids", expect(&[3])),
        ("/update", expect(&[1])),
        ("/accounts", expect(&[2])),
        ("/payments", vec![]),
    ];
    // The outbox is written with the event: the deliveries exist already.
    for ((path, want), (_, id)) in cases.iter().zip(&hs) {
        let mut queued: Vec<String> = deliveries(&s, &format!("handlers_id={id}"))
            .await
            .iter()
            .map(|d| d["event_uid"].as_str().unwrap().to_string())
            .collect();
        queued.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(queued, want_sorted, "deliveries of {path}");
    }
    for (path, want) in &cases {
        if want.is_empty() {
            continue;
        }
        let hits = r.wait_hits(path, want.len(), 30).await;
        let got = uids(&hits);
        // /all and /prefix see two clients' worth of keys (the DID has none): compare
        // per path only the set, and the order where one client is concerned.
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got_sorted, want_sorted, "{path} received");
    }
    let client_order: Vec<String> = uids(&r.hits_on("/prefix"));
    assert_eq!(
        client_order,
        expect(&[0, 1, 2]),
        "one client's events in order"
    );
    assert!(r.hits_on("/payments").is_empty());
}

#[tokio::test]
async fn disabled_and_archived_handlers_get_nothing_then_enabled_receive_in_order() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let off = http_handler(&s, "clients.*", &r.url("/off"), &[0]).await;
    let (st, v) = s
        .post(&format!("{HANDLERS}/{}/disable", off["id"]), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    http_handler(&s, "clients.*", &r.url("/on"), &[0]).await;
    let archived = http_handler(&s, "clients.*", &r.url("/archived"), &[0]).await;
    let (st, v) = s
        .post(&format!("{HANDLERS}/{}/archive", archived["id"]), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    let c = client(&s, "Quiet").await;
    rename(&s, c, "Quiet 2").await;
    rename(&s, c, "Quiet 3").await;
    r.wait_hits("/on", 3, 30).await;
    assert!(
        deliveries(&s, &format!("handlers_id={}", off["id"]))
            .await
            .iter()
            .all(|d| d["status"] != "succeeded"),
        "nothing delivered to a disabled handler"
    );
    assert!(
        r.hits_on("/off").is_empty(),
        "a disabled handler is not called"
    );

    let (st, v) = s
        .post(&format!("{HANDLERS}/{}/enable", off["id"]), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    rename(&s, c, "Quiet 4").await;
    rename(&s, c, "Quiet 5").await;
    let later: Vec<String> = all_uids(&s).await[3..].to_vec();
    let hits = r.wait_hits("/off", 2, 30).await;
    assert_eq!(
        uids(&hits),
        later,
        "after enabling: the events raised since, in order (the ones raised while it \
         was disabled were not for it)"
    );
    assert_eq!(r.wait_hits("/on", 5, 30).await.len(), 5);
    assert!(
        r.hits_on("/archived").is_empty(),
        "an archived handler gets nothing"
    );
    let queued = deliveries(&s, &format!("handlers_id={}", archived["id"])).await;
    assert!(queued.is_empty(), "nothing queued for it: {queued:?}");
}

#[tokio::test]
async fn deliveries_queued_before_a_disable_wait_and_resume_in_order() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    r.fail_always();
    let h = http_handler(&s, "clients.*", &r.url("/h"), &[1; 40]).await;
    let id = h["id"].as_i64().unwrap();
    let c = client(&s, "Paused").await;
    rename(&s, c, "Paused 2").await;
    rename(&s, c, "Paused 3").await;
    let raised = all_uids(&s).await;
    r.wait_hits("/h", 1, 30).await;

    let (st, v) = s.post(&format!("{HANDLERS}/{id}/disable"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    let disabled_at = micros(&v["updated_at"]);
    // Let an attempt started before the disable finish, then let the receiver succeed:
    // nothing may reach it while the handler stays disabled.
    let head_touched_after = |t: i64| {
        let s = &s;
        async move {
            deliveries(s, &format!("handlers_id={id}&status=pending"))
                .await
                .iter()
                .map(|d| micros(&d["updated_at"]))
                .max()
                .is_some_and(|u| u > t)
        }
    };
    settle(3.0, || head_touched_after(disabled_at)).await;
    let before = r.hits_on("/h").len();
    r.succeed();
    let switched = now_micros();
    // Longer than the 5 s after which paused deliveries used to be taken up again.
    settle(6.0, || head_touched_after(switched)).await;
    assert_eq!(
        r.hits_on("/h").len(),
        before,
        "no call while the handler is disabled"
    );
    assert!(
        !head_touched_after(switched).await,
        "a disabled handler's deliveries wait untouched, not taken up again and again"
    );

    let (st, v) = s.post(&format!("{HANDLERS}/{id}/enable"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    let hits = r.wait_hits("/h", before + 3, 30).await;
    let ok: Vec<String> = uids(&hits[before..]);
    assert_eq!(ok, raised, "resumed in order once enabled");
}

/// A handler whose endpoint fails, with two events of one client pending for it: its
/// id and the events' uids, in order.
async fn two_pending(s: &Server, r: &Receiver, name: &str) -> (i64, Vec<String>) {
    r.fail_always();
    let h = http_handler(s, "clients.*", &r.url("/h"), &[1; 40]).await;
    let id = h["id"].as_i64().unwrap();
    let c = client(s, name).await;
    rename(s, c, &format!("{name} 2")).await;
    let raised = all_uids(s).await;
    r.wait_hits("/h", 1, 30).await;
    let pending = deliveries(s, &format!("handlers_id={id}&status=pending")).await;
    assert_eq!(pending.len(), 2, "{pending:?}");
    (id, raised)
}

/// After a change that takes handler `id` out of the after stage: both its deliveries
/// failed with `error`, and neither retry nor recover sets them going while it stays
/// out (nothing would send them: they would wait for ever).
async fn failed_and_kept(s: &Server, id: i64, error: &str) {
    // A call in flight at the change ends first (failed: the endpoint fails at once).
    // Well within the engine's 10 s walk, which would fail them too: this is the
    // change's own doing.
    let all = wait_for(3, "both deliveries failed", || async {
        let all = deliveries(s, &format!("handlers_id={id}")).await;
        all.iter().all(|d| d["status"] == "failed").then_some(all)
    })
    .await;
    assert_eq!(all.len(), 2, "{all:?}");
    for d in &all {
        assert_eq!(
            (&d["status"], &d["last_error"]),
            (&json!("failed"), &json!(error)),
            "{d}"
        );
    }
    let retry = format!("/api/v1/deliveries/{}/retry", all[0]["id"]);
    let recover = format!("{HANDLERS}/{id}/recover");
    for (path, body) in [
        (&retry, json!({})),
        (&recover, json!({"since": "2000-01-01T00:00:00Z"})),
    ] {
        let (st, v) = s.post(path, body).await;
        assert_eq!(st, 409, "{path}: {v}");
        assert_error(&v, "invalid_transition");
    }
    let failed = deliveries(s, &format!("handlers_id={id}&status=failed")).await;
    assert_eq!(failed.len(), 2, "still failed");
}

/// Handler `id`, back in the after stage with `change` (at a path of its own: a call in
/// flight at the change may still reach the old one), gets both events through
/// `recover`, in order.
async fn recovered_in_order(s: &Server, r: &Receiver, id: i64, change: Value, raised: &[String]) {
    r.succeed();
    let mut change = change;
    change["task"] = json!(r.url("/back"));
    changed_and_recovered(s, id, change, 2).await;
    let hits = r.wait_hits("/back", 2, 30).await;
    assert_eq!(uids(&hits), raised, "recovered in order");
}

/// Applies `change` to handler `id`, then recovers all its failed deliveries: `requeued`
/// of them.
async fn changed_and_recovered(s: &Server, id: i64, change: Value, requeued: i64) {
    let (st, v) = s.patch(&format!("{HANDLERS}/{id}"), change).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s
        .post(
            &format!("{HANDLERS}/{id}/recover"),
            json!({"since": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!((st, &v["requeued"]), (200, &json!(requeued)), "{v}");
}

/// An archived handler is called no more: its pending deliveries fail at once (out of the
/// backlog and its age on /metrics), and `recover` brings them back, in order, once it
/// is enabled again.
#[tokio::test]
async fn archiving_a_handler_fails_its_pending_deliveries_until_recovered() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let (id, raised) = two_pending(&s, &r, "Retired").await;
    let (st, v) = s.post(&format!("{HANDLERS}/{id}/archive"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    failed_and_kept(&s, id, "the handler was archived").await;
    let text = metrics(&s).await;
    let series = format!("billhook_handler_deliveries_pending{{handlers_id=\"{id}\"}}");
    assert_eq!(metric(&text, &series), None, "no backlog left: {text}");
    // An archived handler can be enabled again.
    recovered_in_order(&s, &r, id, json!({"status": "enabled"}), &raised).await;
}

/// A handler made a before handler takes no after deliveries: its pending ones fail at
/// once (it would have got after payloads), and once it is an after handler again
/// `recover` delivers them, in order.
#[tokio::test]
async fn a_handler_made_a_before_handler_fails_its_pending_deliveries() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let (id, raised) = two_pending(&s, &r, "Switched").await;
    let (st, v) = s
        .patch(&format!("{HANDLERS}/{id}"), json!({"stage": "before"}))
        .await;
    assert_eq!(st, 200, "{v}");
    failed_and_kept(&s, id, "the handler became a before handler").await;
    recovered_in_order(&s, &r, id, json!({"stage": "after"}), &raised).await;
}

/// A call in flight when its handler is archived or made a before handler ends as it
/// ends: one the receiver took succeeds (it was failed with the others, and `recover`
/// sent it a second time); one that fails is failed for the change, not left pending.
/// The client's later deliveries, queued behind it (claimed with it, or given back),
/// fail with the change, and once the handler is back `recover` sends what did not
/// arrive, in order: no queue is left stuck behind an unflagged head.
#[tokio::test]
async fn a_call_in_flight_at_an_archive_or_a_stage_change_ends_as_it_ends() {
    for (change, error) in [
        (json!({"status": "archived"}), "the handler was archived"),
        (
            json!({"stage": "before"}),
            "the handler became a before handler",
        ),
    ] {
        for answer in [200, 500] {
            // A server per case: its engine walks the queues at its start, then only 10 s
            // later, so what fails within the case is the outcome writer's doing.
            let s = Server::start().await;
            let r = Receiver::start().await;
            r.plan(&[(answer, std::time::Duration::from_millis(1500))]);
            let h = http_handler(&s, "clients.*", &r.url("/h"), &[1, 1]).await;
            let id = h["id"].as_i64().unwrap();
            let before = all_uids(&s).await.len();
            let c = client(&s, &format!("In flight {answer}")).await;
            r.wait_hits("/h", 1, 30).await;
            rename(&s, c, "Queued 1").await;
            rename(&s, c, "Queued 2").await;
            let raised = all_uids(&s).await[before..].to_vec();
            assert_eq!(raised.len(), 3, "{raised:?}");
            // The first call is still in flight at the change (it takes 1.5 s).
            let first = delivery_of(&s, id, &raised[0]).await;
            assert_eq!(first["attempts"], 0, "{first}");
            let (st, v) = s.patch(&format!("{HANDLERS}/{id}"), change.clone()).await;
            assert_eq!(st, 200, "{v}");
            // Within the call's end and well before the engine's 10 s walk: this is the
            // outcome writer's doing.
            let ds = wait_for(5, "every outcome written", || async {
                let d = deliveries(&s, &format!("handlers_id={id}")).await;
                (d.len() == 3 && d.iter().all(|d| d["status"] != "pending")).then_some(d)
            })
            .await;
            // Newest first: the first event's delivery is the last.
            let first = &ds[2];
            if answer == 200 {
                let done = (&first["status"], &first["attempts"]);
                assert_eq!(done, (&json!("succeeded"), &json!(1)), "{first}");
            }
            let failed = if answer == 200 { &ds[..2] } else { &ds[..] };
            for d in failed {
                let why = (&d["status"], &d["last_error"]);
                assert_eq!(why, (&json!("failed"), &json!(error)), "{d}");
            }
            // The call's outcome and what it failed are one write, made as the call ended
            // (a walk's would come at its own time, after the call was logged).
            // The log's dt is when the call ended.
            let call = &executions(&s, &format!("handlers_id={id}")).await[0];
            let after_the_end = micros(&first["updated_at"]) - micros(&call["dt"]);
            assert!(
                (0..1_000_000).contains(&after_the_end),
                "outcome written {after_the_end} µs after the call ended: {first} {call}"
            );
            // Back in the after stage, recover sends what did not arrive, in order.
            let back = json!({"status": "enabled", "stage": "after"});
            changed_and_recovered(&s, id, back, failed.len() as i64).await;
            let hits = r.wait_hits("/h", 1 + failed.len(), 30).await;
            let sent_again = &raised[3 - failed.len()..];
            assert_eq!(uids(&hits[1..]), sent_again, "{change} {answer}");
            // Past the schedule's 1 s: no other call comes.
            settle(1.5, || async { r.hits().len() > 1 + failed.len() }).await;
            assert_eq!(r.hits().len(), 1 + failed.len(), "{change} {answer}");
        }
    }
}

//! Concurrent requests on one client with a slow before handler stay consistent: every
//! acknowledged change is what was stored at that moment, has its event, was judged by
//! the handler as written, and the final state is the last event's.

use serde_json::{json, Value};

use crate::harness::Server;
use crate::receiver::{Receiver, Reply};
use crate::util::{client, get_client, http_hook, id, new_events, snapshot};

const REQUESTS: i64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_with_a_slow_before_handler_stay_consistent() {
    let s = Server::start().await;
    let c = client(&s, "Contended").await;
    let cid = id(&c);
    let r = Receiver::start(|p| Reply::json(200, p).after_ms(200)).await;
    http_hook(&s, "slow judge", &r.url(), "forbid").await;
    let before = snapshot(&s).await;

    let path = format!("/api/v1/clients/{cid}");
    let answers = futures::future::join_all(
        (1..=REQUESTS).map(|credit| s.patch(&path, json!({"credit": credit.to_string()}))),
    )
    .await;

    // Within one process, requests on one object take turns through their before
    // chains: none has to be refused as a conflict.
    let mut acknowledged: Vec<Value> = Vec::new();
    for (st, v) in &answers {
        assert_eq!(*st, 200, "{v}");
        acknowledged.push(v.clone());
    }
    assert_eq!(acknowledged.len() as i64, REQUESTS, "{answers:?}");

    let events: Vec<Value> = new_events(&s, &before)
        .await
        .into_iter()
        .filter(|e| e["event"]["object_id"] == cid)
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["event"]["events_id"] == "clients.update"),
        "{events:?}"
    );
    assert_eq!(
        events.len(),
        acknowledged.len(),
        "one event per acknowledged change: {events:?} / {answers:?}"
    );
    for v in &acknowledged {
        let matching = events.iter().filter(|e| e["data"] == *v).count();
        assert_eq!(
            matching, 1,
            "the answer {v} is the data of one event: {events:?}"
        );
    }
    // In event order, each change starts from the previous one's result.
    let mut credit = c["credit"].clone();
    for e in &events {
        assert_eq!(e["previous"], json!({"credit": credit}), "{events:?}");
        credit = e["data"]["credit"].clone();
        let judged = r
            .hits()
            .iter()
            .any(|h| h["data"]["credit"] == credit && h["previous"] == e["previous"]);
        assert!(judged, "the handler judged the change as written: {e}");
    }
    assert_eq!(get_client(&s, cid).await, events.last().unwrap()["data"]);
    eprintln!(
        "{} of {REQUESTS} concurrent PATCHes acknowledged, the rest 409 conflict",
        acknowledged.len()
    );
}

/// A renewal whose before handler takes a second while the client is archived is
/// refused as it is written (409): it was judged on the client as it was before the
/// handler was asked, and charged the archived client its fee. A free package's renewal
/// charges nothing and goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_archived_while_a_renewal_is_judged_is_not_charged() {
    let s = Server::start().await;
    let slow = Receiver::replying(Reply::empty().after_ms(1000)).await;
    let renewal =
        json!({"name": "slow", "task": slow.url(), "event": "clients.subscriptions.renew"});
    crate::util::hook(&s, renewal).await;
    let c = id(&client(&s, "Leaving").await);
    let mut subs = Vec::new();
    for fee in ["5", "0"] {
        let p = json!({"name": format!("Plan {fee}"), "period": "P1M", "fee": fee});
        let p = s.ok("/api/v1/packages", p, 201).await;
        let sub = json!({"clients_id": c, "packages_id": p["id"]});
        subs.push(s.ok("/api/v1/subscriptions", sub, 201).await["id"].clone());
    }
    assert_eq!(charges(&s, c).await, json!(1), "the first fee");
    let renew = |sub: &Value| format!("/api/v1/subscriptions/{sub}/renew");
    let (paid, free) = (renew(&subs[0]), renew(&subs[1]));
    let (renewed, archived) = tokio::join!(s.post(&paid, json!({})), async {
        slow.wait_hits(1).await;
        s.post(&format!("/api/v1/clients/{c}/archive"), json!({}))
            .await
    });
    assert_eq!(archived.0, 200, "{}", archived.1);
    assert_eq!(renewed.0, 409, "{}", renewed.1);
    assert_eq!(renewed.1["error"]["data"]["code"], "conflict");
    assert_eq!(
        charges(&s, c).await,
        json!(1),
        "no fee charged after the archive"
    );
    let (st, v) = s.post(&free, json!({})).await;
    assert_eq!(st, 200, "a free renewal charges nothing: {v}");
    assert_eq!(charges(&s, c).await, json!(1));
}

/// How many charges client `c` has.
async fn charges(s: &Server, c: i64) -> Value {
    let (_, list) = s.get(&format!("/api/v1/charges?clients_id={c}")).await;
    list["total"].clone()
}

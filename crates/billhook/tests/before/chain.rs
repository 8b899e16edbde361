//! The chain: handlers called one after the other by priority, each seeing the data as
//! the previous one left it; a forbid or a failure stops it; the before payload.

use serde_json::{json, Value};

use crate::harness::Server;
use crate::receiver::{Receiver, Reply};
use crate::util::{
    assert_nothing_written, assert_refused, client, get_client, hook, id, message, new_events,
    snapshot,
};

/// Three handlers registered out of order (30, 10, 20): 10 sees the request, 20
/// modifies, 30 sees 20's change; the stored object and its event carry it.
#[tokio::test]
async fn three_handlers_run_by_priority_and_each_sees_the_previous_change() {
    let s = Server::start().await;
    let first = Receiver::echo().await;
    let second = Receiver::modifying(json!({"name": "Set by second", "tags": ["chained"]})).await;
    let third = Receiver::echo().await;
    for (name, r, priority) in [
        ("third", &third, 30),
        ("first", &first, 10),
        ("second", &second, 20),
    ] {
        hook(
            &s,
            json!({"name": name, "task": r.url(), "priority": priority}),
        )
        .await;
    }
    let before = snapshot(&s).await;
    let c = s
        .ok("/api/v1/clients", json!({"name": "From request"}), 201)
        .await;
    assert_eq!(c["name"], "Set by second", "{c}");
    assert_eq!(c["tags"], json!(["chained"]), "{c}");
    let (h1, h2, h3) = (first.hits(), second.hits(), third.hits());
    assert_eq!((h1.len(), h2.len(), h3.len()), (1, 1, 1));
    assert_eq!(
        h1[0]["data"]["name"], "From request",
        "10 runs first: {h1:?}"
    );
    assert_eq!(
        h2[0]["data"]["name"], "From request",
        "20 runs before 30: {h2:?}"
    );
    assert_eq!(
        h3[0]["data"]["name"], "Set by second",
        "30 sees 20's change: {h3:?}"
    );
    assert_eq!(h3[0]["data"]["tags"], json!(["chained"]));
    let mut expected = h1[0]["data"].clone();
    expected["name"] = json!("Set by second");
    expected["tags"] = json!(["chained"]);
    assert_eq!(h3[0]["data"], expected, "only the modified fields differ");
    let events = new_events(&s, &before).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"], get_client(&s, id(&c)).await);
}

/// A forbid (allow:false, 4xx) or a failure under forbid stops the chain: later
/// handlers are not called and nothing is written. A failure under allow does not.
#[tokio::test]
async fn a_forbid_or_a_refusing_failure_stops_the_chain() {
    let s = Server::start().await;
    let first = Receiver::echo().await;
    let second = Receiver::echo().await;
    let third = Receiver::echo().await;
    hook(
        &s,
        json!({"name": "first", "task": first.url(), "priority": 10}),
    )
    .await;
    let h2 = hook(
        &s,
        json!({"name": "second", "task": second.url(), "priority": 20}),
    )
    .await;
    hook(
        &s,
        json!({"name": "third", "task": third.url(), "priority": 30}),
    )
    .await;
    let c = client(&s, "Chained").await;
    let cid = id(&c);
    assert_eq!(third.count(), 1);

    let refusals = [
        (
            Reply::json(200, &json!({"allow": false, "message": "stop here"})),
            "forbidden_by_handler",
        ),
        (
            Reply::json(422, &json!({"message": "no"})),
            "forbidden_by_handler",
        ),
        (Reply::text(500, ""), "handler_failed"),
    ];
    for (reply, code) in refusals {
        second.set(move |_| reply.clone());
        let before = snapshot(&s).await;
        let (st, v) = s
            .patch(
                &format!("/api/v1/clients/{cid}"),
                json!({"name": "Blocked"}),
            )
            .await;
        assert_refused(st, &v, code, h2, "second");
        if code == "forbidden_by_handler" {
            assert!(["stop here", "no"].contains(&message(&v).as_str()), "{v}");
        }
        assert_eq!(third.count(), 1, "the third handler is not called: {v}");
        assert_nothing_written(&s, &before).await;
    }
    assert_eq!(get_client(&s, cid).await, c);

    // The same failure under allow: the chain and the action go on.
    let (st, v) = s
        .patch(
            &format!("/api/v1/handlers/{h2}"),
            json!({"on_failure": "allow"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "Through"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "Through");
    assert_eq!(third.count(), 2);
    assert_eq!(third.hits()[1]["data"]["name"], "Through");
}

/// The before payload: stage before, object_id null and data.id null on create; on an
/// update the object's id and `previous` with the old values of the changed fields. Its
/// `dt` is the action's, as in the after event, for every handler of the chain (it was
/// each call's own time, a little later than the event's).
#[tokio::test]
async fn the_before_payload_of_create_update_and_archive() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let second = Receiver::echo().await;
    hook(&s, json!({"name": "watcher", "task": r.url()})).await;
    hook(&s, json!({"name": "second", "task": second.url()})).await;
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Old name", "email": "x@y.example"}),
            201,
        )
        .await;
    let cid = id(&c);
    let hits = r.hits();
    assert_eq!(hits.len(), 1);
    let event = &hits[0]["event"];
    assert_eq!(event["stage"], "before", "{event}");
    assert_eq!(event["events_id"], "clients.create");
    assert!(event["object_id"].is_null(), "null on create: {event}");
    assert!(
        event["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "{event}"
    );
    assert!(event["dt"].is_string(), "{event}");
    assert!(hits[0]["data"]["id"].is_null(), "{}", hits[0]);
    assert_eq!(hits[0]["data"]["name"], "Old name");
    assert_eq!(hits[0]["data"]["email"], "x@y.example");

    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "New name", "credit": "3"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let hit = &r.hits()[1];
    assert_eq!(hit["event"]["stage"], "before");
    assert_eq!(hit["event"]["events_id"], "clients.update");
    assert_eq!(hit["event"]["object_id"], cid);
    assert_eq!(hit["data"]["id"], cid);
    assert_eq!(hit["data"]["name"], "New name");
    assert_eq!(hit["data"]["credit"], "3");
    assert_eq!(
        hit["previous"],
        json!({"name": "Old name", "credit": c["credit"]}),
        "{hit}"
    );

    let (st, v) = s
        .post(&format!("/api/v1/clients/{cid}/archive"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    let hit: Value = r.hits()[2].clone();
    assert_eq!(hit["event"]["events_id"], "clients.archive");
    assert_eq!(hit["event"]["stage"], "before");
    assert_eq!(hit["event"]["object_id"], cid);
    assert_eq!(hit["data"]["status"], "archived");
    assert_eq!(hit["previous"], json!({"status": "active"}), "{hit}");

    let events = s.events().await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(second.count(), 3, "the chain's second handler");
    for ((event, hit), other) in events.iter().zip(r.hits()).zip(second.hits()) {
        assert_eq!(hit["event"]["events_id"], event["event"]["events_id"]);
        assert_eq!(hit["event"]["dt"], event["event"]["dt"], "{hit} / {event}");
        assert_eq!(other["event"]["dt"], event["event"]["dt"], "{other}");
    }
}

/// An assign that activates at once asks the activation's before handlers ahead, about
/// the subscription as it will be; that payload's `dt` is the one the assign's and the
/// activation's events get (the assign took a later one of its own).
#[tokio::test]
async fn an_assign_asked_about_its_activation_ahead_pairs_with_its_events() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let event = "clients.subscriptions.activate";
    hook(
        &s,
        json!({"name": "activation", "task": r.url(), "event": event}),
    )
    .await;
    let c = client(&s, "Acme").await;
    let p = json!({"name": "Plan", "period": "P1M", "fee": "0"});
    let p = s.ok("/api/v1/packages", p, 201).await;
    let body = json!({"clients_id": c["id"], "packages_id": p["id"]});
    let sub = s.ok("/api/v1/subscriptions", body, 201).await;
    assert_eq!(sub["status"], "active", "{sub}");
    let hits = r.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let dt = &hits[0]["event"]["dt"];
    let events = s.events().await;
    let of = |id: &str| {
        events
            .iter()
            .find(|e| e["event"]["events_id"] == id)
            .cloned()
    };
    for id in ["clients.subscriptions.assign", event] {
        let e = of(id).unwrap_or_else(|| panic!("no {id}: {events:?}"));
        assert_eq!(&e["event"]["dt"], dt, "{id}: {e}");
    }
}

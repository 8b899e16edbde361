//! The before stage beyond client PATCHes: which handlers run, accounts, and results
//! that only the database can show invalid.

use serde_json::json;

use crate::harness::{assert_error, Server};
use crate::receiver::{with_data, Receiver, Reply};
use crate::util::{
    assert_nothing_written, assert_refused, client, get_client, hook, http_hook, id, message,
    snapshot,
};

/// Only enabled before handlers whose pattern matches are called.
#[tokio::test]
async fn only_enabled_matching_before_handlers_are_called() {
    let s = Server::start().await;
    let called = Receiver::echo().await;
    let never = Receiver::replying(Reply::json(200, &json!({"allow": false}))).await;
    hook(
        &s,
        json!({"name": "called", "task": called.url(), "event": "clients.create"}),
    )
    .await;
    hook(
        &s,
        json!({"name": "disabled", "task": never.url(), "status": "disabled"}),
    )
    .await;
    let archived = hook(&s, json!({"name": "archived", "task": never.url()})).await;
    let (st, v) = s
        .post(&format!("/api/v1/handlers/{archived}/archive"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    hook(
        &s,
        json!({"name": "dids", "task": never.url(), "event": "dids.*"}),
    )
    .await;
    hook(
        &s,
        json!({"name": "update", "task": never.url(), "event": "clients.update"}),
    )
    .await;
    let (st, v) = s
        .post(
            "/api/v1/handlers",
            json!({"name": "after", "task": never.url(), "event": "clients.create",
                   "stage": "after", "retry_schedule": []}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    s.ok("/api/v1/clients", json!({"name": "Only one"}), 201)
        .await;
    assert_eq!(called.count(), 1);
    let before_hits = never
        .hits()
        .into_iter()
        .filter(|h| h["event"]["stage"] == "before")
        .count();
    assert_eq!(before_hits, 0, "{:?}", never.hits());
}

/// Accounts: a modification is stored, `clients_id` is read-only on update, a forbid
/// writes nothing.
#[tokio::test]
async fn account_actions_follow_the_same_rules() {
    let s = Server::start().await;
    let owner = id(&client(&s, "Owner").await);
    let other = id(&client(&s, "Other").await);
    let r = Receiver::modifying(json!({"name": "trunk-renamed", "ips": ["10.0.0.1"]})).await;
    let h = hook(
        &s,
        json!({"name": "accounts", "task": r.url(), "event": "clients.accounts.*"}),
    )
    .await;
    let a = s
        .ok(
            "/api/v1/accounts",
            json!({"clients_id": owner, "name": "trunk", "auth_type": "ip",
                   "ips": ["192.0.2.1"]}),
            201,
        )
        .await;
    assert_eq!(a["name"], "trunk-renamed", "{a}");
    assert_eq!(a["ips"], json!(["10.0.0.1"]), "{a}");
    let aid = id(&a);
    let (_, stored) = s.get(&format!("/api/v1/accounts/{aid}")).await;
    assert_eq!(stored, a);
    let events = s.events().await;
    assert_eq!(events.last().unwrap()["data"], a);

    r.set(move |p| Reply::json(200, &with_data(p, &json!({"clients_id": other}))));
    let before = snapshot(&s).await;
    let (st, v) = s
        .patch(&format!("/api/v1/accounts/{aid}"), json!({"name": "moved"}))
        .await;
    assert_refused(st, &v, "handler_failed", h, "accounts");
    assert!(message(&v).contains("clients_id"), "{v}");
    assert_nothing_written(&s, &before).await;

    r.set(|_| Reply::json(403, &json!({"message": "no new accounts"})));
    let (st, v) = s
        .post(
            "/api/v1/accounts",
            json!({"clients_id": owner, "name": "sip", "auth_type": "ip", "ips": ["192.0.2.2"]}),
        )
        .await;
    assert_refused(st, &v, "forbidden_by_handler", h, "accounts");
    assert_eq!(message(&v), "no new accounts");
    assert_nothing_written(&s, &before).await;
    let (_, list) = s.get(&format!("/api/v1/accounts?clients_id={owner}")).await;
    assert_eq!(list["total"], 1, "{list}");
}

/// A client with transactions cannot change currency (422 on the request itself); a
/// handler making that change gives an invalid result: a handler failure, ignored under
/// `on_failure: allow`.
#[tokio::test]
async fn an_invalid_result_the_database_refuses_is_a_handler_failure() {
    let s = Server::start().await;
    let cid = id(&client(&s, "Paying").await);
    s.ok(
        "/api/v1/payments",
        json!({"clients_id": cid, "amount": "10"}),
        201,
    )
    .await;
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"currency": "EUR"}),
        )
        .await;
    assert_eq!(st, 422, "the request itself is refused: {v}");
    assert_error(&v, "validation_failed");

    let r = Receiver::modifying(json!({"currency": "EUR"})).await;
    let h = http_hook(&s, "converter", &r.url(), "forbid").await;
    let before = snapshot(&s).await;
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "Renamed"}),
        )
        .await;
    assert_refused(st, &v, "handler_failed", h, "converter");
    assert_nothing_written(&s, &before).await;

    s.patch(
        &format!("/api/v1/handlers/{h}"),
        json!({"on_failure": "allow"}),
    )
    .await;
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!(
        st, 200,
        "allow goes on as if the handler were not there: {v}"
    );
    let c = get_client(&s, cid).await;
    assert_eq!(
        (c["name"].as_str(), c["currency"].as_str()),
        (Some("Renamed"), Some("USD"))
    );
}

/// POST /clients cannot create an archived client (422); neither may a handler.
#[tokio::test]
async fn a_handler_cannot_create_an_archived_client() {
    let s = Server::start().await;
    let (st, v) = s
        .post(
            "/api/v1/clients",
            json!({"name": "A", "status": "archived"}),
        )
        .await;
    assert_eq!(st, 422, "the request itself is refused: {v}");
    let r = Receiver::modifying(json!({"status": "archived"})).await;
    let h = http_hook(&s, "archiver", &r.url(), "forbid").await;
    let before = snapshot(&s).await;
    let (st, v) = s.post("/api/v1/clients", json!({"name": "B"})).await;
    assert_refused(st, &v, "handler_failed", h, "archiver");
    assert_nothing_written(&s, &before).await;
}

/// A before handler's result is validated as the request is: another client must exist
/// and be open (it was written onto an archived client, and a missing one was a 500), a
/// new DID must be stock, reserved or active, and a hold cannot end in a hold.
#[tokio::test]
async fn a_handler_result_is_checked_like_the_request_for_clients_and_dids() {
    let s = Server::start().await;
    let a = id(&client(&s, "Open").await);
    let b = id(&client(&s, "Closed").await);
    s.ok(&format!("/api/v1/clients/{b}/archive"), json!({}), 200)
        .await;
    let (dids, accounts) = ("/api/v1/dids", "/api/v1/accounts");
    let cases = [
        (
            "accounting.payments.create",
            "/api/v1/payments",
            json!({"clients_id": a, "amount": "1"}),
            json!({"clients_id": b}),
        ),
        (
            "accounting.charges.create",
            "/api/v1/charges",
            json!({"clients_id": a, "amount": "1"}),
            json!({"clients_id": 999_999}),
        ),
        (
            "clients.accounts.create",
            accounts,
            json!({"clients_id": a, "name": "acc", "auth_type": "ip", "ips": ["10.0.0.1"]}),
            json!({"clients_id": b}),
        ),
        (
            "dids.create",
            dids,
            json!({"number": "+14155550100", "status": "active", "clients_id": a}),
            json!({"clients_id": 999_999}),
        ),
        (
            "dids.create",
            dids,
            json!({"number": "+14155550101"}),
            json!({"status": "archived"}),
        ),
    ];
    for (n, (event, path, body, change)) in cases.into_iter().enumerate() {
        let r = Receiver::start(move |p| Reply::json(200, &with_data(p, &change))).await;
        let name = format!("changer {n}");
        let h = hook(&s, json!({"name": name, "task": r.url(), "event": event})).await;
        let before = snapshot(&s).await;
        let (st, v) = s.post(path, body).await;
        assert_refused(st, &v, "handler_failed", h, &name);
        assert_nothing_written(&s, &before).await;
        s.ok(&format!("/api/v1/handlers/{h}/disable"), json!({}), 200)
            .await;
    }
    let (_, list) = s.get("/api/v1/payments").await;
    assert_eq!(list["total"], 0, "{list}");

    let did = s
        .ok(
            dids,
            json!({"number": "+14155550102", "status": "active", "clients_id": a}),
            201,
        )
        .await;
    let r =
        Receiver::start(|p| Reply::json(200, &with_data(p, &json!({"status_after_hold": "hold"}))))
            .await;
    let h = hook(
        &s,
        json!({"name": "looper", "task": r.url(), "event": "dids.hold"}),
    )
    .await;
    let (st, v) = s
        .post(
            &format!("{dids}/{}/hold", did["id"]),
            json!({"hold_days": 0}),
        )
        .await;
    assert_refused(st, &v, "handler_failed", h, "looper");
}

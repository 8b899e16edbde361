//! Every client route: create, list, get, patch, custom fields, archive, delete, and the
//! events each raises (or must not raise).

use serde_json::{json, Value};

use crate::harness::{assert_error, ids, Server};

/// Asserts one payload: its event id, object id, data (the object the API returned) and
/// `previous`.
fn check_event(e: &Value, events_id: &str, object: &Value, previous: Value) {
    assert_eq!(e["event"]["events_id"], events_id, "{e}");
    assert_eq!(e["event"]["object_id"], object["id"], "{e}");
    assert_eq!(e["data"], *object, "{e}");
    assert_eq!(e["previous"], previous, "{e}");
}

/// Asserts that exactly one event was raised since `n` and checks it.
async fn only_event(s: &Server, n: usize, events_id: &str, object: &Value, previous: Value) {
    let ev = s.events_since(n).await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    check_event(&ev[0], events_id, object, previous);
}

async fn client(s: &Server, body: Value) -> Value {
    s.ok("/api/v1/clients", body, 201).await
}

fn path(c: &Value) -> String {
    format!("/api/v1/clients/{}", c["id"])
}

async fn get_client(s: &Server, c: &Value) -> Value {
    let (st, got) = s.get(&path(c)).await;
    assert_eq!(st, 200, "{got}");
    got
}

/// POSTs an action without a body and expects 200.
async fn act(s: &Server, path: &str) -> Value {
    let (st, v) = s.post(path, json!({})).await;
    assert_eq!(st, 200, "POST {path}: {v}");
    v
}

async fn package(s: &Server) -> Value {
    let body = json!({"name": "Basic", "period": "P1M", "fee": "0"});
    s.ok("/api/v1/packages", body, 201).await
}

fn names(list: &Value) -> Vec<&str> {
    let items = list["items"].as_array().expect("items");
    items.iter().map(|c| c["name"].as_str().unwrap()).collect()
}

fn fields(e: &Value) -> Vec<String> {
    let fields = e["error"]["data"]["fields"].as_object();
    let mut keys: Vec<String> = fields.expect("fields").keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn create_applies_defaults_and_raises_create() {
    let s = Server::start().await;
    let c = client(&s, json!({"name": "Acme"})).await;
    assert!(c["id"].is_i64(), "{c}");
    assert_eq!(c["name"], "Acme");
    assert_eq!(c["status"], "active");
    assert_eq!(c["currency"], "USD");
    assert_eq!(c["balance"], "0");
    assert_eq!(c["credit"], "0");
    assert_eq!(c["email"], Value::Null);
    assert_eq!(c["tags"], json!([]));
    assert_eq!(c["custom_fields"], json!({}));
    assert!(c["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(c["created_at"], c["updated_at"]);
    assert_eq!(get_client(&s, &c).await, c);

    let body = json!({"name": "Beta", "status": "blocked", "currency": "EUR",
        "email": "b@beta.io", "credit": 100.5, "tags": ["vip", "eu"],
        "custom_fields": {"crm": 7, "gone": null}});
    let full = client(&s, body).await;
    assert_eq!(full["status"], "blocked");
    assert_eq!(full["currency"], "EUR");
    assert_eq!(full["email"], "b@beta.io");
    assert_eq!(full["credit"], "100.5");
    assert_eq!(full["balance"], "0");
    assert_eq!(full["tags"], json!(["vip", "eu"]));
    assert_eq!(full["custom_fields"], json!({"crm": 7}));
    assert_eq!(get_client(&s, &full).await, full);

    let events = s.events().await;
    assert_eq!(ids(&events), ["clients.create", "clients.create"]);
    check_event(&events[0], "clients.create", &c, json!({}));
    check_event(&events[1], "clients.create", &full, json!({}));
}

#[tokio::test]
async fn unknown_client_is_404_on_every_route() {
    let s = Server::start().await;
    for (method, path) in [
        ("GET", "/api/v1/clients/4242"),
        ("PATCH", "/api/v1/clients/4242"),
        ("PUT", "/api/v1/clients/4242/custom_fields"),
        ("POST", "/api/v1/clients/4242/archive"),
        ("DELETE", "/api/v1/clients/4242"),
    ] {
        let (st, b) = s.call(method, path, Some(json!({"name": "x"}))).await;
        assert_eq!(st, 404, "{method} {path}: {b}");
        assert_error(&b, "not_found");
    }
    assert!(s.events().await.is_empty());
}

#[tokio::test]
async fn list_filters_by_status_and_q_with_paging() {
    let s = Server::start().await;
    client(&s, json!({"name": "Alpha"})).await;
    client(&s, json!({"name": "Beta", "status": "blocked"})).await;
    client(&s, json!({"name": "Gamma", "email": "boss@gamma.org"})).await;
    client(&s, json!({"name": "Delta", "tags": ["VIP"]})).await;
    let archived = client(&s, json!({"name": "Epsilon"})).await;
    act(&s, &format!("{}/archive", path(&archived))).await;

    let (st, all) = s.get("/api/v1/clients").await;
    assert_eq!(st, 200, "{all}");
    assert_eq!(all["total"], 5);
    assert_eq!(names(&all), ["Epsilon", "Delta", "Gamma", "Beta", "Alpha"]);
    for item in all["items"].as_array().unwrap() {
        assert_eq!(
            &get_client(&s, item).await,
            item,
            "a listed client is the client"
        );
    }
    for (query, expected, total) in [
        ("status=blocked", vec!["Beta"], 1),
        ("status=archived", vec!["Epsilon"], 1),
        ("status=active", vec!["Delta", "Gamma", "Alpha"], 3),
        ("q=ALPH", vec!["Alpha"], 1),
        ("q=gamma.org", vec!["Gamma"], 1),
        ("q=vip", vec!["Delta"], 1),
        ("status=active&q=a", vec!["Delta", "Gamma", "Alpha"], 3),
        ("status=blocked&q=alpha", vec![], 0),
        ("q=nobody", vec![], 0),
        ("limit=2", vec!["Epsilon", "Delta"], 5),
        ("limit=2&offset=1", vec!["Delta", "Gamma"], 5),
        ("limit=2&offset=4", vec!["Alpha"], 5),
        ("offset=10", vec![], 5),
        ("status=active&limit=1&offset=1", vec!["Gamma"], 3),
        // No page, only the count.
        ("limit=0", vec![], 5),
        ("status=active&limit=0", vec![], 3),
    ] {
        let (st, list) = s.get(&format!("/api/v1/clients?{query}")).await;
        assert_eq!(st, 200, "{query}: {list}");
        assert_eq!(names(&list), expected, "{query}");
        assert_eq!(list["total"], total, "{query}");
    }
    // The default page is 50.
    for i in 0..50 {
        client(&s, json!({"name": format!("bulk {i}")})).await;
    }
    let (_, list) = s.get("/api/v1/clients").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 50);
    assert_eq!(list["total"], 55);
    assert_eq!(list["items"][0]["name"], "bulk 49");
}

#[tokio::test]
async fn patch_raises_update_with_exact_previous() {
    let s = Server::start().await;
    let c = client(
        &s,
        json!({"name": "Acme", "email": "a@acme.io", "tags": ["x"]}),
    )
    .await;
    let p = path(&c);
    let body = json!({"name": "Acme Ltd", "email": "ops@acme.io", "credit": "25.75",
        "tags": ["x", "y"]});
    let (st, u) = s.patch(&p, body).await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["name"], "Acme Ltd");
    assert_eq!(u["email"], "ops@acme.io");
    assert_eq!(u["credit"], "25.75");
    assert_eq!(u["tags"], json!(["x", "y"]));
    assert_eq!(u["created_at"], c["created_at"]);
    assert_eq!(get_client(&s, &c).await, u);
    let previous = json!({"name": "Acme", "email": "a@acme.io", "credit": "0", "tags": ["x"]});
    only_event(&s, 1, "clients.update", &u, previous).await;

    // Nothing changes: 200 with the same object, no event.
    for body in [json!({"name": "Acme Ltd", "credit": 25.75}), json!({})] {
        let (st, same) = s.patch(&p, body).await;
        assert_eq!(st, 200, "{same}");
        assert_eq!(same, u);
    }
    assert_eq!(s.events().await.len(), 2);

    let (st, u2) = s
        .patch(&p, json!({"email": null, "status": "blocked"}))
        .await;
    assert_eq!(st, 200, "{u2}");
    assert_eq!(u2["email"], Value::Null);
    assert_eq!(u2["status"], "blocked");
    let previous = json!({"email": "ops@acme.io", "status": "active"});
    only_event(&s, 2, "clients.update", &u2, previous).await;

    // Read-only fields cannot be written through PATCH.
    let (st, v) = s.patch(&p, json!({"balance": "999", "id": 77})).await;
    assert!(st == 200 || st == 400 || st == 422, "{v}");
    assert_eq!(get_client(&s, &c).await, u2);
    assert_eq!(s.events().await.len(), 3);

    // A blocked client is still served: transactions are accepted.
    let body = json!({"clients_id": c["id"], "amount": "1"});
    s.ok("/api/v1/payments", body, 201).await;
}

#[tokio::test]
async fn custom_fields_set_and_remove_with_previous() {
    let s = Server::start().await;
    let c = client(&s, json!({"name": "Acme"})).await;
    let p = format!("{}/custom_fields", path(&c));
    let first = json!({"crm_id": 12, "plan": "gold", "meta": {"k": [1]}});
    let (st, a) = s.put(&p, first.clone()).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["custom_fields"], first);
    assert_eq!(a["name"], "Acme");
    only_event(
        &s,
        1,
        "clients.custom_fields.update",
        &a,
        json!({"custom_fields": {}}),
    )
    .await;

    let (st, b) = s.put(&p, json!({"crm_id": null, "vip": true})).await;
    assert_eq!(st, 200, "{b}");
    let second = json!({"plan": "gold", "meta": {"k": [1]}, "vip": true});
    assert_eq!(b["custom_fields"], second);
    assert_eq!(get_client(&s, &c).await, b);
    let previous = json!({"custom_fields": first});
    only_event(&s, 2, "clients.custom_fields.update", &b, previous).await;

    // Removing an absent key or setting the same value changes nothing: no event.
    let (st, same) = s.put(&p, json!({"absent": null, "plan": "gold"})).await;
    assert_eq!(st, 200);
    assert_eq!(same, b);
    // A key handlers could not use is refused.
    let (st, e) = s.put(&p, json!({"bad key!": 1})).await;
    assert_eq!(st, 422, "{e}");
    assert_error(&e, "validation_failed");
    assert_eq!(fields(&e), ["custom_fields"]);
    assert_eq!(s.events().await.len(), 3);
    assert_eq!(get_client(&s, &c).await, b);
}

#[tokio::test]
async fn archived_client_refuses_new_objects() {
    let s = Server::start().await;
    let c = client(&s, json!({"name": "Acme", "status": "blocked"})).await;
    let id = &c["id"];
    let pkg = package(&s).await;
    let a = act(&s, &format!("{}/archive", path(&c))).await;
    assert_eq!(a["status"], "archived");
    assert_eq!(get_client(&s, &c).await, a);
    only_event(&s, 1, "clients.archive", &a, json!({"status": "blocked"})).await;

    let account = json!({"clients_id": id, "name": "a", "auth_type": "ip", "ips": ["10.0.0.1"]});
    for (p, body) in [
        ("/api/v1/accounts", account),
        ("/api/v1/charges", json!({"clients_id": id, "amount": "1"})),
        ("/api/v1/payments", json!({"clients_id": id, "amount": "1"})),
        (
            "/api/v1/subscriptions",
            json!({"clients_id": id, "packages_id": pkg["id"]}),
        ),
    ] {
        let (st, e) = s.post(p, body).await;
        assert_eq!(st, 409, "{p}: {e}");
        assert_error(&e, "conflict");
    }
    // Archiving twice, or reactivating, is refused by the state.
    let (st, e) = s.post(&format!("{}/archive", path(&c)), json!({})).await;
    assert_eq!(st, 409, "{e}");
    let (st, e) = s.patch(&path(&c), json!({"status": "active"})).await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(s.events().await.len(), 2);
    assert_eq!(get_client(&s, &c).await, a);
    // Read and sent back with a change, its own status included, it is patched.
    let mut read = get_client(&s, &c).await;
    read["name"] = json!("Acme (gone)");
    let (st, v) = s.patch(&path(&c), read).await;
    assert_eq!((st, &v["name"]), (200, &json!("Acme (gone)")), "{v}");
    for list in ["accounts", "charges", "payments", "subscriptions"] {
        let (_, l) = s.get(&format!("/api/v1/{list}?clients_id={id}")).await;
        assert_eq!(l["total"], 0, "{list}: {l}");
    }
}

/// DELETE answers 409 `conflict`, raises nothing and keeps the client unchanged.
async fn assert_delete_refused(s: &Server, c: &Value) {
    let before = get_client(s, c).await;
    let n = s.events().await.len();
    let (st, e) = s.delete(&path(c)).await;
    assert_eq!(st, 409, "{e}");
    assert_error(&e, "conflict");
    assert_eq!(s.events().await.len(), n);
    assert_eq!(get_client(s, c).await, before);
}

/// DELETE answers the last state, raises `clients.delete` with it, and the client is gone.
async fn assert_delete_ok(s: &Server, c: &Value) {
    let last = get_client(s, c).await;
    let n = s.events().await.len();
    let (st, d) = s.delete(&path(c)).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d, last);
    only_event(s, n, "clients.delete", &last, json!({})).await;
    let (st, e) = s.get(&path(c)).await;
    assert_eq!(st, 404, "{e}");
    let (st, _) = s.delete(&path(c)).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn delete_is_refused_while_the_client_has_dependents() {
    let s = Server::start().await;
    let with_account = client(&s, json!({"name": "A"})).await;
    let body = json!({"clients_id": with_account["id"], "name": "sip", "auth_type": "ip",
        "ips": ["10.0.0.1"]});
    let acc = s.ok("/api/v1/accounts", body, 201).await;
    assert_delete_refused(&s, &with_account).await;
    let (st, _) = s.delete(&format!("/api/v1/accounts/{}", acc["id"])).await;
    assert_eq!(st, 200);
    assert_delete_ok(&s, &with_account).await;

    let with_did = client(&s, json!({"name": "D"})).await;
    let did = s
        .ok("/api/v1/dids", json!({"number": "+15550001111"}), 201)
        .await;
    let did_path = format!("/api/v1/dids/{}", did["id"]);
    let body = json!({"clients_id": with_did["id"]});
    let (st, b) = s.post(&format!("{did_path}/activate"), body).await;
    assert_eq!(st, 200, "{b}");
    assert_delete_refused(&s, &with_did).await;
    act(&s, &format!("{did_path}/block")).await;
    act(&s, &format!("{did_path}/stock")).await;
    assert_delete_ok(&s, &with_did).await;

    let with_tx = client(&s, json!({"name": "T"})).await;
    let body = json!({"clients_id": with_tx["id"], "amount": "3"});
    let ch = s.ok("/api/v1/charges", body, 201).await;
    assert_delete_refused(&s, &with_tx).await;
    let (st, _) = s.delete(&format!("/api/v1/charges/{}", ch["id"])).await;
    assert_eq!(st, 200);
    assert_delete_ok(&s, &with_tx).await;

    // An archived client without dependents can be deleted too.
    let archived = client(&s, json!({"name": "Z"})).await;
    act(&s, &format!("{}/archive", path(&archived))).await;
    assert_delete_ok(&s, &archived).await;
}

#[tokio::test]
async fn delete_waits_only_for_open_subscriptions() {
    let s = Server::start().await;
    let c = client(&s, json!({"name": "S"})).await;
    let pkg = package(&s).await;
    let body = json!({"clients_id": c["id"], "packages_id": pkg["id"],
        "start_dt": "2099-01-01T00:00:00Z"});
    let sub = s.ok("/api/v1/subscriptions", body, 201).await;
    assert_delete_refused(&s, &c).await;
    act(&s, &format!("/api/v1/subscriptions/{}/close", sub["id"])).await;
    assert_delete_ok(&s, &c).await;
}

#[tokio::test]
async fn invalid_clients_are_refused_field_by_field() {
    let s = Server::start().await;
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x", "currency": "usd"}), "currency"),
        (json!({"name": "x", "currency": "EURO"}), "currency"),
        (json!({"name": "x", "email": "not-an-email"}), "email"),
        (json!({"name": "x", "credit": "-1"}), "credit"),
        (json!({"name": "x", "credit": -0.5}), "credit"),
    ] {
        let (st, e) = s.post("/api/v1/clients", body.clone()).await;
        assert_eq!(st, 422, "{body}: {e}");
        assert_error(&e, "validation_failed");
        assert_eq!(fields(&e), [field], "{body}: {e}");
    }
    let body = json!({"name": "", "currency": "usd", "email": "bad", "credit": "-1"});
    let (st, e) = s.post("/api/v1/clients", body).await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(fields(&e), ["credit", "currency", "email", "name"]);
    assert!(s.events().await.is_empty());
    let (_, list) = s.get("/api/v1/clients").await;
    assert_eq!(list["total"], 0);

    // The same rules hold on PATCH, and a refused PATCH changes nothing.
    let c = client(&s, json!({"name": "Acme", "email": "a@acme.io"})).await;
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"email": "nope"}), "email"),
        (json!({"credit": "-0.000001"}), "credit"),
        (json!({"status": "archived"}), "status"),
        (json!({"name": "Fine", "email": "still bad"}), "email"),
    ] {
        let (st, e) = s.patch(&path(&c), body.clone()).await;
        assert_eq!(st, 422, "{body}: {e}");
        assert_error(&e, "validation_failed");
        assert_eq!(fields(&e), [field], "{body}: {e}");
    }
    assert_eq!(get_client(&s, &c).await, c);
    assert_eq!(s.events().await.len(), 1);
}

#[tokio::test]
async fn q_matches_tag_values_not_their_json_syntax() {
    let s = Server::start().await;
    client(&s, json!({"name": "Plain"})).await;
    client(&s, json!({"name": "Tagged", "tags": ["a", "b"]})).await;
    for q in ["%5B", "%5D", "%22", "%22%2C%22"] {
        let (st, list) = s.get(&format!("/api/v1/clients?q={q}")).await;
        assert_eq!(st, 200, "{list}");
        assert_eq!(list["total"], 0, "q={q}: {list}");
    }
    let (_, list) = s.get("/api/v1/clients?q=b").await;
    assert_eq!(names(&list), ["Tagged"]);
}

/// A PATCH refuses what it cannot change (the balance, custom fields, a field the client
/// lacks) instead of ignoring it with a 200; the client read and sent back with a change
/// passes.
#[tokio::test]
async fn a_patch_refuses_what_it_cannot_change() {
    let s = Server::start().await;
    let c = client(&s, json!({"name": "Fixed"})).await;
    let n = s.events().await.len();
    for (body, field) in [
        (json!({"balance": "100"}), "balance"),
        (json!({"custom_fields": {"q": 1}}), "custom_fields"),
        (json!({"name": "Other", "nmae": "typo"}), "nmae"),
        // Another id, a time that is none, another creation time: they passed, with a
        // 200 and nothing changed.
        (json!({"id": 999}), "id"),
        (json!({"id": "abc"}), "id"),
        (json!({"updated_at": "garbage"}), "updated_at"),
        (json!({"created_at": "2001-01-01T00:00:00Z"}), "created_at"),
    ] {
        let (st, v) = s.patch(&path(&c), body).await;
        assert_eq!(st, 422, "{field}: {v}");
        assert_error(&v, "validation_failed");
        assert!(v["error"]["data"]["fields"][field].is_string(), "{v}");
    }
    assert_eq!(get_client(&s, &c).await, c, "nothing changed");
    assert_eq!(s.events().await.len(), n, "no event");
    let mut read = get_client(&s, &c).await;
    read["name"] = json!("Renamed");
    let (st, v) = s.patch(&path(&c), read.clone()).await;
    assert_eq!((st, &v["name"]), (200, &json!("Renamed")), "{v}");
    // Read a moment ago: its `updated_at` is stale, and a time written otherwise is
    // the same time.
    read["name"] = json!("Renamed again");
    let created = read["created_at"].as_str().unwrap().replace('Z', "+00:00");
    read["created_at"] = json!(created);
    let (st, v) = s.patch(&path(&c), read).await;
    assert_eq!((st, &v["name"]), (200, &json!("Renamed again")), "{v}");
}

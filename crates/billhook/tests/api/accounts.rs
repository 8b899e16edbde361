//! Accounts: create, get, list by client, patch, delete, the `clients.accounts.*` events,
//! and the rules of `auth_type`, `ips` and `clients_id`.

use serde_json::{json, Value};

use crate::harness::{assert_error, ids, Server};

fn check_event(e: &Value, events_id: &str, object: &Value, previous: Value) {
    assert_eq!(e["event"]["events_id"], events_id, "{e}");
    assert_eq!(e["event"]["object_id"], object["id"], "{e}");
    assert_eq!(e["data"], *object, "{e}");
    assert_eq!(e["previous"], previous, "{e}");
}

async fn client(s: &Server, name: &str) -> i64 {
    let c = s.ok("/api/v1/clients", json!({"name": name}), 201).await;
    c["id"].as_i64().expect("id")
}

async fn get_account(s: &Server, id: &Value) -> Value {
    let (st, a) = s.get(&format!("/api/v1/accounts/{id}")).await;
    assert_eq!(st, 200, "{a}");
    a
}

fn item_ids(list: &Value) -> Vec<i64> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["id"].as_i64().expect("id"))
        .collect()
}

/// Asserts a 422 whose `fields` are exactly `expected`.
fn assert_fields(st: u16, e: &Value, expected: &[&str]) {
    assert_eq!(st, 422, "{e}");
    assert_error(e, "validation_failed");
    let mut got: Vec<&str> = e["error"]["data"]["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no fields: {e}"))
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    assert_eq!(got, expected, "{e}");
}

#[tokio::test]
async fn create_get_and_list_by_client() {
    let s = Server::start().await;
    let a = client(&s, "A").await;
    let b = client(&s, "B").await;
    let trunk = s
        .ok(
            "/api/v1/accounts",
            json!({"clients_id": a, "name": "trunk", "auth_type": "ip",
                   "ips": ["10.0.0.1", "192.168.0.0/24", "2001:db8::1"]}),
            201,
        )
        .await;
    assert!(trunk["id"].is_i64());
    assert_eq!(trunk["clients_id"], a);
    assert_eq!(trunk["name"], "trunk");
    assert_eq!(trunk["auth_type"], "ip");
    assert_eq!(
        trunk["ips"],
        json!(["10.0.0.1", "192.168.0.0/24", "2001:db8::1"])
    );
    assert_eq!(trunk["login"], Value::Null);
    assert_eq!(trunk["password"], Value::Null);
    assert_eq!(trunk["enabled"], true);
    assert_eq!(trunk["created_at"], trunk["updated_at"]);
    let sip = s
        .ok(
            "/api/v1/accounts",
            json!({"clients_id": a, "name": "sip", "auth_type": "name", "login": "u1",
                   "password": "p1", "enabled": false}),
            201,
        )
        .await;
    assert_eq!(sip["login"], "u1");
    assert_eq!(sip["password"], "p1");
    assert_eq!(sip["enabled"], false);
    assert_eq!(sip["ips"], json!([]));
    let ani = s
        .ok(
            "/api/v1/accounts",
            json!({"clients_id": b, "name": "cli", "auth_type": "ani", "login": "15551234"}),
            201,
        )
        .await;
    for acc in [&trunk, &sip, &ani] {
        assert_eq!(&get_account(&s, &acc["id"]).await, acc);
    }

    let id = |v: &Value| v["id"].as_i64().unwrap();
    for (query, expected, total) in [
        (format!("clients_id={a}"), vec![id(&sip), id(&trunk)], 2),
        (format!("clients_id={b}"), vec![id(&ani)], 1),
        ("clients_id=999".to_string(), vec![], 0),
        (String::new(), vec![id(&ani), id(&sip), id(&trunk)], 3),
        ("limit=1&offset=1".to_string(), vec![id(&sip)], 3),
        (format!("clients_id={a}&limit=1"), vec![id(&sip)], 2),
    ] {
        let (st, list) = s.get(&format!("/api/v1/accounts?{query}")).await;
        assert_eq!(st, 200, "{query}: {list}");
        assert_eq!(item_ids(&list), expected, "{query}");
        assert_eq!(list["total"], total, "{query}");
    }
    let (_, list) = s.get(&format!("/api/v1/accounts?clients_id={a}")).await;
    assert_eq!(list["items"][0], sip);

    let events = s.events_since(2).await;
    assert_eq!(ids(&events), ["clients.accounts.create"; 3]);
    check_event(&events[0], "clients.accounts.create", &trunk, json!({}));
    check_event(&events[1], "clients.accounts.create", &sip, json!({}));
    check_event(&events[2], "clients.accounts.create", &ani, json!({}));
}

#[tokio::test]
async fn patch_raises_update_with_previous_and_keeps_clients_id() {
    let s = Server::start().await;
    let a = client(&s, "A").await;
    let other = client(&s, "Other").await;
    let acc = s
        .ok(
            "/api/v1/accounts",
            json!({"clients_id": a, "name": "trunk", "auth_type": "ip", "ips": ["10.0.0.1"]}),
            201,
        )
        .await;
    let path = format!("/api/v1/accounts/{}", acc["id"]);
    let n = s.events().await.len();

    let (st, u) = s
        .patch(&path, json!({"name": "trunk-2", "enabled": false}))
        .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["name"], "trunk-2");
    assert_eq!(u["enabled"], false);
    assert_eq!(u["ips"], json!(["10.0.0.1"]));
    assert_eq!(u["created_at"], acc["created_at"]);
    assert_eq!(get_account(&s, &acc["id"]).await, u);

    let (st, v) = s
        .patch(
            &path,
            json!({"auth_type": "name", "login": "bob", "password": "s3cret"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["auth_type"], "name");
    assert_eq!(get_account(&s, &acc["id"]).await, v);

    let ev = s.events_since(n).await;
    assert_eq!(ev.len(), 2);
    check_event(
        &ev[0],
        "clients.accounts.update",
        &u,
        json!({"name": "trunk", "enabled": true}),
    );
    check_event(
        &ev[1],
        "clients.accounts.update",
        &v,
        json!({"auth_type": "ip", "login": null, "password": null}),
    );

    // The same values (including the same clients_id) change nothing: no event.
    let (st, same) = s
        .patch(
            &path,
            json!({"clients_id": a, "name": "trunk-2", "login": "bob"}),
        )
        .await;
    assert_eq!(st, 200, "{same}");
    assert_eq!(same, v);
    // Another client is refused.
    let (st, e) = s
        .patch(&path, json!({"clients_id": other, "name": "moved"}))
        .await;
    assert_fields(st, &e, &["clients_id"]);
    assert_eq!(get_account(&s, &acc["id"]).await, v);
    assert_eq!(s.events().await.len(), n + 2);
}

#[tokio::test]
async fn delete_raises_delete_with_last_state() {
    let s = Server::start().await;
    let a = client(&s, "A").await;
    let acc = s
        .ok(
            "/api/v1/accounts",
            json!({"clients_id": a, "name": "trunk", "auth_type": "ip", "ips": ["10.0.0.1"]}),
            201,
        )
        .await;
    let path = format!("/api/v1/accounts/{}", acc["id"]);
    let (st, last) = s.patch(&path, json!({"name": "final"})).await;
    assert_eq!(st, 200);
    let n = s.events().await.len();
    let (st, d) = s.delete(&path).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d, last);
    let ev = s.events_since(n).await;
    assert_eq!(ev.len(), 1);
    check_event(&ev[0], "clients.accounts.delete", &last, json!({}));

    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"name": "x"}))),
        ("DELETE", None),
    ] {
        let (st, e) = s.call(method, &path, body).await;
        assert_eq!(st, 404, "{method}: {e}");
        assert_error(&e, "not_found");
    }
    let (_, list) = s.get(&format!("/api/v1/accounts?clients_id={a}")).await;
    assert_eq!(list["total"], 0);
    assert_eq!(s.events().await.len(), n + 1);
}

#[tokio::test]
async fn auth_type_and_ips_rules_are_enforced() {
    let s = Server::start().await;
    let a = client(&s, "A").await;
    let cases = [
        (json!({"auth_type": "ip"}), vec!["ips"]),
        (json!({"auth_type": "ip", "ips": []}), vec!["ips"]),
        (json!({"auth_type": "name"}), vec!["login", "password"]),
        (json!({"auth_type": "name", "login": "u"}), vec!["password"]),
        (json!({"auth_type": "name", "password": "p"}), vec!["login"]),
        (
            json!({"auth_type": "ip", "ips": ["999.1.1.1"]}),
            vec!["ips"],
        ),
        (
            json!({"auth_type": "ip", "ips": ["10.0.0.1/33"]}),
            vec!["ips"],
        ),
        (json!({"auth_type": "ip", "ips": ["10.0.0"]}), vec!["ips"]),
        (
            json!({"auth_type": "ip", "ips": ["10.0.0.1", "not-an-ip"]}),
            vec!["ips"],
        ),
        (json!({"auth_type": "ip", "ips": ["::g"]}), vec!["ips"]),
    ];
    for (extra, fields) in cases {
        let mut body = json!({"clients_id": a, "name": "acc"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (st, e) = s.post("/api/v1/accounts", body.clone()).await;
        assert_fields(st, &e, &fields);
    }
    let ip = json!({"auth_type": "ip", "ips": ["10.0.0.1"]});
    for (body, fields) in [
        (
            json!({"name": "x", "auth_type": "ip", "ips": ["10.0.0.1"]}),
            vec!["clients_id"],
        ),
        (
            json!({"clients_id": a, "name": "", "auth_type": "ip", "ips": ["10.0.0.1"]}),
            vec!["name"],
        ),
        (
            json!({"clients_id": 4242, "name": "x", "auth_type": "ip", "ips": ["10.0.0.1"]}),
            vec!["clients_id"],
        ),
    ] {
        let (st, e) = s.post("/api/v1/accounts", body.clone()).await;
        assert_fields(st, &e, &fields);
    }
    let (_, list) = s.get("/api/v1/accounts").await;
    assert_eq!(list["total"], 0, "{list}");
    assert_eq!(s.events().await.len(), 1);

    // The same rules on PATCH: a refused PATCH changes nothing and raises nothing.
    let mut body = ip.clone();
    body["clients_id"] = json!(a);
    body["name"] = json!("trunk");
    let acc = s.ok("/api/v1/accounts", body, 201).await;
    let path = format!("/api/v1/accounts/{}", acc["id"]);
    for (patch, fields) in [
        (json!({"ips": []}), vec!["ips"]),
        (json!({"ips": ["300.0.0.1"]}), vec!["ips"]),
        (json!({"auth_type": "name"}), vec!["login", "password"]),
        (json!({"auth_type": "name", "login": "u"}), vec!["password"]),
        (json!({"name": "  "}), vec!["name"]),
    ] {
        let (st, e) = s.patch(&path, patch.clone()).await;
        assert_fields(st, &e, &fields);
    }
    assert_eq!(get_account(&s, &acc["id"]).await, acc);
    assert_eq!(s.events().await.len(), 2);
}

/// A PATCH refuses a field the account lacks instead of ignoring it with a 200; the
/// account read and sent back with a change passes.
#[tokio::test]
async fn a_patch_refuses_a_field_the_account_lacks() {
    let s = Server::start().await;
    let a = client(&s, "A").await;
    let acc = s
        .ok(
            "/api/v1/accounts",
            json!({"clients_id": a, "name": "trunk", "auth_type": "ip", "ips": ["10.0.0.1"]}),
            201,
        )
        .await;
    let path = format!("/api/v1/accounts/{}", acc["id"]);
    let n = s.events().await.len();
    let (st, v) = s.patch(&path, json!({"name": "x", "nmae": "typo"})).await;
    assert_eq!(st, 422, "{v}");
    assert_error(&v, "validation_failed");
    assert!(v["error"]["data"]["fields"]["nmae"].is_string(), "{v}");
    assert_eq!(get_account(&s, &acc["id"]).await, acc, "nothing changed");
    assert_eq!(s.events().await.len(), n, "no event");
    let mut read = get_account(&s, &acc["id"]).await;
    read["name"] = json!("trunk-2");
    let (st, v) = s.patch(&path, read).await;
    assert_eq!((st, &v["name"]), (200, &json!("trunk-2")), "{v}");
}

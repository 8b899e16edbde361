//! Charges and payments: routes, `accounting.*` events, amounts, and the client's balance
//! with its `clients.balance_zero` / `clients.balance_notzero` events.

use serde_json::{json, Value};

use crate::harness::{assert_error, Server};

fn check_event(e: &Value, events_id: &str, object: &Value, previous: Value) {
    assert_eq!(e["event"]["events_id"], events_id, "{e}");
    assert_eq!(e["event"]["object_id"], object["id"], "{e}");
    assert_eq!(e["data"], *object, "{e}");
    assert_eq!(e["previous"], previous, "{e}");
}

async fn client(s: &Server) -> Value {
    s.ok("/api/v1/clients", json!({"name": "Acme"}), 201).await
}

async fn get(s: &Server, path: &str) -> Value {
    let (st, v) = s.get(path).await;
    assert_eq!(st, 200, "GET {path}: {v}");
    v
}

/// What one request should have raised: its own event, then maybe a balance event.
struct Step<'a> {
    event: &'a str,
    previous: Value,
    /// `Some((balance event, old balance))` when the balance crossed zero.
    crossing: Option<(&'a str, &'a str)>,
    /// The client's balance afterwards.
    balance: &'a str,
}

/// Checks the events raised since `n` and the client's balance against `step`.
async fn check_step(s: &Server, n: usize, client_id: &Value, object: &Value, step: Step<'_>) {
    let c = get(s, &format!("/api/v1/clients/{client_id}")).await;
    assert_eq!(c["balance"], step.balance, "{c}");
    let ev = s.events_since(n).await;
    assert_eq!(ev.len(), 1 + usize::from(step.crossing.is_some()), "{ev:?}");
    check_event(&ev[0], step.event, object, step.previous);
    if let Some((balance_event, old)) = step.crossing {
        check_event(&ev[1], balance_event, &c, json!({"balance": old}));
    }
}

async fn tx(s: &Server, kind: &str, client_id: &Value, amount: Value) -> Value {
    let body = json!({"clients_id": client_id, "amount": amount});
    s.ok(&format!("/api/v1/{kind}"), body, 201).await
}

fn fields(e: &Value) -> Vec<String> {
    e["error"]["data"]["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no fields: {e}"))
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn create_get_and_list_charges_and_payments() {
    let s = Server::start().await;
    let c = client(&s).await;
    let other = client(&s).await;
    let charge = s
        .ok(
            "/api/v1/charges",
            json!({"clients_id": c["id"], "amount": "10.50", "notes": "setup fee",
                   "dt": "2026-01-02T03:04:05Z"}),
            201,
        )
        .await;
    assert!(charge["id"].is_i64());
    assert_eq!(charge["clients_id"], c["id"]);
    assert_eq!(charge["amount"], "10.5");
    assert_eq!(charge["notes"], "setup fee");
    assert!(charge["dt"]
        .as_str()
        .unwrap()
        .starts_with("2026-01-02T03:04:05"));
    let pay = tx(&s, "payments", &c["id"], json!(20)).await;
    assert_eq!(pay["amount"], "20");
    assert_eq!(pay["notes"], Value::Null);
    assert!(pay["dt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let small = tx(&s, "payments", &c["id"], json!(0.1)).await;
    assert_eq!(small["amount"], "0.1");
    let tiny = tx(&s, "charges", &c["id"], json!("0.000001")).await;
    assert_eq!(tiny["amount"], "0.000001");
    let foreign = tx(&s, "charges", &other["id"], json!("1")).await;

    assert_eq!(
        get(&s, &format!("/api/v1/charges/{}", charge["id"])).await,
        charge
    );
    assert_eq!(
        get(&s, &format!("/api/v1/payments/{}", pay["id"])).await,
        pay
    );
    // A charge is not a payment, and the other way round.
    let (st, e) = s.get(&format!("/api/v1/payments/{}", charge["id"])).await;
    assert_eq!(st, 404, "{e}");
    assert_error(&e, "not_found");
    let (st, _) = s.get(&format!("/api/v1/charges/{}", pay["id"])).await;
    assert_eq!(st, 404);

    let list = get(&s, &format!("/api/v1/charges?clients_id={}", c["id"])).await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"], json!([tiny, charge]));
    let list = get(&s, &format!("/api/v1/payments?clients_id={}", c["id"])).await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"], json!([small, pay]));
    let list = get(&s, "/api/v1/charges").await;
    assert_eq!(list["total"], 3);
    assert_eq!(list["items"][0], foreign);
    let list = get(&s, "/api/v1/charges?limit=1&offset=1").await;
    assert_eq!(list["items"], json!([tiny]));
    assert_eq!(list["total"], 3);

    let c = get(&s, &format!("/api/v1/clients/{}", c["id"])).await;
    assert_eq!(c["balance"], "9.599999");
}

#[tokio::test]
async fn invalid_amounts_and_references_are_refused() {
    let s = Server::start().await;
    let c = client(&s).await;
    let id = &c["id"];
    for kind in ["charges", "payments"] {
        for (body, field) in [
            (json!({"clients_id": id, "amount": "0"}), "amount"),
            (json!({"clients_id": id, "amount": 0}), "amount"),
            (json!({"clients_id": id, "amount": "-5"}), "amount"),
            (json!({"clients_id": id, "amount": -5}), "amount"),
            (json!({"clients_id": id, "amount": "-0.000001"}), "amount"),
            (json!({"clients_id": id}), "amount"),
            (json!({"amount": "5"}), "clients_id"),
            (json!({"clients_id": 4242, "amount": "5"}), "clients_id"),
        ] {
            let (st, e) = s.post(&format!("/api/v1/{kind}"), body.clone()).await;
            assert_eq!(st, 422, "{kind} {body}: {e}");
            assert_error(&e, "validation_failed");
            assert_eq!(fields(&e), [field], "{kind} {body}: {e}");
        }
    }
    assert_eq!(s.events().await.len(), 1);
    assert_eq!(get(&s, &format!("/api/v1/clients/{id}")).await, c);
    assert_eq!(get(&s, "/api/v1/charges").await["total"], 0);
    assert_eq!(get(&s, "/api/v1/payments").await["total"], 0);

    // A refused PATCH leaves the transaction and the balance alone.
    let p = tx(&s, "payments", id, json!("5")).await;
    let n = s.events().await.len();
    let after = get(&s, &format!("/api/v1/clients/{id}")).await;
    for amount in [json!("0"), json!(-1), json!("-0.5")] {
        let (st, e) = s
            .patch(
                &format!("/api/v1/payments/{}", p["id"]),
                json!({"amount": amount}),
            )
            .await;
        assert_eq!(st, 422, "{amount}: {e}");
        assert_eq!(fields(&e), ["amount"]);
    }
    assert_eq!(get(&s, &format!("/api/v1/payments/{}", p["id"])).await, p);
    assert_eq!(get(&s, &format!("/api/v1/clients/{id}")).await, after);
    assert_eq!(s.events().await.len(), n);
}

#[tokio::test]
async fn more_than_six_decimals_is_a_validation_error() {
    let s = Server::start().await;
    let c = client(&s).await;
    for kind in ["charges", "payments"] {
        for amount in [json!("1.1234567"), json!(1.1234567), json!("0.0000001")] {
            let body = json!({"clients_id": c["id"], "amount": amount});
            let (st, e) = s.post(&format!("/api/v1/{kind}"), body).await;
            assert_eq!(st, 422, "{kind} {amount}: {e}");
            assert_error(&e, "validation_failed");
            assert_eq!(fields(&e), ["amount"], "{e}");
        }
    }
    assert_eq!(s.events().await.len(), 1);
    assert_eq!(get(&s, "/api/v1/charges").await["total"], 0);
}

#[tokio::test]
async fn balance_events_follow_their_transaction() {
    let s = Server::start().await;
    let c = client(&s).await;
    let id = &c["id"];
    // (kind, amount, own event, crossing, balance after)
    let steps = [
        (
            "payments",
            "10",
            Some(("clients.balance_notzero", "0")),
            "10",
        ),
        ("charges", "4", None, "6"),
        ("charges", "6", Some(("clients.balance_zero", "6")), "0"),
        ("charges", "2.5", None, "-2.5"),
        ("payments", "2.5", None, "0"),
        (
            "payments",
            "0.000001",
            Some(("clients.balance_notzero", "0")),
            "0.000001",
        ),
        (
            "charges",
            "100",
            Some(("clients.balance_zero", "0.000001")),
            "-99.999999",
        ),
        (
            "payments",
            "200.5",
            Some(("clients.balance_notzero", "-99.999999")),
            "100.500001",
        ),
    ];
    for (kind, amount, crossing, balance) in steps {
        let n = s.events().await.len();
        let t = tx(&s, kind, id, json!(amount)).await;
        let event = format!("accounting.{kind}.create");
        let step = Step {
            event: &event,
            previous: json!({}),
            crossing,
            balance,
        };
        check_step(&s, n, id, &t, step).await;
    }
}

#[tokio::test]
async fn patch_and_delete_move_the_balance_back() {
    let s = Server::start().await;
    let c = client(&s).await;
    let id = &c["id"];
    let pay = tx(&s, "payments", id, json!("10")).await;
    let charge = tx(&s, "charges", id, json!(3)).await;
    let cpath = format!("/api/v1/charges/{}", charge["id"]);
    let ppath = format!("/api/v1/payments/{}", pay["id"]);

    // (path, patch or None for DELETE, previous, crossing, balance after)
    let steps = [
        (
            &cpath,
            Some(json!({"amount": "12"})),
            json!({"amount": "3"}),
            Some(("clients.balance_zero", "7")),
            "-2",
        ),
        (
            &cpath,
            Some(json!({"notes": "corrected"})),
            json!({"notes": null}),
            None,
            "-2",
        ),
        (
            &cpath,
            None,
            json!({}),
            Some(("clients.balance_notzero", "-2")),
            "10",
        ),
        (
            &ppath,
            Some(json!({"amount": 4})),
            json!({"amount": "10"}),
            None,
            "4",
        ),
        (
            &ppath,
            None,
            json!({}),
            Some(("clients.balance_zero", "4")),
            "0",
        ),
    ];
    for (path, patch, previous, crossing, balance) in steps {
        let n = s.events().await.len();
        let before = get(&s, path).await;
        let kind = if path.contains("charges") {
            "charges"
        } else {
            "payments"
        };
        let (st, t) = match &patch {
            Some(p) => s.patch(path, p.clone()).await,
            None => s.delete(path).await,
        };
        assert_eq!(st, 200, "{path}: {t}");
        let event = match &patch {
            Some(p) => {
                for (k, v) in p.as_object().unwrap() {
                    let want = if v.is_number() {
                        json!(v.to_string())
                    } else {
                        v.clone()
                    };
                    assert_eq!(t[k], want, "{t}");
                }
                assert_eq!(get(&s, path).await, t);
                format!("accounting.{kind}.update")
            }
            None => {
                assert_eq!(t, before, "DELETE returns the last state");
                let (st, _) = s.get(path).await;
                assert_eq!(st, 404);
                format!("accounting.{kind}.delete")
            }
        };
        let step = Step {
            event: &event,
            previous,
            crossing,
            balance,
        };
        check_step(&s, n, id, &t, step).await;
    }

    // The same values again change nothing; deleted or unknown ids are 404.
    let other = tx(&s, "charges", id, json!("1")).await;
    let opath = format!("/api/v1/charges/{}", other["id"]);
    let n = s.events().await.len();
    let (st, same) = s.patch(&opath, json!({"amount": "1.000000"})).await;
    assert_eq!(st, 200, "{same}");
    assert_eq!(same, other);
    assert_eq!(s.events().await.len(), n);
    for (method, path) in [
        ("PATCH", &cpath),
        ("DELETE", &cpath),
        ("PATCH", &ppath),
        ("DELETE", &ppath),
        ("PATCH", &format!("/api/v1/payments/{}", other["id"])),
        ("DELETE", &format!("/api/v1/payments/{}", other["id"])),
        ("DELETE", &"/api/v1/charges/4242".to_string()),
    ] {
        let (st, e) = s.call(method, path, Some(json!({"amount": "1"}))).await;
        assert_eq!(st, 404, "{method} {path}: {e}");
        assert_error(&e, "not_found");
    }
    assert_eq!(s.events().await.len(), n);
    assert_eq!(get(&s, &opath).await, other);
    let c = get(&s, &format!("/api/v1/clients/{id}")).await;
    assert_eq!(c["balance"], "-1");
}

/// A PATCH refuses what it cannot change (the client, a field the object lacks) instead
/// of ignoring it with a 200; the object read and sent back with a change passes.
#[tokio::test]
async fn a_patch_refuses_what_it_cannot_change() {
    let s = Server::start().await;
    let (a, b) = (client(&s).await, client(&s).await);
    let p = tx(&s, "payments", &a["id"], json!("5")).await;
    let path = format!("/api/v1/payments/{}", p["id"]);
    let n = s.events().await.len();
    for (body, field) in [
        (json!({"clients_id": b["id"]}), "clients_id"),
        (json!({"amount": "6", "colour": "blue"}), "colour"),
    ] {
        let (st, v) = s.patch(&path, body).await;
        assert_eq!(st, 422, "{field}: {v}");
        assert_error(&v, "validation_failed");
        assert!(v["error"]["data"]["fields"][field].is_string(), "{v}");
    }
    assert_eq!(get(&s, &path).await, p, "nothing changed");
    assert_eq!(s.events().await.len(), n, "no event");
    let mut read = get(&s, &path).await;
    read["notes"] = json!("sent back");
    let (st, v) = s.patch(&path, read).await;
    assert_eq!((st, &v["notes"]), (200, &json!("sent back")), "{v}");
}

//! DIDs: the whole transition table, the end of holds by the scheduler, number
//! uniqueness, E.164 validation, updates and list filters.

use serde_json::{json, Value};

use crate::harness::{assert_error, ids, wait_for, Server};

const DIDS: &str = "/api/v1/dids";
const STATUSES: [&str; 6] = ["stock", "reserved", "active", "blocked", "hold", "archived"];
/// (action, status it leads to, statuses it is allowed from) — the spec's table.
const TABLE: [(&str, &str, &[&str]); 6] = [
    (
        "reserve",
        "reserved",
        &["stock", "hold", "blocked", "active"],
    ),
    ("activate", "active", &["stock", "reserved"]),
    ("block", "blocked", &["active"]),
    ("hold", "hold", &["active", "blocked"]),
    ("stock", "stock", &["reserved", "hold", "blocked"]),
    ("archive", "archived", &["stock", "reserved", "hold"]),
];

/// Old values of the fields that differ (`updated_at` aside): the expected `previous`.
fn diff(old: &Value, new: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in old.as_object().expect("object") {
        if k != "updated_at" && new.get(k) != Some(v) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

async fn client(s: &Server, name: &str) -> i64 {
    let c = s.ok("/api/v1/clients", json!({"name": name}), 201).await;
    c["id"].as_i64().expect("id")
}

async fn account(s: &Server, client: i64, name: &str) -> i64 {
    let body = json!({"clients_id": client, "name": name, "auth_type": "name",
                      "login": name, "password": "secret-pass-1"});
    let a = s.ok("/api/v1/accounts", body, 201).await;
    a["id"].as_i64().expect("id")
}

async fn get(s: &Server, did: &Value) -> Value {
    let (st, v) = s.get(&format!("{DIDS}/{}", did["id"])).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn act(s: &Server, did: &Value, action: &str, body: Value) -> (u16, Value) {
    s.post(&format!("{DIDS}/{}/{action}", did["id"]), body)
        .await
}

async fn patch(s: &Server, did: &Value, body: Value) -> (u16, Value) {
    s.patch(&format!("{DIDS}/{}", did["id"]), body).await
}

/// Asserts a 422 `validation_failed` naming `field`.
fn invalid(st: u16, v: &Value, field: &str) {
    assert_eq!(st, 422, "{field}: {v}");
    assert_error(v, "validation_failed");
    assert!(v["error"]["data"]["fields"][field].is_string(), "{v}");
}

/// True when both fields are null.
fn unset(v: &Value, a: &str, b: &str) -> bool {
    v[a].is_null() && v[b].is_null()
}

async fn step(s: &Server, did: &Value, action: &str, body: Value) -> Value {
    let (st, v) = act(s, did, action, body).await;
    assert_eq!(st, 200, "{action}: {v}");
    v
}

/// A new DID with `number` in `status`.
async fn did_in(s: &Server, status: &str, client: i64, number: &str) -> Value {
    let create = |body: Value| async move { s.ok(DIDS, body, 201).await };
    let d = match status {
        "stock" | "archived" => create(json!({"number": number})).await,
        "reserved" => create(json!({"number": number, "status": "reserved"})).await,
        _ => create(json!({"number": number, "status": "active", "clients_id": client})).await,
    };
    let d = match status {
        "archived" => step(s, &d, "archive", json!({})).await,
        "blocked" => step(s, &d, "block", json!({})).await,
        "hold" => step(s, &d, "hold", json!({"hold_days": 30})).await,
        _ => d,
    };
    assert_eq!(d["status"], status, "{d}");
    d
}

/// The numbers a list query answers, and its total.
async fn numbers(s: &Server, query: &str) -> (Vec<String>, i64) {
    let (st, v) = s.get(&format!("{DIDS}?{query}")).await;
    assert_eq!(st, 200, "{query}: {v}");
    let items = v["items"].as_array().expect("items").iter();
    let numbers = items.map(|d| d["number"].as_str().expect("number").into());
    (numbers.collect(), v["total"].as_i64().expect("total"))
}

#[tokio::test]
async fn every_action_from_every_status_follows_the_table() {
    let s = Server::start().await;
    let c = client(&s, "Numbers Inc").await;
    let mut i = 0;
    for (action, target, allowed) in TABLE {
        for from in STATUSES {
            i += 1;
            let old = did_in(&s, from, c, &format!("+1415555{i:04}")).await;
            let body = match action {
                "activate" => json!({"clients_id": c}),
                "hold" => json!({"hold_days": 30}),
                _ => json!({}),
            };
            let n = s.events().await.len();
            let (st, new) = act(&s, &old, action, body).await;
            let ev = s.events_since(n).await;
            let case = format!("{action} from {from}: {new}");
            if !allowed.contains(&from) {
                assert_eq!(st, 409, "{case}");
                assert_error(&new, "invalid_transition");
                assert!(ev.is_empty(), "{case}: {ev:?}");
                assert_eq!(get(&s, &old).await, old, "{case}");
                continue;
            }
            assert_eq!(st, 200, "{case}");
            assert_eq!(new["status"], target, "{case}");
            assert_eq!(get(&s, &new).await, new, "{case}");
            assert_eq!(ids(&ev), [format!("dids.{action}")], "{case}");
            assert_eq!(ev[0]["event"]["object_id"], old["id"], "{case}");
            assert_eq!(ev[0]["data"], new, "{case}");
            assert_eq!(ev[0]["previous"], diff(&old, &new), "{case}");
            assert_eq!(ev[0]["previous"]["status"], from, "{case}");
            if matches!(action, "stock" | "archive") {
                assert!(unset(&new, "clients_id", "accounts_id"), "{case}");
            }
            if action == "activate" {
                assert_eq!(new["clients_id"], c, "{case}");
            }
            if action == "hold" {
                assert!(new["hold_until"].is_string(), "{case}");
                assert_eq!(new["status_after_hold"], "stock", "{case}");
            } else {
                assert!(unset(&new, "hold_until", "status_after_hold"), "{case}");
            }
        }
    }
}

#[tokio::test]
async fn the_scheduler_ends_holds_into_each_status_after_hold() {
    let s = Server::start().await;
    let c = client(&s, "Holder").await;
    let a = account(&s, c, "holder1").await;
    let afters = [
        ("stock", "stock"),
        ("reserved", "reserve"),
        ("active", "activate"),
        ("blocked", "block"),
        ("archived", "archive"),
    ];
    let mut held = vec![];
    for (i, (after, _)) in afters.iter().enumerate() {
        let number = format!("+4930123{i:04}");
        let body = json!({"number": number, "status": "active", "clients_id": c, "accounts_id": a});
        let d = s.ok(DIDS, body, 201).await;
        let hold = json!({"hold_for": "PT1S", "status_after_hold": after});
        let h = step(&s, &d, "hold", hold).await;
        assert_eq!(
            (h["status"].as_str(), &h["status_after_hold"]),
            (Some("hold"), &json!(after))
        );
        assert!(h["hold_until"].is_string(), "{h}");
        held.push(h);
    }
    for (h, (after, action)) in held.iter().zip(afters) {
        let done = wait_for(15, &format!("hold to end in {after}"), || async {
            let v = get(&s, h).await;
            (v["status"] == after).then_some(v)
        })
        .await;
        let path = format!(
            "/api/v1/events?events_id=dids.{action}&object_id={}",
            h["id"]
        );
        let (_, ev) = s.get(&path).await;
        assert_eq!(ev["total"], 1, "{after}: {ev}");
        let e = &ev["items"][0];
        assert_eq!(e["data"], done, "{after}");
        assert_eq!(e["previous"], diff(h, &done), "{after}");
        assert_eq!(e["previous"]["status"], "hold");
        assert_eq!(e["previous"]["hold_until"], h["hold_until"]);
        let (dt, until) = (e["event"]["dt"].as_str(), h["hold_until"].as_str());
        assert!(dt >= until, "ended before {until:?}: {e}");
        assert!(unset(&done, "hold_until", "status_after_hold"), "{done}");
        if matches!(after, "stock" | "archived") {
            assert!(unset(&done, "clients_id", "accounts_id"), "{done}");
        }
        if matches!(after, "active" | "blocked") {
            assert_eq!(
                (done["clients_id"].as_i64(), done["accounts_id"].as_i64()),
                (Some(c), Some(a))
            );
        }
    }
}

#[tokio::test]
async fn hold_takes_an_explicit_end_and_defaults_to_stock() {
    let s = Server::start().await;
    let c = client(&s, "Holder").await;
    let d = did_in(&s, "active", c, "+442071234567").await;
    // Any RFC 3339 time is taken and given back in UTC with six fractional digits.
    let until = "2099-01-02T03:04:05.678901Z";
    let h = step(
        &s,
        &d,
        "hold",
        json!({"hold_until": "2099-01-02T05:04:05.678901+02:00"}),
    )
    .await;
    assert_eq!(
        (h["hold_until"].as_str(), h["status_after_hold"].as_str()),
        (Some(until), Some("stock"))
    );
    let (st, v) = act(&s, &h, "hold", json!({})).await;
    assert_eq!(st, 409, "hold from hold: {v}");
    assert_error(&v, "invalid_transition");
    let back = step(&s, &h, "stock", json!({})).await;
    assert!(unset(&back, "hold_until", "status_after_hold"), "{back}");
}

#[tokio::test]
async fn a_number_is_unique_among_live_dids_and_reusable_once_archived() {
    let s = Server::start().await;
    let number = "+14155550100";
    let first = s.ok(DIDS, json!({"number": number}), 201).await;
    let other = s.ok(DIDS, json!({"number": "+14155550101"}), 201).await;
    let n = s.events().await.len();
    for status in ["stock", "reserved"] {
        let (st, v) = s
            .post(DIDS, json!({"number": number, "status": status}))
            .await;
        assert_eq!(st, 409, "{v}");
        assert_error(&v, "conflict");
    }
    let (st, v) = patch(&s, &other, json!({"number": number})).await;
    assert_eq!(st, 409, "{v}");
    assert_error(&v, "conflict");
    assert_eq!(get(&s, &other).await, other);
    assert_eq!(s.events().await.len(), n);

    let archived = step(&s, &first, "archive", json!({})).await;
    let again = s.ok(DIDS, json!({"number": number}), 201).await;
    let ev = s.events_since(n).await;
    assert_eq!(ids(&ev), ["dids.archive", "dids.create"]);
    assert_eq!((&ev[1]["data"], &ev[1]["previous"]), (&again, &json!({})));
    // An archived DID is frozen, and several archived ones may share a number.
    let (st, v) = patch(&s, &archived, json!({"number": "+14155550199"})).await;
    assert_eq!(st, 409, "{v}");
    assert_error(&v, "invalid_transition");
    assert_eq!(get(&s, &archived).await, archived);
    step(&s, &again, "archive", json!({})).await;
    s.ok(DIDS, json!({"number": number}), 201).await;
    assert_eq!(numbers(&s, "q=4155550100").await.1, 3);

    // Racing creates of one number: exactly one wins, the others are conflicts.
    let n = s.events().await.len();
    let race = (0..8).map(|_| s.post(DIDS, json!({"number": "+14155550777"})));
    let mut codes: Vec<u16> = futures::future::join_all(race)
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, [201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(ids(&s.events_since(n).await), ["dids.create"]);

    // Racing renumberings of several DIDs to one number: exactly one wins.
    let mut racers = vec![];
    for i in 0..6 {
        racers.push(
            s.ok(DIDS, json!({"number": format!("+1415555066{i}")}), 201)
                .await,
        );
    }
    let n = s.events().await.len();
    let race = racers
        .iter()
        .map(|d| patch(&s, d, json!({"number": "+14155550888"})));
    let mut codes: Vec<u16> = futures::future::join_all(race)
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 409, 409, 409, 409, 409]);
    assert_eq!(ids(&s.events_since(n).await), ["dids.update"]);
    assert_eq!(numbers(&s, "q=4155550888").await.1, 1);
}

#[tokio::test]
async fn numbers_must_be_e164() {
    let s = Server::start().await;
    let bad = [
        "14155550123",
        "+0123456",
        "+1",
        "+1234567890123456",
        "+1415abc0123",
        "",
        "+",
    ];
    for number in bad.into_iter().chain(["+1 415 555"]) {
        let (st, v) = s.post(DIDS, json!({"number": number})).await;
        invalid(st, &v, "number");
    }
    let (st, v) = s.post(DIDS, json!({})).await;
    invalid(st, &v, "number");
    assert!(s.events().await.is_empty());
    let ok = s.ok(DIDS, json!({"number": "+123456789012345"}), 201).await;
    s.ok(DIDS, json!({"number": "+12"}), 201).await;
    let (st, v) = patch(&s, &ok, json!({"number": "0049301234"})).await;
    invalid(st, &v, "number");
    assert_eq!(get(&s, &ok).await, ok);
    assert_eq!(ids(&s.events().await), ["dids.create", "dids.create"]);
}

#[tokio::test]
async fn updates_clients_and_accounts_are_checked() {
    let s = Server::start().await;
    let (c1, c2) = (client(&s, "One").await, client(&s, "Two").await);
    let (a1, a2) = (account(&s, c1, "one1").await, account(&s, c2, "two1").await);
    let d = s.ok(DIDS, json!({"number": "+33123456789"}), 201).await;
    let n = s.events().await.len();
    let (st, v) = act(&s, &d, "activate", json!({})).await;
    invalid(st, &v, "clients_id");
    let (st, v) = act(
        &s,
        &d,
        "activate",
        json!({"clients_id": c1, "accounts_id": a2}),
    )
    .await;
    invalid(st, &v, "accounts_id");
    for status in ["active", "hold", "blocked"] {
        let (st, v) = s
            .post(DIDS, json!({"number": "+33123456780", "status": status}))
            .await;
        assert_eq!(st, 422, "created {status}, no client: {v}");
        assert_error(&v, "validation_failed");
    }
    assert_eq!(get(&s, &d).await, d);
    assert_eq!(s.events().await.len(), n);

    let active = step(&s, &d, "activate", json!({"clients_id": c1})).await;
    assert_eq!(
        (active["clients_id"].as_i64(), &active["accounts_id"]),
        (Some(c1), &Value::Null)
    );
    let (st, v) = patch(&s, &d, json!({"accounts_id": a2})).await;
    invalid(st, &v, "accounts_id");
    assert_eq!(get(&s, &d).await, active);
    let n = s.events().await.len();
    let (st, linked) = patch(&s, &d, json!({"accounts_id": a1})).await;
    assert_eq!(
        (st, linked["accounts_id"].as_i64()),
        (200, Some(a1)),
        "{linked}"
    );
    let (st, renumbered) = patch(&s, &d, json!({"number": "+33123456788"})).await;
    assert_eq!(st, 200, "{renumbered}");
    let ev = s.events_since(n).await;
    assert_eq!(ids(&ev), ["dids.update", "dids.update"]);
    assert_eq!(
        (&ev[0]["data"], &ev[0]["previous"]),
        (&linked, &json!({"accounts_id": null}))
    );
    assert_eq!(ev[1]["data"], renumbered);
    assert_eq!(ev[1]["previous"], json!({"number": "+33123456789"}));
    assert_eq!(ev[1]["event"]["object_id"], d["id"]);
    // What only the transitions change is refused in a PATCH, not ignored with a 200;
    // the current values pass, as in a body sent back as it was read.
    let n = s.events().await.len();
    for (body, field) in [
        (json!({"status": "stock"}), "status"),
        (json!({"clients_id": c2}), "clients_id"),
        (json!({"clients_id": null}), "clients_id"),
        (json!({"hold_until": "2030-01-01T00:00:00Z"}), "hold_until"),
        (
            json!({"status_after_hold": "reserved"}),
            "status_after_hold",
        ),
        (json!({"hold_days": 3}), "hold_days"),
    ] {
        let (st, v) = patch(&s, &d, body.clone()).await;
        invalid(st, &v, field);
    }
    assert_eq!(get(&s, &d).await, renumbered, "nothing changed");
    assert_eq!(s.events().await.len(), n, "no event");
    let mut read = get(&s, &d).await;
    read["number"] = json!("+33123456787");
    let (st, v) = patch(&s, &d, read).await;
    assert_eq!((st, &v["number"]), (200, &json!("+33123456787")), "{v}");
    let unknown = json!({"id": 999_999});
    for action in ["reserve", "activate", "block", "hold", "stock", "archive"] {
        let (st, v) = act(&s, &unknown, action, json!({"clients_id": c1})).await;
        assert_eq!(st, 404, "{action}: {v}");
        assert_error(&v, "not_found");
    }
    let (st, v) = patch(&s, &unknown, json!({"number": "+33123456777"})).await;
    assert_eq!(st, 404, "{v}");
}

#[tokio::test]
async fn the_list_filters_by_status_client_and_number() {
    let s = Server::start().await;
    let (a, b) = (client(&s, "A").await, client(&s, "B").await);
    did_in(&s, "stock", a, "+15550001001").await;
    did_in(&s, "stock", a, "+15550001002").await;
    did_in(&s, "active", a, "+15550002001").await;
    did_in(&s, "active", b, "+15550002002").await;
    did_in(&s, "reserved", a, "+4470003003").await;
    let newest_first = [
        "+4470003003",
        "+15550002002",
        "+15550002001",
        "+15550001002",
        "+15550001001",
    ];
    let cases: [(String, &[&str]); 9] = [
        (String::new(), &newest_first),
        ("status=stock".into(), &newest_first[3..]),
        (format!("clients_id={b}"), &["+15550002002"]),
        (format!("clients_id={a}"), &["+15550002001"]),
        (format!("status=active&clients_id={a}"), &["+15550002001"]),
        ("q=0002".into(), &newest_first[1..3]),
        ("q=447".into(), &["+4470003003"]),
        ("q=999999".into(), &[]),
        ("status=archived".into(), &[]),
    ];
    for (query, want) in cases {
        let (got, total) = numbers(&s, &query).await;
        assert_eq!(
            (got, total),
            (
                want.iter().map(|n| n.to_string()).collect(),
                want.len() as i64
            ),
            "{query}"
        );
    }
    let (got, total) = numbers(&s, "limit=2&offset=1").await;
    assert_eq!(
        (got, total),
        (
            newest_first[1..3].iter().map(|n| n.to_string()).collect(),
            5
        )
    );
}

#[tokio::test]
async fn two_servers_end_each_hold_exactly_once() {
    let s = Server::start().await;
    let s2 = Server::start_on(&s.db.url()).await;
    let c = client(&s, "Twice").await;
    let mut held = vec![];
    for i in 0..6 {
        let d = did_in(&s, "active", c, &format!("+3531234{i:04}")).await;
        held.push(step(&s2, &d, "hold", json!({"hold_for": "PT1S"})).await);
    }
    let n = s.events().await.len();
    wait_for(15, "every hold to end", || async {
        let (stock, _) = numbers(&s2, "status=stock").await;
        (stock.len() == held.len()).then_some(())
    })
    .await;
    let ev = s.events_since(n).await;
    assert_eq!(
        ids(&ev),
        vec!["dids.stock"; held.len()],
        "one event per hold"
    );
    let mut objects: Vec<&Value> = ev.iter().map(|e| &e["event"]["object_id"]).collect();
    objects.sort_by_key(|v| v.as_i64());
    assert_eq!(objects, held.iter().map(|d| &d["id"]).collect::<Vec<_>>());
}

/// A field the DID lacks is refused, not ignored with a 200: in a PATCH (a DID read and
/// sent back passes), and in a transition's body (a misspelt `hold_days` fell back to
/// the 30-day default).
#[tokio::test]
async fn a_field_the_did_or_its_transition_lacks_is_refused() {
    let s = Server::start().await;
    let d = s.ok(DIDS, json!({"number": "+14155550177"}), 201).await;
    let (st, v) = patch(&s, &d, json!({"numbr": "+14155550178"})).await;
    invalid(st, &v, "numbr");
    let (st, v) = act(&s, &d, "reserve", json!({"hold_day": 2})).await;
    invalid(st, &v, "hold_day");
    assert_eq!(get(&s, &d).await, d, "nothing changed");
    let mut read = get(&s, &d).await;
    read["number"] = json!("+14155550179");
    let (st, v) = patch(&s, &d, read).await;
    assert_eq!((st, &v["number"]), (200, &json!("+14155550179")), "{v}");
    let (st, v) = act(&s, &d, "reserve", json!({})).await;
    assert_eq!((st, &v["status"]), (200, &json!("reserved")), "{v}");
}

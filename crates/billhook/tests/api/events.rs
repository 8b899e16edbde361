//! The event catalogue and the event log: `GET /event_types`, `GET /events` with its
//! filters and paging, `GET /events/{uid}`, and the header every payload carries.

use std::collections::{BTreeSet, HashSet};

use serde_json::{json, Value};

use crate::harness::{assert_error, ids, Server};

/// SPEC §4, in its order.
const EVENT_IDS: [&str; 35] = [
    "clients.create",
    "clients.update",
    "clients.archive",
    "clients.delete",
    "clients.balance_zero",
    "clients.balance_notzero",
    "clients.custom_fields.update",
    "clients.accounts.create",
    "clients.accounts.update",
    "clients.accounts.delete",
    "clients.subscriptions.assign",
    "clients.subscriptions.activate",
    "clients.subscriptions.deactivate",
    "clients.subscriptions.renew",
    "clients.subscriptions.close",
    "dids.create",
    "dids.update",
    "dids.activate",
    "dids.stock",
    "dids.block",
    "dids.reserve",
    "dids.hold",
    "dids.archive",
    "email_rates_manager.import",
    "email_rates_manager.rate_tables_no_match",
    "email_rates_manager.no_attachments",
    "email_rates_manager.file_processing_error",
    "importd.process_success",
    "importd.process_failed",
    "accounting.charges.create",
    "accounting.charges.update",
    "accounting.charges.delete",
    "accounting.payments.create",
    "accounting.payments.update",
    "accounting.payments.delete",
];

fn after_only(id: &str) -> bool {
    id.starts_with("clients.balance_")
        || id.starts_with("email_rates_manager.")
        || id.starts_with("importd.")
}

/// `2026-11-22T10:15:30.123456Z`: RFC 3339, UTC, exactly six fractional digits.
fn is_micros_utc(v: &Value) -> bool {
    let Some(t) = v.as_str() else { return false };
    let pattern = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    t.len() == pattern.len()
        && t.bytes().zip(pattern).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == *p,
        })
}

async fn list(s: &Server, query: &str) -> Value {
    let (st, v) = s.get(&format!("/api/v1/events?{query}")).await;
    assert_eq!(st, 200, "{query}: {v}");
    v
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().expect("items").clone()
}

/// Some history: two clients, an update, a payment (with its balance event), a DID.
async fn history(s: &Server) -> (i64, i64) {
    let a = s.ok("/api/v1/clients", json!({"name": "Alpha"}), 201).await["id"].clone();
    let b = s.ok("/api/v1/clients", json!({"name": "Beta"}), 201).await["id"].clone();
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{a}"),
            json!({"name": "Alpha Ltd"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    s.ok(
        "/api/v1/payments",
        json!({"clients_id": b, "amount": "10"}),
        201,
    )
    .await;
    s.ok("/api/v1/dids", json!({"number": "+14155550123"}), 201)
        .await;
    (a.as_i64().expect("id"), b.as_i64().expect("id"))
}

#[tokio::test]
async fn the_catalogue_lists_exactly_the_specs_events() {
    let s = Server::start().await;
    let (st, v) = s.get("/api/v1/event_types").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["total"], 35);
    let types = items(&v);
    let got: Vec<&str> = types
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got.len(), 35, "{got:?}");
    let unique: BTreeSet<&str> = got.iter().copied().collect();
    assert_eq!(unique, EVENT_IDS.iter().copied().collect::<BTreeSet<_>>());
    for t in &types {
        let id = t["id"].as_str().expect("id");
        assert!(t["group"].as_str().is_some_and(|g| !g.is_empty()), "{t}");
        assert!(
            t["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{t}"
        );
        let stages: BTreeSet<&str> = t["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .map(|s| s.as_str().expect("stage"))
            .collect();
        let want: BTreeSet<&str> = if after_only(id) {
            ["after"].into()
        } else {
            ["before", "after"].into()
        };
        assert_eq!(stages, want, "{id}");
        assert_eq!(
            t["stages"].as_array().map(Vec::len),
            Some(want.len()),
            "{id}"
        );

        let sample = &t["sample"];
        let keys: BTreeSet<&str> = sample
            .as_object()
            .expect("sample")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["data", "event", "previous"].into(), "{id}");
        let e = &sample["event"];
        assert_eq!(
            (e["events_id"].as_str(), e["stage"].as_str()),
            (Some(id), Some("after")),
            "{id}"
        );
        assert!(is_micros_utc(&e["dt"]), "{id}: {e}");
        assert!(
            e["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{id}: {e}"
        );
        assert!(e.get("object_id").is_some(), "{id}: {e}");
        assert!(
            sample["data"].as_object().is_some_and(|d| !d.is_empty()),
            "{id}: {sample}"
        );
        assert!(sample["previous"].is_object(), "{id}: {sample}");
        if id.ends_with(".update") || id.starts_with("clients.balance_") {
            assert!(
                sample["previous"]
                    .as_object()
                    .is_some_and(|p| !p.is_empty()),
                "{id}: {sample}"
            );
        }
        let direct = ["clients.", "dids.", "accounting."]
            .iter()
            .any(|p| id.starts_with(p));
        if direct && e["object_id"].is_i64() {
            assert_eq!(e["object_id"], sample["data"]["id"], "{id}: {sample}");
        }
    }
    let uids: HashSet<&str> = types
        .iter()
        .map(|t| t["sample"]["event"]["uid"].as_str().expect("uid"))
        .collect();
    assert_eq!(uids.len(), 35, "sample uids are distinct");
}

#[tokio::test]
async fn samples_have_the_shape_of_real_payloads() {
    let s = Server::start().await;
    let (a, b) = history(&s).await;
    let acc = json!({"clients_id": a, "name": "a1", "auth_type": "name", "login": "a1", "password": "pw-123456"});
    s.ok("/api/v1/accounts", acc, 201).await;
    let pkg = json!({"name": "Plan", "period": "P1M", "fee": "3"});
    let pkg = s.ok("/api/v1/packages", pkg, 201).await;
    s.ok(
        "/api/v1/subscriptions",
        json!({"clients_id": b, "packages_id": pkg["id"]}),
        201,
    )
    .await;
    let did = json!({"number": "+14155550999", "status": "active", "clients_id": a});
    let did = s.ok("/api/v1/dids", did, 201).await;
    s.ok(&format!("/api/v1/dids/{}/hold", did["id"]), json!({}), 200)
        .await;
    let (_, v) = s.get("/api/v1/event_types").await;
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object().expect("object").keys().cloned().collect()
    };
    let real = s.events().await;
    assert!(real.len() >= 12, "{:?}", ids(&real));
    for e in &real {
        let id = &e["event"]["events_id"];
        let t = items(&v)
            .into_iter()
            .find(|t| &t["id"] == id)
            .expect("in the catalogue");
        let sample = &t["sample"];
        assert_eq!(
            keys(&sample["data"]),
            keys(&e["data"]),
            "{id}: sample {sample} vs real {e}"
        );
        assert_eq!(keys(&sample["event"]), keys(&e["event"]), "{id}");
        assert!(
            keys(&sample["previous"]).is_subset(&keys(&e["data"])),
            "{id}: {sample}"
        );
    }
}

#[tokio::test]
async fn every_event_has_a_unique_uid_a_micro_utc_dt_and_the_after_stage() {
    let s = Server::start().await;
    let (a, _) = history(&s).await;
    let events = s.events().await;
    let want = [
        "clients.create",
        "clients.create",
        "clients.update",
        "accounting.payments.create",
        "clients.balance_notzero",
        "dids.create",
    ];
    assert_eq!(ids(&events), want);
    let mut uids = HashSet::new();
    let mut last = String::new();
    for e in &events {
        let h = &e["event"];
        let keys: BTreeSet<&str> = h
            .as_object()
            .expect("event")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["dt", "events_id", "object_id", "stage", "uid"].into(),
            "{e}"
        );
        assert!(
            uids.insert(h["uid"].as_str().expect("uid").to_string()),
            "duplicate uid: {e}"
        );
        assert!(is_micros_utc(&h["dt"]), "{e}");
        assert_eq!(h["stage"], "after", "{e}");
        assert!(h["object_id"].is_i64(), "{e}");
        assert!(e["previous"].is_object() && e["data"].is_object(), "{e}");
        let dt = h["dt"].as_str().expect("dt").to_string();
        assert!(dt >= last, "oldest first: {dt} after {last}");
        last = dt;
    }
    assert_eq!(events[2]["event"]["object_id"], a);
    assert_eq!(events[2]["previous"], json!({"name": "Alpha"}));
    // A refused change has no event.
    let (st, v) = s
        .post("/api/v1/dids", json!({"number": "+14155550123"}))
        .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(s.events().await, events);
}

#[tokio::test]
async fn the_log_filters_by_event_object_and_time() {
    let s = Server::start().await;
    let (a, b) = history(&s).await;
    let all = items(&list(&s, "limit=1000").await);
    assert_eq!(all.len(), 6);

    let v = list(&s, "events_id=clients.create").await;
    assert_eq!(v["total"], 2);
    let objects: Vec<Value> = items(&v)
        .iter()
        .map(|e| e["event"]["object_id"].clone())
        .collect();
    assert_eq!(objects, [json!(b), json!(a)], "newest first");

    let v = list(&s, &format!("object_id={a}")).await;
    let want: Vec<&Value> = all
        .iter()
        .filter(|e| e["event"]["object_id"] == a)
        .collect();
    assert_eq!(v["total"], json!(want.len()));
    assert_eq!(items(&v).iter().collect::<Vec<_>>(), want);
    let v = list(&s, &format!("events_id=clients.update&object_id={a}")).await;
    assert_eq!((v["total"].as_i64(), &v["items"][0]), (Some(1), &all[3]));
    let v = list(&s, &format!("events_id=clients.update&object_id={b}")).await;
    assert_eq!(v["total"], 0);
    // An event id not in the catalogue is a typo, not a filter matching nothing.
    let (st, v) = s.get("/api/v1/events?events_id=no.such.event").await;
    assert_eq!(st, 400, "{v}");
    assert_error(&v, "bad_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events_id"),
        "{v}"
    );

    // `from` and `to` are inclusive bounds on `event.dt`.
    let dt = |e: &Value| e["event"]["dt"].as_str().expect("dt").to_string();
    let pivot = dt(&all[3]);
    let newer: Vec<&Value> = all.iter().filter(|e| dt(e) >= pivot).collect();
    let older: Vec<&Value> = all.iter().filter(|e| dt(e) <= pivot).collect();
    assert!(newer.len() >= 2 && older.len() >= 2, "{pivot}");
    let v = list(&s, &format!("from={pivot}")).await;
    assert_eq!(items(&v).iter().collect::<Vec<_>>(), newer);
    assert_eq!(v["total"], json!(newer.len()));
    let v = list(&s, &format!("to={pivot}")).await;
    assert_eq!(items(&v).iter().collect::<Vec<_>>(), older);
    let v = list(&s, &format!("from={pivot}&to={pivot}")).await;
    assert!(items(&v).contains(&all[3]));
    assert!(items(&v).iter().all(|e| dt(e) == pivot));
    let v = list(&s, "from=2099-01-01T00:00:00.000000Z").await;
    assert_eq!(v["total"], 0);

    for bad in ["limit=abc", "object_id=x", "from=yesterday"] {
        let (st, v) = s.get(&format!("/api/v1/events?{bad}")).await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert_error(&v, "bad_request");
    }
}

#[tokio::test]
async fn the_log_pages_with_limit_offset_and_total() {
    let s = Server::start().await;
    for i in 0..53 {
        s.ok("/api/v1/clients", json!({"name": format!("C{i}")}), 201)
            .await;
    }
    let all = items(&list(&s, "limit=1000").await);
    assert_eq!(all.len(), 53);
    let v = list(&s, "").await;
    assert_eq!(
        (v["items"].as_array().map(Vec::len), &v["total"]),
        (Some(50), &json!(53))
    );
    assert_eq!(items(&v), all[..50]);
    let v = list(&s, "limit=5&offset=10").await;
    assert_eq!((items(&v), &v["total"]), (all[10..15].to_vec(), &json!(53)));
    let v = list(&s, "limit=5&offset=50").await;
    assert_eq!(items(&v), all[50..]);
    let v = list(&s, "offset=100").await;
    assert_eq!((items(&v).len(), &v["total"]), (0, &json!(53)));
    let v = list(&s, "events_id=clients.create&limit=2").await;
    assert_eq!((items(&v), &v["total"]), (all[..2].to_vec(), &json!(53)));
}

#[tokio::test]
async fn one_event_by_uid_is_the_same_payload() {
    let s = Server::start().await;
    history(&s).await;
    let all = s.events().await;
    for e in &all {
        let uid = e["event"]["uid"].as_str().expect("uid");
        let (st, one) = s.get(&format!("/api/v1/events/{uid}")).await;
        assert_eq!(st, 200, "{one}");
        for key in ["event", "data", "previous"] {
            assert_eq!(one[key], e[key], "{uid} {key}");
        }
        // No handler exists: an empty per-handler delivery state is added.
        let d = &one["deliveries"];
        let empty =
            d.as_array().is_some_and(Vec::is_empty) || d.as_object().is_some_and(|m| m.is_empty());
        assert!(empty, "{one}");
    }
    for uid in [
        "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "nope",
        "%27%20OR%201%3D1",
    ] {
        let (st, v) = s.get(&format!("/api/v1/events/{uid}")).await;
        assert_eq!(st, 404, "{uid}: {v}");
        assert_error(&v, "not_found");
    }
}

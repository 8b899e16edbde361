//! Many requests on one client at once: the balance stays exact, balance events match
//! the transactions in event order, and no change loses its event.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::harness::{Server, KEY};

const TASKS: usize = 16;

/// Micro-units of a decimal string as the API writes it (`"-12.5"`, `"0.000001"`).
fn micros(s: &str) -> i64 {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(frac.len() <= 6, "{s}");
    let value =
        int.parse::<i64>().expect(s) * 1_000_000 + format!("{frac:0<6}").parse::<i64>().expect(s);
    if neg {
        -value
    } else {
        value
    }
}

/// Operation `i`: (is a payment, amount in micros). Task `i % TASKS` sends it, and each
/// task alternates payments and charges. Operations `2k` and `2k + 1` are a payment and
/// a charge of 1, 2 or 3 units, the payment one micro-unit bigger: the balance wanders
/// around zero, crossing it again and again, and ends at exactly 100 micro-units.
fn op(i: usize) -> (bool, i64) {
    let base = 1_000_000 * (1 + i64::try_from(i / 2 % 3).unwrap());
    if (i + i / TASKS).is_multiple_of(2) {
        (true, base + 1)
    } else {
        (false, base)
    }
}

/// The amount as JSON: a number for every third operation, else a string.
fn amount_json(i: usize, m: i64) -> Value {
    if i.is_multiple_of(3) {
        // Exact: the double nearest to m / 10^6 prints as the same six decimals.
        json!(m as f64 / 1e6)
    } else {
        json!(format!("{}.{:06}", m / 1_000_000, m % 1_000_000))
    }
}

/// A request with the task's own connection.
async fn send(
    http: &reqwest::Client,
    s: &Server,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = http
        .request(method, format!("{}{path}", s.base))
        .header("X-Api-Key", KEY)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

/// Runs `job(task, http)` on `TASKS` concurrent tasks, each with its own client.
async fn on_tasks<F, Fut>(job: F) -> Vec<Value>
where
    F: Fn(usize, reqwest::Client) -> Fut,
    Fut: std::future::Future<Output = Vec<Value>>,
{
    let runs = (0..TASKS).map(|t| job(t, reqwest::Client::new()));
    futures::future::join_all(runs).await.concat()
}

fn is_balance_event(e: &Value) -> bool {
    e["event"]["events_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("clients.balance_"))
}

#[tokio::test]
async fn concurrent_transactions_keep_the_balance_and_its_events_exact() {
    let s = Server::start().await;
    let c = s.ok("/api/v1/clients", json!({"name": "Busy"}), 201).await;
    let cid = c["id"].as_i64().unwrap();
    let expected: i64 = (0..200)
        .map(op)
        .map(|(pay, m)| if pay { m } else { -m })
        .sum();
    assert_eq!(expected, 100, "the scenario ends with a positive balance");

    let s = &s;
    let created = on_tasks(|t, http| async move {
        let mut out = Vec::new();
        for i in (t..200).step_by(TASKS) {
            let (pay, m) = op(i);
            let path = if pay {
                "/api/v1/payments"
            } else {
                "/api/v1/charges"
            };
            let body = json!({"clients_id": cid, "amount": amount_json(i, m)});
            let (st, v) = send(&http, s, "POST", path, body).await;
            assert_eq!(st, 201, "{path}: {v}");
            assert_eq!(micros(v["amount"].as_str().unwrap()), m, "{v}");
            out.push(v);
        }
        out
    })
    .await;
    assert_eq!(created.len(), 200);

    let (st, after) = s.get(&format!("/api/v1/clients/{cid}")).await;
    assert_eq!(st, 200);
    assert_eq!(
        micros(after["balance"].as_str().unwrap()),
        expected,
        "{after}"
    );

    // Replay the transaction events in event order.
    let by_id: HashMap<i64, &Value> = created
        .iter()
        .map(|t| (t["id"].as_i64().unwrap(), t))
        .collect();
    let events = s.events().await;
    assert_eq!(events[0]["event"]["events_id"], "clients.create");
    let (mut balance, mut seen, mut zero, mut notzero) = (0i64, 0, 0, 0);
    let mut last_crossing = "clients.balance_zero";
    let mut k = 1;
    while k < events.len() {
        let e = &events[k];
        let sign = match e["event"]["events_id"].as_str().unwrap() {
            "accounting.payments.create" => 1,
            "accounting.charges.create" => -1,
            other => panic!("unexpected event {other} at {k}: {e}"),
        };
        let id = e["event"]["object_id"].as_i64().unwrap();
        assert_eq!(e["data"], *by_id[&id], "event data is the created object");
        seen += 1;
        let old = balance;
        balance += sign * micros(e["data"]["amount"].as_str().unwrap());
        let crossing = match (old > 0, balance > 0) {
            (true, false) => Some("clients.balance_zero"),
            (false, true) => Some("clients.balance_notzero"),
            _ => None,
        };
        let next = events.get(k + 1);
        match crossing {
            Some(want) => {
                let b = next.unwrap_or_else(|| panic!("no balance event after {e}"));
                assert_eq!(b["event"]["events_id"], want, "after {e}");
                assert_ne!(want, last_crossing, "balance events alternate");
                assert_eq!(b["event"]["object_id"], cid);
                assert_eq!(b["data"]["id"], cid);
                assert_eq!(
                    micros(b["previous"]["balance"].as_str().unwrap()),
                    old,
                    "{b}"
                );
                assert_eq!(
                    micros(b["data"]["balance"].as_str().unwrap()),
                    balance,
                    "{b}"
                );
                assert_eq!(b["previous"].as_object().unwrap().len(), 1, "{b}");
                last_crossing = want;
                if want == "clients.balance_zero" {
                    zero += 1;
                } else {
                    notzero += 1;
                }
                k += 2;
            }
            None => {
                assert!(
                    !next.is_some_and(is_balance_event),
                    "no crossing, yet {next:?} after {e}"
                );
                k += 1;
            }
        }
    }
    assert_eq!(seen, 200);
    assert_eq!(balance, expected);
    assert_eq!(notzero, zero + 1, "starts at 0 and ends positive");
    assert!(notzero >= 1);
}

#[tokio::test]
async fn concurrent_patches_and_payments_never_lose_an_event() {
    let s = Server::start().await;
    let c = s.ok("/api/v1/clients", json!({"name": "start"}), 201).await;
    let cid = c["id"].as_i64().unwrap();
    let s = &s;
    let results = on_tasks(|t, http| async move {
        let mut out = Vec::new();
        for k in 0..5 {
            let name = format!("t{t}-{k}");
            let path = format!("/api/v1/clients/{cid}");
            let (st, v) = send(
                &http,
                s,
                "PATCH",
                &path,
                json!({"name": name, "tags": [name]}),
            )
            .await;
            assert_eq!(st, 200, "{v}");
            assert_eq!(v["name"], name.as_str());
            let body = json!({"clients_id": cid, "amount": "1"});
            let (st, v) = send(&http, s, "POST", "/api/v1/payments", body).await;
            assert_eq!(st, 201, "{v}");
            out.push(json!(name));
        }
        out
    })
    .await;
    assert_eq!(results.len(), TASKS * 5);

    let events = s.events().await;
    let (mut name, mut tags) = (json!("start"), json!([]));
    let (mut balance, mut updates, mut notzero) = (0i64, 0, 0);
    for e in &events[1..] {
        match e["event"]["events_id"].as_str().unwrap() {
            "clients.update" => {
                updates += 1;
                assert_eq!(e["previous"], json!({"name": name, "tags": tags}), "{e}");
                assert_eq!(
                    micros(e["data"]["balance"].as_str().unwrap()),
                    balance,
                    "{e}"
                );
                name = e["data"]["name"].clone();
                tags = e["data"]["tags"].clone();
            }
            "accounting.payments.create" => balance += 1_000_000,
            "clients.balance_notzero" => {
                notzero += 1;
                assert_eq!(e["previous"], json!({"balance": "0"}));
            }
            other => panic!("unexpected {other}: {e}"),
        }
    }
    assert_eq!(updates, TASKS * 5, "one clients.update per PATCH");
    assert_eq!(balance, i64::try_from(TASKS * 5).unwrap() * 1_000_000);
    assert_eq!(notzero, 1);
    let mut names: Vec<String> = events
        .iter()
        .filter(|e| e["event"]["events_id"] == "clients.update")
        .map(|e| e["data"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut sent: Vec<String> = results
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    sent.sort();
    assert_eq!(names, sent);

    let (_, after) = s.get(&format!("/api/v1/clients/{cid}")).await;
    assert_eq!(after["name"], name);
    assert_eq!(after["tags"], tags);
    assert_eq!(micros(after["balance"].as_str().unwrap()), balance);
}

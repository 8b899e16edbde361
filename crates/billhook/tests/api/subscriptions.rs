//! Subscriptions: assign (now and future), the transition table, fee charges and their
//! events, and the scheduler's starts and renewals — also with two servers on one database.

use serde_json::{json, Value};

use crate::harness::{assert_error, ids, wait_for, Server};

const SUBS: &str = "/api/v1/subscriptions";
const SEC: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SEC;
const DAY: i64 = 24 * HOUR;
const ASSIGN: &str = "clients.subscriptions.assign";
const ACTIVATE: &str = "clients.subscriptions.activate";
const RENEW: &str = "clients.subscriptions.renew";
const CHARGE: &str = "accounting.charges.create";

/// Microseconds since the epoch of `2026-11-22T10:15:30.123456Z`.
fn ts(v: &Value) -> i64 {
    let t = v
        .as_str()
        .filter(|t| t.len() == 27)
        .expect("RFC 3339 micros");
    let n = |a: usize, b: usize| t[a..b].parse::<i64>().expect(t);
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + n(11, 13)) * 60 + n(14, 16)) * 60 * SEC + n(17, 19) * SEC + n(20, 26)
}

/// The RFC 3339 text of `micros`.
fn fmt(micros: i64) -> String {
    let z = micros.div_euclid(DAY) + 719_468;
    let in_day = micros.rem_euclid(DAY);
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = in_day / SEC;
    let (hh, mm, ss, us) = (s / 3_600, s / 60 % 60, s % 60, in_day % SEC);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}Z")
}

fn now() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    i64::try_from(d.as_micros()).expect("micros")
}

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

/// A client and a package with `period` and `fee`.
async fn fixture(s: &Server, period: &str, fee: Value) -> (i64, Value) {
    let c = s.ok("/api/v1/clients", json!({"name": "Co"}), 201);
    let c = c.await["id"].as_i64().expect("id");
    let body = json!({"name": format!("Plan {period}"), "period": period, "fee": fee});
    (c, s.ok("/api/v1/packages", body, 201).await)
}

async fn assign(s: &Server, client: i64, package: &Value, start: Option<String>) -> Value {
    let mut body = json!({"clients_id": client, "packages_id": package["id"]});
    if let Some(t) = start {
        body["start_dt"] = json!(t);
    }
    s.ok(SUBS, body, 201).await
}

async fn act(s: &Server, sub: &Value, action: &str) -> (u16, Value) {
    s.post(&format!("{SUBS}/{}/{action}", sub["id"]), json!({}))
        .await
}

async fn get(s: &Server, sub: &Value) -> Value {
    let (st, v) = s.get(&format!("{SUBS}/{}", sub["id"])).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// The client's charges, oldest first.
async fn charges(s: &Server, client: i64) -> Vec<Value> {
    let (st, v) = s
        .get(&format!("/api/v1/charges?clients_id={client}&limit=1000"))
        .await;
    assert_eq!(st, 200, "{v}");
    let mut items = v["items"].as_array().expect("items").clone();
    items.sort_by_key(|c| c["id"].as_i64());
    items
}

/// Events of one kind about one subscription, oldest first.
async fn events_of(s: &Server, sub: &Value, events_id: &str) -> Vec<Value> {
    let path = format!(
        "/api/v1/events?events_id={events_id}&object_id={}&limit=1000",
        sub["id"]
    );
    let (st, v) = s.get(&path).await;
    assert_eq!(st, 200, "{v}");
    let mut items = v["items"].as_array().expect("items").clone();
    items.reverse();
    items
}

async fn renewals(s: &Server, sub: &Value) -> usize {
    events_of(s, sub, RENEW).await.len()
}

/// Asserts a charge event for a fee of `package`.
fn assert_fee(event: &Value, client: i64, package: &Value) {
    assert_eq!(event["event"]["events_id"], "accounting.charges.create");
    assert_eq!(event["event"]["object_id"], event["data"]["id"]);
    assert_eq!(event["data"]["clients_id"], client);
    assert_eq!(event["data"]["amount"], package["fee"]);
    let notes = event["data"]["notes"].as_str().unwrap_or_default();
    assert!(notes.contains(package["name"].as_str().unwrap()), "{event}");
}

/// Waits until the clock passes `t` (microseconds).
async fn pass(t: i64) {
    wait_for(
        10,
        "time to pass",
        || async move { (now() > t).then_some(()) },
    )
    .await;
}

/// True when no period has started.
fn no_period(v: &Value) -> bool {
    v["period_start"].is_null() && v["period_end"].is_null()
}

#[tokio::test]
async fn assign_now_activates_charges_the_fee_and_raises_balance_zero() {
    let s = Server::start().await;
    let (c, p) = fixture(&s, "PT1H", json!(9.99)).await;
    assert_eq!(p["fee"], "9.99", "a number in, a decimal string out");
    let payment = json!({"clients_id": c, "amount": "5"});
    s.ok("/api/v1/payments", payment, 201).await;
    let n = s.events().await.len();
    let before = now();
    let sub = assign(&s, c, &p, None).await;
    let after = now();
    let ev = s.events_since(n).await;
    assert_eq!(ids(&ev), [ASSIGN, ACTIVATE, CHARGE, "clients.balance_zero"]);
    let pending = &ev[0]["data"];
    assert_eq!(ev[0]["event"]["object_id"], sub["id"]);
    assert_eq!(ev[0]["previous"], json!({}));
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["clients_id"], c);
    assert_eq!(pending["packages_id"], p["id"]);
    assert!(no_period(pending), "{pending}");
    assert!((before..=after).contains(&ts(&pending["start_dt"])));

    assert_eq!(sub["status"], "active");
    assert_eq!(ev[1]["event"]["object_id"], sub["id"]);
    assert_eq!(ev[1]["data"], sub);
    assert_eq!(ev[1]["previous"], diff(pending, &sub));
    assert_eq!(
        ev[1]["previous"],
        json!({"status": "pending", "period_start": null, "period_end": null})
    );
    assert_eq!(sub["period_start"], sub["start_dt"]);
    assert_eq!(ts(&sub["period_end"]) - ts(&sub["period_start"]), HOUR);
    assert_eq!(get(&s, &sub).await, sub);

    assert_fee(&ev[2], c, &p);
    let charge = format!("/api/v1/charges/{}", ev[2]["data"]["id"]);
    assert_eq!(s.get(&charge).await, (200, ev[2]["data"].clone()));
    assert_eq!(ev[3]["event"]["object_id"], c);
    assert_eq!(ev[3]["data"]["balance"], "-4.99");
    assert_eq!(ev[3]["previous"]["balance"], "5");

    // A past start (any offset; kept in UTC) starts the period; -14.99 raises no balance event.
    let start = now() - 10 * SEC;
    let n = s.events().await.len();
    let local = fmt(start + 2 * HOUR).replace('Z', "+02:00");
    let sub = assign(&s, c, &p, Some(local)).await;
    assert_eq!(sub["status"], "active");
    assert_eq!(
        (sub["start_dt"].as_str(), sub["period_start"].as_str()),
        (Some(&*fmt(start)), Some(&*fmt(start)))
    );
    assert_eq!(sub["period_end"], fmt(start + HOUR));
    let ev = s.events_since(n).await;
    assert_eq!(ids(&ev), [ASSIGN, ACTIVATE, CHARGE]);
    assert_eq!(ev[1]["data"], sub);
    assert_fee(&ev[2], c, &p);
    assert_eq!(charges(&s, c).await.len(), 2);
}

#[tokio::test]
async fn racing_activations_of_a_pending_subscription_activate_and_charge_once() {
    let s = Server::start().await;
    let (c, p) = fixture(&s, "PT1H", json!("5")).await;
    let sub = assign(&s, c, &p, Some(fmt(now() + HOUR))).await;
    let n = s.events().await.len();
    let race = (0..6).map(|_| act(&s, &sub, "activate"));
    let mut codes: Vec<u16> = futures::future::join_all(race)
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 409, 409, 409, 409, 409]);
    assert_eq!(ids(&s.events_since(n).await), [ACTIVATE, CHARGE]);
    assert_eq!(charges(&s, c).await.len(), 1);
}

/// A fresh subscription in `status` (a pending one starts in an hour).
async fn in_status(s: &Server, client: i64, p: &Value, status: &str) -> Value {
    let start = (status == "pending").then(|| fmt(now() + HOUR));
    let sub = assign(s, client, p, start).await;
    let step = match status {
        "inactive" => "deactivate",
        "closed" => "close",
        _ => return sub,
    };
    let (st, v) = act(s, &sub, step).await;
    assert_eq!((st, v["status"].as_str()), (200, Some(status)), "{v}");
    v
}

#[tokio::test]
async fn every_transition_is_allowed_or_refused_as_the_spec_says() {
    let s = Server::start().await;
    let (c, p) = fixture(&s, "PT1H", json!("1")).await;
    for from in ["pending", "active", "inactive", "closed"] {
        for action in ["activate", "deactivate", "renew", "close"] {
            let target = match (action, from) {
                ("activate", "pending" | "inactive") => Some("active"),
                ("deactivate", "active") => Some("inactive"),
                ("renew", "active") => Some("active"),
                ("close", "pending" | "active" | "inactive") => Some("closed"),
                _ => None,
            };
            let old = in_status(&s, c, &p, from).await;
            let n = s.events().await.len();
            let fees = charges(&s, c).await.len();
            let before = now();
            let (st, body) = act(&s, &old, action).await;
            let ev = s.events_since(n).await;
            let case = format!("{action} from {from}: {body}");
            let Some(target) = target else {
                assert_eq!(st, 409, "{case}");
                assert_error(&body, "invalid_transition");
                assert!(ev.is_empty(), "{case}: {ev:?}");
                assert_eq!(get(&s, &old).await, old, "{case}");
                continue;
            };
            assert_eq!(st, 200, "{case}");
            assert_eq!(body["status"], target, "{case}");
            assert_eq!(get(&s, &old).await, body, "{case}");
            let new_period = matches!((action, from), ("activate", "pending") | ("renew", _));
            let mut want = vec![format!("clients.subscriptions.{action}")];
            if new_period {
                want.push(CHARGE.into());
                assert_fee(&ev[1], c, &p);
            } else {
                assert_eq!(body["period_start"], old["period_start"], "{case}");
                assert_eq!(body["period_end"], old["period_end"], "{case}");
            }
            assert_eq!(ids(&ev), want, "{case}");
            assert_eq!(charges(&s, c).await.len(), fees + usize::from(new_period));
            assert_eq!(ev[0]["event"]["object_id"], old["id"], "{case}");
            assert_eq!(ev[0]["data"], body, "{case}");
            assert_eq!(ev[0]["previous"], diff(&old, &body), "{case}");
            if from != target {
                assert_eq!(ev[0]["previous"]["status"], from, "{case}");
            }
            if from == "pending" && action == "activate" {
                let begin = ts(&body["period_start"]);
                assert!(begin >= before && begin <= now(), "{case}");
                assert_eq!(ts(&body["period_end"]), begin + HOUR, "{case}");
            }
            if action == "renew" {
                assert_eq!(body["period_start"], old["period_end"], "{case}");
                assert_eq!(ts(&body["period_end"]), ts(&old["period_end"]) + HOUR);
                let previous =
                    json!({"period_start": old["period_start"], "period_end": old["period_end"]});
                assert_eq!(ev[0]["previous"], previous, "{case}");
            }
        }
    }
    let fees = charges(&s, c).await.len();
    let (_, client) = s.get(&format!("/api/v1/clients/{c}")).await;
    assert_eq!(
        client["balance"],
        json!(format!("-{fees}")),
        "a fee of 1 a period"
    );
}

#[tokio::test]
async fn activating_after_the_paid_period_starts_a_new_charged_period() {
    let s = Server::start().await;
    let (c, p) = fixture(&s, "PT2S", json!("1")).await;
    let sub = assign(&s, c, &p, None).await;
    let (st, inactive) = act(&s, &sub, "deactivate").await;
    assert_eq!((st, inactive["status"].as_str()), (200, Some("inactive")));
    let end = ts(&inactive["period_end"]);
    pass(end + 300_000).await;
    assert_eq!(renewals(&s, &sub).await, 0);
    let n = s.events().await.len();
    let before = now();
    let (st, active) = act(&s, &sub, "activate").await;
    assert_eq!(st, 200, "{active}");
    let begin = ts(&active["period_start"]);
    assert!(begin >= before && begin > end, "{active}");
    assert_eq!(ts(&active["period_end"]), begin + 2 * SEC);
    let ev = s.events_since(n).await;
    assert_eq!(ids(&ev)[..2], [ACTIVATE, CHARGE]);
    assert_eq!(ev[0]["previous"], diff(&inactive, &active));
    assert_fee(&ev[1], c, &p);
}

/// Checks a subscription's renewals after it was closed: each period renewed exactly
/// once, in a chain, none early, none missed; returns how many.
async fn check_renewal_chain(s: &Server, sub: &Value, client: i64) -> usize {
    let activated = events_of(s, sub, ACTIVATE).await;
    let renews = events_of(s, sub, RENEW).await;
    let closed = events_of(s, sub, "clients.subscriptions.close").await;
    assert_eq!((activated.len(), closed.len()), (1, 1));
    let mut end = activated[0]["data"]["period_end"].clone();
    let mut starts = std::collections::HashSet::new();
    for r in &renews {
        assert_eq!(r["data"]["period_start"], end, "renewals chain: {r}");
        assert!(starts.insert(end.to_string()), "period renewed twice: {r}");
        assert!(ts(&r["event"]["dt"]) >= ts(&end), "renewed early: {r}");
        assert_eq!(ts(&r["data"]["period_end"]) - ts(&end), SEC);
        assert_eq!(r["previous"]["period_end"], end);
        end = r["data"]["period_end"].clone();
    }
    assert_eq!(closed[0]["data"]["period_end"], end);
    let elapsed = ts(&closed[0]["event"]["dt"]) - ts(&activated[0]["data"]["period_end"]);
    let due = usize::try_from(elapsed / SEC + 1).expect("positive");
    let count = renews.len();
    assert!(
        count.abs_diff(due) <= 1,
        "{count} renewals for {due} periods"
    );
    assert_eq!(charges(s, client).await.len(), renews.len() + 1);
    renews.len()
}

#[tokio::test]
async fn the_scheduler_starts_a_pending_subscription_then_renews_each_period_once() {
    let s = Server::start().await;
    let (c, p) = fixture(&s, "PT1S", json!("4")).await;
    let start = now() + SEC;
    let n = s.events().await.len();
    let sub = assign(&s, c, &p, Some(fmt(start))).await;
    assert_eq!(
        (sub["status"].as_str(), sub["start_dt"].as_str()),
        (Some("pending"), Some(&*fmt(start)))
    );
    assert!(no_period(&sub), "{sub}");
    let ev = s.events_since(n).await;
    assert_eq!((ids(&ev), &ev[0]["data"]), (vec![ASSIGN.to_string()], &sub));
    assert!(charges(&s, c).await.is_empty());
    let started = || async { (events_of(&s, &sub, ACTIVATE).await.len() == 1).then_some(()) };
    wait_for(15, "scheduled start", started).await;
    let ev = s.events_since(n + 1).await;
    assert_eq!(ids(&ev)[..2], [ACTIVATE, CHARGE]);
    let active = &ev[0]["data"];
    assert_eq!(
        (
            active["period_start"].as_str(),
            active["period_end"].as_str()
        ),
        (Some(&*fmt(start)), Some(&*fmt(start + SEC)))
    );
    assert_eq!(ev[0]["previous"], diff(&sub, active));
    assert!(ts(&ev[0]["event"]["dt"]) >= start, "started early");
    assert_fee(&ev[1], c, &p);

    let three = || async { (renewals(&s, &sub).await >= 3).then_some(()) };
    wait_for(20, "three scheduled renewals", three).await;
    let (st, closed) = act(&s, &sub, "close").await;
    assert_eq!(st, 200, "{closed}");
    let renewed = check_renewal_chain(&s, &sub, c).await;
    pass(ts(&closed["period_end"]) + 500_000).await;
    assert_eq!(renewals(&s, &sub).await, renewed, "renewed after close");
    assert_eq!(get(&s, &sub).await, closed);
}

#[tokio::test]
async fn two_servers_on_one_database_renew_each_period_exactly_once() {
    let s = Server::start().await;
    let s2 = Server::start_on(&s.db.url()).await;
    let (c, p) = fixture(&s, "PT1S", json!("1")).await;
    let sub = assign(&s2, c, &p, None).await;
    // Both schedulers also see pending subscriptions start: each starts once.
    let (c2, hourly) = fixture(&s, "PT1H", json!("1")).await;
    let start = now() + SEC;
    let mut pending = vec![];
    for _ in 0..4 {
        pending.push(assign(&s, c2, &hourly, Some(fmt(start))).await);
    }
    let five = || async { (renewals(&s, &sub).await >= 5).then_some(()) };
    wait_for(30, "five scheduled renewals", five).await;
    let (st, closed) = act(&s2, &sub, "close").await;
    assert_eq!(st, 200, "{closed}");
    assert!(check_renewal_chain(&s, &sub, c).await >= 5);
    for p in &pending {
        assert_eq!(get(&s, p).await["status"], "active");
        assert_eq!(
            events_of(&s, p, ACTIVATE).await.len(),
            1,
            "started twice: {p}"
        );
    }
    assert_eq!(charges(&s, c2).await.len(), pending.len());
    assert_eq!(s.events().await, s2.events().await);
}

#[tokio::test]
async fn bad_assignments_and_unknown_subscriptions_are_refused_without_events() {
    let s = Server::start().await;
    let (c, p) = fixture(&s, "PT1H", json!("1")).await;
    let body = json!({"name": "Euro plan", "period": "P1M", "fee": "9", "currency": "EUR"});
    let euro = s.ok("/api/v1/packages", body, 201).await;
    let n = s.events().await.len();
    let (pid, none) = (&p["id"], 999_999);
    let bad = [
        // Its fee would be charged as it is: no conversion.
        (
            json!({"clients_id": c, "packages_id": euro["id"]}),
            "packages_id",
        ),
        (json!({"packages_id": pid}), "clients_id"),
        (json!({"clients_id": c}), "packages_id"),
        (json!({"clients_id": c, "packages_id": none}), "packages_id"),
        (
            json!({"clients_id": none, "packages_id": pid}),
            "clients_id",
        ),
    ];
    for (body, field) in bad {
        let (st, v) = s.post(SUBS, body).await;
        assert_eq!(st, 422, "{v}");
        assert_error(&v, "validation_failed");
        assert!(v["error"]["data"]["fields"][field].is_string(), "{v}");
    }
    for action in ["activate", "deactivate", "renew", "close"] {
        let (st, v) = act(&s, &json!({"id": 999_999}), action).await;
        assert_eq!(st, 404, "{action}: {v}");
        assert_error(&v, "not_found");
    }
    let archive = format!("/api/v1/clients/{c}/archive");
    s.ok(&archive, json!({}), 200).await;
    let n2 = s.events().await.len();
    let (st, v) = s
        .post(SUBS, json!({"clients_id": c, "packages_id": pid}))
        .await;
    assert_eq!(st, 409, "{v}");
    assert_error(&v, "conflict");
    assert_eq!(s.events().await.len(), n2);
    assert_eq!(n2, n + 1, "only the archive raised an event");
    let (_, list) = s.get(&format!("{SUBS}?clients_id={c}")).await;
    assert_eq!(list["total"], 0);
}

/// A scheduled activation that a before handler forbids stays pending and is tried
/// again less and less often (after 1 s, 2 s, 4 s…), not on every pass of the scheduler
/// (every 100 ms here: refused on each, it called the handler about 35 times in 4 s and
/// logged every refusal, for as long as the handler said no).
#[tokio::test]
async fn a_forbidden_scheduled_activation_is_tried_again_less_and_less_often() {
    let s = Server::start().await;
    crate::harness::write_script(
        &s,
        "deny.sh",
        "#!/bin/sh\ncat >/dev/null\necho 'no activation' >&2\nexit 1\n",
        true,
    );
    let h = s
        .ok(
            "/api/v1/handlers",
            json!({"name": "deny", "event": ACTIVATE, "stage": "before",
                   "type": "script", "task": "deny.sh"}),
            201,
        )
        .await;
    let (client, package) = fixture(&s, "P1M", json!("5")).await;
    let sub = assign(&s, client, &package, Some(fmt(now() + SEC / 2))).await;
    assert_eq!(sub["status"], "pending", "{sub}");
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (st, log) = s
        .get(&format!(
            "/api/v1/executions?handlers_id={}&limit=0",
            h["id"]
        ))
        .await;
    assert_eq!(st, 200, "{log}");
    let calls = log["total"].as_i64().expect("total");
    assert!(
        (2..=5).contains(&calls),
        "tried at about 0.5, 1.5 and 3.5 s: {calls} calls"
    );
    assert_eq!(get(&s, &sub).await["status"], "pending");
    assert!(charges(&s, client).await.is_empty(), "no fee charged");
}

/// `POST /subscriptions` starting now is one change: the activation's before handlers
/// are asked first, about the subscription as it would be (no id yet); when they refuse,
/// the answer is their 422 and nothing is written — no subscription, no event, no fee.
/// When they allow, it is assigned and activated in one transaction.
#[tokio::test]
async fn a_refused_activation_refuses_the_assign_that_starts_now() {
    let s = Server::start().await;
    let script = |allow: bool| {
        let exit = if allow { 0 } else { 1 };
        format!("#!/bin/sh\ncat > last-activation.json\necho 'no credit' >&2\nexit {exit}\n")
    };
    crate::harness::write_script(&s, "gate.sh", &script(false), true);
    let h = s
        .ok(
            "/api/v1/handlers",
            json!({"name": "gate", "event": ACTIVATE, "stage": "before",
                   "type": "script", "task": "gate.sh"}),
            201,
        )
        .await;
    let (client, package) = fixture(&s, "P1M", json!("5")).await;
    let (st, v) = s
        .post(
            SUBS,
            json!({"clients_id": client, "packages_id": package["id"]}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_error(&v, "forbidden_by_handler");
    let (_, list) = s.get(&format!("{SUBS}?clients_id={client}")).await;
    assert_eq!(list["total"], 0, "nothing assigned: {list}");
    let (_, events) = s.get(&format!("/api/v1/events?events_id={ASSIGN}")).await;
    assert_eq!(events["total"], 0, "no assign event: {events}");
    assert!(charges(&s, client).await.is_empty(), "no fee");
    let asked: Value = serde_json::from_str(
        &std::fs::read_to_string(s.dir.path().join("scripts/last-activation.json"))
            .expect("the handler got the payload"),
    )
    .expect("JSON");
    assert_eq!(asked["event"]["events_id"], ACTIVATE, "{asked}");
    assert_eq!(
        asked["event"]["object_id"],
        Value::Null,
        "not stored yet: {asked}"
    );
    assert_eq!(asked["data"]["id"], Value::Null, "{asked}");
    assert_eq!(asked["data"]["status"], "active", "{asked}");
    assert_eq!(asked["data"]["clients_id"], client, "{asked}");
    // What the assign refuses for what it is (a field it lacks, a package in another
    // currency) is refused as such, without asking the handler (the log's count below).
    let body = json!({"name": "Euro", "period": "P1M", "fee": "5", "currency": "EUR"});
    let euro = s.ok("/api/v1/packages", body, 201).await;
    for (body, field) in [
        (
            json!({"clients_id": client, "packages_id": package["id"], "startdt": "x"}),
            "startdt",
        ),
        (
            json!({"clients_id": client, "packages_id": euro["id"]}),
            "packages_id",
        ),
    ] {
        let (st, v) = s.post(SUBS, body).await;
        assert_eq!(st, 422, "{v}");
        assert_error(&v, "validation_failed");
        assert!(v["error"]["data"]["fields"][field].is_string(), "{v}");
    }

    crate::harness::write_script(&s, "gate.sh", &script(true), true);
    let sub = assign(&s, client, &package, None).await;
    assert_eq!(sub["status"], "active", "{sub}");
    assert_eq!(events_of(&s, &sub, ASSIGN).await.len(), 1);
    let activated = events_of(&s, &sub, ACTIVATE).await;
    assert_eq!(activated.len(), 1);
    assert_eq!(
        activated[0]["previous"]["status"], "pending",
        "{activated:?}"
    );
    let fees = charges(&s, client).await;
    assert_eq!(fees.len(), 1, "{fees:?}");
    let (_, log) = s
        .get(&format!("/api/v1/executions?handlers_id={}", h["id"]))
        .await;
    assert_eq!(log["total"], 2, "asked once per request: {log}");
}

/// When the assign's own before handlers change what the activation was asked about
/// (another package), the two are not written together: the subscription is assigned
/// pending, and the scheduler activates it, asking the activation's handlers about what
/// was written. What they are asked ahead has no made-up id in `previous`.
#[tokio::test]
async fn an_assign_changed_by_its_handlers_is_activated_by_the_scheduler_asked_again() {
    let s = Server::start().await;
    let (client, cheap) = fixture(&s, "P1M", json!("10")).await;
    let dear = s
        .ok(
            "/api/v1/packages",
            json!({"name": "Dear", "period": "P1M", "fee": "25"}),
            201,
        )
        .await;
    crate::harness::write_script(
        &s,
        "record.sh",
        "#!/bin/sh\ncat >> asked.jsonl\necho >> asked.jsonl\n",
        true,
    );
    let change = format!(
        "#!/usr/bin/env python3\nimport json, sys\np = json.load(sys.stdin)\n\
         p['data']['packages_id'] = {}\nprint(json.dumps(p))\n",
        dear["id"]
    );
    crate::harness::write_script(&s, "upsell.py", &change, true);
    for (name, event, task) in [
        ("record", ACTIVATE, "record.sh"),
        ("upsell", ASSIGN, "upsell.py"),
    ] {
        s.ok(
            "/api/v1/handlers",
            json!({"name": name, "event": event, "stage": "before", "type": "script",
                   "task": task}),
            201,
        )
        .await;
    }
    let sub = assign(&s, client, &cheap, None).await;
    assert_eq!(sub["packages_id"], dear["id"], "{sub}");
    assert_eq!(
        sub["status"], "pending",
        "not activated with the assign: {sub}"
    );
    let sub = wait_for(10, "the scheduler's activation", || async {
        let now = get(&s, &sub).await;
        (now["status"] == "active").then_some(now)
    })
    .await;
    let asked: Vec<Value> = std::fs::read_to_string(s.dir.path().join("scripts/asked.jsonl"))
        .expect("asked")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(asked.len(), 2, "ahead, then by the scheduler: {asked:?}");
    assert_eq!(asked[0]["data"]["packages_id"], cheap["id"]);
    assert!(asked[0]["previous"].get("id").is_none(), "{asked:?}");
    assert_eq!(
        asked[1]["data"]["packages_id"], dear["id"],
        "what was written"
    );
    assert_eq!(asked[1]["event"]["object_id"], sub["id"]);
    let fees = charges(&s, client).await;
    assert_eq!(fees.len(), 1, "{fees:?}");
    assert_eq!(fees[0]["amount"], "25");
}

/// A package's PATCH refuses a field the package lacks (a typo such as `price`)
/// instead of ignoring it with a 200; the package read and sent back passes.
#[tokio::test]
async fn a_package_patch_refuses_a_field_the_package_lacks() {
    let s = Server::start().await;
    let (_, package) = fixture(&s, "P1M", json!("10")).await;
    let path = format!("/api/v1/packages/{}", package["id"]);
    let (st, v) = s.patch(&path, json!({"fee": "5", "price": "5"})).await;
    assert_eq!(st, 422, "{v}");
    assert_error(&v, "validation_failed");
    assert!(v["error"]["data"]["fields"]["price"].is_string(), "{v}");
    let (_, mut read) = s.get(&path).await;
    assert_eq!(read, package, "a refused patch changes nothing");
    read["fee"] = json!("5");
    let (st, v) = s.patch(&path, read).await;
    assert_eq!((st, &v["fee"]), (200, &json!("5")), "{v}");
    // Sent back as read, nothing changes: not even updated_at.
    let (st, again) = s.patch(&path, v.clone()).await;
    assert_eq!((st, &again), (200, &v), "{again}");
    let h = json!({"name": "h", "event": "clients.create", "task": "http://127.0.0.1:9/h"});
    let h = s.ok("/api/v1/handlers", h, 201).await;
    let handler = format!("/api/v1/handlers/{}", h["id"]);
    let (_, read) = s.get(&handler).await;
    let (st, again) = s.patch(&handler, read.clone()).await;
    assert_eq!(
        (st, &again["updated_at"]),
        (200, &read["updated_at"]),
        "{again}"
    );
}

/// An archived client takes no new transactions (SPEC §3), and a new period's fee is
/// one: a renewal or an activation that would charge it is a 409, and the scheduler
/// leaves its subscriptions alone; closing one still works, and charges nothing.
#[tokio::test]
async fn an_archived_client_is_charged_no_more_fees() {
    let s = Server::start().await;
    let (c, p) = fixture(&s, "PT1S", json!("4")).await;
    let active = assign(&s, c, &p, None).await;
    let pending = assign(&s, c, &p, Some(fmt(now() + SEC))).await;
    assert_eq!(charges(&s, c).await.len(), 1, "the active one's first fee");
    let (st, v) = s
        .post(&format!("/api/v1/clients/{c}/archive"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    let n = s.events().await.len();
    for (sub, action) in [(&active, "renew"), (&pending, "activate")] {
        let (st, v) = act(&s, sub, action).await;
        assert_eq!(st, 409, "{action}: {v}");
        assert_error(&v, "conflict");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("archived"), "{v}");
    }
    // Past the active one's period end and the pending one's start, and several of the
    // scheduler's passes.
    pass(ts(&active["period_end"]).max(ts(&pending["start_dt"])) + 2 * SEC).await;
    assert_eq!(charges(&s, c).await.len(), 1, "no fee after the archive");
    assert_eq!(renewals(&s, &active).await, 0);
    assert!(events_of(&s, &pending, ACTIVATE).await.is_empty());
    assert_eq!(get(&s, &pending).await["status"], "pending");
    assert_eq!(
        s.events_since(n).await,
        Vec::<Value>::new(),
        "nothing raised"
    );
    for sub in [&active, &pending] {
        let (st, v) = act(&s, sub, "close").await;
        assert_eq!(st, 200, "{v}");
    }
    assert_eq!(charges(&s, c).await.len(), 1, "closing charges nothing");
}

/// A package's fee is charged as it is, in its currency: its currency cannot change
/// while a subscription that is not closed charges it (a client is assigned only
/// packages in its own currency).
#[tokio::test]
async fn a_package_charging_open_subscriptions_keeps_its_currency() {
    let s = Server::start().await;
    let (c, p) = fixture(&s, "PT1H", json!("1")).await;
    let package = format!("/api/v1/packages/{}", p["id"]);
    // Pending: no fee charged yet, so no transaction holds the client's currency.
    let sub = assign(&s, c, &p, Some(fmt(now() + DAY))).await;
    let (st, v) = s.patch(&package, json!({"currency": "EUR"})).await;
    assert_eq!(st, 409, "{v}");
    assert_error(&v, "conflict");
    let client = format!("/api/v1/clients/{c}");
    let (st, v) = s.patch(&client, json!({"currency": "EUR"})).await;
    assert_eq!(st, 422, "{v}");
    assert!(v["error"]["data"]["fields"]["currency"].is_string(), "{v}");
    let (_, now) = s.get(&package).await;
    assert_eq!(now["currency"], "USD", "{now}");
    // The same currency, or other fields, still change.
    let (st, v) = s
        .patch(&package, json!({"currency": "USD", "fee": "2"}))
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = act(&s, &sub, "close").await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s.patch(&package, json!({"currency": "EUR"})).await;
    assert_eq!((st, &v["currency"]), (200, &json!("EUR")), "{v}");
    let (st, v) = s.patch(&client, json!({"currency": "EUR"})).await;
    assert_eq!((st, &v["currency"]), (200, &json!("EUR")), "{v}");
}

//! Helpers shared by the delivery tests: handlers, clients, the monitoring reads, and
//! RFC 3339 times.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::Server;

pub const HANDLERS: &str = "/api/v1/handlers";

/// Registers a handler (201 expected) and returns the body (with `secret`).
pub async fn create_handler(s: &Server, body: Value) -> Value {
    let (st, v) = s.post(HANDLERS, body.clone()).await;
    assert_eq!(st, 201, "POST /handlers {body}: {v}");
    v
}

/// An enabled after handler of `event` calling `url`, with a retry schedule.
pub async fn http_handler(s: &Server, event: &str, url: &str, schedule: &[u32]) -> Value {
    create_handler(
        s,
        json!({"name": format!("hook {event} {url}"), "event": event, "type": "http",
               "task": url, "retry_schedule": schedule}),
    )
    .await
}

/// Creates a client; returns its id.
pub async fn client(s: &Server, name: &str) -> i64 {
    let c = s.ok("/api/v1/clients", json!({"name": name}), 201).await;
    c["id"].as_i64().expect("client id")
}

/// Renames a client (one `clients.update`).
pub async fn rename(s: &Server, id: i64, name: &str) {
    let (st, v) = s
        .patch(&format!("/api/v1/clients/{id}"), json!({"name": name}))
        .await;
    assert_eq!(st, 200, "PATCH client {id}: {v}");
}

/// The uid of the newest `events_id` event of `object_id`.
pub async fn uid_of(s: &Server, events_id: &str, object_id: i64) -> String {
    let (st, v) = s
        .get(&format!(
            "/api/v1/events?events_id={events_id}&object_id={object_id}&limit=1"
        ))
        .await;
    assert_eq!(st, 200, "{v}");
    v["items"][0]["event"]["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("no {events_id} event of {object_id}: {v}"))
        .to_string()
}

/// Every uid raised so far, oldest first.
pub async fn all_uids(s: &Server) -> Vec<String> {
    s.events()
        .await
        .iter()
        .map(|e| e["event"]["uid"].as_str().expect("uid").to_string())
        .collect()
}

/// GET a list (200 expected); returns its items.
pub async fn items(s: &Server, path: &str) -> Vec<Value> {
    let (st, v) = s.get(path).await;
    assert_eq!(st, 200, "GET {path}: {v}");
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {path}: no items: {v}"))
        .clone()
}

/// Executions matching a query string, newest first.
pub async fn executions(s: &Server, query: &str) -> Vec<Value> {
    items(s, &format!("/api/v1/executions?limit=1000&{query}")).await
}

/// Deliveries matching a query string, newest first.
pub async fn deliveries(s: &Server, query: &str) -> Vec<Value> {
    items(s, &format!("/api/v1/deliveries?limit=1000&{query}")).await
}

/// Waits until handler `h` has `n` deliveries with `status`; returns them.
pub async fn wait_deliveries(s: &Server, h: i64, status: &str, n: usize, secs: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let d = deliveries(s, &format!("handlers_id={h}&status={status}")).await;
        if d.len() >= n {
            return d;
        }
        if Instant::now() > deadline {
            let all = deliveries(s, &format!("handlers_id={h}")).await;
            let log = executions(s, &format!("handlers_id={h}")).await;
            panic!(
                "timed out waiting for {n} {status} deliveries of handler {h}\n\
                 deliveries: {all:#?}\nexecutions: {log:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The delivery of handler `h` for event `uid`.
pub async fn delivery_of(s: &Server, h: i64, uid: &str) -> Value {
    deliveries(s, &format!("handlers_id={h}"))
        .await
        .into_iter()
        .find(|d| d["event_uid"] == uid)
        .unwrap_or_else(|| panic!("no delivery of handler {h} for {uid}"))
}

/// `GET /metrics` (no key).
pub async fn metrics(s: &Server) -> String {
    s.metrics().await
}

/// The value of a sample line of the metrics text (`name{labels} value`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Microseconds since the epoch of an API time (`2026-11-22T10:15:30.123456Z`).
pub fn micros(t: &Value) -> i64 {
    let s = t.as_str().unwrap_or_else(|| panic!("not a time: {t}"));
    billhook_domain::Timestamp::parse(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .micros()
}

/// Polls `done` until it holds or `secs` pass, whichever is first: a bounded quiet
/// period for asserting that something did *not* happen.
pub async fn settle<F, Fut>(secs: f64, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end && !done().await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The webhook ids of a list of hits.
pub fn uids(hits: &[crate::receiver::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.uid()).collect()
}

/// Keeps the first occurrence of each item, in order.
pub fn first_seen(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter()
        .filter(|x| seen.insert(x.clone()))
        .collect()
}

/// Now, in microseconds since the epoch (the server runs on this machine's clock).
pub fn now_micros() -> i64 {
    billhook_domain::Timestamp::now().micros()
}

//! Helpers: registering before handlers, scripts, the execution log, and proving that a
//! refused action wrote nothing.

use serde_json::{json, Value};

use crate::harness::{assert_error, Server};

/// Registers a before handler: `extra` over `{name, stage: before, type: http,
/// event: clients.*}`; returns its id.
pub async fn hook(s: &Server, extra: Value) -> i64 {
    let mut body = json!({"name": "before hook", "stage": "before", "type": "http",
                          "event": "clients.*"});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let h = s.ok("/api/v1/handlers", body, 201).await;
    assert_eq!(h["stage"], "before", "{h}");
    h["id"].as_i64().expect("handler id")
}

/// An HTTP before handler on `url` with `on_failure`, for `clients.*`.
pub async fn http_hook(s: &Server, name: &str, url: &str, on_failure: &str) -> i64 {
    hook(
        s,
        json!({"name": name, "task": url, "on_failure": on_failure}),
    )
    .await
}

/// Creates a client (answer 201); returns it.
pub async fn client(s: &Server, name: &str) -> Value {
    s.ok("/api/v1/clients", json!({"name": name}), 201).await
}

/// The id of an object.
pub fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

/// Writes an executable `scripts/<name>` in the server's working directory (its default
/// scripts directory).
pub fn script(s: &Server, name: &str, body: &str) {
    crate::harness::write_script(s, name, body, true);
}

/// Execution rows matching `query`, oldest first.
pub async fn executions(s: &Server, query: &str) -> Vec<Value> {
    let (st, v) = s
        .get(&format!("/api/v1/executions?limit=1000&{query}"))
        .await;
    assert_eq!(st, 200, "{v}");
    let mut items = v["items"].as_array().expect("items").clone();
    items.reverse();
    items
}

/// The before-stage rows of one handler, oldest first.
pub async fn before_rows(s: &Server, handlers_id: i64) -> Vec<Value> {
    executions(s, &format!("handlers_id={handlers_id}&stage=before")).await
}

/// Asserts a 422 refusal with `code`, naming handler `handlers_id` called `name`.
pub fn assert_refused(status: u16, body: &Value, code: &str, handlers_id: i64, name: &str) {
    assert_eq!(status, 422, "{body}");
    assert_error(body, code);
    assert_eq!(body["error"]["data"]["handlers_id"], handlers_id, "{body}");
    assert_eq!(body["error"]["data"]["handler"], name, "{body}");
}

/// The error message of an error body.
pub fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What a refused action must leave alone: all events, all clients.
pub struct Snapshot {
    events: Vec<Value>,
    clients: Value,
}

/// Takes a snapshot.
pub async fn snapshot(s: &Server) -> Snapshot {
    let (st, clients) = s.get("/api/v1/clients?limit=1000").await;
    assert_eq!(st, 200, "{clients}");
    Snapshot {
        events: s.events().await,
        clients,
    }
}

/// Asserts that nothing was written and no event raised since `before`.
pub async fn assert_nothing_written(s: &Server, before: &Snapshot) {
    let now = snapshot(s).await;
    assert_eq!(
        now.events.len(),
        before.events.len(),
        "a refused action raised events: {:?}",
        &now.events[before.events.len().min(now.events.len())..]
    );
    assert_eq!(now.events, before.events);
    assert_eq!(now.clients, before.clients, "a refused action wrote");
}

/// The events raised since `before` (oldest first).
pub async fn new_events(s: &Server, before: &Snapshot) -> Vec<Value> {
    s.events_since(before.events.len()).await
}

/// GET one client.
pub async fn get_client(s: &Server, id: i64) -> Value {
    let (st, v) = s.get(&format!("/api/v1/clients/{id}")).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Creates a client through before handler `h` (named `name`), whose answer goes past
/// the 8 MiB read: a handler failure that says so, nothing written, and the log keeping
/// the answer's first 64 KiB.
pub async fn assert_refused_as_too_long(s: &Server, h: i64, name: &str) {
    let before = snapshot(s).await;
    let (st, v) = s
        .post("/api/v1/clients", json!({"name": "Too Long An Answer"}))
        .await;
    assert_refused(st, &v, "handler_failed", h, name);
    assert_eq!(message(&v), "the response is longer than 8 MiB", "{v}");
    assert_nothing_written(s, &before).await;
    let rows = before_rows(s, h).await;
    let failed = rows.last().unwrap();
    let error = &failed["error"];
    assert_eq!(
        error, "the response is longer than 8 MiB",
        "{}",
        failed["id"]
    );
    let logged = failed["response_body"].as_str().unwrap();
    assert_eq!(logged.len(), 64 * 1024, "the log keeps the first 64 KiB");
}

//! Malformed input to the provisioning routes: a 4xx with an error body, never a 500.

use serde_json::{json, Value};

use crate::harness::Server;
use crate::util::{create_handler, HANDLERS};

fn check(what: &str, st: u16, v: &Value) {
    assert!(
        matches!(st, 400 | 404 | 405 | 409 | 422),
        "{what}: answered {st}: {v}"
    );
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    assert!(v["error"]["data"]["code"].is_string(), "{what}: {v}");
}

#[tokio::test]
async fn malformed_input_is_refused_without_a_500() {
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "h", "event": "clients.create", "task": "http://127.0.0.1:9/x"}),
    )
    .await;
    let id = h["id"].clone();
    let good = json!({"name": "n", "event": "clients.create", "task": "http://127.0.0.1:9/x"});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let bodies = [
        with("priority", json!("high")),
        with("retry_schedule", json!([-1])),
        with("retry_schedule", json!("5")),
        with("retry_schedule", json!([1.5])),
        with("timeout_ms", json!(-5)),
        with("timeout_ms", json!(0)),
        with("stage", json!("during")),
        with("type", json!("ftp")),
        with("status", json!("sleeping")),
        with("on_failure", json!("explode")),
        with("event", json!(42)),
        with("name", json!("")),
        with("task", json!(null)),
        json!([1, 2]),
        json!("text"),
    ];
    for body in bodies {
        let (st, v) = s.post(HANDLERS, body.clone()).await;
        check(&format!("POST /handlers {body}"), st, &v);
        let (st, v) = s.patch(&format!("{HANDLERS}/{id}"), body.clone()).await;
        if st != 200 {
            check(&format!("PATCH {body}"), st, &v);
        }
    }
    for raw in ["{", "nul\u{0}l", "{\"name\": \"a\u{0}b\"}", ""] {
        let (st, v) = s.raw("POST", HANDLERS, raw).await;
        check(&format!("raw {raw:?}"), st, &v);
    }
    for (method, path, body) in [
        ("GET", "/api/v1/handlers/abc".to_string(), None),
        ("GET", "/api/v1/handlers/99999999999999999999".into(), None),
        ("GET", "/api/v1/handlers?limit=abc".into(), None),
        ("GET", "/api/v1/executions?handlers_id=abc".into(), None),
        ("GET", "/api/v1/executions?object_id=1.5".into(), None),
        ("GET", "/api/v1/executions?to=2026-13-45".into(), None),
        ("GET", "/api/v1/deliveries?handlers_id=x".into(), None),
        ("GET", "/api/v1/deliveries?offset=-1".into(), None),
        (
            "POST",
            "/api/v1/deliveries/abc/retry".into(),
            Some(json!({})),
        ),
        (
            "POST",
            format!("{HANDLERS}/{id}/recover"),
            Some(json!({"since": "yesterday"})),
        ),
        (
            "POST",
            format!("{HANDLERS}/{id}/recover"),
            Some(json!({"since": 5})),
        ),
        (
            "POST",
            format!("{HANDLERS}/{id}/test"),
            Some(json!({"events_id": 5})),
        ),
        ("POST", format!("{HANDLERS}/{id}/test"), Some(json!([]))),
        (
            "POST",
            "/api/v1/handlers/abc/enable".into(),
            Some(json!({})),
        ),
        ("GET", "/api/v1/events/%00".into(), None),
    ] {
        let (st, v) = s.call(method, &path, body).await;
        check(&format!("{method} {path}"), st, &v);
    }
}

//! The reference example handler (Flask, run with python3) registered for
//! `clients.create`, as the vendor documentation describes it: it receives the event
//! after, and (SPEC §4) is a valid before handler too.

use serde_json::{json, Value};

use crate::flask_example::start_flask;
use crate::harness::Server;
use crate::util::{client, create_handler, executions, uid_of, wait_deliveries};

#[tokio::test]
async fn the_reference_flask_handler_receives_clients_create() {
    let (_python, port) = start_flask().await;
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "Flask example", "event": "clients.create", "type": "http",
               "task": format!("http://127.0.0.1:{port}/api"), "retry_schedule": [0, 0]}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    let c = client(&s, "Flask Client").await;
    let uid = uid_of(&s, "clients.create", c).await;
    wait_deliveries(&s, id, "succeeded", 1, 30).await;
    let log = executions(&s, &format!("handlers_id={id}&status=success")).await;
    assert_eq!(log.len(), 1, "{log:?}");
    let e = &log[0];
    assert_eq!(e["event_uid"], uid);
    assert_eq!(e["response_status"], 200);
    let echoed: Value = serde_json::from_str(e["response_body"].as_str().unwrap())
        .expect("the example echoes JSON");
    assert_eq!(echoed, e["request"], "the example echoes the payload");
    assert_eq!(echoed["data"]["name"], "Flask Client");
}

#[tokio::test]
async fn the_reference_flask_handler_is_a_valid_before_handler() {
    let (_python, port) = start_flask().await;
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "Flask before", "event": "clients.create", "stage": "before",
               "task": format!("http://127.0.0.1:{port}/api")}),
    )
    .await;
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Echoed", "email": "e@x.org"}),
            201,
        )
        .await;
    assert_eq!(c["name"], "Echoed", "an echo allows the action unchanged");
    assert_eq!(c["email"], "e@x.org");
    let log = executions(&s, &format!("handlers_id={}", h["id"])).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["stage"], "before");
    assert_eq!(log[0]["status"], "success", "{}", log[0]);
}

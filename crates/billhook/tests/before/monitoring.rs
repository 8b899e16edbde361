//! The execution log of the before stage, `POST /handlers/{id}/test` on a before
//! handler, registration rules, and the reference Flask example as a before handler.

use serde_json::{json, Value};

use crate::flask_example::start_flask;
use crate::harness::{assert_error, Server};
use crate::receiver::{with_data, Receiver, Reply};
use crate::util::{before_rows, client, executions, get_client, hook, id};

#[tokio::test]
async fn the_execution_log_has_before_rows_with_what_was_modified() {
    let s = Server::start().await;
    let cid = id(&client(&s, "Logged").await);
    let changes = json!({"name": "Changed by A", "tags": ["logged"]});
    let fields = changes.clone();
    let a = Receiver::start(move |p| Reply::json(200, &with_data(p, &fields)).after_ms(150)).await;
    let b = Receiver::echo().await;
    let ha = hook(&s, json!({"name": "A", "task": a.url(), "priority": 10})).await;
    let hb = hook(&s, json!({"name": "B", "task": b.url(), "priority": 20})).await;
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "Requested"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "Changed by A");

    let rows = before_rows(&s, ha).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["stage"], "before", "{row}");
    assert_eq!(row["status"], "success", "{row}");
    assert_eq!(row["handler"], "A");
    assert_eq!(row["events_id"], "clients.update");
    assert_eq!(row["object_id"], cid);
    assert_eq!(row["response_status"], 200);
    assert!(row["duration_ms"].as_i64().unwrap() >= 150, "{row}");
    assert_eq!(row["modified"], changes, "the changed fields: {row}");
    assert_eq!(row["request"], a.hits()[0], "the payload sent");
    assert_eq!(row["request"]["data"]["name"], "Requested");

    let rows = before_rows(&s, hb).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "success");
    assert!(rows[0]["modified"].is_null(), "{rows:?}");
    assert_eq!(rows[0]["request"]["data"]["name"], "Changed by A");
    assert_eq!(rows[0]["event_uid"], row["event_uid"], "one event, one uid");
    assert!(rows[0]["duration_ms"].as_i64().is_some());

    b.set(|_| Reply::json(403, &json!({"message": "B says no"})));
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "Refused"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    let rows = executions(&s, &format!("handlers_id={hb}&status=fail&stage=before")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["response_status"], 403);
    assert!(
        rows[0]["error"].as_str().unwrap().contains("B says no"),
        "{rows:?}"
    );
    assert!(rows[0]["modified"].is_null());
    let after = executions(&s, &format!("handlers_id={ha}&stage=after")).await;
    assert!(after.is_empty(), "{after:?}");

    // /metrics counts before calls by verdict, and their durations, by handler.
    let text = s.metrics().await;
    let sample = |series: String| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let calls = |h: i64, verdict: &str| {
        sample(format!(
            "billhook_before_calls_total{{handlers_id=\"{h}\",verdict=\"{verdict}\"}}"
        ))
    };
    assert_eq!(calls(ha, "allow"), Some(2.0), "{text}");
    assert_eq!(calls(hb, "allow"), Some(1.0), "{text}");
    assert_eq!(calls(hb, "forbid"), Some(1.0), "{text}");
    // What did not happen reads 0 rather than being absent.
    assert_eq!(calls(ha, "forbid"), Some(0.0), "{text}");
    assert_eq!(calls(ha, "failure"), Some(0.0), "{text}");
    assert_eq!(calls(hb, "failure"), Some(0.0), "{text}");
    let after_series = |h: i64| format!("billhook_deliveries_total{{handlers_id=\"{h}\"");
    let wrong = [ha, hb].map(|h| text.contains(&after_series(h)));
    assert_eq!(
        wrong,
        [false, false],
        "no after series for before handlers:\n{text}"
    );
    for h in [ha, hb] {
        let count = sample(format!(
            "billhook_call_duration_seconds_count{{handlers_id=\"{h}\"}}"
        ));
        assert_eq!(count, Some(2.0), "{text}");
    }
    let found = executions(&s, "stage=before&q=B%20says%20no").await;
    assert_eq!(found.len(), 1, "{found:?}");
}

#[tokio::test]
async fn the_test_route_calls_a_before_handler() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let h = hook(
        &s,
        json!({"name": "tested", "task": r.url(), "event": "clients.create"}),
    )
    .await;
    let e = s
        .ok(&format!("/api/v1/handlers/{h}/test"), json!({}), 200)
        .await;
    assert_eq!(e["handlers_id"], h, "{e}");
    assert_eq!(e["stage"], "before", "{e}");
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(e["events_id"], "clients.create", "{e}");
    assert_eq!(e["response_status"], 200, "{e}");
    let hits = r.wait_hits(1).await;
    assert_eq!(hits[0]["event"]["stage"], "before", "{hits:?}");
    assert_eq!(hits[0]["event"]["events_id"], "clients.create");
    // As a real create's before call: nothing is stored yet, so no id.
    assert_eq!(hits[0]["event"]["object_id"], Value::Null, "{hits:?}");
    assert_eq!(hits[0]["data"]["id"], Value::Null, "{hits:?}");
    assert_eq!(e["object_id"], Value::Null, "{e}");
    assert_eq!(e["request"], hits[0]);
    let e = s
        .ok(
            &format!("/api/v1/handlers/{h}/test"),
            json!({"events_id": "clients.update"}),
            200,
        )
        .await;
    assert_eq!(e["events_id"], "clients.update", "{e}");
    assert_eq!(e["stage"], "before", "{e}");
    assert!(
        e["request"]["event"]["object_id"].is_i64(),
        "an update's object exists: {e}"
    );
    // The log's row is about no stored object: the sample's id may be a real client's.
    assert_eq!(e["object_id"], Value::Null, "{e}");
    assert_eq!(e["attempt"], 0, "a test, not an attempt: {e}");
    let rows = before_rows(&s, h).await;
    assert_eq!(rows.len(), 2, "the test calls are logged: {rows:?}");
}

#[tokio::test]
async fn a_before_handler_for_an_after_only_event_is_refused() {
    let s = Server::start().await;
    for event in [
        "clients.balance_zero",
        "clients.balance_notzero",
        "importd.process_success",
        "email_rates_manager.*",
    ] {
        let (st, v) = s
            .post(
                "/api/v1/handlers",
                json!({"name": "x", "event": event, "stage": "before",
                       "task": "http://127.0.0.1:9/"}),
            )
            .await;
        assert_eq!(st, 422, "{event}: {v}");
        assert_error(&v, "validation_failed");
        let (st, v) = s
            .post(
                "/api/v1/handlers",
                json!({"name": "x", "event": event, "stage": "after",
                       "task": "http://127.0.0.1:9/"}),
            )
            .await;
        assert_eq!(st, 201, "{event} after is fine: {v}");
    }
    let (_, list) = s.get("/api/v1/handlers?stage=before").await;
    assert_eq!(list["total"], 0, "{list}");
}

#[tokio::test]
async fn the_reference_flask_example_is_a_valid_before_handler() {
    let (_python, port) = start_flask().await;
    let s = Server::start().await;
    let h = hook(
        &s,
        json!({"name": "Flask example", "task": format!("http://127.0.0.1:{port}/api"),
               "on_failure": "forbid"}),
    )
    .await;
    let input = json!({"name": "Flask Client", "email": "f@flask.example", "credit": "1.5",
                       "tags": ["py"]});
    let c = s.ok("/api/v1/clients", input.clone(), 201).await;
    for k in ["name", "email", "credit", "tags"] {
        assert_eq!(c[k], input[k], "{k} unchanged: {c}");
    }
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{}", id(&c)),
            json!({"name": "Via Flask"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(get_client(&s, id(&c)).await["name"], "Via Flask");
    let rows = before_rows(&s, h).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(row["status"], "success", "{row}");
        assert!(row["modified"].is_null(), "the echo changes nothing: {row}");
        assert_eq!(row["response_status"], 200);
    }
}

/// A forbidding message with a NUL (PostgreSQL's text cannot hold one) is shown and
/// logged with U+FFFD in its place, on both databases.
#[tokio::test]
async fn a_forbidding_message_with_a_nul_is_shown_and_logged() {
    let s = Server::start().await;
    let r = Receiver::start(|_| Reply::json(403, &json!({"message": "no\u{0}way"}))).await;
    let h = hook(
        &s,
        json!({"name": "nul", "task": r.url(), "event": "clients.create"}),
    )
    .await;
    let (st, v) = s.post("/api/v1/clients", json!({"name": "Nul"})).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["message"], "no\u{fffd}way", "{v}");
    let rows = before_rows(&s, h).await;
    assert_eq!(rows.len(), 1, "the call is logged: {rows:?}");
    assert!(
        rows[0]["error"].as_str().unwrap().contains("no\u{fffd}way"),
        "{rows:?}"
    );
}

//! Handler failures (5xx, invalid JSON, network errors, timeouts) under `on_failure`
//! forbid and allow, and the cool-down of a handler that keeps failing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::Server;
use crate::receiver::{Receiver, Reply};
use crate::util::{
    assert_nothing_written, assert_refused, before_rows, client, get_client, http_hook, id,
    message, snapshot,
};

/// Every failing answer refuses the action under forbid and is ignored under allow.
#[tokio::test]
async fn failures_refuse_under_forbid_and_are_ignored_under_allow() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let h = http_hook(&s, "flaky", &r.url(), "forbid").await;
    let cid = id(&client(&s, "Target").await);
    let failures = [
        Reply::text(500, "boom"),
        Reply::json(503, &json!({"message": "maintenance"})),
        Reply::text(502, ""),
        Reply::text(200, "this is not JSON {"),
        Reply::json(200, &json!({"data": "not an object"})),
    ];
    let mut credit = 0;
    for reply in failures {
        let shown = format!("{reply:?}");
        r.set(move |_| reply.clone());
        s.patch(
            &format!("/api/v1/handlers/{h}"),
            json!({"on_failure": "forbid"}),
        )
        .await;
        let before = snapshot(&s).await;
        let (st, v) = s.post("/api/v1/clients", json!({"name": "Never"})).await;
        assert_refused(st, &v, "handler_failed", h, "flaky");
        let (st, v) = s
            .patch(&format!("/api/v1/clients/{cid}"), json!({"credit": "1000"}))
            .await;
        assert_refused(st, &v, "handler_failed", h, "flaky");
        assert!(!message(&v).is_empty(), "{shown}: {v}");
        assert_nothing_written(&s, &before).await;

        let (st, v) = s
            .patch(
                &format!("/api/v1/handlers/{h}"),
                json!({"on_failure": "allow"}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        credit += 1;
        let (st, v) = s
            .patch(&format!("/api/v1/clients/{cid}"), json!({"credit": credit}))
            .await;
        assert_eq!(st, 200, "{shown}: allow goes on: {v}");
        assert_eq!(v["credit"], credit.to_string(), "{shown}: {v}");
        assert_eq!(get_client(&s, cid).await, v);
        // Reset the consecutive-failure count so the cool-down stays out of this test.
        r.set(|p| Reply::json(200, p));
        let (st, v) = s
            .patch(&format!("/api/v1/clients/{cid}"), json!({"name": "Target"}))
            .await;
        assert_eq!(st, 200, "{v}");
    }
    let rows = before_rows(&s, h).await;
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "fail").count(),
        15,
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_network_error_is_a_handler_failure() {
    let s = Server::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let h = http_hook(
        &s,
        "nobody home",
        &format!("http://127.0.0.1:{port}/"),
        "forbid",
    )
    .await;
    let before = snapshot(&s).await;
    let (st, v) = s.post("/api/v1/clients", json!({"name": "Lost"})).await;
    assert_refused(st, &v, "handler_failed", h, "nobody home");
    assert_nothing_written(&s, &before).await;
    let rows = before_rows(&s, h).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "fail");
    assert!(rows[0]["error"].is_string(), "{rows:?}");
}

/// A receiver slower than `timeout_ms` is a failure, and the request does not wait for it.
#[tokio::test]
async fn a_timeout_is_a_handler_failure() {
    let s = Server::start().await;
    let cid = id(&client(&s, "Patient").await);
    let r = Receiver::start(|p| Reply::json(200, p).after_ms(5000)).await;
    let h = crate::util::hook(
        &s,
        json!({"name": "slow", "task": r.url(), "timeout_ms": 300, "on_failure": "forbid"}),
    )
    .await;
    let before = snapshot(&s).await;
    let started = Instant::now();
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "Hurried"}),
        )
        .await;
    let took = started.elapsed();
    assert_refused(st, &v, "handler_failed", h, "slow");
    assert!(message(&v).contains("timeout"), "{v}");
    assert!(took < Duration::from_millis(3000), "waited {took:?}");
    assert_nothing_written(&s, &before).await;
    let rows = before_rows(&s, h).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "fail");
    assert!(
        rows[0]["error"].as_str().unwrap().contains("timeout"),
        "{rows:?}"
    );

    s.patch(
        &format!("/api/v1/handlers/{h}"),
        json!({"on_failure": "allow"}),
    )
    .await;
    let started = Instant::now();
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "Hurried"}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "Hurried");
    assert!(took < Duration::from_millis(3000), "waited {took:?}");
    assert_eq!(r.count(), 2);
}

/// After 5 consecutive failures an `allow` handler is skipped: not called, logged as a
/// failed execution that says it is cooling down; the chain and the action go on.
#[tokio::test]
async fn a_handler_failing_five_times_cools_down() {
    let s = Server::start().await;
    let failing = Receiver::replying(Reply::text(500, "down")).await;
    let next = Receiver::echo().await;
    let h = crate::util::hook(
        &s,
        json!({"name": "dead", "task": failing.url(), "on_failure": "allow", "priority": 10}),
    )
    .await;
    let h2 = crate::util::hook(
        &s,
        json!({"name": "alive", "task": next.url(), "on_failure": "forbid", "priority": 20}),
    )
    .await;
    let cid = id(&client(&s, "Cool").await);
    assert_eq!(failing.count(), 1, "the create was the first failure");
    for credit in 1..=4 {
        let (st, v) = s
            .patch(&format!("/api/v1/clients/{cid}"), json!({"credit": credit}))
            .await;
        assert_eq!(st, 200, "{v}");
    }
    assert_eq!(failing.count(), 5);
    for credit in 5..=6 {
        let (st, v) = s
            .patch(&format!("/api/v1/clients/{cid}"), json!({"credit": credit}))
            .await;
        assert_eq!(st, 200, "the action goes on: {v}");
        assert_eq!(v["credit"], credit.to_string());
    }
    assert_eq!(failing.count(), 5, "a cooling handler is not called");
    assert_eq!(next.count(), 7, "the rest of the chain still runs");
    assert_eq!(get_client(&s, cid).await["credit"], "6");
    let rows = before_rows(&s, h).await;
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == "fail"), "{rows:?}");
    for row in &rows[5..] {
        let error = row["error"].as_str().unwrap_or_default();
        assert!(error.contains("cooling down"), "{row}");
    }
    let rows2 = before_rows(&s, h2).await;
    assert!(rows2.iter().all(|r| r["status"] == "success"), "{rows2:?}");
}

/// A 2xx answer that is JSON but not an object, or whose `allow` is not a boolean, is a
/// broken handler's: a failure, not a yes (both were taken as "allow").
#[tokio::test]
async fn a_non_object_answer_or_a_non_boolean_allow_is_a_failure() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let h = http_hook(&s, "broken", &r.url(), "forbid").await;
    for reply in [
        Reply::json(200, &json!([1, 2])),
        Reply::json(200, &json!({"allow": "false", "message": "no"})),
    ] {
        r.set(move |_| reply.clone());
        let before = snapshot(&s).await;
        let (st, v) = s.post("/api/v1/clients", json!({"name": "Never"})).await;
        assert_refused(st, &v, "handler_failed", h, "broken");
        assert_nothing_written(&s, &before).await;
    }
}

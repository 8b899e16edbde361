//! The logs' retention (`log_retention_secs`): past it, calls leave the execution log,
//! and events whose every delivery succeeded leave the event log with their
//! deliveries; an event with a delivery failed or still pending stays, whatever its age.

use serde_json::json;

use crate::harness::{wait_for, Server};
use crate::receiver::Receiver;
use crate::util::{
    client, deliveries, executions, http_handler, metric, metrics, rename, uid_of, wait_deliveries,
};

/// Long enough for every call of the test's first part to be made and listed before
/// any is pruned, on a loaded machine too.
const KEEP_SECS: &str = "6";

#[tokio::test]
async fn past_the_retention_only_what_was_delivered_leaves_the_logs() {
    let s = Server::start_with(vec![("BILLHOOK_LOG_RETENTION_SECS", KEEP_SECS)]).await;
    let good = Receiver::start().await;
    let broken = Receiver::start().await;
    broken.fail_always();
    let id = |h: serde_json::Value| h["id"].as_i64().unwrap();
    let ok = id(http_handler(&s, "clients.*", &good.url("/ok"), &[0]).await);
    // Fails for good at its first call; the other waits an hour for its second.
    let bad = id(http_handler(&s, "clients.update", &broken.url("/bad"), &[]).await);
    let waiting = id(http_handler(
        &s,
        "accounting.payments.create",
        &broken.url("/wait"),
        &[3600],
    )
    .await);

    let c = client(&s, "Retained").await;
    rename(&s, c, "Retained 2").await;
    s.ok(
        "/api/v1/payments",
        json!({"clients_id": c, "amount": "1"}),
        201,
    )
    .await;
    let delivered = uid_of(&s, "clients.create", c).await;
    let failed = uid_of(&s, "clients.update", c).await;
    let (_, payments) = s
        .get("/api/v1/events?events_id=accounting.payments.create&limit=1")
        .await;
    let pending = payments["items"][0]["event"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    wait_deliveries(&s, ok, "succeeded", 2, 30).await;
    wait_deliveries(&s, bad, "failed", 1, 30).await;
    wait_for(30, "the waiting handler's first call", || async {
        (!executions(&s, &format!("handlers_id={waiting}"))
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    // (The payment raises a balance event too, delivered to `ok`.)
    let calls = executions(&s, "").await.len();
    assert!(calls >= 4, "every call logged: {calls}");

    // Past the retention every call goes, and the event delivered everywhere.
    wait_for(30, "the calls to leave the log", || async {
        executions(&s, "").await.is_empty().then_some(())
    })
    .await;
    wait_for(30, "the delivered event to leave the event log", || async {
        let (st, _) = s.get(&format!("/api/v1/events/{delivered}")).await;
        (st == 404).then_some(())
    })
    .await;
    let text = metrics(&s).await;
    let pruned = |kind: &str| {
        metric(
            &text,
            &format!("billhook_log_pruned_rows_total{{kind=\"{kind}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(pruned("executions") >= calls as f64, "{text}");
    assert!(
        pruned("events") >= 1.0 && pruned("deliveries") >= 1.0,
        "{text}"
    );
    // The failed and the pending deliveries stay, with their events.
    let (st, ev) = s.get(&format!("/api/v1/events/{failed}")).await;
    assert_eq!(st, 200, "{ev}");
    let states: Vec<(i64, String)> = ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["handlers_id"].as_i64().unwrap(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(states.contains(&(bad, "failed".into())), "{ev}");
    assert!(states.contains(&(ok, "succeeded".into())), "{ev}");
    let (st, ev) = s.get(&format!("/api/v1/events/{pending}")).await;
    assert_eq!(st, 200, "{ev}");
    assert_eq!(ev["deliveries"][0]["status"], "pending", "{ev}");
    // The balance event's delivery may have finished a moment after the others: it
    // goes a pass later.
    let left = wait_for(
        30,
        "the failed event's two deliveries and the pending one",
        || async {
            let left = deliveries(&s, "").await;
            (left.len() == 3).then_some(left)
        },
    )
    .await;
    let (_, list) = s.get("/api/v1/deliveries").await;
    assert_eq!(list["total"], 3, "{list}");

    // A retry by hand still works on the failed delivery that stayed.
    broken.succeed();
    let d = left
        .iter()
        .find(|d| d["handlers_id"] == bad)
        .expect("the failed delivery");
    let (st, v) = s
        .post(&format!("/api/v1/deliveries/{}/retry", d["id"]), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    wait_deliveries(&s, bad, "succeeded", 1, 30).await;
    // Delivered everywhere now, but just now: the old event stays a retention longer.
    // Something must not happen here, which no condition can wait for: passes run every
    // second (a tenth of the retention, at least 1 s), so 1.5 s spans at least one, and
    // the check fails when the condition on the deliveries' time is removed.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (st, ev) = s.get(&format!("/api/v1/events/{failed}")).await;
    assert_eq!(st, 200, "pruned as soon as it was delivered: {ev}");
    wait_for(
        30,
        "the event delivered at last to leave the log",
        || async {
            let (st, _) = s.get(&format!("/api/v1/events/{failed}")).await;
            (st == 404).then_some(())
        },
    )
    .await;
    // New events are delivered as before.
    let before = good.hits_on("/ok").len();
    rename(&s, c, "Retained 3").await;
    good.wait_hits("/ok", before + 1, 30).await;
}

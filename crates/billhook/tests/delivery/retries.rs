//! Failed attempts: retried by the schedule (with jitter) under the same `webhook-id`,
//! `Retry-After` of 429/503 honoured (held between a second and an hour), exhaustion to `failed`, and
//! the manual retry and recovery.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{assert_error, Server};
use crate::receiver::Receiver;
use crate::util::{
    client, create_handler, deliveries, delivery_of, executions, http_handler, micros, rename,
    uid_of, uids, wait_deliveries, HANDLERS,
};

#[tokio::test]
async fn fails_n_times_then_succeeds_under_the_same_webhook_id() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    r.fail(3, 500, None);
    let h = http_handler(&s, "clients.create", &r.url("/h"), &[0, 0, 0]).await;
    let id = h["id"].as_i64().unwrap();
    let c = client(&s, "Flaky").await;
    let uid = uid_of(&s, "clients.create", c).await;
    let hits = r.wait_hits("/h", 4, 30).await;
    assert_eq!(
        uids(&hits),
        vec![uid.clone(); 4],
        "N+1 calls, one webhook-id"
    );
    let body = &hits[0].json;
    assert!(
        hits.iter().all(|h| h.json == *body),
        "the same payload each time"
    );
    let d = wait_deliveries(&s, id, "succeeded", 1, 30).await.remove(0);
    assert_eq!(d["attempts"], 4, "{d}");
    assert_eq!(d["event_uid"], uid);
    let mut log = executions(&s, &format!("handlers_id={id}")).await;
    log.reverse();
    let got: Vec<(i64, String, i64)> = log
        .iter()
        .map(|e| {
            (
                e["attempt"].as_i64().unwrap(),
                e["status"].as_str().unwrap().to_string(),
                e["response_status"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "fail".into(), 500),
            (2, "fail".into(), 500),
            (3, "fail".into(), 500),
            (4, "success".into(), 200)
        ]
    );
    assert!(log.iter().all(|e| e["event_uid"] == uid));
    assert!(r.hits_on("/h").len() == 4, "no call after the success");
}

#[tokio::test]
async fn retry_after_of_429_and_503_is_honoured() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    http_handler(&s, "clients.*", &r.url("/h"), &[0, 0]).await;
    r.fail(1, 429, Some("2"));
    let c = client(&s, "Busy").await;
    let hits = r.wait_hits("/h", 2, 30).await;
    assert_eq!(hits[0].uid(), hits[1].uid());
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "429 Retry-After: 2 honoured over the schedule's 0: next attempt after {gap:?}"
    );

    r.fail(1, 503, Some("1"));
    rename(&s, c, "Busy 2").await;
    let hits = r.wait_hits("/h", 4, 30).await;
    assert_eq!(hits[2].uid(), hits[3].uid());
    let gap = hits[3].at - hits[2].at;
    assert!(
        gap >= Duration::from_secs(1),
        "503 Retry-After: 1 honoured: next attempt after {gap:?}"
    );

    // "Now" is held to a second: answered to every attempt, it spent the whole
    // schedule in a fraction of a second.
    r.fail(1, 429, Some("0"));
    rename(&s, c, "Busy 3").await;
    let hits = r.wait_hits("/h", 6, 30).await;
    assert_eq!(hits[4].uid(), hits[5].uid());
    let gap = hits[5].at - hits[4].at;
    assert!(
        gap >= Duration::from_millis(950),
        "429 Retry-After: 0 held to a second: next attempt after {gap:?}"
    );
}

#[tokio::test]
async fn the_next_attempt_follows_the_schedule_with_jitter_and_retry_after_is_capped() {
    let s = Server::start().await;
    let plain = Receiver::start().await;
    plain.fail_always();
    let h1 = http_handler(&s, "clients.create", &plain.url("/plain"), &[10, 10]).await;
    let capped = Receiver::start().await;
    capped.fail(5, 429, Some("99999"));
    let h2 = http_handler(&s, "clients.create", &capped.url("/capped"), &[1, 1]).await;
    // Seconds beyond any number: capped as well, not ignored for the schedule's 1 s.
    let huge = Receiver::start().await;
    huge.fail(5, 503, Some("99999999999999999999999"));
    let h3 = http_handler(&s, "clients.create", &huge.url("/huge"), &[1, 1]).await;
    let timed = Receiver::start().await;
    timed.fail(1, 500, None);
    http_handler(&s, "clients.create", &timed.url("/timed"), &[2]).await;
    let c = client(&s, "Later").await;
    let uid = uid_of(&s, "clients.create", c).await;
    let hits = timed.wait_hits("/timed", 2, 30).await;
    let gap = (hits[1].at - hits[0].at).as_secs_f64();
    // 2 s ± 20 %, plus scheduling slack on a loaded 2-core machine.
    assert!(
        (1.6..=3.5).contains(&gap),
        "schedule [2] ±20 %: the retry came {gap} s after the failure"
    );
    plain.wait_hits("/plain", 1, 30).await;
    capped.wait_hits("/capped", 1, 30).await;
    huge.wait_hits("/huge", 1, 30).await;
    for (h, low, high) in [
        (&h1, 8.0, 12.0),
        (&h2, 3590.0, 3610.0),
        (&h3, 3590.0, 3610.0),
    ] {
        let id = h["id"].as_i64().unwrap();
        let d = crate::harness::wait_for(30, "the first attempt recorded", || async {
            let d = delivery_of(&s, id, &uid).await;
            (d["attempts"] == 1).then_some(d)
        })
        .await;
        assert_eq!(d["status"], "pending", "{d}");
        let delay = (micros(&d["next_at"]) - micros(&d["updated_at"])) as f64 / 1e6;
        assert!(
            (low..=high).contains(&delay),
            "handler {id}: next attempt {delay} s after the failure, expected {low}..{high}: {d}"
        );
    }
}

#[tokio::test]
async fn an_exhausted_delivery_fails_and_can_be_retried_by_hand() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    r.fail_always();
    let h = http_handler(&s, "clients.*", &r.url("/h"), &[0, 0]).await;
    let id = h["id"].as_i64().unwrap();
    let c = client(&s, "Doomed").await;
    rename(&s, c, "Doomed 2").await;
    let first = uid_of(&s, "clients.create", c).await;
    let second = uid_of(&s, "clients.update", c).await;
    let failed = wait_deliveries(&s, id, "failed", 2, 30).await;
    // The later one waited until the earlier one finally failed.
    let order = uids(&r.hits_on("/h"));
    let mut want = vec![first.clone(); 3];
    want.extend(vec![second.clone(); 3]);
    assert_eq!(
        order, want,
        "3 attempts each, the second event after the first"
    );
    for d in &failed {
        assert_eq!(d["attempts"], 3, "{d}");
        assert!(
            d["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "{d}"
        );
    }
    assert!(deliveries(&s, &format!("handlers_id={id}&status=pending"))
        .await
        .is_empty());
    let (_, ev) = s.get(&format!("/api/v1/events/{first}")).await;
    let mine: Vec<_> = ev["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter(|d| d["handlers_id"] == id)
        .collect();
    assert_eq!(mine.len(), 1, "{ev}");
    assert_eq!(mine[0]["status"], "failed");

    r.succeed();
    let d = delivery_of(&s, id, &first).await;
    let v = retry_by_hand(&s, id, &first).await;
    assert_eq!(v["id"], d["id"]);
    let hits = r.wait_hits("/h", 7, 30).await;
    assert_eq!(hits[6].uid(), first, "the retried one is delivered");
    let d = crate::harness::wait_for(30, "the retried delivery to succeed", || async {
        let d = delivery_of(&s, id, &first).await;
        (d["status"] == "succeeded").then_some(d)
    })
    .await;
    assert_eq!(d["attempts"], 4, "{d}");
    assert_eq!(delivery_of(&s, id, &second).await["status"], "failed");

    let (st, v) = s
        .post(&format!("/api/v1/deliveries/{}/retry", d["id"]), json!({}))
        .await;
    assert_eq!(st, 409, "a delivery that succeeded is not retried: {v}");
    assert_error(&v, "conflict");
}

/// A delivery waiting an hour for its next attempt goes at once when retried by hand
/// (its endpoint mended), before the later event of its client queued behind it.
#[tokio::test]
async fn a_pending_delivery_retried_by_hand_goes_at_once() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    r.fail(1, 500, None);
    let h = http_handler(&s, "clients.*", &r.url("/h"), &[3600]).await;
    let id = h["id"].as_i64().unwrap();
    let c = client(&s, "Patient").await;
    let first = uid_of(&s, "clients.create", c).await;
    r.wait_hits("/h", 1, 30).await;
    let waiting = crate::harness::wait_for(30, "the failed attempt to be written", || async {
        let d = delivery_of(&s, id, &first).await;
        (d["attempts"] == 1).then_some(d)
    })
    .await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert!(
        micros(&waiting["next_at"]) > crate::util::now_micros() + 2_000_000_000,
        "the next attempt is about an hour away: {waiting}"
    );
    rename(&s, c, "Patient 2").await;
    let second = uid_of(&s, "clients.update", c).await;

    let v = retry_by_hand(&s, id, &first).await;
    assert_eq!(v["status"], "pending", "{v}");
    assert!(
        micros(&v["next_at"]) <= crate::util::now_micros(),
        "due now: {v}"
    );
    let hits = r.wait_hits("/h", 3, 30).await;
    assert_eq!(
        uids(&hits),
        vec![first.clone(), first.clone(), second.clone()]
    );
    let d = crate::harness::wait_for(30, "the retried delivery to succeed", || async {
        let d = delivery_of(&s, id, &first).await;
        (d["status"] == "succeeded").then_some(d)
    })
    .await;
    assert_eq!(d["attempts"], 2, "{d}");
}

#[tokio::test]
async fn retrying_an_unknown_delivery_is_not_found() {
    let s = Server::start().await;
    let (st, v) = s.post("/api/v1/deliveries/987654/retry", json!({})).await;
    assert_eq!(st, 404, "{v}");
    assert_error(&v, "not_found");
}

#[tokio::test]
async fn recover_requeues_the_failed_deliveries_of_a_handler() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    r.fail_always();
    let other = Receiver::start().await;
    other.fail_always();
    let h = http_handler(&s, "clients.create", &r.url("/h"), &[]).await;
    let id = h["id"].as_i64().unwrap();
    let h2 = http_handler(&s, "clients.create", &other.url("/o"), &[]).await;
    let id2 = h2["id"].as_i64().unwrap();
    for name in ["R1", "R2", "R3"] {
        client(&s, name).await;
    }
    wait_deliveries(&s, id, "failed", 3, 30).await;
    wait_deliveries(&s, id2, "failed", 3, 30).await;
    r.succeed();

    let recover = format!("{HANDLERS}/{id}/recover");
    let (st, v) = s.post(&recover, json!({})).await;
    assert_eq!(st, 422, "since is required: {v}");
    let (st, v) = s
        .post(
            &recover,
            json!({"since": h["created_at"], "until": h["created_at"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["requeued"], 0, "no event in that window: {v}");
    // A misspelt until would widen the window to now: refused, nothing re-queued.
    let (st, v) = s
        .post(
            &recover,
            json!({"since": h["created_at"], "untill": h["created_at"]}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(v["error"]["data"]["fields"]["untill"].is_string(), "{v}");
    let (st, v) = s
        .post(
            &recover,
            json!({"since": "2026-12-05T00:00:00Z", "until": "2026-12-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, 422, "until before since: {v}");
    assert_eq!(
        v["error"]["data"]["fields"]["until"], "must not be before since",
        "{v}"
    );
    let (st, v) = s
        .post(&recover, json!({"since": "2999-01-01T00:00:00Z"}))
        .await;
    assert_eq!(st, 422, "since in the future, no until: {v}");
    assert!(v["error"]["data"]["fields"]["since"].is_string(), "{v}");
    let (st, _) = s
        .post(
            &format!("{HANDLERS}/99999/recover"),
            json!({"since": h["created_at"]}),
        )
        .await;
    assert_eq!(st, 404);

    let (st, v) = s.post(&recover, json!({"since": h["created_at"]})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["requeued"], 3, "{v}");
    let done = wait_deliveries(&s, id, "succeeded", 3, 30).await;
    assert_eq!(done.len(), 3);
    let hits = r.hits_on("/h");
    assert_eq!(hits.len(), 6, "one failed call and one good call per event");
    let mut firsts = uids(&hits[..3]);
    let mut seconds = uids(&hits[3..]);
    firsts.sort();
    seconds.sort();
    assert_eq!(firsts, seconds, "the same events again");
    assert_eq!(
        deliveries(&s, &format!("handlers_id={id2}&status=failed"))
            .await
            .len(),
        3,
        "another handler's failed deliveries stay failed"
    );
}

/// With the engine's fallback poll ten minutes away, a manual retry and a recovery are
/// still delivered within seconds: they wake the engine themselves.
#[tokio::test]
async fn manual_retry_and_recover_wake_the_engine() {
    let s = Server::start_with(vec![("BILLHOOK_DELIVERY_POLL_MS", "600000")]).await;
    let r = Receiver::start().await;
    r.fail_always();
    let h = http_handler(&s, "clients.create", &r.url("/h"), &[]).await;
    let id = h["id"].as_i64().unwrap();
    let first = client(&s, "Woken 1").await;
    let first = uid_of(&s, "clients.create", first).await;
    wait_deliveries(&s, id, "failed", 1, 30).await;
    // Let the engine use up the wake-up of the failure's write and go to sleep: what
    // wakes it after this can only be the retry.
    tokio::time::sleep(Duration::from_millis(500)).await;

    r.succeed();
    retry_by_hand(&s, id, &first).await;
    let hits = r.wait_hits("/h", 2, 20).await;
    assert_eq!(hits[1].uid(), first, "the retried delivery went at once");

    r.fail_always();
    let second = client(&s, "Woken 2").await;
    let second = uid_of(&s, "clients.create", second).await;
    wait_deliveries(&s, id, "failed", 1, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.succeed();
    let (st, v) = s
        .post(
            &format!("{HANDLERS}/{id}/recover"),
            json!({"since": h["created_at"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["requeued"], 1, "{v}");
    let hits = r.wait_hits("/h", 4, 20).await;
    assert_eq!(hits[3].uid(), second, "the recovered delivery went at once");
}

/// Retries the failed delivery of event `uid` to handler `id` through the API; gives
/// the delivery as the API answers.
async fn retry_by_hand(s: &Server, id: i64, uid: &str) -> Value {
    let d = delivery_of(s, id, uid).await;
    let (st, v) = s
        .post(&format!("/api/v1/deliveries/{}/retry", d["id"]), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for a Unix time.
fn http_date(unix: i64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(unix as u64))
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    http_handler(&s, "clients.create", &r.url("/h"), &[0, 0]).await;
    let until = crate::util::now_micros() / 1_000_000 + 4;
    r.fail(1, 503, Some(&http_date(until)));
    client(&s, "Dated").await;
    let hits = r.wait_hits("/h", 2, 30).await;
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "503 Retry-After: {} honoured: next attempt after {gap:?}",
        http_date(until)
    );
}

#[tokio::test]
async fn a_timeout_or_any_non_2xx_answer_is_a_failed_attempt() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let ms = Duration::from_millis;
    r.plan(&[(200, ms(2000)), (302, ms(0)), (404, ms(0)), (204, ms(0))]);
    let h = create_handler(
        &s,
        json!({"name": "t", "event": "clients.create", "task": r.url("/h"),
               "timeout_ms": 300, "retry_schedule": [0, 0, 0, 0]}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    client(&s, "Timed").await;
    let d = wait_deliveries(&s, id, "succeeded", 1, 30).await.remove(0);
    assert_eq!(d["attempts"], 4, "{d}");
    let mut log = executions(&s, &format!("handlers_id={id}")).await;
    log.reverse();
    let got: Vec<(Value, Value)> = log
        .iter()
        .map(|e| (e["status"].clone(), e["response_status"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("fail"), Value::Null),
            (json!("fail"), json!(302)),
            (json!("fail"), json!(404)),
            (json!("success"), json!(204)),
        ],
        "a timeout, a redirect (not followed) and a 404 fail; a 204 succeeds"
    );
    assert!(
        log[0]["error"].is_string(),
        "the timeout is told: {}",
        log[0]
    );
    let took = log[0]["duration_ms"].as_i64().unwrap();
    assert!((250..1500).contains(&took), "cut at the timeout: {took} ms");
}

/// A delivery put back by hand while a later one of its client is being called is due
/// and flagged, but waits for that call: as the earliest due, it hid every later due
/// time, and the engine slept its whole fallback poll (here 5 s) while another client's
/// retry came due after 1 s. The retry goes when it is due.
#[tokio::test]
async fn a_blocked_delivery_does_not_hold_up_a_retry_due_meanwhile() {
    let s = Server::start_with(vec![("BILLHOOK_DELIVERY_POLL_MS", "5000")]).await;
    // Client X's queue: a failed delivery put back behind a call that takes 6 s.
    let rx = Receiver::start().await;
    rx.plan(&[(500, Duration::ZERO)]);
    let a = http_handler(&s, "clients.update", &rx.url("/a"), &[]).await;
    let x = client(&s, "X").await;
    rename(&s, x, "X 1").await;
    let failed = wait_deliveries(&s, a["id"].as_i64().unwrap(), "failed", 1, 30).await;
    rx.plan(&[(200, Duration::from_secs(6))]);
    rename(&s, x, "X 2").await;
    rx.wait_hits("/a", 2, 30).await;
    let (st, v) = s
        .post(
            &format!("/api/v1/deliveries/{}/retry", failed[0]["id"]),
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{v}");

    // Client Y's first attempt fails; its retry is due 1 s (±20 %) later.
    let ry = Receiver::start().await;
    ry.plan(&[(500, Duration::ZERO)]);
    http_handler(&s, "clients.create", &ry.url("/b"), &[1]).await;
    client(&s, "Y").await;
    let hits = ry.wait_hits("/b", 2, 30).await;
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap < Duration::from_millis(2500),
        "the retry went {gap:?} after the failure, not when due (1 s)"
    );
}

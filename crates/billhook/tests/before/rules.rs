//! The response rules of an HTTP before handler (SPEC §4 "Before stage"): allow
//! unchanged, allow modified, forbid, and modifications that are handler failures.

use serde_json::{json, Value};

use crate::harness::{assert_error, Server};
use crate::receiver::{Receiver, Reply};
use crate::util::{
    assert_nothing_written, assert_refused, assert_refused_as_too_long, before_rows, client,
    get_client, http_hook, id, message, new_events, snapshot,
};

#[tokio::test]
async fn an_echo_allows_the_action_unchanged() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let h = http_hook(&s, "echo", &r.url(), "forbid").await;
    let input = json!({"name": "Echo Ltd", "email": "ops@echo.example", "credit": "5",
                       "tags": ["a"], "custom_fields": {"plan": "gold"}});
    let before = snapshot(&s).await;
    let c = s.ok("/api/v1/clients", input.clone(), 201).await;
    for k in ["name", "email", "tags", "custom_fields"] {
        assert_eq!(c[k], input[k], "{k}: {c}");
    }
    assert_eq!(c["credit"], "5", "{c}");
    assert_eq!(get_client(&s, id(&c)).await, c);
    let events = new_events(&s, &before).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"], c);
    assert_eq!(r.count(), 1);
    let rows = before_rows(&s, h).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "success", "{rows:?}");
    assert!(
        rows[0]["modified"].is_null(),
        "an echo modifies nothing: {rows:?}"
    );
}

/// The echo of a payload far over the log's 64 KiB (a client with 9,000 tags) allows
/// the action as a short one does: the answer is judged whole, and the log keeps its
/// first 64 KiB. Cut at 64 KiB, it was no JSON, and the action failed. An answer over
/// the 8 MiB read is a handler failure that says so.
#[tokio::test]
async fn an_echo_of_a_payload_over_64_kib_allows_the_action() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let h = http_hook(&s, "echo", &r.url(), "forbid").await;
    let tags: Vec<String> = (0..9000).map(|i| format!("tag-{i:05}")).collect();
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Many Tags", "tags": tags}),
            201,
        )
        .await;
    assert_eq!(c["tags"], json!(tags));
    let rows = before_rows(&s, h).await;
    assert_eq!(rows[0]["status"], "success", "{}", rows[0]["error"]);
    let logged = rows[0]["response_body"].as_str().unwrap();
    assert_eq!(logged.len(), 64 * 1024, "the log keeps the first 64 KiB");

    let padding = "x".repeat(8 * 1024 * 1024);
    r.set(move |_| Reply::json(200, &json!({"allow": true, "padding": padding})));
    assert_refused_as_too_long(&s, h, "echo").await;

    // A forbid's message from an answer of 8 MiB is kept in the log as a body is.
    let long = "no ".repeat(2 * 1024 * 1024);
    r.set(move |_| Reply::json(200, &json!({"allow": false, "message": long})));
    let (st, v) = s.post("/api/v1/clients", json!({"name": "Long No"})).await;
    assert_refused(st, &v, "forbidden_by_handler", h, "echo");
    let rows = before_rows(&s, h).await;
    let error = rows.last().unwrap()["error"].as_str().unwrap();
    assert!(error.starts_with("forbidden: no no"), "{}", &error[..40]);
    assert_eq!(error.len(), 64 * 1024, "the log keeps the first 64 KiB");
}

#[tokio::test]
async fn an_empty_2xx_or_a_body_without_data_allows_unchanged() {
    let s = Server::start().await;
    let r = Receiver::replying(Reply::empty()).await;
    http_hook(&s, "quiet", &r.url(), "forbid").await;
    let c = id(&client(&s, "Quiet").await);
    let replies = [
        Reply::text(200, ""),
        Reply::text(204, ""),
        Reply::text(202, "{}"),
        Reply::json(200, &json!({"allow": true})),
    ];
    for (i, reply) in replies.into_iter().enumerate() {
        let shown = format!("{reply:?}");
        r.set(move |_| reply.clone());
        let name = format!("Quiet {i}");
        let (st, v) = s
            .patch(&format!("/api/v1/clients/{c}"), json!({"name": name}))
            .await;
        assert_eq!(st, 200, "{shown}: {v}");
        assert_eq!(v["name"], name.as_str(), "{shown}: {v}");
        assert_eq!(get_client(&s, c).await["name"], name.as_str(), "{shown}");
    }
    assert_eq!(r.count(), 5);
}

#[tokio::test]
async fn modified_data_is_stored_and_shown_by_the_after_event() {
    let s = Server::start().await;
    let r = Receiver::modifying(json!({"name": "Renamed", "tags": ["vip"], "credit": "25"})).await;
    http_hook(&s, "modifier", &r.url(), "forbid").await;
    let before = snapshot(&s).await;
    let c = s
        .ok("/api/v1/clients", json!({"name": "Original"}), 201)
        .await;
    assert_eq!(c["name"], "Renamed", "{c}");
    assert_eq!(c["tags"], json!(["vip"]), "{c}");
    assert_eq!(c["credit"], "25", "{c}");
    assert_eq!(get_client(&s, id(&c)).await, c);
    let events = new_events(&s, &before).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"]["events_id"], "clients.create");
    assert_eq!(
        events[0]["data"], c,
        "the after event shows the modified data"
    );

    r.set(|p| {
        Reply::json(
            200,
            &crate::receiver::with_data(p, &json!({"credit": "99"})),
        )
    });
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{}", id(&c)),
            json!({"name": "Patched"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "Patched", "{v}");
    assert_eq!(v["credit"], "99", "{v}");
    assert_eq!(get_client(&s, id(&c)).await, v);
    let events = new_events(&s, &before).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["event"]["events_id"], "clients.update");
    assert_eq!(events[1]["data"], v);
    assert_eq!(
        events[1]["previous"],
        json!({"name": "Renamed", "credit": "25"}),
        "{events:?}"
    );
}

/// Each forbidding answer → 422 forbidden_by_handler with its message; nothing written.
#[tokio::test]
async fn allow_false_and_4xx_forbid_with_the_handlers_message() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let h = http_hook(&s, "gatekeeper", &r.url(), "allow").await;
    let c = id(&client(&s, "Gated").await);
    let cases: Vec<(Reply, Option<&str>)> = vec![
        (
            Reply::json(
                200,
                &json!({"allow": false, "message": "client is blacklisted"}),
            ),
            Some("client is blacklisted"),
        ),
        (
            Reply::json(403, &json!({"message": "not on weekends"})),
            Some("not on weekends"),
        ),
        (
            Reply::json(409, &json!({"error": {"message": "credit limit reached"}})),
            Some("credit limit reached"),
        ),
        (Reply::text(400, ""), None),
        (Reply::text(404, "plain text"), None),
    ];
    for (reply, expected) in cases {
        let shown = format!("{reply:?}");
        r.set(move |_| reply.clone());
        let before = snapshot(&s).await;
        let (st, v) = s.post("/api/v1/clients", json!({"name": "Refused"})).await;
        assert_refused(st, &v, "forbidden_by_handler", h, "gatekeeper");
        if let Some(m) = expected {
            assert_eq!(message(&v), m, "{shown}");
        } else {
            assert!(!message(&v).is_empty(), "{shown}: {v}");
        }
        let (st, v) = s
            .patch(&format!("/api/v1/clients/{c}"), json!({"credit": "7"}))
            .await;
        assert_refused(st, &v, "forbidden_by_handler", h, "gatekeeper");
        assert_nothing_written(&s, &before).await;
    }
}

/// A change to a field the request cannot set is a handler failure.
#[tokio::test]
async fn changing_a_read_only_field_is_a_handler_failure() {
    let s = Server::start().await;
    let c = client(&s, "Fixed").await;
    let cid = id(&c);
    let r = Receiver::echo().await;
    let h = http_hook(&s, "sneaky", &r.url(), "forbid").await;
    let cases = [
        ("PATCH", json!({"balance": "1000"}), "balance"),
        ("PATCH", json!({"id": cid + 100}), "id"),
        (
            "PATCH",
            json!({"created_at": "2020-01-01T00:00:00Z"}),
            "created_at",
        ),
        // PATCH /clients cannot set custom fields (they have their own route).
        (
            "PATCH",
            json!({"custom_fields": {"x": "1"}}),
            "custom_fields",
        ),
        ("POST", json!({"id": 77}), "id"),
        ("POST", json!({"balance": "5"}), "balance"),
    ];
    for (method, fields, field) in cases {
        let shown = format!("{method} {fields}");
        r.set(move |p| Reply::json(200, &crate::receiver::with_data(p, &fields)));
        let before = snapshot(&s).await;
        let (st, v) = if method == "POST" {
            s.post("/api/v1/clients", json!({"name": "New"})).await
        } else {
            s.patch(
                &format!("/api/v1/clients/{cid}"),
                json!({"name": "Changed"}),
            )
            .await
        };
        assert_refused(st, &v, "handler_failed", h, "sneaky");
        assert!(message(&v).contains(field), "{shown}: {v}");
        assert_nothing_written(&s, &before).await;
        // A success between cases keeps the handler out of its cool-down.
        r.set(|p| Reply::json(200, p));
        s.ok("/api/v1/clients", json!({"name": "Reset"}), 201).await;
    }
    assert_eq!(get_client(&s, cid).await, c);
}

/// A handler that parsed the payload and wrote money or times back otherwise (`0` for
/// `"0"`, `"5.000"` for `"5"`, `+00:00` for `Z`; fewer decimals: a unit test of
/// `billhook_domain::timestamp::same_time`, as the stored times' microseconds are not
/// known here) changed
/// nothing: the action goes on unchanged, nothing is logged as modified. A different
/// amount is still a change.
#[tokio::test]
async fn money_and_times_written_back_otherwise_are_no_change() {
    let s = Server::start().await;
    let r = Receiver::echo().await;
    let h = http_hook(&s, "reserialise", &r.url(), "forbid").await;
    r.set(|p| {
        let at = |k: &str| p["data"][k].as_str().unwrap_or_default().to_string();
        // "…T06:30:00.123456Z" is the same time as "…T06:30:00.123456+00:00".
        let created = at("created_at").replace('Z', "+00:00");
        let fields = json!({"balance": 0, "credit": "5.000", "created_at": created});
        Reply::json(200, &crate::receiver::with_data(p, &fields))
    });
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Same", "credit": "5"}),
            201,
        )
        .await;
    assert_eq!(
        (&c["balance"], &c["credit"]),
        (&json!("0"), &json!("5")),
        "{c}"
    );
    let rows = before_rows(&s, h).await;
    assert_eq!(rows[0]["status"], "success", "{rows:?}");
    assert_eq!(rows[0]["modified"], Value::Null, "{rows:?}");

    r.set(|p| {
        let fields = json!({"credit": 7.5});
        Reply::json(200, &crate::receiver::with_data(p, &fields))
    });
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Other", "credit": "5"}),
            201,
        )
        .await;
    assert_eq!(c["credit"], "7.5", "{c}");
}

/// An invalid result is a handler failure naming the validation message; with
/// `on_failure: allow` the action goes on with the request's own data.
#[tokio::test]
async fn an_invalid_modification_is_a_handler_failure() {
    let s = Server::start().await;
    let (st, direct) = s
        .post(
            "/api/v1/clients",
            json!({"name": "X", "email": "not-an-email"}),
        )
        .await;
    assert_eq!(st, 422, "{direct}");
    assert_error(&direct, "validation_failed");
    let rule = direct["error"]["data"]["fields"]["email"]
        .as_str()
        .expect("the email rule's message")
        .to_string();

    let r = Receiver::modifying(json!({"email": "not-an-email"})).await;
    let h = http_hook(&s, "breaker", &r.url(), "forbid").await;
    let before = snapshot(&s).await;
    let (st, v) = s
        .post(
            "/api/v1/clients",
            json!({"name": "Valid", "email": "a@b.example"}),
        )
        .await;
    assert_refused(st, &v, "handler_failed", h, "breaker");
    assert!(message(&v).contains("email"), "{v}");
    assert!(message(&v).contains(&rule), "should mention {rule:?}: {v}");
    assert_nothing_written(&s, &before).await;

    let (st, v) = s
        .patch(
            &format!("/api/v1/handlers/{h}"),
            json!({"on_failure": "allow"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Valid", "email": "a@b.example"}),
            201,
        )
        .await;
    assert_eq!(c["email"], "a@b.example", "the handler is ignored: {c}");
    assert_eq!(get_client(&s, id(&c)).await, c);
    let rows = before_rows(&s, h).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == "fail"), "{rows:?}");
}

/// "validated like the request itself": a PATCH cannot set status archived (422), so a
/// handler turning a PATCH into an archive is a handler failure.
#[tokio::test]
async fn a_handler_cannot_archive_through_a_patch() {
    let s = Server::start().await;
    let cid = id(&client(&s, "Live").await);
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"status": "archived"}),
        )
        .await;
    assert_eq!(st, 422, "the request itself is refused: {v}");
    let r = Receiver::modifying(json!({"status": "archived"})).await;
    let h = http_hook(&s, "archiver", &r.url(), "forbid").await;
    let before = snapshot(&s).await;
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{cid}"),
            json!({"name": "Still live"}),
        )
        .await;
    assert_refused(st, &v, "handler_failed", h, "archiver");
    assert_nothing_written(&s, &before).await;
}

/// A handler that puts back the old value leaves nothing changed: no clients.update
/// event ("none if nothing changed").
#[tokio::test]
async fn a_handler_undoing_the_change_raises_no_event() {
    let s = Server::start().await;
    let c = client(&s, "Stable").await;
    let r = Receiver::modifying(json!({"name": "Stable"})).await;
    http_hook(&s, "undo", &r.url(), "forbid").await;
    let before = snapshot(&s).await;
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{}", id(&c)),
            json!({"name": "Other"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "Stable", "{v}");
    let events: Vec<Value> = new_events(&s, &before).await;
    assert!(events.is_empty(), "nothing changed, yet: {events:?}");
}

/// An answer streamed without a `Content-Length` (chunked) is read up to 8 MiB too:
/// past it (here 9 MiB of spaces, which whole would be a blank answer, an allow) the
/// call is a handler failure that says so, and nothing is written.
#[tokio::test]
async fn an_answer_streamed_past_8_mib_is_a_handler_failure() {
    let s = Server::start().await;
    let url = crate::receiver::chunked_spaces(9).await;
    let h = http_hook(&s, "streaming", &url, "forbid").await;
    assert_refused_as_too_long(&s, h, "streaming").await;
}

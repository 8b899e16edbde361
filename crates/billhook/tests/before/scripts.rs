//! Script before handlers: exit 0 allows (stdout may modify), a non-zero exit forbids
//! with stderr as the message, a script killed at its timeout is a failure, a handler
//! whose script has gone can still be switched off.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{assert_error, Server};
use crate::util::{
    assert_nothing_written, assert_refused, assert_refused_as_too_long, before_rows, client,
    get_client, hook, id, message, script, snapshot,
};

/// A script before handler for `clients.*`.
async fn script_hook(s: &Server, name: &str, task: &str, on_failure: &str) -> i64 {
    hook(
        s,
        json!({"name": name, "type": "script", "task": task, "on_failure": on_failure,
               "timeout_ms": 5000}),
    )
    .await
}

#[tokio::test]
async fn a_script_echoing_or_printing_nothing_allows_unchanged() {
    let s = Server::start().await;
    script(&s, "echo.sh", "#!/bin/sh\ncat\n");
    // Its warning on stderr is kept in the log, as an after call's is.
    script(
        &s,
        "quiet.sh",
        "#!/bin/sh\ncat >/dev/null\necho 'VAT id not checked' >&2\n",
    );
    let h1 = script_hook(&s, "echo", "echo.sh", "forbid").await;
    let h2 = script_hook(&s, "quiet", "quiet.sh", "forbid").await;
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Scripted", "credit": "2"}),
            201,
        )
        .await;
    assert_eq!(c["name"], "Scripted");
    assert_eq!(c["credit"], "2");
    let (st, v) = s
        .patch(
            &format!("/api/v1/clients/{}", id(&c)),
            json!({"name": "Again"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(get_client(&s, id(&c)).await["name"], "Again");
    for h in [h1, h2] {
        let rows = before_rows(&s, h).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|r| r["status"] == "success"), "{rows:?}");
        assert!(rows.iter().all(|r| r["modified"].is_null()), "{rows:?}");
    }
    let quiet = before_rows(&s, h2).await;
    assert!(
        quiet
            .iter()
            .all(|r| r["error"] == "stderr: VAT id not checked"),
        "{quiet:?}"
    );
    let echo = before_rows(&s, h1).await;
    assert!(echo.iter().all(|r| r["error"].is_null()), "{echo:?}");
}

#[tokio::test]
async fn a_script_printing_data_modifies_the_action() {
    let s = Server::start().await;
    script(
        &s,
        "rename.sh",
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"data\": {\"name\": \"Named by script\"}}'\n",
    );
    let h = script_hook(&s, "rename", "rename.sh", "forbid").await;
    let c = s
        .ok("/api/v1/clients", json!({"name": "Original"}), 201)
        .await;
    assert_eq!(c["name"], "Named by script", "{c}");
    assert_eq!(get_client(&s, id(&c)).await, c);
    let events = s.events().await;
    assert_eq!(events.last().unwrap()["data"], c);
    let rows = before_rows(&s, h).await;
    assert_eq!(
        rows[0]["modified"],
        json!({"name": "Named by script"}),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_script_exiting_non_zero_forbids_with_its_stderr() {
    let s = Server::start().await;
    let cid = id(&client(&s, "Guarded").await);
    script(
        &s,
        "deny.sh",
        "#!/bin/sh\ncat >/dev/null\necho 'credit check failed' >&2\nexit 3\n",
    );
    let h = script_hook(&s, "deny", "deny.sh", "allow").await;
    let before = snapshot(&s).await;
    let (st, v) = s.post("/api/v1/clients", json!({"name": "Denied"})).await;
    assert_refused(st, &v, "forbidden_by_handler", h, "deny");
    assert_eq!(message(&v), "credit check failed");
    let (st, v) = s
        .patch(&format!("/api/v1/clients/{cid}"), json!({"credit": "9"}))
        .await;
    assert_refused(st, &v, "forbidden_by_handler", h, "deny");
    assert_eq!(message(&v), "credit check failed");
    assert_nothing_written(&s, &before).await;
}

/// A script's long stderr is cut in the API's answer (its user sees it), not passed on
/// whole (up to 64 KiB); the execution log keeps all of it.
#[tokio::test]
async fn a_long_forbid_message_is_cut_in_the_answer_and_kept_in_the_log() {
    let s = Server::start().await;
    // One byte, then 3,000 two-byte characters: byte 1,024 falls inside one, and the
    // cut must fall on a character boundary.
    script(
        &s,
        "long.sh",
        "#!/bin/sh\ncat >/dev/null\nprintf x >&2\ni=0\nwhile [ $i -lt 300 ]; do printf 'éééééééééé' >&2; i=$((i+1)); done\nexit 1\n",
    );
    let h = script_hook(&s, "long", "long.sh", "allow").await;
    let (st, v) = s.post("/api/v1/clients", json!({"name": "Long"})).await;
    assert_refused(st, &v, "forbidden_by_handler", h, "long");
    let m = message(&v);
    assert!(m.len() < 1100, "{} bytes", m.len());
    assert!(m.starts_with("xéééé"), "{m}");
    assert!(!m.contains('\u{FFFD}'), "cut inside a character: {m}");
    assert!(
        m.ends_with("(cut; the execution log has more of it)"),
        "{m}"
    );
    let rows = before_rows(&s, h).await;
    let logged = serde_json::to_string(&rows[0]).expect("serialises");
    assert!(logged.contains(&"é".repeat(3000)), "{logged:.300}");
}

/// The environment of the spec, seen through the forbid message.
#[tokio::test]
async fn a_script_gets_the_before_environment() {
    let s = Server::start().await;
    let cid = id(&client(&s, "Env").await);
    script(
        &s,
        "env.sh",
        "#!/bin/sh\necho \"$BILLHOOK_STAGE $BILLHOOK_EVENT [$BILLHOOK_OBJECT_ID] ${#BILLHOOK_EVENT_UID}\" >&2\nexit 1\n",
    );
    let h = script_hook(&s, "env", "env.sh", "forbid").await;
    let (st, v) = s.post("/api/v1/clients", json!({"name": "E"})).await;
    assert_refused(st, &v, "forbidden_by_handler", h, "env");
    let m = message(&v);
    assert!(m.starts_with("before clients.create [] "), "{m}");
    assert_ne!(m, "before clients.create [] 0", "a uid is set");
    let (st, v) = s
        .patch(&format!("/api/v1/clients/{cid}"), json!({"name": "F"}))
        .await;
    assert_refused(st, &v, "forbidden_by_handler", h, "env");
    assert!(
        message(&v).starts_with(&format!("before clients.update [{cid}] ")),
        "{v}"
    );
}

/// Killed at its timeout: a failure (refuses under forbid, ignored under allow).
#[tokio::test]
async fn a_script_past_its_timeout_is_a_handler_failure() {
    let s = Server::start().await;
    let cid = id(&client(&s, "Slow").await);
    script(&s, "slow.sh", "#!/bin/sh\ncat >/dev/null\nsleep 10\n");
    let h = hook(
        &s,
        json!({"name": "slow", "type": "script", "task": "slow.sh", "timeout_ms": 300}),
    )
    .await;
    let before = snapshot(&s).await;
    let started = Instant::now();
    let (st, v) = s
        .patch(&format!("/api/v1/clients/{cid}"), json!({"name": "Fast"}))
        .await;
    assert_refused(st, &v, "handler_failed", h, "slow");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(message(&v).contains("timeout"), "{v}");
    assert_nothing_written(&s, &before).await;

    s.patch(
        &format!("/api/v1/handlers/{h}"),
        json!({"on_failure": "allow"}),
    )
    .await;
    let (st, v) = s
        .patch(&format!("/api/v1/clients/{cid}"), json!({"name": "Fast"}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(get_client(&s, cid).await["name"], "Fast");
}

#[tokio::test]
async fn a_script_printing_invalid_json_is_a_handler_failure() {
    let s = Server::start().await;
    script(
        &s,
        "garbage.sh",
        "#!/bin/sh\ncat >/dev/null\necho 'not json {'\n",
    );
    let h = script_hook(&s, "garbage", "garbage.sh", "forbid").await;
    let before = snapshot(&s).await;
    let (st, v) = s.post("/api/v1/clients", json!({"name": "G"})).await;
    assert_refused(st, &v, "handler_failed", h, "garbage");
    assert_nothing_written(&s, &before).await;
}

/// A handler whose script has gone refuses every action under forbid; the operator can
/// still disable, archive or edit it (its task is checked when it is set and when the
/// handler is switched on), short of deleting it and its history. Turning it on again,
/// or setting a task that does not run, is refused until the script is back.
#[tokio::test]
async fn a_handler_whose_script_has_gone_can_be_disabled_archived_and_edited() {
    let s = Server::start().await;
    script(&s, "gate.sh", "#!/bin/sh\ncat >/dev/null\n");
    let h = hook(
        &s,
        json!({"name": "gate", "event": "clients.create", "type": "script",
               "task": "gate.sh"}),
    )
    .await;
    std::fs::remove_file(s.dir.path().join("scripts/gate.sh")).expect("remove gate.sh");
    let (st, v) = s.post("/api/v1/clients", json!({"name": "Refused"})).await;
    assert_refused(st, &v, "handler_failed", h, "gate");

    let path = format!("/api/v1/handlers/{h}");
    // The same task sent again does not change it.
    for body in [
        json!({"on_failure": "allow"}),
        json!({"name": "x"}),
        json!({"task": "gate.sh", "type": "script", "priority": 5}),
    ] {
        let (st, v) = s.patch(&path, body.clone()).await;
        assert_eq!(st, 200, "PATCH {body}: {v}");
    }
    let (_, got) = s.get(&path).await;
    assert_eq!(
        (&got["name"], &got["on_failure"], &got["priority"]),
        (&json!("x"), &json!("allow"), &json!(5)),
        "{got}"
    );
    client(&s, "Allowed").await;

    for (action, status) in [("disable", "disabled"), ("archive", "archived")] {
        let (st, v) = s.post(&format!("{path}/{action}"), json!({})).await;
        assert_eq!(st, 200, "{action}: {v}");
        assert_eq!(v["status"], status, "{action}: {v}");
    }
    let refused = [
        ("POST", format!("{path}/enable"), None),
        ("PATCH", path.clone(), Some(json!({"status": "enabled"}))),
        ("PATCH", path.clone(), Some(json!({"task": "other.sh"}))),
        ("PATCH", path.clone(), Some(json!({"type": "http"}))),
    ];
    for (method, p, body) in refused {
        let (st, v) = s.call(method, &p, body.clone()).await;
        assert_eq!(st, 422, "{method} {p} {body:?}: {v}");
        assert_error(&v, "validation_failed");
        assert!(
            v["error"]["data"]["fields"]["task"].is_string(),
            "{method} {p} {body:?}: {v}"
        );
    }
    let (_, got) = s.get(&path).await;
    assert_eq!(
        (&got["status"], &got["type"], &got["task"]),
        (&json!("archived"), &json!("script"), &json!("gate.sh")),
        "refused changes left it alone: {got}"
    );

    script(&s, "gate.sh", "#!/bin/sh\ncat >/dev/null\n");
    let (st, v) = s.post(&format!("{path}/enable"), json!({})).await;
    assert_eq!(st, 200, "the script is back: {v}");
    assert_eq!(v["status"], "enabled", "{v}");
}

/// A script's stdout is read up to 8 MiB, as an HTTP answer is: one that prints more
/// (here 9 MiB of spaces, which whole would be a blank answer, an allow) is a handler
/// failure that says so, and nothing is written.
#[tokio::test]
async fn a_script_printing_over_8_mib_is_a_handler_failure() {
    let s = Server::start().await;
    script(
        &s,
        "loud.sh",
        "#!/bin/sh\ncat >/dev/null\nhead -c 9437184 /dev/zero | tr '\\0' ' '\n",
    );
    let h = script_hook(&s, "loud", "loud.sh", "forbid").await;
    assert_refused_as_too_long(&s, h, "loud").await;
}

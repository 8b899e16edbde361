//! The handler routes: create (defaults, secret), validation (a task checked when set or
//! switched on), list filters, get, patch, delete, enable/disable/archive, secret and
//! rotation, and the test call.

use serde_json::{json, Value};

use crate::harness::write_script;
use crate::harness::{assert_error, Server};
use crate::receiver::Receiver;
use crate::util::{create_handler, executions, micros, now_micros, HANDLERS};

fn path(id: &Value, rest: &str) -> String {
    format!("{HANDLERS}/{id}{rest}")
}

#[tokio::test]
async fn create_applies_the_defaults_and_returns_a_signing_secret() {
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "CRM", "event": "clients.create", "task": "http://127.0.0.1:9/api"}),
    )
    .await;
    assert!(h["id"].is_i64(), "{h}");
    assert_eq!(h["name"], "CRM");
    assert_eq!(h["status"], "enabled");
    assert_eq!(h["stage"], "after");
    assert_eq!(h["type"], "http");
    assert_eq!(h["priority"], 100);
    assert_eq!(h["timeout_ms"], 5000);
    assert_eq!(h["on_failure"], "forbid");
    assert_eq!(
        h["retry_schedule"],
        json!([5, 300, 1800, 7200, 18000, 36000, 36000])
    );
    assert!(
        h["created_at"].is_string() && h["updated_at"].is_string(),
        "{h}"
    );
    let secret = h["secret"].as_str().expect("secret shown on create");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(
        standardwebhooks::Webhook::new(secret).is_ok(),
        "the secret is a Standard Webhooks secret: {secret}"
    );

    let (st, got) = s.get(&path(&h["id"], "")).await;
    assert_eq!(st, 200, "{got}");
    let mut without_secret = h.clone();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(got, without_secret, "GET shows the handler as created");
    assert!(
        got.get("secret").is_none(),
        "the secret is not in GET: {got}"
    );

    let (st, v) = s.get(&path(&h["id"], "/secret")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["secret"], secret);
    assert_eq!(v["previous_secrets"], json!([]), "never rotated: {v}");

    // A second handler gets a secret of its own.
    let other = create_handler(
        &s,
        json!({"name": "CRM 2", "event": "*", "task": "https://example.com/hook"}),
    )
    .await;
    assert_ne!(other["secret"], h["secret"]);
}

#[tokio::test]
async fn invalid_handlers_answer_422() {
    let s = Server::start().await;
    write_script(&s, "ok.sh", "#!/bin/sh\nexit 0\n", true);
    write_script(&s, "plain.sh", "#!/bin/sh\nexit 0\n", false);
    // Executable, but the system would not run them.
    write_script(&s, "no-hashbang.sh", "exit 0\n", true);
    write_script(&s, "crlf.sh", "#!/bin/sh\r\nexit 0\r\n", true);
    write_script(
        &s,
        "no-interpreter.sh",
        "#!/usr/bin/no-such-shell\nexit 0\n",
        true,
    );
    std::os::unix::fs::symlink("/bin/true", s.dir.path().join("scripts/escape")).expect("symlink");
    let url = "http://127.0.0.1:9/hook";
    let cases = [
        json!({"name": "x", "event": "clients.explode", "task": url}),
        json!({"name": "x", "event": "nothing.*", "task": url}),
        json!({"name": "x", "event": "clients.balance_zero", "stage": "before", "task": url}),
        json!({"name": "x", "event": "importd.*", "stage": "before", "task": url}),
        json!({"name": "x", "event": "email_rates_manager.import", "stage": "before", "task": url}),
        json!({"name": "x", "event": "clients.create", "task": "ftp://127.0.0.1/hook"}),
        json!({"name": "x", "event": "clients.create", "task": "http://"}),
        json!({"name": "x", "event": "clients.create", "task": "not a url"}),
        json!({"name": "x", "event": "clients.create", "task": "http://127.0.0.1:99999/"}),
        json!({"name": "x", "event": "clients.create", "task": "https://127.0.0.1:65536/a"}),
        json!({"name": "x", "event": "clients.create", "task": " http://127.0.0.1:9/a"}),
        json!({"name": "x", "event": "clients.create", "task": "http://127.0.0.1:9/a b"}),
        // Parsed, but no request can be sent to it: accepted, it failed every call.
        json!({"name": "x", "event": "clients.create", "task": format!("{url}/{}", "p".repeat(65_600))}),
        json!({"name": "x", "event": "clients.create", "type": "script", "task": "../ok.sh"}),
        json!({"name": "x", "event": "clients.create", "type": "script", "task": "/bin/true"}),
        json!({"name": "x", "event": "clients.create", "type": "script", "task": "missing.sh"}),
        json!({"name": "x", "event": "clients.create", "type": "script", "task": "plain.sh"}),
        json!({"name": "x", "event": "clients.create", "type": "script", "task": "escape"}),
        json!({"name": "x", "event": "clients.create", "type": "script", "task": "no-hashbang.sh"}),
        json!({"name": "x", "event": "clients.create", "type": "script", "task": "crlf.sh"}),
        json!({"name": "x", "event": "clients.create", "type": "script", "task": "no-interpreter.sh"}),
        json!({"name": "x", "event": "clients.create", "task": url, "timeout_ms": 30001}),
        json!({"name": "x", "event": "clients.create", "task": url, "timeout_ms": -1}),
        json!({"name": "x", "event": "clients.create", "task": url, "timeout_ms": 99999999999i64}),
        json!({"name": "x", "event": "clients.create", "task": url, "retry_schedule": [604801]}),
        json!({"name": "x", "event": "clients.create", "task": url, "retry_schedule": [5, -1]}),
        json!({"name": "x", "event": "clients.create", "task": url, "retry_schedule": [99999999999i64]}),
        json!({"event": "clients.create", "task": url}),
    ];
    for body in cases {
        let (st, v) = s.post(HANDLERS, body.clone()).await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_error(&v, "validation_failed");
        let fields = v["error"]["data"]["fields"].as_object();
        assert!(fields.is_some_and(|f| !f.is_empty()), "{body}: {v}");
        // Out of range is said on the field, in its terms, however far out.
        for (field, rule) in [("timeout_ms", "1 to 30000"), ("retry_schedule", "7 days")] {
            if body.get(field).is_some() {
                let said = v["error"]["data"]["fields"][field].as_str().unwrap_or("");
                assert!(said.contains(rule), "{body}: {v}");
            }
        }
    }
    // What the checks added since say, on the field they are about.
    let url_over_64k = format!("{url}/{}", "p".repeat(65_600));
    for (task, kind, said) in [
        (url_over_64k.as_str(), "http", "uri too long"),
        ("no-hashbang.sh", "script", "no #! line"),
        ("crlf.sh", "script", "carriage return"),
        (
            "no-interpreter.sh",
            "script",
            "/usr/bin/no-such-shell does not exist",
        ),
    ] {
        let body = json!({"name": "x", "event": "clients.create", "type": kind, "task": task});
        let (st, v) = s.post(HANDLERS, body).await;
        assert_eq!(st, 422, "{task:.40}: {v}");
        let message = v["error"]["data"]["fields"]["task"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains(said), "{task:.40}: {message}");
    }
    let (_, list) = s.get(HANDLERS).await;
    assert_eq!(list["total"], 0, "nothing was stored: {list}");

    // The valid neighbours of those cases are accepted.
    for body in [
        json!({"name": "s", "event": "clients.create", "type": "script", "task": "ok.sh"}),
        json!({"name": "b", "event": "clients.*", "stage": "before", "task": url}),
        json!({"name": "t", "event": "*", "task": url, "timeout_ms": 30000}),
        json!({"name": "p", "event": "*", "task": "http://127.0.0.1:65535/"}),
    ] {
        create_handler(&s, body).await;
    }

    // Schemes are case-insensitive (RFC 3986): the URL is kept as given, and called.
    let r = Receiver::start().await;
    let upper = r.url("/upper").replacen("http://", "HTTP://", 1);
    let h = create_handler(
        &s,
        json!({"name": "u", "event": "clients.create", "task": upper}),
    )
    .await;
    assert_eq!(h["task"], upper);
    let (st, e) = s.post(&path(&h["id"], "/test"), json!({})).await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(r.hits_on("/upper").len(), 1);

    // PATCH is validated the same way and changes nothing when refused.
    let h = create_handler(&s, json!({"name": "p", "event": "dids.*", "task": url})).await;
    let (st, v) = s
        .patch(&path(&h["id"], ""), json!({"task": "gopher://x"}))
        .await;
    assert_eq!(st, 422, "{v}");
    assert_error(&v, "validation_failed");
    let (st, v) = s
        .patch(
            &path(&h["id"], ""),
            json!({"event": "clients.balance_notzero", "stage": "before"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    let (_, got) = s.get(&path(&h["id"], "")).await;
    assert_eq!(got["task"], url);
    assert_eq!(got["event"], "dids.*");
}

/// A URL that an older version stored and this one refuses (a port past 65535) is, like
/// a script that has gone, checked only when the task is set or the handler switched
/// on: the handler can still be edited and disabled.
#[tokio::test]
async fn a_stored_url_now_refused_is_checked_only_when_set_or_switched_on() {
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "old", "event": "clients.create", "task": "http://127.0.0.1:9/a"}),
    )
    .await;
    let old = "http://127.0.0.1:99999/";
    store_task(&s, &h["id"], old).await;
    let new = "http://127.0.0.1:9/b";
    // Sending the stored task again is no change; switching on or a new task is.
    for (method, p, body, status) in [
        ("PATCH", "", json!({"name": "renamed", "task": old}), 200),
        ("POST", "/disable", json!({}), 200),
        ("POST", "/enable", json!({}), 422),
        ("PATCH", "", json!({"status": "enabled"}), 422),
        ("PATCH", "", json!({"task": "http://127.0.0.1:70000/"}), 422),
        ("PATCH", "", json!({"task": new, "status": "enabled"}), 200),
    ] {
        let (st, v) = s.call(method, &path(&h["id"], p), Some(body)).await;
        assert_eq!(st, status, "{method} {p}: {v}");
        if status == 422 {
            assert!(v["error"]["data"]["fields"]["task"].is_string(), "{v}");
        }
    }
}

/// Sets a handler's task in the database, behind the API's checks.
async fn store_task(s: &Server, id: &Value, task: &str) {
    use sqlx::Connection;
    let id = id.as_i64().expect("handler id");
    let sql = "UPDATE handlers SET task = $1 WHERE id = $2";
    let updated = if s.db.is_postgres() {
        let mut c = sqlx::PgConnection::connect(&s.db.url()).await.unwrap();
        let q = sqlx::query(sql).bind(task).bind(id);
        q.execute(&mut c).await.unwrap().rows_affected()
    } else {
        let mut c = sqlx::SqliteConnection::connect(&s.db.url()).await.unwrap();
        let q = sqlx::query(sql).bind(task).bind(id);
        q.execute(&mut c).await.unwrap().rows_affected()
    };
    assert_eq!(updated, 1);
}

#[tokio::test]
async fn the_list_filters_by_status_event_type_and_stage_and_hides_archived() {
    let s = Server::start().await;
    write_script(&s, "check.sh", "#!/bin/sh\nexit 0\n", true);
    let url = "http://127.0.0.1:9/hook";
    let a = create_handler(
        &s,
        json!({"name": "a", "event": "clients.create", "task": url}),
    )
    .await;
    let b = create_handler(
        &s,
        json!({"name": "b", "event": "clients.update", "stage": "before", "type": "script",
               "task": "check.sh", "priority": 10}),
    )
    .await;
    let c = create_handler(
        &s,
        json!({"name": "c", "event": "dids.*", "task": url, "status": "disabled"}),
    )
    .await;
    let d = create_handler(
        &s,
        json!({"name": "d", "event": "clients.create", "task": url}),
    )
    .await;
    let (st, v) = s.post(&path(&d["id"], "/archive"), json!({})).await;
    assert_eq!(st, 200, "{v}");

    let ids = |v: &Value| -> Vec<Value> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|h| h["id"].clone())
            .collect()
    };
    let list = |q: &'static str| {
        let s = &s;
        async move {
            let (st, v) = s.get(&format!("{HANDLERS}?{q}")).await;
            assert_eq!(st, 200, "{q}: {v}");
            assert_eq!(v["total"], v["items"].as_array().unwrap().len(), "{q}: {v}");
            v
        }
    };
    // Newest first, as every list; archived hidden by default.
    let all = list("").await;
    assert_eq!(
        ids(&all),
        vec![c["id"].clone(), b["id"].clone(), a["id"].clone()]
    );
    assert!(
        all["items"][0].get("secret").is_none(),
        "no secrets in lists"
    );
    assert_eq!(ids(&list("status=archived").await), vec![d["id"].clone()]);
    assert_eq!(ids(&list("status=disabled").await), vec![c["id"].clone()]);
    assert_eq!(
        ids(&list("status=enabled").await),
        vec![b["id"].clone(), a["id"].clone()]
    );
    assert_eq!(
        ids(&list("event=clients.create").await),
        vec![a["id"].clone()]
    );
    assert_eq!(ids(&list("event=dids.*").await), vec![c["id"].clone()]);
    assert_eq!(ids(&list("type=script").await), vec![b["id"].clone()]);
    assert_eq!(
        ids(&list("type=http").await),
        vec![c["id"].clone(), a["id"].clone()]
    );
    assert_eq!(ids(&list("stage=before").await), vec![b["id"].clone()]);
    assert_eq!(
        ids(&list("stage=after&type=http&status=disabled").await),
        vec![c["id"].clone()]
    );
    assert_eq!(ids(&list("event=dids.update").await), Vec::<Value>::new());

    // `matches`: the handlers an event would call, whatever pattern names it.
    let all_events = create_handler(&s, json!({"name": "e", "event": "*", "task": url})).await;
    let email = create_handler(
        &s,
        json!({"name": "f", "event": "email_rates_manager.*", "task": url}),
    )
    .await;
    assert_eq!(
        ids(&list("matches=dids.update").await),
        vec![all_events["id"].clone(), c["id"].clone()]
    );
    assert_eq!(
        ids(&list("matches=clients.create&status=enabled").await),
        vec![all_events["id"].clone(), a["id"].clone()]
    );
    assert_eq!(
        ids(&list("matches=email_rates_manager.import").await),
        vec![email["id"].clone(), all_events["id"].clone()]
    );
    // Its event filters outside the catalogue are refused: see
    // monitoring::list_filters_refuse_words_outside_their_set.
    assert_eq!(
        ids(&list("event=email_rates_manager.*").await),
        vec![email["id"].clone()]
    );
}

/// PostgreSQL: a handler's delete waits for the transactions writing deliveries; behind
/// one that lasts (an import), it answers 409 after a few seconds instead of holding
/// every event up, and goes once that transaction has ended.
#[tokio::test]
async fn a_delete_behind_a_long_transaction_answers_409_then_goes() {
    use sqlx::Connection;
    let s = Server::start().await;
    if s.db
        .not_run_on_sqlite("its one writer serialises the delete with every write")
    {
        return;
    }
    let h = create_handler(
        &s,
        json!({"name": "doomed", "event": "clients.create", "task": "http://127.0.0.1:9/a"}),
    )
    .await;
    // Stands for a long transaction that writes deliveries.
    let mut long = sqlx::PgConnection::connect(&s.db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut long).await.unwrap();
    sqlx::query("LOCK TABLE deliveries IN ROW EXCLUSIVE MODE")
        .execute(&mut long)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (st, v) = s.delete(&path(&h["id"], "")).await;
    assert_eq!(st, 409, "{v}");
    assert_error(&v, "conflict");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("try again"),
        "{v}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(1) && waited < std::time::Duration::from_secs(15),
        "tried for {waited:?}"
    );
    let (st, v) = s.get(&path(&h["id"], "")).await;
    assert_eq!(st, 200, "still there: {v}");
    sqlx::query("COMMIT").execute(&mut long).await.unwrap();
    let (st, v) = s.delete(&path(&h["id"], "")).await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = s.get(&path(&h["id"], "")).await;
    assert_eq!(st, 404);
}

/// A PATCH refuses a field the handler lacks (a typo such as `timeout`) instead of
/// ignoring it with a 200; the handler read and sent back with a change passes.
#[tokio::test]
async fn a_patch_refuses_a_field_the_handler_lacks() {
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "old", "event": "clients.create", "task": "http://127.0.0.1:9/a"}),
    )
    .await;
    let p = path(&h["id"], "");
    let (_, before) = s.get(&p).await;
    let (st, v) = s
        .patch(
            &p,
            json!({"name": "new", "timeout": 100, "secret": "whsec_x"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_error(&v, "validation_failed");
    for field in ["timeout", "secret"] {
        assert!(v["error"]["data"]["fields"][field].is_string(), "{v}");
    }
    for (body, field) in [
        (json!({"timeout_ms": -5}), "timeout_ms"),
        (json!({"retry_schedule": [1, -1]}), "retry_schedule"),
    ] {
        let (st, v) = s.patch(&p, body).await;
        assert_eq!(st, 422, "{v}");
        assert!(v["error"]["data"]["fields"][field].is_string(), "{v}");
    }
    // `null` for a field no handler can be without: refused, not a 200 changing nothing.
    let (st, v) = s
        .patch(&p, json!({"timeout_ms": null, "task": null, "name": "new"}))
        .await;
    assert_eq!(st, 422, "{v}");
    for field in ["timeout_ms", "task"] {
        assert_eq!(v["error"]["data"]["fields"][field], "cannot be null", "{v}");
    }
    let (_, after) = s.get(&p).await;
    assert_eq!(after, before, "nothing changed");
    let mut read = after;
    read["name"] = json!("new");
    let (st, v) = s.patch(&p, read).await;
    assert_eq!((st, &v["name"]), (200, &json!("new")), "{v}");
}

/// A create refuses a field a handler does not have: a misspelt `retry_shedule` made a
/// handler on the default schedule of about 27 hours, with a 201. A handler read and
/// sent back makes a copy (its read-only fields pass), and `null` takes a default.
#[tokio::test]
async fn a_create_refuses_a_field_the_handler_lacks() {
    let s = Server::start().await;
    let (st, v) = s
        .post(
            HANDLERS,
            json!({"name": "typo", "event": "clients.create", "task": "http://127.0.0.1:9/a",
                   "retry_shedule": [1, 1], "timeout": 100, "secret": "whsec_x"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_error(&v, "validation_failed");
    for field in ["retry_shedule", "timeout", "secret"] {
        assert!(
            v["error"]["data"]["fields"][field].is_string(),
            "{field}: {v}"
        );
    }
    let (_, list) = s.get(&format!("{HANDLERS}?status=enabled")).await;
    assert_eq!(list["total"], 0, "nothing was made: {list}");

    let h = create_handler(
        &s,
        json!({"name": "orig", "event": "clients.create", "task": "http://127.0.0.1:9/a",
               "timeout_ms": null, "retry_schedule": [1, 2]}),
    )
    .await;
    assert_eq!(h["timeout_ms"], 5000, "null is the default: {h}");
    let (_, mut copy) = s.get(&path(&h["id"], "")).await;
    copy["name"] = json!("copy");
    let (st, v) = s.post(HANDLERS, copy).await;
    assert_eq!(st, 201, "{v}");
    assert_ne!(v["id"], h["id"], "a new handler: {v}");
    assert_eq!(v["retry_schedule"], json!([1, 2]), "{v}");
}

#[tokio::test]
async fn get_patch_and_delete() {
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "old", "event": "clients.create", "task": "http://127.0.0.1:9/a"}),
    )
    .await;
    let (st, v) = s
        .patch(
            &path(&h["id"], ""),
            json!({"name": "new", "priority": 5, "retry_schedule": [0, 1], "timeout_ms": 1500,
                   "event": "clients.*", "task": "https://example.com/b"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "new");
    assert_eq!(v["priority"], 5);
    assert_eq!(v["retry_schedule"], json!([0, 1]));
    assert_eq!(v["timeout_ms"], 1500);
    assert_eq!(v["event"], "clients.*");
    assert_eq!(v["task"], "https://example.com/b");
    assert_eq!(v["stage"], "after", "untouched fields stay");
    assert_eq!(v["created_at"], h["created_at"]);
    assert!(v["updated_at"].as_str() >= h["updated_at"].as_str(), "{v}");
    let (st, got) = s.get(&path(&h["id"], "")).await;
    assert_eq!(st, 200);
    assert_eq!(got, v, "GET shows the patched handler");

    let (st, v) = s.delete(&path(&h["id"], "")).await;
    assert_eq!(st, 200, "{v}");
    for (method, p) in [
        ("GET", path(&h["id"], "")),
        ("DELETE", path(&h["id"], "")),
        ("GET", path(&h["id"], "/secret")),
    ] {
        let (st, v) = s.call(method, &p, None).await;
        assert_eq!(st, 404, "{method} {p}: {v}");
        assert_error(&v, "not_found");
    }
    let (st, v) = s.patch(&path(&h["id"], ""), json!({"name": "x"})).await;
    assert_eq!(st, 404, "{v}");
    let (_, list) = s.get(HANDLERS).await;
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn enable_disable_and_archive() {
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "h", "event": "clients.create", "task": "http://127.0.0.1:9/a"}),
    )
    .await;
    for (action, status) in [
        ("disable", "disabled"),
        ("enable", "enabled"),
        ("archive", "archived"),
    ] {
        let (st, v) = s
            .post(&path(&h["id"], &format!("/{action}")), json!({}))
            .await;
        assert_eq!(st, 200, "{action}: {v}");
        assert_eq!(v["status"], status, "{action}: {v}");
        let (_, got) = s.get(&path(&h["id"], "")).await;
        assert_eq!(got["status"], status);
    }
    let (_, list) = s.get(HANDLERS).await;
    assert_eq!(list["total"], 0, "archived is hidden: {list}");
    for action in ["enable", "disable", "archive"] {
        let (st, v) = s
            .post(&format!("{HANDLERS}/99999/{action}"), json!({}))
            .await;
        assert_eq!(st, 404, "{action}: {v}");
    }
}

#[tokio::test]
async fn rotating_the_secret_replaces_it() {
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "h", "event": "clients.create", "task": "http://127.0.0.1:9/a"}),
    )
    .await;
    let (st, v) = s.post(&path(&h["id"], "/secret/rotate"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    let new = v["secret"].as_str().expect("new secret");
    assert!(new.starts_with("whsec_"), "{new}");
    assert_ne!(new, h["secret"].as_str().unwrap());
    let (_, got) = s.get(&path(&h["id"], "/secret")).await;
    assert_eq!(got["secret"], new);
    // The secret replaced is listed with the end of its 24 hours.
    let day = 24 * 3600 * 1_000_000;
    let previous = got["previous_secrets"].as_array().expect("a list").clone();
    assert_eq!(previous.len(), 1, "{got}");
    assert_eq!(previous[0]["secret"], h["secret"]);
    let until = micros(&previous[0]["until"]);
    assert!((until - now_micros() - day).abs() < 60_000_000, "{got}");

    // A second rotation: both replaced secrets listed, newest first, each with its own end.
    let (_, v) = s.post(&path(&h["id"], "/secret/rotate"), json!({})).await;
    let (_, got) = s.get(&path(&h["id"], "/secret")).await;
    assert_eq!(got["secret"], v["secret"]);
    let previous = got["previous_secrets"].as_array().expect("a list").clone();
    assert_eq!(previous.len(), 2, "{got}");
    assert_eq!(previous[0]["secret"], new);
    assert_eq!(previous[1]["secret"], h["secret"]);
    assert!(micros(&previous[0]["until"]) >= until, "{got}");
    assert_eq!(
        micros(&previous[1]["until"]),
        until,
        "the first one's end stays"
    );
    assert_eq!(
        got.as_object().unwrap().len(),
        2,
        "secret and previous_secrets: {got}"
    );
    let (st, _) = s
        .post(&format!("{HANDLERS}/99999/secret/rotate"), json!({}))
        .await;
    assert_eq!(st, 404);
    // A secret sent with it was dropped and a random one made, with a 200.
    for (body, field) in [
        (
            json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
            "secret",
        ),
        (json!({"grace_hours": 48}), "grace_hours"),
    ] {
        let (st, v) = s.post(&path(&h["id"], "/secret/rotate"), body).await;
        assert!(st == 422 || st == 400, "{v}");
        let said = v["error"]["message"].as_str().unwrap_or_default();
        assert!(said.contains(field), "{v}");
    }
    let (_, after) = s.get(&path(&h["id"], "/secret")).await;
    assert_eq!(after["secret"], got["secret"], "not rotated: {after}");
}

#[tokio::test]
async fn test_calls_the_handler_now_and_returns_the_execution() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    r.reply("/t", r#"{"pong":1}"#);
    let h = create_handler(
        &s,
        json!({"name": "t", "event": "clients.create", "task": r.url("/t")}),
    )
    .await;
    let (st, e) = s.post(&path(&h["id"], "/test"), json!({})).await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(e["handlers_id"], h["id"]);
    assert_eq!(e["events_id"], "clients.create");
    assert_eq!(e["stage"], "after");
    assert_eq!(e["attempt"], 0, "a test, not a delivery attempt");
    assert_eq!(e["object_id"], Value::Null, "about no stored object: {e}");
    assert_eq!(e["response_status"], 200);
    assert_eq!(e["response_body"], r#"{"pong":1}"#);
    assert_eq!(e["request"]["event"]["events_id"], "clients.create");
    assert_eq!(e["request"]["event"]["uid"], e["event_uid"]);
    assert!(e["request"]["data"].is_object(), "the sample: {e}");
    let hits = r.hits_on("/t");
    assert_eq!(hits.len(), 1, "called once, at once");
    assert_eq!(
        hits[0].json, e["request"],
        "the request logged is the one sent"
    );
    assert_eq!(hits[0].uid(), e["event_uid"].as_str().unwrap());
    let secret = h["secret"].as_str().unwrap();
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&hits[0].body, &hits[0].headers)
        .expect("the test call is signed");
    let logged = executions(&s, &format!("handlers_id={}", h["id"])).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["id"], e["id"]);

    // Another event's sample; an unknown event; a failing receiver.
    let (st, e) = s
        .post(
            &path(&h["id"], "/test"),
            json!({"events_id": "dids.create"}),
        )
        .await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["events_id"], "dids.create");
    assert_eq!(r.hits_on("/t")[1].events_id(), "dids.create");
    let (st, v) = s
        .post(&path(&h["id"], "/test"), json!({"events_id": "nope.nope"}))
        .await;
    assert_eq!(st, 422, "{v}");
    // A misspelt field is refused, not dropped for the default event.
    let calls = r.hits_on("/t").len();
    let (st, v) = s
        .post(&path(&h["id"], "/test"), json!({"event_id": "dids.create"}))
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(v["error"]["data"]["fields"]["event_id"].is_string(), "{v}");
    assert_eq!(r.hits_on("/t").len(), calls, "not called");
    r.fail(1, 500, None);
    let (st, e) = s.post(&path(&h["id"], "/test"), json!({})).await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["status"], "fail", "{e}");
    assert_eq!(e["response_status"], 500);
    assert!(e["error"].is_string(), "{e}");
    let (st, _) = s.post(&format!("{HANDLERS}/99999/test"), json!({})).await;
    assert_eq!(st, 404);
}

/// A before handler's test call is judged by the before stage's rules: a forbid or a
/// broken answer is a failed call, a changed field is shown in `modified`; an event
/// without a before stage has no before sample.
#[tokio::test]
async fn a_before_handlers_test_is_judged_by_the_before_rules() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let h = create_handler(
        &s,
        json!({"name": "gate", "event": "clients.*", "stage": "before", "task": r.url("/b")}),
    )
    .await;
    let test = |body: Value| {
        let (s, p) = (&s, path(&h["id"], "/test"));
        async move {
            let (st, e) = s.post(&p, body).await;
            assert_eq!(st, 200, "{e}");
            e
        }
    };
    r.reply("/b", r#"{"allow": false, "message": "nope"}"#);
    let e = test(json!({"events_id": "clients.create"})).await;
    assert_eq!(
        (&e["status"], &e["error"]),
        (&json!("fail"), &json!("forbidden: nope")),
        "{e}"
    );
    assert_eq!(e["request"]["event"]["stage"], "before", "{e}");
    r.reply("/b", r#"[1, 2]"#);
    let e = test(json!({"events_id": "clients.create"})).await;
    assert_eq!(e["status"], "fail", "{e}");
    assert!(e["error"].as_str().unwrap().contains("JSON object"), "{e}");
    r.reply("/b", r#"{"data": {"name": "Renamed by the gate"}}"#);
    let e = test(json!({"events_id": "clients.create"})).await;
    assert_eq!(e["status"], "success", "{e}");
    assert_eq!(e["modified"], json!({"name": "Renamed by the gate"}), "{e}");
    // A field no request sets (the balance) fails every real call: so it fails the test.
    r.reply("/b", r#"{"data": {"balance": "1000000"}}"#);
    let e = test(json!({"events_id": "clients.create"})).await;
    assert_eq!(e["status"], "fail", "{e}");
    assert!(e["error"].as_str().unwrap().contains("balance"), "{e}");
    r.reply("/b", "");
    let e = test(json!({"events_id": "clients.create"})).await;
    assert_eq!(
        (&e["status"], &e["modified"]),
        (&json!("success"), &Value::Null),
        "{e}"
    );

    let calls = r.hits_on("/b").len();
    let (st, v) = s
        .post(
            &path(&h["id"], "/test"),
            json!({"events_id": "clients.balance_zero"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(v["error"]["data"]["fields"]["events_id"].is_string(), "{v}");
    assert_eq!(r.hits_on("/b").len(), calls, "not called");
}

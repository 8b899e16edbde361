//! Black-box tests of rate tables, the Import Manager and the Email Rates Manager
//! (SPEC §3) through the real server, with real files.

#[path = "../../../mailbox/tests/common/mod.rs"]
mod dovecot;
#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../delivery/receiver.rs"]
mod receiver;

mod email;
mod imap;
mod imports;
mod tables;

use serde_json::Value;

use harness::{wait_for, Server, KEY};

/// A file of the intake crate's test data, shared with its unit tests and fuzz corpus.
pub fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/../intake/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `POST /api/v1/imports` as a browser form would send it.
pub async fn upload(
    s: &Server,
    kind: Option<&str>,
    rate_tables_id: Option<i64>,
    file: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    if let Some(k) = kind {
        form = form.text("kind", k.to_string());
    }
    if let Some(id) = rate_tables_id {
        form = form.text("rate_tables_id", id.to_string());
    }
    if let Some((name, bytes)) = file {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name(name.to_string())
                .mime_str("text/csv")
                .expect("mime"),
        );
    }
    let resp = s
        .http
        .post(format!("{}/api/v1/imports", s.base))
        .header("X-Api-Key", KEY)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until an import has ended and returns it.
pub async fn finished(s: &Server, id: i64, secs: u64) -> Value {
    wait_for(secs, "the import to end", || async move {
        let (status, v) = s.get(&format!("/api/v1/imports/{id}")).await;
        assert_eq!(status, 200, "{v}");
        matches!(v["status"].as_str(), Some("success" | "failed")).then_some(v)
    })
    .await
}

/// Creates a rate table and returns its id.
pub async fn table(s: &Server, body: Value) -> i64 {
    let t = s.ok("/api/v1/rate_tables", body, 201).await;
    t["id"].as_i64().expect("id")
}

/// Posts a raw message to the email rates manager.
pub async fn post_message(s: &Server, raw: Vec<u8>) -> (u16, Value) {
    let resp = s
        .http
        .post(format!("{}/api/v1/email_rates/messages", s.base))
        .header("X-Api-Key", KEY)
        .header("Content-Type", "message/rfc822")
        .body(raw)
        .send()
        .await
        .expect("post message");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Events of one id, oldest first.
pub async fn events_of(s: &Server, events_id: &str) -> Vec<Value> {
    s.events()
        .await
        .into_iter()
        .filter(|e| e["event"]["events_id"] == events_id)
        .collect()
}

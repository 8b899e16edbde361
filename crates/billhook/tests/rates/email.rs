//! The Email Rates Manager through `POST /api/v1/email_rates/messages` and
//! `billhook email-rates ingest`: every outcome, its event and its data.

use serde_json::{json, Value};

use crate::harness::{wait_for, Server};
use crate::receiver::Receiver;
use crate::{data, events_of, finished, post_message, table};

/// The rate table that Carrier A's test messages are meant for.
async fn carrier_a(s: &Server) -> i64 {
    table(
        s,
        json!({"name": "Carrier A", "currency": "EUR",
               "email_sender": "@carrier-a\\.example$", "email_subject": "deck"}),
    )
    .await
}

fn assert_message_data(data: &Value, table: Option<i64>) {
    assert_eq!(data["sender"], "rates@carrier-a.example", "{data}");
    assert!(
        data["message_id"].as_str().unwrap().starts_with('<'),
        "{data}"
    );
    assert!(data["subject"].is_string(), "{data}");
    assert!(
        data["received_at"].as_str().unwrap().ends_with('Z'),
        "{data}"
    );
    assert_eq!(data["rate_tables_id"], json!(table), "{data}");
}

#[tokio::test]
async fn an_unknown_sender_raises_rate_tables_no_match() {
    let s = Server::start().await;
    carrier_a(&s).await;
    let (status, report) = post_message(&s, data("unknown_sender.eml")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["outcomes"][0]["outcome"], "rate_tables_no_match",
        "{report}"
    );
    let events = events_of(&s, "email_rates_manager.rate_tables_no_match").await;
    assert_eq!(events.len(), 1);
    let d = &events[0]["data"];
    assert_eq!(d["sender"], "offers@unknown-carrier.example");
    assert_eq!(d["subject"], "Best rates in town!");
    assert_eq!(d["rate_tables_id"], Value::Null);
    assert_eq!(d["rate_table"], Value::Null);
    assert!(d["reason"].as_str().unwrap().contains("match"), "{d}");

    // A subject the table's pattern refuses does not match either.
    let (_, report) = post_message(&s, data("no_attachments.eml")).await;
    assert_eq!(
        report["outcomes"][0]["outcome"], "rate_tables_no_match",
        "{report}"
    );
}

#[tokio::test]
async fn a_matching_message_without_attachments_raises_no_attachments() {
    let s = Server::start().await;
    let id = table(
        &s,
        json!({"name": "Carrier A", "email_sender": "carrier-a"}),
    )
    .await;
    let (_, report) = post_message(&s, data("no_attachments.eml")).await;
    assert_eq!(
        report["outcomes"][0]["outcome"], "no_attachments",
        "{report}"
    );
    let events = events_of(&s, "email_rates_manager.no_attachments").await;
    assert_eq!(events.len(), 1);
    let d = &events[0]["data"];
    assert_message_data(d, Some(id));
    assert_eq!(d["rate_table"], "Carrier A");
    assert_eq!(d["subject"], "Rates coming tomorrow");
    assert!(d["reason"].is_string());

    // A ZIP without any CSV inside is a file that cannot be read as a rate deck.
    let (_, report) = post_message(&s, data("zip_without_csv.eml")).await;
    let outcome = &report["outcomes"][0];
    assert_eq!(outcome["outcome"], "file_processing_error", "{report}");
    assert_eq!(outcome["file_name"], "docs.zip", "{report}");
    assert_eq!(
        outcome["reason"], "the ZIP archive contains no CSV file",
        "{report}"
    );
}

#[tokio::test]
async fn a_broken_zip_raises_file_processing_error_with_the_file_and_reason() {
    let s = Server::start().await;
    let id = carrier_a(&s).await;
    let (_, report) = post_message(&s, data("broken_zip.eml")).await;
    assert_eq!(
        report["outcomes"][0]["outcome"], "file_processing_error",
        "{report}"
    );
    let events = events_of(&s, "email_rates_manager.file_processing_error").await;
    assert_eq!(events.len(), 1);
    let d = &events[0]["data"];
    assert_message_data(d, Some(id));
    assert!(d["file_name"].as_str().unwrap().ends_with(".zip"), "{d}");
    assert!(!d["reason"].as_str().unwrap().is_empty(), "{d}");
    let (_, imports) = s.get("/api/v1/imports").await;
    assert_eq!(imports["total"], 0);
}

#[tokio::test]
async fn a_zipped_deck_is_imported_into_the_matching_table_once() {
    let s = Server::start().await;
    let id = carrier_a(&s).await;
    let (status, report) = post_message(&s, data("rates_zip.eml")).await;
    assert_eq!(status, 200, "{report}");
    let outcomes = report["outcomes"].as_array().unwrap();
    assert!(!outcomes.is_empty());
    for o in outcomes {
        assert_eq!(o["outcome"], "import_queued", "{report}");
        let import = finished(&s, o["imports_id"].as_i64().unwrap(), 30).await;
        assert_eq!(import["status"], "success", "{import}");
        assert_eq!(import["source"], "email");
        assert_eq!(import["rate_tables_id"], id);
    }
    let (_, rates) = s.get(&format!("/api/v1/rate_tables/{id}/rates")).await;
    assert!(rates["total"].as_i64().unwrap() > 0, "{rates}");
    assert_eq!(
        events_of(&s, "importd.process_success").await.len(),
        outcomes.len()
    );

    // The same message again (an MTA retrying a pipe, say) is not handled twice.
    let before = s.events().await.len();
    let (_, again) = post_message(&s, data("rates_zip.eml")).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(s.events().await.len(), before);
    let (_, imports) = s.get("/api/v1/imports").await;
    assert_eq!(imports["total"], outcomes.len() as i64);
}

#[tokio::test]
async fn an_import_handler_takes_the_file_and_the_builtin_import_stops() {
    let s = Server::start().await;
    let receiver = Receiver::start().await;
    let id = carrier_a(&s).await;
    let (status, h) = s
        .post(
            "/api/v1/handlers",
            json!({"name": "deck loader", "event": "email_rates_manager.import", "stage": "after",
                   "type": "http", "task": receiver.url("/decks")}),
        )
        .await;
    assert_eq!(status, 201, "{h}");
    let (_, report) = post_message(&s, data("rates_csv.eml")).await;
    assert_eq!(report["outcomes"][0]["outcome"], "import", "{report}");
    let hits = receiver.wait_hits("/decks", 1, 30).await;
    let d = &hits[0].json["data"];
    assert_eq!(hits[0].events_id(), "email_rates_manager.import");
    assert_message_data(d, Some(id));
    assert_eq!(d["rate_table"], "Carrier A");
    assert_eq!(d["currency"], "EUR");
    let content = base64_decode(d["content_base64"].as_str().unwrap());
    assert_eq!(d["size"], content.len());
    assert!(
        String::from_utf8(content).unwrap().contains(','),
        "a CSV file"
    );
    assert!(d["file_name"].as_str().unwrap().ends_with(".csv"), "{d}");
    let (_, imports) = s.get("/api/v1/imports").await;
    assert_eq!(
        imports["total"], 0,
        "the built-in import stopped: {imports}"
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    // A tiny decoder keeps base64 out of the test dependencies.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = alphabet.iter().position(|a| *a == c).expect("base64") as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn email_rates_ingest_reads_a_message_from_standard_input() {
    let s = Server::start().await;
    let id = carrier_a(&s).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_billhook"))
        .args(["email-rates", "ingest", "--database-url", &s.db.url()])
        .current_dir(s.dir.path())
        .env("BILLHOOK_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("billhook email-rates ingest");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&data("rates_csv.eml")).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(
        report["outcomes"][0]["outcome"], "import_queued",
        "{report}"
    );
    // The server sharing the imports directory runs the job.
    let job = report["outcomes"][0]["imports_id"].as_i64().unwrap();
    let import = finished(&s, job, 30).await;
    assert_eq!(import["status"], "success", "{import}");
    let (_, rates) = s.get(&format!("/api/v1/rate_tables/{id}/rates")).await;
    assert!(rates["total"].as_i64().unwrap() > 0);
    wait_for(5, "events", || async {
        (!events_of(&s, "importd.process_success").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_empty_or_unreadable_body_is_refused_or_reported() {
    let s = Server::start().await;
    carrier_a(&s).await;
    let (status, e) = post_message(&s, Vec::new()).await;
    assert_eq!(status, 400, "{e}");
    let (status, report) = post_message(&s, data("not_mail.txt")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["outcomes"][0]["outcome"], "rate_tables_no_match",
        "{report}"
    );
}

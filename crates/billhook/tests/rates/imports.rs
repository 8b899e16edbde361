//! The Import Manager: rates, clients and DIDs from CSV, all or nothing, with its events,
//! its validation, and a job interrupted by SIGKILL.

use serde_json::json;

use crate::harness::{assert_error, wait_for, Server};
use crate::{data, events_of, finished, table, upload};

async fn rate_count(s: &Server, table: i64) -> i64 {
    let (_, v) = s
        .get(&format!("/api/v1/rate_tables/{table}/rates?limit=1"))
        .await;
    v["total"].as_i64().expect("total")
}

#[tokio::test]
async fn a_rates_file_with_bom_and_semicolons_imports_and_raises_process_success() {
    let s = Server::start().await;
    let id = table(&s, json!({"name": "Carrier A", "currency": "EUR"})).await;
    let (status, v) = upload(
        &s,
        Some("rates"),
        Some(id),
        Some(("rates_semicolon_bom.csv", data("rates_semicolon_bom.csv"))),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "queued", "{v}");
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "success", "{import}");
    assert_eq!(import["kind"], "rates");
    assert_eq!(import["file_name"], "rates_semicolon_bom.csv");
    assert_eq!(import["rows_total"], 3);
    assert_eq!(import["rows_imported"], 3);
    assert_eq!(import["errors"], json!([]));
    assert_eq!(rate_count(&s, id).await, 3);
    let (_, r) = s
        .get(&format!("/api/v1/rate_tables/{id}/rates?prefix=4930"))
        .await;
    assert_eq!(r["items"][0]["rate"], "0.02");
    assert_eq!(
        r["items"][0]["effective_from"],
        "2025-02-01T00:00:00.000000Z"
    );

    let events = events_of(&s, "importd.process_success").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["event"]["object_id"], import["id"]);
    // The event carries the import as the API shows it, at its end.
    for field in [
        "id",
        "kind",
        "status",
        "file_name",
        "rows_total",
        "rows_imported",
        "errors",
        "rate_tables_id",
    ] {
        assert_eq!(e["data"][field], import[field], "{field}: {e}");
    }

    // Importing the same deck again replaces the same (prefix, start) rows.
    let (_, v) = upload(
        &s,
        Some("rates"),
        Some(id),
        Some(("again.csv", data("rates_semicolon_bom.csv"))),
    )
    .await;
    let again = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(again["status"], "success", "{again}");
    assert!(
        rate_count(&s, id).await <= 4,
        "dated rows are replaced, not duplicated"
    );
}

#[tokio::test]
async fn one_bad_row_fails_the_whole_rates_import_listing_every_bad_line() {
    let s = Server::start().await;
    let id = table(&s, json!({"name": "Carrier A"})).await;
    let (_, v) = upload(
        &s,
        Some("rates"),
        Some(id),
        Some(("bad.csv", data("rates_bad_rows.csv"))),
    )
    .await;
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "failed", "{import}");
    assert_eq!(import["rows_imported"], 0);
    let lines: Vec<i64> = import["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    // 0,0068 (3), 12a (4), a third field (5), 7 decimals (7), a negative rate (9); the
    // good lines are not listed, and a row of empty fields (8) counts as blank.
    for bad in [3, 4, 5, 7, 9] {
        assert!(lines.contains(&bad), "line {bad} listed: {import}");
    }
    for good in [2, 6, 8, 10] {
        assert!(!lines.contains(&good), "line {good} is good: {import}");
    }
    let comma = import["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["line"] == 3)
        .unwrap();
    assert!(
        comma["message"].as_str().unwrap().contains("rate"),
        "{comma}"
    );
    assert_eq!(rate_count(&s, id).await, 0, "nothing is imported");
    let failed = events_of(&s, "importd.process_failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["data"]["errors"], import["errors"]);
    assert_eq!(failed[0]["data"]["status"], "failed");
    assert!(events_of(&s, "importd.process_success").await.is_empty());

    // A file that is not a rate deck at all fails with a message about its header.
    let (_, v) = upload(
        &s,
        Some("rates"),
        Some(id),
        Some(("x.csv", data("rates_unknown_column.csv"))),
    )
    .await;
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "failed", "{import}");
    assert_eq!(import["errors"][0]["line"], 1, "{import}");
}

#[tokio::test]
async fn clients_import_through_the_pipeline_each_raising_clients_create() {
    let s = Server::start().await;
    let (_, v) = upload(
        &s,
        Some("clients"),
        None,
        Some(("clients.csv", data("clients.csv"))),
    )
    .await;
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "success", "{import}");
    assert_eq!(import["rows_imported"], 3);
    let (_, clients) = s.get("/api/v1/clients?limit=10").await;
    assert_eq!(clients["total"], 3, "{clients}");
    let acme = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Acme, \"Big\" Ltd")
        .expect("quoted name with a comma and quotes");
    assert_eq!(acme["currency"], "EUR");
    assert_eq!(acme["credit"], "100.5");
    assert_eq!(acme["tags"], json!(["gold", "vip"]));
    assert!(clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "Multi\nLine Co"));

    // Each row raised its own clients.create, before the import's own event.
    let events = s.events().await;
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["events_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "clients.create",
            "clients.create",
            "clients.create",
            "importd.process_success"
        ]
    );
}

#[tokio::test]
async fn a_bad_client_row_imports_nothing_and_raises_no_client_events() {
    let s = Server::start().await;
    let csv = "name,currency,email\nGood Co,USD,a@good.example\n,USD,\nBad Mail,USD,not-an-address\nOther,usd,\n";
    let (_, v) = upload(&s, Some("clients"), None, Some(("clients.csv", csv.into()))).await;
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "failed", "{import}");
    let errors = import["errors"].as_array().unwrap();
    let lines: Vec<i64> = errors.iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [3, 4, 5], "{import}");
    assert!(
        errors[1]["message"].as_str().unwrap().contains("email"),
        "{import}"
    );
    let (_, clients) = s.get("/api/v1/clients").await;
    assert_eq!(clients["total"], 0, "all or nothing: {clients}");
    assert!(events_of(&s, "clients.create").await.is_empty());
    assert_eq!(events_of(&s, "importd.process_failed").await.len(), 1);
}

#[tokio::test]
async fn dids_import_with_clients_and_a_duplicate_number_in_the_file() {
    let s = Server::start().await;
    let client = s.ok("/api/v1/clients", json!({"name": "Acme"}), 201).await;
    let cid = client["id"].as_i64().unwrap();
    let csv = format!("number;clients_id\n+14155550123;{cid}\n+442071234567;\n");
    let (_, v) = upload(&s, Some("dids"), None, Some(("dids.csv", csv.into_bytes()))).await;
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "success", "{import}");
    assert_eq!(events_of(&s, "dids.create").await.len(), 2);
    let (_, dids) = s.get("/api/v1/dids").await;
    assert_eq!(dids["total"], 2, "{dids}");

    // A number already taken, or twice in one file, fails the file; nothing is added.
    let csv = "number\n+3312345678\n+3312345678\n";
    let (_, v) = upload(&s, Some("dids"), None, Some(("dup.csv", csv.into()))).await;
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "failed", "{import}");
    assert_eq!(import["errors"][0]["line"], 3, "{import}");
    let (_, dids) = s.get("/api/v1/dids").await;
    assert_eq!(dids["total"], 2, "{dids}");
    assert_eq!(events_of(&s, "dids.create").await.len(), 2);
}

#[tokio::test]
async fn import_requests_are_validated() {
    let s = Server::start().await;
    let id = table(&s, json!({"name": "A"})).await;
    let csv = || Some(("r.csv", b"prefix,rate\n1,0.1\n".to_vec()));
    type Case<'a> = (
        Option<&'a str>,
        Option<i64>,
        Option<(&'a str, Vec<u8>)>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (None, Some(id), csv(), "kind"),
        (Some("invoices"), None, csv(), "kind"),
        (Some("rates"), None, csv(), "rate_tables_id"),
        (Some("rates"), Some(999_999), csv(), "rate_tables_id"),
        (Some("clients"), Some(id), csv(), "rate_tables_id"),
        (Some("rates"), Some(id), None, "file"),
    ];
    for (kind, table, file, field) in cases {
        let (status, e) = upload(&s, kind, table, file).await;
        assert_eq!(status, 422, "{field}: {e}");
        assert_error(&e, "validation_failed");
        assert!(
            e["error"]["data"]["fields"][field].is_string(),
            "{field}: {e}"
        );
    }
    // Not a form at all.
    let (status, e) = s
        .raw("POST", "/api/v1/imports", "{\"kind\": \"rates\"}")
        .await;
    assert_eq!(status, 400, "{e}");
    assert_error(&e, "bad_request");
    let (_, list) = s.get("/api/v1/imports").await;
    assert_eq!(list["total"], 0, "nothing was queued: {list}");
    let (status, _) = s.get("/api/v1/imports/12345").await;
    assert_eq!(status, 404);
    // Refused uploads leave no file behind.
    let left: Vec<_> = std::fs::read_dir(s.dir.path().join("imports"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".upload"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A rate deck of `n` rows, generated.
fn big_deck(n: usize) -> Vec<u8> {
    let mut out = String::with_capacity(n * 24);
    out.push_str("prefix,rate,effective_from\n");
    for i in 0..n {
        out.push_str(&format!("{},0.{:04},2026-01-01\n", 100_000 + i, i % 10_000));
    }
    out.into_bytes()
}

#[tokio::test]
async fn an_import_killed_mid_flight_is_taken_up_again_after_restart() {
    let mut s = Server::start_with(vec![("BILLHOOK_IMPORT_LEASE_SECS", "2")]).await;
    let id = table(&s, json!({"name": "Big"})).await;
    let rows = 600_000;
    let (status, v) = upload(
        &s,
        Some("rates"),
        Some(id),
        Some(("big.csv", big_deck(rows))),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let job = v["id"].as_i64().unwrap();
    let status = wait_for(30, "the import to start", || async {
        let (_, v) = s.get(&format!("/api/v1/imports/{job}")).await;
        (v["status"] != "queued").then(|| v["status"].clone())
    })
    .await;
    assert_eq!(status, "processing", "the kill must land mid-import");
    s.kill();
    s.spawn();
    let import = finished(&s, job, 120).await;
    assert_eq!(import["status"], "success", "{import}");
    assert_eq!(import["rows_imported"], rows as i64);
    assert_eq!(rate_count(&s, id).await, rows as i64);
    assert_eq!(events_of(&s, "importd.process_success").await.len(), 1);
}

#[tokio::test]
async fn imported_rows_pass_the_before_chain_which_may_modify_or_forbid_them() {
    let s = Server::start().await;
    // Upper-cases the tag "vip"; forbids any client named "Blocked Co".
    crate::harness::write_script(
        &s,
        "check.sh",
        "#!/bin/sh\nbody=$(cat)\ncase \"$body\" in\n  *'Blocked Co'*) echo 'blocked by the CRM' >&2; exit 1;;\n  *'\"vip\"'*) printf '{\"data\": {\"tags\": [\"VIP\"]}}';;\nesac\n",
        true,
    );
    let h = s
        .ok(
            "/api/v1/handlers",
            json!({"name": "crm check", "stage": "before", "type": "script", "task": "check.sh",
                   "event": "clients.create", "on_failure": "forbid", "timeout_ms": 5000}),
            201,
        )
        .await;
    assert_eq!(h["stage"], "before");

    let csv = "name,tags\nGood Co,vip\nPlain Co,\n";
    let (_, v) = upload(&s, Some("clients"), None, Some(("ok.csv", csv.into()))).await;
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "success", "{import}");
    let (_, clients) = s.get("/api/v1/clients").await;
    let good = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Good Co")
        .unwrap();
    assert_eq!(
        good["tags"],
        json!(["VIP"]),
        "the handler's change is what was written"
    );
    let created = events_of(&s, "clients.create").await;
    assert_eq!(created.len(), 2);
    // Each row's before call was sent the dt its event got: the two stages pair up.
    let (_, calls) = s.get("/api/v1/executions?stage=before").await;
    let calls = calls["items"].as_array().expect("items").clone();
    for event in &created {
        let name = &event["data"]["name"];
        let call = calls
            .iter()
            .find(|c| &c["request"]["data"]["name"] == name)
            .unwrap_or_else(|| panic!("no before call for {name}: {calls:?}"));
        assert_eq!(
            call["request"]["event"]["dt"], event["event"]["dt"],
            "{name}"
        );
    }

    let csv = "name\nFine Co\nBlocked Co\n";
    let (_, v) = upload(&s, Some("clients"), None, Some(("blocked.csv", csv.into()))).await;
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "failed", "{import}");
    assert_eq!(import["errors"][0]["line"], 3, "{import}");
    assert!(
        import["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("blocked by the CRM"),
        "{import}"
    );
    let (_, clients) = s.get("/api/v1/clients").await;
    assert_eq!(
        clients["total"], 2,
        "Fine Co was not imported either: {clients}"
    );
    assert_eq!(events_of(&s, "clients.create").await.len(), 2);
}

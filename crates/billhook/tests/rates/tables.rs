//! Rate tables: CRUD, validation, and the rate list's filters.

use serde_json::json;

use crate::harness::{assert_error, Server};
use crate::{finished, table, upload};

#[tokio::test]
async fn rate_table_crud_and_validation() {
    let s = Server::start().await;
    let t = s
        .ok(
            "/api/v1/rate_tables",
            json!({"name": "Carrier A", "currency": "EUR",
                   "email_sender": "@carrier-a\\.example$", "email_subject": "rate"}),
            201,
        )
        .await;
    let id = t["id"].as_i64().unwrap();
    assert_eq!(t["currency"], "EUR");
    assert_eq!(t["email_sender"], "@carrier-a\\.example$");

    // Invalid patterns and fields are refused per field, and nothing is stored.
    let (status, e) = s
        .post(
            "/api/v1/rate_tables",
            json!({"name": "", "currency": "euro", "email_sender": "(unclosed", "email_subject": "[z-a]"}),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert_error(&e, "validation_failed");
    for field in ["name", "currency", "email_sender", "email_subject"] {
        assert!(
            e["error"]["data"]["fields"][field].is_string(),
            "{field}: {e}"
        );
    }
    let (status, e) = s.post("/api/v1/rate_tables", json!({"name": 5})).await;
    assert_eq!(status, 400, "{e}");

    let (status, list) = s.get("/api/v1/rate_tables").await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1, "{list}");

    let (status, t) = s
        .patch(
            &format!("/api/v1/rate_tables/{id}"),
            json!({"email_subject": null, "name": "Carrier A wholesale"}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["email_subject"], serde_json::Value::Null);
    assert_eq!(t["name"], "Carrier A wholesale");
    let (status, e) = s
        .patch(
            &format!("/api/v1/rate_tables/{id}"),
            json!({"email_sender": "*bad"}),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    let (_, t) = s.get(&format!("/api/v1/rate_tables/{id}")).await;
    assert_eq!(
        t["email_sender"], "@carrier-a\\.example$",
        "a refused patch changes nothing"
    );

    // A field the table lacks is refused, not ignored with a 200; the table read and
    // sent back passes.
    let (status, e) = s
        .patch(
            &format!("/api/v1/rate_tables/{id}"),
            json!({"name": "x", "curency": "EUR"}),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert!(e["error"]["data"]["fields"]["curency"].is_string(), "{e}");
    let (_, mut read) = s.get(&format!("/api/v1/rate_tables/{id}")).await;
    assert_eq!(
        read["name"], "Carrier A wholesale",
        "a refused patch changes nothing"
    );
    read["name"] = json!("Carrier A");
    let (status, t) = s.patch(&format!("/api/v1/rate_tables/{id}"), read).await;
    assert_eq!((status, &t["name"]), (200, &json!("Carrier A")), "{t}");

    let (status, _) = s.delete(&format!("/api/v1/rate_tables/{id}")).await;
    assert_eq!(status, 200);
    let (status, e) = s.get(&format!("/api/v1/rate_tables/{id}")).await;
    assert_eq!(status, 404, "{e}");
    let (status, _) = s.get(&format!("/api/v1/rate_tables/{id}/rates")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn rates_are_listed_with_prefix_number_and_date_filters() {
    let s = Server::start().await;
    let id = table(&s, json!({"name": "A-Z", "currency": "USD"})).await;
    let csv = "prefix,rate,effective_from\n\
               44,0.05,2025-01-01\n\
               44,0.04,2025-06-01\n\
               4420,0.01,2025-01-01\n\
               33,0.0675,2025-01-01\n\
               1,0.009,2030-01-01\n";
    let (status, v) = upload(&s, Some("rates"), Some(id), Some(("deck.csv", csv.into()))).await;
    assert_eq!(status, 202, "{v}");
    let import = finished(&s, v["id"].as_i64().unwrap(), 30).await;
    assert_eq!(import["status"], "success", "{import}");
    assert_eq!(import["rows_imported"], 5);

    let (_, all) = s.get(&format!("/api/v1/rate_tables/{id}/rates")).await;
    assert_eq!(all["total"], 5, "{all}");
    let first = &all["items"][0];
    assert_eq!(
        first["rate"], "0.009",
        "money is an exact decimal string: {first}"
    );

    let (_, by_prefix) = s
        .get(&format!("/api/v1/rate_tables/{id}/rates?prefix=44"))
        .await;
    assert_eq!(by_prefix["total"], 3, "{by_prefix}");

    // In force on 2025-07-01: 44 at its newer price, 4420, 33; not 1 (starts 2030).
    let (_, at) = s
        .get(&format!(
            "/api/v1/rate_tables/{id}/rates?effective_at=2025-07-01"
        ))
        .await;
    assert_eq!(at["total"], 3, "{at}");
    let r44 = at["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == "44")
        .unwrap();
    assert_eq!(r44["rate"], "0.04");

    // The price of a call: the longest prefix of the number comes first.
    let (_, n) = s
        .get(&format!(
            "/api/v1/rate_tables/{id}/rates?number=442071234567&effective_at=2025-07-01"
        ))
        .await;
    assert_eq!(n["items"][0]["prefix"], "4420", "{n}");
    assert_eq!(n["items"][0]["rate"], "0.01");

    for bad in ["prefix=4x", "number=+44", "effective_at=yesterday"] {
        let (status, e) = s
            .get(&format!("/api/v1/rate_tables/{id}/rates?{bad}"))
            .await;
        assert_eq!(status, 422, "{bad}: {e}");
        assert_error(&e, "validation_failed");
    }

    // Once its import has ended, the table can be deleted; the import keeps its history
    // without the table.
    let (status, _) = s.delete(&format!("/api/v1/rate_tables/{id}")).await;
    assert_eq!(status, 200);
    let (_, imports) = s.get("/api/v1/imports").await;
    assert_eq!(
        imports["items"][0]["rate_tables_id"],
        serde_json::Value::Null,
        "{imports}"
    );
}

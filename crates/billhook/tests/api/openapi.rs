//! `/openapi.json` and `/docs`: the description is complete, consistent, and every
//! operation it lists exists on the server.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::harness::Server;

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap_or_default().to_string());
                }
                refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_key_and_every_operation_exists() {
    let s = Server::start().await;
    let resp = reqwest::get(format!("{}/openapi.json", s.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "Client",
        "ClientInput",
        "Handler",
        "HandlerInput",
        "Did",
        "Import",
        "RateTable",
        "Error",
    ] {
        assert!(schemas.contains_key(name), "{name} documented");
    }
    // Money and times are documented as the strings they are on the wire.
    assert_eq!(
        schemas["Client"]["properties"]["balance"]["$ref"],
        "#/components/schemas/Money"
    );
    assert_eq!(schemas["Money"]["type"], "string", "{}", schemas["Money"]);
    assert_eq!(
        schemas["Timestamp"]["format"], "date-time",
        "{}",
        schemas["Timestamp"]
    );
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(schemas.contains_key(name), "dangling {r}");
    }

    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 40, "{}", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let concrete = path
                .replace("{id}", "987654")
                .replace("{uid}", "no-such-event");
            let (status, body) = match method.as_str() {
                "get" | "delete" => s.call(&method.to_uppercase(), &concrete, None).await,
                _ => s.raw(&method.to_uppercase(), &concrete, "{}").await,
            };
            assert_ne!(status, 405, "{method} {path}: {body}");
            let routed = !(status == 404 && body.to_string().contains("no such route"));
            assert!(
                routed,
                "{method} {path} is documented but not routed: {body}"
            );
            assert!(status < 500, "{method} {path}: {status} {body}");
        }
    }
    assert!(operations >= 70, "{operations}");
}

/// The fields a schema documents: its properties and those of what it is `allOf`.
fn documented(schemas: &Map<String, Value>, name: &str) -> BTreeSet<String> {
    let schema = &schemas[name];
    let mut fields: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        match part["$ref"].as_str() {
            Some(r) => fields.extend(documented(schemas, r.rsplit('/').next().unwrap())),
            None => fields.extend(
                part["properties"]
                    .as_object()
                    .into_iter()
                    .flat_map(|p| p.keys().cloned()),
            ),
        }
    }
    fields
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

/// The answers of the Provisioning API's routes, whose JSON is not all made from the
/// schema's types (payloads are written as text), have the fields their schemas list.
#[tokio::test]
async fn the_provisioning_answers_have_the_fields_their_schemas_document() {
    let s = Server::start().await;
    let (_, doc) = s.get("/openapi.json").await;
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    // Nothing listens on port 9: the calls fail at once, and a delivery waits.
    let task = "http://127.0.0.1:9/hook";
    let body = json!({"name": "h", "event": "clients.create", "task": task});
    let created = s.ok("/api/v1/handlers", body, 201).await;
    let h = format!("/api/v1/handlers/{}", created["id"]);
    s.ok("/api/v1/clients", json!({"name": "Acme"}), 201).await;
    let rotated = s.ok(&format!("{h}/secret/rotate"), json!({}), 200).await;
    let (_, secrets) = s.get(&format!("{h}/secret")).await;
    let test = s.ok(&format!("{h}/test"), json!({}), 200).await;
    let since = json!({"since": "2020-01-01T00:00:00Z"});
    let requeued = s.ok(&format!("{h}/recover"), since, 200).await;
    let (_, events) = s.get("/api/v1/events").await;
    let payload = &events["items"][0];
    let uid = payload["event"]["uid"].as_str().expect("uid");
    let (_, with_deliveries) = s.get(&format!("/api/v1/events/{uid}")).await;
    let (_, deliveries) = s.get("/api/v1/deliveries").await;
    let (_, types) = s.get("/api/v1/event_types").await;
    let answers = [
        ("WithSecret", &created),
        ("Rotated", &rotated),
        ("Secrets", &secrets),
        ("PreviousSecret", &secrets["previous_secrets"][0]),
        ("Execution", &test),
        ("Requeued", &requeued),
        ("Payload", payload),
        ("PayloadEvent", &payload["event"]),
        ("EventWithDeliveries", &with_deliveries),
        ("Delivery", &deliveries["items"][0]),
        ("EventType", &types["items"][0]),
    ];
    for (name, answer) in answers {
        assert_eq!(documented(schemas, name), keys(answer), "{name}: {answer}");
    }
    // The bodies of `test` and `recover` are documented.
    let recover = &doc["paths"]["/api/v1/handlers/{id}/recover"]["post"];
    let body = &recover["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/RecoverInput");
    assert_eq!(schemas["RecoverInput"]["required"], json!(["since"]));
}

#[tokio::test]
async fn docs_serve_the_swagger_ui() {
    let s = Server::start().await;
    let resp = reqwest::get(format!("{}/docs/", s.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"), "{html}");
    let resp = reqwest::get(format!("{}/docs/swagger-ui-bundle.js", s.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the UI's files come from the binary");
    let config = reqwest::get(format!("{}/docs/swagger-initializer.js", s.base))
        .await
        .unwrap();
    assert_eq!(config.status(), 200);
    assert!(config.text().await.unwrap().contains("/openapi.json"));
    // Without the slash, the UI is one redirect away.
    let resp = reqwest::get(format!("{}/docs", s.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
}

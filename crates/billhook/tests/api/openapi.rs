//! `/openapi.json` and `/docs`: the description is complete, consistent, and every
//! operation it lists exists on the server.

use serde_json::Value;

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

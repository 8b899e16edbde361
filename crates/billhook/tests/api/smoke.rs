use serde_json::json;

use crate::harness::{ids, Server};

#[tokio::test]
async fn client_create_raises_its_event() {
    let s = Server::start().await;
    let c = s.ok("/api/v1/clients", json!({"name": "Acme"}), 201).await;
    let events = s.events().await;
    assert_eq!(ids(&events), ["clients.create"]);
    assert_eq!(events[0]["data"], c);
    assert_eq!(events[0]["event"]["object_id"], c["id"]);
    assert_eq!(events[0]["previous"], json!({}));
}

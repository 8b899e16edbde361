//! What a receiver gets: the payload as the event log shows it, `Content-Type`,
//! `User-Agent`, and the Standard Webhooks headers, verified with the `standardwebhooks`
//! crate (also during a secret rotation, and after two within a day).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use standardwebhooks::Webhook;

use crate::harness::Server;
use crate::receiver::{Hit, Receiver};
use crate::util::{client, create_handler, http_handler, rename, uid_of, HANDLERS};

fn verify(secret: &str, hit: &Hit) -> Result<(), String> {
    Webhook::new(secret)
        .map_err(|e| format!("secret {secret}: {e:?}"))?
        .verify(&hit.body, &hit.headers)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn the_payload_and_headers_as_received() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let h = http_handler(&s, "clients.*", &r.url("/in"), &[0]).await;
    let secret = h["secret"].as_str().unwrap();
    let id = client(&s, "Acme").await;
    rename(&s, id, "Acme Ltd").await;
    let create_uid = uid_of(&s, "clients.create", id).await;
    let update_uid = uid_of(&s, "clients.update", id).await;

    let hits = r.wait_hits("/in", 2, 30).await;
    assert_eq!(hits.len(), 2, "each event once");
    assert_eq!(hits[0].uid(), create_uid, "in order: create first");
    assert_eq!(hits[1].uid(), update_uid);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for hit in &hits {
        assert!(
            hit.header("content-type").starts_with("application/json"),
            "{:?}",
            hit.headers
        );
        assert_eq!(
            hit.header("user-agent"),
            format!("billhook/{}", env!("CARGO_PKG_VERSION"))
        );
        let ts: i64 = hit
            .header("webhook-timestamp")
            .parse()
            .expect("Unix seconds");
        assert!((ts - now).abs() < 60, "webhook-timestamp {ts} vs now {now}");
        let sig = hit.header("webhook-signature");
        assert!(sig.starts_with("v1,"), "{sig}");
        assert_eq!(
            sig.split(' ').count(),
            1,
            "one secret, one signature: {sig}"
        );
        verify(secret, hit).expect("signed with the handler's secret");

        // The body is the payload of the event log, byte for byte as JSON.
        let (st, logged) = s.get(&format!("/api/v1/events/{}", hit.uid())).await;
        assert_eq!(st, 200, "{logged}");
        let mut logged = logged;
        logged.as_object_mut().unwrap().remove("deliveries");
        assert_eq!(
            hit.json, logged,
            "the payload as GET /events/{{uid}} shows it"
        );
        let listed = s
            .events()
            .await
            .into_iter()
            .find(|e| e["event"]["uid"] == hit.uid())
            .expect("listed");
        assert_eq!(hit.json, listed, "the payload as GET /events lists it");
        assert_eq!(hit.json["event"]["stage"], "after");
        assert_eq!(hit.json["event"]["object_id"], id);
        assert!(hit.json["event"]["dt"].is_string());
        assert_eq!(hit.json["data"]["id"], id);
    }
    assert_eq!(hits[0].json["event"]["events_id"], "clients.create");
    assert_eq!(hits[0].json["data"]["name"], "Acme");
    assert_eq!(hits[1].json["event"]["events_id"], "clients.update");
    assert_eq!(hits[1].json["data"]["name"], "Acme Ltd");
    assert_eq!(hits[1].json["previous"], json!({"name": "Acme"}));

    // The signature covers the body and the id: a forged one does not verify, nor does
    // another handler's secret.
    let mut forged = hits[0].clone();
    forged.body = axum::body::Bytes::from(format!("{} ", String::from_utf8_lossy(&hits[0].body)));
    assert!(verify(secret, &forged).is_err(), "a changed body fails");
    let mut wrong_id = hits[0].clone();
    wrong_id
        .headers
        .insert("webhook-id", hits[1].uid().parse().unwrap());
    assert!(verify(secret, &wrong_id).is_err(), "another id fails");
    let other = http_handler(&s, "dids.*", &r.url("/other"), &[0]).await;
    assert!(verify(other["secret"].as_str().unwrap(), &hits[0]).is_err());
}

#[tokio::test]
async fn during_a_rotation_both_the_old_and_the_new_secret_sign() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let h = create_handler(
        &s,
        json!({"name": "rot", "event": "clients.create", "task": r.url("/rot"),
               "retry_schedule": [0]}),
    )
    .await;
    let old = h["secret"].as_str().unwrap().to_string();
    let (st, v) = s
        .post(&format!("{HANDLERS}/{}/secret/rotate", h["id"]), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    let new = v["secret"].as_str().unwrap().to_string();
    client(&s, "Rotated").await;
    let hit = r.wait_hits("/rot", 1, 30).await.remove(0);
    let sig = hit.header("webhook-signature");
    let parts: Vec<&str> = sig.split(' ').collect();
    assert_eq!(parts.len(), 2, "two space-separated signatures: {sig}");
    assert!(parts.iter().all(|p| p.starts_with("v1,")), "{sig}");
    verify(&new, &hit).expect("the new secret signs");
    verify(&old, &hit).expect("the old secret still signs for 24 h");

    // The test call is signed the same way.
    let (st, _) = s
        .post(&format!("{HANDLERS}/{}/test", h["id"]), json!({}))
        .await;
    assert_eq!(st, 200);
    let hit = r.hits_on("/rot").pop().unwrap();
    verify(&new, &hit).expect("test call: new secret");
    verify(&old, &hit).expect("test call: old secret");
}

/// The signatures of `hit`'s `webhook-signature`, which must be exactly one per secret in
/// `secrets`, in that order: each the HMAC of "{id}.{timestamp}.{body}" keyed with that
/// secret, as the `standardwebhooks` crate computes it.
fn assert_signed_by(hit: &Hit, secrets: &[&str], what: &str) {
    let id = hit.header("webhook-id");
    let ts: i64 = hit.header("webhook-timestamp").parse().unwrap();
    let expected: Vec<String> = secrets
        .iter()
        .map(|s| Webhook::new(s).unwrap().sign(&id, ts, &hit.body).unwrap())
        .collect();
    let sig = hit.header("webhook-signature");
    let parts: Vec<&str> = sig.split(' ').collect();
    assert_eq!(
        parts, expected,
        "{what}: current, then the previous newest first"
    );
    for s in secrets {
        verify(s, hit).unwrap_or_else(|e| panic!("{what}: {s} signs: {e}"));
    }
}

/// Two rotations within a day: both secrets replaced sign on, each for its own 24 hours
/// (the second rotation used to end the first one's day at once), with the current one —
/// in deliveries, before-stage calls and test calls alike.
#[tokio::test]
async fn after_two_rotations_the_two_replaced_secrets_still_sign() {
    let s = Server::start().await;
    let r = Receiver::start().await;
    let after = create_handler(
        &s,
        json!({"name": "after", "event": "clients.create", "task": r.url("/after"),
               "retry_schedule": [0]}),
    )
    .await;
    // The receiver answers nothing: the before handler allows.
    let before = create_handler(
        &s,
        json!({"name": "before", "stage": "before", "event": "clients.create",
               "task": r.url("/before")}),
    )
    .await;
    let mut secrets = Vec::new();
    for h in [&after, &before] {
        let secret = |v: &serde_json::Value| v["secret"].as_str().unwrap().to_string();
        let s0 = secret(&s.get(&format!("{HANDLERS}/{}/secret", h["id"])).await.1);
        let rotate = format!("{HANDLERS}/{}/secret/rotate", h["id"]);
        let s1 = secret(&s.post(&rotate, json!({})).await.1);
        let s2 = secret(&s.post(&rotate, json!({})).await.1);
        secrets.push([s2, s1, s0]);
    }
    let [a, b] = [&secrets[0], &secrets[1]].map(|s| s.each_ref().map(String::as_str));

    client(&s, "Rotated twice").await;
    assert_signed_by(&r.hits_on("/before").remove(0), &b, "before stage");
    assert_signed_by(
        &r.wait_hits("/after", 1, 30).await.remove(0),
        &a,
        "delivery",
    );
    let (st, _) = s
        .post(&format!("{HANDLERS}/{}/test", after["id"]), json!({}))
        .await;
    assert_eq!(st, 200);
    assert_signed_by(&r.hits_on("/after").pop().unwrap(), &a, "test call");
}

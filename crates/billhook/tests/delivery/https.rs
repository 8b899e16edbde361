//! HTTPS handlers: a receiver on `https://127.0.0.1` with a certificate of a private CA
//! gets its events, signed, once the server trusts that CA (`handler_ca_file`); a server
//! that does not trust it refuses the certificate and logs why; a self-signed endpoint's
//! certificate marked as a CA (as `openssl req -x509` makes it) in the file is trusted
//! for its own names; and a CA file that holds no certificate stops the server at start.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use standardwebhooks::Webhook;

use crate::ca::private_ca;
use crate::harness::Server;
use crate::receiver::Receiver;
use crate::util::{client, http_handler, uid_of, wait_deliveries};

#[tokio::test]
async fn an_https_handler_gets_its_events_when_its_ca_is_trusted() {
    let (ca, chain, key) = private_ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("handlers-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let r = Receiver::start_tls(&chain, &key).await;
    let url = r.url("/hook");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let s = Server::start_with(vec![(
        "BILLHOOK_HANDLER_CA_FILE",
        ca_file.to_str().unwrap(),
    )])
    .await;
    let h = http_handler(&s, "clients.create", &url, &[0]).await;
    let id = client(&s, "Acme").await;
    let uid = uid_of(&s, "clients.create", id).await;

    let hits = r.wait_hits("/hook", 1, 30).await;
    assert_eq!(hits.len(), 1, "delivered once over TLS");
    assert_eq!(hits[0].uid(), uid);
    assert_eq!(hits[0].json["data"]["id"], id);
    Webhook::new(h["secret"].as_str().unwrap())
        .unwrap()
        .verify(&hits[0].body, &hits[0].headers)
        .expect("signed as over plain HTTP");
    wait_deliveries(&s, h["id"].as_i64().unwrap(), "succeeded", 1, 30).await;

    // The same receiver, from a server that trusts only the public CAs: the handshake
    // fails, the attempt is logged with the reason, and nothing arrives.
    let plain = Server::start().await;
    let h = http_handler(&plain, "clients.create", &url, &[]).await;
    client(&plain, "Other").await;
    let failed = wait_deliveries(&plain, h["id"].as_i64().unwrap(), "failed", 1, 30).await;
    let error = failed[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("certificate") || error.contains("Certificate"),
        "the refusal names the certificate: {error}"
    );
    assert_eq!(r.hits().len(), 1, "nothing more reached the receiver");
}

/// A certificate signed by itself and marked as a CA, for `names` (DNS names, or IP
/// addresses), valid now or `expired`: (certificate, key), PEM.
fn self_signed_ca_marked(names: &[&str], expired: bool) -> (String, String) {
    use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// webpki refuses a CA as an endpoint's own certificate; one from the operator's file is
/// trusted as it is, but only for the names it holds, and not once expired.
#[tokio::test]
async fn a_self_signed_endpoint_certificate_marked_as_a_ca_is_trusted_for_its_names() {
    let (cert, key) = self_signed_ca_marked(&["localhost", "127.0.0.1"], false);
    let (other_cert, other_key) = self_signed_ca_marked(&["localhost"], false);
    let (old_cert, old_key) = self_signed_ca_marked(&["localhost", "127.0.0.1"], true);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("endpoints.pem");
    std::fs::write(&ca_file, format!("{cert}{other_cert}{old_cert}")).unwrap();
    let r = Receiver::start_tls(&cert, &key).await;
    // In the file too, but not for the address it is called at, or no longer valid.
    let misnamed = Receiver::start_tls(&other_cert, &other_key).await;
    let expired = Receiver::start_tls(&old_cert, &old_key).await;
    // Made alike, valid for the address, but not in the file: refused as before.
    let (stranger_cert, stranger_key) = self_signed_ca_marked(&["localhost", "127.0.0.1"], false);
    let stranger = Receiver::start_tls(&stranger_cert, &stranger_key).await;

    let s = Server::start_with(vec![(
        "BILLHOOK_HANDLER_CA_FILE",
        ca_file.to_str().unwrap(),
    )])
    .await;
    let h = http_handler(&s, "clients.create", &r.url("/hook"), &[0]).await;
    let m = http_handler(&s, "clients.create", &misnamed.url("/hook"), &[]).await;
    let e = http_handler(&s, "clients.create", &expired.url("/hook"), &[]).await;
    let u = http_handler(&s, "clients.create", &stranger.url("/hook"), &[]).await;
    let id = client(&s, "Self-signed").await;
    let hits = r.wait_hits("/hook", 1, 30).await;
    assert_eq!(hits[0].json["data"]["id"], id);
    wait_deliveries(&s, h["id"].as_i64().unwrap(), "succeeded", 1, 30).await;

    // Each refused, saying why (the expired one in lower case or not), reaching nothing.
    for (handler, receiver, said) in [
        (&m, &misnamed, "not valid for name"),
        (&e, &expired, "expired"),
        (&u, &stranger, "causedasendentity"),
    ] {
        let id = handler["id"].as_i64().unwrap();
        let failed = wait_deliveries(&s, id, "failed", 1, 30).await;
        let error = failed[0]["last_error"].as_str().unwrap_or_default();
        assert!(error.to_lowercase().contains(said), "{said}: {error}");
        assert!(receiver.hits().is_empty(), "{said}: nothing reached it");
    }
}

#[test]
fn a_ca_file_without_certificates_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("not-a-ca.pem");
    std::fs::write(&ca_file, "this is no certificate\n").unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_billhook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite:{}", dir.path().join("x.db").display()))
        .current_dir(dir.path())
        .env("BILLHOOK_HANDLER_CA_FILE", &ca_file)
        .env("BILLHOOK_API_KEY", "k".repeat(32))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run billhook");
    // A server that starts anyway would serve until killed: fail instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait for billhook") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("billhook started with a CA file that holds no certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "it must not start");
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(
        stderr.contains("handler CA file") && stderr.contains("not-a-ca.pem"),
        "the reason names the file: {stderr}"
    );
}

/// Connecting, TLS handshake included, is limited to 5 s whatever the handler's timeout:
/// an endpoint that accepts the connection and never answers the handshake fails the
/// attempt as a connection failure after 5 s, not after the handler's 20 s.
#[tokio::test]
async fn a_handshake_that_never_ends_fails_as_a_connection_after_5_s() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // Holds every connection open, answering nothing.
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let s = Server::start().await;
    let h = crate::util::create_handler(
        &s,
        serde_json::json!({"name": "stalls", "event": "clients.create", "type": "http",
               "task": format!("https://127.0.0.1:{port}/hook"), "timeout_ms": 20000,
               "retry_schedule": [3600]}),
    )
    .await;
    client(&s, "Acme").await;

    let id = h["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let log = loop {
        let log = crate::util::executions(&s, &format!("handlers_id={id}")).await;
        if !log.is_empty() {
            break log;
        }
        assert!(Instant::now() < deadline, "no attempt logged within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = log[0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("connection failed"), "{error}");
    assert!(error.contains("timed out"), "{error}");
    let took = log[0]["duration_ms"].as_i64().unwrap();
    assert!((4_900..15_000).contains(&took), "took {took} ms");
}

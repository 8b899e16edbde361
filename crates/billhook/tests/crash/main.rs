//! Crash test: under a steady stream of events the server is killed with SIGKILL and
//! restarted on the same database; every acknowledged event must still be delivered,
//! in per-client order (duplicates allowed only for calls in flight at the kill).

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use harness::{wait_for, Server, KEY};
use serde_json::{json, Value};

type Received = Arc<Mutex<Vec<Value>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(r): State<Received>, Json(v): Json<Value>| async move {
                    r.lock().unwrap().push(v);
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received)
}

/// Sends payments round-robin over `clients` until `stop`; returns the ids of the
/// payments the API acknowledged.
async fn stream(
    base: Arc<Mutex<String>>,
    clients: Vec<i64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<i64> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    let mut i = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let url = format!("{}/api/v1/payments", base.lock().unwrap());
        let client = clients[i % clients.len()];
        i += 1;
        let resp = http
            .post(&url)
            .header("X-Api-Key", KEY)
            .json(&json!({"clients_id": client, "amount": "1"}))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().as_u16() == 201 => {
                let v: Value = r.json().await.unwrap();
                acked.push(v["id"].as_i64().unwrap());
            }
            // Refused or cut off by the kill: not acknowledged, nothing to check.
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    acked
}

#[tokio::test]
async fn killed_server_loses_no_acknowledged_event() {
    let (hook, received) = receiver().await;
    let mut s = Server::start().await;
    s.ok(
        "/api/v1/handlers",
        // A short timeout keeps the leases of calls cut by the kill short.
        json!({"name": "sink", "event": "*", "task": hook, "timeout_ms": 1000,
               "retry_schedule": [0, 0, 0, 1, 1, 1, 1, 1]}),
        201,
    )
    .await;
    let mut clients = Vec::new();
    for n in 0..4 {
        let c = s
            .ok("/api/v1/clients", json!({"name": format!("c{n}")}), 201)
            .await;
        clients.push(c["id"].as_i64().unwrap());
    }

    let base = Arc::new(Mutex::new(s.base.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streams: Vec<_> = (0..4)
        .map(|_| tokio::spawn(stream(base.clone(), clients.clone(), stop.clone())))
        .collect();

    // Let events and deliveries flow, then kill mid-stream and restart.
    wait_for(30, "deliveries before the kill", || {
        let n = received.lock().unwrap().len();
        async move { (n >= 100).then_some(()) }
    })
    .await;
    s.kill();
    s.spawn();
    *base.lock().unwrap() = s.base.clone();
    let before_restart = received.lock().unwrap().len();
    wait_for(90, "deliveries after the restart", || {
        let n = received.lock().unwrap().len();
        async move { (n >= before_restart + 50).then_some(()) }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in streams {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "the stream made progress: {}",
        acked.len()
    );

    // Every stored event (a superset of the acknowledged ones) arrives.
    let events = s.events().await;
    let all: HashSet<String> = events
        .iter()
        .map(|e| e["event"]["uid"].as_str().unwrap().to_string())
        .collect();
    wait_for(120, "every event delivered", || {
        let got: HashSet<String> = received
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["event"]["uid"].as_str().unwrap().to_string())
            .collect();
        let missing = all.difference(&got).count();
        async move { (missing == 0).then_some(()) }
    })
    .await;

    // Every acknowledged payment has its event, and it was delivered.
    let delivered_payments: HashSet<i64> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["events_id"] == "accounting.payments.create")
        .map(|e| e["event"]["object_id"].as_i64().unwrap())
        .collect();
    for id in &acked {
        assert!(
            delivered_payments.contains(id),
            "acknowledged payment {id} never delivered"
        );
    }

    // Per client, first arrivals are in event order.
    let position: HashMap<String, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e["event"]["uid"].as_str().unwrap().to_string(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut last: HashMap<i64, usize> = HashMap::new();
    let mut duplicates = 0;
    for e in received.lock().unwrap().iter() {
        let uid = e["event"]["uid"].as_str().unwrap().to_string();
        if !seen.insert(uid.clone()) {
            duplicates += 1;
            continue;
        }
        let client = e["data"]["clients_id"]
            .as_i64()
            .or(e["data"]["id"].as_i64())
            .unwrap();
        let pos = position[&uid];
        if let Some(prev) = last.insert(client, pos) {
            assert!(
                prev < pos,
                "client {client}: event {pos} arrived after {prev}"
            );
        }
    }
    // Only calls in flight at the kill may repeat: at most the engine's concurrency.
    assert!(duplicates <= 256, "{duplicates} duplicates");
    eprintln!(
        "crash test on {}: {} acknowledged, {} events, {} duplicates",
        if s.db.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        acked.len(),
        events.len(),
        duplicates
    );
}

/// SIGTERM while a call is in flight: the call finishes, its outcome is recorded, the
/// process exits 0, and nothing is delivered twice after a restart.
#[tokio::test]
async fn sigterm_finishes_calls_in_flight_and_exits_zero() {
    let calls: Received = Arc::default();
    let started = Arc::new(tokio::sync::Notify::new());
    let app = Router::new()
        .route(
            "/slow",
            post(
                |State((r, started)): State<(Received, Arc<tokio::sync::Notify>)>,
                 Json(v): Json<Value>| async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    r.lock().unwrap().push(v);
                    "ok"
                },
            ),
        )
        .with_state((calls.clone(), started.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/slow", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut s = Server::start().await;
    s.ok(
        "/api/v1/handlers",
        json!({"name": "slow", "event": "clients.create", "task": hook}),
        201,
    )
    .await;
    s.ok("/api/v1/clients", json!({"name": "Acme"}), 201).await;
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the call started");
    let status = tokio::task::spawn_blocking(move || {
        let status = s.terminate();
        (s, status)
    })
    .await
    .unwrap();
    let (mut s, status) = status;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        calls.lock().unwrap().len(),
        1,
        "the call in flight finished"
    );

    s.spawn();
    let (st, d) = s.get("/api/v1/deliveries?status=succeeded").await;
    assert_eq!(st, 200);
    assert_eq!(d["total"], 1, "the outcome was recorded before exit: {d}");
    let (_, pending) = s.get("/api/v1/deliveries?status=pending").await;
    assert_eq!(pending["total"], 0, "{pending}");
    // The restarted engine delivers new work, and only that: the first event is not
    // delivered again.
    s.ok("/api/v1/clients", json!({"name": "After restart"}), 201)
        .await;
    let delivered = wait_for(30, "the new event delivered", || {
        let calls = calls.lock().unwrap().clone();
        async move { (calls.len() >= 2).then_some(calls) }
    })
    .await;
    let names: Vec<&Value> = delivered.iter().map(|c| &c["data"]["name"]).collect();
    assert_eq!(
        names,
        [&json!("Acme"), &json!("After restart")],
        "not delivered again"
    );
}

//! Two servers on one PostgreSQL database whose machines' clocks disagree. Leases, due
//! times and the times in the data follow the database's clock, not each machine's:
//! with each server on its own clock, a server whose clock was ahead by more than half
//! a lease's margin (5 s) saw the leases of the other's calls in flight as ended, took
//! those deliveries and called them again.
//!
//! The second server's wall clock is moved half a minute ahead with libfaketime
//! (`apt-get install faketime`; `.ci/run` installs it), then stepped another half
//! minute while it runs (its clock is read from a file, at every reading). SQLite's servers share one machine, and
//! its clock: the test runs on PostgreSQL only, and says so on SQLite.

use std::time::Duration;

use serde_json::json;

use crate::harness::{wait_for, Server};
use crate::receiver::Receiver;
use crate::util::{
    client, create_handler, metric, metrics, micros, now_micros, uids, wait_deliveries,
};

/// Where Debian's faketime package puts the library, by architecture.
const LIBFAKETIME: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

fn libfaketime() -> &'static str {
    LIBFAKETIME
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "LIBFAKETIME IS MISSING (looked in {LIBFAKETIME:?}): apt-get install \
                 faketime; .ci/run installs it"
            )
        })
}

#[tokio::test]
async fn a_server_whose_clock_is_ahead_takes_no_call_in_flight_of_another() {
    let s1 = Server::start().await;
    if s1
        .db
        .not_run_on_sqlite("servers on one SQLite file share one machine's clock")
    {
        return;
    }
    // The second machine's wall clock, read from a file that may change.
    let skew = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(skew.path(), "+30s").unwrap();
    let ahead = Server::start_on_with(
        &s1.db.url(),
        vec![
            ("LD_PRELOAD", libfaketime()),
            ("FAKETIME_TIMESTAMP_FILE", skew.path().to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            // Only the wall clock: tokio's timers run on the monotonic one.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await;
    // Then it is stepped another 30 s ahead: the times it writes do not follow the step
    // (they go on from its last reading of the database's clock).
    std::fs::write(skew.path(), "+60s").unwrap();
    // The skew is real, and each server knows its own (the one ahead as soon as its
    // clock has been stepped).
    let offset = |text: String| metric(&text, "billhook_clock_offset_seconds");
    wait_for(10, "the server under faketime a minute ahead", || async {
        let seen = offset(metrics(&ahead).await).expect("the clock offset metric");
        (-61.0..=-59.0).contains(&seen).then_some(())
    })
    .await;
    let seen = offset(metrics(&s1).await).expect("the clock offset metric");
    assert!(seen.abs() < 1.0, "the other follows the database: {seen}");

    let r = Receiver::start().await;
    // Each call takes 3 s of its 8 s timeout: its lease (timeout + 10 s of margin) ends
    // 18 s after it was taken, on the database's clock; a minute ahead it has ended.
    r.plan(&[(200, Duration::from_secs(3)); 6]);
    let h = create_handler(
        &s1,
        json!({"name": "slow", "event": "clients.create", "task": r.url("/h"),
               "timeout_ms": 8000, "retry_schedule": [60]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    for n in 0..3 {
        client(&s1, &format!("Taken by the first {n}")).await;
    }
    // The times a server writes are the database's too.
    let before = now_micros();
    let made = ahead
        .ok(
            "/api/v1/clients",
            json!({"name": "Made on the one ahead"}),
            201,
        )
        .await;
    let skew = micros(&made["created_at"]) - before;
    assert!(
        skew.abs() < 5_000_000,
        "created_at follows the database's clock, not the one a minute ahead: {skew} µs off"
    );
    for n in 0..2 {
        client(&ahead, &format!("Taken by the one ahead {n}")).await;
    }
    wait_deliveries(&s1, h, "succeeded", 6, 30).await;
    let got = uids(&r.hits_on("/h"));
    let mut once = got.clone();
    once.sort();
    once.dedup();
    assert_eq!(
        got.len(),
        once.len(),
        "each event called once, none taken again while its call was in flight: {got:?}"
    );
}

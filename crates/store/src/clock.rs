//! PostgreSQL: the times of every server on one database follow the database's clock.
//!
//! Why: leases, due times and the data's times are written by one server and read
//! against another's clock. With each server on its machine's own clock, a server whose
//! clock was ahead by more than half a lease's margin (5 s) saw the leases of another's
//! calls in flight as ended, took those deliveries and called them again; a retry came
//! due early or late by the skew, and the event log's times jumped between servers.
//! The database's clock is read at connect, and again every [`MEASURE_EVERY`], within
//! half a round trip; in between, times go on from the last reading at the pace of the
//! monotonic clock, so a step of the machine's wall clock does not reach them. SQLite's
//! servers share one machine, and its clock.

use std::time::{Duration, Instant};

use billhook_domain::Timestamp;
use sqlx::AnyPool;

use crate::StoreError;

/// How often the database's clock is read again (the monotonic clock's pace is the
/// machine's oscillator's, off by some parts per million).
const MEASURE_EVERY: Duration = Duration::from_secs(30);

/// Round trips per measurement; the shortest one's is kept (the first may include
/// opening a connection).
const TRIES: usize = 3;

/// A change of the machine's offset that is logged: a clock stepped, or a skew worth
/// fixing.
const NOTABLE_MICROS: i64 = 1_000_000;

/// Smaller differences from the clock followed already are left alone: they are the
/// measurement's own noise, and each change moves `Timestamp::now` back or forth by as
/// much.
const NOISE_MICROS: i64 = 2_000;

/// One reading of the database's clock.
struct Reading {
    /// The database's time at `at`.
    time: Timestamp,
    /// The midpoint of the round trip that read it.
    at: Instant,
    /// That round trip, in microseconds: the reading is within half of it.
    round_trip: i64,
    /// How far the database's clock was ahead of this machine's wall clock.
    ahead_of_machine: i64,
}

/// Reads the database's clock [`TRIES`] times and keeps the reading of the shortest
/// round trip.
async fn measure(pool: &AnyPool) -> Result<Reading, StoreError> {
    let mut best: Option<Reading> = None;
    for _ in 0..TRIES {
        let sent = Instant::now();
        let wall = Timestamp::machine_now().micros();
        let db: i64 = sqlx::query_scalar(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        )
        .fetch_one(pool)
        .await?;
        let took = sent.elapsed();
        let round_trip = i64::try_from(took.as_micros()).unwrap_or(i64::MAX);
        if best.as_ref().is_none_or(|b| round_trip < b.round_trip) {
            best = Some(Reading {
                time: Timestamp::from_micros(db),
                at: sent + took / 2,
                round_trip,
                ahead_of_machine: db - (wall + round_trip / 2),
            });
        }
    }
    Ok(best.expect("TRIES > 0"))
}

/// Follows a reading, unless the clock followed already agrees with it within its
/// noise; logs how far the machine's wall clock is off when that moved notably since
/// `logged` (the offset last logged, updated).
fn follow(reading: &Reading, first: bool, logged: &mut i64) {
    if (reading.ahead_of_machine - *logged).abs() >= NOTABLE_MICROS {
        tracing::warn!(
            database_ahead_ms = reading.ahead_of_machine / 1000,
            was_ms = *logged / 1000,
            "this machine's clock is off the database's; times follow the database's"
        );
        *logged = reading.ahead_of_machine;
    }
    let drift = Timestamp::now().micros()
        - reading
            .time
            .add_micros(i64::try_from(reading.at.elapsed().as_micros()).unwrap_or(i64::MAX))
            .micros();
    if first || drift.abs() > NOISE_MICROS.max(reading.round_trip) {
        Timestamp::follow_clock(reading.time, reading.at);
    }
}

/// Measures the offset now, then keeps measuring it until the pool is closed.
pub(crate) async fn follow_database_clock(pool: AnyPool) -> Result<(), StoreError> {
    let mut logged = 0;
    follow(&measure(&pool).await?, true, &mut logged);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(MEASURE_EVERY).await;
            if pool.is_closed() {
                return;
            }
            match measure(&pool).await {
                Ok(reading) => follow(&reading, false, &mut logged),
                Err(_) if pool.is_closed() => return,
                Err(e) => tracing::warn!(error = %e, "measuring the database's clock failed"),
            }
        }
    });
    Ok(())
}

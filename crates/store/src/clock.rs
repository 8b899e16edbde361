//! PostgreSQL: the times of every server on one database follow the database's clock.
//!
//! Why: leases, due times and the data's times are written by one server and read
//! against another's clock. With each server on its machine's own clock, a server whose
//! clock was ahead by more than half a lease's margin (5 s) saw the leases of another's
//! calls in flight as ended, took those deliveries and called them again; a retry came
//! due early or late by the skew, and the event log's times jumped between servers.
//! The offset of the database's clock is measured at connect and every
//! [`MEASURE_EVERY`] after (a machine's clock may be stepped), within half a round trip.
//! SQLite's servers share one machine, and its clock.

use std::time::Duration;

use billhook_domain::Timestamp;
use sqlx::AnyPool;

use crate::StoreError;

/// How often the offset is measured again.
const MEASURE_EVERY: Duration = Duration::from_secs(30);

/// Round trips per measurement; the shortest one's is kept (the first may include
/// opening a connection).
const TRIES: usize = 3;

/// An offset change that is logged: a clock stepped, or a skew worth fixing.
const NOTABLE_MICROS: i64 = 1_000_000;

/// Smaller changes are left alone: they are the measurement's own noise, and each
/// change moves `Timestamp::now` back or forth by as much.
const NOISE_MICROS: i64 = 2_000;

/// How far the database's clock is ahead of this machine's, in microseconds, and the
/// round trip that measured it.
async fn measure(pool: &AnyPool) -> Result<(i64, i64), StoreError> {
    let mut best: Option<(i64, i64)> = None;
    for _ in 0..TRIES {
        let sent = Timestamp::machine_now().micros();
        let db: i64 = sqlx::query_scalar(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        )
        .fetch_one(pool)
        .await?;
        let back = Timestamp::machine_now().micros();
        let round_trip = back - sent;
        if best.is_none_or(|(_, rt)| round_trip < rt) {
            best = Some((db - (sent + round_trip / 2), round_trip));
        }
    }
    Ok(best.expect("TRIES > 0"))
}

/// Sets the offset `Timestamp::now` follows, unless it is within the noise of the one
/// it follows already; logs a notable one.
fn follow(offset: i64, round_trip: i64) {
    let was = Timestamp::clock_offset_micros();
    if (offset - was).abs() <= NOISE_MICROS.max(round_trip) {
        return;
    }
    if (offset - was).abs() >= NOTABLE_MICROS {
        tracing::warn!(
            database_ahead_ms = offset / 1000,
            was_ms = was / 1000,
            "this machine's clock is off the database's; times follow the database's"
        );
    }
    Timestamp::follow_clock(offset);
}

/// Measures the offset now, then keeps measuring it until the pool is closed.
pub(crate) async fn follow_database_clock(pool: AnyPool) -> Result<(), StoreError> {
    let (offset, round_trip) = measure(&pool).await?;
    follow(offset, round_trip);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(MEASURE_EVERY).await;
            if pool.is_closed() {
                return;
            }
            match measure(&pool).await {
                Ok((offset, round_trip)) => follow(offset, round_trip),
                Err(_) if pool.is_closed() => return,
                Err(e) => tracing::warn!(error = %e, "measuring the database's clock failed"),
            }
        }
    });
    Ok(())
}

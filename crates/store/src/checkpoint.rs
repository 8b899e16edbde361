//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold: that
//! commit copies the WAL into the database file and syncs both while it holds the only
//! writer, and every request queued behind it waits. Here the writer never checkpoints.
//! A task of its own copies the WAL with passive checkpoints, which block no one, a few
//! times a second, on a connection and a blocking thread of its own.
//!
//! Under a steady stream of commits a passive checkpoint never quite catches up, and
//! SQLite only starts the WAL over when all of it has been copied: the file grew without
//! end (500 MB in a 6 s benchmark), and appending to new blocks of a file costs more
//! than overwriting old ones. So once the WAL passes a size, the task takes the writer
//! for a moment (new writes wait their turn, no thread blocks) and copies the little
//! that the last passive checkpoint left.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::sql::LitePool;
use crate::StoreError;

/// How often the WAL is copied back into the database. A checkpoint copies the last
/// version of each page the WAL holds, and under load the same pages (the tails of the
/// outbox's indexes, the busy clients' rows) change again and again: every 250 ms
/// instead of 100 the checkpoints read and write about a fifth fewer pages per event
/// (`pread`/`pwrite` per event in a saturated bench, counted with `perf stat`).
const EVERY: Duration = Duration::from_millis(250);

/// WAL pages (4 KiB) beyond which the checkpoint takes the writer to start the WAL over.
const RESTART_AT: i64 = 4096;

/// How long the checkpoint waits for readers still on old pages of the WAL, while it
/// holds the writer; a long read makes it give up (and try again later) rather than
/// hold every write up.
const READERS_WAIT: &str = "PRAGMA busy_timeout=50;";

/// The least time between two attempts to start the WAL over.
const RESTART_EVERY: Duration = Duration::from_millis(250);

/// Setup of the writer connection: no automatic checkpoints, and a WAL file cut back to
/// this size when it starts over.
pub(crate) const WRITER_SETUP: &str =
    "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864;";

/// Starts checkpointing the database at `path`, written through `writer`; the task ends
/// when the writer pool is closed or dropped.
pub(crate) fn start(path: &str, writer: &Arc<LitePool>) -> Result<(), StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(READERS_WAIT)?;
    let conn = Arc::new(Mutex::new(conn));
    let writer = Arc::downgrade(writer);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_restart = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let may_restart = last_restart.elapsed() >= RESTART_EVERY;
            match checkpoint(&conn, &writer, may_restart).await {
                Ok(true) => last_restart = tokio::time::Instant::now(),
                Ok(false) => {}
                Err(Stop) => return,
                Err(Failed(e)) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
    });
    Ok(())
}

enum Outcome {
    Stop,
    Failed(StoreError),
}
use Outcome::{Failed, Stop};

/// A passive checkpoint, and the WAL started over if it is large and `may_restart`;
/// true when that was tried.
async fn checkpoint(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    writer: &Weak<LitePool>,
    may_restart: bool,
) -> Result<bool, Outcome> {
    let pool = writer.upgrade().ok_or(Stop)?;
    if pool.is_closed() {
        return Err(Stop);
    }
    let wal_pages = run(conn, "PRAGMA wal_checkpoint(PASSIVE)").await?;
    if wal_pages < RESTART_AT || !may_restart {
        return Ok(false);
    }
    // Holding the writer: nothing is appended while the rest is copied. A reader on
    // old pages makes it end unfinished ("busy"), which is no error.
    // Only a closed pool ends the task: with automatic checkpoints off, giving up on a
    // passing error would let the WAL grow without end.
    let _writer = pool.acquire_outside_group().await.map_err(|e| {
        if pool.is_closed() {
            Stop
        } else {
            Failed(e)
        }
    })?;
    run(conn, "PRAGMA wal_checkpoint(RESTART)").await?;
    Ok(true)
}

/// Runs a checkpoint statement on the blocking pool; returns the WAL's size in pages.
async fn run(conn: &Arc<Mutex<rusqlite::Connection>>, sql: &'static str) -> Result<i64, Outcome> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let conn = conn.lock().expect("not poisoned");
        conn.query_row(sql, [], |row| row.get::<_, i64>(1))
    })
    .await
    .map_err(|e| {
        Failed(StoreError::Corrupt(format!(
            "the checkpoint thread failed: {e}"
        )))
    })?
    .map_err(|e| Failed(e.into()))
}

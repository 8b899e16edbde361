//! Handlers and their secrets as the delivery engine uses them, read at most once a
//! second per handler instead of twice per delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billhook_domain::entities::Handler;
use billhook_store::handlers::{self, Secrets};
use billhook_store::{Db, StoreError};

/// How long an entry is trusted. Changes made through this process apply at once (they
/// invalidate); changes by another process sharing the database within this.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(1);

type Entry = (Instant, Arc<(Handler, Secrets)>);

/// A shared cache; cheap to clone.
#[derive(Clone, Default)]
pub struct HandlerCache {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<i64, Entry>,
    /// One read at a time per handler: when an entry goes stale under load, every call
    /// to the handler at that moment (dozens) would read it, each on a connection of its
    /// own, and the reads the engine waits for would queue behind them.
    reading: HashMap<i64, Arc<tokio::sync::Mutex<()>>>,
    /// Counts invalidations: a read that began before one does not fill the cache.
    generation: u64,
    #[cfg(test)]
    reads: usize,
}

impl Inner {
    /// A read of a handler begins: the generation it reads in.
    fn begin_read(&mut self) -> u64 {
        #[cfg(test)]
        {
            self.reads += 1;
        }
        self.generation
    }
}

impl HandlerCache {
    /// The handler and its secrets, `None` when it no longer exists.
    pub async fn get(
        &self,
        db: &Db,
        id: i64,
    ) -> Result<Option<Arc<(Handler, Secrets)>>, StoreError> {
        if let Some(entry) = self.fresh(id) {
            return Ok(Some(entry));
        }
        let reading = {
            let mut inner = self.inner.lock().expect("not poisoned");
            inner.reading.entry(id).or_default().clone()
        };
        // Not for ever: a read stuck on its connection must not hold up every call to the
        // handler; past that each reads for itself, as before.
        let _reading = tokio::time::timeout(FRESH_FOR, reading.lock()).await.ok();
        // Read by the call that held the lock before us.
        if let Some(entry) = self.fresh(id) {
            return Ok(Some(entry));
        }
        let generation = self.inner.lock().expect("not poisoned").begin_read();
        let mut conn = db.read.acquire().await?;
        let (Some(handler), Some(secrets)) = (
            handlers::get(&mut conn, id).await?,
            handlers::secrets(&mut conn, id).await?,
        ) else {
            return Ok(None);
        };
        let entry = Arc::new((handler, secrets));
        let mut inner = self.inner.lock().expect("not poisoned");
        if inner.generation == generation {
            inner.entries.insert(id, (Instant::now(), entry.clone()));
        }
        Ok(Some(entry))
    }

    fn fresh(&self, id: i64) -> Option<Arc<(Handler, Secrets)>> {
        let inner = self.inner.lock().expect("not poisoned");
        let (at, entry) = inner.entries.get(&id)?;
        (at.elapsed() < FRESH_FOR).then(|| entry.clone())
    }

    /// Forgets everything (a handler or its secret changed).
    pub fn invalidate(&self) {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.entries.clear();
        inner.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billhook_store::sql::query;

    /// Calls that find the same handler missing or stale at once read it once between
    /// them; a change (invalidation) makes the next call read it again.
    #[tokio::test]
    async fn concurrent_calls_read_a_handler_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite:{}", dir.path().join("h.db").display()))
            .await
            .unwrap();
        db.migrate().await.unwrap();
        query(
            "INSERT INTO handlers (name, status, priority, event, stage, type, task,
               timeout_ms, on_failure, retry_schedule, secret, created_at, updated_at)
             VALUES ('one', 'enabled', 0, '*', 'after', 'http', 'http://127.0.0.1:9/', 1000,
               'allow', '[]', 's', 0, 0)",
        )
        .execute(&mut db.write.acquire().await.unwrap())
        .await
        .unwrap();
        let cache = HandlerCache::default();
        let reads = || cache.inner.lock().unwrap().reads;
        // Every read connection held, so that reads wait (SQLite's do not yield
        // otherwise): the calls all come in while the first read is under way.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(db.read.acquire().await.unwrap());
        }
        let gets = futures::future::join_all((0..32).map(|_| cache.get(&db, 1)));
        let release = async {
            tokio::task::yield_now().await;
            held.clear();
        };
        let (got, ()) = tokio::join!(gets, release);
        for got in got {
            assert_eq!(got.unwrap().unwrap().0.name, "one");
        }
        assert_eq!(reads(), 1);
        cache.invalidate();
        let gets = futures::future::join_all((0..32).map(|_| cache.get(&db, 1)));
        gets.await;
        assert_eq!(reads(), 2, "read again after a change");

        // A read begun before a change does not fill the cache.
        cache.invalidate();
        for _ in 0..8 {
            held.push(db.read.acquire().await.unwrap());
        }
        let change = async {
            tokio::task::yield_now().await;
            cache.invalidate();
            held.clear();
        };
        let (got, ()) = tokio::join!(cache.get(&db, 1), change);
        assert!(got.unwrap().is_some());
        assert!(cache.fresh(1).is_none(), "read before the change: not kept");
        db.close().await;
    }
}

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
    entries: Arc<Mutex<HashMap<i64, Entry>>>,
}

impl HandlerCache {
    /// The handler and its secrets, `None` when it no longer exists.
    pub async fn get(
        &self,
        db: &Db,
        id: i64,
    ) -> Result<Option<Arc<(Handler, Secrets)>>, StoreError> {
        if let Some((at, entry)) = self.entries.lock().expect("not poisoned").get(&id) {
            if at.elapsed() < FRESH_FOR {
                return Ok(Some(entry.clone()));
            }
        }
        let mut conn = db.read.acquire().await?;
        let (Some(handler), Some(secrets)) = (
            handlers::get(&mut conn, id).await?,
            handlers::secrets(&mut conn, id).await?,
        ) else {
            return Ok(None);
        };
        let entry = Arc::new((handler, secrets));
        self.entries
            .lock()
            .expect("not poisoned")
            .insert(id, (Instant::now(), entry.clone()));
        Ok(Some(entry))
    }

    /// Forgets everything (a handler or its secret changed).
    pub fn invalidate(&self) {
        self.entries.lock().expect("not poisoned").clear();
    }
}

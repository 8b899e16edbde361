//! One-at-a-time access per key inside this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Async locks by key, created on demand and dropped when nobody holds or waits.
#[derive(Clone, Default)]
pub struct Turns {
    locks: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

/// Holding it is having the turn of its key.
pub struct Turn {
    key: String,
    turns: Turns,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    /// Waits for the turn of `key`.
    pub async fn lock(&self, key: String) -> Turn {
        let lock = self
            .locks
            .lock()
            .expect("not poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        Turn {
            key,
            turns: self.clone(),
            guard: Some(guard),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.turns.locks.lock().expect("not poisoned");
        // Only the map holds it now: nobody waits, so forget the key.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

//! API keys: generated at random, stored only as SHA-256 hashes, checked on every
//! request with a short cache so a key revoked by `billhook keys revoke` (another
//! process) stops working within seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billhook_domain::Timestamp;
use billhook_store::{keys, Db};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

pub use keys::ApiKey;

use crate::AppError;

/// How long a successful lookup is trusted without asking the database again.
const CACHE_FOR: Duration = Duration::from_secs(5);

/// Checks and manages API keys.
#[derive(Clone)]
pub struct KeyRing {
    db: Db,
    admin_hash: Option<String>,
    cache: Arc<Mutex<HashMap<String, Instant>>>,
}

/// The hex SHA-256 of a key: what is stored and compared.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key: `bh_` and 40 letters and digits (about 238 bits).
pub fn generate() -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("bh_{body}")
}

impl KeyRing {
    /// A key ring over `db`; `admin_key` (from `BILLHOOK_API_KEY`) is always accepted.
    pub fn new(db: Db, admin_key: Option<String>) -> KeyRing {
        KeyRing {
            db,
            admin_hash: admin_key.filter(|k| !k.is_empty()).map(|k| hash(&k)),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// True when `key` is the admin key or one found live in the database within the
    /// last seconds: no need to ask it (see [`KeyRing::verify`]).
    pub fn known(&self, key: &str) -> bool {
        self.known_hash(&hash(key))
    }

    fn known_hash(&self, h: &str) -> bool {
        if self.admin_hash.as_deref() == Some(h) {
            return true;
        }
        let cache = self.cache.lock().expect("not poisoned");
        cache.get(h).is_some_and(|at| at.elapsed() < CACHE_FOR)
    }

    /// True when `key` is the admin key or a live stored key.
    pub async fn verify(&self, key: &str) -> Result<bool, AppError> {
        let h = hash(key);
        if self.known_hash(&h) {
            return Ok(true);
        }
        let now = Instant::now();
        let mut conn = self.db.read.acquire().await?;
        let valid = keys::is_valid(&mut conn, &h).await?;
        if valid {
            let mut cache = self.cache.lock().expect("not poisoned");
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(h, now);
        }
        Ok(valid)
    }

    /// On a first start without `BILLHOOK_API_KEY` and without stored keys, creates an
    /// admin key and returns it so that it can be shown once.
    pub async fn ensure_initial_key(&self) -> Result<Option<String>, AppError> {
        if self.admin_hash.is_some() {
            return Ok(None);
        }
        let mut tx = self.db.begin().await?;
        if keys::live_count(&mut tx).await? > 0 {
            return Ok(None);
        }
        let key = generate();
        keys::insert(&mut tx, "admin", &key[..7], &hash(&key), Timestamp::now()).await?;
        tx.commit().await?;
        Ok(Some(key))
    }

    /// Creates a named key and returns it with the key itself (shown only now).
    pub async fn create(&self, name: &str) -> Result<(i64, String), AppError> {
        let key = generate();
        let mut tx = self.db.begin().await?;
        let id = keys::insert(&mut tx, name, &key[..7], &hash(&key), Timestamp::now()).await?;
        tx.commit().await?;
        Ok((id, key))
    }

    /// Every stored key (hashes are never shown).
    pub async fn list(&self) -> Result<Vec<ApiKey>, AppError> {
        let mut conn = self.db.read.acquire().await?;
        Ok(keys::list(&mut conn).await?)
    }

    /// Revokes a key; 404 when there is no such live key.
    pub async fn revoke(&self, id: i64) -> Result<(), AppError> {
        let mut tx = self.db.begin().await?;
        if !keys::revoke(&mut tx, id, Timestamp::now()).await? {
            return Err(AppError::not_found("live API key", id));
        }
        tx.commit().await?;
        Ok(())
    }
}

//! API keys: only a SHA-256 hash of each key is stored.

use crate::sql::{query, query_scalar, Conn, Row};
use billhook_domain::Timestamp;

use crate::StoreError;

/// A stored API key (never the key itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    /// The first characters of the key, to recognise it in a list.
    pub prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

fn from_row(row: &Row) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(Timestamp::from_micros),
    })
}

/// Stores a key's hash; an existing identical hash is left as it is.
pub async fn insert(
    conn: &mut Conn,
    name: &str,
    prefix: &str,
    hash: &str,
    now: Timestamp,
) -> Result<i64, StoreError> {
    let id = query_scalar(
        "INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key_hash) DO UPDATE SET name = api_keys.name RETURNING id",
    )
    .bind(name)
    .bind(prefix)
    .bind(hash)
    .bind(now.micros())
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// All keys, oldest first.
pub async fn list(conn: &mut Conn) -> Result<Vec<ApiKey>, StoreError> {
    let rows = query("SELECT id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY id")
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Revokes a key; false when no such live key exists.
pub async fn revoke(conn: &mut Conn, id: i64, now: Timestamp) -> Result<bool, StoreError> {
    let done = query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now.micros())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// True when a live key has this hash.
pub async fn is_valid(conn: &mut Conn, hash: &str) -> Result<bool, StoreError> {
    let n: i64 =
        query_scalar("SELECT COUNT(*) FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_one(conn)
            .await?;
    Ok(n > 0)
}

/// Number of live keys.
pub async fn live_count(conn: &mut Conn) -> Result<i64, StoreError> {
    query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")
        .fetch_one(conn)
        .await
}

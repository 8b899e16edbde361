//! DIDs: phone numbers and their life cycle.

use crate::sql::{query, query_scalar, Conn, Row};
use billhook_domain::entities::{Did, DidStatus};
use billhook_domain::Timestamp;

use crate::db::for_update;
use crate::query::{like_pattern, Bind, Filter};
use crate::{Page, StoreError};

const COLUMNS: &str = "id, number, status, clients_id, accounts_id, hold_until, status_after_hold, created_at, updated_at";

fn status(text: &str) -> Result<DidStatus, StoreError> {
    DidStatus::parse(text).ok_or_else(|| StoreError::Corrupt(format!("DID status {text}")))
}

fn from_row(row: &Row) -> Result<Did, StoreError> {
    Ok(Did {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        status: status(&row.try_get::<String, _>("status")?)?,
        clients_id: row.try_get("clients_id")?,
        accounts_id: row.try_get("accounts_id")?,
        hold_until: row
            .try_get::<Option<i64>, _>("hold_until")?
            .map(Timestamp::from_micros),
        status_after_hold: row
            .try_get::<Option<String>, _>("status_after_hold")?
            .map(|s| status(&s))
            .transpose()?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Inserts a DID and returns its id; a live duplicate number is a unique violation.
pub async fn insert(conn: &mut Conn, d: &Did) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO dids (number, status, clients_id, accounts_id, hold_until, status_after_hold, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(&d.number)
    .bind(d.status.as_str())
    .bind(d.clients_id)
    .bind(d.accounts_id)
    .bind(d.hold_until.map(|t| t.micros()))
    .bind(d.status_after_hold.map(|s| s.as_str()))
    .bind(d.created_at.micros())
    .bind(d.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads a DID; with `lock`, holds its row until the transaction ends (PostgreSQL).
pub async fn get(conn: &mut Conn, id: i64, lock: bool) -> Result<Option<Did>, StoreError> {
    let lock = if lock { for_update(conn) } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM dids WHERE id = $1{lock}");
    let row = query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes every field.
pub async fn update(conn: &mut Conn, d: &Did) -> Result<(), StoreError> {
    query(
        "UPDATE dids SET number = $1, status = $2, clients_id = $3, accounts_id = $4,
         hold_until = $5, status_after_hold = $6, updated_at = $7 WHERE id = $8",
    )
    .bind(&d.number)
    .bind(d.status.as_str())
    .bind(d.clients_id)
    .bind(d.accounts_id)
    .bind(d.hold_until.map(|t| t.micros()))
    .bind(d.status_after_hold.map(|s| s.as_str()))
    .bind(d.updated_at.micros())
    .bind(d.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// True when a non-archived DID other than `except` has `number`.
pub async fn number_taken(
    conn: &mut Conn,
    number: &str,
    except: Option<i64>,
) -> Result<bool, StoreError> {
    let n: i64 = query_scalar(
        "SELECT COUNT(*) FROM dids WHERE number = $1 AND status <> 'archived' AND id <> $2",
    )
    .bind(number)
    .bind(except.unwrap_or(0))
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// DIDs on hold whose hold has ended.
pub async fn hold_expired(
    conn: &mut Conn,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    query_scalar(
        "SELECT id FROM dids WHERE status = 'hold' AND hold_until <= $1 ORDER BY hold_until LIMIT $2",
    )
    .bind(now.micros())
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Filters of the DID list.
#[derive(Debug, Default)]
pub struct DidQuery {
    pub status: Option<String>,
    pub clients_id: Option<i64>,
    /// Part of the number.
    pub q: Option<String>,
}

/// Lists DIDs, newest first.
pub async fn list(
    conn: &mut Conn,
    query: &DidQuery,
    page: Page,
) -> Result<(Vec<Did>, i64), StoreError> {
    let mut filter = Filter::default();
    filter
        .eq_text("status", query.status.as_deref())
        .eq_int("clients_id", query.clients_id);
    if let Some(q) = &query.q {
        filter.add(
            "number LIKE ? ESCAPE '\\'",
            vec![Bind::Text(like_pattern(q))],
        );
    }
    let (rows, total) = filter.page(conn, COLUMNS, "dids", "id DESC", page).await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

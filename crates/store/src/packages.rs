//! Packages: recurring services with a period fee.

use crate::sql::{query, query_scalar, Conn, Row};
use billhook_domain::entities::{Package, PackageStatus};
use billhook_domain::{IsoDuration, Money, Timestamp};

use crate::db::{for_share, for_update};
use crate::query::Filter;
use crate::{Page, StoreError};

const COLUMNS: &str = "id, name, period, fee, currency, status, created_at, updated_at";

fn from_row(row: &Row) -> Result<Package, StoreError> {
    let status: String = row.try_get("status")?;
    let period: String = row.try_get("period")?;
    Ok(Package {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        period: IsoDuration::parse(&period)
            .map_err(|e| StoreError::Corrupt(format!("package period {period}: {e}")))?,
        fee: Money::from_micros(row.try_get("fee")?),
        currency: row.try_get("currency")?,
        status: PackageStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("package status {status}")))?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Inserts a package and returns its id.
pub async fn insert(conn: &mut Conn, p: &Package) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO packages (name, period, fee, currency, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&p.name)
    .bind(p.period.to_string())
    .bind(p.fee.micros())
    .bind(&p.currency)
    .bind(p.status.as_str())
    .bind(p.created_at.micros())
    .bind(p.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads a package.
pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<Package>, StoreError> {
    get_with(conn, id, "").await
}

async fn get_with(conn: &mut Conn, id: i64, lock: &str) -> Result<Option<Package>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM packages WHERE id = $1{lock}");
    let row = query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// [`get`], and on PostgreSQL a lock on the row until the transaction ends (`FOR UPDATE`,
/// or `FOR SHARE` when `shared`): an assign and a change of the package's currency on
/// two servers see each other's outcome, not both the old state. SQLite has one writer.
pub async fn get_locked(
    conn: &mut Conn,
    id: i64,
    shared: bool,
) -> Result<Option<Package>, StoreError> {
    let lock = match shared {
        true => for_share(conn),
        false => for_update(conn),
    };
    get_with(conn, id, lock).await
}

/// Writes every field.
pub async fn update(conn: &mut Conn, p: &Package) -> Result<(), StoreError> {
    query(
        "UPDATE packages SET name = $1, period = $2, fee = $3, currency = $4, status = $5,
         updated_at = $6 WHERE id = $7",
    )
    .bind(&p.name)
    .bind(p.period.to_string())
    .bind(p.fee.micros())
    .bind(&p.currency)
    .bind(p.status.as_str())
    .bind(p.updated_at.micros())
    .bind(p.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a package that no subscription refers to (the caller checks).
pub async fn delete(conn: &mut Conn, id: i64) -> Result<(), StoreError> {
    query("DELETE FROM packages WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts subscriptions of a package.
pub async fn subscriptions_count(conn: &mut Conn, id: i64) -> Result<i64, StoreError> {
    query_scalar("SELECT COUNT(*) FROM subscriptions WHERE packages_id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
}

/// How many subscriptions to package `id` are not closed.
pub async fn open_subscriptions_count(conn: &mut Conn, id: i64) -> Result<i64, StoreError> {
    query_scalar("SELECT COUNT(*) FROM subscriptions WHERE packages_id = $1 AND status <> 'closed'")
        .bind(id)
        .fetch_one(conn)
        .await
}

/// Lists packages, newest first.
pub async fn list(
    conn: &mut Conn,
    status: Option<&str>,
    page: Page,
) -> Result<(Vec<Package>, i64), StoreError> {
    let mut filter = Filter::default();
    filter.eq_text("status", status);
    let (rows, total) = filter
        .page(conn, COLUMNS, "packages", "id DESC", page)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

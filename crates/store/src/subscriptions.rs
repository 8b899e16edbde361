//! Subscriptions of clients to packages.

use crate::sql::{query, query_scalar, Conn, Row};
use billhook_domain::entities::{Subscription, SubscriptionStatus};
use billhook_domain::Timestamp;

use crate::query::{Bind, Filter};
use crate::{Page, StoreError};

const COLUMNS: &str = "id, clients_id, packages_id, status, start_dt, period_start, period_end, created_at, updated_at";

fn from_row(row: &Row) -> Result<Subscription, StoreError> {
    let status: String = row.try_get("status")?;
    let opt_ts = |name: &str| -> Result<Option<Timestamp>, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(name)?
            .map(Timestamp::from_micros))
    };
    Ok(Subscription {
        id: row.try_get("id")?,
        clients_id: row.try_get("clients_id")?,
        packages_id: row.try_get("packages_id")?,
        status: SubscriptionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("subscription status {status}")))?,
        start_dt: Timestamp::from_micros(row.try_get("start_dt")?),
        period_start: opt_ts("period_start")?,
        period_end: opt_ts("period_end")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Inserts a subscription and returns its id.
pub async fn insert(conn: &mut Conn, s: &Subscription) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO subscriptions (clients_id, packages_id, status, start_dt, period_start, period_end, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(s.clients_id)
    .bind(s.packages_id)
    .bind(s.status.as_str())
    .bind(s.start_dt.micros())
    .bind(s.period_start.map(|t| t.micros()))
    .bind(s.period_end.map(|t| t.micros()))
    .bind(s.created_at.micros())
    .bind(s.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads a subscription.
pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<Subscription>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM subscriptions WHERE id = $1");
    let row = query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes status and period.
pub async fn update(conn: &mut Conn, s: &Subscription) -> Result<(), StoreError> {
    query(
        "UPDATE subscriptions SET status = $1, period_start = $2, period_end = $3, updated_at = $4
         WHERE id = $5",
    )
    .bind(s.status.as_str())
    .bind(s.period_start.map(|t| t.micros()))
    .bind(s.period_end.map(|t| t.micros()))
    .bind(s.updated_at.micros())
    .bind(s.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Active subscriptions whose period has ended, oldest first; not those of archived
/// clients, which take no new charge (their fee).
pub async fn due_for_renewal(
    conn: &mut Conn,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    query_scalar(
        "SELECT id FROM subscriptions WHERE status = 'active' AND period_end <= $1
           AND NOT EXISTS (SELECT 1 FROM clients c
                           WHERE c.id = subscriptions.clients_id AND c.status = 'archived')
         ORDER BY period_end LIMIT $2",
    )
    .bind(now.micros())
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Pending subscriptions whose start has come; not those of archived clients.
pub async fn due_for_start(
    conn: &mut Conn,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    query_scalar(
        "SELECT id FROM subscriptions WHERE status = 'pending' AND start_dt <= $1
           AND NOT EXISTS (SELECT 1 FROM clients c
                           WHERE c.id = subscriptions.clients_id AND c.status = 'archived')
         ORDER BY start_dt LIMIT $2",
    )
    .bind(now.micros())
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Lists subscriptions, newest first.
pub async fn list(
    conn: &mut Conn,
    clients_id: Option<i64>,
    status: Option<&str>,
    page: Page,
) -> Result<(Vec<Subscription>, i64), StoreError> {
    let mut filter = Filter::default();
    filter.eq_int("clients_id", clients_id);
    if let Some(s) = status {
        filter.add("status = ?", vec![Bind::Text(s.to_string())]);
    }
    let (rows, total) = filter
        .page(conn, COLUMNS, "subscriptions", "id DESC", page)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

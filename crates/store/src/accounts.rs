//! VoIP accounts of clients.

use crate::sql::{query, query_scalar, Conn, Row};
use billhook_domain::entities::{Account, AuthType};
use billhook_domain::Timestamp;

use crate::query::{json_column, to_json_text, Filter};
use crate::{Page, StoreError};

const COLUMNS: &str =
    "id, clients_id, name, auth_type, ips, login, password, enabled, created_at, updated_at";

fn from_row(row: &Row) -> Result<Account, StoreError> {
    let auth: String = row.try_get("auth_type")?;
    Ok(Account {
        id: row.try_get("id")?,
        clients_id: row.try_get("clients_id")?,
        name: row.try_get("name")?,
        auth_type: AuthType::parse(&auth)
            .ok_or_else(|| StoreError::Corrupt(format!("auth_type {auth}")))?,
        ips: json_column(&row.try_get::<String, _>("ips")?)?,
        login: row.try_get("login")?,
        password: row.try_get("password")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Inserts a new account and returns its id.
pub async fn insert(conn: &mut Conn, a: &Account) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO accounts (clients_id, name, auth_type, ips, login, password, enabled, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(a.clients_id)
    .bind(&a.name)
    .bind(a.auth_type.as_str())
    .bind(to_json_text(&a.ips))
    .bind(a.login.as_deref())
    .bind(a.password.as_deref())
    .bind(a.enabled as i64)
    .bind(a.created_at.micros())
    .bind(a.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads an account.
pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<Account>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
    let row = query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes the changeable fields.
pub async fn update(conn: &mut Conn, a: &Account) -> Result<(), StoreError> {
    query(
        "UPDATE accounts SET name = $1, auth_type = $2, ips = $3, login = $4, password = $5,
         enabled = $6, updated_at = $7 WHERE id = $8",
    )
    .bind(&a.name)
    .bind(a.auth_type.as_str())
    .bind(to_json_text(&a.ips))
    .bind(a.login.as_deref())
    .bind(a.password.as_deref())
    .bind(a.enabled as i64)
    .bind(a.updated_at.micros())
    .bind(a.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes an account row.
pub async fn delete(conn: &mut Conn, id: i64) -> Result<(), StoreError> {
    query("DELETE FROM accounts WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts DIDs routed to an account.
pub async fn dids_count(conn: &mut Conn, id: i64) -> Result<i64, StoreError> {
    query_scalar("SELECT COUNT(*) FROM dids WHERE accounts_id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
}

/// Lists accounts, newest first, optionally of one client.
pub async fn list(
    conn: &mut Conn,
    clients_id: Option<i64>,
    page: Page,
) -> Result<(Vec<Account>, i64), StoreError> {
    let mut filter = Filter::default();
    filter.eq_int("clients_id", clients_id);
    let (rows, total) = filter
        .page(conn, COLUMNS, "accounts", "id DESC", page)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

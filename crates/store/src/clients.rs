//! Clients and their balances.

use crate::sql::{query, Conn, Row};
use billhook_domain::entities::{Client, ClientStatus};
use billhook_domain::{Money, Timestamp};

use crate::db::for_update;
use crate::query::{json_column, like_pattern, to_json_text, Bind, Filter};
use crate::{Page, StoreError};

const COLUMNS: &str =
    "id, name, status, currency, balance, credit, email, tags, custom_fields, created_at, updated_at";

fn from_row(row: &Row) -> Result<Client, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Client {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        status: ClientStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("client status {status}")))?,
        currency: row.try_get("currency")?,
        balance: Money::from_micros(row.try_get("balance")?),
        credit: Money::from_micros(row.try_get("credit")?),
        email: row.try_get("email")?,
        tags: json_column(&row.try_get::<String, _>("tags")?)?,
        custom_fields: json_column(&row.try_get::<String, _>("custom_fields")?)?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Inserts a new client and returns its id.
pub async fn insert(conn: &mut Conn, c: &Client) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO clients (name, status, currency, balance, credit, email, tags, custom_fields, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(&c.name)
    .bind(c.status.as_str())
    .bind(&c.currency)
    .bind(c.balance.micros())
    .bind(c.credit.micros())
    .bind(c.email.as_deref())
    .bind(to_json_text(&c.tags))
    .bind(to_json_text(&c.custom_fields))
    .bind(c.created_at.micros())
    .bind(c.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads a client; with `lock`, holds its row until the transaction ends (PostgreSQL),
/// which orders every change concerning this client.
pub async fn get(conn: &mut Conn, id: i64, lock: bool) -> Result<Option<Client>, StoreError> {
    let lock = if lock { for_update(conn) } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM clients WHERE id = $1{lock}");
    let row = query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// A client's status alone, locked as [`get`] locks it: what an action on something of
/// the client's needs of it, without reading and decoding the whole row.
pub async fn lock_status(conn: &mut Conn, id: i64) -> Result<Option<ClientStatus>, StoreError> {
    let sql = match conn.is_postgres() {
        true => "SELECT status FROM clients WHERE id = $1 FOR UPDATE",
        false => "SELECT status FROM clients WHERE id = $1",
    };
    let Some(row) = query(sql).bind(id).fetch_optional(conn).await? else {
        return Ok(None);
    };
    let status: String = row.try_get(0)?;
    ClientStatus::parse(&status)
        .map(Some)
        .ok_or_else(|| StoreError::Corrupt(format!("client status {status}")))
}

/// Writes every field but the balance, which only `add_balance` changes.
pub async fn update(conn: &mut Conn, c: &Client) -> Result<(), StoreError> {
    query(
        "UPDATE clients SET name = $1, status = $2, currency = $3, credit = $4, email = $5,
         tags = $6, custom_fields = $7, updated_at = $8 WHERE id = $9",
    )
    .bind(&c.name)
    .bind(c.status.as_str())
    .bind(&c.currency)
    .bind(c.credit.micros())
    .bind(c.email.as_deref())
    .bind(to_json_text(&c.tags))
    .bind(to_json_text(&c.custom_fields))
    .bind(c.updated_at.micros())
    .bind(c.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds `delta` to the balance in one statement, so concurrent transactions never lose
/// an update, and returns the balance after it; `None` when the client does not exist
/// or the balance would leave the range of exact integers (SQLite would silently turn
/// it into a float). Only the balance: the whole client is read (by the caller) when a
/// balance event needs it, rarely, and a payment no longer pays for it each time.
pub async fn add_balance(
    conn: &mut Conn,
    id: i64,
    delta: Money,
    now: Timestamp,
) -> Result<Option<Money>, StoreError> {
    const UPDATE: &str = "UPDATE clients SET balance = balance + $1, updated_at = $2
         WHERE id = $3 AND ABS(balance) <= 9000000000000000000 - ABS($1)";
    if conn.is_sqlite() {
        // Without RETURNING, which on SQLite opens a temporary table for its one row.
        // Reading the balance back gives the same: the caller is in a write
        // transaction, and SQLite has one writer.
        let done = query(UPDATE)
            .bind(delta.micros())
            .bind(now.micros())
            .bind(id)
            .execute(&mut *conn)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let balance: i64 = query("SELECT balance FROM clients WHERE id = $1")
            .bind(id)
            .fetch_one(conn)
            .await?
            .try_get(0)?;
        return Ok(Some(Money::from_micros(balance)));
    }
    let row = query(&format!("{UPDATE} RETURNING balance"))
        .bind(delta.micros())
        .bind(now.micros())
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| r.try_get(0).map(Money::from_micros))
        .transpose()
}

/// Deletes a client row with its closed subscriptions (the caller has checked that
/// nothing else refers to it).
pub async fn delete(conn: &mut Conn, id: i64) -> Result<(), StoreError> {
    query("DELETE FROM subscriptions WHERE clients_id = $1 AND status = 'closed'")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    query("DELETE FROM clients WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What still refers to a client and keeps it from being deleted.
#[derive(Debug, Default)]
pub struct Dependents {
    pub accounts: i64,
    pub open_subscriptions: i64,
    pub dids: i64,
    pub transactions: i64,
}

/// Counts the objects that keep a client from being deleted.
pub async fn dependents(conn: &mut Conn, id: i64) -> Result<Dependents, StoreError> {
    let row = query(
        "SELECT (SELECT COUNT(*) FROM accounts WHERE clients_id = $1),
                (SELECT COUNT(*) FROM subscriptions WHERE clients_id = $1 AND status <> 'closed'),
                (SELECT COUNT(*) FROM dids WHERE clients_id = $1),
                (SELECT COUNT(*) FROM transactions WHERE clients_id = $1)",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(Dependents {
        accounts: row.try_get(0)?,
        open_subscriptions: row.try_get(1)?,
        dids: row.try_get(2)?,
        transactions: row.try_get(3)?,
    })
}

/// Filters of the client list.
#[derive(Debug, Default)]
pub struct ClientQuery {
    pub status: Option<String>,
    /// Matches name, email or tags, case-insensitively.
    pub q: Option<String>,
}

/// Lists clients, newest first.
pub async fn list(
    conn: &mut Conn,
    query: &ClientQuery,
    page: Page,
) -> Result<(Vec<Client>, i64), StoreError> {
    let mut filter = Filter::default();
    filter.eq_text("status", query.status.as_deref());
    if let Some(q) = &query.q {
        let p = like_pattern(q);
        // Tags are stored as JSON text: JSON's own punctuation would match every list.
        if q.contains(['[', ']', '"', ',', '\\']) {
            filter.add(
                "(LOWER(name) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(email, '')) LIKE ? ESCAPE '\\')",
                vec![Bind::Text(p.clone()), Bind::Text(p)],
            );
        } else {
            filter.add(
                "(LOWER(name) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(email, '')) LIKE ? ESCAPE '\\' OR LOWER(tags) LIKE ? ESCAPE '\\')",
                vec![Bind::Text(p.clone()), Bind::Text(p.clone()), Bind::Text(p)],
            );
        }
    }
    let (rows, total) = filter
        .page(conn, COLUMNS, "clients", "id DESC", page)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

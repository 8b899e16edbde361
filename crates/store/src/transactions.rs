//! Charges and payments, in one table told apart by `kind`.

use crate::sql::{query, Conn, Row};
use billhook_domain::entities::{Transaction, TransactionKind};
use billhook_domain::{Money, Timestamp};

use crate::query::Filter;
use crate::{Page, StoreError};

const COLUMNS: &str = "id, clients_id, amount, dt, notes, created_at, updated_at";

fn from_row(row: &Row) -> Result<Transaction, StoreError> {
    Ok(Transaction {
        id: row.try_get("id")?,
        clients_id: row.try_get("clients_id")?,
        amount: Money::from_micros(row.try_get("amount")?),
        dt: Timestamp::from_micros(row.try_get("dt")?),
        notes: row.try_get("notes")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Inserts a charge or payment and returns its id.
pub async fn insert(
    conn: &mut Conn,
    kind: TransactionKind,
    t: &Transaction,
) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO transactions (kind, clients_id, amount, dt, notes, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(t.clients_id)
    .bind(t.amount.micros())
    .bind(t.dt.micros())
    .bind(t.notes.as_deref())
    .bind(t.created_at.micros())
    .bind(t.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads a charge or payment of the given kind.
pub async fn get(
    conn: &mut Conn,
    kind: TransactionKind,
    id: i64,
) -> Result<Option<Transaction>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM transactions WHERE id = $1 AND kind = $2");
    let row = query(&sql)
        .bind(id)
        .bind(kind.as_str())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes amount, date and notes.
pub async fn update(conn: &mut Conn, t: &Transaction) -> Result<(), StoreError> {
    query(
        "UPDATE transactions SET amount = $1, dt = $2, notes = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(t.amount.micros())
    .bind(t.dt.micros())
    .bind(t.notes.as_deref())
    .bind(t.updated_at.micros())
    .bind(t.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a transaction row.
pub async fn delete(conn: &mut Conn, id: i64) -> Result<(), StoreError> {
    query("DELETE FROM transactions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Lists charges or payments, newest first, optionally of one client.
pub async fn list(
    conn: &mut Conn,
    kind: TransactionKind,
    clients_id: Option<i64>,
    page: Page,
) -> Result<(Vec<Transaction>, i64), StoreError> {
    let mut filter = Filter::default();
    filter
        .eq_text("kind", Some(kind.as_str()))
        .eq_int("clients_id", clients_id);
    let (rows, total) = filter
        .page(conn, COLUMNS, "transactions", "id DESC", page)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

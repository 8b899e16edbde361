//! Rate tables and their rates.

use crate::sql::{query, Conn, Row};
use billhook_domain::entities::{Rate, RateTable};
use billhook_domain::{Money, Timestamp};

use crate::query::{Bind, Filter};
use crate::{Page, StoreError};

const COLUMNS: &str = "id, name, currency, email_sender, email_subject, created_at, updated_at";
const RATE_COLUMNS: &str =
    "id, rate_tables_id, prefix, rate, effective_from, imports_id, created_at";

fn from_row(row: &Row) -> Result<RateTable, StoreError> {
    Ok(RateTable {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        currency: row.try_get("currency")?,
        email_sender: row.try_get("email_sender")?,
        email_subject: row.try_get("email_subject")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

fn rate_from_row(row: &Row) -> Result<Rate, StoreError> {
    Ok(Rate {
        id: row.try_get("id")?,
        rate_tables_id: row.try_get("rate_tables_id")?,
        prefix: row.try_get("prefix")?,
        rate: Money::from_micros(row.try_get("rate")?),
        effective_from: Timestamp::from_micros(row.try_get("effective_from")?),
        imports_id: row.try_get("imports_id")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
    })
}

/// Inserts a rate table and returns its id.
pub async fn insert(conn: &mut Conn, t: &RateTable) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO rate_tables (name, currency, email_sender, email_subject, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&t.name)
    .bind(&t.currency)
    .bind(t.email_sender.as_deref())
    .bind(t.email_subject.as_deref())
    .bind(t.created_at.micros())
    .bind(t.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads a rate table.
pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<RateTable>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM rate_tables WHERE id = $1");
    let row = query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// Every rate table that takes email (has a sender pattern), oldest first.
pub async fn with_email(conn: &mut Conn) -> Result<Vec<RateTable>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM rate_tables WHERE email_sender IS NOT NULL AND email_sender <> '' ORDER BY id"
    );
    let rows = query(&sql).fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}

/// Writes every field of a rate table.
pub async fn update(conn: &mut Conn, t: &RateTable) -> Result<(), StoreError> {
    query(
        "UPDATE rate_tables SET name = $1, currency = $2, email_sender = $3, email_subject = $4,
         updated_at = $5 WHERE id = $6",
    )
    .bind(&t.name)
    .bind(&t.currency)
    .bind(t.email_sender.as_deref())
    .bind(t.email_subject.as_deref())
    .bind(t.updated_at.micros())
    .bind(t.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a rate table with its rates; imports that named it keep their history.
pub async fn delete(conn: &mut Conn, id: i64) -> Result<(), StoreError> {
    query("DELETE FROM rates WHERE rate_tables_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    query("UPDATE imports SET rate_tables_id = NULL WHERE rate_tables_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    query("DELETE FROM rate_tables WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Lists rate tables, newest first, optionally by name (substring, any case).
pub async fn list(
    conn: &mut Conn,
    name: Option<&str>,
    page: Page,
) -> Result<(Vec<RateTable>, i64), StoreError> {
    let mut filter = Filter::default();
    if let Some(n) = name {
        filter.add(
            "LOWER(name) LIKE ? ESCAPE '\\'",
            vec![Bind::Text(crate::query::like_pattern(n))],
        );
    }
    let (rows, total) = filter
        .page(conn, COLUMNS, "rate_tables", "id DESC", page)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// Filters of a table's rate list.
#[derive(Debug, Default)]
pub struct RateQuery {
    /// Rates whose prefix starts with these digits.
    pub prefix: Option<String>,
    /// The rates that would price a call to this number: the longest matching prefix.
    pub number: Option<String>,
    /// Only the rate in force at this moment for each prefix.
    pub effective_at: Option<Timestamp>,
}

/// Lists the rates of a table, by prefix then newest start first.
pub async fn rates(
    conn: &mut Conn,
    rate_tables_id: i64,
    q: &RateQuery,
    page: Page,
) -> Result<(Vec<Rate>, i64), StoreError> {
    let mut filter = Filter::default();
    filter.eq_int("r.rate_tables_id", Some(rate_tables_id));
    if let Some(p) = &q.prefix {
        // Digits only (checked by the caller), so no LIKE escaping is needed.
        filter.add("r.prefix LIKE ?", vec![Bind::Text(format!("{p}%"))]);
    }
    if let Some(number) = &q.number {
        let prefixes: Vec<Bind> = (1..=number.len().min(20))
            .map(|n| Bind::Text(number[..n].to_string()))
            .collect();
        let marks = vec!["?"; prefixes.len()].join(", ");
        filter.add(&format!("r.prefix IN ({marks})"), prefixes);
    }
    if let Some(at) = q.effective_at {
        filter.add("r.effective_from <= ?", vec![Bind::Int(at.micros())]);
        filter.add(
            "r.effective_from = (SELECT MAX(r2.effective_from) FROM rates r2
              WHERE r2.rate_tables_id = r.rate_tables_id AND r2.prefix = r.prefix
                AND r2.effective_from <= ?)",
            vec![Bind::Int(at.micros())],
        );
    }
    let order = if q.number.is_some() {
        "LENGTH(r.prefix) DESC, r.effective_from DESC"
    } else {
        "r.prefix, r.effective_from DESC"
    };
    let columns = RATE_COLUMNS
        .split(", ")
        .map(|c| format!("r.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (rows, total) = filter.page(conn, &columns, "rates r", order, page).await?;
    let items = rows.iter().map(rate_from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// A rate to store.
#[derive(Debug, Clone)]
pub struct NewRate {
    pub prefix: String,
    pub rate: Money,
    pub effective_from: Timestamp,
}

/// Rows per statement: 3 binds each stays far below both databases' bind limits.
pub const RATE_BATCH: usize = 500;

/// Stores rates; a rate with the same (table, prefix, start) is replaced. Within `batch`
/// a later row for the same key wins, as it would row by row.
pub async fn upsert_rates(
    conn: &mut Conn,
    rate_tables_id: i64,
    imports_id: Option<i64>,
    batch: &[NewRate],
    now: Timestamp,
) -> Result<(), StoreError> {
    // PostgreSQL refuses one statement that updates a row twice: drop earlier duplicates.
    let mut last = std::collections::HashMap::with_capacity(batch.len());
    for (i, r) in batch.iter().enumerate() {
        last.insert((r.prefix.as_str(), r.effective_from.micros()), i);
    }
    let rows: Vec<&NewRate> = batch
        .iter()
        .enumerate()
        .filter(|(i, r)| last[&(r.prefix.as_str(), r.effective_from.micros())] == *i)
        .map(|(_, r)| r)
        .collect();
    for chunk in rows.chunks(RATE_BATCH) {
        let mut sql = String::from(
            "INSERT INTO rates (rate_tables_id, prefix, rate, effective_from, imports_id, created_at) VALUES ",
        );
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let b = i * 3;
            sql.push_str(&format!("($1, ${}, ${}, ${}, $2, $3)", b + 4, b + 5, b + 6));
        }
        sql.push_str(
            " ON CONFLICT (rate_tables_id, prefix, effective_from)
              DO UPDATE SET rate = excluded.rate, imports_id = excluded.imports_id",
        );
        let mut query = query(&sql)
            .bind(rate_tables_id)
            .bind(imports_id)
            .bind(now.micros());
        for r in chunk {
            query = query
                .bind(r.prefix.as_str())
                .bind(r.rate.micros())
                .bind(r.effective_from.micros());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

//! Import jobs: a queue of files to import, run by the server whose disk holds them.

use crate::sql::{query, query_scalar, Conn, Row};
use billhook_domain::entities::{Import, ImportKind, ImportStatus};
use billhook_domain::Timestamp;

use crate::query::{json_column, to_json_text, Filter};
use crate::{Page, StoreError};

const COLUMNS: &str = "id, kind, status, file_name, rows_total, rows_imported, errors, \
    rate_tables_id, source, created_at, updated_at, file_path";

fn from_row(row: &Row) -> Result<Import, StoreError> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(Import {
        id: row.try_get("id")?,
        kind: ImportKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("import kind {kind}")))?,
        status: ImportStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("import status {status}")))?,
        file_name: row.try_get("file_name")?,
        rows_total: row.try_get("rows_total")?,
        rows_imported: row.try_get("rows_imported")?,
        errors: json_column(&row.try_get::<String, _>("errors")?)?,
        rate_tables_id: row.try_get("rate_tables_id")?,
        source: row.try_get("source")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Queues a job for `node`, whose disk holds `file_path`, and returns its id.
pub async fn insert(
    conn: &mut Conn,
    i: &Import,
    node: &str,
    file_path: &str,
) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO imports (kind, status, file_name, rate_tables_id, rows_total, rows_imported,
           errors, source, node, file_path, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(i.kind.as_str())
    .bind(i.status.as_str())
    .bind(&i.file_name)
    .bind(i.rate_tables_id)
    .bind(i.rows_total)
    .bind(i.rows_imported)
    .bind(to_json_text(&i.errors))
    .bind(&i.source)
    .bind(node)
    .bind(file_path)
    .bind(i.created_at.micros())
    .bind(i.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads a job.
pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<Import>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM imports WHERE id = $1");
    let row = query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// Lists jobs, newest first.
pub async fn list(
    conn: &mut Conn,
    kind: Option<&str>,
    status: Option<&str>,
    rate_tables_id: Option<i64>,
    page: Page,
) -> Result<(Vec<Import>, i64), StoreError> {
    let mut filter = Filter::default();
    filter
        .eq_text("kind", kind)
        .eq_text("status", status)
        .eq_int("rate_tables_id", rate_tables_id);
    let (rows, total) = filter
        .page(conn, COLUMNS, "imports", "id DESC", page)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// Takes the oldest job of `node` that is queued, or processing under an expired lease
/// (its server died), marks it processing until `lease_until`, and returns it with its
/// file's path.
pub async fn claim(
    conn: &mut Conn,
    node: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<(Import, String)>, StoreError> {
    let skip = match crate::db::for_update(conn) {
        "" => "",
        _ => " FOR UPDATE SKIP LOCKED",
    };
    let sql = format!(
        "UPDATE imports SET status = 'processing', lease_until = $1, updated_at = $2
         WHERE id = (SELECT id FROM imports WHERE node = $3
                       AND (status = 'queued' OR (status = 'processing' AND lease_until < $2))
                     ORDER BY id LIMIT 1{skip})
         RETURNING {COLUMNS}"
    );
    let row = query(&sql)
        .bind(lease_until.micros())
        .bind(now.micros())
        .bind(node)
        .fetch_optional(conn)
        .await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some((from_row(&row)?, row.try_get("file_path")?))),
    }
}

/// Extends the lease of a running job; false when the job is no longer ours.
pub async fn extend(conn: &mut Conn, id: i64, lease_until: Timestamp) -> Result<bool, StoreError> {
    let done = query("UPDATE imports SET lease_until = $1 WHERE id = $2 AND status = 'processing'")
        .bind(lease_until.micros())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a job's progress or end.
pub async fn save(conn: &mut Conn, i: &Import) -> Result<(), StoreError> {
    query(
        "UPDATE imports SET status = $1, rows_total = $2, rows_imported = $3, errors = $4,
           updated_at = $5, lease_until = 0 WHERE id = $6",
    )
    .bind(i.status.as_str())
    .bind(i.rows_total)
    .bind(i.rows_imported)
    .bind(to_json_text(&i.errors))
    .bind(i.updated_at.micros())
    .bind(i.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// True while a job for this rate table is queued or running.
pub async fn active_for_table(conn: &mut Conn, rate_tables_id: i64) -> Result<bool, StoreError> {
    let n: i64 = query_scalar(
        "SELECT COUNT(*) FROM imports WHERE rate_tables_id = $1 AND status IN ('queued', 'processing')",
    )
    .bind(rate_tables_id)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

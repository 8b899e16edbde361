//! Handlers and their signing secrets.

use crate::sql::{query, query_scalar, Conn, Row};
use billhook_domain::catalogue::Stage;
use billhook_domain::entities::{Handler, HandlerStatus, HandlerType, OnFailure, Wire};
use billhook_domain::Timestamp;

use crate::db::for_update;
use crate::query::{json_column, to_json_text, Bind, Filter};
use crate::{Page, StoreError};

const COLUMNS: &str = "id, name, status, priority, event, stage, type, task, timeout_ms, on_failure, retry_schedule, created_at, updated_at";

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("handler {what} {v}"))
}

fn from_row(row: &Row) -> Result<Handler, StoreError> {
    let status: String = row.try_get("status")?;
    let stage: String = row.try_get("stage")?;
    let kind: String = row.try_get("type")?;
    let on_failure: String = row.try_get("on_failure")?;
    Ok(Handler {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        status: HandlerStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        priority: row.try_get("priority")?,
        event: row.try_get("event")?,
        stage: Stage::parse(&stage).ok_or_else(|| corrupt("stage", &stage))?,
        kind: HandlerType::parse(&kind).ok_or_else(|| corrupt("type", &kind))?,
        task: row.try_get("task")?,
        timeout_ms: u32::try_from(row.try_get::<i64, _>("timeout_ms")?).unwrap_or(u32::MAX),
        on_failure: OnFailure::parse(&on_failure)
            .ok_or_else(|| corrupt("on_failure", &on_failure))?,
        retry_schedule: json_column(&row.try_get::<String, _>("retry_schedule")?)?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

/// Inserts a handler with its first secret and returns its id.
pub async fn insert(conn: &mut Conn, h: &Handler, secret: &str) -> Result<i64, StoreError> {
    let id = query(
        "INSERT INTO handlers (name, status, priority, event, stage, type, task, timeout_ms, on_failure, retry_schedule, secret, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
    )
    .bind(&h.name)
    .bind(h.status.as_str())
    .bind(h.priority)
    .bind(&h.event)
    .bind(h.stage.as_str())
    .bind(h.kind.as_str())
    .bind(&h.task)
    .bind(i64::from(h.timeout_ms))
    .bind(h.on_failure.as_str())
    .bind(to_json_text(&h.retry_schedule))
    .bind(secret)
    .bind(h.created_at.micros())
    .bind(h.updated_at.micros())
    .insert_id(conn)
    .await?;
    Ok(id)
}

/// Loads a handler.
pub async fn get(conn: &mut Conn, id: i64) -> Result<Option<Handler>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM handlers WHERE id = $1");
    let row = query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// The status and stage of handler `id`, its row held against change until the
/// transaction ends on PostgreSQL (`FOR SHARE`: a concurrent archive waits, or is seen,
/// and one after it sees what this transaction wrote); SQLite's one writer serialises
/// them already.
pub async fn status_held(
    conn: &mut Conn,
    id: i64,
) -> Result<Option<(HandlerStatus, Stage)>, StoreError> {
    let lock = if conn.is_postgres() { " FOR SHARE" } else { "" };
    let sql = format!("SELECT status, stage FROM handlers WHERE id = $1{lock}");
    let Some(row) = query(&sql).bind(id).fetch_optional(conn).await? else {
        return Ok(None);
    };
    let (status, stage): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    Ok(Some((
        HandlerStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        Stage::parse(&stage).ok_or_else(|| corrupt("stage", &stage))?,
    )))
}

/// SQL: whether the handler pattern in `column` matches the event name `event` (an
/// expression, used twice): `*`, the name itself, or its group's `group.*`. A `_` in a
/// group's name matches any character in LIKE, so also itself: the catalogue's names
/// differ by more than that.
pub(crate) fn pattern_matches(column: &str, event: &str) -> String {
    format!(
        "({column} = '*' OR {column} = {event}
          OR ({column} LIKE '%.*' AND {event} LIKE REPLACE({column}, '*', '%')))"
    )
}

/// Writes every field but the secrets.
pub async fn update(conn: &mut Conn, h: &Handler) -> Result<(), StoreError> {
    query(
        "UPDATE handlers SET name = $1, status = $2, priority = $3, event = $4, stage = $5, type = $6,
         task = $7, timeout_ms = $8, on_failure = $9, retry_schedule = $10, updated_at = $11 WHERE id = $12",
    )
    .bind(&h.name)
    .bind(h.status.as_str())
    .bind(h.priority)
    .bind(&h.event)
    .bind(h.stage.as_str())
    .bind(h.kind.as_str())
    .bind(&h.task)
    .bind(i64::from(h.timeout_ms))
    .bind(h.on_failure.as_str())
    .bind(to_json_text(&h.retry_schedule))
    .bind(h.updated_at.micros())
    .bind(h.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a handler and its deliveries (its execution log stays).
///
/// On PostgreSQL it first waits for every transaction that writes deliveries and holds
/// new ones off until it commits: deliveries have no foreign key to their handler, and
/// a transaction that read this handler before the delete committed could otherwise
/// queue a delivery for it that nothing would ever claim. One that takes its lock after
/// ours reads the handlers after our commit. SHARE ROW EXCLUSIVE conflicts with the
/// writers' ROW EXCLUSIVE and with itself (two deletes at once, each in SHARE mode, would
/// deadlock on their DELETEs). It waits at most [`DELETE_LOCK_WAIT_MS`], since every writer
/// of deliveries queues behind it meanwhile: behind a long transaction (an import) the
/// delete fails with a lock timeout (see [`StoreError::is_lock_timeout`]) rather than
/// stall the server. SQLite's single writer serialises the two anyway.
pub async fn delete(conn: &mut Conn, id: i64) -> Result<(), StoreError> {
    if conn.is_postgres() {
        crate::db::lock_timeout(conn, DELETE_LOCK_WAIT_MS).await?;
        query("LOCK TABLE deliveries IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await?;
    }
    query("DELETE FROM deliveries WHERE handlers_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    query("DELETE FROM handlers WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// How long a handler's delete waits for the lock on deliveries, in milliseconds
/// (PostgreSQL).
const DELETE_LOCK_WAIT_MS: u32 = 500;

/// A handler's secrets: the current one, and those it replaced that still sign.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub current: String,
    /// The secrets replaced, newest first, each with the time it stops signing. Each
    /// keeps its own end: a second rotation within a day must not cut the first short.
    pub previous: Vec<(String, Timestamp)>,
}

impl Secrets {
    /// The previous secrets still valid at `now`, newest first.
    pub fn previous_at(&self, now: Timestamp) -> impl Iterator<Item = &(String, Timestamp)> {
        self.previous.iter().filter(move |(_, until)| *until > now)
    }

    /// Every secret valid at `now`: the current one, then the previous ones newest first.
    pub fn signing(&self, now: Timestamp) -> Vec<&str> {
        std::iter::once(self.current.as_str())
            .chain(self.previous_at(now).map(|(s, _)| s.as_str()))
            .collect()
    }
}

/// Reads a handler's secrets, locked against a concurrent rotation when `lock`.
async fn read_secrets(conn: &mut Conn, id: i64, lock: bool) -> Result<Option<Secrets>, StoreError> {
    let lock = if lock { for_update(conn) } else { "" };
    let sql = format!("SELECT secret, previous_secrets FROM handlers WHERE id = $1{lock}");
    let Some(row) = query(&sql).bind(id).fetch_optional(conn).await? else {
        return Ok(None);
    };
    // Stored as `[[secret, until in microseconds], …]`.
    let previous: Vec<(String, i64)> = json_column(&row.try_get::<String, _>(1)?)?;
    Ok(Some(Secrets {
        current: row.try_get(0)?,
        previous: previous
            .into_iter()
            .map(|(s, until)| (s, Timestamp::from_micros(until)))
            .collect(),
    }))
}

/// Loads a handler's secrets.
pub async fn secrets(conn: &mut Conn, id: i64) -> Result<Option<Secrets>, StoreError> {
    read_secrets(conn, id, false).await
}

/// Replaces the secret at `now`; the old one keeps signing until `old_until`, and the
/// ones it replaced before until their own ends (those past at `now` are dropped, so the
/// list holds a day's rotations at most). False when there is no such handler.
pub async fn rotate_secret(
    conn: &mut Conn,
    id: i64,
    new_secret: &str,
    now: Timestamp,
    old_until: Timestamp,
) -> Result<bool, StoreError> {
    // Read, then written whole: the lock keeps two rotations at once on PostgreSQL from
    // each writing a list without the other's secret (SQLite's one writer serialises them).
    let Some(old) = read_secrets(conn, id, true).await? else {
        return Ok(false);
    };
    let previous: Vec<(&str, i64)> = std::iter::once((old.current.as_str(), old_until))
        .chain(old.previous_at(now).map(|(s, until)| (s.as_str(), *until)))
        .map(|(s, until)| (s, until.micros()))
        .collect();
    query("UPDATE handlers SET secret = $1, previous_secrets = $2 WHERE id = $3")
        .bind(new_secret)
        .bind(to_json_text(&previous))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Filters of the handler list.
#[derive(Debug, Default)]
pub struct HandlerQuery {
    /// `None`: enabled and disabled (archived hidden).
    pub status: Option<HandlerStatus>,
    pub event: Option<String>,
    /// An event id: the handlers whose pattern matches it (itself, its group's `….*`,
    /// `*`), where `event` is the stored pattern itself.
    pub matches: Option<String>,
    pub kind: Option<HandlerType>,
    pub stage: Option<Stage>,
}

/// Lists handlers, newest first (the spec's order of every list; the order they run in
/// is by priority, shown in each).
pub async fn list(
    conn: &mut Conn,
    q: &HandlerQuery,
    page: Page,
) -> Result<(Vec<Handler>, i64), StoreError> {
    let mut filter = Filter::default();
    match q.status {
        Some(s) => filter.eq_word("status", Some(s)),
        None => filter.add("status <> ?", vec![Bind::Text("archived".into())]),
    };
    if let Some(e) = &q.matches {
        // The rule the outbox matches by: `?` twice, the event bound to each.
        filter.add(
            &pattern_matches("event", "?"),
            vec![Bind::Text(e.clone()), Bind::Text(e.clone())],
        );
    }
    filter
        .eq_text("event", q.event.as_deref())
        .eq_word("type", q.kind)
        .eq_word("stage", q.stage);
    let (rows, total) = filter
        .page(conn, COLUMNS, "handlers", "id DESC", page)
        .await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// The id and stage of every handler not archived, by id: the ones `/metrics` shows
/// series for before their first call.
pub async fn live(conn: &mut Conn) -> Result<Vec<(i64, Stage)>, StoreError> {
    let rows = query("SELECT id, stage FROM handlers WHERE status <> 'archived' ORDER BY id")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            let stage: String = r.try_get(1usize)?;
            let stage = Stage::parse(&stage).ok_or_else(|| corrupt("stage", &stage))?;
            Ok((r.try_get::<i64, _>(0usize)?, stage))
        })
        .collect()
}

/// Every enabled before handler, by priority then id.
pub async fn enabled_before(conn: &mut Conn) -> Result<Vec<Handler>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM handlers WHERE status = 'enabled' AND stage = 'before' ORDER BY priority, id"
    );
    let rows = query(&sql).fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}

/// True when an enabled after handler names `events_id` itself or its group
/// (`group.*`). The catch-all `*` does not count: a handler that logs everything has not
/// asked to take over the work of the event (the email rates manager's import).
pub async fn subscribed_after(conn: &mut Conn, events_id: &str) -> Result<bool, StoreError> {
    let group = match events_id.rsplit_once('.') {
        Some((group, _)) => format!("{group}.*"),
        None => events_id.to_string(),
    };
    let n: i64 = query_scalar(
        "SELECT COUNT(*) FROM handlers WHERE status = 'enabled' AND stage = 'after'
         AND (event = $1 OR event = $2)",
    )
    .bind(events_id)
    .bind(group)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

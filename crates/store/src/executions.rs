//! The execution log: one row per handler call, both stages.

use std::sync::OnceLock;

use crate::sql::{query, Arg, Conn, IntoArg, Query, Row};
use billhook_domain::catalogue::Stage;
use billhook_domain::entities::CallStatus;
use billhook_domain::Timestamp;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::query::{json_column, like_pattern, to_json_text, Bind, Filter, Listing};
use crate::{Page, StoreError};

/// One call of a handler.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Execution {
    pub id: i64,
    pub dt: Timestamp,
    pub handlers_id: i64,
    pub handler: String,
    pub events_id: String,
    pub event_uid: String,
    pub object_id: Option<i64>,
    pub stage: String,
    pub attempt: i64,
    /// `success` or `fail`.
    pub status: String,
    pub duration_ms: i64,
    /// The payload sent, as sent.
    #[schema(value_type = Object)]
    pub request: Box<RawValue>,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    /// Before stage: what the handler changed.
    #[schema(value_type = Option<Object>)]
    pub modified: Option<Value>,
    /// The delivery an after call was an attempt of; null for a before call or a test
    /// (it was left out of those, so one list had two shapes).
    pub deliveries_id: Option<i64>,
}

const COLUMNS: &str = "id, dt, handlers_id, handler, events_id, event_uid, object_id, stage, attempt, status, duration_ms, request, response_status, response_body, error, modified, deliveries_id";

fn from_row(row: &Row) -> Result<Execution, StoreError> {
    Ok(Execution {
        id: row.try_get("id")?,
        dt: Timestamp::from_micros(row.try_get("dt")?),
        handlers_id: row.try_get("handlers_id")?,
        handler: row.try_get("handler")?,
        events_id: row.try_get("events_id")?,
        event_uid: row.try_get("event_uid")?,
        object_id: row.try_get("object_id")?,
        stage: row.try_get("stage")?,
        attempt: row.try_get("attempt")?,
        status: row.try_get("status")?,
        duration_ms: row.try_get("duration_ms")?,
        request: RawValue::from_string(row.try_get("request")?)
            .map_err(|e| StoreError::Corrupt(format!("executions.request is not JSON: {e}")))?,
        response_status: row.try_get("response_status")?,
        response_body: row.try_get("response_body")?,
        error: row.try_get("error")?,
        modified: row
            .try_get::<Option<String>, _>("modified")?
            .map(|m| json_column(&m))
            .transpose()?,
        deliveries_id: row.try_get("deliveries_id")?,
    })
}

/// The columns a call's row writes, in the order of [`values`], each with whether it
/// holds an integer (PostgreSQL's JSON rows are cast to it).
const WRITTEN: [(&str, bool); 16] = [
    ("dt", true),
    ("handlers_id", true),
    ("handler", false),
    ("events_id", false),
    ("event_uid", false),
    ("object_id", true),
    ("stage", false),
    ("attempt", true),
    ("status", false),
    ("duration_ms", true),
    ("request", false),
    ("response_status", true),
    ("response_body", false),
    ("error", false),
    ("modified", false),
    ("deliveries_id", true),
];
const FIELDS: usize = WRITTEN.len();

/// A row's values, in the order of [`WRITTEN`].
fn values(e: &Execution) -> [Arg; FIELDS] {
    [
        e.dt.micros().into_arg(),
        e.handlers_id.into_arg(),
        e.handler.as_str().into_arg(),
        e.events_id.as_str().into_arg(),
        e.event_uid.as_str().into_arg(),
        e.object_id.into_arg(),
        e.stage.as_str().into_arg(),
        e.attempt.into_arg(),
        e.status.as_str().into_arg(),
        e.duration_ms.into_arg(),
        e.request.get().into_arg(),
        e.response_status.into_arg(),
        e.response_body.as_deref().into_arg(),
        e.error.as_deref().into_arg(),
        e.modified.as_ref().map(to_json_text).into_arg(),
        e.deliveries_id.into_arg(),
    ]
}

/// `INSERT INTO executions (…) VALUES ` and `rows` rows of placeholders.
fn insert_values(rows: usize) -> String {
    let names: Vec<&str> = WRITTEN.iter().map(|(name, _)| *name).collect();
    format!(
        "INSERT INTO executions ({}) VALUES {}",
        names.join(", "),
        placeholders(rows)
    )
}

fn bind_row(q: Query, e: &Execution) -> Query {
    values(e).into_iter().fold(q, Query::bind_arg)
}

fn placeholders(rows: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (1..=FIELDS)
                .map(|c| format!("${}", r * FIELDS + c))
                .collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends a row to the log and returns its id.
pub async fn insert(conn: &mut Conn, e: &Execution) -> Result<i64, StoreError> {
    let sql = format!("{} RETURNING id", insert_values(1));
    bind_row(query(&sql), e).fetch_one(conn).await?.try_get(0)
}

/// Rows per statement of [`insert_many`]: 64 rows × 16 values stays far below both
/// databases' limits on bound values.
const ROWS_PER_INSERT: usize = 64;

/// Appends many rows, several per statement (one round trip instead of one each).
pub async fn insert_many(conn: &mut Conn, rows: &[&Execution]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    if conn.is_postgres() {
        return insert_json_rows(conn, rows).await;
    }
    // The statement for each number of rows, made once: writing out up to 1,024
    // placeholders for every batch was a visible share of the outcome writer.
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let sql = SQL.get_or_init(|| (0..=ROWS_PER_INSERT).map(insert_values).collect());
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut q = query(&sql[chunk.len()]);
        for e in chunk {
            q = bind_row(q, e);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Filters of the execution log.
#[derive(Debug, Default)]
pub struct ExecutionQuery {
    pub handlers_id: Option<i64>,
    pub status: Option<CallStatus>,
    pub events_id: Option<String>,
    pub stage: Option<Stage>,
    pub object_id: Option<i64>,
    pub event_uid: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Text searched in request, response body and error.
    pub q: Option<String>,
}

/// The execution log: newest by the time of the call, not by id (rows are written in
/// batches as their outcomes reach the writer, and a call's time can precede that of one
/// written before it: two calls ending together on both cores). Every filter's page is
/// read in this order from an index (migrations 0009 on SQLite, 0010 on PostgreSQL).
pub const LIST: Listing = Listing {
    columns: COLUMNS,
    table: "executions",
    count_from: "executions",
    order: "dt DESC, id DESC",
};

/// Lists executions, newest first.
pub async fn list(
    conn: &mut Conn,
    q: &ExecutionQuery,
    page: Page,
) -> Result<(Vec<Execution>, i64), StoreError> {
    let (rows, total) = filter(q).list(conn, &LIST, page).await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// The `WHERE` clause of [`list`].
pub fn filter(q: &ExecutionQuery) -> Filter {
    let mut filter = Filter::default();
    filter
        .eq_int("handlers_id", q.handlers_id)
        // Failures have indexes of their own (partial: the successes cost them nothing).
        .eq_word("status", q.status)
        .eq_text("events_id", q.events_id.as_deref())
        .eq_word("stage", q.stage)
        .eq_int("object_id", q.object_id)
        .eq_text("event_uid", q.event_uid.as_deref());
    filter.within("dt", q.from, q.to);
    if let Some(text) = &q.q {
        let p = like_pattern(text);
        // The request is kept as the JSON text sent, where `"`, `\` and control
        // characters are escaped: `O"Brien` is written `O\"Brien` there, so that is what
        // is looked for in it. The response and the error are kept as they came.
        let in_json = like_pattern(&json_escaped(text));
        filter.add(
            "(LOWER(request) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(response_body, '')) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(error, '')) LIKE ? ESCAPE '\\')",
            vec![Bind::Text(in_json), Bind::Text(p.clone()), Bind::Text(p)],
        );
    }
    filter
}

/// `text` as it is written inside a JSON string, without the quotes.
fn json_escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("strings serialise");
    quoted[1..quoted.len() - 1].to_owned()
}

/// PostgreSQL's [`insert_many`]: the whole batch in one statement of one shape, its rows
/// a JSON array. With a statement per number of rows, each connection prepared each of
/// 64 shapes (a parse and plan of up to 1,024 parameters), and they crowded the other
/// statements out of its cache.
async fn insert_json_rows(conn: &mut Conn, rows: &[&Execution]) -> Result<(), StoreError> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let (names, read): (Vec<&str>, Vec<String>) = WRITTEN
            .iter()
            .enumerate()
            .map(|(i, (name, int))| match int {
                true => (*name, format!("(e->>{i})::bigint")),
                false => (*name, format!("e->>{i}")),
            })
            .unzip();
        format!(
            "INSERT INTO executions ({}) SELECT {}
             FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS r(e, n) ORDER BY n",
            names.join(", "),
            read.join(", ")
        )
    });
    let json: Vec<Value> = rows
        .iter()
        .map(|e| Value::Array(values(e).into_iter().map(json_of).collect()))
        .collect();
    query(sql)
        .bind(Value::Array(json).to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// A bound value as a JSON one, for [`insert_json_rows`].
fn json_of(arg: Arg) -> Value {
    match arg {
        Arg::Null(_) => Value::Null,
        Arg::Int(i) => i.into(),
        Arg::Real(f) => f.into(),
        Arg::Text(t) => t.into(),
    }
}

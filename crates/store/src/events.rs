//! The event outbox: one row per event, inserted in the transaction of its change.

use crate::sql::{query, Conn, Row};
use billhook_domain::Timestamp;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::query::{json_column, Filter, Listing};
use crate::{Page, StoreError};

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the outbox; orders the events of one ordering key.
    pub seq: i64,
    pub uid: String,
    pub events_id: String,
    pub object_id: Option<i64>,
    /// The client the event belongs to (`clients:12`), or the object itself when it has
    /// no client (`dids:7`): deliveries of one key go out in `seq` order.
    pub ordering_key: String,
    pub dt: Timestamp,
    pub data: Value,
    pub previous: Value,
}

const COLUMNS: &str = "id, uid, events_id, object_id, ordering_key, dt, data, previous";

fn from_row(row: &Row) -> Result<Event, StoreError> {
    Ok(Event {
        seq: row.try_get("id")?,
        uid: row.try_get("uid")?,
        events_id: row.try_get("events_id")?,
        object_id: row.try_get("object_id")?,
        ordering_key: row.try_get("ordering_key")?,
        dt: Timestamp::from_micros(row.try_get("dt")?),
        data: json_column(&row.try_get::<String, _>("data")?)?,
        previous: json_column(&row.try_get::<String, _>("previous")?)?,
    })
}

/// Loads one event by its position in the outbox.
pub async fn get_by_seq(conn: &mut Conn, seq: i64) -> Result<Option<Event>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE id = $1");
    let row = query(&sql).bind(seq).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// An event for delivery: `data` and `previous` as the JSON text stored, which goes
/// into the payload as it is.
#[derive(Debug)]
pub struct EventText {
    pub seq: i64,
    pub uid: String,
    pub events_id: String,
    pub object_id: Option<i64>,
    pub dt: Timestamp,
    pub data: Box<RawValue>,
    pub previous: Box<RawValue>,
}

fn text_from_row(row: &Row) -> Result<EventText, StoreError> {
    let raw = |column: &str| -> Result<Box<RawValue>, StoreError> {
        RawValue::from_string(row.try_get(column)?)
            .map_err(|e| StoreError::Corrupt(format!("events.{column} is not JSON: {e}")))
    };
    Ok(EventText {
        seq: row.try_get("id")?,
        uid: row.try_get("uid")?,
        events_id: row.try_get("events_id")?,
        object_id: row.try_get("object_id")?,
        dt: Timestamp::from_micros(row.try_get("dt")?),
        data: raw("data")?,
        previous: raw("previous")?,
    })
}

/// Loads the events at these positions (a claimed batch) in one query.
pub async fn get_many(conn: &mut Conn, seqs: &[i64]) -> Result<Vec<EventText>, StoreError> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE {}",
        crate::query::in_ids(conn, "id", 1)
    );
    let rows = query(&sql)
        .bind(crate::query::ids_json(seqs))
        .fetch_all(conn)
        .await?;
    rows.iter().map(text_from_row).collect()
}

/// Loads one event by uid.
pub async fn get(conn: &mut Conn, uid: &str) -> Result<Option<Event>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE uid = $1");
    let row = query(&sql).bind(uid).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// Filters of the event list.
#[derive(Debug, Default)]
pub struct EventQuery {
    pub events_id: Option<String>,
    pub object_id: Option<i64>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub ordering_key: Option<String>,
}

/// The event list, newest first in the order the changes were made (the id: a client's
/// events take theirs under its lock), which is not always the order of their times.
/// The type's and the object's indexes hold the id. A window of time with both ends is
/// read from the time's index and sorted; on SQLite, which has no statistics to weigh
/// them by, `to` alone, or a window with a type, is read from the newest event down.
pub const LIST: Listing = Listing {
    columns: COLUMNS,
    table: "events",
    count_from: "events",
    order: "id DESC",
};

/// Lists events, newest first.
pub async fn list(
    conn: &mut Conn,
    query: &EventQuery,
    page: Page,
) -> Result<(Vec<Event>, i64), StoreError> {
    let (rows, total) = filter(query).list(conn, &LIST, page).await?;
    let items = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// The `WHERE` clause of [`list`].
pub fn filter(query: &EventQuery) -> Filter {
    let mut filter = Filter::default();
    filter
        .eq_text("events_id", query.events_id.as_deref())
        .eq_int("object_id", query.object_id)
        .eq_text("ordering_key", query.ordering_key.as_deref());
    filter.within("dt", query.from, query.to);
    filter
}

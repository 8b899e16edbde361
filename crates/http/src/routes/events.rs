use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use billhook_app::queries::{EventQuery, List};
use billhook_app::App;
use billhook_domain::catalogue::{Stage, EVENT_TYPES};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{query_event, query_num, query_time, ApiResult, Paging};
use crate::extract::ApiQuery;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/event_types", get(event_types))
        .route("/events", get(list))
        .route("/events/{uid}", get(one))
}

/// An event of the catalogue (`GET /event_types`); its fields sorted, as they were when
/// the answer was a JSON map.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct EventType {
    description: &'static str,
    group: &'static str,
    /// The event id, as payloads carry it in `event.events_id`.
    id: &'static str,
    /// A payload as an after handler receives it.
    #[schema(value_type = Object)]
    sample: Value,
    /// The stages a handler of this event may have.
    stages: &'static [Stage],
}

/// The catalogue: every event id with its group, description, stages and a sample.
async fn event_types() -> Json<List<EventType>> {
    let items: Vec<EventType> = EVENT_TYPES
        .iter()
        .map(|t| EventType {
            id: t.id,
            group: t.group,
            description: t.description,
            stages: t.stages(),
            sample: t.sample(),
        })
        .collect();
    let total = items.len() as i64;
    Json(List { items, total })
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default, deserialize_with = "query_event")]
    events_id: Option<String>,
    #[serde(default, deserialize_with = "query_num")]
    object_id: Option<i64>,
    #[serde(default, deserialize_with = "query_time")]
    from: Option<billhook_domain::Timestamp>,
    #[serde(default, deserialize_with = "query_time")]
    to: Option<billhook_domain::Timestamp>,
    #[serde(flatten)]
    paging: Paging,
}

async fn list(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<List<Value>>> {
    super::window(f.from, f.to)?;
    let q = EventQuery {
        events_id: f.events_id,
        object_id: f.object_id,
        from: f.from,
        to: f.to,
        ordering_key: None,
    };
    Ok(Json(app.queries.events(&q, f.paging.page()).await?))
}

async fn one(State(app): State<App>, Path(uid): Path<String>) -> ApiResult<Json<Value>> {
    // Uids are stored as written, in lower case; a UUID is the same in upper case (a
    // receiver's log or another tool may show it so).
    let uid = uid.to_ascii_lowercase();
    if uid.contains('\0') {
        return Err(billhook_app::AppError::NotFound(format!("event {uid:?} not found")).into());
    }
    Ok(Json(app.handlers.event_with_deliveries(&uid).await?))
}

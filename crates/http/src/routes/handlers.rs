use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use billhook_app::handlers::{DeliveryQuery, ExecutionQuery, HandlerQuery};
use billhook_app::handlers::{HandlerInput, WithSecret};
use billhook_app::queries::List;
use billhook_app::App;
use billhook_domain::catalogue::Stage;
use billhook_domain::entities::{CallStatus, DeliveryStatus, Handler, HandlerStatus, HandlerType};
use billhook_domain::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    created, query_event, query_num, query_pattern, query_search, query_time, query_wire,
    ApiResult, Paging,
};
use crate::extract::{ApiJson, ApiQuery, Id};

pub fn routes() -> Router<App> {
    let mut router = Router::new()
        .route("/handlers", post(create).get(list))
        .route("/handlers/{id}", get(one).patch(patch).delete(delete))
        .route("/handlers/{id}/secret", get(secret))
        .route("/handlers/{id}/secret/rotate", post(rotate))
        .route("/handlers/{id}/test", post(test))
        .route("/handlers/{id}/recover", post(recover))
        .route("/executions", get(executions))
        .route("/deliveries", get(deliveries))
        .route("/deliveries/{id}/retry", post(retry));
    for (name, status) in [
        ("enable", HandlerStatus::Enabled),
        ("disable", HandlerStatus::Disabled),
        ("archive", HandlerStatus::Archived),
    ] {
        router = router.route(
            &format!("/handlers/{{id}}/{name}"),
            post(move |State(app): State<App>, Id(id): Id| async move {
                ApiResult::Ok(Json(app.handlers.set_status(id, status).await?))
            }),
        );
    }
    router
}

async fn create(
    State(app): State<App>,
    ApiJson(input): ApiJson<HandlerInput>,
) -> ApiResult<(axum::http::StatusCode, Json<WithSecret>)> {
    Ok(created(app.handlers.create(input).await?))
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default, deserialize_with = "query_wire")]
    status: Option<HandlerStatus>,
    #[serde(default, deserialize_with = "query_pattern")]
    event: Option<String>,
    /// An event id: the handlers it would call (see `HandlerQuery::matches`).
    #[serde(default, deserialize_with = "query_event")]
    matches: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "query_wire")]
    kind: Option<HandlerType>,
    #[serde(default, deserialize_with = "query_wire")]
    stage: Option<Stage>,
    #[serde(flatten)]
    paging: Paging,
}

async fn list(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<List<Handler>>> {
    let q = HandlerQuery {
        status: f.status,
        event: f.event,
        matches: f.matches,
        kind: f.kind,
        stage: f.stage,
    };
    Ok(Json(app.handlers.list(&q, f.paging.page()).await?))
}

async fn one(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Handler>> {
    Ok(Json(app.handlers.get(id).await?))
}

async fn patch(
    State(app): State<App>,
    Id(id): Id,
    ApiJson(i): ApiJson<HandlerInput>,
) -> ApiResult<Json<Handler>> {
    Ok(Json(app.handlers.update(id, i).await?))
}

async fn delete(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Handler>> {
    Ok(Json(app.handlers.delete(id).await?))
}

/// A handler's signing secrets (`GET /handlers/{id}/secret`). Fields in the order
/// every answer written from a JSON map has (sorted), as this one was.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Secrets {
    /// The secrets it replaced that still sign, newest first.
    previous_secrets: Vec<PreviousSecret>,
    /// The secret that signs first (`whsec_…`).
    secret: String,
}

/// A replaced secret and the time it stops signing.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PreviousSecret {
    secret: String,
    until: Timestamp,
}

/// The current secret, and the ones it replaced that still sign (newest first), each
/// with the time it stops.
async fn secret(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Secrets>> {
    let secrets = app.handlers.secrets(id).await?;
    let previous_secrets = secrets
        .previous_at(Timestamp::now())
        .map(|(secret, until)| PreviousSecret {
            secret: secret.to_string(),
            until: *until,
        })
        .collect();
    Ok(Json(Secrets {
        secret: secrets.current.clone(),
        previous_secrets,
    }))
}

/// The new secret of a rotation.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Rotated {
    secret: String,
}

async fn rotate(
    State(app): State<App>,
    Id(id): Id,
    ApiJson(i): ApiJson<RotateInput>,
) -> ApiResult<Json<Rotated>> {
    if i.secret.is_some() {
        let why = "is made by billhook: a rotation makes a new one";
        return Err(billhook_app::AppError::field("secret", why).into());
    }
    let secret = app.handlers.rotate_secret(id).await?;
    Ok(Json(Rotated { secret }))
}

/// A rotation takes no input: a body is refused, not ignored (a `secret` sent with it
/// was dropped, and a random one made, with a 200).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateInput {
    secret: Option<Value>,
}

/// Unknown fields are refused: a misspelt `events_id` tested the default event.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    description = "The event whose sample the call sends (default: the handler's own \
    event, or for a pattern the first it matches)."
)]
pub(crate) struct TestInput {
    events_id: Option<String>,
}

async fn test(
    State(app): State<App>,
    Id(id): Id,
    ApiJson(i): ApiJson<TestInput>,
) -> ApiResult<Json<Value>> {
    let execution = app.handlers.test(id, i.events_id).await?;
    Ok(Json(serde_json::to_value(execution).expect("serialisable")))
}

/// Unknown fields are refused: a misspelt `until` widened the window to now.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    description = "The period whose events are queued again: since is required, \
    until defaults to now."
)]
pub(crate) struct RecoverInput {
    #[schema(required, value_type = Timestamp)]
    since: Option<Timestamp>,
    until: Option<Timestamp>,
}

/// How many deliveries a recovery queued.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Requeued {
    requeued: u64,
}

async fn recover(
    State(app): State<App>,
    Id(id): Id,
    ApiJson(i): ApiJson<RecoverInput>,
) -> ApiResult<Json<Requeued>> {
    let since = billhook_app::input::required(i.since, "since")?;
    let requeued = app.handlers.recover(id, since, i.until).await?;
    Ok(Json(Requeued { requeued }))
}

#[derive(Deserialize)]
struct ExecutionFilter {
    #[serde(default, deserialize_with = "query_num")]
    handlers_id: Option<i64>,
    #[serde(default, deserialize_with = "query_wire")]
    status: Option<CallStatus>,
    #[serde(default, deserialize_with = "query_event")]
    events_id: Option<String>,
    #[serde(default, deserialize_with = "query_wire")]
    stage: Option<Stage>,
    #[serde(default, deserialize_with = "query_num")]
    object_id: Option<i64>,
    event_uid: Option<String>,
    #[serde(default, deserialize_with = "query_time")]
    from: Option<Timestamp>,
    #[serde(default, deserialize_with = "query_time")]
    to: Option<Timestamp>,
    #[serde(default, deserialize_with = "query_search")]
    q: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn executions(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<ExecutionFilter>,
) -> ApiResult<Json<Value>> {
    super::window(f.from, f.to)?;
    let q = ExecutionQuery {
        handlers_id: f.handlers_id,
        status: f.status,
        events_id: f.events_id,
        stage: f.stage,
        object_id: f.object_id,
        // Stored in lower case, as `/events/{uid}` reads it.
        event_uid: f.event_uid.map(|u| u.to_ascii_lowercase()),
        from: f.from,
        to: f.to,
        q: f.q,
    };
    let list = app.handlers.executions(&q, f.paging.page()).await?;
    Ok(Json(serde_json::to_value(list).expect("serialisable")))
}

#[derive(Deserialize)]
struct DeliveryFilter {
    #[serde(default, deserialize_with = "query_wire")]
    status: Option<DeliveryStatus>,
    #[serde(default, deserialize_with = "query_num")]
    handlers_id: Option<i64>,
    #[serde(flatten)]
    paging: Paging,
}

async fn deliveries(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<DeliveryFilter>,
) -> ApiResult<Json<Value>> {
    let q = DeliveryQuery {
        status: f.status,
        handlers_id: f.handlers_id,
        ..DeliveryQuery::default()
    };
    let list = app.handlers.deliveries(&q, f.paging.page()).await?;
    Ok(Json(serde_json::to_value(list).expect("serialisable")))
}

async fn retry(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Value>> {
    let d = app.handlers.retry_delivery(id).await?;
    Ok(Json(serde_json::to_value(d).expect("serialisable")))
}

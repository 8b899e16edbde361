use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use billhook_app::actions::clients::{
    ChangeClient, ClientChange, ClientInput, ClientPatch, CreateClient,
};
use billhook_app::queries::{ClientQuery, List};
use billhook_app::App;
use billhook_domain::entities::Client;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{created, query_search, ApiResult, Paging};
use crate::extract::{ApiJson, ApiPatch, ApiQuery, Id};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/clients", post(create).get(list))
        .route("/clients/{id}", get(one).patch(patch).delete(delete))
        .route("/clients/{id}/custom_fields", put(custom_fields))
        .route("/clients/{id}/archive", post(archive))
}

#[derive(Deserialize)]
struct Filter {
    status: Option<String>,
    #[serde(default, deserialize_with = "query_search")]
    q: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn create(
    State(app): State<App>,
    ApiJson(input): ApiJson<ClientInput>,
) -> ApiResult<(axum::http::StatusCode, Json<Client>)> {
    Ok(created(app.pipeline.run(CreateClient(input)).await?))
}

async fn list(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<List<Client>>> {
    let q = ClientQuery {
        status: f.status,
        q: f.q,
    };
    Ok(Json(app.queries.clients(&q, f.paging.page()).await?))
}

async fn one(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Client>> {
    Ok(Json(app.queries.client(id).await?))
}

async fn change(app: &App, id: i64, change: ClientChange) -> ApiResult<Json<Client>> {
    Ok(Json(app.pipeline.run(ChangeClient { id, change }).await?))
}

async fn patch(
    State(app): State<App>,
    Id(id): Id,
    ApiPatch(p): ApiPatch<ClientPatch>,
) -> ApiResult<Json<Client>> {
    change(&app, id, ClientChange::Patch(p)).await
}

async fn custom_fields(
    State(app): State<App>,
    Id(id): Id,
    ApiJson(fields): ApiJson<Map<String, Value>>,
) -> ApiResult<Json<Client>> {
    change(&app, id, ClientChange::CustomFields(fields)).await
}

async fn archive(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Client>> {
    change(&app, id, ClientChange::Archive).await
}

async fn delete(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Client>> {
    change(&app, id, ClientChange::Delete).await
}

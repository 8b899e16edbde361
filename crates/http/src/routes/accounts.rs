use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use billhook_app::actions::accounts::{AccountInput, ChangeAccount, CreateAccount};
use billhook_app::queries::List;
use billhook_app::App;
use billhook_domain::entities::Account;
use serde::Deserialize;

use super::{created, query_num, ApiResult, Paging};
use crate::extract::{ApiJson, ApiPatch, ApiQuery, Id};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/accounts", post(create).get(list))
        .route("/accounts/{id}", get(one).patch(patch).delete(delete))
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default, deserialize_with = "query_num")]
    clients_id: Option<i64>,
    #[serde(flatten)]
    paging: Paging,
}

async fn create(
    State(app): State<App>,
    ApiJson(input): ApiJson<AccountInput>,
) -> ApiResult<(axum::http::StatusCode, Json<Account>)> {
    Ok(created(app.pipeline.run(CreateAccount(input)).await?))
}

async fn list(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<List<Account>>> {
    Ok(Json(
        app.queries.accounts(f.clients_id, f.paging.page()).await?,
    ))
}

async fn one(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Account>> {
    Ok(Json(app.queries.account(id).await?))
}

async fn patch(
    State(app): State<App>,
    Id(id): Id,
    ApiPatch(input): ApiPatch<AccountInput>,
) -> ApiResult<Json<Account>> {
    let action = ChangeAccount {
        id,
        patch: Some(input),
    };
    Ok(Json(app.pipeline.run(action).await?))
}

async fn delete(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Account>> {
    let action = ChangeAccount { id, patch: None };
    Ok(Json(app.pipeline.run(action).await?))
}

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use billhook_app::actions::packages::{self, PackageInput};
use billhook_app::queries::List;
use billhook_app::App;
use billhook_domain::entities::Package;
use serde::Deserialize;

use super::{created, ApiResult, Paging};
use crate::extract::{ApiJson, ApiPatch, ApiQuery, Id};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/packages", post(create).get(list))
        .route("/packages/{id}", get(one).patch(patch).delete(delete))
}

#[derive(Deserialize)]
struct Filter {
    status: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn create(
    State(app): State<App>,
    ApiJson(input): ApiJson<PackageInput>,
) -> ApiResult<(axum::http::StatusCode, Json<Package>)> {
    Ok(created(packages::create(&app.db, input).await?))
}

async fn list(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<List<Package>>> {
    Ok(Json(
        app.queries
            .packages(f.status.as_deref(), f.paging.page())
            .await?,
    ))
}

async fn one(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Package>> {
    Ok(Json(app.queries.package(id).await?))
}

async fn patch(
    State(app): State<App>,
    Id(id): Id,
    ApiPatch(input): ApiPatch<PackageInput>,
) -> ApiResult<Json<Package>> {
    Ok(Json(packages::update(&app.db, id, input).await?))
}

async fn delete(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Package>> {
    Ok(Json(packages::delete(&app.db, id).await?))
}

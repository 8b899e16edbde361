use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use billhook_app::actions::subscriptions::{self, AssignInput, ChangeSubscription};
use billhook_app::queries::List;
use billhook_app::App;
use billhook_domain::entities::{Subscription, SubscriptionAction};
use serde::Deserialize;

use super::{created, query_num, ApiResult, Paging};
use crate::extract::{ApiJson, ApiQuery, Id};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/subscriptions", post(assign).get(list))
        .route("/subscriptions/{id}", get(one))
        .route("/subscriptions/{id}/activate", post(activate))
        .route("/subscriptions/{id}/deactivate", post(deactivate))
        .route("/subscriptions/{id}/renew", post(renew))
        .route("/subscriptions/{id}/close", post(close))
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default, deserialize_with = "query_num")]
    clients_id: Option<i64>,
    status: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

/// Assigns, and activates at once when the start is not in the future, as one change
/// (see `subscriptions::assign`).
async fn assign(
    State(app): State<App>,
    ApiJson(input): ApiJson<AssignInput>,
) -> ApiResult<(axum::http::StatusCode, Json<Subscription>)> {
    Ok(created(subscriptions::assign(&app.pipeline, input).await?))
}

async fn list(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<List<Subscription>>> {
    let page = f.paging.page();
    Ok(Json(
        app.queries
            .subscriptions(f.clients_id, f.status.as_deref(), page)
            .await?,
    ))
}

async fn one(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Subscription>> {
    Ok(Json(app.queries.subscription(id).await?))
}

async fn change(app: &App, id: i64, action: SubscriptionAction) -> ApiResult<Json<Subscription>> {
    Ok(Json(
        app.pipeline
            .run(ChangeSubscription::new(id, action))
            .await?,
    ))
}

async fn activate(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Subscription>> {
    change(&app, id, SubscriptionAction::Activate).await
}

async fn deactivate(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Subscription>> {
    change(&app, id, SubscriptionAction::Deactivate).await
}

async fn renew(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Subscription>> {
    change(&app, id, SubscriptionAction::Renew).await
}

async fn close(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Subscription>> {
    change(&app, id, SubscriptionAction::Close).await
}

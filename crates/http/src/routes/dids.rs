use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use billhook_app::actions::dids::{DidActionRequest, DidChange, DidInput};
use billhook_app::queries::{DidQuery, List};
use billhook_app::App;
use billhook_domain::entities::{Did, DidAction};
use serde::Deserialize;

use super::{created, query_num, query_search, ApiResult, Paging};
use crate::extract::{ApiJson, ApiPatch, ApiQuery, Id};

pub fn routes() -> Router<App> {
    let mut router = Router::new()
        .route("/dids", post(create).get(list))
        .route("/dids/{id}", get(one).patch(patch));
    for action in DidAction::ALL {
        let action = *action;
        router = router.route(
            &format!("/dids/{{id}}/{}", action.name()),
            post(move |State(app): State<App>, Id(id): Id, ApiJson(input): ApiJson<DidInput>| async move {
                run(&app, id, DidChange::Transition(action), input).await
            }),
        );
    }
    router
}

#[derive(Deserialize)]
struct Filter {
    status: Option<String>,
    #[serde(default, deserialize_with = "query_num")]
    clients_id: Option<i64>,
    #[serde(default, deserialize_with = "query_search")]
    q: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn run(app: &App, id: i64, change: DidChange, input: DidInput) -> ApiResult<Json<Did>> {
    let action = DidActionRequest { id, change, input };
    Ok(Json(app.pipeline.run(action).await?))
}

async fn create(
    State(app): State<App>,
    ApiJson(input): ApiJson<DidInput>,
) -> ApiResult<(axum::http::StatusCode, Json<Did>)> {
    let Json(did) = run(&app, 0, DidChange::Create, input).await?;
    Ok(created(did))
}

async fn patch(
    State(app): State<App>,
    Id(id): Id,
    ApiPatch(input): ApiPatch<DidInput>,
) -> ApiResult<Json<Did>> {
    run(&app, id, DidChange::Patch, input).await
}

async fn list(State(app): State<App>, ApiQuery(f): ApiQuery<Filter>) -> ApiResult<Json<List<Did>>> {
    let q = DidQuery {
        status: f.status,
        clients_id: f.clients_id,
        q: f.q,
    };
    Ok(Json(app.queries.dids(&q, f.paging.page()).await?))
}

async fn one(State(app): State<App>, Id(id): Id) -> ApiResult<Json<Did>> {
    Ok(Json(app.queries.did(id).await?))
}

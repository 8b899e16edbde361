use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use billhook_app::actions::transactions::{
    ChangeTransaction, CreateTransaction, TransactionInput, TransactionPatch,
};
use billhook_app::queries::List;
use billhook_app::App;
use billhook_domain::entities::{Transaction, TransactionKind};
use serde::Deserialize;

use super::{created, query_num, ApiResult, Paging};
use crate::extract::{ApiJson, ApiPatch, ApiQuery, Id};

/// `/charges` and `/payments`: the same routes over the two kinds.
pub fn routes() -> Router<App> {
    let mut router = Router::new();
    for (kind, path) in [
        (TransactionKind::Charge, "/charges"),
        (TransactionKind::Payment, "/payments"),
    ] {
        router = router
            .route(
                path,
                post(move |State(app): State<App>, ApiJson(input): ApiJson<TransactionInput>| async move {
                    let action = CreateTransaction { kind, input };
                    ApiResult::Ok(created(app.pipeline.run(action).await?))
                })
                .get(move |State(app): State<App>, ApiQuery(f): ApiQuery<Filter>| async move {
                    list(&app, kind, f).await
                }),
            )
            .route(
                &format!("{path}/{{id}}"),
                get(move |State(app): State<App>, Id(id): Id| async move {
                    ApiResult::Ok(Json(app.queries.transaction(kind, id).await?))
                })
                .patch(
                    move |State(app): State<App>, Id(id): Id, ApiPatch(p): ApiPatch<TransactionPatch>| async move {
                        change(&app, kind, id, Some(p)).await
                    },
                )
                .delete(move |State(app): State<App>, Id(id): Id| async move {
                    change(&app, kind, id, None).await
                }),
            );
    }
    router
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default, deserialize_with = "query_num")]
    clients_id: Option<i64>,
    #[serde(flatten)]
    paging: Paging,
}

async fn list(app: &App, kind: TransactionKind, f: Filter) -> ApiResult<Json<List<Transaction>>> {
    Ok(Json(
        app.queries
            .transactions(kind, f.clients_id, f.paging.page())
            .await?,
    ))
}

async fn change(
    app: &App,
    kind: TransactionKind,
    id: i64,
    patch: Option<TransactionPatch>,
) -> ApiResult<Json<Transaction>> {
    let action = ChangeTransaction { kind, id, patch };
    Ok(Json(app.pipeline.run(action).await?))
}

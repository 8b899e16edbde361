use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use billhook_app::queries::List;
use billhook_app::rate_tables::{self, RateTableInput};
use billhook_app::App;
use billhook_domain::entities::{Rate, RateTable};
use billhook_domain::Timestamp;
use serde::Deserialize;

use super::{created, query_search, ApiResult, Paging};
use crate::extract::{ApiJson, ApiPatch, ApiQuery, Id};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/rate_tables", post(create).get(list))
        .route("/rate_tables/{id}", get(one).patch(patch).delete(delete))
        .route("/rate_tables/{id}/rates", get(rates))
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default, deserialize_with = "query_search")]
    name: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn create(
    State(app): State<App>,
    ApiJson(input): ApiJson<RateTableInput>,
) -> ApiResult<(axum::http::StatusCode, Json<RateTable>)> {
    Ok(created(rate_tables::create(&app.db, input).await?))
}

async fn list(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<Filter>,
) -> ApiResult<Json<List<RateTable>>> {
    let name = f.name.as_deref().filter(|n| !n.is_empty());
    Ok(Json(
        rate_tables::list(&app.db, name, f.paging.page()).await?,
    ))
}

async fn one(State(app): State<App>, Id(id): Id) -> ApiResult<Json<RateTable>> {
    Ok(Json(rate_tables::get(&app.db, id).await?))
}

async fn patch(
    State(app): State<App>,
    Id(id): Id,
    ApiPatch(input): ApiPatch<RateTableInput>,
) -> ApiResult<Json<RateTable>> {
    Ok(Json(rate_tables::update(&app.db, id, input).await?))
}

async fn delete(State(app): State<App>, Id(id): Id) -> ApiResult<Json<RateTable>> {
    Ok(Json(rate_tables::delete(&app.db, id).await?))
}

/// Filters of a table's rates.
#[derive(Deserialize)]
struct RateFilter {
    /// Rates whose prefix starts with these digits.
    prefix: Option<String>,
    /// The rates that would price a call to this number (longest prefix first).
    number: Option<String>,
    /// Only the rate in force at this time for each prefix (`now` for the current).
    effective_at: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn rates(
    State(app): State<App>,
    Id(id): Id,
    ApiQuery(f): ApiQuery<RateFilter>,
) -> ApiResult<Json<List<Rate>>> {
    let effective_at = match f.effective_at.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("now") => Some(Timestamp::now()),
        Some(t) => Some(parse_time(t)?),
    };
    let q = rate_tables::RateQuery {
        prefix: f.prefix.filter(|p| !p.is_empty()),
        number: f.number.filter(|n| !n.is_empty()),
        effective_at,
    };
    Ok(Json(
        rate_tables::rates(&app.db, id, q, f.paging.page()).await?,
    ))
}

fn parse_time(t: &str) -> Result<Timestamp, crate::ApiError> {
    // A bare date means its midnight (UTC), as in rate decks.
    let text = if t.len() == 10 {
        format!("{t}T00:00:00Z")
    } else {
        t.to_string()
    };
    Timestamp::parse(&text).map_err(|e| {
        crate::ApiError(billhook_app::AppError::field(
            "effective_at",
            format!("{t:?} is not a date or an RFC 3339 time: {e}"),
        ))
    })
}

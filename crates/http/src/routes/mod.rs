//! The route table.

mod accounts;
mod clients;
mod dids;
mod email_rates;
pub(crate) mod events;
pub(crate) mod handlers;
pub(crate) mod imports;
mod metrics;
mod packages;
mod rate_tables;
mod subscriptions;
mod transactions;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use billhook_app::queries::Page;
use billhook_app::{App, AppError};
use serde::Deserialize;
use serde_json::json;

use crate::auth::RequireKey;
use crate::ApiError;

/// The result of a route.
pub type ApiResult<T> = Result<T, ApiError>;

/// `limit` and `offset` of a list request.
#[derive(Debug, Deserialize, Default)]
pub struct Paging {
    #[serde(default, deserialize_with = "query_limit")]
    pub limit: Option<u32>,
    #[serde(default, deserialize_with = "query_offset")]
    pub offset: Option<u32>,
    /// What a list's filter and these two left: a misspelt filter (`handler_id`) must not
    /// answer the whole list as if it were the filtered one.
    #[serde(flatten, deserialize_with = "no_other_parameter")]
    _unknown: (),
}

/// Refuses what is left of a list's query string once its filter and the paging took
/// theirs (every list's filter flattens [`Paging`] into itself).
fn no_other_parameter<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    let left = std::collections::BTreeMap::<String, serde::de::IgnoredAny>::deserialize(d)?;
    match left.keys().next() {
        None => Ok(()),
        Some(name) => Err(serde::de::Error::custom(format!(
            "unknown parameter {name:?}: this list has no such filter"
        ))),
    }
}

/// `limit` (see [`query_num`]). Flattened into each list's filter, the paging fields
/// lose their names in serde's errors: these two say theirs.
fn query_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    named(
        query_num(d),
        "limit",
        "a whole number; a page holds at most 1000",
    )
}

/// `offset` (see [`query_limit`]).
fn query_offset<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    named(
        query_num(d),
        "offset",
        "a whole number from 0 to 4294967295",
    )
}

fn named<T, E: serde::de::Error>(r: Result<T, E>, name: &str, range: &str) -> Result<T, E> {
    r.map_err(|e| E::custom(format!("{name}: {e} ({range})")))
}

/// A number in the query string, parsed with a message naming the problem.
pub fn query_num<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
{
    query_parsed(d, |t| {
        t.parse()
            .map_err(|_| format!("{t:?} is not a valid number"))
    })
}

/// A query value parsed by `parse` (empty or absent: none), its error the 400's message.
/// Query values arrive as text (always so inside `#[serde(flatten)]`), so every typed
/// filter is read through here.
fn query_parsed<'de, D, T>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = Option::<String>::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => parse(t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// One of a type's words in the query string (empty: none). Anything else is a 400
/// rather than a filter that matches nothing: a call's status is `fail` where a
/// delivery's is `failed`, and a list left empty by a typo reads as "no failures".
pub fn query_wire<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: billhook_domain::entities::Wire,
{
    query_parsed(d, |t| {
        T::parse(t).ok_or_else(|| format!("{t:?}: {}", T::expected()))
    })
}

/// An event id in the query string (empty: none): one of the catalogue's, else a 400,
/// as for the other words: a misspelt `events_id` listed nothing, read as "none
/// happened".
pub fn query_event<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    query_checked(
        d,
        |t| billhook_domain::catalogue::find(t).is_some(),
        "an event id",
    )
}

/// A handler's event pattern in the query string (empty: none): an event id, `group.*`
/// or `*`, as a handler's `event` may be; else a 400.
pub fn query_pattern<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    query_checked(
        d,
        billhook_domain::catalogue::is_valid_pattern,
        "an event id, a group of them (`clients.*`) or `*`",
    )
}

fn query_checked<'de, D>(
    d: D,
    valid: impl Fn(&str) -> bool,
    what: &str,
) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    query_parsed(d, |t| match valid(t) {
        true => Ok(t.to_string()),
        false => Err(format!("{t:?} is not {what}")),
    })
}

/// The longest text searched for (`q`, a name), in characters. SQLite refuses a LIKE
/// pattern over 50,000 bytes (a 500), and no search needs a page of text.
const SEARCH_MAX: usize = 1000;

/// A text searched for in the query string (empty: none): at most [`SEARCH_MAX`]
/// characters, a 400 beyond.
pub fn query_search<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = Option::<String>::deserialize(d)?;
    match text {
        Some(t) if t.chars().count() > SEARCH_MAX => Err(serde::de::Error::custom(format!(
            "a search text has at most {SEARCH_MAX} characters"
        ))),
        t => Ok(t),
    }
}

/// Refuses a time window whose `to` is before its `from`: the empty list it would get
/// reads as "nothing happened then" (no failures, no events), not as the typo it is.
pub fn window(
    from: Option<billhook_domain::Timestamp>,
    to: Option<billhook_domain::Timestamp>,
) -> Result<(), ApiError> {
    match (from, to) {
        (Some(from), Some(to)) if to < from => {
            Err(ApiError::bad_request("query string: to is before from"))
        }
        _ => Ok(()),
    }
}

/// A timestamp in the query string.
pub fn query_time<'de, D>(d: D) -> Result<Option<billhook_domain::Timestamp>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    query_parsed(d, |t| {
        billhook_domain::Timestamp::parse(t).map_err(|e| format!("{t:?}: {e}"))
    })
}

impl Paging {
    /// The bounded page: limit 0 to 1000 (default 50). A limit of 0 gives no items,
    /// only the total: a count without a page to read.
    pub fn page(&self) -> Page {
        Page {
            limit: i64::from(self.limit.unwrap_or(50).min(1000)),
            offset: i64::from(self.offset.unwrap_or(0)),
        }
    }
}

/// Builds the router of the whole server.
pub fn router(app: App) -> Router {
    let api = Router::new()
        .merge(clients::routes())
        .merge(accounts::routes())
        .merge(packages::routes())
        .merge(subscriptions::routes())
        .merge(dids::routes())
        .merge(transactions::routes())
        .merge(events::routes())
        .merge(handlers::routes())
        .merge(rate_tables::routes())
        .merge(imports::routes())
        .merge(email_rates::routes())
        // Axum's default, named where the 413's message says it (the upload routes
        // set their own, which the inner layer makes win).
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::extract::BODY_LIMIT,
        ))
        .route_layer(RequireKey(app.clone()));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .merge(crate::openapi::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn healthz(axum::extract::State(app): axum::extract::State<App>) -> impl IntoResponse {
    if app.db.ping().await {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "database unavailable"})),
        )
    }
}

async fn not_found() -> ApiError {
    ApiError(AppError::NotFound("no such route".into()))
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(
            json!({"error": {"message": "method not allowed on this route", "data": {"code": "method_not_allowed"}}}),
        ),
    )
}

/// `201 Created` with the object.
pub fn created<T: serde::Serialize>(value: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(value))
}

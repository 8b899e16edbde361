//! Extractors that report malformed input in the API's error format instead of axum's
//! plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use billhook_app::input::{parse_json, parse_patch, Patch};
use billhook_app::AppError;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The limit of a JSON body: axum's default (set on the API's router with the same
/// constant), which no route's body comes near.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A body over its route's `limit` (bytes): 413.
pub fn too_large(limit: usize) -> ApiError {
    ApiError(AppError::TooLarge(format!(
        "the body is over the limit of {} MiB",
        limit >> 20
    )))
}

/// The error of a body that could not be read, with `status` the rejection's: over
/// `limit` bytes, a 413 ([`too_large`]); otherwise a 400 saying `why`.
pub fn body_error(status: StatusCode, why: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(limit);
    }
    ApiError::bad_request(why)
}

/// A JSON body; malformed JSON or wrong types give 400 `bad_request`.
pub struct ApiJson<T>(pub T);

/// A request's body, whole; one over [`BODY_LIMIT`] is a 413.
async fn body_of<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        let why = format!("cannot read the body: {}", e.body_text());
        body_error(e.status(), why, BODY_LIMIT)
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiJson(parse_json(&body_of(req, state).await?)?))
    }
}

/// A `PATCH` body: as [`ApiJson`], and `null` only for the fields that may be cleared
/// (see `billhook_app::input::parse_patch`).
pub struct ApiPatch<T>(pub T);

impl<S: Send + Sync, T: Patch> FromRequest<S> for ApiPatch<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiPatch(parse_patch(&body_of(req, state).await?)?))
    }
}

/// Query parameters; wrong types give 400 `bad_request`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // PostgreSQL text cannot hold NUL, and no filter value needs it.
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(ApiError::bad_request("NUL characters are not allowed"));
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                // axum's prefix says nothing the 400 does not.
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::bad_request(format!("query string: {text}"))
            })
    }
}

/// The integer id in the path; anything else names no object (404).
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        raw.parse::<i64>()
            .map(Id)
            .map_err(|_| ApiError(AppError::NotFound(format!("no object with id {raw:?}"))))
    }
}

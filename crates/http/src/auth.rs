//! Every `/api/` route needs `X-Api-Key: KEY` or `Authorization: Bearer KEY`.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use billhook_app::{App, AppError};

use crate::ApiError;

/// Refuses requests without a valid key with 401 `unauthorized`.
pub async fn require_key(State(app): State<App>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim);
    match key {
        Some(key) if !key.is_empty() => match app.keys.verify(key).await {
            Ok(true) => next.run(req).await,
            Ok(false) => ApiError(AppError::Unauthorized).into_response(),
            Err(e) => ApiError(e).into_response(),
        },
        _ => ApiError(AppError::Unauthorized).into_response(),
    }
}

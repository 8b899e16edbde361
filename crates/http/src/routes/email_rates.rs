//! `POST /email_rates/messages`: a raw RFC 822 message, handled like a polled one.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use billhook_app::email_rates::Report;
use billhook_app::App;

use super::ApiResult;
use crate::extract::body_error;
use crate::ApiError;

/// Rate decks are attachments; mail servers commonly cap messages at 50 MiB.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub fn routes() -> Router<App> {
    Router::new().route(
        "/email_rates/messages",
        post(ingest).layer(DefaultBodyLimit::max(MAX_MESSAGE)),
    )
}

async fn ingest(
    State(app): State<App>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Report>> {
    let body = body.map_err(|e| {
        let why = format!("cannot read the body: {}", e.body_text());
        body_error(e.status(), why, MAX_MESSAGE)
    })?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request(
            "the body must be an RFC 822 message (Content-Type: message/rfc822)",
        ));
    }
    Ok(Json(app.email_rates.ingest(&body, None).await?))
}

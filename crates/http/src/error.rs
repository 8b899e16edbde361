use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use billhook_app::AppError;
use serde_json::{json, Value};

/// An error rendered as `{"error": {"message", "data": {"code", …}}}`.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    /// A 400 `bad_request` with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError(AppError::BadRequest(message.into()))
    }
}

fn body(status: StatusCode, message: String, data: Value) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "data": data}})),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.0.to_string();
        match self.0 {
            AppError::BadRequest(_) => body(
                StatusCode::BAD_REQUEST,
                message,
                json!({"code": "bad_request"}),
            ),
            // The rest of the body is left unread, so the connection cannot carry
            // another request: saying so keeps a client from sending one on it.
            AppError::TooLarge(_) => {
                let mut r = body(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    message,
                    json!({"code": "payload_too_large"}),
                );
                r.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                r
            }
            AppError::Unauthorized => body(
                StatusCode::UNAUTHORIZED,
                message,
                json!({"code": "unauthorized"}),
            ),
            AppError::NotFound(_) => {
                body(StatusCode::NOT_FOUND, message, json!({"code": "not_found"}))
            }
            AppError::Conflict(_) => {
                body(StatusCode::CONFLICT, message, json!({"code": "conflict"}))
            }
            AppError::InvalidTransition(_) => body(
                StatusCode::CONFLICT,
                message,
                json!({"code": "invalid_transition"}),
            ),
            AppError::Validation(fields) => {
                let summary = fields
                    .0
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                body(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("validation failed: {summary}"),
                    json!({"code": "validation_failed", "fields": fields.0}),
                )
            }
            AppError::Forbidden {
                handlers_id,
                handler,
                ..
            } => body(
                StatusCode::UNPROCESSABLE_ENTITY,
                message,
                json!({"code": "forbidden_by_handler", "handlers_id": handlers_id, "handler": handler}),
            ),
            AppError::HandlerFailed {
                handlers_id,
                handler,
                ..
            } => body(
                StatusCode::UNPROCESSABLE_ENTITY,
                message,
                json!({"code": "handler_failed", "handlers_id": handlers_id, "handler": handler}),
            ),
            AppError::Internal(_) => body(
                StatusCode::INTERNAL_SERVER_ERROR,
                message,
                json!({"code": "internal"}),
            ),
        }
    }
}

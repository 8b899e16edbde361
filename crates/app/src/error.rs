use billhook_domain::FieldErrors;
use billhook_store::StoreError;

/// What went wrong with a request, in the terms of the API's error codes.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed input: bad JSON, wrong types (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// A body over the route's limit (413 `payload_too_large`).
    #[error("{0}")]
    TooLarge(String),
    /// Missing or unknown API key (401).
    #[error("a valid API key is required")]
    Unauthorized,
    /// No such object (404).
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with other data (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// The object's state forbids the action (409 `invalid_transition`).
    #[error("{0}")]
    InvalidTransition(String),
    /// Fields with invalid values (422 `validation_failed`).
    #[error("validation failed")]
    Validation(FieldErrors),
    /// A before handler forbade the action (422 `forbidden_by_handler`).
    #[error("{message}")]
    Forbidden {
        message: String,
        handlers_id: i64,
        handler: String,
    },
    /// A before handler failed and its `on_failure` is forbid (422 `handler_failed`).
    #[error("{message}")]
    HandlerFailed {
        message: String,
        handlers_id: i64,
        handler: String,
    },
    /// A bug or an unavailable database (500); details go to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// A validation error on a single field.
    pub fn field(field: &str, message: impl Into<String>) -> AppError {
        let mut errors = FieldErrors::new();
        errors.add(field, message);
        AppError::Validation(errors)
    }

    /// A 404 for `what` with `id`.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> AppError {
        AppError::NotFound(format!("{what} {id} not found"))
    }
}

impl From<FieldErrors> for AppError {
    fn from(errors: FieldErrors) -> Self {
        AppError::Validation(errors)
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        if e.is_unique_violation() {
            return AppError::Conflict("an object with these values already exists".into());
        }
        tracing::error!(error = %e, "storage failure");
        AppError::Internal(e.to_string())
    }
}

impl From<sqlx_error::Error> for AppError {
    fn from(e: sqlx_error::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// Re-exported so `?` works on raw sqlx calls made through the store's connection type.
mod sqlx_error {
    pub use billhook_store::SqlxError as Error;
}

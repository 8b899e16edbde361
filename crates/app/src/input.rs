//! Helpers for request bodies: nullable fields and required-field checks.

use serde::{Deserialize, Deserializer};

use crate::AppError;

/// For `Option<Option<T>>` fields of a PATCH: absent → `None`, `null` → `Some(None)`,
/// a value → `Some(Some(v))`. Use with `#[serde(default, deserialize_with = "nullable")]`.
pub fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The value of a field the request must give, or 422 "is required".
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, AppError> {
    value.ok_or_else(|| AppError::field(field, "is required"))
}

/// Parses a JSON body into `T`, turning any failure into 400 `bad_request` with serde's
/// message (which names the field and the expected type).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return serde_json::from_slice(b"{}")
            .map_err(|e| AppError::BadRequest(format!("a JSON body is required: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON body: {e}")))
}

//! Helpers for request bodies: nullable fields and required-field checks.

use billhook_domain::timestamp::same_time;
use billhook_domain::{FieldErrors, Timestamp};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use utoipa::openapi::{RefOr, Schema};

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

/// Parses a JSON body into `T`. Malformed JSON and wrong types are 400 `bad_request`;
/// a value of the right type that our types refuse (an amount with 7 decimals, an
/// unknown status) is 422 `validation_failed` on the field it came from.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    let body: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        body
    };
    // Every body is an object: serde's message for anything else names our type
    // ("expected struct HandlerInput") and, for an array, pointed at its first item.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AppError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    // PostgreSQL text cannot hold NUL; no billing field needs it.
    if body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(AppError::BadRequest(
            "NUL characters (\\u0000) are not allowed".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de)
        .map_err(|e| refused(e, "invalid JSON body at "))?;
    de.end()
        .map_err(|e| AppError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// What a body that does not deserialise gets: a wrong type, a missing field or no
/// object at all is 400 `bad_request` (its message after `what`: the body's, or the
/// field's); a value of the right type that our types refuse is 422 on its field.
fn refused(e: serde_path_to_error::Error<serde_json::Error>, what: &str) -> AppError {
    let field = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    let type_error = inner.classify() != serde_json::error::Category::Data
        || message.starts_with("invalid type")
        || message.starts_with("invalid length")
        || message.starts_with("missing field")
        || field == "."
        || field.is_empty();
    if type_error {
        AppError::BadRequest(format!("{what}{field}: {message}"))
    } else {
        AppError::field(&field, message)
    }
}

/// Refuses what a PATCH body holds beyond the fields it sets (`rest`): a field of the
/// object with a value other than its current one in `current` (it was ignored, with a
/// 200, and the caller took the change as made; `hint` may say what changes it), or a
/// field the object does not have. A field sent back as it was read passes, as does any
/// time as `updated_at` (a body read a moment ago, and changed since) and `created_at` as
/// the same instant written otherwise; an `id` other than the object's, or a time that
/// is none, is refused like any other change (they passed with a 200). 422 naming each
/// field.
pub fn only_settable(
    rest: &Map<String, Value>,
    current: &Value,
    hint: impl Fn(&str) -> Option<&'static str>,
) -> Result<(), AppError> {
    refuse_fields(rest, |key, sent| match current.get(key) {
        Some(now) if now == sent => None,
        Some(_) if key == "updated_at" && Timestamp::of_json(sent).is_some() => None,
        Some(now) if key == "created_at" && same_time(now, sent) => None,
        Some(_) => Some(hint(key).unwrap_or("cannot be changed by a PATCH").into()),
        None => Some(NOT_A_FIELD.into()),
    })
}

/// Makes a create's object with `make` and refuses what the body holds beyond the
/// fields it sets (`rest`): a field the object does not have, 422 naming each (it was
/// ignored, with a 201, and a misspelt setting silently took its default), beside the
/// fields `make` refuses (a required one it lacks): `client_id` with "clients_id is
/// required", not the second alone. The object's read-only fields pass, so that a body
/// read and sent back makes a copy, if their values are ones the object can hold:
/// `"id": "abc"` is refused as it would be in a field the create sets (it passed).
pub fn only_fields<T>(
    rest: &Map<String, Value>,
    make: impl FnOnce() -> Result<T, AppError>,
) -> Result<T, AppError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + utoipa::PartialSchema,
{
    only_fields_hinted(rest, |_| None, make)
}

/// [`only_fields`], with `hint` saying more of a field the object does not have.
pub fn only_fields_hinted<T>(
    rest: &Map<String, Value>,
    hint: impl Fn(&str) -> Option<&'static str>,
    make: impl FnOnce() -> Result<T, AppError>,
) -> Result<T, AppError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + utoipa::PartialSchema,
{
    // Most bodies hold nothing else.
    if rest.is_empty() {
        return make();
    }
    let RefOr::T(Schema::Object(object)) = T::schema() else {
        return Err(AppError::Internal("an object's schema is an object".into()));
    };
    let mut errors = FieldErrors::new();
    for key in rest.keys().filter(|k| !object.properties.contains_key(*k)) {
        errors.add(key, hint(key).unwrap_or(NOT_A_FIELD));
    }
    let made = match make() {
        Ok(made) => made,
        Err(AppError::Validation(more)) => {
            errors.0.extend(more.0);
            return Err(AppError::Validation(errors));
        }
        Err(other) => return Err(other),
    };
    errors.into_result()?;
    // The object with the read-only values sent in place of its own, read back as one.
    // A null is no value (a blank template's `"id": null` passes, as it did).
    let Value::Object(mut fields) = crate::pipeline::to_json(&made)? else {
        return Err(AppError::Internal(
            "an object is written as a JSON object".into(),
        ));
    };
    let sent = rest.iter().filter(|(_, v)| !v.is_null());
    fields.extend(sent.map(|(k, v)| (k.clone(), v.clone())));
    serde_path_to_error::deserialize::<_, T>(Value::Object(fields))
        .map_err(|e| refused(e, "read-only field "))?;
    Ok(made)
}

const NOT_A_FIELD: &str = "is not a field of this object";

/// A 422 naming each field of `rest` that `why` refuses, with its reason.
pub fn refuse_fields(
    rest: &Map<String, Value>,
    why: impl Fn(&str, &Value) -> Option<String>,
) -> Result<(), AppError> {
    let mut errors = FieldErrors::new();
    for (key, sent) in rest {
        if let Some(message) = why(key, sent) {
            errors.add(key, message);
        }
    }
    Ok(errors.into_result()?)
}

/// The body of a `PATCH`: which of its fields may be `null` (cleared).
pub trait Patch: serde::de::DeserializeOwned {
    const NULLABLE: &'static [&'static str];
    /// The fields of the body this PATCH does not set.
    fn rest(&self) -> &Map<String, Value>;
}

/// Parses a `PATCH` body as [`parse_json`] does, and refuses `null` for a field not in
/// `T::NULLABLE`, a 422 naming each "cannot be null": it was read as absent, and the
/// 200 left the caller believing the field cleared.
pub fn parse_patch<T: Patch>(body: &[u8]) -> Result<T, AppError> {
    let patch = parse_json::<T>(body)?;
    // What parse_json took is a JSON object (or blank: nothing to refuse). A field the
    // body does not set (in its `rest`) is left to `only_settable`, which says whether
    // the object has it at all: `{"emial": null}` is a typo, not a null.
    if let Ok(fields) = serde_json::from_slice::<Map<String, Value>>(body) {
        refuse_fields(&fields, |key, sent| {
            let settable = !patch.rest().contains_key(key);
            (sent.is_null() && settable && !T::NULLABLE.contains(&key))
                .then(|| "cannot be null".into())
        })?;
    }
    Ok(patch)
}

/// A PATCH field that cannot be empty: absent is `None`; `null` is an error on `field`
/// in `errors` (and `None`), not a change quietly not made.
pub fn not_null<T>(value: Option<Option<T>>, field: &str, errors: &mut FieldErrors) -> Option<T> {
    match value {
        Some(None) => {
            errors.add(field, "cannot be null".to_string());
            None
        }
        Some(v) => v,
        None => None,
    }
}

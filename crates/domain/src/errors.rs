//! Validation errors reported per field, as the API's 422 `validation_failed` carries them.

use std::collections::BTreeMap;

/// Messages keyed by the name of the field they concern. Empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    /// An empty set of errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` for `field`; the first message of a field wins because it is
    /// usually the most basic problem (missing before malformed).
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_insert_with(|| message.into());
    }

    /// True when no field has an error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, else the errors themselves.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// Checks a required human-readable name: non-blank and at most 255 characters.
pub fn check_name(errors: &mut FieldErrors, field: &str, value: &str) {
    if value.trim().is_empty() {
        errors.add(field, "must not be empty");
    } else if value.chars().count() > 255 {
        errors.add(field, "must be at most 255 characters");
    }
}

/// Checks an ISO 4217 currency code shape: three upper-case Latin letters.
pub fn check_currency(errors: &mut FieldErrors, field: &str, value: &str) {
    if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.add(field, "must be an ISO 4217 code such as USD");
    }
}

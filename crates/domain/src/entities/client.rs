use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::errors::{check_currency, check_name};
use crate::{wire_enum, FieldErrors, Money, Timestamp};

wire_enum!(
    /// Whether a client may be served.
    ClientStatus { Active => "active", Blocked => "blocked", Archived => "archived" }
);

/// A customer of the operator; `balance` = payments − charges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Client {
    pub id: i64,
    pub name: String,
    pub status: ClientStatus,
    pub currency: String,
    pub balance: Money,
    pub credit: Money,
    pub email: Option<String>,
    pub tags: Vec<String>,
    pub custom_fields: Map<String, Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Client {
    /// The fields a request may set; everything else is read-only.
    pub const WRITABLE: &'static [&'static str] = &[
        "name",
        "status",
        "currency",
        "credit",
        "email",
        "tags",
        "custom_fields",
    ];

    /// Checks the rules every stored client obeys.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        check_name(&mut errors, "name", &self.name);
        check_currency(&mut errors, "currency", &self.currency);
        if self.credit.micros() < 0 {
            errors.add("credit", "must not be negative");
        }
        if let Some(email) = &self.email {
            check_email(&mut errors, email);
        }
        for tag in &self.tags {
            if tag.trim().is_empty() || tag.chars().count() > 64 {
                errors.add("tags", "each tag must be 1 to 64 characters");
            }
        }
        check_custom_fields(&mut errors, &self.custom_fields);
        errors.into_result()
    }
}

fn check_email(errors: &mut FieldErrors, email: &str) {
    let valid = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if !valid {
        errors.add("email", "must be an email address");
    }
}

/// Custom fields are free-form, but keys must be usable as identifiers by handlers.
pub fn check_custom_fields(errors: &mut FieldErrors, fields: &Map<String, Value>) {
    for key in fields.keys() {
        let ok = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !ok {
            errors.add(
                "custom_fields",
                format!("key {key:?} must be 1 to 64 letters, digits, '_', '-' or '.'"),
            );
        }
    }
}

use serde::{Deserialize, Serialize};

use crate::errors::{check_currency, check_name};
use crate::{wire_enum, FieldErrors, IsoDuration, Money, Timestamp};

wire_enum!(
    /// An archived package takes no new subscriptions.
    PackageStatus { Active => "active", Archived => "archived" }
);

/// A recurring service with a fee charged every period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Package {
    pub id: i64,
    pub name: String,
    pub period: IsoDuration,
    pub fee: Money,
    pub currency: String,
    pub status: PackageStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Package {
    /// Checks the rules every stored package obeys.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        check_name(&mut errors, "name", &self.name);
        check_currency(&mut errors, "currency", &self.currency);
        if self.fee.micros() < 0 {
            errors.add("fee", "must not be negative");
        }
        errors.into_result()
    }
}

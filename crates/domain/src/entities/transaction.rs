use serde::{Deserialize, Serialize};

use crate::{wire_enum, FieldErrors, Money, Timestamp};

wire_enum!(
    /// Charges lower the balance, payments raise it.
    TransactionKind { Charge => "charge", Payment => "payment" }
);

impl TransactionKind {
    /// The sign this kind gives to the client's balance.
    pub fn balance_delta(self, amount: Money) -> Money {
        match self {
            TransactionKind::Charge => Money::from_micros(-amount.micros()),
            TransactionKind::Payment => amount,
        }
    }

    /// The event group: `accounting.charges` or `accounting.payments`.
    pub fn event_prefix(self) -> &'static str {
        match self {
            TransactionKind::Charge => "accounting.charges",
            TransactionKind::Payment => "accounting.payments",
        }
    }
}

/// A charge or a payment of a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transaction {
    pub id: i64,
    pub clients_id: i64,
    pub amount: Money,
    pub dt: Timestamp,
    pub notes: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Transaction {
    /// The fields a request may set (`clients_id` only on create).
    pub const WRITABLE: &'static [&'static str] = &["clients_id", "amount", "dt", "notes"];

    /// Checks the rules every stored transaction obeys.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        if self.amount.micros() <= 0 {
            errors.add("amount", "must be greater than zero");
        }
        if self
            .notes
            .as_ref()
            .is_some_and(|n| n.chars().count() > 4000)
        {
            errors.add("notes", "must be at most 4000 characters");
        }
        errors.into_result()
    }
}

use serde::{Deserialize, Serialize};

use crate::{wire_enum, FieldErrors, Timestamp};

wire_enum!(
    /// Where a phone number is in its life.
    DidStatus {
        Stock => "stock",
        Reserved => "reserved",
        Active => "active",
        Blocked => "blocked",
        Hold => "hold",
        Archived => "archived",
    }
);

/// The status-changing requests on a DID, each with its own event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DidAction {
    Reserve,
    Activate,
    Block,
    Hold,
    Stock,
    Archive,
}

impl DidAction {
    /// Every action, for tests and tables.
    pub const ALL: &'static [DidAction] = &[
        DidAction::Reserve,
        DidAction::Activate,
        DidAction::Block,
        DidAction::Hold,
        DidAction::Stock,
        DidAction::Archive,
    ];

    /// The event raised by this action.
    pub fn event(self) -> &'static str {
        match self {
            DidAction::Reserve => "dids.reserve",
            DidAction::Activate => "dids.activate",
            DidAction::Block => "dids.block",
            DidAction::Hold => "dids.hold",
            DidAction::Stock => "dids.stock",
            DidAction::Archive => "dids.archive",
        }
    }

    /// The request's name in the URL.
    pub fn name(self) -> &'static str {
        &self.event()["dids.".len()..]
    }

    /// The status this action leads to.
    pub fn target(self) -> DidStatus {
        match self {
            DidAction::Reserve => DidStatus::Reserved,
            DidAction::Activate => DidStatus::Active,
            DidAction::Block => DidStatus::Blocked,
            DidAction::Hold => DidStatus::Hold,
            DidAction::Stock => DidStatus::Stock,
            DidAction::Archive => DidStatus::Archived,
        }
    }

    /// The action that leads to `status` (used when a hold ends).
    pub fn leading_to(status: DidStatus) -> Option<DidAction> {
        DidAction::ALL
            .iter()
            .copied()
            .find(|a| a.target() == status)
    }

    /// The spec's transition table: whether the action is allowed from `from`.
    pub fn allowed_from(self, from: DidStatus) -> bool {
        use DidStatus::*;
        match self {
            DidAction::Reserve => matches!(from, Stock | Hold | Blocked | Active),
            DidAction::Activate => matches!(from, Stock | Reserved),
            DidAction::Block => matches!(from, Active),
            DidAction::Hold => matches!(from, Active | Blocked),
            DidAction::Stock => matches!(from, Reserved | Hold | Blocked),
            DidAction::Archive => matches!(from, Stock | Reserved | Hold),
        }
    }
}

/// A phone number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Did {
    pub id: i64,
    pub number: String,
    pub status: DidStatus,
    pub clients_id: Option<i64>,
    pub accounts_id: Option<i64>,
    pub hold_until: Option<Timestamp>,
    pub status_after_hold: Option<DidStatus>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Did {
    /// The fields a request may set.
    pub const WRITABLE: &'static [&'static str] = &[
        "number",
        "clients_id",
        "accounts_id",
        "hold_until",
        "status_after_hold",
    ];

    /// Checks the rules every stored DID obeys.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        if !is_e164(&self.number) {
            errors.add("number", "must be an E.164 number such as +14155550123");
        }
        if self.accounts_id.is_some() && self.clients_id.is_none() {
            errors.add("accounts_id", "needs clients_id");
        }
        if matches!(self.status, DidStatus::Active | DidStatus::Blocked)
            && self.clients_id.is_none()
        {
            errors.add("clients_id", "is required for an active or blocked DID");
        }
        errors.into_result()
    }
}

/// `+` then 2 to 15 digits, the first not zero (ITU-T E.164).
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use DidStatus::*;

    #[test]
    fn transition_table_is_the_specs() {
        let table = [
            (DidAction::Reserve, vec![Stock, Hold, Blocked, Active]),
            (DidAction::Activate, vec![Stock, Reserved]),
            (DidAction::Block, vec![Active]),
            (DidAction::Hold, vec![Active, Blocked]),
            (DidAction::Stock, vec![Reserved, Hold, Blocked]),
            (DidAction::Archive, vec![Stock, Reserved, Hold]),
        ];
        for (action, allowed) in table {
            for from in DidStatus::ALL {
                assert_eq!(
                    action.allowed_from(*from),
                    allowed.contains(from),
                    "{action:?} from {from:?}"
                );
            }
        }
    }

    #[test]
    fn e164() {
        assert!(is_e164("+14155550123"));
        assert!(!is_e164("14155550123"));
        assert!(!is_e164("+0123"));
        assert!(!is_e164("+1234567890123456"));
    }
}

use serde::{Deserialize, Serialize};

use crate::{wire_enum, Timestamp};

wire_enum!(
    /// The life of a subscription: assigned (pending), running (active), paused
    /// (inactive), ended (closed).
    SubscriptionStatus {
        Pending => "pending",
        Active => "active",
        Inactive => "inactive",
        Closed => "closed",
    }
);

/// The status-changing requests on a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionAction {
    Activate,
    Deactivate,
    Renew,
    Close,
}

impl SubscriptionAction {
    /// The event raised by this action.
    pub fn event(self) -> &'static str {
        match self {
            SubscriptionAction::Activate => "clients.subscriptions.activate",
            SubscriptionAction::Deactivate => "clients.subscriptions.deactivate",
            SubscriptionAction::Renew => "clients.subscriptions.renew",
            SubscriptionAction::Close => "clients.subscriptions.close",
        }
    }

    /// The request's name in the URL.
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionAction::Activate => "activate",
            SubscriptionAction::Deactivate => "deactivate",
            SubscriptionAction::Renew => "renew",
            SubscriptionAction::Close => "close",
        }
    }

    /// The status after the action, or `None` when `from` forbids it.
    pub fn target(self, from: SubscriptionStatus) -> Option<SubscriptionStatus> {
        use SubscriptionStatus::*;
        match (self, from) {
            (SubscriptionAction::Activate, Pending | Inactive) => Some(Active),
            (SubscriptionAction::Deactivate, Active) => Some(Inactive),
            (SubscriptionAction::Renew, Active) => Some(Active),
            (SubscriptionAction::Close, Pending | Active | Inactive) => Some(Closed),
            _ => None,
        }
    }
}

/// A package assigned to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: i64,
    pub clients_id: i64,
    pub packages_id: i64,
    pub status: SubscriptionStatus,
    pub start_dt: Timestamp,
    pub period_start: Option<Timestamp>,
    pub period_end: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus::*;

    #[test]
    fn transitions_follow_the_spec() {
        for from in SubscriptionStatus::ALL {
            let expect_activate = matches!(from, Pending | Inactive);
            assert_eq!(
                SubscriptionAction::Activate.target(*from).is_some(),
                expect_activate
            );
            assert_eq!(
                SubscriptionAction::Close.target(*from).is_some(),
                *from != Closed
            );
            assert_eq!(
                SubscriptionAction::Renew.target(*from).is_some(),
                *from == Active
            );
            assert_eq!(
                SubscriptionAction::Deactivate.target(*from).is_some(),
                *from == Active
            );
        }
    }
}

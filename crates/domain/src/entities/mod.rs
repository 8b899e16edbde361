//! The billing objects as the API shows them and handlers receive them.

mod account;
mod client;
mod did;
mod handler;
mod import;
mod package;
mod rate_table;
mod subscription;
mod transaction;

pub use account::{Account, AuthType};
pub use client::{Client, ClientStatus};
pub use did::{Did, DidAction, DidStatus};
pub use handler::{
    check_script_name, CallStatus, DeliveryStatus, Handler, HandlerStatus, HandlerType, OnFailure,
    DEFAULT_RETRY_SCHEDULE, MAX_RETRY_DELAY_S, MAX_TIMEOUT_MS, RETRY_SCHEDULE_RULE,
};
pub use import::{Import, ImportError, ImportKind, ImportStatus};
pub use package::{Package, PackageStatus};
pub use rate_table::{Rate, RateTable};
pub use subscription::{Subscription, SubscriptionAction, SubscriptionStatus};
pub use transaction::{Transaction, TransactionKind};

/// Declares a string enum with its wire names, `as_str` and `parse` so that the database
/// and the API share one spelling.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses the wire spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }

            /// The accepted spellings, for error messages.
            pub fn expected() -> String {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                format!("must be one of: {}", names.join(", "))
            }
        }

        impl $crate::entities::Wire for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn parse(s: &str) -> Option<Self> {
                $name::parse(s)
            }
            fn expected() -> String {
                $name::expected()
            }
        }
    };
}

/// A value spelled as one of a few fixed words on the wire and in the database: what
/// [`wire_enum!`] declares, for code that takes any of them (a query filter).
pub trait Wire: Sized + Copy {
    /// The wire spelling.
    fn as_str(self) -> &'static str;
    /// Parses the wire spelling.
    fn parse(s: &str) -> Option<Self>;
    /// The accepted spellings, for error messages.
    fn expected() -> String;
}

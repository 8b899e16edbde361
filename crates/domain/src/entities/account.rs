use serde::{Deserialize, Serialize};

use crate::errors::check_name;
use crate::{wire_enum, FieldErrors, Timestamp};

wire_enum!(
    /// How the softswitch recognises calls of this account.
    AuthType { Ip => "ip", Name => "name", Ani => "ani" }
);

/// A client's VoIP account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    pub id: i64,
    pub clients_id: i64,
    pub name: String,
    pub auth_type: AuthType,
    pub ips: Vec<String>,
    pub login: Option<String>,
    pub password: Option<String>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Account {
    /// The fields a request may set (`clients_id` only on create).
    pub const WRITABLE: &'static [&'static str] = &[
        "clients_id",
        "name",
        "auth_type",
        "ips",
        "login",
        "password",
        "enabled",
    ];

    /// Checks the rules every stored account obeys.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        check_name(&mut errors, "name", &self.name);
        for ip in &self.ips {
            if !is_ip_or_cidr(ip) {
                errors.add("ips", format!("{ip:?} is not an IP address or CIDR block"));
            }
        }
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        match self.auth_type {
            AuthType::Ip if self.ips.is_empty() => errors.add(
                "ips",
                "at least one IP address is required for auth_type ip",
            ),
            AuthType::Name => {
                if blank(&self.login) {
                    errors.add("login", "is required for auth_type name");
                }
                if blank(&self.password) {
                    errors.add("password", "is required for auth_type name");
                }
            }
            AuthType::Ani if blank(&self.login) => {
                errors.add("login", "is required for auth_type ani (the caller number)")
            }
            _ => {}
        }
        errors.into_result()
    }
}

fn is_ip_or_cidr(s: &str) -> bool {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|b| b.parse::<u8>().is_ok_and(|n| n <= max))
}

use serde::{Deserialize, Serialize};

use crate::errors::{check_currency, check_name};
use crate::{FieldErrors, Money, Timestamp};

/// A price list; decks arriving by email are matched to it by sender and subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateTable {
    pub id: i64,
    pub name: String,
    pub currency: String,
    /// A regular expression over the sender's address; without it the table takes no
    /// email.
    pub email_sender: Option<String>,
    /// A regular expression over the subject; without it any subject matches.
    pub email_subject: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Longer patterns are refused: they are a mistake, and a regex of that size costs
/// memory to compile on every message.
const MAX_PATTERN: usize = 1000;

impl RateTable {
    /// Checks the rules every stored rate table obeys; the patterns must compile.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        check_name(&mut errors, "name", &self.name);
        check_currency(&mut errors, "currency", &self.currency);
        for (field, pattern) in [
            ("email_sender", &self.email_sender),
            ("email_subject", &self.email_subject),
        ] {
            if let Some(p) = pattern {
                if p.len() > MAX_PATTERN {
                    errors.add(field, "must be at most 1000 characters");
                } else if let Err(e) = compile(p) {
                    errors.add(field, format!("is not a valid regular expression: {e}"));
                }
            }
        }
        errors.into_result()
    }

    /// True when a message from `sender` with `subject` is meant for this table: the
    /// sender pattern is required, the subject pattern optional; both are searched
    /// case-insensitively anywhere in the text (anchor them with `^…$` to be strict).
    pub fn matches_email(&self, sender: &str, subject: &str) -> bool {
        let Some(sender_pattern) = self.email_sender.as_deref().filter(|p| !p.is_empty()) else {
            return false;
        };
        let sender_ok = compile(sender_pattern).is_ok_and(|r| r.is_match(sender));
        let subject_ok = match self.email_subject.as_deref().filter(|p| !p.is_empty()) {
            None => true,
            Some(p) => compile(p).is_ok_and(|r| r.is_match(subject)),
        };
        sender_ok && subject_ok
    }
}

fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
}

/// One price of a rate table: calls to numbers starting with `prefix` cost `rate` per
/// minute from `effective_from` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rate {
    pub id: i64,
    pub rate_tables_id: i64,
    pub prefix: String,
    pub rate: Money,
    pub effective_from: Timestamp,
    pub imports_id: Option<i64>,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(sender: Option<&str>, subject: Option<&str>) -> RateTable {
        RateTable {
            id: 1,
            name: "A-Z".into(),
            currency: "USD".into(),
            email_sender: sender.map(String::from),
            email_subject: subject.map(String::from),
            created_at: Timestamp::from_micros(0),
            updated_at: Timestamp::from_micros(0),
        }
    }

    #[test]
    fn patterns_are_validated() {
        assert!(table(Some("rates@carrier\\.example"), Some("^Rate"))
            .validate()
            .is_ok());
        let e = table(Some("(unclosed"), None).validate().unwrap_err();
        assert!(e.0["email_sender"].contains("regular expression"));
    }

    #[test]
    fn matching_needs_a_sender_pattern() {
        assert!(!table(None, None).matches_email("a@b.example", "x"));
        let t = table(Some("@carrier-a\\.example$"), Some("rate update"));
        assert!(t.matches_email("rates@carrier-a.example", "Rate Update A-Z"));
        assert!(!t.matches_email("rates@carrier-b.example", "Rate Update A-Z"));
        assert!(!t.matches_email("rates@carrier-a.example", "Invoice"));
        assert!(table(Some("carrier"), None).matches_email("x@carrier.example", ""));
    }
}

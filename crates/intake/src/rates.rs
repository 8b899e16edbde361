//! Rate decks: `prefix`, `rate` and an optional `effective_from` per row.
//!
//! Carriers name these columns in many ways, hence the aliases. Values are
//! checked strictly, because a wrong rate is billed silently: a comma decimal
//! such as `0,0068` is refused rather than guessed, since in a `;`-separated
//! file it is indistinguishable from a typo and in a `,`-separated one it would
//! have split the field.

use std::io::Read;

use billhook_domain::money::MoneyError;
use billhook_domain::{Money, Timestamp};

use crate::csv_file::{Columns, CsvRows, HeaderError, Record, RowError};

/// The columns of a rate deck.
pub const RATE_COLUMNS: Columns<'static> = Columns {
    required: &["prefix", "rate"],
    optional: &["effective_from"],
    aliases: &[
        ("code", "prefix"),
        ("dial_code", "prefix"),
        ("destination_code", "prefix"),
        ("price", "rate"),
        ("cost", "rate"),
        ("effective_date", "effective_from"),
        ("date", "effective_from"),
        ("effective", "effective_from"),
    ],
};

/// Longest prefix accepted: longer than any E.164 number, so a longer value is
/// a mistake (a whole number with extra digits, or two cells run together).
const MAX_PREFIX_DIGITS: usize = 20;

/// One row of a rate deck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRow {
    /// 1 to 20 ASCII digits, without the `+` some decks put in front.
    pub prefix: String,
    /// Price per unit (the unit is the tariff's business), never negative.
    pub rate: Money,
    /// From when the rate applies; `None` when the column is absent or empty.
    pub effective_from: Option<Timestamp>,
}

/// Iterator over the rows of a rate deck; see [`rates`].
#[derive(Debug)]
pub struct RateRows<R: Read> {
    rows: CsvRows<R>,
    prefix: usize,
    rate: usize,
    effective_from: Option<usize>,
}

/// Reads a rate deck, one [`RateRow`] or [`RowError`] per non-blank record.
pub fn rates<R: Read>(reader: R) -> Result<RateRows<R>, HeaderError> {
    let rows = CsvRows::new(reader, &RATE_COLUMNS)?;
    // CsvRows guarantees the required columns are there.
    let index = |name: &str| {
        rows.index_of(name).ok_or_else(|| HeaderError {
            message: format!("missing required column {name:?}"),
        })
    };
    Ok(RateRows {
        prefix: index("prefix")?,
        rate: index("rate")?,
        effective_from: rows.index_of("effective_from"),
        rows,
    })
}

impl<R: Read> Iterator for RateRows<R> {
    type Item = Result<RateRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.rows.next()? {
            Ok(record) => record,
            Err(e) => return Some(Err(e)),
        };
        Some(self.convert(record))
    }
}

impl<R: Read> RateRows<R> {
    /// Checks every field so the user sees all of a row's problems at once.
    fn convert(&self, record: Record) -> Result<RateRow, RowError> {
        let value = |index: usize| record.values[index].as_str();
        let prefix = parse_prefix(value(self.prefix));
        let rate = parse_rate(value(self.rate));
        let effective_from = match self.effective_from {
            Some(index) => parse_effective_from(value(index)),
            None => Ok(None),
        };
        match (prefix, rate, effective_from) {
            (Ok(prefix), Ok(rate), Ok(effective_from)) => Ok(RateRow {
                prefix,
                rate,
                effective_from,
            }),
            (prefix, rate, effective_from) => {
                let message = [prefix.err(), rate.err(), effective_from.err()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(RowError {
                    line: record.line,
                    message,
                })
            }
        }
    }
}

fn parse_prefix(text: &str) -> Result<String, String> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if text.is_empty() {
        return Err("prefix: is required".into());
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("prefix: must contain digits only".into());
    }
    if digits.len() > MAX_PREFIX_DIGITS {
        return Err(format!(
            "prefix: must be at most {MAX_PREFIX_DIGITS} digits"
        ));
    }
    Ok(digits.to_owned())
}

fn parse_rate(text: &str) -> Result<Money, String> {
    if text.is_empty() {
        return Err("rate: is required".into());
    }
    match Money::parse(text) {
        Ok(rate) if rate.is_negative() => Err(format!("rate: {text:?} must not be negative")),
        Ok(rate) => Ok(rate),
        Err(MoneyError::TooManyDecimals) => {
            Err(format!("rate: {text:?} has more than 6 decimal places"))
        }
        Err(MoneyError::OutOfRange) => Err(format!("rate: {text:?} is out of range")),
        Err(MoneyError::Invalid) => Err(format!("rate: {text:?} is not a decimal number")),
    }
}

/// `YYYY-MM-DD` (midnight UTC), `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339.
fn parse_effective_from(text: &str) -> Result<Option<Timestamp>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = if text.len() == 19 && text.as_bytes()[10] == b' ' {
        // The spreadsheet form; the domain parser wants RFC 3339.
        Timestamp::parse(&format!("{}T{}Z", &text[..10], &text[11..]))
    } else {
        Timestamp::parse(text)
    };
    parsed.map(Some).map_err(|_| {
        format!(
            "effective_from: {text:?} is not a date \
             (use YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or RFC 3339)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix() {
        assert_eq!(parse_prefix("+44"), Ok("44".into()));
        assert_eq!(parse_prefix("0044").unwrap(), "0044");
        assert_eq!(
            parse_prefix("44 20").unwrap_err(),
            "prefix: must contain digits only"
        );
        assert_eq!(
            parse_prefix("+").unwrap_err(),
            "prefix: must contain digits only"
        );
        assert_eq!(parse_prefix("").unwrap_err(), "prefix: is required");
        assert!(parse_prefix(&"1".repeat(21)).is_err());
        assert!(parse_prefix(&"1".repeat(20)).is_ok());
    }

    #[test]
    fn rate() {
        assert_eq!(parse_rate("0.0068"), Ok(Money::from_micros(6_800)));
        assert_eq!(parse_rate("0"), Ok(Money::ZERO));
        assert_eq!(
            parse_rate("0,0068").unwrap_err(),
            r#"rate: "0,0068" is not a decimal number"#
        );
        assert_eq!(
            parse_rate("0.1234567").unwrap_err(),
            r#"rate: "0.1234567" has more than 6 decimal places"#
        );
        assert!(parse_rate("-1").unwrap_err().contains("negative"));
        assert!(parse_rate("1e-3").is_err());
    }

    #[test]
    fn effective_from() {
        let day = Timestamp::parse("2025-03-01T00:00:00Z").unwrap();
        assert_eq!(parse_effective_from("2025-03-01"), Ok(Some(day)));
        assert_eq!(
            parse_effective_from("2025-03-01 12:30:00"),
            Ok(Some(day.add_seconds(12 * 3600 + 30 * 60)))
        );
        assert_eq!(
            parse_effective_from("2025-03-01T02:00:00+02:00"),
            Ok(Some(day))
        );
        assert_eq!(parse_effective_from(""), Ok(None));
        assert!(parse_effective_from("01/03/2025").is_err());
        assert!(parse_effective_from("2025-02-30").is_err());
        // Multi-byte text of the right length must not panic on slicing.
        assert!(parse_effective_from("2025-03-0é 12:30:0").is_err());
    }
}

//! Exact monetary amounts.
//!
//! Money is stored as a whole number of micro-units (one millionth of a currency
//! unit) so that rating and summing never suffer from binary floating point
//! rounding. Six decimal places are enough for per-second and per-kilobyte tariffs
//! while still leaving a range of ±9.2e12 units in an `i64`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of micro-units in one currency unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// Largest absolute amount, in whole units, that [`Money::parse`] accepts.
///
/// Anything bigger is almost certainly a typo or an attack, and keeping a wide
/// margin below `i64::MAX` micros means sums of a few thousand such amounts
/// cannot overflow.
pub const MAX_ABS_UNITS: i64 = 1_000_000_000_000;

/// `MAX_ABS_UNITS` expressed in micro-units.
const MAX_ABS_MICROS: u64 = MAX_ABS_UNITS.unsigned_abs() * MICROS_PER_UNIT.unsigned_abs();

/// Maximum number of fractional digits a textual amount may carry.
const MAX_FRACTION_DIGITS: usize = 6;

/// Why a textual amount was rejected.
///
/// The `Display` text is short and meant to be shown to API clients as a
/// validation message for the offending field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not of the form `[+-]digits[.digits]`.
    #[error("must be a decimal number")]
    Invalid,
    /// More than six fractional digits: would need rounding, which we refuse to do
    /// silently.
    #[error("at most 6 decimal places")]
    TooManyDecimals,
    /// Absolute value above [`MAX_ABS_UNITS`].
    #[error("out of range")]
    OutOfRange,
}

/// An exact amount of money in micro-units (1 unit = 1 000 000 micros).
///
/// The currency is not part of the value; it is carried by whatever owns the
/// amount (account, tariff, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);

    /// Builds an amount from a number of micro-units.
    pub const fn from_micros(micros: i64) -> Money {
        Money(micros)
    }

    /// The amount in micro-units.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Sum, or `None` on `i64` overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// Difference, or `None` on `i64` overflow.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    /// Negation, or `None` for `i64::MIN` micros (which has no positive counterpart).
    pub fn checked_neg(self) -> Option<Money> {
        self.0.checked_neg().map(Money)
    }

    /// `true` if strictly greater than zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `true` if strictly less than zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// `true` if exactly zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses an exact decimal such as `12.5`, `-0.0075` or `+3`.
    ///
    /// Grammar: optional `+`/`-`, one or more ASCII digits, optionally followed by
    /// `.` and one to six ASCII digits. Whitespace, exponents, `NaN`, `inf`, a bare
    /// `.5` or `5.` are rejected, as are amounts whose absolute value exceeds
    /// [`MAX_ABS_UNITS`]. `-0` parses as zero.
    pub fn parse(s: &str) -> Result<Money, MoneyError> {
        let bytes = s.as_bytes();
        let (negative, rest) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            Some(b'+') => (false, &bytes[1..]),
            _ => (false, bytes),
        };

        // Split and validate the whole syntax first so that e.g. "1.1234567e5" is
        // reported as malformed rather than as having too many decimals.
        let (int_digits, frac_digits) = match rest.iter().position(|&b| b == b'.') {
            Some(dot) => (&rest[..dot], Some(&rest[dot + 1..])),
            None => (rest, None),
        };
        if int_digits.is_empty() || !int_digits.iter().all(u8::is_ascii_digit) {
            return Err(MoneyError::Invalid);
        }
        let frac_digits = match frac_digits {
            Some(f) if f.is_empty() || !f.iter().all(u8::is_ascii_digit) => {
                return Err(MoneyError::Invalid)
            }
            Some(f) => f,
            None => &[][..],
        };
        if frac_digits.len() > MAX_FRACTION_DIGITS {
            return Err(MoneyError::TooManyDecimals);
        }

        // Leading zeros are harmless but must not count towards the length check
        // that protects the accumulator below from overflowing.
        let first_significant = int_digits
            .iter()
            .position(|&b| b != b'0')
            .unwrap_or(int_digits.len());
        let significant = &int_digits[first_significant..];
        // MAX_ABS_UNITS itself has 13 digits, so anything longer is out of range;
        // 13-digit values still fit a u64 once scaled to micros and are checked
        // exactly below.
        if significant.len() > 13 {
            return Err(MoneyError::OutOfRange);
        }
        let units = significant
            .iter()
            .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0'));

        let mut fraction = frac_digits
            .iter()
            .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0'));
        for _ in frac_digits.len()..MAX_FRACTION_DIGITS {
            fraction *= 10;
        }

        let abs = units * MICROS_PER_UNIT.unsigned_abs() + fraction;
        if abs > MAX_ABS_MICROS {
            return Err(MoneyError::OutOfRange);
        }
        // abs <= 1e18 < i64::MAX, so the conversion cannot fail.
        let abs = i64::try_from(abs).map_err(|_| MoneyError::OutOfRange)?;
        Ok(Money(if negative { -abs } else { abs }))
    }
}

impl std::ops::Neg for Money {
    type Output = Money;

    /// Negates the amount.
    ///
    /// # Panics
    ///
    /// For `i64::MIN` micros, which cannot be produced by [`Money::parse`]; we
    /// panic rather than wrap so a corrupted amount never silently changes sign.
    fn neg(self) -> Money {
        self.checked_neg()
            .expect("negating Money::from_micros(i64::MIN) overflows")
    }
}

impl fmt::Display for Money {
    /// Writes the shortest exact decimal: `12.5`, `-0.0075`, `0`, `10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // unsigned_abs keeps i64::MIN printable.
        let abs = self.0.unsigned_abs();
        let per_unit = MICROS_PER_UNIT.unsigned_abs();
        let units = abs / per_unit;
        let fraction = abs % per_unit;
        let sign = if self.0 < 0 { "-" } else { "" };
        if fraction == 0 {
            return write!(f, "{sign}{units}");
        }
        let digits = format!("{fraction:06}");
        write!(f, "{sign}{units}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Money, MoneyError> {
        Money::parse(s)
    }
}

impl Serialize for Money {
    /// Serialises as the exact decimal string, so JSON consumers never see a
    /// floating point approximation.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Accepts a decimal string or a JSON number.
    ///
    /// Numbers are convenient for hand-written requests; a float is converted via
    /// its shortest round-trip text, so `0.1` becomes exactly `0.1`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        deserializer.deserialize_any(MoneyVisitor)
    }
}

struct MoneyVisitor;

impl MoneyVisitor {
    fn parse<E: de::Error>(text: &str) -> Result<Money, E> {
        Money::parse(text).map_err(E::custom)
    }
}

impl Visitor<'_> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal amount as a string or number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
        Self::parse(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
        Self::parse(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
        Self::parse(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
        if !v.is_finite() {
            return Err(E::custom(MoneyError::Invalid));
        }
        // `{}` on f64 is the shortest round-trip form and never uses an exponent,
        // so it is exactly what `Money::parse` expects.
        Self::parse(&format!("{v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn parses_plain_decimals() {
        assert_eq!(m("0").micros(), 0);
        assert_eq!(m("10").micros(), 10_000_000);
        assert_eq!(m("12.5").micros(), 12_500_000);
        assert_eq!(m("-0.0075").micros(), -7_500);
        assert_eq!(m("+3").micros(), 3_000_000);
        assert_eq!(m("1.000001").micros(), 1_000_001);
        assert_eq!(m("0.000001").micros(), 1);
        assert_eq!(m("007.50").micros(), 7_500_000);
        assert_eq!(m("1.000000").micros(), 1_000_000);
    }

    #[test]
    fn negative_zero_is_zero() {
        assert_eq!(m("-0"), Money::ZERO);
        assert_eq!(m("-0.000000"), Money::ZERO);
        assert_eq!(m("-0").to_string(), "0");
        assert!(!m("-0").is_negative());
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "", " ", " 1", "1 ", "1 000", "-", "+", "+-1", "--1", ".5", "5.", "-.5", "1.2.3",
            "1e5", "1E5", "1.5e-3", "NaN", "nan", "inf", "-inf", "Infinity", "0x10", "1,5", "١",
            "12a", "a12",
        ] {
            assert_eq!(Money::parse(s), Err(MoneyError::Invalid), "{s:?}");
        }
    }

    #[test]
    fn rejects_too_many_decimals() {
        assert_eq!(Money::parse("0.0000001"), Err(MoneyError::TooManyDecimals));
        assert_eq!(Money::parse("1.0000000"), Err(MoneyError::TooManyDecimals));
        assert_eq!(Money::parse("-0.1234567"), Err(MoneyError::TooManyDecimals));
    }

    #[test]
    fn range_limits() {
        assert_eq!(m("1000000000000").micros(), 1_000_000_000_000_000_000);
        assert_eq!(m("-1000000000000").micros(), -1_000_000_000_000_000_000);
        assert_eq!(
            m("0001000000000000.000000").micros(),
            1_000_000_000_000_000_000
        );
        assert_eq!(
            Money::parse("1000000000000.000001"),
            Err(MoneyError::OutOfRange)
        );
        assert_eq!(Money::parse("-1000000000001"), Err(MoneyError::OutOfRange));
        assert_eq!(
            Money::parse("99999999999999999999999999999"),
            Err(MoneyError::OutOfRange)
        );
        assert_eq!(m("999999999999.999999").micros(), 999_999_999_999_999_999);
    }

    #[test]
    fn error_messages() {
        assert_eq!(MoneyError::Invalid.to_string(), "must be a decimal number");
        assert_eq!(
            MoneyError::TooManyDecimals.to_string(),
            "at most 6 decimal places"
        );
        assert_eq!(MoneyError::OutOfRange.to_string(), "out of range");
    }

    #[test]
    fn display_is_shortest_exact() {
        assert_eq!(Money::from_micros(12_500_000).to_string(), "12.5");
        assert_eq!(Money::from_micros(-7_500).to_string(), "-0.0075");
        assert_eq!(Money::ZERO.to_string(), "0");
        assert_eq!(Money::from_micros(10_000_000).to_string(), "10");
        assert_eq!(Money::from_micros(1_000_001).to_string(), "1.000001");
        assert_eq!(Money::from_micros(-1).to_string(), "-0.000001");
        assert_eq!(Money::from_micros(100_000).to_string(), "0.1");
        assert_eq!(
            Money::from_micros(i64::MIN).to_string(),
            "-9223372036854.775808"
        );
        assert_eq!(
            Money::from_micros(i64::MAX).to_string(),
            "9223372036854.775807"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["12.5", "-0.0075", "0", "10", "1.000001", "-1000000000000"] {
            assert_eq!(m(s).to_string(), s);
        }
    }

    #[test]
    fn arithmetic() {
        let a = Money::from_micros(5);
        let b = Money::from_micros(7);
        assert_eq!(a.checked_add(b), Some(Money::from_micros(12)));
        assert_eq!(a.checked_sub(b), Some(Money::from_micros(-2)));
        assert_eq!(a.checked_neg(), Some(Money::from_micros(-5)));
        assert_eq!(-a, Money::from_micros(-5));
        assert_eq!(Money::from_micros(i64::MAX).checked_add(a), None);
        assert_eq!(Money::from_micros(i64::MIN).checked_sub(a), None);
        assert_eq!(Money::from_micros(i64::MIN).checked_neg(), None);
        assert!(a.is_positive());
        assert!(!Money::ZERO.is_positive());
        assert!(!(-a).is_positive());
        assert!((-a).is_negative());
        assert!(Money::ZERO.is_zero());
        assert_eq!(Money::default(), Money::ZERO);
        assert!(Money::from_micros(-1) < Money::ZERO);
    }

    #[test]
    #[should_panic(expected = "overflows")]
    fn neg_of_min_panics() {
        let _ = -Money::from_micros(i64::MIN);
    }

    #[test]
    fn from_str() {
        assert_eq!("1.5".parse::<Money>(), Ok(Money::from_micros(1_500_000)));
        assert_eq!("x".parse::<Money>(), Err(MoneyError::Invalid));
    }

    #[test]
    fn serializes_as_string() {
        let json = serde_json::to_string(&Money::from_micros(-7_500)).unwrap();
        assert_eq!(json, "\"-0.0075\"");
        let json = serde_json::to_string(&Money::ZERO).unwrap();
        assert_eq!(json, "\"0\"");
    }

    #[test]
    fn deserializes_from_string_and_number() {
        let from = |json: &str| serde_json::from_str::<Money>(json);
        assert_eq!(from("\"12.5\"").unwrap(), m("12.5"));
        assert_eq!(from("12.5").unwrap(), m("12.5"));
        assert_eq!(from("0.1").unwrap(), m("0.1"));
        assert_eq!(from("0.3").unwrap(), m("0.3"));
        assert_eq!(from("1.000001").unwrap(), m("1.000001"));
        assert_eq!(from("-0.0075").unwrap(), m("-0.0075"));
        assert_eq!(from("10").unwrap(), m("10"));
        assert_eq!(from("-10").unwrap(), m("-10"));
        assert_eq!(from("-0.0").unwrap(), Money::ZERO);
        assert_eq!(from("1e3").unwrap(), m("1000"));
        assert_eq!(from("1000000000000").unwrap(), m("1000000000000"));
    }

    #[test]
    fn deserialize_errors_carry_message() {
        let err = |json: &str| serde_json::from_str::<Money>(json).unwrap_err().to_string();
        assert!(err("\"abc\"").contains("must be a decimal number"));
        assert!(err("\"1.1234567\"").contains("at most 6 decimal places"));
        assert!(err("1.1234567").contains("at most 6 decimal places"));
        assert!(err("0.0000001").contains("at most 6 decimal places"));
        assert!(err("1e20").contains("out of range"));
        assert!(err("18446744073709551615").contains("out of range"));
        assert!(err("-9223372036854775808").contains("out of range"));
        assert!(err("\"1000000000000.5\"").contains("out of range"));
        assert!(err("true").contains("a decimal amount"));
        assert!(err("null").contains("a decimal amount"));
    }

    #[test]
    fn non_finite_float_rejected() {
        let r: Result<Money, serde_json::Error> = MoneyVisitor.visit_f64(f64::NAN);
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("must be a decimal number"));
        let r: Result<Money, serde_json::Error> = MoneyVisitor.visit_f64(f64::INFINITY);
        assert!(r.is_err());
    }
}

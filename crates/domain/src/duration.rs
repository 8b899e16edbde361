//! ISO 8601 durations such as billing periods (`P1M`) and grace periods (`PT30S`).
//!
//! Components are kept separately instead of being collapsed into seconds because
//! "one month" is not a fixed length: it has to be applied with calendar
//! arithmetic to a concrete instant, see [`IsoDuration::add_to`].

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::timestamp::{
    civil_from_days, days_from_civil, days_in_month, saturate_micros, Timestamp, MICROS_PER_DAY,
    MICROS_PER_SECOND,
};

/// Longest accepted duration in years.
pub const MAX_YEARS: u32 = 100;

/// Length of an average Gregorian month in seconds (30.436875 days), used only to
/// estimate whether a mixed duration exceeds the limit.
const AVERAGE_MONTH_SECONDS: u64 = 2_629_746;

/// [`MAX_YEARS`] average Gregorian years in seconds.
const MAX_TOTAL_SECONDS: u64 = MAX_YEARS as u64 * 12 * AVERAGE_MONTH_SECONDS;

/// Why a textual duration was rejected.
///
/// The `Display` text is meant to be shown to API clients as a validation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `PnYnMnWnDTnHnMnS`.
    #[error("must be an ISO 8601 duration such as P1M or PT30S")]
    Invalid,
    /// A component had a decimal fraction such as `P1.5D`.
    #[error("components must be whole numbers")]
    Fractional,
    /// Every component was zero.
    #[error("must be longer than zero")]
    Zero,
    /// Longer than [`MAX_YEARS`] years (or a component overflowed `u32`).
    #[error("too long")]
    TooLong,
}

/// An ISO 8601 duration with whole-number components, e.g. `P1Y2M10DT2H30M`.
///
/// Values built through [`IsoDuration::parse`] are non-zero and at most
/// [`MAX_YEARS`] long; values built by hand may be anything, and every method
/// still behaves (saturating where necessary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IsoDuration {
    /// Calendar years (`Y`).
    pub years: u32,
    /// Calendar months (`M` before `T`).
    pub months: u32,
    /// Weeks of exactly 7 days (`W`).
    pub weeks: u32,
    /// Days of exactly 24 hours, as everything is UTC (`D`).
    pub days: u32,
    /// Hours (`H`).
    pub hours: u32,
    /// Minutes (`M` after `T`).
    pub minutes: u32,
    /// Seconds (`S`).
    pub seconds: u32,
}

impl IsoDuration {
    /// Parses an ISO 8601 duration like `P1M`, `P7D`, `P2W`, `PT30S` or
    /// `P1Y2M10DT2H30M`.
    ///
    /// Rules: upper-case `P` first; designators `Y M W D` then optionally `T`
    /// followed by at least one of `H M S`; each designator at most once and in
    /// that order; whole numbers only; no sign. Weeks may be combined with other
    /// components (as RFC 5545 allows). The result must be non-zero and at most
    /// [`MAX_YEARS`] years long, estimating months at their average length.
    pub fn parse(s: &str) -> Result<IsoDuration, DurationError> {
        let rest = s.strip_prefix('P').ok_or(DurationError::Invalid)?;
        let (date_part, time_part) = match rest.split_once('T') {
            Some((date, time)) => (date, Some(time)),
            None => (rest, None),
        };
        // "P" alone and a dangling "T" carry no component at all.
        if (date_part.is_empty() && time_part.is_none()) || time_part == Some("") {
            return Err(DurationError::Invalid);
        }

        let [years, months, weeks, days] = parse_components(date_part, b"YMWD")?;
        let [hours, minutes, seconds] = parse_components(time_part.unwrap_or(""), b"HMS")?;
        let duration = IsoDuration {
            years,
            months,
            weeks,
            days,
            hours,
            minutes,
            seconds,
        };

        if duration.years > MAX_YEARS || duration.approximate_seconds() > MAX_TOTAL_SECONDS {
            return Err(DurationError::TooLong);
        }
        if duration.is_zero() {
            return Err(DurationError::Zero);
        }
        Ok(duration)
    }

    /// `true` if every component is zero.
    pub const fn is_zero(&self) -> bool {
        self.years == 0
            && self.months == 0
            && self.weeks == 0
            && self.days == 0
            && self.hours == 0
            && self.minutes == 0
            && self.seconds == 0
    }

    /// Adds this duration to `t` using calendar arithmetic in UTC.
    ///
    /// Years and months are applied first, clamping the day of month to the last
    /// day of the target month (Jan 31 + `P1M` = Feb 28, or Feb 29 in a leap
    /// year), so that monthly billing anchored on the 31st never skips a month.
    /// Weeks, days, hours, minutes and seconds are then added as exact time.
    /// The time of day and microseconds are kept. Saturates at the `i64` range.
    pub fn add_to(&self, t: Timestamp) -> Timestamp {
        let micros = t.micros();
        let day_number = micros.div_euclid(MICROS_PER_DAY);
        let time_of_day = micros.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(day_number);

        // |year| <= ~300 000 for any i64 timestamp and the u32 components add at
        // most ~5.2e10 months, so none of this can overflow an i64.
        let total_months =
            year * 12 + i64::from(month - 1) + i64::from(self.years) * 12 + i64::from(self.months);
        let new_year = total_months.div_euclid(12);
        // rem_euclid(12) is in 0..=11.
        let new_month = (total_months.rem_euclid(12) + 1) as u32;
        let new_day = day.min(days_in_month(new_year, new_month));

        // i128 because hand-built durations or extreme timestamps may leave the
        // i64 range; we clamp once at the end.
        let calendar = i128::from(days_from_civil(new_year, new_month, new_day))
            * i128::from(MICROS_PER_DAY)
            + i128::from(time_of_day);
        let exact = i128::from(self.exact_seconds()) * i128::from(MICROS_PER_SECOND);
        Timestamp::from_micros(saturate_micros(calendar + exact))
    }

    /// Seconds contributed by the fixed-length components (weeks to seconds).
    fn exact_seconds(&self) -> u64 {
        // Each term is at most u32::MAX * 604 800 < 2.6e15, so the sum fits in u64.
        (u64::from(self.weeks) * 7 + u64::from(self.days)) * 86_400
            + u64::from(self.hours) * 3_600
            + u64::from(self.minutes) * 60
            + u64::from(self.seconds)
    }

    /// Rough length in seconds, counting months at their average length; only
    /// used for the sanity limit.
    fn approximate_seconds(&self) -> u64 {
        (u64::from(self.years) * 12 + u64::from(self.months)) * AVERAGE_MONTH_SECONDS
            + self.exact_seconds()
    }
}

/// Parses a run of `<digits><designator>` pairs whose designators must appear in
/// the order given by `designators`, each at most once. Missing components are 0.
fn parse_components<const N: usize>(
    part: &str,
    designators: &[u8; N],
) -> Result<[u32; N], DurationError> {
    let bytes = part.as_bytes();
    let mut values = [0u32; N];
    let mut next_allowed = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        // Saturating so absurdly long digit runs become "too long" instead of
        // overflowing; leading zeros are fine.
        let mut value: u64 = 0;
        while let Some(digit) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
            value = value
                .saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'));
            i += 1;
        }
        let designator = *bytes.get(i).ok_or(DurationError::Invalid)?;
        if i == start {
            return Err(DurationError::Invalid);
        }
        if designator == b'.' || designator == b',' {
            return Err(DurationError::Fractional);
        }
        let index = designators[next_allowed..]
            .iter()
            .position(|&d| d == designator)
            .ok_or(DurationError::Invalid)?
            + next_allowed;
        values[index] = u32::try_from(value).map_err(|_| DurationError::TooLong)?;
        next_allowed = index + 1;
        i += 1;
    }
    Ok(values)
}

impl fmt::Display for IsoDuration {
    /// Canonical ISO 8601 form omitting zero components: `P1M`, `PT2S`,
    /// `P1Y2M10DT2H30M`. The all-zero duration (never produced by parsing) is
    /// written `PT0S`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("PT0S");
        }
        f.write_str("P")?;
        for (value, designator) in [
            (self.years, 'Y'),
            (self.months, 'M'),
            (self.weeks, 'W'),
            (self.days, 'D'),
        ] {
            if value != 0 {
                write!(f, "{value}{designator}")?;
            }
        }
        if self.hours != 0 || self.minutes != 0 || self.seconds != 0 {
            f.write_str("T")?;
            for (value, designator) in [(self.hours, 'H'), (self.minutes, 'M'), (self.seconds, 'S')]
            {
                if value != 0 {
                    write!(f, "{value}{designator}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for IsoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<IsoDuration, DurationError> {
        IsoDuration::parse(s)
    }
}

impl Serialize for IsoDuration {
    /// Serialises as the canonical string.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IsoDuration {
    /// Deserialises from a string accepted by [`IsoDuration::parse`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IsoDuration, D::Error> {
        deserializer.deserialize_str(IsoDurationVisitor)
    }
}

struct IsoDurationVisitor;

impl Visitor<'_> for IsoDurationVisitor {
    type Value = IsoDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ISO 8601 duration string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IsoDuration, E> {
        IsoDuration::parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> IsoDuration {
        IsoDuration::parse(s).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn add(duration: &str, start: &str) -> String {
        d(duration).add_to(ts(start)).to_string()
    }

    #[test]
    fn parses_components() {
        assert_eq!(
            d("P1M"),
            IsoDuration {
                months: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            d("P7D"),
            IsoDuration {
                days: 7,
                ..Default::default()
            }
        );
        assert_eq!(
            d("P2W"),
            IsoDuration {
                weeks: 2,
                ..Default::default()
            }
        );
        assert_eq!(
            d("PT30S"),
            IsoDuration {
                seconds: 30,
                ..Default::default()
            }
        );
        assert_eq!(
            d("PT2M"),
            IsoDuration {
                minutes: 2,
                ..Default::default()
            }
        );
        assert_eq!(
            d("P1Y2M10DT2H30M"),
            IsoDuration {
                years: 1,
                months: 2,
                days: 10,
                hours: 2,
                minutes: 30,
                ..Default::default()
            }
        );
        assert_eq!(
            d("P1Y2M3W4DT5H6M7S"),
            IsoDuration {
                years: 1,
                months: 2,
                weeks: 3,
                days: 4,
                hours: 5,
                minutes: 6,
                seconds: 7,
            }
        );
        assert_eq!(d("P0Y1D"), d("P1D"));
        assert_eq!(d("P001D"), d("P1D"));
        assert_eq!("PT1H".parse::<IsoDuration>(), Ok(d("PT1H")));
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "P",
            "PT",
            "P1DT",
            "1D",
            "p1d",
            "P1d",
            "pT1S",
            "P1",
            "PT1",
            "P1DT1",
            "PD",
            "PTS",
            "P-1D",
            "P+1D",
            "-P1D",
            "P1M1M",
            "P1D1M",
            "PT1S1M",
            "PT1M1H",
            "P1H",
            "PT1D",
            "PT1Y",
            "PT1W",
            "P1S",
            "P1DT1HT1M",
            "P T1S",
            " P1D",
            "P1D ",
            "P1 D",
            "P1X",
            "P١D",
            "P1DT1H1M1S1",
        ] {
            assert_eq!(IsoDuration::parse(s), Err(DurationError::Invalid), "{s:?}");
        }
    }

    #[test]
    fn rejects_fractions() {
        for s in ["P1.5D", "PT0.5S", "P1,5Y", "PT1H0.5M"] {
            assert_eq!(
                IsoDuration::parse(s),
                Err(DurationError::Fractional),
                "{s:?}"
            );
        }
    }

    #[test]
    fn rejects_zero() {
        for s in ["PT0S", "P0D", "P0Y0M0W0DT0H0M0S", "P00M"] {
            assert_eq!(IsoDuration::parse(s), Err(DurationError::Zero), "{s:?}");
        }
    }

    #[test]
    fn length_limits() {
        assert_eq!(d("P100Y").years, 100);
        assert_eq!(d("P1200M").months, 1200);
        assert_eq!(d("P36524D").days, 36_524);
        assert_eq!(IsoDuration::parse("P101Y"), Err(DurationError::TooLong));
        assert_eq!(IsoDuration::parse("P1201M"), Err(DurationError::TooLong));
        assert_eq!(IsoDuration::parse("P100Y1M"), Err(DurationError::TooLong));
        assert_eq!(IsoDuration::parse("P99Y13M"), Err(DurationError::TooLong));
        assert_eq!(IsoDuration::parse("P40000D"), Err(DurationError::TooLong));
        assert_eq!(IsoDuration::parse("P5300W"), Err(DurationError::TooLong));
        assert_eq!(
            IsoDuration::parse("PT4294967295S"),
            Err(DurationError::TooLong)
        );
        assert_eq!(
            IsoDuration::parse("PT4294967296S"),
            Err(DurationError::TooLong)
        );
        assert_eq!(
            IsoDuration::parse("P99999999999999999999999999Y"),
            Err(DurationError::TooLong)
        );
        assert_eq!(d("PT3155695200S").seconds, 3_155_695_200);
    }

    #[test]
    fn error_messages() {
        assert_eq!(DurationError::Zero.to_string(), "must be longer than zero");
        assert_eq!(DurationError::TooLong.to_string(), "too long");
        assert!(DurationError::Invalid.to_string().contains("ISO 8601"));
        assert!(DurationError::Fractional.to_string().contains("whole"));
    }

    #[test]
    fn display_is_canonical() {
        for s in [
            "P1M",
            "PT2S",
            "P1Y2M10DT2H30M",
            "P2W",
            "P7D",
            "PT30S",
            "P1Y2M3W4DT5H6M7S",
            "PT1H",
        ] {
            assert_eq!(d(s).to_string(), s);
        }
        assert_eq!(d("P0Y1M0D").to_string(), "P1M");
        assert_eq!(d("P01DT0H").to_string(), "P1D");
        assert_eq!(d("PT90M").to_string(), "PT90M");
        assert_eq!(IsoDuration::default().to_string(), "PT0S");
    }

    #[test]
    fn month_end_clamping() {
        assert_eq!(
            add("P1M", "2026-01-31T10:00:00Z"),
            "2026-02-28T10:00:00.000000Z"
        );
        assert_eq!(
            add("P1M", "2024-01-31T10:00:00Z"),
            "2024-02-29T10:00:00.000000Z"
        );
        assert_eq!(
            add("P1M", "2026-03-31T00:00:00Z"),
            "2026-04-30T00:00:00.000000Z"
        );
        assert_eq!(
            add("P1M", "2026-12-31T23:59:59.999999Z"),
            "2027-01-31T23:59:59.999999Z"
        );
        assert_eq!(
            add("P13M", "2026-01-31T00:00:00Z"),
            "2027-02-28T00:00:00.000000Z"
        );
        assert_eq!(
            add("P2M", "2026-12-31T00:00:00Z"),
            "2027-02-28T00:00:00.000000Z"
        );
        // Clamping happens before the exact part is added.
        assert_eq!(
            add("P1M1D", "2026-01-31T00:00:00Z"),
            "2026-03-01T00:00:00.000000Z"
        );
        // Ordinary days are untouched.
        assert_eq!(
            add("P1M", "2026-01-15T08:30:00Z"),
            "2026-02-15T08:30:00.000000Z"
        );
    }

    #[test]
    fn leap_year_arithmetic() {
        assert_eq!(add("P1Y", "2024-02-29"), "2025-02-28T00:00:00.000000Z");
        assert_eq!(add("P4Y", "2024-02-29"), "2028-02-29T00:00:00.000000Z");
        assert_eq!(add("P100Y", "2000-02-29"), "2100-02-28T00:00:00.000000Z");
        assert_eq!(add("P12M", "2024-02-29"), "2025-02-28T00:00:00.000000Z");
        assert_eq!(add("P1D", "2024-02-28"), "2024-02-29T00:00:00.000000Z");
        assert_eq!(add("P1D", "2026-02-28"), "2026-03-01T00:00:00.000000Z");
        assert_eq!(add("P1Y", "2023-03-01"), "2024-03-01T00:00:00.000000Z");
    }

    #[test]
    fn exact_components() {
        assert_eq!(
            add("PT30S", "2026-11-22T23:59:45.123456Z"),
            "2026-11-23T00:00:15.123456Z"
        );
        assert_eq!(add("P2W", "2026-12-25"), "2027-01-08T00:00:00.000000Z");
        assert_eq!(
            add("P1Y2M10DT2H30M", "2026-01-01T00:00:00Z"),
            "2027-03-11T02:30:00.000000Z"
        );
        assert_eq!(
            add("PT25H", "2026-03-29T00:00:00Z"),
            "2026-03-30T01:00:00.000000Z"
        );
    }

    #[test]
    fn before_epoch() {
        assert_eq!(
            add("P1M", "1969-12-31T23:59:59.5Z"),
            "1970-01-31T23:59:59.500000Z"
        );
        assert_eq!(
            add("P1M", "1900-01-31T12:00:00Z"),
            "1900-02-28T12:00:00.000000Z"
        );
    }

    #[test]
    fn hand_built_extremes_saturate() {
        let huge = IsoDuration {
            years: u32::MAX,
            months: u32::MAX,
            weeks: u32::MAX,
            days: u32::MAX,
            hours: u32::MAX,
            minutes: u32::MAX,
            seconds: u32::MAX,
        };
        assert_eq!(huge.add_to(ts("2026-01-01")).micros(), i64::MAX);
        let one_second = d("PT1S");
        assert_eq!(
            one_second.add_to(Timestamp::from_micros(i64::MAX)).micros(),
            i64::MAX
        );
        assert_eq!(
            d("P1M").add_to(Timestamp::from_micros(i64::MIN)).micros(),
            i64::MIN + 31 * MICROS_PER_DAY
        );
        // A zero duration is the identity.
        let t = ts("2026-01-31T01:02:03.456789Z");
        assert_eq!(IsoDuration::default().add_to(t), t);
    }

    #[test]
    fn serde_round_trip() {
        let json = serde_json::to_string(&d("P1Y2M10DT2H30M")).unwrap();
        assert_eq!(json, "\"P1Y2M10DT2H30M\"");
        assert_eq!(
            serde_json::from_str::<IsoDuration>(&json).unwrap(),
            d("P1Y2M10DT2H30M")
        );
        let err = serde_json::from_str::<IsoDuration>("\"PT0S\"").unwrap_err();
        assert!(err.to_string().contains("must be longer than zero"));
        assert!(serde_json::from_str::<IsoDuration>("30").is_err());
    }
}

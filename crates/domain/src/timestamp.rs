//! Instants in time, as microseconds since the Unix epoch in UTC.
//!
//! A plain `i64` of microseconds is totally ordered, cheap to store in any
//! database and immune to time zone confusion; microsecond precision matches what
//! PostgreSQL and SQLite round-trip without loss.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Microseconds in one second.
pub(crate) const MICROS_PER_SECOND: i64 = 1_000_000;

/// Microseconds in one (UTC, leap-second free) day.
pub(crate) const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Why a textual timestamp was rejected.
///
/// The `Display` text is meant to be shown to API clients as a validation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Neither an RFC 3339 date-time nor a plain `YYYY-MM-DD` date.
    #[error("must be an RFC 3339 date-time or a YYYY-MM-DD date (its midnight UTC)")]
    Invalid,
}

/// The clock [`Timestamp::now`] follows, when it is not the machine's wall clock: that
/// clock's time less the monotonic clock's reading (microseconds since
/// [`MONOTONIC_BASE`]), or [`WALL_CLOCK`]. One per process, so that every time a process
/// writes or compares is on one clock, and every server of a database on the same one
/// (see `billhook_store::clock`): a lease or a due time one server writes means the same
/// to another. Kept against the monotonic clock, which nothing steps, so that a step of
/// the machine's wall clock does not reach the times until the clock is measured again.
/// (A process on several PostgreSQL databases follows the one measured last.)
static FOLLOWED: AtomicI64 = AtomicI64::new(WALL_CLOCK);

/// [`FOLLOWED`] when the machine's wall clock is followed.
const WALL_CLOCK: i64 = i64::MIN;

/// What the monotonic clock's readings are counted from.
static MONOTONIC_BASE: OnceLock<Instant> = OnceLock::new();

/// Microseconds from [`MONOTONIC_BASE`] to `at` (0 before it).
fn monotonic_micros(at: Instant) -> i64 {
    let base = *MONOTONIC_BASE.get_or_init(|| at);
    i64::try_from(at.saturating_duration_since(base).as_micros()).unwrap_or(i64::MAX)
}

/// An instant: microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time on the clock this process's times follow: the machine's wall
    /// clock, or the one given to [`Timestamp::follow_clock`] (on PostgreSQL, the
    /// database's, which every server on it shares), truncated to whole microseconds.
    pub fn now() -> Timestamp {
        match FOLLOWED.load(Ordering::Relaxed) {
            WALL_CLOCK => Timestamp::machine_now(),
            followed => Timestamp(monotonic_micros(Instant::now()).saturating_add(followed)),
        }
    }

    /// The current time on this machine's own wall clock, truncated to whole
    /// microseconds.
    pub fn machine_now() -> Timestamp {
        Timestamp::from_offset_datetime(OffsetDateTime::now_utc())
    }

    /// Makes [`Timestamp::now`] follow a clock that read `time` at the instant `at`,
    /// going on from there at the pace of the monotonic clock.
    pub fn follow_clock(time: Timestamp, at: Instant) {
        FOLLOWED.store(time.0 - monotonic_micros(at), Ordering::Relaxed);
    }

    /// How far the clock [`Timestamp::now`] follows is now ahead of this machine's wall
    /// clock (behind, when negative).
    pub fn clock_offset_micros() -> i64 {
        match FOLLOWED.load(Ordering::Relaxed) {
            WALL_CLOCK => 0,
            _ => Timestamp::now().0 - Timestamp::machine_now().0,
        }
    }

    /// Builds a timestamp from microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded towards the past (so
    /// `-0.5 s` is `-1`), which keeps the value monotonic across the epoch.
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(MICROS_PER_SECOND)
    }

    /// Converts to a UTC `OffsetDateTime`.
    ///
    /// Values outside the range the `time` crate can represent (roughly years
    /// -9999..=9999) are clamped to its minimum or maximum; [`Timestamp::parse`]
    /// and [`Timestamp::now`] never produce such values.
    pub fn to_offset_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000).unwrap_or_else(|_| {
            if self.0 < 0 {
                PrimitiveDateTime::MIN.assume_utc()
            } else {
                PrimitiveDateTime::MAX.assume_utc()
            }
        })
    }

    /// Converts from any `OffsetDateTime`, truncating to whole microseconds
    /// (towards the past, so ordering is preserved before 1970 too).
    ///
    /// Saturates at the `i64` range, which can only matter if the `time` crate's
    /// `large-dates` feature is enabled somewhere in the build.
    pub fn from_offset_datetime(dt: OffsetDateTime) -> Timestamp {
        Timestamp(saturate_micros(dt.unix_timestamp_nanos().div_euclid(1_000)))
    }

    /// This instant shifted by `seconds` (may be negative), saturating at the
    /// `i64` range rather than wrapping.
    pub fn add_seconds(self, seconds: i64) -> Timestamp {
        // Exact in i128 so a huge shift saturates in the right direction even when
        // the multiplication alone would already overflow an i64.
        Timestamp(saturate_micros(
            i128::from(self.0) + i128::from(seconds) * i128::from(MICROS_PER_SECOND),
        ))
    }

    /// This instant shifted by `micros` (may be negative), saturating at the
    /// `i64` range rather than wrapping.
    pub const fn add_micros(self, micros: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(micros))
    }

    /// This instant shifted forward by `d`, saturating at the `i64` range.
    pub fn add_duration(self, d: std::time::Duration) -> Timestamp {
        self.add_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// Parses an RFC 3339 date-time with any offset (converted to UTC) or a plain
    /// `YYYY-MM-DD` date (meaning midnight UTC).
    ///
    /// Fractional seconds may have any number of digits and are truncated to
    /// microseconds. The date/time separator must be `T` (or `t`, which RFC 3339
    /// allows); a space is rejected to keep API input unambiguous.
    pub fn parse(s: &str) -> Result<Timestamp, TimestampError> {
        if s.len() == 10 {
            return parse_plain_date(s).ok_or(TimestampError::Invalid);
        }
        // The `time` crate's RFC 3339 parser accepts any byte as the separator;
        // insist on the one the RFC specifies.
        if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
            return Err(TimestampError::Invalid);
        }
        OffsetDateTime::parse(s, &Rfc3339)
            .map(Timestamp::from_offset_datetime)
            .map_err(|_| TimestampError::Invalid)
    }

    /// The time a JSON value names, if it is a string [`Timestamp::parse`] takes.
    pub fn of_json(v: &serde_json::Value) -> Option<Timestamp> {
        v.as_str().and_then(|t| Timestamp::parse(t).ok())
    }
}

/// Whether two JSON values name the same time, however written: times come back
/// otherwise from a client or handler that parsed and re-serialised them (Go trims the
/// zeros, Java writes three, Python `+00:00`).
pub fn same_time(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    matches!((Timestamp::of_json(a), Timestamp::of_json(b)), (Some(x), Some(y)) if x == y)
}

/// Narrows an exact micro-second count to `i64`, saturating at its bounds.
pub(crate) fn saturate_micros(micros: i128) -> i64 {
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// Parses exactly `YYYY-MM-DD` into midnight UTC of that day.
fn parse_plain_date(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = &b[range];
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
        })
    };
    let year = i64::from(number(0..4)?);
    let month = number(5..7)?;
    let day = number(8..10)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(Timestamp(
        days_from_civil(year, month, day) * MICROS_PER_DAY,
    ))
}

/// Whether `year` (proleptic Gregorian) is a leap year.
pub(crate) const fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Number of days in `month` (1..=12) of `year`.
pub(crate) const fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
///
/// Hand-written (Howard Hinnant's algorithm) rather than going through the `time`
/// crate so that it is total over the whole `i64` timestamp range and cannot fail.
pub(crate) const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let month = month as i64;
    let day = day as i64;
    // Count years from March so the leap day is the last day of the "year".
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Proleptic Gregorian `(year, month, day)` of a day count since 1970-01-01;
/// inverse of [`days_from_civil`].
pub(crate) const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Both casts are of values proven small by construction (1..=31 and 1..=12).
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400;
    (if month <= 2 { year + 1 } else { year }, month, day)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with exactly six fractional digits:
    /// `2026-11-22T10:15:30.123456Z`.
    ///
    /// Years outside 0000..=9999 (unreachable through parsing) are written in
    /// ISO 8601 expanded form with a sign rather than misprinted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.four_digit_year_text() {
            return f.write_str(std::str::from_utf8(&text).expect("ASCII digits"));
        }
        let (year, month, day, hour, minute, second, micros) = self.fields();
        write!(
            f,
            "{year:+07}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
        )
    }
}

impl Timestamp {
    /// Year, month, day, hour, minute, second and microsecond, in UTC.
    fn fields(&self) -> (i64, u32, u32, i64, i64, i64, i64) {
        let (year, month, day) = civil_from_days(self.0.div_euclid(MICROS_PER_DAY));
        let in_day = self.0.rem_euclid(MICROS_PER_DAY);
        let secs = in_day / MICROS_PER_SECOND;
        let (hour, minute, second) = (secs / 3_600, secs / 60 % 60, secs % 60);
        (
            year,
            month,
            day,
            hour,
            minute,
            second,
            in_day % MICROS_PER_SECOND,
        )
    }

    /// The [`Display`](fmt::Display) text of a timestamp of the years 0000 to 9999, as
    /// digits in a fixed buffer: every payload carries several timestamps, and the
    /// formatting machinery cost more than the rest of their serialisation.
    fn four_digit_year_text(&self) -> Option<[u8; 27]> {
        let (year, month, day, hour, minute, second, micros) = self.fields();
        if !(0..=9_999).contains(&year) {
            return None;
        }
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut text[0..4], year as u64);
        put_digits(&mut text[5..7], u64::from(month));
        put_digits(&mut text[8..10], u64::from(day));
        put_digits(&mut text[11..13], hour as u64);
        put_digits(&mut text[14..16], minute as u64);
        put_digits(&mut text[17..19], second as u64);
        put_digits(&mut text[20..26], micros as u64);
        Some(text)
    }
}

/// Writes `value` as decimal digits filling `out`, zero-padded on the left (the value
/// fits: callers pass fields already reduced to their ranges).
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Timestamp, TimestampError> {
        Timestamp::parse(s)
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(dt: OffsetDateTime) -> Timestamp {
        Timestamp::from_offset_datetime(dt)
    }
}

impl Serialize for Timestamp {
    /// Serialises as the [`Display`](fmt::Display) string (written directly, not
    /// through the formatting machinery, in the usual case).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.four_digit_year_text() {
            Some(text) => {
                serializer.serialize_str(std::str::from_utf8(&text).expect("ASCII digits"))
            }
            None => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// Deserialises from a string accepted by [`Timestamp::parse`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        deserializer.deserialize_str(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 date-time string or a YYYY-MM-DD date")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        Timestamp::parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {

    /// Sent with six decimals and `Z`, a time written back otherwise is the same time:
    /// a handler answering it so changed the read-only `created_at`, failing every call.
    #[test]
    fn a_time_written_back_otherwise_is_the_same_time() {
        use serde_json::json;
        let sent = json!("2026-12-05T07:30:28.998000Z");
        for back in [
            "2026-12-05T07:30:28.998Z",
            "2026-12-05T07:30:28.998+00:00",
            "2026-12-05T08:30:28.998000+01:00",
        ] {
            assert!(same_time(&sent, &json!(back)), "{back}");
        }
        assert!(!same_time(&sent, &json!("2026-12-05T07:30:28.999Z")));
        assert!(!same_time(&sent, &json!("not a time")));
    }

    use super::*;
    use time::macros::datetime;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn display_format() {
        let t = ts("2026-11-22T10:15:30.123456Z");
        assert_eq!(t.to_string(), "2026-11-22T10:15:30.123456Z");
        assert_eq!(
            Timestamp::from_micros(0).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_micros(-1).to_string(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            ts("2026-11-22T10:15:30Z").to_string(),
            "2026-11-22T10:15:30.000000Z"
        );
    }

    #[test]
    fn display_out_of_range_years() {
        assert!(Timestamp::from_micros(i64::MAX)
            .to_string()
            .starts_with("+294247-01-10T04:00:54.775807Z"));
        assert!(Timestamp::from_micros(i64::MIN)
            .to_string()
            .starts_with("-290308-12-21T19:59:05.224192Z"));
    }

    #[test]
    fn parses_offsets_to_utc() {
        assert_eq!(ts("2026-11-22T12:15:30+02:00"), ts("2026-11-22T10:15:30Z"));
        assert_eq!(
            ts("2026-11-22T05:15:30-05:00").to_string(),
            "2026-11-22T10:15:30.000000Z"
        );
        assert_eq!(
            ts("2026-11-23T00:30:00+01:00").to_string(),
            "2026-11-22T23:30:00.000000Z"
        );
        assert_eq!(ts("2026-11-22t10:15:30z"), ts("2026-11-22T10:15:30Z"));
        assert_eq!(ts("2026-11-22T10:15:30-00:00"), ts("2026-11-22T10:15:30Z"));
    }

    #[test]
    fn fractional_seconds_truncate() {
        assert_eq!(
            ts("2026-11-22T10:15:30.1Z").to_string(),
            "2026-11-22T10:15:30.100000Z"
        );
        assert_eq!(
            ts("2026-11-22T10:15:30.123456789Z").to_string(),
            "2026-11-22T10:15:30.123456Z"
        );
        assert_eq!(
            ts("2026-11-22T10:15:30.9999999999999Z").to_string(),
            "2026-11-22T10:15:30.999999Z"
        );
        // Truncation goes towards the past before the epoch as well.
        assert_eq!(ts("1969-12-31T23:59:59.9999999Z").micros(), -1);
    }

    #[test]
    fn plain_date_is_midnight_utc() {
        assert_eq!(ts("2026-11-22"), ts("2026-11-22T00:00:00Z"));
        assert_eq!(ts("1970-01-01").micros(), 0);
        assert_eq!(ts("2024-02-29"), ts("2024-02-29T00:00:00Z"));
        assert_eq!(ts("0000-01-01").to_string(), "0000-01-01T00:00:00.000000Z");
    }

    #[test]
    fn rejects_invalid() {
        for s in [
            "",
            "now",
            "2026-11-22 10:15:30Z",
            "2026-11-22X10:15:30Z",
            "2026-11-22T10:15:30",
            "2026-11-22T10:15Z",
            "2026-11-22T10:15:30.Z",
            "2026-11-22T10:15:30Z ",
            " 2026-11-22T10:15:30Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:15:60Z",
            "2026-11-22T10:15:30+24:00",
            "2026-02-30T10:15:30Z",
            "2026-13-01T00:00:00Z",
            "2026-11-22T10:15:30.123+0100",
            "1764000000",
            "2026-02-29",
            "2026-00-10",
            "2026-01-00",
            "2026-1-10",
            "2026-01-1 ",
            "+026-01-10",
            "2026/01/10",
            "20261122",
            "2026-11-2é",
        ] {
            assert_eq!(Timestamp::parse(s), Err(TimestampError::Invalid), "{s:?}");
        }
        assert_eq!(
            TimestampError::Invalid.to_string(),
            "must be an RFC 3339 date-time or a YYYY-MM-DD date (its midnight UTC)"
        );
    }

    #[test]
    fn leap_second_is_clamped_into_previous_second() {
        assert_eq!(
            ts("2016-12-31T23:59:60Z").to_string(),
            "2016-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn offset_datetime_round_trip() {
        let dt = datetime!(2026-11-22 10:15:30.123456789 UTC);
        let t = Timestamp::from_offset_datetime(dt);
        assert_eq!(t.to_string(), "2026-11-22T10:15:30.123456Z");
        assert_eq!(
            t.to_offset_datetime(),
            datetime!(2026-11-22 10:15:30.123456 UTC)
        );
        assert_eq!(Timestamp::from(dt), t);
        let shifted = datetime!(2026-11-22 12:15:30.123456 +02:00);
        assert_eq!(Timestamp::from_offset_datetime(shifted), t);
        let before_epoch = datetime!(1969-12-31 23:59:59.9999995 UTC);
        assert_eq!(Timestamp::from_offset_datetime(before_epoch).micros(), -1);
    }

    #[test]
    fn to_offset_datetime_clamps() {
        assert_eq!(
            Timestamp::from_micros(i64::MAX).to_offset_datetime(),
            PrimitiveDateTime::MAX.assume_utc()
        );
        assert_eq!(
            Timestamp::from_micros(i64::MIN).to_offset_datetime(),
            PrimitiveDateTime::MIN.assume_utc()
        );
    }

    #[test]
    fn unix_seconds_floor() {
        assert_eq!(ts("2026-11-22T10:15:30.999Z").unix_seconds(), 1_795_342_530);
        assert_eq!(Timestamp::from_micros(-1).unix_seconds(), -1);
        assert_eq!(Timestamp::from_micros(-1_000_000).unix_seconds(), -1);
        assert_eq!(Timestamp::from_micros(999_999).unix_seconds(), 0);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = ts("2026-11-22T10:15:30Z");
        assert_eq!(t.add_seconds(30).to_string(), "2026-11-22T10:16:00.000000Z");
        assert_eq!(
            t.add_seconds(-31).to_string(),
            "2026-11-22T10:14:59.000000Z"
        );
        assert_eq!(t.add_micros(1).to_string(), "2026-11-22T10:15:30.000001Z");
        assert_eq!(t.add_micros(-1).to_string(), "2026-11-22T10:15:29.999999Z");
        assert_eq!(t.add_seconds(i64::MAX).micros(), i64::MAX);
        assert_eq!(t.add_seconds(i64::MIN).micros(), i64::MIN);
        assert_eq!(t.add_micros(i64::MAX).micros(), i64::MAX);
    }

    #[test]
    fn now_is_recent_and_whole_micros() {
        let now = Timestamp::now();
        assert!(now > ts("2020-01-01"));
        let dt = now.to_offset_datetime();
        assert_eq!(dt.nanosecond() % 1_000, 0);
        assert_eq!(Timestamp::from_offset_datetime(dt), now);
    }

    #[test]
    fn civil_helpers_agree_with_time_crate() {
        // Walk a few centuries day by day around interesting boundaries.
        let start = days_from_civil(1899, 12, 25);
        for days in start..start + 160_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let dt = OffsetDateTime::from_unix_timestamp(days * 86_400).unwrap();
            assert_eq!(
                (dt.year(), u8::from(dt.month()), dt.day()),
                (
                    i32::try_from(y).unwrap(),
                    u8::try_from(m).unwrap(),
                    u8::try_from(d).unwrap()
                )
            );
            assert!(d <= days_in_month(y, m));
        }
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2024));
        assert!(is_leap_year(2000));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2026));
        assert!(is_leap_year(-4));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2026, 4), 30);
        assert_eq!(days_in_month(2026, 12), 31);
    }

    #[test]
    fn serde_round_trip() {
        let t = ts("2026-11-22T10:15:30.123456Z");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-22T10:15:30.123456Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Timestamp>("\"2026-11-22\"").unwrap(),
            ts("2026-11-22")
        );
        let err = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(err.to_string().contains("must be an RFC 3339 date-time"));
        assert!(serde_json::from_str::<Timestamp>("1764000000").is_err());
    }
}

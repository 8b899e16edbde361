//! When to try again after a failed attempt.

use std::time::Duration;

use rand::Rng;

/// The longest `Retry-After` honoured: a receiver cannot park a delivery for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The shortest: a receiver answering `Retry-After: 0` (or a date already past, its
/// clock behind) to every attempt spent the whole schedule in a fraction of a second and
/// left the delivery failed.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The delay before the next attempt after `attempts_done` failed ones, or `None` when
/// the schedule is exhausted. The schedule's delay gets ±20 % jitter so that a receiver
/// coming back up is not hit by every delivery at the same instant; a `Retry-After`
/// (429/503) replaces it, held between a second and an hour.
pub fn next_delay(
    schedule: &[u32],
    attempts_done: usize,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let base = *schedule.get(attempts_done.checked_sub(1)?)?;
    if let Some(after) = retry_after {
        return Some(after.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER));
    }
    let jitter = rand::thread_rng().gen_range(0.8..=1.2);
    Some(Duration::from_secs_f64(f64::from(base) * jitter))
}

/// Parses `Retry-After`: delay seconds, or an HTTP date (a date in the past means now).
/// Seconds too many for a number are as many as can be (capped later like any long
/// delay), not a header ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_with_jitter() {
        let schedule = [5, 300];
        for _ in 0..100 {
            let d = next_delay(&schedule, 1, None).unwrap().as_secs_f64();
            assert!((4.0..=6.0).contains(&d), "{d}");
            let d = next_delay(&schedule, 2, None).unwrap().as_secs_f64();
            assert!((240.0..=360.0).contains(&d), "{d}");
        }
        assert_eq!(next_delay(&schedule, 3, None), None);
        assert_eq!(next_delay(&[], 1, None), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 42 "), Some(Duration::from_secs(42)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!((110..=120).contains(&d.as_secs()), "{d:?}");
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-5"), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_an_hour() {
        let s = [5];
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(42))),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(99_999))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(u64::MAX))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            next_delay(&s, 1, Some(Duration::ZERO)),
            Some(MIN_RETRY_AFTER),
            "not at once"
        );
        assert_eq!(next_delay(&s, 2, Some(Duration::from_secs(1))), None);
    }
}

//! What a booking costs.

use crate::money::Money;
use crate::time::TimeRange;

/// The lot's hourly rate applied pro rata to the started minutes of the range, rounded up to
/// the next minor unit: 90 minutes at 250 ¢/h cost 375 ¢; 1 minute at 250 ¢/h costs 5 ¢.
/// Integer arithmetic throughout (i128 so that no realistic input overflows).
pub fn price_for(hourly_rate: &Money, range: &TimeRange) -> Money {
    let seconds = i128::from(range.duration().num_seconds());
    let minutes = (seconds + 59) / 60;
    let minor = (i128::from(hourly_rate.minor) * minutes + 59) / 60;
    Money {
        minor: i64::try_from(minor).unwrap_or(i64::MAX),
        currency: hourly_rate.currency.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use proptest::prelude::*;

    fn rate(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
    }

    fn minutes(m: i64) -> TimeRange {
        TimeRange::new(start(), start() + Duration::minutes(m)).unwrap()
    }

    #[test]
    fn whole_hours_cost_rate_times_hours() {
        assert_eq!(price_for(&rate(250), &minutes(120)).minor, 500);
    }

    #[test]
    fn part_hours_are_pro_rata_rounded_up() {
        assert_eq!(price_for(&rate(250), &minutes(90)).minor, 375);
        assert_eq!(price_for(&rate(250), &minutes(1)).minor, 5);
    }

    #[test]
    fn a_started_minute_counts_whole() {
        let range = TimeRange::new(start(), start() + Duration::seconds(61)).unwrap();
        assert_eq!(price_for(&rate(600), &range).minor, 20);
    }

    proptest! {
        #[test]
        fn price_never_falls_as_duration_grows(r in 0i64..100_000, a in 1i64..20_000, extra in 0i64..20_000) {
            prop_assert!(price_for(&rate(r), &minutes(a)).minor <= price_for(&rate(r), &minutes(a + extra)).minor);
        }
    }
}

//! What a booking costs.
//!
//! The lot's hourly rate is charged per started billing increment (15 minutes unless the
//! operator sets `BILLING_INCREMENT_MINUTES`), rounded up to the next minor unit, and a lot may
//! cap what one day costs: every full 24 hours from the start cost at most the cap, and so does
//! the rest. Integer arithmetic throughout (i128, so no realistic input overflows). The price
//! is fixed when the booking is made and carried in its `BookingCreated` event.

use chrono::Duration;

use crate::money::Money;
use crate::time::TimeRange;

/// How a lot charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tariff {
    pub hourly_rate: Money,
    /// The most one day (24 hours from the booking's start, and the rest) costs, in the rate's
    /// currency.
    pub daily_cap: Option<i64>,
    /// Time is charged in started steps of this length (at least a minute).
    pub increment: Duration,
}

const DAY_SECONDS: i128 = 24 * 3600;

/// The price of `range` under `tariff`. Never falls as the range grows, and never exceeds the
/// cap times the started days.
pub fn price_for(tariff: &Tariff, range: &TimeRange) -> Money {
    let seconds = i128::from(range.duration().num_seconds());
    let (days, rest) = (seconds / DAY_SECONDS, seconds % DAY_SECONDS);
    let capped = |s: i128| {
        let price = uncapped(tariff, s);
        tariff
            .daily_cap
            .map_or(price, |cap| price.min(i128::from(cap)))
    };
    let minor = days * capped(DAY_SECONDS) + capped(rest);
    Money {
        minor: i64::try_from(minor).unwrap_or(i64::MAX),
        currency: tariff.hourly_rate.currency.clone(),
    }
}

/// `seconds` charged by started increments, without a cap.
fn uncapped(tariff: &Tariff, seconds: i128) -> i128 {
    let step = i128::from(tariff.increment.num_seconds().max(60));
    let charged = (seconds + step - 1) / step * step;
    (i128::from(tariff.hourly_rate.minor) * charged + 3599) / 3600
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    fn tariff(rate: i64, cap: Option<i64>, increment_minutes: i64) -> Tariff {
        Tariff {
            hourly_rate: Money::new(rate, Currency::parse("EUR").unwrap()).unwrap(),
            daily_cap: cap,
            increment: Duration::minutes(increment_minutes),
        }
    }

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
    }

    fn minutes(m: i64) -> TimeRange {
        TimeRange::new(start(), start() + Duration::minutes(m)).unwrap()
    }

    #[test]
    fn whole_hours_cost_rate_times_hours() {
        assert_eq!(price_for(&tariff(250, None, 15), &minutes(120)).minor, 500);
    }

    #[test]
    fn a_started_increment_counts_whole() {
        // 61 minutes in 15-minute steps are 75 minutes: 250 * 1.25 = 312.5, rounded up.
        assert_eq!(price_for(&tariff(250, None, 15), &minutes(61)).minor, 313);
        assert_eq!(price_for(&tariff(250, None, 15), &minutes(1)).minor, 63);
        // With one-minute steps, pro rata by the started minute.
        assert_eq!(price_for(&tariff(250, None, 1), &minutes(90)).minor, 375);
    }

    #[test]
    fn a_day_costs_at_most_the_cap() {
        let capped = tariff(250, Some(2000), 15);
        assert_eq!(price_for(&capped, &minutes(6 * 60)).minor, 1500);
        assert_eq!(price_for(&capped, &minutes(10 * 60)).minor, 2000);
        // Two full days and two hours: two caps and the rest.
        assert_eq!(price_for(&capped, &minutes(50 * 60)).minor, 4500);
    }

    proptest! {
        #[test]
        fn price_never_falls_as_duration_grows(
            rate in 0i64..100_000,
            cap in proptest::option::of(0i64..500_000),
            step in 1i64..120,
            a in 1i64..20_000,
            extra in 0i64..20_000,
        ) {
            let t = tariff(rate, cap, step);
            prop_assert!(price_for(&t, &minutes(a)).minor <= price_for(&t, &minutes(a + extra)).minor);
        }

        #[test]
        fn price_never_exceeds_the_cap_per_started_day(
            rate in 0i64..100_000,
            cap in 0i64..500_000,
            step in 1i64..120,
            m in 1i64..30_000,
        ) {
            let days = (m + 24 * 60 - 1) / (24 * 60);
            prop_assert!(price_for(&tariff(rate, Some(cap), step), &minutes(m)).minor <= cap * days);
        }
    }
}

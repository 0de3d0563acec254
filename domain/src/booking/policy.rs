//! What booking ranges are acceptable at all, before any slot is asked.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::BookingError;
use crate::time::TimeRange;

/// Limits on booking ranges, and how long an unpaid booking holds its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingPolicy {
    /// How long an unpaid (pending) booking keeps its slot.
    pub payment_hold: Duration,
    pub min_duration: Duration,
    pub max_duration: Duration,
    /// How far ahead a booking may start.
    pub max_advance: Duration,
    /// Tolerance for clocks: a start this far in the past still counts as "now".
    pub start_grace: Duration,
    /// Time is charged in started steps of this length ([`super::price_for`]).
    pub billing_increment: Duration,
    /// How long before its start a confirmed booking may be checked in.
    pub check_in_grace: Duration,
}

impl Default for BookingPolicy {
    fn default() -> Self {
        Self {
            payment_hold: Duration::minutes(15),
            min_duration: Duration::minutes(15),
            max_duration: Duration::days(7),
            max_advance: Duration::days(365),
            start_grace: Duration::minutes(1),
            billing_increment: Duration::minutes(15),
            check_in_grace: Duration::minutes(15),
        }
    }
}

impl BookingPolicy {
    pub fn check(&self, range: &TimeRange, now: DateTime<Utc>) -> Result<(), BookingError> {
        if range.start() < now - self.start_grace {
            return Err(BookingError::StartsInPast);
        }
        if range.start() > now + self.max_advance {
            return Err(BookingError::TooFarAhead);
        }
        if range.duration() < self.min_duration {
            return Err(BookingError::TooShort);
        }
        if range.duration() > self.max_duration {
            return Err(BookingError::TooLong);
        }
        Ok(())
    }

    pub fn hold_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.payment_hold
    }
}

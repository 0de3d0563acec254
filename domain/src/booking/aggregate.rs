use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::VehicleNumber;
use crate::actor::Actor;
use crate::error::{RuleError, Violation};
use crate::money::Money;
use crate::time::TimeRange;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Pending,
    Confirmed,
    Active,
    Completed,
    Cancelled,
    Expired,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Pending => "pending",
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Active => "active",
            BookingStatus::Completed => "completed",
            BookingStatus::Cancelled => "cancelled",
            BookingStatus::Expired => "expired",
        }
    }

    pub const ALL: [BookingStatus; 6] = [
        BookingStatus::Pending,
        BookingStatus::Confirmed,
        BookingStatus::Active,
        BookingStatus::Completed,
        BookingStatus::Cancelled,
        BookingStatus::Expired,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown booking status {0:?}")]
pub struct UnknownBookingStatus(pub String);

impl TryFrom<String> for BookingStatus {
    type Error = UnknownBookingStatus;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or(UnknownBookingStatus(value))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BookingCommand {
    /// As [`super::decide_booking`] decided it: the rules of a new booking are checked there.
    Create {
        user_id: Uuid,
        lot_id: Uuid,
        lot_owner_id: Uuid,
        slot_id: Uuid,
        range: TimeRange,
        vehicle_number: VehicleNumber,
        price: Money,
        hold_until: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    Cancel {
        actor: Actor,
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BookingEvent {
    BookingCreated {
        user_id: Uuid,
        lot_id: Uuid,
        lot_owner_id: Uuid,
        slot_id: Uuid,
        range: TimeRange,
        vehicle_number: VehicleNumber,
        price: Money,
        /// Unpaid past this instant, the booking no longer holds its slot.
        hold_until: DateTime<Utc>,
        created_at: DateTime<Utc>,
    },
    BookingCancelled {
        by: Uuid,
        reason: Option<String>,
    },
}

impl DomainEvent for BookingEvent {
    fn event_type(&self) -> String {
        match self {
            BookingEvent::BookingCreated { .. } => "BookingCreated",
            BookingEvent::BookingCancelled { .. } => "BookingCancelled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    #[error("no such booking")]
    NotFound,
    #[error("this booking already exists")]
    AlreadyExists,
    #[error("only the booking's driver or an admin may do this")]
    NotYourBooking,
    #[error("a {0} booking cannot be {1}")]
    InvalidTransition(&'static str, &'static str),
    #[error("the booking must not start in the past")]
    StartsInPast,
    #[error("the booking starts too far in the future")]
    TooFarAhead,
    #[error("the booking is shorter than the minimum duration")]
    TooShort,
    #[error("the booking is longer than the maximum duration")]
    TooLong,
}

impl RuleError for BookingError {
    fn code(&self) -> &'static str {
        match self {
            BookingError::NotFound => "booking_not_found",
            BookingError::AlreadyExists => "booking_exists",
            BookingError::NotYourBooking => "forbidden",
            BookingError::InvalidTransition(..) => "invalid_booking_state",
            BookingError::StartsInPast => "booking_in_past",
            BookingError::TooFarAhead => "booking_too_far_ahead",
            BookingError::TooShort => "booking_too_short",
            BookingError::TooLong => "booking_too_long",
        }
    }

    fn violation(&self) -> Violation {
        match self {
            BookingError::NotFound => Violation::NotFound,
            BookingError::NotYourBooking => Violation::Forbidden,
            BookingError::AlreadyExists | BookingError::InvalidTransition(..) => {
                Violation::Conflict
            }
            _ => Violation::Invalid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingState {
    pub status: BookingStatus,
    pub user_id: Uuid,
    pub lot_id: Uuid,
    pub lot_owner_id: Uuid,
    pub slot_id: Uuid,
    pub range: TimeRange,
    pub vehicle_number: VehicleNumber,
    pub price: Money,
    pub hold_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub state: Option<BookingState>,
}

impl Aggregate for Booking {
    const TYPE: &'static str = "booking";
    type Command = BookingCommand;
    type Event = BookingEvent;
    type Error = BookingError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            BookingCommand::Create {
                user_id,
                lot_id,
                lot_owner_id,
                slot_id,
                range,
                vehicle_number,
                price,
                hold_until,
                now,
            } => {
                if self.state.is_some() {
                    return Err(BookingError::AlreadyExists);
                }
                let created = BookingEvent::BookingCreated {
                    user_id,
                    lot_id,
                    lot_owner_id,
                    slot_id,
                    range,
                    vehicle_number,
                    price,
                    hold_until,
                    created_at: now,
                };
                sink.write(created, self).await;
            }
            BookingCommand::Cancel { actor, reason } => {
                let booking = self.state.as_ref().ok_or(BookingError::NotFound)?;
                if !actor.is_or_admin(booking.user_id) {
                    return Err(BookingError::NotYourBooking);
                }
                if !matches!(
                    booking.status,
                    BookingStatus::Pending | BookingStatus::Confirmed
                ) {
                    return Err(BookingError::InvalidTransition(
                        booking.status.as_str(),
                        "cancelled",
                    ));
                }
                let reason = reason
                    .map(|r| crate::text::sanitized(&r, 500))
                    .filter(|r| !r.is_empty());
                sink.write(
                    BookingEvent::BookingCancelled {
                        by: actor.user_id,
                        reason,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BookingEvent::BookingCreated {
                user_id,
                lot_id,
                lot_owner_id,
                slot_id,
                range,
                vehicle_number,
                price,
                hold_until,
                created_at,
            } => {
                self.state = Some(BookingState {
                    status: BookingStatus::Pending,
                    user_id,
                    lot_id,
                    lot_owner_id,
                    slot_id,
                    range,
                    vehicle_number,
                    price,
                    hold_until,
                    created_at,
                });
            }
            BookingEvent::BookingCancelled { .. } => {
                if let Some(state) = &mut self.state {
                    state.status = BookingStatus::Cancelled;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::Role;
    use crate::money::Currency;
    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;

    type BookingTest = TestFramework<Booking>;

    const DRIVER: Actor = Actor {
        user_id: Uuid::from_u128(1),
        role: Role::User,
    };
    const OTHER: Actor = Actor {
        user_id: Uuid::from_u128(2),
        role: Role::User,
    };
    const ADMIN: Actor = Actor {
        user_id: Uuid::from_u128(3),
        role: Role::Admin,
    };

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
    }

    fn range(from_h: i64, to_h: i64) -> TimeRange {
        TimeRange::new(
            now() + Duration::hours(from_h),
            now() + Duration::hours(to_h),
        )
        .unwrap()
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn create(range: TimeRange) -> BookingCommand {
        BookingCommand::Create {
            user_id: DRIVER.user_id,
            lot_id: Uuid::from_u128(10),
            lot_owner_id: Uuid::from_u128(11),
            slot_id: Uuid::from_u128(12),
            range,
            vehicle_number: VehicleNumber::parse("AB-123").unwrap(),
            price: eur(500),
            hold_until: now() + Duration::minutes(15),
            now: now(),
        }
    }

    fn created() -> BookingEvent {
        BookingEvent::BookingCreated {
            user_id: DRIVER.user_id,
            lot_id: Uuid::from_u128(10),
            lot_owner_id: Uuid::from_u128(11),
            slot_id: Uuid::from_u128(12),
            range: range(1, 3),
            vehicle_number: VehicleNumber::parse("AB-123").unwrap(),
            price: eur(500),
            hold_until: now() + Duration::minutes(15),
            created_at: now(),
        }
    }

    fn cancel(actor: Actor) -> BookingCommand {
        BookingCommand::Cancel {
            actor,
            reason: None,
        }
    }

    #[test]
    fn a_booking_is_created_pending() {
        BookingTest::with(())
            .given_no_previous_events()
            .when(create(range(1, 3)))
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn its_driver_cancels_a_pending_booking() {
        BookingTest::with(())
            .given(vec![created()])
            .when(cancel(DRIVER))
            .then_expect_events(vec![BookingEvent::BookingCancelled {
                by: DRIVER.user_id,
                reason: None,
            }]);
    }

    #[test]
    fn an_admin_may_cancel_any_booking() {
        BookingTest::with(())
            .given(vec![created()])
            .when(cancel(ADMIN))
            .then_expect_events(vec![BookingEvent::BookingCancelled {
                by: ADMIN.user_id,
                reason: None,
            }]);
    }

    #[test]
    fn someone_else_cannot_cancel_a_booking() {
        BookingTest::with(())
            .given(vec![created()])
            .when(cancel(OTHER))
            .then_expect_error(BookingError::NotYourBooking);
    }

    #[test]
    fn a_cancelled_booking_cannot_be_cancelled_again() {
        BookingTest::with(())
            .given(vec![
                created(),
                BookingEvent::BookingCancelled {
                    by: DRIVER.user_id,
                    reason: None,
                },
            ])
            .when(cancel(DRIVER))
            .then_expect_error(BookingError::InvalidTransition("cancelled", "cancelled"));
    }
}

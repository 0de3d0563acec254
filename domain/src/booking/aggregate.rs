use chrono::{DateTime, Duration, Utc};
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
    /// Its payment succeeded: `paid` must be exactly the booking's price.
    Confirm {
        payment_id: Uuid,
        paid: Money,
        now: DateTime<Utc>,
    },
    /// The driver (or the lot's owner for them) arrives: from `start - grace` on.
    CheckIn {
        actor: Actor,
        grace: Duration,
        now: DateTime<Utc>,
    },
    CheckOut {
        actor: Actor,
        now: DateTime<Utc>,
    },
    Cancel {
        actor: Actor,
        reason: Option<String>,
        now: DateTime<Utc>,
    },
    /// Unpaid past its hold: the booking lapses.
    Expire {
        now: DateTime<Utc>,
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
    /// Paid in full by `payment_id`: the slot is the driver's for the range.
    BookingConfirmed {
        payment_id: Uuid,
        amount: Money,
        confirmed_at: DateTime<Utc>,
    },
    BookingCheckedIn {
        by: Uuid,
        at: DateTime<Utc>,
    },
    /// The driver left; the slot is free from `at` on.
    BookingCheckedOut {
        by: Uuid,
        at: DateTime<Utc>,
    },
    BookingCancelled {
        by: Uuid,
        reason: Option<String>,
        /// Paid and cancelled before its start: the payment is refunded in full.
        #[serde(default)]
        refund: bool,
    },
    /// Not paid before its hold ran out.
    BookingExpired {
        at: DateTime<Utc>,
    },
}

impl BookingEvent {
    /// The status a booking has after this event.
    pub fn status(&self) -> BookingStatus {
        match self {
            BookingEvent::BookingCreated { .. } => BookingStatus::Pending,
            BookingEvent::BookingConfirmed { .. } => BookingStatus::Confirmed,
            BookingEvent::BookingCheckedIn { .. } => BookingStatus::Active,
            BookingEvent::BookingCheckedOut { .. } => BookingStatus::Completed,
            BookingEvent::BookingCancelled { .. } => BookingStatus::Cancelled,
            BookingEvent::BookingExpired { .. } => BookingStatus::Expired,
        }
    }

    /// Whether the booking gives its slot back with this event.
    pub fn releases_slot(&self) -> bool {
        matches!(
            self,
            BookingEvent::BookingCheckedOut { .. }
                | BookingEvent::BookingCancelled { .. }
                | BookingEvent::BookingExpired { .. }
        )
    }
}

impl DomainEvent for BookingEvent {
    fn event_type(&self) -> String {
        match self {
            BookingEvent::BookingCreated { .. } => "BookingCreated",
            BookingEvent::BookingConfirmed { .. } => "BookingConfirmed",
            BookingEvent::BookingCheckedIn { .. } => "BookingCheckedIn",
            BookingEvent::BookingCheckedOut { .. } => "BookingCheckedOut",
            BookingEvent::BookingCancelled { .. } => "BookingCancelled",
            BookingEvent::BookingExpired { .. } => "BookingExpired",
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
    #[error("only the booking's driver or the lot's owner may do this")]
    NotYourArrival,
    /// `from` → `to` is not a step of the lifecycle.
    #[error("a {} booking cannot become {}", .from.as_str(), .to.as_str())]
    InvalidTransition {
        from: BookingStatus,
        to: BookingStatus,
    },
    #[error("check-in opens {0} seconds before the booking starts")]
    CheckInTooEarly(i64),
    #[error("the payment of {paid} does not match the price of {price}")]
    PaymentMismatch { paid: String, price: String },
    #[error("the booking's payment hold has not run out")]
    HoldRunning,
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
            BookingError::NotYourBooking | BookingError::NotYourArrival => "forbidden",
            // One code per refused step, so a client can tell them apart.
            BookingError::InvalidTransition { to, .. } => match to {
                BookingStatus::Pending => "booking_exists",
                BookingStatus::Confirmed => "booking_not_pending",
                BookingStatus::Active => "booking_not_confirmed",
                BookingStatus::Completed => "booking_not_active",
                BookingStatus::Cancelled => "booking_not_cancellable",
                BookingStatus::Expired => "booking_not_expirable",
            },
            BookingError::CheckInTooEarly(_) => "check_in_too_early",
            BookingError::PaymentMismatch { .. } => "payment_amount_mismatch",
            BookingError::HoldRunning => "booking_hold_running",
            BookingError::StartsInPast => "booking_in_past",
            BookingError::TooFarAhead => "booking_too_far_ahead",
            BookingError::TooShort => "booking_too_short",
            BookingError::TooLong => "booking_too_long",
        }
    }

    fn violation(&self) -> Violation {
        match self {
            BookingError::NotFound => Violation::NotFound,
            BookingError::NotYourBooking | BookingError::NotYourArrival => Violation::Forbidden,
            BookingError::AlreadyExists
            | BookingError::InvalidTransition { .. }
            | BookingError::CheckInTooEarly(_)
            | BookingError::PaymentMismatch { .. }
            | BookingError::HoldRunning => Violation::Conflict,
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
    /// The payment that confirmed it.
    #[serde(default)]
    pub payment_id: Option<Uuid>,
    /// Cancelled with its payment to be refunded in full.
    #[serde(default)]
    pub refund_due: bool,
}

impl BookingState {
    /// `Ok` when the booking may move from its status to `to`.
    fn may_become(&self, to: BookingStatus) -> Result<(), BookingError> {
        use BookingStatus::*;
        let allowed = match to {
            Pending => false,
            Confirmed | Expired => self.status == Pending,
            Active => self.status == Confirmed,
            Completed => self.status == Active,
            Cancelled => matches!(self.status, Pending | Confirmed),
        };
        if allowed {
            Ok(())
        } else {
            Err(BookingError::InvalidTransition {
                from: self.status,
                to,
            })
        }
    }

    /// Arrival and departure are the driver's, or the lot owner's on their behalf.
    fn may_arrive_or_leave(&self, actor: &Actor) -> Result<(), BookingError> {
        if actor.user_id == self.user_id || actor.user_id == self.lot_owner_id || actor.is_admin() {
            Ok(())
        } else {
            Err(BookingError::NotYourArrival)
        }
    }
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
            BookingCommand::Confirm {
                payment_id,
                paid,
                now,
            } => {
                let booking = self.state.as_ref().ok_or(BookingError::NotFound)?;
                if booking.status == BookingStatus::Confirmed
                    && booking.payment_id == Some(payment_id)
                {
                    return Ok(()); // confirmed by this very payment already
                }
                booking.may_become(BookingStatus::Confirmed)?;
                if paid != booking.price {
                    return Err(BookingError::PaymentMismatch {
                        paid: paid.to_string(),
                        price: booking.price.to_string(),
                    });
                }
                let confirmed = BookingEvent::BookingConfirmed {
                    payment_id,
                    amount: paid,
                    confirmed_at: now,
                };
                sink.write(confirmed, self).await;
            }
            BookingCommand::CheckIn { actor, grace, now } => {
                let booking = self.state.as_ref().ok_or(BookingError::NotFound)?;
                booking.may_arrive_or_leave(&actor)?;
                booking.may_become(BookingStatus::Active)?;
                if now < booking.range.start() - grace {
                    return Err(BookingError::CheckInTooEarly(grace.num_seconds()));
                }
                let by = actor.user_id;
                sink.write(BookingEvent::BookingCheckedIn { by, at: now }, self)
                    .await;
            }
            BookingCommand::CheckOut { actor, now } => {
                let booking = self.state.as_ref().ok_or(BookingError::NotFound)?;
                booking.may_arrive_or_leave(&actor)?;
                booking.may_become(BookingStatus::Completed)?;
                let by = actor.user_id;
                sink.write(BookingEvent::BookingCheckedOut { by, at: now }, self)
                    .await;
            }
            BookingCommand::Cancel { actor, reason, now } => {
                let booking = self.state.as_ref().ok_or(BookingError::NotFound)?;
                if !actor.is_or_admin(booking.user_id) {
                    return Err(BookingError::NotYourBooking);
                }
                booking.may_become(BookingStatus::Cancelled)?;
                let reason = reason
                    .map(|r| crate::text::sanitized(&r, 500))
                    .filter(|r| !r.is_empty());
                let refund = booking.payment_id.is_some() && now < booking.range.start();
                sink.write(
                    BookingEvent::BookingCancelled {
                        by: actor.user_id,
                        reason,
                        refund,
                    },
                    self,
                )
                .await;
            }
            BookingCommand::Expire { now } => {
                let booking = self.state.as_ref().ok_or(BookingError::NotFound)?;
                booking.may_become(BookingStatus::Expired)?;
                if booking.hold_until > now {
                    return Err(BookingError::HoldRunning);
                }
                sink.write(BookingEvent::BookingExpired { at: now }, self)
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
                    payment_id: None,
                    refund_due: false,
                });
            }
            event => {
                if let Some(state) = &mut self.state {
                    state.status = event.status();
                    match event {
                        BookingEvent::BookingConfirmed { payment_id, .. } => {
                            state.payment_id = Some(payment_id);
                        }
                        BookingEvent::BookingCancelled { refund, .. } => state.refund_due = refund,
                        _ => {}
                    }
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
            now: now(),
        }
    }

    fn cancelled(by: Actor, refund: bool) -> BookingEvent {
        BookingEvent::BookingCancelled {
            by: by.user_id,
            reason: None,
            refund,
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
            .then_expect_events(vec![cancelled(DRIVER, false)]);
    }

    #[test]
    fn an_admin_may_cancel_any_booking() {
        BookingTest::with(())
            .given(vec![created()])
            .when(cancel(ADMIN))
            .then_expect_events(vec![cancelled(ADMIN, false)]);
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
            .given(vec![created(), cancelled(DRIVER, false)])
            .when(cancel(DRIVER))
            .then_expect_error(BookingError::InvalidTransition {
                from: BookingStatus::Cancelled,
                to: BookingStatus::Cancelled,
            });
    }

    const OWNER: Actor = Actor {
        user_id: Uuid::from_u128(11),
        role: Role::ParkingOwner,
    };
    const PAYMENT: Uuid = Uuid::from_u128(20);

    fn confirmed() -> BookingEvent {
        BookingEvent::BookingConfirmed {
            payment_id: PAYMENT,
            amount: eur(500),
            confirmed_at: now(),
        }
    }

    fn confirm(paid: i64) -> BookingCommand {
        BookingCommand::Confirm {
            payment_id: PAYMENT,
            paid: eur(paid),
            now: now(),
        }
    }

    fn check_in(actor: Actor, at: DateTime<Utc>) -> BookingCommand {
        BookingCommand::CheckIn {
            actor,
            grace: Duration::minutes(15),
            now: at,
        }
    }

    fn checked_in() -> BookingEvent {
        BookingEvent::BookingCheckedIn {
            by: DRIVER.user_id,
            at: now() + Duration::hours(1),
        }
    }

    #[test]
    fn a_payment_of_the_exact_price_confirms_a_pending_booking() {
        BookingTest::with(())
            .given(vec![created()])
            .when(confirm(500))
            .then_expect_events(vec![confirmed()]);
    }

    #[test]
    fn a_payment_of_another_amount_does_not_confirm() {
        BookingTest::with(())
            .given(vec![created()])
            .when(confirm(499))
            .then_expect_error(BookingError::PaymentMismatch {
                paid: eur(499).to_string(),
                price: eur(500).to_string(),
            });
    }

    #[test]
    fn the_same_payment_confirming_again_records_nothing() {
        BookingTest::with(())
            .given(vec![created(), confirmed()])
            .when(confirm(500))
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_expired_booking_is_not_confirmed_by_a_late_payment() {
        BookingTest::with(())
            .given(vec![created(), BookingEvent::BookingExpired { at: now() }])
            .when(confirm(500))
            .then_expect_error(BookingError::InvalidTransition {
                from: BookingStatus::Expired,
                to: BookingStatus::Confirmed,
            });
    }

    #[test]
    fn check_in_opens_a_grace_period_before_the_start() {
        let start = now() + Duration::hours(1);
        BookingTest::with(())
            .given(vec![created(), confirmed()])
            .when(check_in(DRIVER, start - Duration::minutes(16)))
            .then_expect_error(BookingError::CheckInTooEarly(900));
        BookingTest::with(())
            .given(vec![created(), confirmed()])
            .when(check_in(OWNER, start - Duration::minutes(15)))
            .then_expect_events(vec![BookingEvent::BookingCheckedIn {
                by: OWNER.user_id,
                at: start - Duration::minutes(15),
            }]);
    }

    #[test]
    fn an_unpaid_booking_cannot_be_checked_in() {
        BookingTest::with(())
            .given(vec![created()])
            .when(check_in(DRIVER, now() + Duration::hours(1)))
            .then_expect_error(BookingError::InvalidTransition {
                from: BookingStatus::Pending,
                to: BookingStatus::Active,
            });
    }

    #[test]
    fn someone_else_cannot_check_in() {
        BookingTest::with(())
            .given(vec![created(), confirmed()])
            .when(check_in(OTHER, now() + Duration::hours(1)))
            .then_expect_error(BookingError::NotYourArrival);
    }

    #[test]
    fn check_out_completes_an_active_booking_and_releases_its_slot() {
        let at = now() + Duration::hours(2);
        let out = BookingEvent::BookingCheckedOut {
            by: DRIVER.user_id,
            at,
        };
        assert!(out.releases_slot());
        BookingTest::with(())
            .given(vec![created(), confirmed(), checked_in()])
            .when(BookingCommand::CheckOut {
                actor: DRIVER,
                now: at,
            })
            .then_expect_events(vec![out]);
        BookingTest::with(())
            .given(vec![created(), confirmed()])
            .when(BookingCommand::CheckOut {
                actor: DRIVER,
                now: at,
            })
            .then_expect_error(BookingError::InvalidTransition {
                from: BookingStatus::Confirmed,
                to: BookingStatus::Completed,
            });
    }

    #[test]
    fn a_paid_booking_cancelled_before_its_start_is_refunded_and_not_after() {
        BookingTest::with(())
            .given(vec![created(), confirmed()])
            .when(cancel(DRIVER))
            .then_expect_events(vec![cancelled(DRIVER, true)]);
        BookingTest::with(())
            .given(vec![created(), confirmed()])
            .when(BookingCommand::Cancel {
                actor: DRIVER,
                reason: None,
                now: now() + Duration::hours(1),
            })
            .then_expect_events(vec![cancelled(DRIVER, false)]);
    }

    #[test]
    fn an_active_booking_cannot_be_cancelled() {
        BookingTest::with(())
            .given(vec![created(), confirmed(), checked_in()])
            .when(cancel(DRIVER))
            .then_expect_error(BookingError::InvalidTransition {
                from: BookingStatus::Active,
                to: BookingStatus::Cancelled,
            });
    }

    #[test]
    fn an_unpaid_booking_expires_only_after_its_hold() {
        let hold = now() + Duration::minutes(15);
        BookingTest::with(())
            .given(vec![created()])
            .when(BookingCommand::Expire {
                now: hold - Duration::seconds(1),
            })
            .then_expect_error(BookingError::HoldRunning);
        BookingTest::with(())
            .given(vec![created()])
            .when(BookingCommand::Expire { now: hold })
            .then_expect_events(vec![BookingEvent::BookingExpired { at: hold }]);
        BookingTest::with(())
            .given(vec![created(), confirmed()])
            .when(BookingCommand::Expire { now: hold })
            .then_expect_error(BookingError::InvalidTransition {
                from: BookingStatus::Confirmed,
                to: BookingStatus::Expired,
            });
    }

    #[test]
    fn every_refused_step_has_its_own_code() {
        let codes: std::collections::HashSet<&str> = BookingStatus::ALL
            .into_iter()
            .map(|to| {
                BookingError::InvalidTransition {
                    from: BookingStatus::Completed,
                    to,
                }
                .code()
            })
            .collect();
        assert_eq!(codes.len(), BookingStatus::ALL.len());
    }
}

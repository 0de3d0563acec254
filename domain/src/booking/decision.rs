//! Whether a driver may book a slot, and what booking it then is: every rule of a new booking
//! that spans aggregates, in one pure function ([`decide_booking`]).
//!
//! A booking touches three aggregates. The slot's calendar decides whether the range is free
//! (its own invariant, under optimistic concurrency: `Slot::handle` on the
//! [`SlotCommand::Reserve`] returned here); the booking decides that it is new
//! (`Booking::handle`); everything that needs the slot and its lot together, and the policy on
//! ranges, is decided here. Whoever books (the command layer's booking desk) loads the slot and
//! its lot, calls this function, and runs the two commands it returns on those aggregates: it
//! has no rule of its own.
//!
//! A rule that needs a further aggregate (the driver's account, a lot's opening hours) is a
//! parameter of [`decide_booking`] and a check here. The desk must then load that aggregate
//! with the others of a batch; `docs/adr/0013-booking-desk.md` says what keeps such a copy
//! from being stale.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    price_for, BookingCommand, BookingError, BookingPolicy, BookingState, Tariff, VehicleNumber,
};
use crate::error::{RuleError, Violation};
use crate::lot::{LotError, ParkingLot};
use crate::slot::{Slot, SlotCommand, SlotError};
use crate::time::TimeRange;

/// A booking as a driver asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBooking {
    /// The id the new booking gets (derived from the request, so that a retry finds it).
    pub booking_id: Uuid,
    pub driver_id: Uuid,
    pub slot_id: Uuid,
    pub range: TimeRange,
    pub vehicle_number: VehicleNumber,
}

/// A booking accepted by the rules of [`decide_booking`]: the command for the slot's calendar,
/// then the one that creates the booking.
#[derive(Debug, Clone, PartialEq)]
pub struct BookingDecision {
    pub reserve: SlotCommand,
    pub create: BookingCommand,
}

/// Why a booking is refused, in the words of the aggregate whose rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingRefused {
    #[error(transparent)]
    Booking(#[from] BookingError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Lot(#[from] LotError),
}

impl RuleError for BookingRefused {
    fn code(&self) -> &'static str {
        self.rule().code()
    }

    fn violation(&self) -> Violation {
        self.rule().violation()
    }
}

impl BookingRefused {
    fn rule(&self) -> &dyn RuleError {
        match self {
            BookingRefused::Booking(e) => e,
            BookingRefused::Slot(e) => e,
            BookingRefused::Lot(e) => e,
        }
    }
}

/// Decides whether `request` may be booked on `slot` of `lot` at `now`, in this order:
///
/// 1. the range fits the policy (not in the past, not too far ahead, neither too short nor
///    too long);
/// 2. the slot exists, its lot exists, and the lot lists the slot;
/// 3. the lot is active.
///
/// Then the booking costs the lot's hourly rate for the range ([`price_for`]) and, unpaid,
/// holds the slot for the policy's payment hold; a booking whose reservation the slot already
/// holds (recorded alone by an earlier version of the process) keeps that reservation's hold.
///
/// `lot` is the lot `slot` names, or an empty one when the slot names none. Whether the range
/// is free is the slot's decision, on the returned [`SlotCommand::Reserve`].
pub fn decide_booking(
    slot: &Slot,
    lot: &ParkingLot,
    request: &NewBooking,
    policy: &BookingPolicy,
    now: DateTime<Utc>,
) -> Result<BookingDecision, BookingRefused> {
    policy.check(&request.range, now)?;
    let info = slot.info.as_ref().ok_or(SlotError::NotFound)?;
    let registered = lot.registered.as_ref().ok_or(LotError::NotFound)?;
    if !registered
        .slots
        .values()
        .any(|s| s.slot_id == request.slot_id)
    {
        return Err(LotError::UnknownSlot.into());
    }
    if !registered.active {
        return Err(LotError::Inactive.into());
    }
    let hold_until = slot
        .reservations
        .get(&request.booking_id)
        .filter(|reservation| reservation.is_live(now))
        .and_then(|reservation| reservation.hold_until)
        .unwrap_or_else(|| policy.hold_until(now));
    Ok(BookingDecision {
        reserve: SlotCommand::Reserve {
            booking_id: request.booking_id,
            range: request.range,
            hold_until: Some(hold_until),
            now,
        },
        create: BookingCommand::Create {
            user_id: request.driver_id,
            lot_id: info.lot_id,
            lot_owner_id: registered.owner_id,
            slot_id: request.slot_id,
            range: request.range,
            vehicle_number: request.vehicle_number.clone(),
            price: price_for(
                &Tariff {
                    hourly_rate: registered.details.hourly_rate.clone(),
                    daily_cap: registered.details.daily_cap_minor,
                    increment: policy.billing_increment,
                },
                &request.range,
            ),
            hold_until,
            now,
        },
    })
}

impl BookingState {
    /// Whether this booking is what `request` asks for: a retried request (same booking id)
    /// that asks for something else reuses its idempotency key for another booking.
    pub fn answers(&self, request: &NewBooking) -> bool {
        self.user_id == request.driver_id
            && self.slot_id == request.slot_id
            && self.range == request.range
            && self.vehicle_number == request.vehicle_number
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use cqrs_es::Aggregate;

    use super::*;
    use crate::geo::GeoPoint;
    use crate::lot::{LotDetails, LotEvent, SlotType};
    use crate::money::{Currency, Money};
    use crate::slot::SlotEvent;

    const DRIVER: Uuid = Uuid::from_u128(1);
    const OWNER: Uuid = Uuid::from_u128(2);
    const LOT: Uuid = Uuid::from_u128(10);
    const SLOT: Uuid = Uuid::from_u128(11);
    const BOOKING: Uuid = Uuid::from_u128(12);

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
    }

    fn minutes_from_now(from: i64, to: i64) -> TimeRange {
        TimeRange::new(
            now() + Duration::minutes(from),
            now() + Duration::minutes(to),
        )
        .unwrap()
    }

    fn request(range: TimeRange) -> NewBooking {
        NewBooking {
            booking_id: BOOKING,
            driver_id: DRIVER,
            slot_id: SLOT,
            range,
            vehicle_number: VehicleNumber::parse("AB-123").unwrap(),
        }
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn lot_registered() -> LotEvent {
        LotEvent::LotRegistered {
            owner_id: OWNER,
            details: LotDetails {
                name: "Central".into(),
                address: "1 Main St".into(),
                city: "Lyon".into(),
                location: GeoPoint::new(45.76, 4.83).unwrap(),
                hourly_rate: eur(250),
                daily_cap_minor: None,
                description: None,
                camera_url: None,
                time_zone: Default::default(),
            },
        }
    }

    fn slot_added(slot_id: Uuid) -> LotEvent {
        LotEvent::SlotAdded {
            slot_id,
            label: "A1".into(),
            slot_type: SlotType::Standard,
        }
    }

    fn slot_registered() -> SlotEvent {
        SlotEvent::SlotRegistered {
            lot_id: LOT,
            label: "A1".into(),
            slot_type: SlotType::Standard,
        }
    }

    /// A booking decision's given/when/then: the slot's and the lot's histories, then a request.
    struct Given {
        slot: Slot,
        lot: ParkingLot,
        policy: BookingPolicy,
    }

    fn given(slot_events: Vec<SlotEvent>, lot_events: Vec<LotEvent>) -> Given {
        let mut slot = Slot::default();
        slot_events.into_iter().for_each(|e| slot.apply(e));
        let mut lot = ParkingLot::default();
        lot_events.into_iter().for_each(|e| lot.apply(e));
        Given {
            slot,
            lot,
            policy: BookingPolicy::default(),
        }
    }

    /// A registered slot, listed by an active lot.
    fn bookable() -> Given {
        given(
            vec![slot_registered()],
            vec![lot_registered(), slot_added(SLOT)],
        )
    }

    impl Given {
        fn when(&self, request: NewBooking) -> Result<BookingDecision, BookingRefused> {
            decide_booking(&self.slot, &self.lot, &request, &self.policy, now())
        }

        #[track_caller]
        fn then_refused(&self, request: NewBooking, expected: impl Into<BookingRefused>) {
            assert_eq!(self.when(request), Err(expected.into()));
        }
    }

    #[test]
    fn a_slot_of_an_active_lot_is_reserved_and_the_booking_created_pending_payment() {
        let range = minutes_from_now(60, 150);
        let decision = bookable().when(request(range)).unwrap();
        let hold_until = now() + Duration::minutes(15);
        assert_eq!(
            decision,
            BookingDecision {
                reserve: SlotCommand::Reserve {
                    booking_id: BOOKING,
                    range,
                    hold_until: Some(hold_until),
                    now: now(),
                },
                create: BookingCommand::Create {
                    user_id: DRIVER,
                    lot_id: LOT,
                    lot_owner_id: OWNER,
                    slot_id: SLOT,
                    range,
                    vehicle_number: VehicleNumber::parse("AB-123").unwrap(),
                    // 90 minutes at 2.50 an hour.
                    price: eur(375),
                    hold_until,
                    now: now(),
                },
            }
        );
    }

    #[test]
    fn a_booking_may_not_start_in_the_past() {
        bookable().then_refused(
            request(minutes_from_now(-2, 60)),
            BookingError::StartsInPast,
        );
    }

    #[test]
    fn a_booking_may_start_within_the_grace_for_clocks() {
        assert!(bookable().when(request(minutes_from_now(-1, 60))).is_ok());
    }

    #[test]
    fn a_booking_may_not_start_too_far_ahead() {
        let next_year = 366 * 24 * 60;
        bookable().then_refused(
            request(minutes_from_now(next_year, next_year + 60)),
            BookingError::TooFarAhead,
        );
    }

    #[test]
    fn a_booking_may_not_be_shorter_than_the_minimum() {
        bookable().then_refused(request(minutes_from_now(60, 74)), BookingError::TooShort);
    }

    #[test]
    fn a_booking_may_not_exceed_the_maximum_duration() {
        bookable().then_refused(
            request(minutes_from_now(60, 60 + 8 * 24 * 60)),
            BookingError::TooLong,
        );
    }

    #[test]
    fn the_range_is_judged_before_the_slot_is_looked_at() {
        given(vec![], vec![])
            .then_refused(request(minutes_from_now(60, 74)), BookingError::TooShort);
    }

    #[test]
    fn an_unknown_slot_is_not_found() {
        given(vec![], vec![]).then_refused(request(minutes_from_now(60, 120)), SlotError::NotFound);
    }

    #[test]
    fn a_slot_whose_lot_is_unknown_is_refused_as_lot_not_found() {
        given(vec![slot_registered()], vec![])
            .then_refused(request(minutes_from_now(60, 120)), LotError::NotFound);
    }

    #[test]
    fn a_slot_its_lot_does_not_list_is_not_found() {
        given(
            vec![slot_registered()],
            vec![lot_registered(), slot_added(Uuid::from_u128(99))],
        )
        .then_refused(request(minutes_from_now(60, 120)), LotError::UnknownSlot);
    }

    #[test]
    fn a_deactivated_lot_takes_no_bookings() {
        given(
            vec![slot_registered()],
            vec![
                lot_registered(),
                slot_added(SLOT),
                LotEvent::LotDeactivated { by: OWNER },
            ],
        )
        .then_refused(request(minutes_from_now(60, 120)), LotError::Inactive);
    }

    #[test]
    fn a_booking_whose_reservation_the_slot_already_holds_keeps_its_hold() {
        let range = minutes_from_now(60, 120);
        let earlier_hold = now() + Duration::minutes(5);
        let slot_events = vec![
            slot_registered(),
            SlotEvent::SlotReserved {
                booking_id: BOOKING,
                range,
                hold_until: Some(earlier_hold),
                reserved_at: now() - Duration::minutes(10),
            },
        ];
        let lot_events = vec![lot_registered(), slot_added(SLOT)];
        let decision = given(slot_events, lot_events).when(request(range)).unwrap();
        assert!(matches!(
            decision.reserve,
            SlotCommand::Reserve { hold_until: Some(hold), .. } if hold == earlier_hold
        ));
        assert!(matches!(
            decision.create,
            BookingCommand::Create { hold_until, .. } if hold_until == earlier_hold
        ));
    }

    #[test]
    fn a_lapsed_reservation_of_the_same_booking_gets_a_new_hold() {
        let range = minutes_from_now(60, 120);
        let slot_events = vec![
            slot_registered(),
            SlotEvent::SlotReserved {
                booking_id: BOOKING,
                range,
                hold_until: Some(now() - Duration::minutes(1)),
                reserved_at: now() - Duration::minutes(16),
            },
        ];
        let lot_events = vec![lot_registered(), slot_added(SLOT)];
        let decision = given(slot_events, lot_events).when(request(range)).unwrap();
        let fresh_hold = now() + Duration::minutes(15);
        assert!(matches!(
            decision.create,
            BookingCommand::Create { hold_until, .. } if hold_until == fresh_hold
        ));
    }

    #[test]
    fn refusals_carry_the_broken_rules_code_and_kind() {
        let refused = BookingRefused::from(LotError::Inactive);
        assert_eq!(
            (refused.code(), refused.violation()),
            ("lot_inactive", Violation::Conflict)
        );
        let refused = BookingRefused::from(SlotError::NotFound);
        assert_eq!(
            (refused.code(), refused.violation()),
            ("slot_not_found", Violation::NotFound)
        );
        let refused = BookingRefused::from(BookingError::TooLong);
        assert_eq!(
            (refused.code(), refused.violation()),
            ("booking_too_long", Violation::Invalid)
        );
    }

    #[test]
    fn a_booking_answers_only_the_request_that_made_it() {
        let range = minutes_from_now(60, 120);
        let made = BookingState {
            status: crate::booking::BookingStatus::Pending,
            user_id: DRIVER,
            lot_id: LOT,
            lot_owner_id: OWNER,
            slot_id: SLOT,
            range,
            vehicle_number: VehicleNumber::parse("AB-123").unwrap(),
            price: eur(250),
            hold_until: now(),
            created_at: now(),
            payment_id: None,
            refund_due: false,
        };
        assert!(made.answers(&request(range)));
        let other_plate = NewBooking {
            vehicle_number: VehicleNumber::parse("ZZ-999").unwrap(),
            ..request(range)
        };
        assert!(!made.answers(&other_plate));
        assert!(!made.answers(&request(minutes_from_now(60, 180))));
    }
}

//! A slot and its calendar of reservations.
//!
//! "No two live reservations of one slot overlap" is decided here, inside one aggregate, so
//! optimistic concurrency on the slot's stream serializes competing bookings. The stream
//! stays cheap to load: reservations that ended, or whose payment hold lapsed, are dropped
//! from the state as new ones arrive, and the event store snapshots the (small) state.

mod calendar;

pub use calendar::Calendar;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actor::{Actor, Role};
use crate::error::{RuleError, Violation};
use crate::lot::SlotType;
use crate::time::TimeRange;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SlotCommand {
    Register {
        lot_id: Uuid,
        label: String,
        slot_type: SlotType,
    },
    /// Reserve `range` for a booking. `hold_until` bounds an unpaid reservation: past it the
    /// reservation no longer blocks others, so a crashed or abandoned booking frees the slot
    /// by itself.
    Reserve {
        booking_id: Uuid,
        range: TimeRange,
        hold_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    },
    /// Make a booking's reservation firm (its payment arrived): it no longer lapses. Should its
    /// hold have lapsed already, the range is won again if it is still free.
    Confirm {
        booking_id: Uuid,
        range: TimeRange,
        now: DateTime<Utc>,
    },
    Release {
        booking_id: Uuid,
    },
    /// What a camera (through the vision service) or an admin saw: a car there or not. Only a
    /// change of the observed state is recorded; an observation older than the last recorded
    /// one is ignored.
    Observe {
        actor: Actor,
        occupied: bool,
        /// 0..=1, as the detector reports it.
        confidence: f64,
        camera_id: Option<Uuid>,
        observed_at: DateTime<Utc>,
    },
    /// Take the slot out of service (or back). Existing reservations stand; new ones are
    /// refused while it is out. `lot_owner_id` is the lot's owner, as the lot records it.
    SetOutOfService {
        actor: Actor,
        lot_owner_id: Uuid,
        out_of_service: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SlotEvent {
    SlotRegistered {
        lot_id: Uuid,
        label: String,
        slot_type: SlotType,
    },
    SlotReserved {
        booking_id: Uuid,
        range: TimeRange,
        hold_until: Option<DateTime<Utc>>,
        reserved_at: DateTime<Utc>,
    },
    /// The booking's reservation no longer has a payment hold: it stands until it ends or is
    /// released.
    SlotReservationConfirmed {
        booking_id: Uuid,
        confirmed_at: DateTime<Utc>,
    },
    SlotReleased {
        booking_id: Uuid,
    },
    /// The observed state of the slot changed.
    SlotOccupancyObserved {
        occupied: bool,
        confidence: f64,
        camera_id: Option<Uuid>,
        observed_at: DateTime<Utc>,
        by: Uuid,
    },
    SlotTakenOutOfService {
        by: Uuid,
    },
    SlotReturnedToService {
        by: Uuid,
    },
}

impl DomainEvent for SlotEvent {
    fn event_type(&self) -> String {
        match self {
            SlotEvent::SlotRegistered { .. } => "SlotRegistered",
            SlotEvent::SlotReserved { .. } => "SlotReserved",
            SlotEvent::SlotReservationConfirmed { .. } => "SlotReservationConfirmed",
            SlotEvent::SlotReleased { .. } => "SlotReleased",
            SlotEvent::SlotOccupancyObserved { .. } => "SlotOccupancyObserved",
            SlotEvent::SlotTakenOutOfService { .. } => "SlotTakenOutOfService",
            SlotEvent::SlotReturnedToService { .. } => "SlotReturnedToService",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("no such slot")]
    NotFound,
    #[error("this slot is already registered")]
    AlreadyRegistered,
    #[error("the slot is out of service")]
    OutOfService,
    #[error("the slot is already reserved for an overlapping time")]
    Overlap,
    #[error("a car is in the slot now")]
    Occupied,
    #[error("the range has already ended")]
    RangeInPast,
    #[error("this booking already holds a different reservation on the slot")]
    BookingAlreadyReserved,
    #[error("only the lot's owner or an admin may change its slots")]
    NotYourSlot,
    #[error("only the vision service or an admin reports occupancy")]
    NotAnObserver,
    #[error("confidence must be between 0 and 1")]
    BadConfidence,
}

impl RuleError for SlotError {
    fn code(&self) -> &'static str {
        match self {
            SlotError::NotFound => "slot_not_found",
            SlotError::AlreadyRegistered => "slot_already_registered",
            SlotError::OutOfService => "slot_out_of_service",
            SlotError::Overlap => "slot_already_reserved",
            SlotError::Occupied => "slot_occupied",
            SlotError::RangeInPast => "range_in_past",
            SlotError::BookingAlreadyReserved => "booking_already_reserved",
            SlotError::NotYourSlot | SlotError::NotAnObserver => "forbidden",
            SlotError::BadConfidence => "invalid_confidence",
        }
    }

    fn violation(&self) -> Violation {
        match self {
            SlotError::NotFound => Violation::NotFound,
            SlotError::RangeInPast | SlotError::BadConfidence => Violation::Invalid,
            SlotError::NotYourSlot | SlotError::NotAnObserver => Violation::Forbidden,
            _ => Violation::Conflict,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub lot_id: Uuid,
    /// As registered; the lot's registry holds the current label and type (`SlotUpdated`).
    pub label: String,
    /// As registered, like `label`.
    pub slot_type: SlotType,
    pub out_of_service: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub range: TimeRange,
    pub hold_until: Option<DateTime<Utc>>,
}

impl Reservation {
    /// Whether this reservation still keeps others off the slot at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.range.end() > now && self.hold_until.is_none_or(|hold| hold > now)
    }
}

/// The slot's state as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub occupied: bool,
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub info: Option<SlotInfo>,
    /// Live reservations; dead ones are pruned as time (in events) moves on.
    pub reservations: Calendar,
    /// The last observation recorded: a change of state.
    #[serde(default)]
    pub observed: Option<Observed>,
}

impl Aggregate for Slot {
    const TYPE: &'static str = "slot";
    type Command = SlotCommand;
    type Event = SlotEvent;
    type Error = SlotError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            SlotCommand::Register {
                lot_id,
                label,
                slot_type,
            } => {
                if self.info.is_some() {
                    return Err(SlotError::AlreadyRegistered);
                }
                sink.write(
                    SlotEvent::SlotRegistered {
                        lot_id,
                        label,
                        slot_type,
                    },
                    self,
                )
                .await;
            }
            SlotCommand::Reserve {
                booking_id,
                range,
                hold_until,
                now,
            } => {
                let info = self.info.as_ref().ok_or(SlotError::NotFound)?;
                // A retried step of the same booking is a no-op while its reservation still stands;
                // one that has lapsed is gone, and the retry must win the range again.
                if let Some(existing) = self
                    .reservations
                    .get(&booking_id)
                    .filter(|r| r.is_live(now))
                {
                    return if existing.range == range {
                        Ok(())
                    } else {
                        Err(SlotError::BookingAlreadyReserved)
                    };
                }
                if info.out_of_service {
                    return Err(SlotError::OutOfService);
                }
                if range.end() <= now {
                    return Err(SlotError::RangeInPast);
                }
                // A range that has begun needs the slot empty now.
                if range.start() <= now && self.observed.is_some_and(|o| o.occupied) {
                    return Err(SlotError::Occupied);
                }
                if self.reservations.overlaps_live(&range, now) {
                    return Err(SlotError::Overlap);
                }
                let reserved = SlotEvent::SlotReserved {
                    booking_id,
                    range,
                    hold_until,
                    reserved_at: now,
                };
                sink.write(reserved, self).await;
            }
            SlotCommand::Confirm {
                booking_id,
                range,
                now,
            } => {
                let info = self.info.as_ref().ok_or(SlotError::NotFound)?;
                match self
                    .reservations
                    .get(&booking_id)
                    .filter(|r| r.is_live(now))
                {
                    Some(held) if held.range != range => {
                        return Err(SlotError::BookingAlreadyReserved)
                    }
                    Some(held) if held.hold_until.is_none() => {} // confirmed already
                    Some(_) => {
                        let confirmed = SlotEvent::SlotReservationConfirmed {
                            booking_id,
                            confirmed_at: now,
                        };
                        sink.write(confirmed, self).await;
                    }
                    None => {
                        // The hold lapsed before the payment arrived: the range is the
                        // booking's again only if nobody took it meanwhile.
                        if info.out_of_service {
                            return Err(SlotError::OutOfService);
                        }
                        if range.end() <= now {
                            return Err(SlotError::RangeInPast);
                        }
                        if self.reservations.overlaps_live(&range, now) {
                            return Err(SlotError::Overlap);
                        }
                        let reserved = SlotEvent::SlotReserved {
                            booking_id,
                            range,
                            hold_until: None,
                            reserved_at: now,
                        };
                        sink.write(reserved, self).await;
                    }
                }
            }
            SlotCommand::Release { booking_id } => {
                self.info.as_ref().ok_or(SlotError::NotFound)?;
                // Releasing twice, or a reservation already pruned, changes nothing.
                if self.reservations.contains(&booking_id) {
                    sink.write(SlotEvent::SlotReleased { booking_id }, self)
                        .await;
                }
            }
            SlotCommand::Observe {
                actor,
                occupied,
                confidence,
                camera_id,
                observed_at,
            } => {
                self.info.as_ref().ok_or(SlotError::NotFound)?;
                if !matches!(actor.role, Role::Service | Role::Admin) {
                    return Err(SlotError::NotAnObserver);
                }
                if !(0.0..=1.0).contains(&confidence) {
                    return Err(SlotError::BadConfidence);
                }
                let news = match self.observed {
                    None => true,
                    // Late or repeated frames change nothing.
                    Some(last) => observed_at > last.observed_at && occupied != last.occupied,
                };
                if news {
                    let observed = SlotEvent::SlotOccupancyObserved {
                        occupied,
                        confidence,
                        camera_id,
                        observed_at,
                        by: actor.user_id,
                    };
                    sink.write(observed, self).await;
                }
            }
            SlotCommand::SetOutOfService {
                actor,
                lot_owner_id,
                out_of_service,
            } => {
                let info = self.info.as_ref().ok_or(SlotError::NotFound)?;
                if !actor.is_or_admin(lot_owner_id) {
                    return Err(SlotError::NotYourSlot);
                }
                let by = actor.user_id;
                match (info.out_of_service, out_of_service) {
                    (false, true) => {
                        sink.write(SlotEvent::SlotTakenOutOfService { by }, self)
                            .await
                    }
                    (true, false) => {
                        sink.write(SlotEvent::SlotReturnedToService { by }, self)
                            .await
                    }
                    _ => {} // already so
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SlotEvent::SlotRegistered {
                lot_id,
                label,
                slot_type,
            } => {
                self.info = Some(SlotInfo {
                    lot_id,
                    label,
                    slot_type,
                    out_of_service: false,
                });
            }
            SlotEvent::SlotReserved {
                booking_id,
                range,
                hold_until,
                reserved_at,
            } => {
                self.reservations.prune(reserved_at);
                self.reservations
                    .insert(booking_id, Reservation { range, hold_until });
            }
            SlotEvent::SlotReservationConfirmed {
                booking_id,
                confirmed_at,
            } => {
                self.reservations.prune(confirmed_at);
                if let Some(held) = self.reservations.get(&booking_id) {
                    let firm = Reservation {
                        range: held.range,
                        hold_until: None,
                    };
                    self.reservations.insert(booking_id, firm);
                }
            }
            SlotEvent::SlotReleased { booking_id } => {
                self.reservations.remove(&booking_id);
            }
            SlotEvent::SlotOccupancyObserved {
                occupied,
                observed_at,
                ..
            } => {
                self.observed = Some(Observed {
                    occupied,
                    observed_at,
                });
            }
            SlotEvent::SlotTakenOutOfService { .. } | SlotEvent::SlotReturnedToService { .. } => {
                if let Some(info) = &mut self.info {
                    info.out_of_service = matches!(event, SlotEvent::SlotTakenOutOfService { .. });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;
    use proptest::prelude::*;

    type SlotTest = TestFramework<Slot>;

    fn t(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute)
    }

    fn range(from: i64, to: i64) -> TimeRange {
        TimeRange::new(t(from), t(to)).unwrap()
    }

    fn registered() -> SlotEvent {
        SlotEvent::SlotRegistered {
            lot_id: Uuid::from_u128(1),
            label: "A1".into(),
            slot_type: SlotType::Standard,
        }
    }

    fn reserved(booking: u128, from: i64, to: i64, hold_until: Option<i64>, at: i64) -> SlotEvent {
        SlotEvent::SlotReserved {
            booking_id: Uuid::from_u128(booking),
            range: range(from, to),
            hold_until: hold_until.map(t),
            reserved_at: t(at),
        }
    }

    fn reserve(booking: u128, from: i64, to: i64, now: i64) -> SlotCommand {
        SlotCommand::Reserve {
            booking_id: Uuid::from_u128(booking),
            range: range(from, to),
            hold_until: Some(t(now + 15)),
            now: t(now),
        }
    }

    #[test]
    fn a_free_range_is_reserved() {
        SlotTest::with(())
            .given(vec![registered()])
            .when(reserve(10, 60, 120, 0))
            .then_expect_events(vec![reserved(10, 60, 120, Some(15), 0)]);
    }

    #[test]
    fn booking_that_overlaps_a_live_reservation_is_rejected() {
        SlotTest::with(())
            .given(vec![registered(), reserved(10, 60, 120, None, 0)])
            .when(reserve(11, 119, 180, 1))
            .then_expect_error(SlotError::Overlap);
    }

    #[test]
    fn a_range_starting_where_another_ends_is_accepted() {
        SlotTest::with(())
            .given(vec![registered(), reserved(10, 60, 120, None, 0)])
            .when(reserve(11, 120, 180, 1))
            .then_expect_events(vec![reserved(11, 120, 180, Some(16), 1)]);
    }

    #[test]
    fn a_lapsed_payment_hold_no_longer_blocks_the_slot() {
        SlotTest::with(())
            .given(vec![registered(), reserved(10, 60, 120, Some(15), 0)])
            .when(reserve(11, 60, 120, 20))
            .then_expect_events(vec![reserved(11, 60, 120, Some(35), 20)]);
    }

    #[test]
    fn a_released_range_can_be_reserved_again() {
        SlotTest::with(())
            .given(vec![
                registered(),
                reserved(10, 60, 120, None, 0),
                SlotEvent::SlotReleased {
                    booking_id: Uuid::from_u128(10),
                },
            ])
            .when(reserve(11, 60, 120, 1))
            .then_expect_events(vec![reserved(11, 60, 120, Some(16), 1)]);
    }

    #[test]
    fn retrying_the_same_reservation_records_nothing_new() {
        SlotTest::with(())
            .given(vec![registered(), reserved(10, 60, 120, Some(15), 0)])
            .when(reserve(10, 60, 120, 1))
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_out_of_service_slot_takes_no_reservation() {
        SlotTest::with(())
            .given(vec![
                registered(),
                SlotEvent::SlotTakenOutOfService {
                    by: Uuid::from_u128(1),
                },
            ])
            .when(reserve(10, 60, 120, 0))
            .then_expect_error(SlotError::OutOfService);
    }

    #[test]
    fn only_the_lot_owner_or_an_admin_takes_a_slot_out_of_service() {
        let owner = Uuid::from_u128(1);
        let stranger = Actor {
            user_id: Uuid::from_u128(2),
            role: Role::ParkingOwner,
        };
        SlotTest::with(())
            .given(vec![registered()])
            .when(SlotCommand::SetOutOfService {
                actor: stranger,
                lot_owner_id: owner,
                out_of_service: true,
            })
            .then_expect_error(SlotError::NotYourSlot);
        let admin = Actor {
            user_id: Uuid::from_u128(3),
            role: Role::Admin,
        };
        SlotTest::with(())
            .given(vec![registered()])
            .when(SlotCommand::SetOutOfService {
                actor: admin,
                lot_owner_id: owner,
                out_of_service: true,
            })
            .then_expect_events(vec![SlotEvent::SlotTakenOutOfService { by: admin.user_id }]);
    }

    #[test]
    fn returning_to_service_twice_records_it_once() {
        let owner = Actor {
            user_id: Uuid::from_u128(1),
            role: Role::ParkingOwner,
        };
        SlotTest::with(())
            .given(vec![registered()])
            .when(SlotCommand::SetOutOfService {
                actor: owner,
                lot_owner_id: owner.user_id,
                out_of_service: false,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_retry_whose_hold_lapsed_must_win_the_range_again() {
        // Booking 10's hold lapsed at 15; booking 11 took the range at 20.
        SlotTest::with(())
            .given(vec![
                registered(),
                reserved(10, 60, 120, Some(15), 0),
                reserved(11, 60, 120, None, 20),
            ])
            .when(reserve(10, 60, 120, 25))
            .then_expect_error(SlotError::Overlap);
        // With the range still free, the retry records a new reservation with a new hold.
        SlotTest::with(())
            .given(vec![registered(), reserved(10, 60, 120, Some(15), 0)])
            .when(reserve(10, 60, 120, 25))
            .then_expect_events(vec![reserved(10, 60, 120, Some(40), 25)]);
    }

    fn confirm(booking: u128, from: i64, to: i64, now: i64) -> SlotCommand {
        SlotCommand::Confirm {
            booking_id: Uuid::from_u128(booking),
            range: range(from, to),
            now: t(now),
        }
    }

    #[test]
    fn a_paid_reservation_no_longer_lapses() {
        SlotTest::with(())
            .given(vec![registered(), reserved(10, 60, 120, Some(15), 0)])
            .when(confirm(10, 60, 120, 5))
            .then_expect_events(vec![SlotEvent::SlotReservationConfirmed {
                booking_id: Uuid::from_u128(10),
                confirmed_at: t(5),
            }]);
        let mut slot = Slot::default();
        for event in [
            registered(),
            reserved(10, 60, 120, Some(15), 0),
            SlotEvent::SlotReservationConfirmed {
                booking_id: Uuid::from_u128(10),
                confirmed_at: t(5),
            },
        ] {
            slot.apply(event);
        }
        assert!(slot.reservations.overlaps_live(&range(60, 120), t(30)));
    }

    #[test]
    fn confirming_twice_records_it_once() {
        SlotTest::with(())
            .given(vec![registered(), reserved(10, 60, 120, None, 0)])
            .when(confirm(10, 60, 120, 5))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_payment_after_the_hold_lapsed_wins_the_range_only_if_it_is_still_free() {
        SlotTest::with(())
            .given(vec![registered(), reserved(10, 60, 120, Some(15), 0)])
            .when(confirm(10, 60, 120, 20))
            .then_expect_events(vec![reserved(10, 60, 120, None, 20)]);
        SlotTest::with(())
            .given(vec![
                registered(),
                reserved(10, 60, 120, Some(15), 0),
                reserved(11, 60, 120, Some(35), 20),
            ])
            .when(confirm(10, 60, 120, 25))
            .then_expect_error(SlotError::Overlap);
    }

    const CAMERA: Actor = Actor {
        user_id: Uuid::from_u128(50),
        role: Role::Service,
    };

    fn observe(occupied: bool, minute: i64) -> SlotCommand {
        SlotCommand::Observe {
            actor: CAMERA,
            occupied,
            confidence: 0.9,
            camera_id: None,
            observed_at: t(minute),
        }
    }

    fn observed(occupied: bool, minute: i64) -> SlotEvent {
        SlotEvent::SlotOccupancyObserved {
            occupied,
            confidence: 0.9,
            camera_id: None,
            observed_at: t(minute),
            by: CAMERA.user_id,
        }
    }

    #[test]
    fn a_range_that_has_begun_is_not_reserved_while_a_car_is_in_the_slot() {
        SlotTest::with(())
            .given(vec![registered(), observed(true, 1)])
            .when(reserve(10, 5, 60, 5))
            .then_expect_error(SlotError::Occupied);
        // Later ranges are the calendar's business only.
        SlotTest::with(())
            .given(vec![registered(), observed(true, 1)])
            .when(reserve(10, 60, 120, 5))
            .then_expect_events(vec![reserved(10, 60, 120, Some(20), 5)]);
    }

    #[test]
    fn a_first_observation_is_recorded() {
        SlotTest::with(())
            .given(vec![registered()])
            .when(observe(true, 1))
            .then_expect_events(vec![observed(true, 1)]);
    }

    #[test]
    fn only_a_change_of_the_observed_state_is_recorded() {
        SlotTest::with(())
            .given(vec![registered(), observed(true, 1)])
            .when(observe(true, 2))
            .then_expect_events(vec![]);
        SlotTest::with(())
            .given(vec![registered(), observed(true, 1)])
            .when(observe(false, 2))
            .then_expect_events(vec![observed(false, 2)]);
    }

    #[test]
    fn an_observation_older_than_the_last_recorded_is_ignored() {
        SlotTest::with(())
            .given(vec![registered(), observed(true, 5)])
            .when(observe(false, 4))
            .then_expect_events(vec![]);
    }

    #[test]
    fn only_the_vision_service_or_an_admin_observes() {
        SlotTest::with(())
            .given(vec![registered()])
            .when(SlotCommand::Observe {
                actor: Actor {
                    user_id: Uuid::from_u128(51),
                    role: Role::User,
                },
                occupied: true,
                confidence: 0.9,
                camera_id: None,
                observed_at: t(1),
            })
            .then_expect_error(SlotError::NotAnObserver);
        SlotTest::with(())
            .given(vec![registered()])
            .when(SlotCommand::Observe {
                actor: CAMERA,
                occupied: true,
                confidence: 1.5,
                camera_id: None,
                observed_at: t(1),
            })
            .then_expect_error(SlotError::BadConfidence);
    }

    #[test]
    fn an_unregistered_slot_cannot_be_reserved() {
        SlotTest::with(())
            .given_no_previous_events()
            .when(reserve(10, 60, 120, 0))
            .then_expect_error(SlotError::NotFound);
    }

    #[test]
    fn releasing_an_unknown_reservation_records_nothing() {
        SlotTest::with(())
            .given(vec![registered()])
            .when(SlotCommand::Release {
                booking_id: Uuid::from_u128(10),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn ended_reservations_are_pruned_from_the_state() {
        let mut slot = Slot::default();
        slot.apply(registered());
        slot.apply(reserved(10, 0, 60, None, 0));
        slot.apply(reserved(11, 100, 160, None, 90));
        assert_eq!(
            slot.reservations
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            vec![Uuid::from_u128(11)]
        );
    }

    proptest! {
        /// Whatever sequence of reservation attempts arrives, the accepted ones never overlap.
        #[test]
        fn accepted_reservations_never_overlap(attempts in proptest::collection::vec((0i64..1000, 1i64..120), 1..40)) {
            let mut slot = Slot::default();
            slot.apply(registered());
            let mut accepted: Vec<TimeRange> = Vec::new();
            for (i, (start, len)) in attempts.into_iter().enumerate() {
                let candidate = range(start, start + len);
                let clash = accepted.iter().any(|r| r.overlaps(&candidate));
                let command = SlotCommand::Reserve { booking_id: Uuid::from_u128(i as u128 + 100), range: candidate, hold_until: None, now: t(-1) };
                let sink = EventSink::default();
                let result = poll_once(slot.handle(command, &(), &sink));
                prop_assert_eq!(result.is_err(), clash);
                if !clash { accepted.push(candidate); }
            }
        }
    }

    /// The aggregate's futures never wait on anything, so one poll completes them.
    fn poll_once<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("aggregate handler awaited something"),
        }
    }
}

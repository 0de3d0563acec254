//! A slot's calendar: its reservations, indexed for the questions every booking asks.
//!
//! Every booking asks "does this range overlap a live reservation?" and then adds one, and
//! the slot drops what has ended or lapsed as time moves on. A plain map by booking id
//! answers each of those by walking every reservation the slot holds, and a slot booked far
//! ahead holds hundreds. Here reservations are also ordered by start and by payment-hold
//! deadline, so an overlap check reads only the reservations that could reach the range, and
//! pruning reads only what it drops.
//!
//! The maps are persistent (`imbl`): a copy of a calendar shares their nodes, and a change to
//! one copy rewrites only the paths it touches. The booking desk decides each booking on a copy
//! of its slot and keeps the slots it recorded (ADR 0013); with `BTreeMap`s every copy, and
//! every drop of one, would walk the whole calendar.
//!
//! Serialized (in snapshots) as the map from booking id to reservation it always was: the
//! indexes are derived when it is read.

use chrono::{DateTime, Duration, Utc};
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::Reservation;
use crate::time::TimeRange;

#[derive(Debug, Clone, Default)]
pub struct Calendar {
    by_booking: OrdMap<Uuid, Reservation>,
    /// (start, booking): the reservations that may reach a range, and those that have ended.
    by_start: OrdSet<(DateTime<Utc>, Uuid)>,
    /// (payment-hold deadline, booking), for the reservations that have one.
    by_hold: OrdSet<(DateTime<Utc>, Uuid)>,
    /// No reservation added since this calendar was read is longer: how far before a range
    /// the overlap check must look. (Never shrinks; only bounds a search.)
    longest: Duration,
}

impl Calendar {
    pub fn len(&self) -> usize {
        self.by_booking.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_booking.is_empty()
    }

    pub fn get(&self, booking_id: &Uuid) -> Option<&Reservation> {
        self.by_booking.get(booking_id)
    }

    pub fn contains(&self, booking_id: &Uuid) -> bool {
        self.by_booking.contains_key(booking_id)
    }

    /// The reservations by booking id.
    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &Reservation)> {
        self.by_booking.iter()
    }

    /// Whether a reservation live at `now` overlaps `range`. Reads only the reservations that
    /// start in the window where one could: after `range.start() - longest`, before its end.
    pub fn overlaps_live(&self, range: &TimeRange, now: DateTime<Utc>) -> bool {
        let from = (range.start() - self.longest, Uuid::max());
        let to = (range.end(), Uuid::nil());
        self.by_start
            .range(from..to)
            .filter_map(|(_, id)| self.by_booking.get(id))
            .any(|r| r.is_live(now) && r.range.overlaps(range))
    }

    /// Adds (or replaces) the reservation of `booking_id`.
    pub fn insert(&mut self, booking_id: Uuid, reservation: Reservation) {
        self.remove(&booking_id);
        self.longest = self.longest.max(reservation.range.duration());
        self.by_start
            .insert((reservation.range.start(), booking_id));
        if let Some(hold) = reservation.hold_until {
            self.by_hold.insert((hold, booking_id));
        }
        self.by_booking.insert(booking_id, reservation);
    }

    pub fn remove(&mut self, booking_id: &Uuid) -> Option<Reservation> {
        let reservation = self.by_booking.remove(booking_id)?;
        self.by_start
            .remove(&(reservation.range.start(), *booking_id));
        if let Some(hold) = reservation.hold_until {
            self.by_hold.remove(&(hold, *booking_id));
        }
        Some(reservation)
    }

    /// Drops every reservation that no longer keeps others off the slot at `now`: ended, or
    /// unpaid past its hold. Reads what it drops, plus the reservations running at `now`.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let lapsed = self.by_hold.range(..=(now, Uuid::max())).map(|(_, id)| *id);
        let ended = (self.by_start.range(..(now, Uuid::nil())))
            .map(|(_, id)| *id)
            .filter(|id| {
                self.by_booking
                    .get(id)
                    .is_some_and(|r| r.range.end() <= now)
            });
        let dead: Vec<Uuid> = lapsed.chain(ended).collect();
        for id in dead {
            self.remove(&id);
        }
    }

    fn from_reservations(reservations: impl IntoIterator<Item = (Uuid, Reservation)>) -> Self {
        let mut calendar = Self::default();
        for (booking_id, reservation) in reservations {
            calendar.insert(booking_id, reservation);
        }
        calendar
    }
}

/// Two calendars are equal when they hold the same reservations (the indexes follow).
impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.by_booking == other.by_booking
    }
}

impl Serialize for Calendar {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.by_booking.iter())
    }
}

impl<'de> Deserialize<'de> for Calendar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reservations =
            std::collections::BTreeMap::<Uuid, Reservation>::deserialize(deserializer)?;
        Ok(Self::from_reservations(reservations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute)
    }

    fn reservation(from: i64, to: i64, hold: Option<i64>) -> Reservation {
        Reservation {
            range: TimeRange::new(t(from), t(to)).unwrap(),
            hold_until: hold.map(t),
        }
    }

    /// What the calendar must answer, by walking every reservation.
    fn overlaps_by_walking(
        all: &std::collections::BTreeMap<Uuid, Reservation>,
        range: &TimeRange,
        now: DateTime<Utc>,
    ) -> bool {
        all.values()
            .any(|r| r.is_live(now) && r.range.overlaps(range))
    }

    #[test]
    fn serializes_as_the_map_by_booking_it_replaced() {
        let mut plain = std::collections::BTreeMap::new();
        let mut calendar = Calendar::default();
        for (n, (from, to, hold)) in [(60, 120, Some(15)), (0, 30, None), (200, 260, None)]
            .into_iter()
            .enumerate()
        {
            let id = Uuid::from_u128(n as u128 + 1);
            plain.insert(id, reservation(from, to, hold));
            calendar.insert(id, reservation(from, to, hold));
        }
        let json = serde_json::to_string(&calendar).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        let read: Calendar = serde_json::from_str(&json).unwrap();
        assert_eq!(read, calendar);
        assert!(read.overlaps_live(&reservation(250, 270, None).range, t(0)));
    }

    #[test]
    fn pruning_drops_what_ended_and_what_lapsed_and_keeps_the_rest() {
        let mut calendar = Calendar::default();
        calendar.insert(Uuid::from_u128(1), reservation(0, 60, None)); // ended at 60
        calendar.insert(Uuid::from_u128(2), reservation(70, 200, Some(65))); // lapsed at 65
        calendar.insert(Uuid::from_u128(3), reservation(50, 100, None)); // running at 90
        calendar.insert(Uuid::from_u128(4), reservation(300, 400, Some(120))); // held until 120
        calendar.prune(t(90));
        let left: Vec<u128> = calendar.iter().map(|(id, _)| id.as_u128()).collect();
        assert_eq!(left, [3, 4]);
    }

    /// One step of a calendar's life.
    #[derive(Debug, Clone)]
    enum Step {
        Insert {
            booking: u8,
            from: i64,
            len: i64,
            hold: Option<i64>,
        },
        Remove(u8),
        Prune(i64),
        Ask {
            from: i64,
            len: i64,
            now: i64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (
                0u8..24,
                0i64..600,
                1i64..180,
                proptest::option::of(0i64..600)
            )
                .prop_map(|(booking, from, len, hold)| Step::Insert {
                    booking,
                    from,
                    len,
                    hold
                }),
            (0u8..24).prop_map(Step::Remove),
            (0i64..600).prop_map(Step::Prune),
            (0i64..600, 1i64..180, 0i64..600).prop_map(|(from, len, now)| Step::Ask {
                from,
                len,
                now
            }),
        ]
    }

    proptest! {
        /// The indexed calendar holds what a plain map would and answers every overlap
        /// question as walking every reservation would, through any inserts, removals,
        /// prunes and questions, with time moving back and forth (requests of several nodes
        /// are not ordered by their clocks).
        #[test]
        fn answers_as_walking_every_reservation_would(steps in proptest::collection::vec(step(), 1..80)) {
            let mut calendar = Calendar::default();
            let mut plain = std::collections::BTreeMap::new();
            for step in steps {
                match step {
                    Step::Insert { booking, from, len, hold } => {
                        let id = Uuid::from_u128(u128::from(booking));
                        calendar.insert(id, reservation(from, from + len, hold));
                        plain.insert(id, reservation(from, from + len, hold));
                    }
                    Step::Remove(booking) => {
                        let id = Uuid::from_u128(u128::from(booking));
                        prop_assert_eq!(calendar.remove(&id), plain.remove(&id));
                    }
                    Step::Prune(now) => {
                        calendar.prune(t(now));
                        plain.retain(|_, r| r.is_live(t(now)));
                    }
                    Step::Ask { from, len, now } => {
                        let range = reservation(from, from + len, None).range;
                        prop_assert_eq!(
                            calendar.overlaps_live(&range, t(now)),
                            overlaps_by_walking(&plain, &range, t(now))
                        );
                    }
                }
                let held: Vec<_> = calendar.iter().map(|(id, r)| (*id, r.clone())).collect();
                let expected: Vec<_> = plain.iter().map(|(id, r)| (*id, r.clone())).collect();
                prop_assert_eq!(held, expected);
                // A calendar read back from its serialized form is the same calendar.
                let read: Calendar = serde_json::from_value(serde_json::to_value(&calendar).unwrap()).unwrap();
                prop_assert_eq!(&read, &calendar);
            }
        }
    }
}

//! The analytics projection's arithmetic, in memory: what each event changes in the entities
//! it touches, and the deltas it adds to the day tables. Which calendar day a delta lands on
//! is left to the database, which knows the lots' time zones (`store.rs`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use parking_domain::booking::{BookingEvent, BookingStatus};
use parking_domain::lot::LotEvent;
use parking_domain::money::Money;
use parking_domain::payment::PaymentEvent;
use parking_domain::slot::SlotEvent;
use uuid::Uuid;

/// A lot as analytics needs it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(super) struct LotRow {
    pub lot_id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub time_zone: String,
    pub is_active: bool,
    pub position: i64,
}

/// A checked-in booking on a slot: the slot counts as occupied within its range until it is
/// checked out (or the range ends), as the live status has it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Stay {
    pub booking_id: Uuid,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// A slot's state since `counted_to`, the instant up to which its time has been counted.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SlotTime {
    pub slot_id: Uuid,
    pub lot_id: Uuid,
    pub counted_to: DateTime<Utc>,
    pub in_service: bool,
    pub observed: bool,
    pub stays: Vec<Stay>,
    pub position: i64,
}

/// A piece of one slot's time: in service, or occupied while in service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Interval {
    pub lot_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub occupied: bool,
}

impl SlotTime {
    /// A slot that starts to count at `at`, in service and not observed.
    pub fn new(slot_id: Uuid, lot_id: Uuid, at: DateTime<Utc>, position: i64) -> Self {
        Self {
            slot_id,
            lot_id,
            counted_to: at,
            in_service: true,
            observed: false,
            stays: Vec::new(),
            position,
        }
    }

    /// Counts the slot's time from `counted_to` to `to` into `out`, and returns the instant a
    /// change at `to` takes effect: `to`, or `counted_to` if `to` is earlier (a change is never
    /// dated before one already counted).
    pub fn advance(&mut self, to: DateTime<Utc>, out: &mut Vec<Interval>) -> DateTime<Utc> {
        let from = self.counted_to;
        if to <= from {
            return from;
        }
        if self.in_service {
            out.push(self.interval(from, to, false));
            for (start, end) in self.occupied_within(from, to) {
                out.push(self.interval(start, end, true));
            }
        }
        self.counted_to = to;
        // A stay whose range has ended occupies nothing more.
        self.stays.retain(|stay| stay.until > to);
        to
    }

    fn interval(&self, start: DateTime<Utc>, end: DateTime<Utc>, occupied: bool) -> Interval {
        Interval {
            lot_id: self.lot_id,
            start,
            end,
            occupied,
        }
    }

    /// The parts of `[from, to)` the slot is occupied: all of it while a car is observed,
    /// otherwise the stays' ranges within it, merged where they overlap.
    fn occupied_within(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        if self.observed {
            return vec![(from, to)];
        }
        let mut pieces: Vec<_> = (self.stays.iter())
            .map(|stay| (stay.from.max(from), stay.until.min(to)))
            .filter(|(start, end)| start < end)
            .collect();
        pieces.sort();
        let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::with_capacity(pieces.len());
        for (start, end) in pieces {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

/// A booking as analytics needs it: the day it was made on, as its row has it, or, for a
/// booking first seen in this run, the instant it was made (its day is computed in its lot's
/// time zone when the row is written).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BookingRow {
    pub booking_id: Uuid,
    pub lot_id: Uuid,
    pub slot_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub day: Option<NaiveDate>,
    pub made_at: Option<DateTime<Utc>>,
    pub status: BookingStatus,
    pub position: i64,
}

impl BookingRow {
    fn micros(&self) -> i64 {
        (self.end - self.start)
            .num_microseconds()
            .unwrap_or(i64::MAX)
    }
}

/// A booking entering (`sign` 1) or leaving (-1) a status, on its row's lot and day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Move {
    pub booking_id: Uuid,
    pub status: BookingStatus,
    pub sign: i64,
    pub micros: i64,
}

/// Money captured or refunded for a lot at an instant.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Takings {
    pub lot_id: Uuid,
    pub at: DateTime<Utc>,
    pub currency: String,
    pub captured_minor: i64,
    pub refunded_minor: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PaymentRow {
    pub payment_id: Uuid,
    pub lot_id: Uuid,
    pub position: i64,
}

/// One decoded event the projection uses.
#[derive(Debug)]
pub(super) enum Fact {
    Lot(LotEvent),
    Slot(SlotEvent),
    Booking(BookingEvent),
    Payment(PaymentEvent),
}

/// An event with what the projection needs of its envelope.
#[derive(Debug)]
pub(super) struct Input {
    pub position: i64,
    pub stream: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub fact: Fact,
}

/// The entities a run of events touches, as loaded, changed in memory, and the deltas the
/// run adds to the day tables.
#[derive(Debug, Default)]
pub(super) struct Work {
    pub lots: HashMap<Uuid, LotRow>,
    pub slots: HashMap<Uuid, SlotTime>,
    pub bookings: HashMap<Uuid, BookingRow>,
    pub payments: HashMap<Uuid, PaymentRow>,
    /// The entities changed, to be written back.
    pub dirty_lots: HashSet<Uuid>,
    pub dirty_slots: HashSet<Uuid>,
    pub dirty_bookings: HashSet<Uuid>,
    pub dirty_payments: HashSet<Uuid>,
    pub intervals: Vec<Interval>,
    pub moves: Vec<Move>,
    pub takings: Vec<Takings>,
}

/// An entity that remembers the position of the last event applied to it.
trait Applied {
    fn position(&self) -> i64;
}

macro_rules! applied {
    ($($entity:ty),*) => {
        $(impl Applied for $entity {
            fn position(&self) -> i64 {
                self.position
            }
        })*
    };
}
applied!(LotRow, SlotTime, BookingRow, PaymentRow);

/// The entity `id`, if it has not seen the event at `position` yet.
fn unseen<T: Applied>(entities: &mut HashMap<Uuid, T>, id: Uuid, position: i64) -> Option<&mut T> {
    entities.get_mut(&id).filter(|e| e.position() < position)
}

impl Work {
    /// Applies one event. An event at or before the position its entity has seen was applied
    /// already and changes nothing.
    pub fn apply(&mut self, input: &Input) {
        let (position, id, at) = (input.position, input.stream, input.occurred_at);
        match &input.fact {
            Fact::Lot(event) => self.lot(position, id, at, event),
            Fact::Slot(event) => self.slot(position, id, at, event),
            Fact::Booking(event) => self.booking(position, id, event),
            Fact::Payment(event) => self.payment(position, id, event),
        }
    }

    fn lot(&mut self, position: i64, lot_id: Uuid, at: DateTime<Utc>, event: &LotEvent) {
        if let LotEvent::LotRegistered { owner_id, details } = event {
            if let std::collections::hash_map::Entry::Vacant(entry) = self.lots.entry(lot_id) {
                entry.insert(LotRow {
                    lot_id,
                    owner_id: *owner_id,
                    name: details.name.clone(),
                    time_zone: details.time_zone.as_str().to_owned(),
                    is_active: true,
                    position,
                });
                self.dirty_lots.insert(lot_id);
            }
            return;
        }
        let Some(lot) = unseen(&mut self.lots, lot_id, position) else {
            return;
        };
        lot.position = position;
        match event {
            LotEvent::LotUpdated { changes } => {
                if let Some(name) = &changes.name {
                    lot.name.clone_from(name);
                }
                if let Some(zone) = &changes.time_zone {
                    lot.time_zone = zone.as_str().to_owned();
                }
            }
            LotEvent::LotDeactivated { .. } => {
                lot.is_active = false;
                // Its slots serve no more.
                for slot in self.slots.values_mut().filter(|s| s.lot_id == lot_id) {
                    if slot.position < position {
                        slot.advance(at, &mut self.intervals);
                        slot.in_service = false;
                        slot.position = position;
                        self.dirty_slots.insert(slot.slot_id);
                    }
                }
            }
            _ => {}
        }
        self.dirty_lots.insert(lot_id);
    }

    fn slot(&mut self, position: i64, slot_id: Uuid, at: DateTime<Utc>, event: &SlotEvent) {
        if let SlotEvent::SlotRegistered { lot_id, .. } = event {
            self.slots
                .entry(slot_id)
                .or_insert_with(|| SlotTime::new(slot_id, *lot_id, at, position));
            self.dirty_slots.insert(slot_id);
            return;
        }
        let Some(slot) = unseen(&mut self.slots, slot_id, position) else {
            return;
        };
        match event {
            SlotEvent::SlotOccupancyObserved {
                occupied,
                observed_at,
                ..
            } => {
                slot.advance(*observed_at, &mut self.intervals);
                slot.observed = *occupied;
            }
            SlotEvent::SlotTakenOutOfService { .. } => {
                slot.advance(at, &mut self.intervals);
                slot.in_service = false;
            }
            SlotEvent::SlotReturnedToService { .. } => {
                slot.advance(at, &mut self.intervals);
                slot.in_service = true;
            }
            _ => return,
        }
        slot.position = position;
        self.dirty_slots.insert(slot_id);
    }

    fn booking(&mut self, position: i64, booking_id: Uuid, event: &BookingEvent) {
        if let BookingEvent::BookingCreated {
            lot_id,
            slot_id,
            range,
            created_at,
            ..
        } = event
        {
            if !self.bookings.contains_key(&booking_id) {
                let row = BookingRow {
                    booking_id,
                    lot_id: *lot_id,
                    slot_id: *slot_id,
                    start: range.start(),
                    end: range.end(),
                    day: None,
                    made_at: Some(*created_at),
                    status: BookingStatus::Pending,
                    position,
                };
                self.moves.push(Move {
                    booking_id,
                    status: BookingStatus::Pending,
                    sign: 1,
                    micros: row.micros(),
                });
                self.bookings.insert(booking_id, row);
                self.dirty_bookings.insert(booking_id);
            }
            return;
        }
        let Some(booking) = unseen(&mut self.bookings, booking_id, position) else {
            return;
        };
        let micros = booking.micros();
        let (from, to) = (booking.status, event.status());
        booking.status = to;
        booking.position = position;
        self.dirty_bookings.insert(booking_id);
        for (status, sign) in [(from, -1), (to, 1)] {
            self.moves.push(Move {
                booking_id,
                status,
                sign,
                micros,
            });
        }
        let (slot_id, start, end) = (booking.slot_id, booking.start, booking.end);
        let Some(slot) = unseen(&mut self.slots, slot_id, position) else {
            return;
        };
        match event {
            BookingEvent::BookingCheckedIn { at, .. } => {
                slot.advance(*at, &mut self.intervals);
                slot.stays.push(Stay {
                    booking_id,
                    from: start,
                    until: end,
                });
            }
            BookingEvent::BookingCheckedOut { at, .. } => {
                slot.advance(*at, &mut self.intervals);
                slot.stays.retain(|stay| stay.booking_id != booking_id);
            }
            _ => return,
        }
        slot.position = position;
        self.dirty_slots.insert(slot_id);
    }

    fn payment(&mut self, position: i64, payment_id: Uuid, event: &PaymentEvent) {
        if let PaymentEvent::PaymentOpened { lot_id, .. } = event {
            if let std::collections::hash_map::Entry::Vacant(entry) =
                self.payments.entry(payment_id)
            {
                entry.insert(PaymentRow {
                    payment_id,
                    lot_id: *lot_id,
                    position,
                });
                self.dirty_payments.insert(payment_id);
            }
            return;
        }
        let Some(payment) = unseen(&mut self.payments, payment_id, position) else {
            return;
        };
        payment.position = position;
        self.dirty_payments.insert(payment_id);
        let lot_id = payment.lot_id;
        let takings = |at: &DateTime<Utc>, money: &Money, captured: bool| Takings {
            lot_id,
            at: *at,
            currency: money.currency.as_str().to_owned(),
            captured_minor: if captured { money.minor } else { 0 },
            refunded_minor: if captured { 0 } else { money.minor },
        };
        match event {
            PaymentEvent::PaymentSucceeded {
                amount,
                succeeded_at,
                ..
            } => self.takings.push(takings(succeeded_at, amount, true)),
            PaymentEvent::RefundSucceeded {
                amount,
                refunded_at,
                ..
            } => self.takings.push(takings(refunded_at, amount, false)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, hour, minute, 0).unwrap()
    }

    fn lengths(intervals: &[Interval], occupied: bool) -> Vec<(u32, u32)> {
        use chrono::Timelike;
        (intervals.iter())
            .filter(|i| i.occupied == occupied)
            .map(|i| {
                (
                    i.start.hour() * 60 + i.start.minute(),
                    i.end.hour() * 60 + i.end.minute(),
                )
            })
            .collect()
    }

    #[test]
    fn a_slot_counts_service_and_the_stays_within_it() {
        let mut slot = SlotTime::new(Uuid::nil(), Uuid::nil(), t(8, 0), 1);
        let mut out = Vec::new();
        slot.stays.push(Stay {
            booking_id: Uuid::nil(),
            from: t(9, 0),
            until: t(10, 0),
        });
        slot.advance(t(9, 30), &mut out);
        slot.advance(t(11, 0), &mut out);
        assert_eq!(lengths(&out, false), [(480, 570), (570, 660)]);
        assert_eq!(lengths(&out, true), [(540, 570), (570, 600)]);
        assert!(slot.stays.is_empty(), "an ended stay is dropped");
    }

    #[test]
    fn an_observed_car_occupies_and_out_of_service_time_counts_for_nothing() {
        let mut slot = SlotTime::new(Uuid::nil(), Uuid::nil(), t(8, 0), 1);
        let mut out = Vec::new();
        slot.observed = true;
        slot.advance(t(9, 0), &mut out);
        slot.in_service = false;
        slot.advance(t(10, 0), &mut out);
        assert_eq!(lengths(&out, false), [(480, 540)]);
        assert_eq!(lengths(&out, true), [(480, 540)]);
        // A change dated before what is counted takes effect at the counted instant.
        assert_eq!(slot.advance(t(9, 30), &mut out), t(10, 0));
    }

    #[test]
    fn overlapping_stays_are_counted_once() {
        let mut slot = SlotTime::new(Uuid::nil(), Uuid::nil(), t(8, 0), 1);
        for (from, until) in [(t(9, 0), t(10, 0)), (t(9, 30), t(10, 30))] {
            slot.stays.push(Stay {
                booking_id: Uuid::new_v4(),
                from,
                until,
            });
        }
        let mut out = Vec::new();
        slot.advance(t(12, 0), &mut out);
        assert_eq!(lengths(&out, true), [(540, 630)]);
    }
}

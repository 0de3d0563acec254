//! Histories written straight to the event store, at instants of the script's choosing: what
//! the command path would have recorded over days or a year, for the tests and benchmarks of
//! what reads history (the projections, analytics). Each booking brings the slot and payment
//! events the command path records with it.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use parking_infra::append::{append_all, AppendError, NewEvent};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Events of several streams, numbered per stream in the order they are added.
#[derive(Default)]
pub struct Script {
    events: Vec<NewEvent>,
    sequences: HashMap<Uuid, i64>,
    /// Each booking's slot, for the slot events that go with the booking's.
    slots: HashMap<Uuid, Uuid>,
}

/// Where a booking is: its lot, the lot's owner, its slot.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub lot_id: Uuid,
    pub owner_id: Uuid,
    pub slot_id: Uuid,
}

impl Script {
    /// Events added and not yet taken.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// One event of the stream `id`, recorded at `at` (its `occurred_at`).
    pub fn add(
        &mut self,
        aggregate_type: &'static str,
        id: Uuid,
        at: DateTime<Utc>,
        payload: Value,
    ) {
        let sequence = self.sequences.entry(id).or_insert(0);
        *sequence += 1;
        let event_type = (payload.as_object())
            .and_then(|o| o.keys().next())
            .expect("a payload is {\"EventType\": {...}}")
            .clone();
        self.events.push(NewEvent {
            aggregate_type,
            aggregate_id: id.to_string(),
            sequence: *sequence,
            event_type,
            event_version: "1".into(),
            payload: payload.to_string(),
            metadata: json!({"occurred_at": at.to_rfc3339(), "request_id": "history-script"})
                .to_string(),
        });
    }

    /// A lot registered at `at`, its rate in `currency`, its days counted in `zone`.
    pub fn lot(
        &mut self,
        at: DateTime<Utc>,
        owner: Uuid,
        name: &str,
        zone: &str,
        currency: &str,
    ) -> Uuid {
        let lot_id = Uuid::new_v4();
        let details = json!({
            "name": name, "address": "1 Main Street", "city": "Lyon",
            "location": {"latitude": 45.76, "longitude": 4.83},
            "hourly_rate": {"minor": 200, "currency": currency}, "daily_cap_minor": null,
            "description": null, "camera_url": null, "time_zone": zone,
        });
        self.add(
            "lot",
            lot_id,
            at,
            json!({"LotRegistered": {"owner_id": owner, "details": details}}),
        );
        lot_id
    }

    /// A standard slot opened and added to the lot at `at`.
    pub fn slot(&mut self, at: DateTime<Utc>, lot_id: Uuid, label: &str) -> Uuid {
        let slot_id = Uuid::new_v4();
        let registered = json!({"lot_id": lot_id, "label": label, "slot_type": "standard"});
        self.add("slot", slot_id, at, json!({"SlotRegistered": registered}));
        let added = json!({"slot_id": slot_id, "label": label, "slot_type": "standard"});
        self.add("lot", lot_id, at, json!({"SlotAdded": added}));
        slot_id
    }

    /// The slot out of service from `from` to `until`.
    pub fn out_of_service(
        &mut self,
        slot_id: Uuid,
        by: Uuid,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) {
        self.add(
            "slot",
            slot_id,
            from,
            json!({"SlotTakenOutOfService": {"by": by}}),
        );
        self.add(
            "slot",
            slot_id,
            until,
            json!({"SlotReturnedToService": {"by": by}}),
        );
    }

    /// A booking made at `at` for `[start, end)`, priced `price` of `currency`, with its
    /// reservation held for 15 minutes.
    pub fn booking(
        &mut self,
        at: DateTime<Utc>,
        place: Place,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        (price, currency): (i64, &str),
    ) -> Uuid {
        let booking_id = Uuid::new_v4();
        let range = json!({"start": start, "end": end});
        let hold_until = at + Duration::minutes(15);
        let reserved = json!({"booking_id": booking_id, "range": range, "hold_until": hold_until,
                              "reserved_at": at});
        self.add("slot", place.slot_id, at, json!({"SlotReserved": reserved}));
        let created = json!({
            "user_id": Uuid::new_v4(), "lot_id": place.lot_id, "lot_owner_id": place.owner_id,
            "slot_id": place.slot_id, "range": range, "vehicle_number": "AB-123",
            "price": {"minor": price, "currency": currency}, "hold_until": hold_until,
            "created_at": at,
        });
        self.add(
            "booking",
            booking_id,
            at,
            json!({"BookingCreated": created}),
        );
        self.slots.insert(booking_id, place.slot_id);
        booking_id
    }

    /// The booking's payment opened and succeeded at `at`, and the booking confirmed.
    pub fn paid(
        &mut self,
        at: DateTime<Utc>,
        booking_id: Uuid,
        lot_id: Uuid,
        (amount, currency): (i64, &str),
    ) -> Uuid {
        let payment_id = parking_domain::payment::payment_id_for(booking_id);
        let money = json!({"minor": amount, "currency": currency});
        let intent_id = format!("pi_{}", booking_id.simple());
        let opened = json!({
            "booking_id": booking_id, "user_id": Uuid::new_v4(), "lot_id": lot_id,
            "lot_owner_id": Uuid::new_v4(), "amount": money, "opened_at": at,
        });
        self.add("payment", payment_id, at, json!({"PaymentOpened": opened}));
        let intent =
            json!({"intent_id": intent_id, "client_secret": format!("{intent_id}_secret")});
        self.add(
            "payment",
            payment_id,
            at,
            json!({"PaymentIntentCreated": intent}),
        );
        let succeeded = json!({
            "intent_id": intent_id, "charge_id": null, "amount": money,
            "provider_event_id": format!("evt_{}", booking_id.simple()), "succeeded_at": at,
        });
        self.add(
            "payment",
            payment_id,
            at,
            json!({"PaymentSucceeded": succeeded}),
        );
        let confirmed = json!({"payment_id": payment_id, "amount": money, "confirmed_at": at});
        self.add(
            "booking",
            booking_id,
            at,
            json!({"BookingConfirmed": confirmed}),
        );
        let slot = self.slots[&booking_id];
        let held = json!({"booking_id": booking_id, "confirmed_at": at});
        self.add("slot", slot, at, json!({"SlotReservationConfirmed": held}));
        payment_id
    }

    /// `amount` of the payment refunded at `at`.
    pub fn refunded(
        &mut self,
        at: DateTime<Utc>,
        payment_id: Uuid,
        (amount, currency): (i64, &str),
    ) {
        let refund = json!({
            "refund_id": Uuid::new_v4(), "provider_refund_id": format!("re_{}", Uuid::new_v4().simple()),
            "amount": {"minor": amount, "currency": currency}, "provider_event_id": null,
            "refunded_at": at,
        });
        self.add(
            "payment",
            payment_id,
            at,
            json!({"RefundSucceeded": refund}),
        );
    }

    fn released(&mut self, at: DateTime<Utc>, booking_id: Uuid) {
        let slot = self.slots[&booking_id];
        self.add(
            "slot",
            slot,
            at,
            json!({"SlotReleased": {"booking_id": booking_id}}),
        );
    }

    /// The driver parked from `from` to `until`: checked in, checked out, the slot released.
    pub fn stay(
        &mut self,
        booking_id: Uuid,
        driver: Uuid,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) {
        self.add(
            "booking",
            booking_id,
            from,
            json!({"BookingCheckedIn": {"by": driver, "at": from}}),
        );
        self.add(
            "booking",
            booking_id,
            until,
            json!({"BookingCheckedOut": {"by": driver, "at": until}}),
        );
        self.released(until, booking_id);
    }

    pub fn cancelled(&mut self, at: DateTime<Utc>, booking_id: Uuid, by: Uuid, refund: bool) {
        let cancelled = json!({"by": by, "reason": null, "refund": refund});
        self.add(
            "booking",
            booking_id,
            at,
            json!({"BookingCancelled": cancelled}),
        );
        self.released(at, booking_id);
    }

    pub fn expired(&mut self, at: DateTime<Utc>, booking_id: Uuid) {
        self.add(
            "booking",
            booking_id,
            at,
            json!({"BookingExpired": {"at": at}}),
        );
        self.released(at, booking_id);
    }

    /// A camera saw the slot occupied, or not, at `at` (reported by `by`).
    pub fn observed(&mut self, slot_id: Uuid, at: DateTime<Utc>, occupied: bool, by: Uuid) {
        let seen = json!({
            "occupied": occupied, "confidence": 0.9, "camera_id": null, "observed_at": at, "by": by,
        });
        self.add("slot", slot_id, at, json!({"SlotOccupancyObserved": seen}));
    }

    /// Appends the events added so far, in order, in one statement, and forgets them (the
    /// streams' numbering goes on); returns the log's head after them.
    pub async fn append(&mut self, pool: &PgPool) -> Result<i64, AppendError> {
        let events = std::mem::take(&mut self.events);
        append_all(pool, &events).await
    }
}

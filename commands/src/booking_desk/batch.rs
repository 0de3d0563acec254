//! Deciding a batch: each request in arrival order, on the streams as the batch's earlier
//! decisions leave them. The rules are the domain's (`decide_booking`, then the slot's and the
//! booking's own `handle`); this module only feeds them the batch's streams and keeps the
//! outcomes. No I/O: the desk loads the streams (and the drivers' data keys) before and
//! appends the events after.

use std::collections::HashMap;

use parking_domain::booking::{decide_booking, Booking, BookingPolicy, NewBooking};
use parking_domain::lot::ParkingLot;
use parking_domain::slot::Slot;
use parking_infra::append::NewEvent;
use parking_infra::event_store::Pending;
use parking_infra::personal::Sealer;
use uuid::Uuid;

use super::streams::{copy, Streams};
use super::{CreatedBooking, Job, Outcome};
use crate::bus::{decide, Bus};
use crate::context::key_reused;
use crate::error::{from_sealing, CommandError};

/// What one batch decides on.
#[derive(Default)]
pub(super) struct Batch {
    pub streams: Streams,
    /// For requests that may be retries: the booking their first attempt made, or an earlier
    /// request of the batch with the same key made.
    pub made: HashMap<Uuid, Booking>,
}

/// How one request of a batch came out.
pub(super) enum Decision {
    /// Its events, to append with the batch's.
    Record(Box<Recording>),
    /// Final without appending anything: refused, or made by the request's first attempt.
    Answer(Outcome),
}

/// A booking decided, with the events that record it.
pub(super) struct Recording {
    pub reserved: Pending<Slot>,
    pub created: Pending<Booking>,
    pub booking: CreatedBooking,
}

impl Decision {
    pub(super) fn events(&self) -> impl Iterator<Item = &NewEvent> {
        let (reserved, created): (&[_], &[_]) = match self {
            Decision::Record(recording) => (
                recording.reserved.serialized(),
                recording.created.serialized(),
            ),
            Decision::Answer(_) => (&[], &[]),
        };
        reserved.iter().chain(created)
    }
}

/// Decides `jobs` in order on `batch`, which then holds the streams as they leave them.
pub(super) async fn decide_all(
    batch: &mut Batch,
    jobs: &[Job],
    policy: &BookingPolicy,
    sealer: &Sealer,
) -> Vec<Decision> {
    let mut decisions = Vec::with_capacity(jobs.len());
    for job in jobs {
        let decision = match decide_one(batch, job, policy, sealer).await {
            Ok(decision) => decision,
            Err(refused) => Decision::Answer(Err(refused)),
        };
        decisions.push(decision);
    }
    decisions
}

async fn decide_one(
    batch: &mut Batch,
    job: &Job,
    policy: &BookingPolicy,
    sealer: &Sealer,
) -> Result<Decision, CommandError> {
    let ctx = &job.ctx;
    let asked = NewBooking {
        booking_id: ctx.new_id("booking"),
        driver_id: job.driver.user_id,
        slot_id: job.request.slot_id,
        range: job.request.range,
        vehicle_number: job.request.vehicle_number.clone(),
    };
    let slot = (batch.streams.slots.get(&asked.slot_id)).ok_or_else(not_loaded::<Slot>)?;
    let no_lot = ParkingLot::default();
    let lot = match &slot.aggregate.info {
        Some(info) => {
            let lot = batch.streams.lots.get(&info.lot_id);
            &lot.ok_or_else(not_loaded::<ParkingLot>)?.aggregate
        }
        None => &no_lot,
    };
    let decision = decide_booking(&slot.aggregate, lot, &asked, policy, ctx.now)?;

    if let Some(made) = batch.made.get(&asked.booking_id) {
        return first_attempt(made, &asked, job).map(|made| Decision::Answer(Ok(made)));
    }
    let reserved = decide(copy(slot), decision.reserve, &(), ctx).await?;
    let step_ctx = reserved
        .envelopes()
        .last()
        .map_or_else(|| ctx.clone(), |e| ctx.caused_by(e));
    let fresh = Bus::<Booking>::fresh(&asked.booking_id.to_string());
    let mut created = decide(fresh, decision.create, &(), &step_ctx).await?;
    created.seal_with(sealer).map_err(from_sealing)?;
    batch.streams.slots.set(asked.slot_id, reserved.after());
    // A twin of this request later in the batch (a retry that overtook the idempotency layer)
    // finds this booking made, as a retry after the batch would.
    let made = created.after().aggregate;
    let booking = CreatedBooking {
        booking_id: asked.booking_id,
        booking: made.state.clone().ok_or_else(|| {
            CommandError::Infrastructure("a booking decided without its creation".into())
        })?,
    };
    batch.made.insert(asked.booking_id, made);
    Ok(Decision::Record(Box::new(Recording {
        reserved,
        created,
        booking,
    })))
}

/// A retried request whose first attempt made its booking: that booking, if it is what the
/// request asks for. The answer must cover it, so the request's position is settled.
fn first_attempt(
    made: &Booking,
    asked: &NewBooking,
    job: &Job,
) -> Result<CreatedBooking, CommandError> {
    let made = made.state.as_ref().ok_or_else(|| {
        CommandError::Infrastructure("a booking stream without its creation".into())
    })?;
    if !made.answers(asked) {
        return Err(key_reused());
    }
    job.ctx.mark_unsettled();
    Ok(CreatedBooking {
        booking_id: asked.booking_id,
        booking: made.clone(),
    })
}

/// A stream the decision needs that the desk did not load for the batch: a bug in the desk,
/// never a reason to decide on something else.
fn not_loaded<A: cqrs_es::Aggregate>() -> CommandError {
    CommandError::Infrastructure(format!("a batch decided on a {} it did not load", A::TYPE).into())
}

/// The desk's decision loop, without a database: streams built from events in memory, requests
/// as the desk queues them.
#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use cqrs_es::Aggregate;
    use parking_domain::booking::VehicleNumber;
    use parking_domain::geo::GeoPoint;
    use parking_domain::lot::{LotDetails, LotEvent, SlotType};
    use parking_domain::money::{Currency, Money};
    use parking_domain::slot::SlotEvent;
    use parking_domain::time::TimeRange;
    use parking_domain::{Actor, Role};
    use tokio::sync::oneshot;

    use super::*;
    use crate::booking_desk::streams::StreamSet;
    use crate::booking_desk::BookingRequest;
    use crate::bus::Loaded;
    use crate::CommandContext;

    const SLOT: Uuid = Uuid::from_u128(11);
    const LOT: Uuid = Uuid::from_u128(10);
    const DRIVER: Actor = Actor {
        user_id: Uuid::from_u128(1),
        role: Role::User,
    };

    /// In-memory keys for the jobs' drivers.
    fn sealer(jobs: &[Job]) -> Sealer {
        Sealer::ephemeral(jobs.iter().map(|job| job.driver.user_id))
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
    }

    fn hours(from: i64, to: i64) -> TimeRange {
        TimeRange::new(now() + Duration::hours(from), now() + Duration::hours(to)).unwrap()
    }

    fn stream<A: Aggregate>(id: Uuid, events: Vec<A::Event>) -> Loaded<A> {
        let mut aggregate = A::default();
        let current_sequence = events.len();
        events.into_iter().for_each(|e| aggregate.apply(e));
        Loaded {
            aggregate_id: id.to_string(),
            aggregate,
            current_sequence,
            current_snapshot: None,
        }
    }

    fn lot_events(active: bool) -> Vec<LotEvent> {
        let mut events = vec![
            LotEvent::LotRegistered {
                owner_id: Uuid::from_u128(2),
                details: LotDetails {
                    name: "Central".into(),
                    address: "1 Main St".into(),
                    city: "Lyon".into(),
                    location: GeoPoint::new(45.76, 4.83).unwrap(),
                    hourly_rate: Money::new(250, Currency::parse("EUR").unwrap()).unwrap(),
                    daily_cap_minor: None,
                    description: None,
                    camera_url: None,
                    time_zone: Default::default(),
                },
            },
            LotEvent::SlotAdded {
                slot_id: SLOT,
                label: "A1".into(),
                slot_type: SlotType::Standard,
            },
        ];
        if !active {
            events.push(LotEvent::LotDeactivated {
                by: Uuid::from_u128(2),
            });
        }
        events
    }

    fn slot_events() -> Vec<SlotEvent> {
        vec![SlotEvent::SlotRegistered {
            lot_id: LOT,
            label: "A1".into(),
            slot_type: SlotType::Standard,
        }]
    }

    /// A batch holding the slot and, if given, its lot.
    fn batch(lot: Option<Vec<LotEvent>>) -> Batch {
        let mut batch = Batch::default();
        let slot = stream::<Slot>(SLOT, slot_events());
        batch.streams.slots.add(vec![SLOT], vec![slot]);
        if let Some(events) = lot {
            let lot = stream::<ParkingLot>(LOT, events);
            batch.streams.lots.add(vec![LOT], vec![lot]);
        }
        batch
    }

    /// A request as the desk queues it, and where its answer arrives.
    fn job(
        request_id: &str,
        key: Option<&str>,
        range: TimeRange,
        plate: &str,
    ) -> (Job, oneshot::Receiver<Outcome>) {
        let mut ctx = CommandContext::for_request(Some(DRIVER), request_id.into(), now());
        ctx.idempotency_key = key.map(str::to_owned);
        let (reply, answer) = oneshot::channel();
        let request = BookingRequest {
            slot_id: SLOT,
            range,
            vehicle_number: VehicleNumber::parse(plate).unwrap(),
        };
        let job = Job {
            ctx,
            driver: DRIVER,
            request,
            reply,
            attempt: 1,
        };
        (job, answer)
    }

    fn jobs(list: Vec<(Job, oneshot::Receiver<Outcome>)>) -> Vec<Job> {
        list.into_iter().map(|(job, _)| job).collect()
    }

    /// The event types and sequences a decision records, or the code it was refused with.
    fn outcome(decision: &Decision) -> Result<Vec<(String, i64)>, &'static str> {
        match decision {
            Decision::Record(_) => Ok(decision
                .events()
                .map(|e| (e.event_type.clone(), e.sequence))
                .collect()),
            Decision::Answer(Ok(_)) => Ok(Vec::new()),
            Decision::Answer(Err(e)) => Err(e.code()),
        }
    }

    fn recorded(sequence: i64) -> Result<Vec<(String, i64)>, &'static str> {
        Ok(vec![
            ("SlotReserved".to_owned(), sequence),
            ("BookingCreated".to_owned(), 1),
        ])
    }

    #[tokio::test]
    async fn requests_are_decided_in_arrival_order_on_the_slot_as_earlier_ones_leave_it() {
        let mut batch = batch(Some(lot_events(true)));
        let jobs = jobs(vec![
            job("a", None, hours(1, 2), "AB-1"),
            job("b", None, hours(1, 3), "AB-2"),
            job("c", None, hours(2, 3), "AB-3"),
        ]);
        let decisions =
            decide_all(&mut batch, &jobs, &BookingPolicy::default(), &sealer(&jobs)).await;
        let outcomes: Vec<_> = decisions.iter().map(outcome).collect();
        assert_eq!(
            outcomes,
            [recorded(2), Err("slot_already_reserved"), recorded(3)]
        );
        // The slot as the batch leaves it holds both reservations...
        let slot = batch.streams.slots.get(&SLOT).unwrap();
        assert_eq!(slot.current_sequence, 3);
        assert_eq!(slot.aggregate.reservations.len(), 2);
        // ...and the append checks it, and the lot, where the batch found them.
        let mut seen: Vec<_> = (batch.streams.seen().into_iter())
            .map(|s| (s.aggregate_type, s.sequence))
            .collect();
        seen.sort();
        assert_eq!(seen, [("lot", 2), ("slot", 1)]);
    }

    #[tokio::test]
    async fn a_twin_request_later_in_the_batch_gets_the_booking_the_first_made() {
        let mut batch = batch(Some(lot_events(true)));
        let (first, _) = job("first", Some("key"), hours(1, 2), "AB-1");
        let (twin, _) = job("retry", Some("key"), hours(1, 2), "AB-1");
        let (reuse, _) = job("other", Some("key"), hours(1, 2), "ZZ-9");
        let jobs = vec![first, twin, reuse];
        let decisions =
            decide_all(&mut batch, &jobs, &BookingPolicy::default(), &sealer(&jobs)).await;
        let Decision::Record(made) = &decisions[0] else {
            panic!("the first is recorded")
        };
        let Decision::Answer(Ok(twin)) = &decisions[1] else {
            panic!("the twin is answered without recording")
        };
        assert_eq!(twin.booking_id, made.booking.booking_id);
        assert_eq!(twin.booking, made.booking.booking);
        assert_eq!(outcome(&decisions[2]), Err("idempotency_key_reused"));
    }

    #[tokio::test]
    async fn a_deactivated_lot_refuses_every_request_and_its_state_is_still_checked() {
        let mut batch = batch(Some(lot_events(false)));
        let jobs = jobs(vec![
            job("a", None, hours(1, 2), "AB-1"),
            job("b", None, hours(3, 4), "AB-2"),
        ]);
        let decisions =
            decide_all(&mut batch, &jobs, &BookingPolicy::default(), &sealer(&jobs)).await;
        let outcomes: Vec<_> = decisions.iter().map(outcome).collect();
        assert_eq!(outcomes, [Err("lot_inactive"), Err("lot_inactive")]);
        assert_eq!(batch.streams.seen().len(), 2, "the slot and the lot");
    }

    #[tokio::test]
    async fn a_request_whose_lot_the_desk_did_not_load_fails_rather_than_decide_without_it() {
        let mut batch = batch(None);
        let jobs = jobs(vec![job("a", None, hours(1, 2), "AB-1")]);
        let decisions =
            decide_all(&mut batch, &jobs, &BookingPolicy::default(), &sealer(&jobs)).await;
        assert!(matches!(
            &decisions[0],
            Decision::Answer(Err(CommandError::Infrastructure(_)))
        ));
    }

    #[tokio::test]
    async fn a_batch_decided_on_held_copies_checks_them_where_it_found_them() {
        let mut held = Streams::default();
        let mut first = batch(Some(lot_events(true)));
        let jobs_1 = jobs(vec![job("a", None, hours(1, 2), "AB-1")]);
        decide_all(
            &mut first,
            &jobs_1,
            &BookingPolicy::default(),
            &sealer(&jobs_1),
        )
        .await;
        held.hold(first.streams);

        // The next batch takes the held copies: the slot as the first batch left it.
        let mut second = Batch {
            streams: Streams {
                slots: StreamSet::copies(&held.slots, &[SLOT]),
                lots: StreamSet::copies(&held.lots, &[LOT]),
            },
            made: HashMap::new(),
        };
        let jobs_2 = jobs(vec![
            job("b", None, hours(1, 2), "AB-2"),
            job("c", None, hours(2, 3), "AB-3"),
        ]);
        let decisions = decide_all(
            &mut second,
            &jobs_2,
            &BookingPolicy::default(),
            &sealer(&jobs_2),
        )
        .await;
        let outcomes: Vec<_> = decisions.iter().map(outcome).collect();
        assert_eq!(outcomes, [Err("slot_already_reserved"), recorded(3)]);
        let slot_seen = second
            .streams
            .seen()
            .into_iter()
            .find(|s| s.aggregate_type == "slot");
        assert_eq!(slot_seen.unwrap().sequence, 2);

        // A batch that was not recorded lets go of what it decided on; the rest stays held.
        held.let_go(&second.streams.seen()[..1]);
        let left = usize::from(held.slots.get(&SLOT).is_some())
            + usize::from(held.lots.get(&LOT).is_some());
        assert_eq!(left, 1);
    }
}

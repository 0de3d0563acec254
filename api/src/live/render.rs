//! Events into messages. A batch is rendered with a few queries whatever its size: the slots
//! and lots it touches are read from the read models once they have reached the batch (their
//! live status needs the bookings read model too), and the bookings and payments it touches
//! are folded from their own streams up to each event, so that a user's message shows the
//! booking or payment exactly as that event left it.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytestring::ByteString;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use parking_domain::booking::Booking;
use parking_domain::lot::{LotEvent, ParkingLot};
use parking_domain::payment::Payment;
use parking_infra::LoggedEvent;
use parking_projections::bookings::BookingView;
use parking_projections::lots::LotView;
use parking_projections::slots::SlotView;
use serde::Serialize;
use uuid::Uuid;

use super::messages::{BookingMessage, LotMessage, PaymentMessage, SlotMessage};
use super::{Note, Topic};
use crate::routes::payments::PaymentView;
use crate::state::AppState;

/// How long the hub waits for the read models at a time before saying so in the log (it then
/// waits on: a message is never skipped).
const READ_MODEL_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// What one event changed, as far as clients are told.
enum Change {
    Slot(Uuid),
    /// The slot of the booking the event belongs to.
    BookedSlot,
    Lot(Uuid),
    Booking(Uuid),
    Payment(Uuid),
}

/// The changes of `event`, in the order their messages go out.
fn changes(event: &LoggedEvent) -> Vec<Change> {
    let Ok(id) = event.aggregate_id.parse::<Uuid>() else {
        return Vec::new();
    };
    match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        // A new slot is told by the lot's `SlotAdded`, once the registry has it.
        ("slot", "SlotRegistered") => Vec::new(),
        ("slot", _) => vec![Change::Slot(id)],
        ("lot", "LotUpdated" | "LotDeactivated") => vec![Change::Lot(id)],
        ("lot", "SlotAdded" | "SlotUpdated") => match event.decode::<ParkingLot>() {
            Ok(envelope) => match envelope.payload {
                LotEvent::SlotAdded { slot_id, .. } | LotEvent::SlotUpdated { slot_id, .. } => {
                    vec![Change::Slot(slot_id)]
                }
                _ => Vec::new(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "live hub skips an event it cannot read");
                Vec::new()
            }
        },
        // A check-in changes the slot's status (`occupied`) with no slot event.
        ("booking", "BookingCheckedIn") => vec![Change::Booking(id), Change::BookedSlot],
        ("booking", _) => vec![Change::Booking(id)],
        ("payment", _) => vec![Change::Payment(id)],
        _ => Vec::new(),
    }
}

/// Each stream's state right after each of its events, by global position, with when that
/// event happened.
struct Folded<A: Aggregate> {
    after: HashMap<i64, (A, DateTime<Utc>)>,
}

impl<A: Aggregate + Clone> Folded<A> {
    async fn read(state: &AppState, ids: BTreeSet<Uuid>, up_to: i64) -> Result<Self, RenderError> {
        let mut after = HashMap::new();
        if ids.is_empty() {
            return Ok(Self { after });
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let mut events =
            parking_infra::log::read_streams(&state.pool, A::TYPE, &ids, up_to).await?;
        state
            .log
            .keys()
            .reveal(&mut events)
            .await
            .map_err(sqlx::Error::from)?;
        let mut current: Option<(String, A)> = None;
        for event in events {
            let envelope = match event.decode::<A>() {
                Ok(envelope) => envelope,
                Err(e) => {
                    tracing::warn!(error = %e, "live hub skips an event it cannot read");
                    continue;
                }
            };
            let aggregate = match &mut current {
                Some((id, aggregate)) if *id == event.aggregate_id => aggregate,
                _ => &mut current.insert((event.aggregate_id.clone(), A::default())).1,
            };
            let occurred = parking_projections::occurred_at(&envelope).unwrap_or(event.recorded_at);
            aggregate.apply(envelope.payload);
            after.insert(event.global_position, (aggregate.clone(), occurred));
        }
        Ok(Self { after })
    }
}

/// The messages of `events` (consecutive, in log order).
pub async fn render(state: &AppState, events: &[LoggedEvent]) -> Result<Vec<Note>, RenderError> {
    let last = events.last().map_or(0, |e| e.global_position);
    let changes: Vec<(&LoggedEvent, Vec<Change>)> =
        events.iter().map(|e| (e, changes(e))).collect();
    let (mut bookings, mut payments) = (BTreeSet::new(), BTreeSet::new());
    let (mut slot_ids, mut lot_ids) = (BTreeSet::new(), BTreeSet::new());
    for change in changes.iter().flat_map(|(_, c)| c) {
        match change {
            Change::Booking(id) => bookings.insert(*id),
            Change::Payment(id) => payments.insert(*id),
            Change::Slot(id) => slot_ids.insert(*id),
            Change::Lot(id) => lot_ids.insert(*id),
            Change::BookedSlot => false,
        };
    }
    let bookings = Folded::<Booking>::read(state, bookings, last).await?;
    let payments = Folded::<Payment>::read(state, payments, last).await?;
    // The slots of checked-in bookings.
    let booking_slot = |event: &LoggedEvent| {
        (bookings.after.get(&event.global_position))
            .and_then(|(b, _)| b.state.as_ref())
            .map(|b| b.slot_id)
    };
    for (event, changes) in &changes {
        if changes.iter().any(|c| matches!(c, Change::BookedSlot)) {
            slot_ids.extend(booking_slot(event));
        }
    }

    let (mut slots, mut lots) = (HashMap::new(), HashMap::new());
    if !slot_ids.is_empty() || !lot_ids.is_empty() {
        wait_for_read_models(state, last).await;
        let now = state.now();
        let slot_ids: Vec<Uuid> = slot_ids.into_iter().collect();
        slots = (parking_projections::slots::many(&state.pool, &slot_ids, now).await?)
            .into_iter()
            .map(|s| (s.id, s))
            .collect::<HashMap<Uuid, SlotView>>();
        lot_ids.extend(slots.values().map(|s| s.lot_id));
        let lot_ids: Vec<Uuid> = lot_ids.into_iter().collect();
        lots = (parking_projections::lots::many(&state.pool, &lot_ids, now).await?)
            .into_iter()
            .map(|l| (l.id, l))
            .collect::<HashMap<Uuid, LotView>>();
    }

    let mut notes = Vec::new();
    for (event, changes) in changes {
        let position = event.global_position;
        let kind = || event.event_type.clone();
        for change in changes {
            let note = match change {
                Change::Slot(_) | Change::BookedSlot => {
                    let id = match change {
                        Change::Slot(id) => Some(id),
                        _ => booking_slot(event),
                    };
                    let slot = id.and_then(|id| slots.get(&id));
                    let Some((slot, lot)) = slot.and_then(|s| Some((s, lots.get(&s.lot_id)?)))
                    else {
                        continue;
                    };
                    let topic = Topic::Lot(slot.lot_id);
                    note(
                        position,
                        topic,
                        &SlotMessage {
                            kind: kind(),
                            position,
                            topic: topic.to_string(),
                            lot_id: slot.lot_id,
                            slot_id: slot.id,
                            label: slot.label.clone(),
                            slot_type: slot.slot_type.clone(),
                            status: slot.status.clone(),
                            occupied: slot.occupied,
                            available_slots: lot.available_slots,
                            total_slots: lot.total_slots,
                        },
                    )?
                }
                Change::Lot(id) => {
                    let Some(lot) = lots.get(&id) else { continue };
                    let topic = Topic::Lot(id);
                    note(
                        position,
                        topic,
                        &LotMessage {
                            kind: kind(),
                            position,
                            topic: topic.to_string(),
                            lot_id: id,
                            name: lot.name.clone(),
                            is_active: lot.is_active,
                            hourly_rate_cents: lot.hourly_rate_cents,
                            daily_cap_cents: lot.daily_cap_cents,
                            currency: lot.currency.clone(),
                            available_slots: lot.available_slots,
                            total_slots: lot.total_slots,
                        },
                    )?
                }
                Change::Booking(id) => {
                    let Some((booking, occurred)) = (bookings.after.get(&position))
                        .and_then(|(b, at)| Some((b.state.as_ref()?, *at)))
                    else {
                        continue;
                    };
                    // As the bookings read model has it: its creation, then its last change.
                    let updated_at = if event.sequence == 1 {
                        booking.created_at
                    } else {
                        occurred
                    };
                    let topic = Topic::User(booking.user_id);
                    note(
                        position,
                        topic,
                        &BookingMessage {
                            kind: kind(),
                            position,
                            topic: topic.to_string(),
                            booking: BookingView::of(id, booking, updated_at),
                        },
                    )?
                }
                Change::Payment(id) => {
                    let Some(payment) =
                        (payments.after.get(&position)).and_then(|(p, _)| p.state.clone())
                    else {
                        continue;
                    };
                    let topic = Topic::User(payment.user_id);
                    note(
                        position,
                        topic,
                        &PaymentMessage {
                            kind: kind(),
                            position,
                            topic: topic.to_string(),
                            // Not the driver's client secret: not needed, so not sent.
                            payment: PaymentView::of(id, payment, Uuid::nil()),
                        },
                    )?
                }
            };
            notes.push(note);
        }
    }
    Ok(notes)
}

fn note(position: i64, topic: Topic, message: &impl Serialize) -> Result<Note, RenderError> {
    Ok(Note {
        position,
        topic,
        text: ByteString::from(serde_json::to_string(message)?),
    })
}

/// Waits until every read model has reached `position`, however long that takes.
async fn wait_for_read_models(state: &AppState, position: i64) {
    while let Err(lagging) = state
        .projections
        .wait_for(position, READ_MODEL_PATIENCE)
        .await
    {
        tracing::warn!(%lagging, "live hub waits for the read models");
    }
}

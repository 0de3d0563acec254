//! The booking process manager: slot reservation ⇄ booking.
//!
//! Booking a slot touches two aggregates. The slot decides (its calendar refuses overlaps
//! under optimistic concurrency), then the booking is created. If creation fails, the
//! reservation is released. If the process dies between the two steps, the reservation was
//! made with the booking's payment hold (`hold_until`), so it stops blocking the slot by
//! itself when the hold lapses: no sweeper is needed for correctness.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use parking_domain::booking::{
    price_for, Booking, BookingCommand, BookingError, BookingStatus, VehicleNumber,
};
use parking_domain::money::Money;
use parking_domain::slot::{Slot, SlotCommand};
use parking_domain::time::TimeRange;
use parking_domain::Violation;
use parking_infra::event_store::{append_all, AppendError};
use uuid::Uuid;

use crate::bus::{backoff, Bus, MAX_ATTEMPTS};
use crate::context::{actor, key_reused, CommandContext};
use crate::error::CommandError;
use crate::service::Commands;

pub struct BookingRequest {
    pub slot_id: Uuid,
    pub range: TimeRange,
    pub vehicle_number: VehicleNumber,
}

#[derive(Debug, Clone)]
pub struct CreatedBooking {
    pub booking_id: Uuid,
    pub price: Money,
    pub hold_until: DateTime<Utc>,
}

fn slot_not_found() -> CommandError {
    CommandError::rejected("slot_not_found", Violation::NotFound, "no such slot")
}

impl Commands {
    #[tracing::instrument(skip_all, fields(slot_id = %request.slot_id))]
    pub async fn book(
        &self,
        ctx: &CommandContext,
        request: BookingRequest,
    ) -> Result<CreatedBooking, CommandError> {
        let driver = actor(ctx)?;
        let policy = &self.settings.booking_policy;
        policy.check(&request.range, ctx.now)?;

        let slot_key = request.slot_id.to_string();
        let loaded = self.slots.load_for_command(&slot_key).await?;
        let slot: &Slot = &loaded.aggregate;
        let info = slot.info.clone().ok_or_else(slot_not_found)?;
        let lot = self.lot(info.lot_id).await?;
        if !lot.slots.values().any(|s| s.slot_id == request.slot_id) {
            return Err(slot_not_found());
        }
        if !lot.active {
            return Err(CommandError::rejected(
                "lot_inactive",
                Violation::Conflict,
                "the lot is deactivated",
            ));
        }

        let booking_id = ctx.new_id("booking");
        if ctx.may_be_retry() {
            if let Some(made) = self
                .made_by_first_attempt(ctx, booking_id, driver.user_id, &request)
                .await?
            {
                return Ok(made);
            }
        }
        let price = price_for(&lot.details.hourly_rate, &request.range);
        let booking_key = booking_id.to_string();
        // The reservation and the booking are recorded together, in one statement: a slot is
        // never held for a booking that does not exist. A lost race (the slot's stream moved)
        // decides again on the slot as it is now.
        let mut loaded = Some(loaded);
        for attempt in 1..=MAX_ATTEMPTS {
            let slot = match loaded.take() {
                Some(slot) => slot,
                None => self.slots.load_for_command(&slot_key).await?,
            };
            // A booking whose reservation was recorded alone (by the two-step process of
            // earlier versions) keeps that reservation's hold while it runs.
            let hold_until = slot
                .aggregate
                .reservations
                .get(&booking_id)
                .filter(|r| r.is_live(ctx.now))
                .and_then(|r| r.hold_until)
                .unwrap_or_else(|| policy.hold_until(ctx.now));
            let reserve = SlotCommand::Reserve {
                booking_id,
                range: request.range,
                hold_until: Some(hold_until),
                now: ctx.now,
            };
            let reserved = self.slots.decide(slot, reserve, ctx).await?;
            let step_ctx = reserved
                .envelopes()
                .last()
                .map_or_else(|| ctx.clone(), |e| ctx.caused_by(e));
            let create = BookingCommand::Create {
                user_id: driver.user_id,
                lot_id: info.lot_id,
                lot_owner_id: lot.owner_id,
                slot_id: request.slot_id,
                range: request.range,
                vehicle_number: request.vehicle_number.clone(),
                price: price.clone(),
                hold_until,
                now: ctx.now,
            };
            let created = self
                .bookings
                .decide(Bus::<Booking>::fresh(&booking_key), create, &step_ctx)
                .await?;
            let events = reserved.serialized().iter().chain(created.serialized());
            match append_all(self.log.pool(), events).await {
                Ok(()) => {
                    self.slots.recorded(reserved, ctx).await;
                    self.bookings.recorded(created, ctx).await;
                    return Ok(CreatedBooking {
                        booking_id,
                        price,
                        hold_until,
                    });
                }
                Err(AppendError::Conflict) => {
                    // Either the slot changed, or a twin of this request (same key) made the
                    // booking meanwhile.
                    if ctx.may_be_retry() {
                        if let Some(made) = self
                            .made_by_first_attempt(ctx, booking_id, driver.user_id, &request)
                            .await?
                        {
                            return Ok(made);
                        }
                    }
                    tracing::debug!(attempt, "lost a concurrent append; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(AppendError::Database(e)) => {
                    return Err(CommandError::Infrastructure(e.into()))
                }
            }
        }
        Err(CommandError::Contention {
            aggregate: Slot::TYPE,
            id: slot_key,
        })
    }

    /// For a retried request (one with an idempotency key): the booking its first attempt
    /// created, if it got that far, with its position noted in `ctx`.
    async fn made_by_first_attempt(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
        driver: Uuid,
        request: &BookingRequest,
    ) -> Result<Option<CreatedBooking>, CommandError> {
        let key = booking_id.to_string();
        let Some(made) = self.bookings.load(&key).await?.state else {
            return Ok(None);
        };
        let same = made.user_id == driver
            && made.slot_id == request.slot_id
            && made.range == request.range
            && made.vehicle_number == request.vehicle_number;
        if !same {
            return Err(key_reused());
        }
        ctx.mark_unsettled();
        Ok(Some(CreatedBooking {
            booking_id,
            price: made.price,
            hold_until: made.hold_until,
        }))
    }

    /// Cancels a booking and frees its slot. Cancelling an already cancelled booking answers
    /// the conflict but first re-drives the release, so a release lost to a crash is repaired
    /// by the client's retry.
    #[tracing::instrument(skip_all, fields(%booking_id))]
    pub async fn cancel_booking(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
        reason: Option<String>,
    ) -> Result<(), CommandError> {
        let actor = actor(ctx)?;
        let key = booking_id.to_string();
        let booking: Booking = self.bookings.load(&key).await?;
        let state = booking.state.ok_or(BookingError::NotFound)?;
        match self
            .bookings
            .execute(&key, BookingCommand::Cancel { actor, reason }, ctx)
            .await
        {
            Ok(cancelled) => {
                let step_ctx = cancelled
                    .last()
                    .map_or_else(|| ctx.clone(), |e| ctx.caused_by(e));
                self.release(&step_ctx, state.slot_id, booking_id).await;
                Ok(())
            }
            Err(e) => {
                // Only a booking already cancelled has a release to repair; an active one keeps its slot.
                if state.status == BookingStatus::Cancelled && actor.is_or_admin(state.user_id) {
                    self.release(ctx, state.slot_id, booking_id).await;
                }
                Err(e)
            }
        }
    }

    /// Frees a booking's reservation. Idempotent; a failure is logged, not raised, because
    /// the booking's own outcome already stands and the reservation lapses with its hold.
    async fn release(&self, ctx: &CommandContext, slot_id: Uuid, booking_id: Uuid) {
        let release = SlotCommand::Release { booking_id };
        if let Err(e) = self.slots.execute(&slot_id.to_string(), release, ctx).await {
            tracing::error!(error = %e, %slot_id, %booking_id, "could not release a slot reservation");
        }
    }
}

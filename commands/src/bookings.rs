//! The booking process: slot reservation and booking, and cancellation.
//!
//! Booking a slot touches two aggregates: the slot decides (its calendar refuses overlaps under
//! optimistic concurrency) and the booking is created, and both are recorded in one statement
//! (`booking_desk`), so a slot is never held for a booking that does not exist. Cancelling
//! records the booking's cancellation, then releases its reservation; a release lost to a crash
//! is re-driven by the client's retry, and an unpaid reservation stops blocking its slot by
//! itself when its hold lapses.

use cqrs_es::Aggregate;
use parking_domain::booking::{Booking, BookingCommand, BookingError, BookingState, BookingStatus};
use parking_domain::slot::SlotCommand;
use uuid::Uuid;

use crate::booking_desk::{BookingRequest, CreatedBooking};
use crate::context::{actor, CommandContext};
use crate::error::CommandError;
use crate::service::Commands;

impl Commands {
    /// Books a slot: the slot's calendar reserves the range and the booking is created, both
    /// recorded in one statement, so a slot is never held for a booking that does not exist.
    /// Concurrent requests are decided and recorded in shared batches (`BookingDesk`), each by
    /// the domain's rules (`parking_domain::booking::decide_booking`).
    #[tracing::instrument(skip_all, fields(slot_id = %request.slot_id))]
    pub async fn book(
        &self,
        ctx: &CommandContext,
        request: BookingRequest,
    ) -> Result<CreatedBooking, CommandError> {
        let driver = actor(ctx)?;
        self.desk.book(ctx, driver, request).await
    }

    /// Cancels a booking and frees its slot; returns the booking as cancelled. Cancelling an
    /// already cancelled booking answers the conflict but first re-drives the release, so a
    /// release lost to a crash is repaired by the client's retry.
    #[tracing::instrument(skip_all, fields(%booking_id))]
    pub async fn cancel_booking(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
        reason: Option<String>,
    ) -> Result<BookingState, CommandError> {
        let actor = actor(ctx)?;
        let key = booking_id.to_string();
        let mut booking: Booking = self.bookings.load(&key).await?;
        let state = booking.state.clone().ok_or(BookingError::NotFound)?;
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
                for event in cancelled {
                    booking.apply(event.payload);
                }
                booking.state.ok_or_else(|| {
                    CommandError::Infrastructure("a cancelled booking without its creation".into())
                })
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

//! The booking process: booking a slot, and every later step of the lifecycle.
//!
//! Booking a slot touches two aggregates: the slot decides (its calendar refuses overlaps under
//! optimistic concurrency) and the booking is created, and both are recorded in one statement
//! (`booking_desk`), so a slot is never held for a booking that does not exist. Every later
//! step that changes what the slot holds is recorded the same way, with the slot's step in the
//! same append ([`Commands::transition`]): a confirmation makes the reservation firm, and a
//! check-out, a cancellation or an expiry releases it. The slot's reservation therefore
//! follows the booking exactly, with nothing to repair after a crash.

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, EventEnvelope};
use parking_domain::booking::{Booking, BookingCommand, BookingError, BookingEvent, BookingState};
use parking_domain::money::Money;
use parking_domain::slot::SlotCommand;
use parking_infra::append::{append_all, AppendError};
use uuid::Uuid;

use crate::booking_desk::{BookingRequest, CreatedBooking};
use crate::context::{actor, CommandContext};
use crate::error::CommandError;
use crate::retry;
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

    /// `confirmed → active`: the driver (or the lot's owner) arrives, from the start minus
    /// `CHECK_IN_GRACE_SECONDS` on.
    #[tracing::instrument(skip_all, fields(%booking_id))]
    pub async fn check_in(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
    ) -> Result<BookingState, CommandError> {
        let command = BookingCommand::CheckIn {
            actor: actor(ctx)?,
            grace: self.settings.booking_policy.check_in_grace,
            now: ctx.now,
        };
        self.transition(ctx, booking_id, command).await
    }

    /// `active → completed`; the slot is free from now on.
    #[tracing::instrument(skip_all, fields(%booking_id))]
    pub async fn check_out(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
    ) -> Result<BookingState, CommandError> {
        let command = BookingCommand::CheckOut {
            actor: actor(ctx)?,
            now: ctx.now,
        };
        self.transition(ctx, booking_id, command).await
    }

    /// Cancels a pending or confirmed booking and frees its slot. A paid booking cancelled
    /// before its start is refunded in full; after its start nothing is refunded by itself (the
    /// slot was kept for the driver), and the lot's owner or an admin may refund by hand
    /// (docs/architecture.md, "Payments").
    #[tracing::instrument(skip_all, fields(%booking_id))]
    pub async fn cancel_booking(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
        reason: Option<String>,
    ) -> Result<BookingState, CommandError> {
        let command = BookingCommand::Cancel {
            actor: actor(ctx)?,
            reason,
            now: ctx.now,
        };
        let cancelled = self.transition(ctx, booking_id, command).await;
        // Also on a repeated cancel (409): the refund a crash may have cut off is re-driven.
        let booking = match &cancelled {
            Ok(booking) => Some(booking.clone()),
            Err(_) => self.bookings.load(&booking_id.to_string()).await?.state,
        };
        if let Some(payment_id) = booking.filter(|b| b.refund_due).and_then(|b| b.payment_id) {
            let refund_id = Uuid::new_v5(&payment_id, b"cancelled before start");
            self.refund_for_the_system(ctx, payment_id, refund_id, "booking cancelled")
                .await;
        }
        cancelled
    }

    /// `pending → expired` once its payment hold has run out, releasing the slot. Driven by
    /// the expiry sweep (`expire_due`), on any node; the aggregate makes it happen once.
    pub async fn expire_booking(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
    ) -> Result<BookingState, CommandError> {
        let command = BookingCommand::Expire { now: ctx.now };
        self.transition(ctx, booking_id, command).await
    }

    /// `pending → confirmed` by a payment of the booking's exact price; the slot's reservation
    /// becomes firm (or, should its hold have lapsed, is won again if the range is free).
    pub(crate) async fn confirm_booking(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
        payment_id: Uuid,
        paid: Money,
    ) -> Result<BookingState, CommandError> {
        let command = BookingCommand::Confirm {
            payment_id,
            paid,
            now: ctx.now,
        };
        self.transition(ctx, booking_id, command).await
    }

    /// Runs `command` on the booking and, in the same append, the step its slot's reservation
    /// takes with it. Retried on a lost race like every command. Returns the booking as it is
    /// afterwards (unchanged when the command changed nothing).
    async fn transition(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
        command: BookingCommand,
    ) -> Result<BookingState, CommandError> {
        let key = booking_id.to_string();
        for attempt in 1.. {
            let loaded = self.bookings.load_for_command(&key).await?;
            let booking = loaded
                .aggregate
                .state
                .clone()
                .ok_or(BookingError::NotFound)?;
            let decided = self.bookings.decide(loaded, command.clone(), ctx).await?;
            if decided.envelopes().is_empty() {
                return Ok(booking);
            }
            let slot_decided = match slot_step(booking_id, &booking, decided.envelopes(), ctx.now) {
                Some(step) => {
                    let slot_key = booking.slot_id.to_string();
                    let slot = self.slots.load_for_command(&slot_key).await?;
                    Some(self.slots.decide(slot, step, ctx).await?)
                }
                None => None,
            };
            let slot_events = slot_decided.iter().flat_map(|s| s.serialized());
            match append_all(
                self.log.pool(),
                decided.serialized().iter().chain(slot_events),
            )
            .await
            {
                Ok(head) => {
                    if let Some(slot_decided) = slot_decided {
                        self.slots.recorded(slot_decided, head, ctx).await;
                    }
                    let recorded = self.bookings.recorded(decided, head, ctx).await;
                    return Ok(after(booking, recorded));
                }
                Err(AppendError::Conflict) => match retry::after_lost_race(attempt) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => break,
                },
                Err(AppendError::Database(e)) => return Err(CommandError::Infrastructure(e)),
            }
        }
        Err(CommandError::Contention {
            aggregate: Booking::TYPE,
            id: key,
        })
    }
}

/// What the slot does when the booking records `events`: a firm reservation on confirmation,
/// a release when the booking gives the slot back.
fn slot_step(
    booking_id: Uuid,
    booking: &BookingState,
    events: &[EventEnvelope<Booking>],
    now: DateTime<Utc>,
) -> Option<SlotCommand> {
    let event = &events.last()?.payload;
    if let BookingEvent::BookingConfirmed { .. } = event {
        return Some(SlotCommand::Confirm {
            booking_id,
            range: booking.range,
            now,
        });
    }
    event
        .releases_slot()
        .then_some(SlotCommand::Release { booking_id })
}

/// The booking after its newly recorded events.
fn after(booking: BookingState, recorded: Vec<EventEnvelope<Booking>>) -> BookingState {
    let mut aggregate = Booking {
        state: Some(booking),
    };
    for event in recorded {
        aggregate.apply(event.payload);
    }
    aggregate.state.expect("a booking stays a booking")
}

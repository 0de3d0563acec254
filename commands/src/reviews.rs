//! Safety reviews of lots.

use parking_domain::booking::BookingStatus;
use parking_domain::lot::LotError;
use parking_domain::review::{review_id_for, Ratings, ReviewCommand, ReviewEvent, ReviewState};
use parking_domain::Violation;
use uuid::Uuid;

use crate::context::{actor, CommandContext};
use crate::error::CommandError;
use crate::service::Commands;

/// What [`Commands::review_lot`] recorded.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub review_id: Uuid,
    pub review: ReviewState,
    /// `false`: the driver's first review of the lot (or the first since one was removed).
    pub revised: bool,
}

impl Commands {
    /// The signed-in driver's review of `lot_id`, or its revision. Only a driver with a booking
    /// at the lot that was neither cancelled nor expired may review it: checked on the event
    /// store (the bookings' own streams), not on a read model.
    #[tracing::instrument(skip_all, fields(%lot_id))]
    pub async fn review_lot(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
        ratings: Ratings,
        comment: Option<String>,
    ) -> Result<Reviewed, CommandError> {
        let actor = actor(ctx)?;
        let lot = self.lots.load(&lot_id.to_string()).await?;
        if lot.registered.is_none() {
            return Err(LotError::NotFound.into());
        }
        let has_booked = self.has_booked(actor.user_id, lot_id).await?;
        let review_id = review_id_for(lot_id, actor.user_id);
        let command = ReviewCommand::Submit {
            lot_id,
            user_id: actor.user_id,
            ratings,
            comment,
            has_booked,
            at: ctx.now,
        };
        let recorded = self
            .reviews
            .execute(&review_id.to_string(), command, ctx)
            .await?;
        let revised = recorded
            .iter()
            .any(|e| matches!(e.payload, ReviewEvent::ReviewRevised { .. }));
        let review = self.reviews.load(&review_id.to_string()).await?.state;
        let review = review.ok_or_else(|| {
            CommandError::Infrastructure("a review just recorded is missing".into())
        })?;
        Ok(Reviewed {
            review_id,
            review,
            revised,
        })
    }

    /// An admin takes a review down, with a reason.
    #[tracing::instrument(skip_all, fields(%review_id))]
    pub async fn remove_review(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
        review_id: Uuid,
        reason: String,
    ) -> Result<(), CommandError> {
        let actor = actor(ctx)?;
        if !actor.is_admin() {
            return Err(CommandError::rejected(
                "forbidden",
                Violation::Forbidden,
                "only an admin removes reviews",
            ));
        }
        let review = self.reviews.load(&review_id.to_string()).await?;
        if review.state.as_ref().is_none_or(|r| r.lot_id != lot_id) {
            return Err(parking_domain::review::ReviewError::NotFound.into());
        }
        let command = ReviewCommand::Remove {
            by: actor.user_id,
            reason,
            at: ctx.now,
        };
        self.reviews
            .execute(&review_id.to_string(), command, ctx)
            .await?;
        Ok(())
    }

    /// Whether `user_id` has a booking at `lot_id` that was neither cancelled nor expired.
    async fn has_booked(&self, user_id: Uuid, lot_id: Uuid) -> Result<bool, CommandError> {
        let ids = parking_infra::reviews::bookings_of(self.log.pool(), user_id, lot_id)
            .await
            .map_err(|e| CommandError::Infrastructure(e.into()))?;
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let bookings = self.bookings.load_many(&ids).await?;
        Ok(bookings.iter().any(|loaded| {
            (loaded.aggregate.state.as_ref()).is_some_and(|b| {
                !matches!(b.status, BookingStatus::Cancelled | BookingStatus::Expired)
            })
        }))
    }
}

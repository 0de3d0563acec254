//! Lots and their slots.

use parking_domain::lot::{LotChanges, LotCommand, LotDetails, ParkingLot, SlotType};
use parking_domain::slot::SlotCommand;
use parking_domain::{Actor, Violation};
use uuid::Uuid;

use crate::context::CommandContext;
use crate::error::CommandError;
use crate::service::Commands;

pub(crate) fn actor(ctx: &CommandContext) -> Result<Actor, CommandError> {
    ctx.actor.ok_or_else(|| {
        CommandError::rejected(
            "unauthenticated",
            Violation::Forbidden,
            "this needs a signed-in user",
        )
    })
}

impl Commands {
    #[tracing::instrument(skip_all)]
    pub async fn register_lot(
        &self,
        ctx: &CommandContext,
        details: LotDetails,
    ) -> Result<Uuid, CommandError> {
        let lot_id = CommandContext::new_id();
        let command = LotCommand::Register {
            actor: actor(ctx)?,
            details,
        };
        self.lots.execute(&lot_id.to_string(), command, ctx).await?;
        Ok(lot_id)
    }

    #[tracing::instrument(skip_all, fields(%lot_id))]
    pub async fn update_lot(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
        changes: LotChanges,
    ) -> Result<(), CommandError> {
        let command = LotCommand::Update {
            actor: actor(ctx)?,
            changes,
        };
        self.lots.execute(&lot_id.to_string(), command, ctx).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(%lot_id))]
    pub async fn deactivate_lot(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
    ) -> Result<(), CommandError> {
        let command = LotCommand::Deactivate { actor: actor(ctx)? };
        self.lots.execute(&lot_id.to_string(), command, ctx).await?;
        Ok(())
    }

    /// Adds a slot to a lot. The slot's calendar stream is registered first and the lot's
    /// registry second: the lot is the authority on which slots exist (bookings check it), so
    /// a crash between the two leaves only an unreachable calendar, never a listed slot
    /// without one.
    #[tracing::instrument(skip_all, fields(%lot_id))]
    pub async fn add_slot(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
        label: String,
        slot_type: SlotType,
    ) -> Result<Uuid, CommandError> {
        let actor = actor(ctx)?;
        let slot_id = CommandContext::new_id();
        let add = LotCommand::AddSlot {
            actor,
            slot_id,
            label: label.clone(),
            slot_type,
        };
        // Refuse early what the lot would refuse, so that failures leave no stray calendar.
        self.lots.check(&lot_id.to_string(), add.clone()).await?;
        let register = SlotCommand::Register {
            lot_id,
            label: label.trim().to_owned(),
            slot_type,
        };
        let registered = self
            .slots
            .execute(&slot_id.to_string(), register, ctx)
            .await?;
        let ctx = registered
            .last()
            .map_or_else(|| ctx.clone(), |e| ctx.caused_by(e));
        self.lots.execute(&lot_id.to_string(), add, &ctx).await?;
        Ok(slot_id)
    }

    /// The registered lot, or `lot_not_found`.
    pub(crate) async fn lot(
        &self,
        lot_id: Uuid,
    ) -> Result<parking_domain::lot::RegisteredLot, CommandError> {
        let lot: ParkingLot = self.lots.load(&lot_id.to_string()).await?;
        lot.registered.ok_or_else(|| {
            CommandError::rejected("lot_not_found", Violation::NotFound, "no such lot")
        })
    }
}

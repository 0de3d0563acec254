//! Lots and their slots.

use parking_domain::lot::{LotChanges, LotCommand, LotDetails, LotError, ParkingLot, SlotType};
use parking_domain::slot::{Slot, SlotCommand};
use parking_domain::time::TimeZone;
use parking_domain::Violation;
use uuid::Uuid;

use crate::context::{actor, key_reused, CommandContext};
use crate::error::CommandError;
use crate::service::Commands;

impl Commands {
    /// Whether the database knows `zone`: the same zone list that will count the lot's days.
    async fn known_time_zone(&self, zone: &TimeZone) -> Result<(), CommandError> {
        let known = parking_infra::db::time_zone_known(self.log.pool(), zone.as_str())
            .await
            .map_err(|e| CommandError::Infrastructure(e.into()))?;
        if known {
            Ok(())
        } else {
            Err(LotError::UnknownTimeZone(zone.as_str().to_owned()).into())
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn register_lot(
        &self,
        ctx: &CommandContext,
        details: LotDetails,
    ) -> Result<Uuid, CommandError> {
        let actor = actor(ctx)?;
        let lot_id = ctx.new_id("lot");
        if ctx.may_be_retry() {
            let earlier: ParkingLot = self.lots.load(&lot_id.to_string()).await?;
            if let Some(made) = earlier.registered {
                // The first attempt registered it; the same request describes the same lot.
                let same = made.owner_id == actor.user_id
                    && made.details.name == details.name.trim()
                    && made.details.location == details.location
                    && made.details.hourly_rate == details.hourly_rate;
                ctx.mark_unsettled();
                return if same { Ok(lot_id) } else { Err(key_reused()) };
            }
        }
        self.known_time_zone(&details.time_zone).await?;
        let command = LotCommand::Register { actor, details };
        self.lots
            .execute_new(&lot_id.to_string(), command, ctx)
            .await?;
        Ok(lot_id)
    }

    #[tracing::instrument(skip_all, fields(%lot_id))]
    pub async fn update_lot(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
        changes: LotChanges,
    ) -> Result<(), CommandError> {
        if let Some(zone) = &changes.time_zone {
            self.known_time_zone(zone).await?;
        }
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
        // The lot is part of the derivation: one key used on two lots names two slots.
        let slot_id = ctx.new_id(&format!("slot of {lot_id}"));
        if ctx.may_be_retry() {
            let lot = self.lot(lot_id).await?;
            if let Some((key, entry)) = lot.slots.iter().find(|(_, s)| s.slot_id == slot_id) {
                // The first attempt completed; the same request describes the same slot.
                let same = *key == label.trim().to_lowercase() && entry.slot_type == slot_type;
                ctx.mark_unsettled();
                return if same { Ok(slot_id) } else { Err(key_reused()) };
            }
        }
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
        let registered = match self
            .slots
            .execute(&slot_id.to_string(), register, ctx)
            .await
        {
            // A retry after the first attempt registered the calendar but not the lot's entry.
            Err(e) if e.code() == "slot_already_registered" && ctx.may_be_retry() => {
                let slot: Slot = self.slots.load(&slot_id.to_string()).await?;
                let same = slot.info.is_some_and(|i| {
                    i.lot_id == lot_id && i.label == label.trim() && i.slot_type == slot_type
                });
                if !same {
                    return Err(key_reused());
                }
                Vec::new()
            }
            other => other?,
        };
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

/// A change to one slot; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SlotChanges {
    pub label: Option<String>,
    pub slot_type: Option<SlotType>,
    pub out_of_service: Option<bool>,
}

impl Commands {
    /// Changes a slot: label and type in its lot's registry, service state on its calendar.
    /// Both are authorized by the lot (its owner or an admin) before either is recorded.
    #[tracing::instrument(skip_all, fields(%slot_id))]
    pub async fn update_slot(
        &self,
        ctx: &CommandContext,
        slot_id: Uuid,
        changes: SlotChanges,
    ) -> Result<(), CommandError> {
        let actor = actor(ctx)?;
        let slot: Slot = self.slots.load(&slot_id.to_string()).await?;
        let not_found =
            || CommandError::rejected("slot_not_found", Violation::NotFound, "no such slot");
        let info = slot.info.ok_or_else(not_found)?;
        let lot = self.lot(info.lot_id).await?;
        if !lot.slots.values().any(|s| s.slot_id == slot_id) {
            return Err(not_found());
        }
        let lot_key = info.lot_id.to_string();
        let relabel = LotCommand::UpdateSlot {
            actor,
            slot_id,
            label: changes.label,
            slot_type: changes.slot_type,
        };
        // The lot decides first (owner, lot active, label free), so that a refused change records
        // nothing; the service change follows. Were it to fail in between (the database, not a
        // rule: the lot just authorized the same actor), the relabel stands and the error says so.
        self.lots.execute(&lot_key, relabel, ctx).await?;
        if let Some(out_of_service) = changes.out_of_service {
            let service = SlotCommand::SetOutOfService {
                actor,
                lot_owner_id: lot.owner_id,
                out_of_service,
            };
            self.slots
                .execute(&slot_id.to_string(), service, ctx)
                .await?;
        }
        Ok(())
    }
}

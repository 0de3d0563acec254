//! Occupancy observations: what the vision service (or an admin) saw on a slot.
//!
//! The slot records a change of its observed state only (`Slot::handle`), so a camera that
//! reports every frame does not grow the stream, and a late frame changes nothing.

use chrono::{DateTime, Utc};
use parking_domain::slot::SlotCommand;
use uuid::Uuid;

use crate::context::{actor, CommandContext};
use crate::error::CommandError;
use crate::service::Commands;

/// One observation of one slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub slot_id: Uuid,
    pub occupied: bool,
    pub confidence: f64,
    pub camera_id: Option<Uuid>,
    pub observed_at: DateTime<Utc>,
}

impl Commands {
    /// Records `observation` if it changes the slot's observed state; returns whether it did.
    #[tracing::instrument(skip_all, fields(slot_id = %observation.slot_id))]
    pub async fn observe(
        &self,
        ctx: &CommandContext,
        observation: Observation,
    ) -> Result<bool, CommandError> {
        let command = SlotCommand::Observe {
            actor: actor(ctx)?,
            occupied: observation.occupied,
            confidence: observation.confidence,
            camera_id: observation.camera_id,
            observed_at: observation.observed_at,
        };
        let key = observation.slot_id.to_string();
        let recorded = self.slots.execute(&key, command, ctx).await?;
        Ok(!recorded.is_empty())
    }
}

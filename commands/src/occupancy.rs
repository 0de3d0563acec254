//! Occupancy observations: what the vision service (or an admin) saw on a slot.
//!
//! The slot records a change of its observed state only (`Slot::handle`), so a camera that
//! reports every frame does not grow the stream, and a late frame changes nothing.

use chrono::{DateTime, Utc};
use parking_domain::slot::SlotCommand;
use uuid::Uuid;

use parking_domain::Violation;

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

/// How far ahead of the server's clock an observation's time may be (cameras' clocks drift).
pub const OBSERVATION_CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

impl Commands {
    /// Records `observation` if it changes the slot's observed state; returns whether it did.
    /// A time more than `OBSERVATION_CLOCK_SKEW` (60 s) ahead of now is refused
    /// (`observed_in_future`): it would hide every later observation.
    #[tracing::instrument(skip_all, fields(slot_id = %observation.slot_id))]
    pub async fn observe(
        &self,
        ctx: &CommandContext,
        observation: Observation,
    ) -> Result<bool, CommandError> {
        if observation.observed_at > ctx.now + OBSERVATION_CLOCK_SKEW {
            return Err(CommandError::rejected(
                "observed_in_future",
                Violation::Invalid,
                "observed_at is more than a minute ahead of the server's clock",
            ));
        }
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

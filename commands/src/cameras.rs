//! A lot's cameras: which camera sees which slot, for the vision service.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use parking_domain::lot::{CameraConfig, LotCommand, LotError};
use parking_domain::{Role, Violation};
use uuid::Uuid;

use crate::context::{actor, CommandContext};
use crate::error::CommandError;
use crate::service::Commands;

/// A camera as its owner describes it: the stream and each slot's polygon (`[x, y]` points).
#[derive(Debug, Clone)]
pub struct CameraSetup {
    /// May hold credentials: never logged.
    pub stream_url: String,
    pub slots: Vec<(Uuid, Vec<[f64; 2]>)>,
}

impl Commands {
    /// Adds or replaces a camera of the lot (its owner, an admin).
    #[tracing::instrument(skip_all, fields(%lot_id, %camera_id))]
    pub async fn configure_camera(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
        camera_id: Uuid,
        setup: CameraSetup,
    ) -> Result<CameraConfig, CommandError> {
        let command = LotCommand::ConfigureCamera {
            actor: actor(ctx)?,
            camera_id,
            stream_url: setup.stream_url,
            slots: setup.slots,
        };
        self.lots.execute(&lot_id.to_string(), command, ctx).await?;
        let mut cameras = self.cameras(ctx, lot_id).await?;
        cameras
            .remove(&camera_id)
            .ok_or_else(|| CommandError::Infrastructure("a configured camera is missing".into()))
    }

    #[tracing::instrument(skip_all, fields(%lot_id, %camera_id))]
    pub async fn remove_camera(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
        camera_id: Uuid,
    ) -> Result<(), CommandError> {
        let command = LotCommand::RemoveCamera {
            actor: actor(ctx)?,
            camera_id,
        };
        self.lots.execute(&lot_id.to_string(), command, ctx).await?;
        Ok(())
    }

    /// Records a camera's lighting score (0 to 100) if it moved `LIGHTING_STEP` or more from
    /// the last one recorded; returns whether it did. A time more than a minute ahead of now
    /// is refused (`observed_in_future`), as for occupancy.
    #[tracing::instrument(skip_all, fields(%lot_id, %camera_id))]
    pub async fn report_lighting(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
        camera_id: Uuid,
        score: f64,
        observed_at: DateTime<Utc>,
    ) -> Result<bool, CommandError> {
        if observed_at > ctx.now + crate::occupancy::OBSERVATION_CLOCK_SKEW {
            return Err(CommandError::rejected(
                "observed_in_future",
                Violation::Invalid,
                "observed_at is more than a minute ahead of the server's clock",
            ));
        }
        let command = LotCommand::ReportLighting {
            actor: actor(ctx)?,
            camera_id,
            score,
            observed_at,
        };
        let recorded = self.lots.execute(&lot_id.to_string(), command, ctx).await?;
        Ok(!recorded.is_empty())
    }

    /// The lot's cameras, with their stream URLs as configured (credentials included): for
    /// the lot's owner, admins and the vision service only.
    pub async fn cameras(
        &self,
        ctx: &CommandContext,
        lot_id: Uuid,
    ) -> Result<BTreeMap<Uuid, CameraConfig>, CommandError> {
        let caller = actor(ctx)?;
        let lot = self.lots.load(&lot_id.to_string()).await?.registered;
        let lot = lot.ok_or(LotError::NotFound)?;
        if !(caller.is_or_admin(lot.owner_id) || caller.role == Role::Service) {
            return Err(CommandError::rejected(
                "forbidden",
                Violation::Forbidden,
                "only the lot's owner, an admin or the vision service sees its cameras",
            ));
        }
        Ok(lot.cameras)
    }
}

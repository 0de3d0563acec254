use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CameraConfig, LotChanges, LotDetails, SlotType};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LotEvent {
    LotRegistered {
        owner_id: Uuid,
        details: LotDetails,
    },
    /// The fields the owner changed; the others are `null`.
    LotUpdated {
        changes: LotChanges,
    },
    LotDeactivated {
        by: Uuid,
    },
    SlotAdded {
        slot_id: Uuid,
        label: String,
        slot_type: SlotType,
    },
    /// A camera was added, or its configuration replaced as a whole.
    CameraConfigured {
        camera_id: Uuid,
        config: CameraConfig,
    },
    CameraRemoved {
        camera_id: Uuid,
    },
    /// A camera's lighting score (0 to 100, `LIGHTING_STEP` or more away from the last one
    /// recorded), as the vision service measured it at `observed_at`.
    CameraLightingObserved {
        camera_id: Uuid,
        score: f64,
        observed_at: DateTime<Utc>,
        by: Uuid,
    },
    /// The fields that changed; the others are `null`.
    SlotUpdated {
        slot_id: Uuid,
        label: Option<String>,
        slot_type: Option<SlotType>,
    },
}

impl DomainEvent for LotEvent {
    fn event_type(&self) -> String {
        match self {
            LotEvent::LotRegistered { .. } => "LotRegistered",
            LotEvent::LotUpdated { .. } => "LotUpdated",
            LotEvent::LotDeactivated { .. } => "LotDeactivated",
            LotEvent::SlotAdded { .. } => "SlotAdded",
            LotEvent::SlotUpdated { .. } => "SlotUpdated",
            LotEvent::CameraConfigured { .. } => "CameraConfigured",
            LotEvent::CameraRemoved { .. } => "CameraRemoved",
            LotEvent::CameraLightingObserved { .. } => "CameraLightingObserved",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

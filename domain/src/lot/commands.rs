use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::SlotType;
use crate::actor::Actor;
use crate::geo::GeoPoint;
use crate::money::Money;

/// Everything that describes a lot to drivers. Validated by construction of its parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LotDetails {
    pub name: String,
    pub address: String,
    pub city: String,
    pub location: GeoPoint,
    pub hourly_rate: Money,
    pub description: Option<String>,
    pub camera_url: Option<String>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LotChanges {
    pub name: Option<String>,
    pub address: Option<String>,
    pub city: Option<String>,
    pub location: Option<GeoPoint>,
    pub hourly_rate: Option<Money>,
    pub description: Option<String>,
    pub camera_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LotCommand {
    Register {
        actor: Actor,
        details: LotDetails,
    },
    Update {
        actor: Actor,
        changes: LotChanges,
    },
    Deactivate {
        actor: Actor,
    },
    AddSlot {
        actor: Actor,
        slot_id: Uuid,
        label: String,
        slot_type: SlotType,
    },
}

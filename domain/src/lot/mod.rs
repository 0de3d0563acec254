//! Parking lots and the registry of their slots.
//!
//! The lot owns its slots' identities and labels (unique within the lot); each slot's
//! calendar is its own aggregate ([`crate::slot::Slot`]) so that bookings of different slots
//! never contend. The lot also holds its cameras: which camera sees which of its slots.

mod aggregate;
mod camera;
mod commands;
mod events;

pub use aggregate::{LotError, ParkingLot, RegisteredLot, SlotEntry, LIGHTING_STEP};
pub use camera::{
    redact_credentials, CameraConfig, CameraError, CameraSlot, Polygon, StreamUrl,
    MAX_POLYGON_POINTS, MAX_SLOTS_PER_CAMERA,
};
pub use commands::{LotChanges, LotCommand, LotDetails};
pub use events::LotEvent;

use serde::{Deserialize, Serialize};

/// What kind of vehicle or driver a slot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotType {
    Standard,
    Disabled,
    EvCharging,
}

impl SlotType {
    pub const ALL: [SlotType; 3] = [SlotType::Standard, SlotType::Disabled, SlotType::EvCharging];

    pub fn as_str(self) -> &'static str {
        match self {
            SlotType::Standard => "standard",
            SlotType::Disabled => "disabled",
            SlotType::EvCharging => "ev_charging",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

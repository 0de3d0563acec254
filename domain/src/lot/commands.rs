use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::SlotType;
use crate::actor::Actor;
use crate::geo::GeoPoint;
use crate::money::{Currency, Money};
use crate::time::TimeZone;

/// Everything that describes a lot to drivers. Validated by construction of its parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LotDetails {
    pub name: String,
    pub address: String,
    pub city: String,
    pub location: GeoPoint,
    pub hourly_rate: Money,
    /// The most one day of parking costs, in the rate's currency (`booking::price_for`).
    #[serde(default)]
    pub daily_cap_minor: Option<i64>,
    pub description: Option<String>,
    pub camera_url: Option<String>,
    /// The calendar the lot's days are counted in (analytics); `UTC` in events recorded before
    /// lots had one.
    #[serde(default)]
    pub time_zone: TimeZone,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LotChanges {
    pub name: Option<String>,
    pub address: Option<String>,
    pub city: Option<String>,
    pub location: Option<GeoPoint>,
    /// A new rate in the lot's currency (or in `currency`, when that changes too).
    pub hourly_rate_minor: Option<i64>,
    pub currency: Option<Currency>,
    /// A new daily cap; `Some(0)` removes the cap.
    #[serde(default)]
    pub daily_cap_minor: Option<i64>,
    /// `Some("")` clears the description; `None` leaves it.
    pub description: Option<String>,
    /// `Some("")` clears the camera URL; `None` leaves it.
    pub camera_url: Option<String>,
    #[serde(default)]
    pub time_zone: Option<TimeZone>,
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
    /// Adds the camera, or replaces its configuration.
    ConfigureCamera {
        actor: Actor,
        camera_id: Uuid,
        stream_url: String,
        slots: Vec<(Uuid, Vec<[f64; 2]>)>,
    },
    RemoveCamera {
        actor: Actor,
        camera_id: Uuid,
    },
    /// What the vision service measured of how well a camera sees (its lighting score).
    ReportLighting {
        actor: Actor,
        camera_id: Uuid,
        score: f64,
        observed_at: DateTime<Utc>,
    },
    AddSlot {
        actor: Actor,
        slot_id: Uuid,
        label: String,
        slot_type: SlotType,
    },
    /// Relabel or retype a slot; `None` leaves a field as it is.
    UpdateSlot {
        actor: Actor,
        slot_id: Uuid,
        label: Option<String>,
        slot_type: Option<SlotType>,
    },
}

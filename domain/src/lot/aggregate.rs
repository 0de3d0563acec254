use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    CameraConfig, CameraError, CameraSlot, LotChanges, LotCommand, LotDetails, LotEvent, Polygon,
    SlotType, StreamUrl, MAX_SLOTS_PER_CAMERA,
};
use crate::actor::{Actor, Role};
use crate::error::{RuleError, Violation};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LotError {
    #[error("only parking owners and admins may register lots")]
    NotAnOwner,
    #[error("only the lot's owner or an admin may change it")]
    NotYourLot,
    #[error("this lot is already registered")]
    AlreadyRegistered,
    #[error("no such lot")]
    NotFound,
    #[error("the lot is deactivated")]
    Inactive,
    #[error("{field} must be 1 to {max} printable characters")]
    BadText { field: &'static str, max: usize },
    #[error("the hourly rate must not be negative")]
    NegativeRate,
    #[error("a daily cap must be a positive amount")]
    BadDailyCap,
    #[error("this lot has no such slot")]
    UnknownSlot,
    #[error("slot label {0:?} is already used in this lot")]
    DuplicateLabel(String),
    #[error("slot {0} is not a slot of this lot")]
    SlotOfAnotherLot(Uuid),
    #[error("no such camera")]
    UnknownCamera,
    #[error("only the vision service or an admin reports what cameras see")]
    NotAnObserver,
    #[error("a lighting score is between 0 and 100")]
    BadLightingScore,
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Paris or UTC")]
    UnknownTimeZone(String),
    #[error(transparent)]
    Camera(#[from] CameraError),
}

impl RuleError for LotError {
    fn code(&self) -> &'static str {
        match self {
            LotError::NotAnOwner | LotError::NotYourLot | LotError::NotAnObserver => "forbidden",
            LotError::BadLightingScore => "invalid_lighting_score",
            LotError::AlreadyRegistered => "lot_already_registered",
            LotError::NotFound => "lot_not_found",
            LotError::UnknownSlot => "slot_not_found",
            LotError::Inactive => "lot_inactive",
            LotError::BadText { .. } => "invalid_text",
            LotError::NegativeRate => "invalid_rate",
            LotError::BadDailyCap => "invalid_daily_cap",
            LotError::DuplicateLabel(_) => "duplicate_slot_label",
            LotError::SlotOfAnotherLot(_) => "slot_not_in_lot",
            LotError::UnknownCamera => "camera_not_found",
            LotError::UnknownTimeZone(_) => "invalid_time_zone",
            LotError::Camera(CameraError::BadStreamUrl) => "invalid_stream_url",
            LotError::Camera(CameraError::BadPolygon { .. }) => "invalid_polygon",
            LotError::Camera(CameraError::DuplicateSlot(_)) => "duplicate_camera_slot",
            LotError::Camera(CameraError::TooManySlots(_)) => "too_many_camera_slots",
        }
    }

    fn violation(&self) -> Violation {
        match self {
            LotError::NotAnOwner | LotError::NotYourLot | LotError::NotAnObserver => {
                Violation::Forbidden
            }
            LotError::NotFound | LotError::UnknownSlot | LotError::UnknownCamera => {
                Violation::NotFound
            }
            LotError::BadText { .. }
            | LotError::NegativeRate
            | LotError::BadDailyCap
            | LotError::SlotOfAnotherLot(_)
            | LotError::UnknownTimeZone(_)
            | LotError::BadLightingScore
            | LotError::Camera(_) => Violation::Invalid,
            LotError::AlreadyRegistered | LotError::Inactive | LotError::DuplicateLabel(_) => {
                Violation::Conflict
            }
        }
    }
}

/// A slot as the lot knows it (its label is the registry's key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotEntry {
    pub slot_id: Uuid,
    pub slot_type: SlotType,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkingLot {
    pub registered: Option<RegisteredLot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredLot {
    pub owner_id: Uuid,
    pub details: LotDetails,
    pub active: bool,
    /// Keyed by the normalized label (trimmed, lower case).
    pub slots: BTreeMap<String, SlotEntry>,
    #[serde(default)]
    pub cameras: BTreeMap<Uuid, CameraConfig>,
    /// Each camera's last recorded lighting score and when it was measured.
    #[serde(default)]
    pub lighting: BTreeMap<Uuid, (f64, DateTime<Utc>)>,
}

/// A camera's lighting score is recorded when it moves this far (on 0 to 100) from the last
/// one recorded: light changes slowly, and a camera reports it every minute or so.
pub const LIGHTING_STEP: f64 = 5.0;

impl RegisteredLot {
    /// The camera configuration `slots` describe, checked against this lot's registry.
    fn camera(
        &self,
        stream_url: &str,
        slots: Vec<(Uuid, Vec<[f64; 2]>)>,
    ) -> Result<CameraConfig, LotError> {
        let stream_url = StreamUrl::parse(stream_url)?;
        if slots.len() > MAX_SLOTS_PER_CAMERA {
            return Err(CameraError::TooManySlots(MAX_SLOTS_PER_CAMERA).into());
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut checked = Vec::with_capacity(slots.len());
        for (slot_id, points) in slots {
            if !self.slots.values().any(|s| s.slot_id == slot_id) {
                return Err(LotError::SlotOfAnotherLot(slot_id));
            }
            if !seen.insert(slot_id) {
                return Err(CameraError::DuplicateSlot(slot_id).into());
            }
            let polygon = Polygon::new(points)
                .map_err(|reason| CameraError::BadPolygon { slot_id, reason })?;
            checked.push(CameraSlot { slot_id, polygon });
        }
        Ok(CameraConfig {
            stream_url,
            slots: checked,
        })
    }
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, LotError> {
    crate::text::single_line(value, max).ok_or(LotError::BadText { field, max })
}

fn long_text(field: &'static str, value: &str, max: usize) -> Result<String, LotError> {
    crate::text::multi_line(value, max).ok_or(LotError::BadText { field, max })
}

type Check = fn(&'static str, &str, usize) -> Result<String, LotError>;

fn optional_text(
    field: &'static str,
    value: Option<String>,
    max: usize,
    check: Check,
) -> Result<Option<String>, LotError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => check(field, v, max).map(Some),
    }
}

fn clearable(
    field: &'static str,
    value: Option<String>,
    max: usize,
    check: Check,
) -> Result<Option<String>, LotError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(Some(String::new())),
        Some(v) => check(field, &v, max).map(Some),
    }
}

fn normalized_label(label: &str) -> String {
    label.trim().to_lowercase()
}

impl LotDetails {
    fn validated(self) -> Result<Self, LotError> {
        if self.daily_cap_minor.is_some_and(|cap| cap <= 0) {
            return Err(LotError::BadDailyCap);
        }
        Ok(Self {
            name: text("name", &self.name, 200)?,
            address: text("address", &self.address, 500)?,
            city: text("city", &self.city, 100)?,
            description: optional_text("description", self.description, 4000, long_text)?,
            camera_url: optional_text("camera_url", self.camera_url, 2000, text)?,
            ..self
        })
    }
}

impl LotChanges {
    fn validated(self) -> Result<Self, LotError> {
        let required = |field, v: Option<String>, max| v.map(|v| text(field, &v, max)).transpose();
        if self.hourly_rate_minor.is_some_and(|r| r < 0) {
            return Err(LotError::NegativeRate);
        }
        if self.daily_cap_minor.is_some_and(|cap| cap < 0) {
            return Err(LotError::BadDailyCap);
        }
        Ok(Self {
            name: required("name", self.name, 200)?,
            address: required("address", self.address, 500)?,
            city: required("city", self.city, 100)?,
            // An empty value clears the field; a non-empty one obeys registration's limits.
            description: clearable("description", self.description, 4000, long_text)?,
            camera_url: clearable("camera_url", self.camera_url, 2000, text)?,
            ..self
        })
    }

    fn is_empty(&self) -> bool {
        *self == LotChanges::default()
    }
}

impl ParkingLot {
    fn owned_by(&self, actor: &Actor) -> Result<&RegisteredLot, LotError> {
        let lot = self.registered.as_ref().ok_or(LotError::NotFound)?;
        if !actor.is_or_admin(lot.owner_id) {
            return Err(LotError::NotYourLot);
        }
        Ok(lot)
    }

    fn active_owned_by(&self, actor: &Actor) -> Result<&RegisteredLot, LotError> {
        let lot = self.owned_by(actor)?;
        if !lot.active {
            return Err(LotError::Inactive);
        }
        Ok(lot)
    }
}

impl Aggregate for ParkingLot {
    const TYPE: &'static str = "lot";
    type Command = LotCommand;
    type Event = LotEvent;
    type Error = LotError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            LotCommand::Register { actor, details } => {
                if !matches!(actor.role, Role::ParkingOwner | Role::Admin) {
                    return Err(LotError::NotAnOwner);
                }
                if self.registered.is_some() {
                    return Err(LotError::AlreadyRegistered);
                }
                let details = details.validated()?;
                sink.write(
                    LotEvent::LotRegistered {
                        owner_id: actor.user_id,
                        details,
                    },
                    self,
                )
                .await;
            }
            LotCommand::Update { actor, changes } => {
                self.active_owned_by(&actor)?;
                let changes = changes.validated()?;
                if !changes.is_empty() {
                    sink.write(LotEvent::LotUpdated { changes }, self).await;
                }
            }
            LotCommand::Deactivate { actor } => {
                // Deactivating twice is not an error: the lot is in the state asked for.
                if self.owned_by(&actor)?.active {
                    sink.write(LotEvent::LotDeactivated { by: actor.user_id }, self)
                        .await;
                }
            }
            LotCommand::AddSlot {
                actor,
                slot_id,
                label,
                slot_type,
            } => {
                let lot = self.active_owned_by(&actor)?;
                let label = text("label", &label, 50)?;
                if lot.slots.contains_key(&normalized_label(&label)) {
                    return Err(LotError::DuplicateLabel(label));
                }
                sink.write(
                    LotEvent::SlotAdded {
                        slot_id,
                        label,
                        slot_type,
                    },
                    self,
                )
                .await;
            }
            LotCommand::UpdateSlot {
                actor,
                slot_id,
                label,
                slot_type,
            } => {
                let lot = self.active_owned_by(&actor)?;
                let (current_key, current) = lot
                    .slots
                    .iter()
                    .find(|(_, entry)| entry.slot_id == slot_id)
                    .ok_or(LotError::UnknownSlot)?;
                let label = label.map(|l| text("label", &l, 50)).transpose()?;
                if let Some(label) = &label {
                    let key = normalized_label(label);
                    if key != *current_key && lot.slots.contains_key(&key) {
                        return Err(LotError::DuplicateLabel(label.clone()));
                    }
                }
                // Record only what changes.
                let slot_type = slot_type.filter(|t| *t != current.slot_type);
                if label.is_some() || slot_type.is_some() {
                    let updated = LotEvent::SlotUpdated {
                        slot_id,
                        label,
                        slot_type,
                    };
                    sink.write(updated, self).await;
                }
            }
            LotCommand::ConfigureCamera {
                actor,
                camera_id,
                stream_url,
                slots,
            } => {
                let lot = self.active_owned_by(&actor)?;
                let config = lot.camera(&stream_url, slots)?;
                // The same configuration again changes nothing.
                if lot.cameras.get(&camera_id) != Some(&config) {
                    let configured = LotEvent::CameraConfigured { camera_id, config };
                    sink.write(configured, self).await;
                }
            }
            LotCommand::RemoveCamera { actor, camera_id } => {
                let lot = self.owned_by(&actor)?;
                if !lot.cameras.contains_key(&camera_id) {
                    return Err(LotError::UnknownCamera);
                }
                sink.write(LotEvent::CameraRemoved { camera_id }, self)
                    .await;
            }
            LotCommand::ReportLighting {
                actor,
                camera_id,
                score,
                observed_at,
            } => {
                let lot = self.registered.as_ref().ok_or(LotError::NotFound)?;
                if !matches!(actor.role, Role::Service | Role::Admin) {
                    return Err(LotError::NotAnObserver);
                }
                if !lot.cameras.contains_key(&camera_id) {
                    return Err(LotError::UnknownCamera);
                }
                if !(0.0..=100.0).contains(&score) {
                    return Err(LotError::BadLightingScore);
                }
                let news = match lot.lighting.get(&camera_id) {
                    None => true,
                    // Late reports, and small moves, change nothing.
                    Some(&(last, at)) => observed_at > at && (score - last).abs() >= LIGHTING_STEP,
                };
                if news {
                    let observed = LotEvent::CameraLightingObserved {
                        camera_id,
                        score,
                        observed_at,
                        by: actor.user_id,
                    };
                    sink.write(observed, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            LotEvent::LotRegistered { owner_id, details } => {
                self.registered = Some(RegisteredLot {
                    owner_id,
                    details,
                    active: true,
                    slots: BTreeMap::new(),
                    cameras: BTreeMap::new(),
                    lighting: BTreeMap::new(),
                });
            }
            LotEvent::LotUpdated { changes } => {
                let Some(lot) = &mut self.registered else {
                    return;
                };
                let d = &mut lot.details;
                let LotChanges {
                    name,
                    address,
                    city,
                    location,
                    hourly_rate_minor,
                    currency,
                    daily_cap_minor,
                    description,
                    camera_url,
                    time_zone,
                } = changes;
                if let Some(zone) = time_zone {
                    d.time_zone = zone;
                }
                if let Some(cap) = daily_cap_minor {
                    d.daily_cap_minor = Some(cap).filter(|&cap| cap > 0);
                }
                d.name = name.unwrap_or(std::mem::take(&mut d.name));
                d.address = address.unwrap_or(std::mem::take(&mut d.address));
                d.city = city.unwrap_or(std::mem::take(&mut d.city));
                d.location = location.unwrap_or(d.location);
                if let Some(minor) = hourly_rate_minor {
                    d.hourly_rate.minor = minor;
                }
                if let Some(currency) = currency {
                    d.hourly_rate.currency = currency;
                }
                // An empty string clears an optional field.
                if let Some(text) = description {
                    d.description = Some(text).filter(|t| !t.is_empty());
                }
                if let Some(url) = camera_url {
                    d.camera_url = Some(url).filter(|u| !u.is_empty());
                }
            }
            LotEvent::LotDeactivated { .. } => {
                if let Some(lot) = &mut self.registered {
                    lot.active = false;
                }
            }
            LotEvent::SlotAdded {
                slot_id,
                label,
                slot_type,
            } => {
                if let Some(lot) = &mut self.registered {
                    lot.slots
                        .insert(normalized_label(&label), SlotEntry { slot_id, slot_type });
                }
            }
            LotEvent::SlotUpdated {
                slot_id,
                label,
                slot_type,
            } => {
                let Some(lot) = &mut self.registered else {
                    return;
                };
                let Some(key) = lot
                    .slots
                    .iter()
                    .find(|(_, e)| e.slot_id == slot_id)
                    .map(|(k, _)| k.clone())
                else {
                    return;
                };
                let mut entry = lot.slots.remove(&key).expect("found above");
                if let Some(slot_type) = slot_type {
                    entry.slot_type = slot_type;
                }
                let key = label.as_deref().map(normalized_label).unwrap_or(key);
                lot.slots.insert(key, entry);
            }
            LotEvent::CameraConfigured { camera_id, config } => {
                if let Some(lot) = &mut self.registered {
                    lot.cameras.insert(camera_id, config);
                }
            }
            LotEvent::CameraRemoved { camera_id } => {
                if let Some(lot) = &mut self.registered {
                    lot.cameras.remove(&camera_id);
                    lot.lighting.remove(&camera_id);
                }
            }
            LotEvent::CameraLightingObserved {
                camera_id,
                score,
                observed_at,
                ..
            } => {
                if let Some(lot) = &mut self.registered {
                    lot.lighting.insert(camera_id, (score, observed_at));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::GeoPoint;
    use crate::money::{Currency, Money};
    use cqrs_es::test::TestFramework;

    type LotTest = TestFramework<ParkingLot>;

    const OWNER: Actor = Actor {
        user_id: Uuid::from_u128(1),
        role: Role::ParkingOwner,
    };
    const STRANGER: Actor = Actor {
        user_id: Uuid::from_u128(2),
        role: Role::ParkingOwner,
    };
    const ADMIN: Actor = Actor {
        user_id: Uuid::from_u128(3),
        role: Role::Admin,
    };

    fn details() -> LotDetails {
        LotDetails {
            name: "Central".into(),
            address: "1 Main St".into(),
            city: "Lyon".into(),
            location: GeoPoint::new(45.76, 4.83).unwrap(),
            hourly_rate: Money::new(250, Currency::parse("EUR").unwrap()).unwrap(),
            daily_cap_minor: None,
            description: None,
            camera_url: None,
            time_zone: Default::default(),
        }
    }

    fn registered() -> LotEvent {
        LotEvent::LotRegistered {
            owner_id: OWNER.user_id,
            details: details(),
        }
    }

    fn add_slot(actor: Actor, label: &str) -> LotCommand {
        LotCommand::AddSlot {
            actor,
            slot_id: Uuid::from_u128(9),
            label: label.into(),
            slot_type: SlotType::Standard,
        }
    }

    #[test]
    fn an_owner_registers_a_lot() {
        LotTest::with(())
            .given_no_previous_events()
            .when(LotCommand::Register {
                actor: OWNER,
                details: details(),
            })
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn a_plain_user_cannot_register_a_lot() {
        let user = Actor {
            role: Role::User,
            ..OWNER
        };
        LotTest::with(())
            .given_no_previous_events()
            .when(LotCommand::Register {
                actor: user,
                details: details(),
            })
            .then_expect_error(LotError::NotAnOwner);
    }

    #[test]
    fn a_lot_needs_a_name() {
        LotTest::with(())
            .given_no_previous_events()
            .when(LotCommand::Register {
                actor: OWNER,
                details: LotDetails {
                    name: " ".into(),
                    ..details()
                },
            })
            .then_expect_error(LotError::BadText {
                field: "name",
                max: 200,
            });
    }

    #[test]
    fn another_owner_cannot_add_slots() {
        LotTest::with(())
            .given(vec![registered()])
            .when(add_slot(STRANGER, "A1"))
            .then_expect_error(LotError::NotYourLot);
    }

    #[test]
    fn an_admin_can_add_slots_to_any_lot() {
        LotTest::with(())
            .given(vec![registered()])
            .when(add_slot(ADMIN, " A1 "))
            .then_expect_events(vec![LotEvent::SlotAdded {
                slot_id: Uuid::from_u128(9),
                label: "A1".into(),
                slot_type: SlotType::Standard,
            }]);
    }

    #[test]
    fn slot_labels_are_unique_within_a_lot_regardless_of_case() {
        LotTest::with(())
            .given(vec![
                registered(),
                LotEvent::SlotAdded {
                    slot_id: Uuid::from_u128(8),
                    label: "A1".into(),
                    slot_type: SlotType::Standard,
                },
            ])
            .when(add_slot(OWNER, "a1"))
            .then_expect_error(LotError::DuplicateLabel("a1".into()));
    }

    fn a1_and_b1() -> Vec<LotEvent> {
        vec![
            registered(),
            LotEvent::SlotAdded {
                slot_id: Uuid::from_u128(8),
                label: "A1".into(),
                slot_type: SlotType::Standard,
            },
            LotEvent::SlotAdded {
                slot_id: Uuid::from_u128(9),
                label: "B1".into(),
                slot_type: SlotType::Standard,
            },
        ]
    }

    fn update_slot(
        actor: Actor,
        slot: u128,
        label: Option<&str>,
        slot_type: Option<SlotType>,
    ) -> LotCommand {
        LotCommand::UpdateSlot {
            actor,
            slot_id: Uuid::from_u128(slot),
            label: label.map(Into::into),
            slot_type,
        }
    }

    #[test]
    fn a_slot_is_relabelled_and_its_old_label_freed() {
        let mut lot = ParkingLot::default();
        a1_and_b1().into_iter().for_each(|e| lot.apply(e));
        lot.apply(LotEvent::SlotUpdated {
            slot_id: Uuid::from_u128(8),
            label: Some("C1".into()),
            slot_type: None,
        });
        let slots = &lot.registered.unwrap().slots;
        assert_eq!(slots.keys().collect::<Vec<_>>(), ["b1", "c1"]);
        assert_eq!(slots["c1"].slot_id, Uuid::from_u128(8));
    }

    #[test]
    fn a_slot_cannot_take_another_slots_label() {
        LotTest::with(())
            .given(a1_and_b1())
            .when(update_slot(OWNER, 8, Some("b1"), None))
            .then_expect_error(LotError::DuplicateLabel("b1".into()));
    }

    #[test]
    fn a_slot_may_change_the_case_of_its_own_label() {
        LotTest::with(())
            .given(a1_and_b1())
            .when(update_slot(OWNER, 8, Some("a1"), None))
            .then_expect_events(vec![LotEvent::SlotUpdated {
                slot_id: Uuid::from_u128(8),
                label: Some("a1".into()),
                slot_type: None,
            }]);
    }

    #[test]
    fn an_unchanged_type_is_not_recorded() {
        LotTest::with(())
            .given(a1_and_b1())
            .when(update_slot(OWNER, 8, None, Some(SlotType::Standard)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn only_the_owner_updates_slots_and_only_their_own() {
        LotTest::with(())
            .given(a1_and_b1())
            .when(update_slot(STRANGER, 8, None, Some(SlotType::Disabled)))
            .then_expect_error(LotError::NotYourLot);
        LotTest::with(())
            .given(a1_and_b1())
            .when(update_slot(OWNER, 77, None, Some(SlotType::Disabled)))
            .then_expect_error(LotError::UnknownSlot);
    }

    #[test]
    fn a_deactivated_lot_takes_no_new_slots() {
        LotTest::with(())
            .given(vec![
                registered(),
                LotEvent::LotDeactivated { by: OWNER.user_id },
            ])
            .when(add_slot(OWNER, "A1"))
            .then_expect_error(LotError::Inactive);
    }

    #[test]
    fn deactivating_twice_records_nothing_the_second_time() {
        LotTest::with(())
            .given(vec![
                registered(),
                LotEvent::LotDeactivated { by: OWNER.user_id },
            ])
            .when(LotCommand::Deactivate { actor: OWNER })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_empty_update_records_nothing() {
        LotTest::with(())
            .given(vec![registered()])
            .when(LotCommand::Update {
                actor: OWNER,
                changes: LotChanges::default(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn commands_on_an_unknown_lot_say_not_found() {
        LotTest::with(())
            .given_no_previous_events()
            .when(LotCommand::Deactivate { actor: ADMIN })
            .then_expect_error(LotError::NotFound);
    }

    const CAMERA: Uuid = Uuid::from_u128(70);
    const SLOT: Uuid = Uuid::from_u128(71);
    const SQUARE: [[f64; 2]; 4] = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5], [0.1, 0.5]];

    fn slot_added() -> LotEvent {
        LotEvent::SlotAdded {
            slot_id: SLOT,
            label: "A1".into(),
            slot_type: SlotType::Standard,
        }
    }

    fn configure(actor: Actor, slot_id: Uuid, polygon: &[[f64; 2]]) -> LotCommand {
        LotCommand::ConfigureCamera {
            actor,
            camera_id: CAMERA,
            stream_url: "rtsp://cam:secret@10.0.0.5/stream".into(),
            slots: vec![(slot_id, polygon.to_vec())],
        }
    }

    fn configured() -> LotEvent {
        LotEvent::CameraConfigured {
            camera_id: CAMERA,
            config: CameraConfig {
                stream_url: StreamUrl::parse("rtsp://cam:secret@10.0.0.5/stream").unwrap(),
                slots: vec![CameraSlot {
                    slot_id: SLOT,
                    polygon: Polygon::new(SQUARE.to_vec()).unwrap(),
                }],
            },
        }
    }

    #[test]
    fn the_owner_configures_a_camera_over_the_lots_slots() {
        LotTest::with(())
            .given(vec![registered(), slot_added()])
            .when(configure(OWNER, SLOT, &SQUARE))
            .then_expect_events(vec![configured()]);
        LotTest::with(())
            .given(vec![registered(), slot_added(), configured()])
            .when(configure(ADMIN, SLOT, &SQUARE))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_camera_over_another_lots_slot_or_a_bad_polygon_is_refused() {
        let elsewhere = Uuid::from_u128(99);
        LotTest::with(())
            .given(vec![registered(), slot_added()])
            .when(configure(OWNER, elsewhere, &SQUARE))
            .then_expect_error(LotError::SlotOfAnotherLot(elsewhere));
        LotTest::with(())
            .given(vec![registered(), slot_added()])
            .when(configure(OWNER, SLOT, &SQUARE[..2]))
            .then_expect_error(LotError::Camera(CameraError::BadPolygon {
                slot_id: SLOT,
                reason: "needs at least 3 points",
            }));
        LotTest::with(())
            .given(vec![registered(), slot_added()])
            .when(configure(STRANGER, SLOT, &SQUARE))
            .then_expect_error(LotError::NotYourLot);
    }

    #[test]
    fn removing_a_camera_it_does_not_have_is_refused() {
        LotTest::with(())
            .given(vec![registered(), slot_added(), configured()])
            .when(LotCommand::RemoveCamera {
                actor: OWNER,
                camera_id: CAMERA,
            })
            .then_expect_events(vec![LotEvent::CameraRemoved { camera_id: CAMERA }]);
        LotTest::with(())
            .given(vec![registered(), slot_added()])
            .when(LotCommand::RemoveCamera {
                actor: OWNER,
                camera_id: CAMERA,
            })
            .then_expect_error(LotError::UnknownCamera);
    }

    const VISION: Actor = Actor {
        user_id: Uuid::from_u128(4),
        role: Role::Service,
    };

    fn lighting(score: f64, minute: u32) -> (LotCommand, LotEvent) {
        let observed_at =
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2030, 1, 1, 20, minute, 0).unwrap();
        (
            LotCommand::ReportLighting {
                actor: VISION,
                camera_id: CAMERA,
                score,
                observed_at,
            },
            LotEvent::CameraLightingObserved {
                camera_id: CAMERA,
                score,
                observed_at,
                by: VISION.user_id,
            },
        )
    }

    #[test]
    fn a_cameras_lighting_is_recorded_when_it_moves_enough() {
        let setup = || vec![registered(), slot_added(), configured()];
        let (first, first_event) = lighting(80.0, 0);
        LotTest::with(())
            .given(setup())
            .when(first)
            .then_expect_events(vec![first_event.clone()]);
        // A small move, or a late report, records nothing; a move of LIGHTING_STEP does.
        for (score, minute, recorded) in [(83.0, 5, false), (60.0, 0, false), (75.0, 5, true)] {
            let (command, event) = lighting(score, minute);
            let expected = if recorded { vec![event] } else { vec![] };
            LotTest::with(())
                .given([setup(), vec![first_event.clone()]].concat())
                .when(command)
                .then_expect_events(expected);
        }
    }

    #[test]
    fn lighting_is_reported_by_the_vision_service_on_a_known_camera_within_0_to_100() {
        let (mut command, _) = lighting(50.0, 0);
        LotTest::with(())
            .given(vec![registered(), slot_added()])
            .when(command.clone())
            .then_expect_error(LotError::UnknownCamera);
        if let LotCommand::ReportLighting { actor, .. } = &mut command {
            *actor = OWNER;
        }
        LotTest::with(())
            .given(vec![registered(), slot_added(), configured()])
            .when(command)
            .then_expect_error(LotError::NotAnObserver);
        LotTest::with(())
            .given(vec![registered(), slot_added(), configured()])
            .when(lighting(100.5, 0).0)
            .then_expect_error(LotError::BadLightingScore);
    }
}

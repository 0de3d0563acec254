//! Slots with their live status. The lot's registry events create the rows
//! ([`crate::lots::LotsProjection`]); bookings give the status.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use async_trait::async_trait;
use cqrs_es::EventEnvelope;
use parking_domain::lot::SlotType;
use parking_domain::slot::{Slot, SlotEvent};
use parking_domain::time::TimeRange;

use crate::aggregate_uuid;
use crate::live::{with_clock, STATUS_SQL};
use crate::model::Projection;
use crate::page::{Page, PageRequest};

pub(crate) async fn insert(
    db: &mut PgConnection,
    slot_id: Uuid,
    lot_id: Uuid,
    label: &str,
    slot_type: &str,
    at: DateTime<Utc>,
    lot_version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rm_slots (id, lot_id, label, slot_type, created_at, version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(slot_id)
    .bind(lot_id)
    .bind(label)
    .bind(slot_type)
    .bind(at)
    .bind(lot_version)
    .execute(db)
    .await?;
    Ok(())
}

/// A slot's label or type changed in its lot's registry (lot event `lot_version`).
pub(crate) async fn relabel(
    db: &mut PgConnection,
    slot_id: Uuid,
    label: Option<&str>,
    slot_type: Option<&str>,
    lot_version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rm_slots SET label = COALESCE($2, label), slot_type = COALESCE($3, slot_type), version = $4
          WHERE id = $1 AND version < $4",
    )
    .bind(slot_id)
    .bind(label)
    .bind(slot_type)
    .bind(lot_version)
    .execute(db)
    .await?;
    Ok(())
}

/// The slot calendar's own events: in or out of service, and its observed occupancy.
/// (Reservations show through bookings; labels and types through the lot's registry.)
pub struct SlotsProjection;

#[async_trait]
impl Projection<Slot> for SlotsProjection {
    fn name(&self) -> &'static str {
        "slots"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_slot_service"]
    }

    /// Only the service events: a slot's stream is mostly reservations, one per booking, and
    /// those are not even decoded here.
    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "SlotTakenOutOfService" | "SlotReturnedToService" | "SlotOccupancyObserved"
        )
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &EventEnvelope<Slot>,
    ) -> Result<(), sqlx::Error> {
        let id = aggregate_uuid(event)?;
        let version = event.sequence as i64;
        let (out_of_service, observed) = match &event.payload {
            SlotEvent::SlotTakenOutOfService { .. } => (Some(true), None),
            SlotEvent::SlotReturnedToService { .. } => (Some(false), None),
            SlotEvent::SlotOccupancyObserved {
                occupied,
                observed_at,
                ..
            } => (None, Some((*occupied, *observed_at))),
            SlotEvent::SlotRegistered { .. }
            | SlotEvent::SlotReserved { .. }
            | SlotEvent::SlotReservationConfirmed { .. }
            | SlotEvent::SlotReleased { .. } => return Ok(()),
        };
        // Each event sets its own columns; the row's version is the slot stream's.
        sqlx::query(
            "INSERT INTO rm_slot_service (slot_id, out_of_service, occupied, observed_at, version)
             VALUES ($1, COALESCE($2, false), COALESCE($3, false), $4, $5)
             ON CONFLICT (slot_id) DO UPDATE SET
                 out_of_service = COALESCE($2, rm_slot_service.out_of_service),
                 occupied = COALESCE($3, rm_slot_service.occupied),
                 observed_at = COALESCE($4, rm_slot_service.observed_at),
                 version = EXCLUDED.version
              WHERE rm_slot_service.version < EXCLUDED.version",
        )
        .bind(id)
        .bind(out_of_service)
        .bind(observed.map(|o| o.0))
        .bind(observed.map(|o| o.1))
        .bind(version)
        .execute(db)
        .await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SlotView {
    pub id: Uuid,
    pub lot_id: Uuid,
    pub label: String,
    /// `standard`, `disabled` or `ev_charging`.
    pub slot_type: String,
    pub out_of_service: bool,
    /// `free`, `occupied`, `reserved` or `out_of_service`, now.
    pub status: String,
    /// Whether a car was there at the last observed change (`POST /slots/{id}/occupancy`).
    pub occupied: bool,
    /// When the observed state last changed; `null` until the slot is observed.
    pub observed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

fn select_slots() -> String {
    format!(
        "SELECT s.id, s.lot_id, s.label, s.slot_type, s.out_of_service, ({STATUS_SQL}) AS status,
                s.occupied, s.observed_at, s.created_at
           FROM rm_slots_live s"
    )
}

/// A lot's slots, by label.
pub async fn for_lot(
    pool: &PgPool,
    lot_id: Uuid,
    page: PageRequest,
    now: DateTime<Utc>,
) -> Result<Page<SlotView>, sqlx::Error> {
    let mut query = with_clock(now);
    query
        .push(select_slots())
        .push(" WHERE s.lot_id = ")
        .push_bind(lot_id)
        .push(" ORDER BY s.label, s.id LIMIT ")
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset());
    let items = query.build_query_as().fetch_all(pool).await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM rm_slots WHERE lot_id = $1")
        .bind(lot_id)
        .fetch_one(pool)
        .await?;
    Ok(Page::new(items, page, total))
}

pub async fn get(
    pool: &PgPool,
    slot_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<SlotView>, sqlx::Error> {
    let mut query = with_clock(now);
    query
        .push(select_slots())
        .push(" WHERE s.id = ")
        .push_bind(slot_id);
    query.build_query_as().fetch_optional(pool).await
}

/// The slots of `ids` that the read model has, in no particular order.
pub async fn many(
    pool: &PgPool,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<SlotView>, sqlx::Error> {
    let mut query = with_clock(now);
    query
        .push(select_slots())
        .push(" WHERE s.id = ANY(")
        .push_bind(ids)
        .push(")");
    query.build_query_as().fetch_all(pool).await
}

/// Which of a lot's slots are free for a whole range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Availability {
    /// How many slots (of the asked type) are free for the whole range.
    pub available: i64,
    /// How many slots (of the asked type) the lot has.
    pub total: i64,
    /// The free slots, by label, with their status now.
    pub slots: Vec<SlotView>,
}

/// Slots of `lot_id` (of `slot_type`, if given) that no live booking overlaps in `range`, that
/// are in service, and, for a range that has begun, where no car is observed now. Live, as for the calendar: confirmed or active, or pending with its
/// payment hold still running at `now`.
pub async fn availability(
    pool: &PgPool,
    lot_id: Uuid,
    range: TimeRange,
    slot_type: Option<SlotType>,
    now: DateTime<Utc>,
) -> Result<Availability, sqlx::Error> {
    let mut query = with_clock(now);
    query
        .push(select_slots())
        .push(" WHERE s.lot_id = ")
        .push_bind(lot_id);
    if let Some(slot_type) = slot_type {
        query
            .push(" AND s.slot_type = ")
            .push_bind(slot_type.as_str());
    }
    // A range that has begun needs the slot empty now, as its status shows it.
    if range.start() <= now {
        query.push(" AND NOT s.occupied");
    }
    query
        .push(
            " AND NOT s.out_of_service AND NOT EXISTS (
                SELECT 1 FROM rm_bookings b, clock
                 WHERE b.slot_id = s.id AND b.start_time < ",
        )
        .push_bind(range.end())
        .push(" AND b.end_time > ")
        .push_bind(range.start())
        .push(
            " AND (b.status IN ('confirmed', 'active')
                       OR (b.status = 'pending' AND b.hold_until > clock.now)))
             ORDER BY s.label, s.id",
        );
    let slots: Vec<SlotView> = query.build_query_as().fetch_all(pool).await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_slots WHERE lot_id = $1 AND ($2::text IS NULL OR slot_type = $2)",
    )
    .bind(lot_id)
    .bind(slot_type.map(SlotType::as_str))
    .fetch_one(pool)
    .await?;
    Ok(Availability {
        available: slots.len() as i64,
        total,
        slots,
    })
}

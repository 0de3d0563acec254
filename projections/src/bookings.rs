//! Bookings as drivers, lot owners and admins list them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::EventEnvelope;
use parking_domain::booking::{Booking, BookingEvent, BookingStatus};
use parking_domain::Actor;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::model::Projection;
use crate::page::{Page, PageRequest, Sort};
use crate::{aggregate_uuid, occurred_at};

pub struct BookingsProjection;

#[async_trait]
impl Projection<Booking> for BookingsProjection {
    fn name(&self) -> &'static str {
        "bookings"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_bookings"]
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &EventEnvelope<Booking>,
    ) -> Result<(), sqlx::Error> {
        let id = aggregate_uuid(event)?;
        let version = event.sequence as i64;
        let at = occurred_at(event)?;
        match &event.payload {
            BookingEvent::BookingCreated {
                user_id,
                lot_id,
                lot_owner_id,
                slot_id,
                range,
                vehicle_number,
                price,
                hold_until,
                created_at,
            } => {
                sqlx::query(
                    "INSERT INTO rm_bookings (id, user_id, lot_id, lot_owner_id, slot_id, start_time,
                        end_time, vehicle_number, price_cents, currency, status, hold_until,
                        created_at, updated_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(user_id)
                .bind(lot_id)
                .bind(lot_owner_id)
                .bind(slot_id)
                .bind(range.start())
                .bind(range.end())
                .bind(vehicle_number.as_str())
                .bind(price.minor)
                .bind(price.currency.as_str())
                .bind(BookingStatus::Pending.as_str())
                .bind(hold_until)
                .bind(created_at)
                .bind(version)
                .execute(db)
                .await?;
            }
            BookingEvent::BookingCancelled { .. } => {
                set_status(db, id, version, BookingStatus::Cancelled, at).await?;
            }
        }
        Ok(())
    }
}

async fn set_status(
    db: &mut PgConnection,
    id: Uuid,
    version: i64,
    status: BookingStatus,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rm_bookings SET status = $3, updated_at = $4, version = $2 WHERE id = $1 AND version < $2")
        .bind(id)
        .bind(version)
        .bind(status.as_str())
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BookingView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub lot_id: Uuid,
    pub slot_id: Uuid,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub vehicle_number: String,
    pub price_cents: i64,
    pub currency: String,
    /// `pending`, `confirmed`, `active`, `completed`, `cancelled` or `expired`.
    pub status: String,
    /// An unpaid booking stops holding its slot at this instant.
    pub hold_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub lot_owner_id: Uuid,
}

const SELECT_BOOKINGS: &str =
    "SELECT id, user_id, lot_id, lot_owner_id, slot_id, start_time, end_time,
        vehicle_number, price_cents, currency, status, hold_until, created_at, updated_at
   FROM rm_bookings b";

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<BookingView>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_BOOKINGS} WHERE b.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Whose bookings a reader may see: admins all; everyone else their own and those of the
/// lots they own. The one statement of this rule for lists and single reads alike.
#[derive(Debug, Clone, Copy)]
pub enum Visibility {
    All,
    /// Their own bookings and those of the lots they own.
    Party(Uuid),
}

impl Visibility {
    pub fn of(reader: &Actor) -> Self {
        if reader.is_admin() {
            Visibility::All
        } else {
            Visibility::Party(reader.user_id)
        }
    }

    pub fn allows(self, booking: &BookingView) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Party(user) => booking.user_id == user || booking.lot_owner_id == user,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct BookingFilter {
    pub status: Option<BookingStatus>,
    pub lot_id: Option<Uuid>,
}

pub const SORTS: &[(&str, &str)] = &[
    ("created_at", "b.created_at"),
    ("start_time", "b.start_time"),
    ("price_cents", "b.price_cents"),
    ("status", "b.status"),
];
pub const DEFAULT_SORT: Sort = Sort {
    column: "b.created_at",
    descending: true,
};

fn push_where<'a>(
    query: &mut QueryBuilder<'a, Postgres>,
    visibility: Visibility,
    filter: &BookingFilter,
) {
    query.push(" WHERE true");
    if let Visibility::Party(user) = visibility {
        query
            .push(" AND (b.user_id = ")
            .push_bind(user)
            .push(" OR b.lot_owner_id = ")
            .push_bind(user)
            .push(")");
    }
    if let Some(status) = filter.status {
        query.push(" AND b.status = ").push_bind(status.as_str());
    }
    if let Some(lot_id) = filter.lot_id {
        query.push(" AND b.lot_id = ").push_bind(lot_id);
    }
}

pub async fn list(
    pool: &PgPool,
    visibility: Visibility,
    filter: &BookingFilter,
    page: PageRequest,
    sort: Sort,
) -> Result<Page<BookingView>, sqlx::Error> {
    let mut items = QueryBuilder::new(SELECT_BOOKINGS);
    push_where(&mut items, visibility, filter);
    items.push(" ").push(sort.order_by("b.id"));
    items
        .push(" LIMIT ")
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset());
    let items: Vec<BookingView> = items.build_query_as().fetch_all(pool).await?;

    let mut total = QueryBuilder::new("SELECT count(*) FROM rm_bookings b");
    push_where(&mut total, visibility, filter);
    let total: i64 = total.build_query_scalar().fetch_one(pool).await?;
    Ok(Page::new(items, page, total))
}

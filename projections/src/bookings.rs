//! Bookings as drivers, lot owners and admins list them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::EventEnvelope;
use parking_domain::booking::{Booking, BookingEvent, BookingState, BookingStatus};
use parking_domain::personal::ERASED;
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

    fn holds_personal_data(&self) -> bool {
        true
    }

    /// The vehicle numbers of the person's bookings.
    async fn erase(&self, db: &mut PgConnection, person: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE rm_bookings SET vehicle_number = $2 WHERE user_id = $1")
            .bind(person)
            .bind(ERASED)
            .execute(db)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &EventEnvelope<Booking>,
    ) -> Result<(), sqlx::Error> {
        self.apply_batch(db, std::slice::from_ref(event)).await
    }

    /// Two statements for any number of events: the new bookings in one insert, then, per
    /// booking, its latest status in one update. Safe because a booking's creation comes
    /// before its status changes in its stream, and a status change replaces the whole status.
    async fn apply_batch(
        &self,
        db: &mut PgConnection,
        events: &[EventEnvelope<Booking>],
    ) -> Result<(), sqlx::Error> {
        let mut created = NewRows::default();
        // Latest status change per booking, in the order first seen.
        let mut changes: Vec<(Uuid, i64, BookingStatus, DateTime<Utc>)> = Vec::new();
        for event in events {
            let id = aggregate_uuid(event)?;
            let version = event.sequence as i64;
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
                    created.id.push(id);
                    created.user_id.push(*user_id);
                    created.lot_id.push(*lot_id);
                    created.lot_owner_id.push(*lot_owner_id);
                    created.slot_id.push(*slot_id);
                    created.start_time.push(range.start());
                    created.end_time.push(range.end());
                    created
                        .vehicle_number
                        .push(vehicle_number.as_str().to_owned());
                    created.price_cents.push(price.minor);
                    created.currency.push(price.currency.as_str().to_owned());
                    created.hold_until.push(*hold_until);
                    created.created_at.push(*created_at);
                    created.version.push(version);
                }
                later => {
                    let change = (id, version, later.status(), occurred_at(event)?);
                    match changes.iter_mut().find(|c| c.0 == id) {
                        Some(earlier) => *earlier = change,
                        None => changes.push(change),
                    }
                }
            }
        }
        if !created.id.is_empty() {
            sqlx::query(
                "INSERT INTO rm_bookings (id, user_id, lot_id, lot_owner_id, slot_id, start_time,
                    end_time, vehicle_number, price_cents, currency, status, hold_until,
                    created_at, updated_at, version)
                 SELECT n.id, n.user_id, n.lot_id, n.lot_owner_id, n.slot_id, n.start_time,
                        n.end_time, n.vehicle_number, n.price_cents, n.currency, $13, n.hold_until,
                        n.created_at, n.created_at, n.version
                   FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[],
                               $6::timestamptz[], $7::timestamptz[], $8::text[], $9::bigint[],
                               $10::text[], $11::timestamptz[], $12::timestamptz[], $14::bigint[])
                        AS n(id, user_id, lot_id, lot_owner_id, slot_id, start_time, end_time,
                             vehicle_number, price_cents, currency, hold_until, created_at, version)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&created.id)
            .bind(&created.user_id)
            .bind(&created.lot_id)
            .bind(&created.lot_owner_id)
            .bind(&created.slot_id)
            .bind(&created.start_time)
            .bind(&created.end_time)
            .bind(&created.vehicle_number)
            .bind(&created.price_cents)
            .bind(&created.currency)
            .bind(&created.hold_until)
            .bind(&created.created_at)
            .bind(BookingStatus::Pending.as_str())
            .bind(&created.version)
            .execute(&mut *db)
            .await?;
        }
        if !changes.is_empty() {
            let ids: Vec<Uuid> = changes.iter().map(|c| c.0).collect();
            let versions: Vec<i64> = changes.iter().map(|c| c.1).collect();
            let statuses: Vec<&str> = changes.iter().map(|c| c.2.as_str()).collect();
            let ats: Vec<DateTime<Utc>> = changes.iter().map(|c| c.3).collect();
            sqlx::query(
                "UPDATE rm_bookings b
                    SET status = c.status, updated_at = c.at, version = c.version
                   FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[])
                        AS c(id, version, status, at)
                  WHERE b.id = c.id AND b.version < c.version",
            )
            .bind(&ids)
            .bind(&versions)
            .bind(&statuses)
            .bind(&ats)
            .execute(&mut *db)
            .await?;
        }
        Ok(())
    }
}

/// Columns of new `rm_bookings` rows, for one multi-row insert.
#[derive(Default)]
struct NewRows {
    id: Vec<Uuid>,
    user_id: Vec<Uuid>,
    lot_id: Vec<Uuid>,
    lot_owner_id: Vec<Uuid>,
    slot_id: Vec<Uuid>,
    start_time: Vec<DateTime<Utc>>,
    end_time: Vec<DateTime<Utc>>,
    vehicle_number: Vec<String>,
    price_cents: Vec<i64>,
    currency: Vec<String>,
    hold_until: Vec<DateTime<Utc>>,
    created_at: Vec<DateTime<Utc>>,
    version: Vec<i64>,
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
    #[sqlx(try_from = "String")]
    #[schema(schema_with = status_schema)]
    pub status: BookingStatus,
    /// An unpaid booking stops holding its slot at this instant.
    pub hold_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub lot_owner_id: Uuid,
}

impl BookingView {
    /// A booking as its aggregate holds it: what a write answers with, before the read model
    /// has caught up. `updated_at` is when its state last changed.
    pub fn of(id: Uuid, booking: &BookingState, updated_at: DateTime<Utc>) -> Self {
        Self {
            id,
            user_id: booking.user_id,
            lot_id: booking.lot_id,
            slot_id: booking.slot_id,
            start_time: booking.range.start(),
            end_time: booking.range.end(),
            vehicle_number: booking.vehicle_number.as_str().to_owned(),
            price_cents: booking.price.minor,
            currency: booking.price.currency.as_str().to_owned(),
            status: booking.status,
            hold_until: booking.hold_until,
            created_at: booking.created_at,
            updated_at,
            lot_owner_id: booking.lot_owner_id,
        }
    }
}

/// A booking's status in the OpenAPI document: one of the lifecycle's names.
fn status_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(BookingStatus::ALL.map(BookingStatus::as_str)))
        .description(Some("Where the booking is in its lifecycle."))
        .build()
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

/// Whose bookings a reader may see: admins and auditors all; everyone else their own and
/// those of the lots they own. The one statement of this rule for lists and single reads alike.
#[derive(Debug, Clone, Copy)]
pub enum Visibility {
    All,
    /// Their own bookings and those of the lots they own.
    Party(Uuid),
}

impl Visibility {
    pub fn of(reader: &Actor) -> Self {
        if reader.reads_everything() {
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

/// Pending bookings whose payment hold ran out by `now`, oldest first: what the expiry sweep
/// expires (each decided on its aggregate, which makes it happen once).
pub async fn pending_past_hold(
    db: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM rm_bookings
          WHERE status = 'pending' AND hold_until <= $1
          ORDER BY hold_until
          LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

//! Lots as drivers search them, with their slots' live counts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::EventEnvelope;
use parking_domain::geo::GeoPoint;
use parking_domain::lot::{LotEvent, ParkingLot};
use parking_domain::Actor;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::live::{with_clock, STATUS_SQL};
use crate::model::Projection;
use crate::page::{Page, PageRequest, Sort};
use crate::{aggregate_uuid, occurred_at, slots};

pub struct LotsProjection;

#[async_trait]
impl Projection<ParkingLot> for LotsProjection {
    fn name(&self) -> &'static str {
        "lots"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_lots", "rm_slots", "rm_camera_lighting"]
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &EventEnvelope<ParkingLot>,
    ) -> Result<(), sqlx::Error> {
        let id = aggregate_uuid(event)?;
        let version = event.sequence as i64;
        let at = occurred_at(event)?;
        match &event.payload {
            LotEvent::LotRegistered {
                owner_id,
                details: d,
            } => {
                sqlx::query(
                    "INSERT INTO rm_lots (id, owner_id, name, address, city, latitude, longitude,
                        hourly_rate_cents, currency, description, camera_url, is_active,
                        created_at, updated_at, version, daily_cap_cents, time_zone)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, true, $12, $12, $13, $14,
                             $15)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(owner_id)
                .bind(&d.name)
                .bind(&d.address)
                .bind(&d.city)
                .bind(d.location.latitude())
                .bind(d.location.longitude())
                .bind(d.hourly_rate.minor)
                .bind(d.hourly_rate.currency.as_str())
                .bind(&d.description)
                .bind(&d.camera_url)
                .bind(at)
                .bind(version)
                .bind(d.daily_cap_minor)
                .bind(d.time_zone.as_str())
                .execute(db)
                .await?;
            }
            LotEvent::LotUpdated { changes: c } => {
                // An empty string in an optional field clears it (as the aggregate does).
                sqlx::query(
                    "UPDATE rm_lots SET
                        name = COALESCE($3, name), address = COALESCE($4, address),
                        city = COALESCE($5, city), latitude = COALESCE($6, latitude),
                        longitude = COALESCE($7, longitude),
                        hourly_rate_cents = COALESCE($8, hourly_rate_cents),
                        currency = COALESCE($9, currency),
                        description = CASE WHEN $10::text IS NULL THEN description ELSE NULLIF($10, '') END,
                        camera_url = CASE WHEN $11::text IS NULL THEN camera_url ELSE NULLIF($11, '') END,
                        daily_cap_cents = CASE WHEN $13::bigint IS NULL THEN daily_cap_cents ELSE NULLIF($13, 0) END,
                        time_zone = COALESCE($14, time_zone),
                        updated_at = $12, version = $2
                      WHERE id = $1 AND version < $2",
                )
                .bind(id)
                .bind(version)
                .bind(&c.name)
                .bind(&c.address)
                .bind(&c.city)
                .bind(c.location.map(|l| l.latitude()))
                .bind(c.location.map(|l| l.longitude()))
                .bind(c.hourly_rate_minor)
                .bind(c.currency.as_ref().map(|c| c.as_str().to_owned()))
                .bind(&c.description)
                .bind(&c.camera_url)
                .bind(at)
                .bind(c.daily_cap_minor)
                .bind(c.time_zone.as_ref().map(|z| z.as_str().to_owned()))
                .execute(db)
                .await?;
            }
            LotEvent::LotDeactivated { .. } => {
                sqlx::query(
                    "UPDATE rm_lots SET is_active = false, updated_at = $3, version = $2
                      WHERE id = $1 AND version < $2",
                )
                .bind(id)
                .bind(version)
                .bind(at)
                .execute(db)
                .await?;
            }
            LotEvent::SlotAdded {
                slot_id,
                label,
                slot_type,
            } => {
                slots::insert(db, *slot_id, id, label, slot_type.as_str(), at, version).await?;
                touch(db, id, version, at).await?;
            }
            LotEvent::SlotUpdated {
                slot_id,
                label,
                slot_type,
            } => {
                let slot_type = slot_type.map(|t| t.as_str());
                slots::relabel(db, *slot_id, label.as_deref(), slot_type, version).await?;
                touch(db, id, version, at).await?;
            }
            // Cameras are read from the lot itself, by those allowed to see them.
            LotEvent::CameraConfigured { .. } => {}
            LotEvent::CameraRemoved { camera_id } => {
                sqlx::query("DELETE FROM rm_camera_lighting WHERE lot_id = $1 AND camera_id = $2")
                    .bind(id)
                    .bind(camera_id)
                    .execute(&mut *db)
                    .await?;
            }
            LotEvent::CameraLightingObserved {
                camera_id,
                score,
                observed_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO rm_camera_lighting (lot_id, camera_id, score, observed_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (lot_id, camera_id)
                     DO UPDATE SET score = EXCLUDED.score, observed_at = EXCLUDED.observed_at",
                )
                .bind(id)
                .bind(camera_id)
                .bind(score)
                .bind(observed_at)
                .execute(&mut *db)
                .await?;
            }
        }
        Ok(())
    }
}

/// Marks the lot changed by event `version` at `at`.
async fn touch(
    db: &mut PgConnection,
    id: Uuid,
    version: i64,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rm_lots SET updated_at = $3, version = $2 WHERE id = $1 AND version < $2")
        .bind(id)
        .bind(version)
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LotView {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub address: String,
    pub city: String,
    pub latitude: f64,
    pub longitude: f64,
    pub hourly_rate_cents: i64,
    /// The most one day of parking costs; `null`: no cap.
    pub daily_cap_cents: Option<i64>,
    pub currency: String,
    pub description: Option<String>,
    /// Only shown to the lot's owner and admins; `null` for everyone else.
    pub camera_url: Option<String>,
    pub is_active: bool,
    /// The IANA time zone its days are counted in (`UTC` unless set).
    pub time_zone: String,
    pub total_slots: i64,
    /// Slots free right now (not reserved, occupied or out of service).
    pub available_slots: i64,
    /// Mean of the standing reviews' four ratings, 1 to 5; `null` until the lot has reviews.
    pub average_rating: Option<f64>,
    /// 0 to 100: `average_rating` on that scale (1 is 0, 5 is 100), one decimal; `null` until
    /// the lot has reviews. (Camera lighting scores will join it once the vision worker
    /// reports them.)
    pub safety_score: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LotView {
    /// The lot as `viewer` may see it: camera stream URLs (which often carry credentials) only
    /// for the lot's owner and admins.
    pub fn for_viewer(mut self, viewer: Option<&Actor>) -> Self {
        if !viewer.is_some_and(|v| v.is_or_admin(self.owner_id)) {
            self.camera_url = None;
        }
        self
    }
}

/// The lots read model joined with live slot counts; needs the `clock` CTE of [`with_clock`].
fn select_lots() -> String {
    format!(
        "SELECT l.id, l.owner_id, l.name, l.address, l.city, l.latitude, l.longitude,
                l.hourly_rate_cents, l.daily_cap_cents, l.currency, l.description, l.camera_url,
                l.is_active, l.time_zone, COALESCE(c.total, 0) AS total_slots, COALESCE(c.available, 0) AS available_slots,
                {average} AS average_rating,
                round((({average} - 1) * 25)::numeric, 1)::float8 AS safety_score,
                l.created_at, l.updated_at
           FROM rm_lots l
           LEFT JOIN rm_lot_ratings lr ON lr.lot_id = l.id
           LEFT JOIN LATERAL (
                SELECT count(*) AS total, count(*) FILTER (WHERE ({status}) = 'free') AS available
                  FROM rm_slots_live s WHERE s.lot_id = l.id
           ) c ON true",
        status = STATUS_SQL,
        average = "((lr.safety + lr.lighting + lr.security + lr.cleanliness)::float8
                     / NULLIF(4 * lr.reviews, 0))"
    )
}

pub async fn get(
    pool: &PgPool,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<LotView>, sqlx::Error> {
    let mut query = with_clock(now);
    query
        .push(select_lots())
        .push(" WHERE l.id = ")
        .push_bind(id);
    query.build_query_as().fetch_optional(pool).await
}

/// The lots of `ids` that the read model has, in no particular order.
pub async fn many(
    pool: &PgPool,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<LotView>, sqlx::Error> {
    let mut query = with_clock(now);
    query
        .push(select_lots())
        .push(" WHERE l.id = ANY(")
        .push_bind(ids)
        .push(")");
    query.build_query_as().fetch_all(pool).await
}

#[derive(Debug, Clone, Default)]
pub struct LotFilter {
    pub city: Option<String>,
    pub is_active: Option<bool>,
    pub min_rating: Option<f64>,
    /// Case-insensitive substring of name, address or city.
    pub q: Option<String>,
}

impl LotFilter {
    /// `FROM (lots matching the filter) l`, shared by the page and its count.
    fn push_from<'a>(&self, query: &mut QueryBuilder<'a, Postgres>) {
        query
            .push(" FROM (")
            .push(select_lots())
            .push(" WHERE true");
        if let Some(city) = &self.city {
            query
                .push(" AND lower(l.city) = lower(")
                .push_bind(city.trim().to_owned())
                .push(")");
        }
        if let Some(active) = self.is_active {
            query.push(" AND l.is_active = ").push_bind(active);
        }
        if let Some(q) = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let pattern = format!("%{escaped}%");
            query
                .push(" AND (l.name ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR l.address ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR l.city ILIKE ")
                .push_bind(pattern)
                .push(")");
        }
        query.push(") l");
        if let Some(min) = self.min_rating {
            query.push(" WHERE l.average_rating >= ").push_bind(min);
        }
    }
}

pub const SORTS: &[(&str, &str)] = &[
    ("name", "l.name"),
    ("rating", "l.average_rating"),
    ("hourly_rate_cents", "l.hourly_rate_cents"),
    ("created_at", "l.created_at"),
];
pub const DEFAULT_SORT: Sort = Sort {
    column: "l.created_at",
    descending: true,
};

pub async fn list(
    pool: &PgPool,
    filter: &LotFilter,
    page: PageRequest,
    sort: Sort,
    now: DateTime<Utc>,
) -> Result<Page<LotView>, sqlx::Error> {
    let mut items = with_clock(now);
    items.push("SELECT l.*");
    filter.push_from(&mut items);
    items.push(" ").push(sort.order_by("l.id"));
    items
        .push(" LIMIT ")
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset());
    let items: Vec<LotView> = items.build_query_as().fetch_all(pool).await?;

    let mut total = with_clock(now);
    total.push("SELECT count(*)");
    filter.push_from(&mut total);
    let total: i64 = total.build_query_scalar().fetch_one(pool).await?;
    Ok(Page::new(items, page, total))
}

/// A lot and how far it is from the point asked about.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NearbyLot {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub lot: LotView,
    /// Great-circle distance in kilometres.
    pub distance_km: f64,
}

/// Pushes the great-circle distance in km from `center` to lot `l`, the formula of
/// `GeoPoint::distance_km` (haversine, mean Earth radius).
fn push_distance(query: &mut QueryBuilder<'_, Postgres>, center: GeoPoint) {
    let (lat, lng) = (center.latitude(), center.longitude());
    query
        .push("(2 * 6371.0088 * asin(sqrt(power(sin(radians(l.latitude - ")
        .push_bind(lat)
        .push(") / 2), 2) + cos(radians(")
        .push_bind(lat)
        .push(")) * cos(radians(l.latitude)) * power(sin(radians(l.longitude - ")
        .push_bind(lng)
        .push(") / 2), 2))))");
}

/// How nearby search finds candidates (`NEARBY_SEARCH`, docs/benchmarks.md, "Nearby search").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NearbyIndex {
    /// A latitude/longitude box on the B-tree index `rm_lots_position`, then exact great-circle
    /// distances: plain PostgreSQL.
    #[default]
    Box,
    /// PostGIS: a geography column with a GiST index, `ST_DWithin` and KNN ordering (the
    /// extension must be installed; [`enable_postgis`] adds the column and the index).
    PostGis,
}

/// Adds what [`NearbyIndex::PostGis`] needs: the extension, a generated geography column of
/// each lot's position and its GiST index. Idempotent.
pub async fn enable_postgis(pool: &PgPool) -> Result<(), sqlx::Error> {
    for statement in [
        "CREATE EXTENSION IF NOT EXISTS postgis",
        "ALTER TABLE rm_lots ADD COLUMN IF NOT EXISTS geog geography(Point, 4326)
             GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(longitude, latitude), 4326)::geography) STORED",
        "CREATE INDEX IF NOT EXISTS rm_lots_geog ON rm_lots USING gist (geog) WHERE is_active",
    ] {
        sqlx::query(statement).execute(pool).await?;
    }
    Ok(())
}

/// Active lots within `radius_km` of `center`, nearest first, at most `limit`; `total` counts
/// all of them. Candidates and distances come from `rm_lots` alone; the live slot counts are
/// computed for the lots answered only.
pub async fn nearby(
    pool: &PgPool,
    index: NearbyIndex,
    center: GeoPoint,
    radius_km: f64,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Page<NearbyLot>, sqlx::Error> {
    let mut query = with_clock(now);
    query.push(", near AS (SELECT l.id, ");
    match index {
        NearbyIndex::Box => push_box_candidates(&mut query, center, radius_km),
        NearbyIndex::PostGis => push_postgis_candidates(&mut query, center, radius_km),
    }
    query
        .push(" LIMIT ")
        .push_bind(i64::from(limit))
        .push(") SELECT l.*, near.distance_km, near.total FROM near, LATERAL (")
        .push(select_lots())
        .push(" WHERE l.id = near.id) l ORDER BY near.distance_km, l.id");
    let rows: Vec<NearbyRow> = query.build_query_as().fetch_all(pool).await?;
    let total = match rows.first() {
        Some(row) => row.total,
        None => 0,
    };
    Ok(Page {
        items: rows.into_iter().map(|r| r.found).collect(),
        page: 1,
        per_page: limit,
        total,
    })
}

#[derive(sqlx::FromRow)]
struct NearbyRow {
    #[sqlx(flatten)]
    found: NearbyLot,
    total: i64,
}

/// Candidates in a box around `center` (a degree of latitude is ~111 km everywhere; one of
/// longitude shrinks with the cosine of the latitude), then the exact distance.
fn push_box_candidates(query: &mut QueryBuilder<'_, Postgres>, center: GeoPoint, radius_km: f64) {
    let lat_band = radius_km / 111.0 + 0.01;
    let (south, north) = (center.latitude() - lat_band, center.latitude() + lat_band);
    push_distance(query, center);
    query
        .push(" AS distance_km, count(*) OVER () AS total FROM rm_lots l WHERE l.is_active AND l.latitude BETWEEN ")
        .push_bind(south)
        .push(" AND ")
        .push_bind(north);
    // The box's widest point is its edge nearest a pole; near a pole, or across the date
    // line, the latitude band alone bounds the search.
    let widest = south.abs().max(north.abs());
    if widest < 89.0 {
        let lng_band = radius_km / (111.32 * widest.to_radians().cos()) + 0.01;
        let (west, east) = (center.longitude() - lng_band, center.longitude() + lng_band);
        if west >= -180.0 && east <= 180.0 {
            query
                .push(" AND l.longitude BETWEEN ")
                .push_bind(west)
                .push(" AND ")
                .push_bind(east);
        }
    }
    query.push(" AND ");
    push_distance(query, center);
    query
        .push(" <= ")
        .push_bind(radius_km)
        .push(" ORDER BY distance_km, l.id");
}

/// Candidates from the GiST index: `ST_DWithin`, nearest first by KNN.
fn push_postgis_candidates(
    query: &mut QueryBuilder<'_, Postgres>,
    center: GeoPoint,
    radius_km: f64,
) {
    let point = |query: &mut QueryBuilder<'_, Postgres>| {
        query
            .push("ST_SetSRID(ST_MakePoint(")
            .push_bind(center.longitude())
            .push(", ")
            .push_bind(center.latitude())
            .push("), 4326)::geography");
    };
    query.push("ST_Distance(l.geog, ");
    point(query);
    query.push(", false) / 1000.0 AS distance_km, count(*) OVER () AS total FROM rm_lots l WHERE l.is_active AND ST_DWithin(l.geog, ");
    point(query);
    query
        .push(", ")
        .push_bind(radius_km * 1000.0)
        .push(", false) ORDER BY l.geog <-> ");
    point(query);
    query.push(", l.id");
}

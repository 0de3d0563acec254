//! What the open occupancy feed publishes (`GET /api/v1/feeds/datex2/parking`): every active
//! lot's public facts and its live counts, in all and by slot type.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::live::{with_clock, STATUS_SQL};

/// An active lot as the feed shows it: public fields only.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SiteOccupancy {
    pub id: Uuid,
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
    /// All its slots, and those free now (not reserved, occupied or out of service).
    pub total: i64,
    pub available: i64,
    /// Its `disabled` slots, and those free now.
    pub disabled_total: i64,
    pub disabled_available: i64,
    /// Its `ev_charging` slots, and those free now.
    pub ev_total: i64,
    pub ev_available: i64,
}

/// Every active lot, by name, with its slots' live counts at `now`.
pub async fn active_sites(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<Vec<SiteOccupancy>, sqlx::Error> {
    let mut query = with_clock(now);
    query.push(format!(
        "SELECT l.id, l.name, l.latitude, l.longitude,
                count(s.id) AS total,
                count(*) FILTER (WHERE s.status = 'free') AS available,
                count(*) FILTER (WHERE s.slot_type = 'disabled') AS disabled_total,
                count(*) FILTER (WHERE s.slot_type = 'disabled' AND s.status = 'free')
                    AS disabled_available,
                count(*) FILTER (WHERE s.slot_type = 'ev_charging') AS ev_total,
                count(*) FILTER (WHERE s.slot_type = 'ev_charging' AND s.status = 'free')
                    AS ev_available
           FROM rm_lots l
           LEFT JOIN LATERAL (
                SELECT s.id, s.slot_type, ({STATUS_SQL}) AS status
                  FROM rm_slots_live s WHERE s.lot_id = l.id
           ) s ON true
          WHERE l.is_active
          GROUP BY l.id
          ORDER BY l.name, l.id"
    ));
    query.build_query_as().fetch_all(pool).await
}

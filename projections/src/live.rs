//! What "live" means in the read models: a slot's status at an instant, computed in SQL from
//! the bookings read model, for the slot and lot queries alike.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

/// A slot's status at `clock.now`, for a row `s` of `rm_slots_live`:
/// `out_of_service`, `occupied` (a car observed there, or a checked-in booking), `reserved` (a
/// confirmed booking, or a pending one whose payment hold still runs) or `free`.
pub(crate) const STATUS_SQL: &str = "
CASE WHEN s.out_of_service THEN 'out_of_service'
     WHEN s.occupied THEN 'occupied'
     WHEN EXISTS (SELECT 1 FROM rm_bookings b, clock
                   WHERE b.slot_id = s.id AND b.status = 'active'
                     AND b.start_time <= clock.now AND b.end_time > clock.now) THEN 'occupied'
     WHEN EXISTS (SELECT 1 FROM rm_bookings b, clock
                   WHERE b.slot_id = s.id AND b.start_time <= clock.now AND b.end_time > clock.now
                     AND (b.status = 'confirmed' OR (b.status = 'pending' AND b.hold_until > clock.now))) THEN 'reserved'
     ELSE 'free' END";

/// Starts a query whose SQL may use `clock.now`, the instant "live" status is computed at.
pub(crate) fn with_clock<'a>(now: DateTime<Utc>) -> QueryBuilder<'a, Postgres> {
    let mut query = QueryBuilder::new("WITH clock AS (SELECT ");
    query.push_bind(now).push("::timestamptz AS now) ");
    query
}

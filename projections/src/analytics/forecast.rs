//! How full a lot will likely be at an instant: its own history at that hour of the week
//! (an hour-of-week profile over the last [`PROFILE_WEEKS`] weeks, in the lot's time zone),
//! and the bookings already paid for that instant. The method and its measured error:
//! docs/architecture.md, "The forecast".

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Weeks of history the profile is made of.
pub const PROFILE_WEEKS: i64 = 8;

/// How far ahead a forecast may be asked for, in days.
pub const HORIZON_DAYS: i64 = 90;

/// One hour of a lot's slot time, with its place in the lot's week.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Hour {
    pub hour: DateTime<Utc>,
    /// ISO day of the week (1 Monday to 7 Sunday) and hour of the day, in the lot's zone.
    pub dow: i32,
    pub hod: i32,
    pub in_service: i64,
    pub occupied: i64,
}

impl Hour {
    /// Occupied over in-service time; `None` if no slot was in service.
    pub fn rate(&self) -> Option<f64> {
        (self.in_service > 0).then(|| self.occupied as f64 / self.in_service as f64)
    }
}

fn bucket(dow: i32, hod: i32) -> usize {
    ((dow - 1).clamp(0, 6) * 24 + hod.clamp(0, 23)) as usize
}

/// Per hour of the week: occupied and in-service microseconds summed over the weeks, and how
/// many weeks had that hour in service.
#[derive(Debug, Clone)]
pub struct Profile {
    buckets: Vec<(i64, i64, u32)>,
}

impl Profile {
    pub fn of(hours: &[Hour]) -> Self {
        let mut buckets = vec![(0, 0, 0); 168];
        for h in hours.iter().filter(|h| h.in_service > 0) {
            let b = &mut buckets[bucket(h.dow, h.hod)];
            b.0 += h.occupied;
            b.1 += h.in_service;
            b.2 += 1;
        }
        Self { buckets }
    }

    /// The time-weighted occupancy at this hour of the week, and the weeks it rests on.
    pub fn at(&self, dow: i32, hod: i32) -> (Option<f64>, u32) {
        let (occupied, in_service, weeks) = self.buckets[bucket(dow, hod)];
        let rate = (in_service > 0).then(|| occupied as f64 / in_service as f64);
        (rate, weeks)
    }
}

/// `GET /api/v1/lots/{lot_id}/forecast`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Forecast {
    pub lot_id: Uuid,
    pub at: DateTime<Utc>,
    pub time_zone: String,
    /// Slots in service now.
    pub slots_in_service: i64,
    /// Bookings paid for a range that covers `at` (`confirmed`, or `active`).
    pub confirmed_bookings: i64,
    /// The lot's time-weighted occupancy at this hour of the week (in its time zone) over the
    /// last weeks; `null` without any.
    pub historical_occupancy: Option<f64>,
    /// The weeks `historical_occupancy` rests on (at most 8).
    pub weeks_of_history: u32,
    /// Expected occupied slots over slots in service: the larger of the history's share and
    /// the confirmed bookings; `null` when no slot is in service.
    pub expected_occupancy: Option<f64>,
    /// Slots in service less the expected occupied ones.
    pub expected_free_slots: f64,
}

/// The hours of `lot_id` from `from` to `to` (whole UTC hours), as they were known at `as_of`:
/// the hour rows, plus each slot's time since its last change up to `as_of`, which the rows do
/// not hold yet.
pub async fn hours(
    pool: &PgPool,
    lot_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    as_of: DateTime<Utc>,
) -> Result<Vec<Hour>, sqlx::Error> {
    sqlx::query_as(
        "WITH lot AS (SELECT time_zone FROM rm_analytics_lots WHERE lot_id = $1),
         ends AS (SELECT least($3::timestamptz, $4::timestamptz) AS stop),
         open AS (
             SELECT g AS hour,
                    analytics_micros(greatest(s.counted_to, g), least(g + interval '1 hour', ends.stop))
                        AS in_service,
                    analytics_open_occupied(s.counted_to, s.observed, s.stays, g,
                                            least(g + interval '1 hour', ends.stop)) AS occupied
               FROM rm_analytics_slots s, ends,
                    generate_series(greatest(date_trunc('hour', s.counted_to, 'UTC'), $2),
                                    ends.stop, interval '1 hour') AS g
              WHERE s.lot_id = $1 AND s.in_service AND g < ends.stop
         ), closed AS (
             SELECT h.hour, h.in_service_micros AS in_service, h.occupied_micros AS occupied
               FROM rm_analytics_hours h, ends
              WHERE h.lot_id = $1 AND h.hour >= $2 AND h.hour < ends.stop
         )
         SELECT c.hour,
                extract(isodow FROM c.hour AT TIME ZONE lot.time_zone)::int4 AS dow,
                extract(hour FROM c.hour AT TIME ZONE lot.time_zone)::int4 AS hod,
                sum(c.in_service)::int8 AS in_service, sum(c.occupied)::int8 AS occupied
           FROM (SELECT * FROM closed UNION ALL SELECT * FROM open) AS c, lot
          GROUP BY c.hour, lot.time_zone
          ORDER BY c.hour",
    )
    .bind(lot_id)
    .bind(from)
    .bind(to)
    .bind(as_of)
    .fetch_all(pool)
    .await
}

#[derive(sqlx::FromRow)]
struct Now {
    time_zone: String,
    dow: i32,
    hod: i32,
    slots_in_service: i64,
    confirmed_bookings: i64,
}

/// The forecast for `lot_id` at `at`, made at `now`; `None` for a lot analytics does not know.
pub async fn forecast(
    pool: &PgPool,
    lot_id: Uuid,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<Forecast>, sqlx::Error> {
    let state: Option<Now> = sqlx::query_as(
        "SELECT l.time_zone,
                extract(isodow FROM $2::timestamptz AT TIME ZONE l.time_zone)::int4 AS dow,
                extract(hour FROM $2::timestamptz AT TIME ZONE l.time_zone)::int4 AS hod,
                (SELECT count(*) FROM rm_analytics_slots s
                  WHERE s.lot_id = l.lot_id AND s.in_service) AS slots_in_service,
                (SELECT count(*) FROM rm_analytics_bookings b
                  WHERE b.lot_id = l.lot_id AND b.status IN ('confirmed', 'active')
                    AND b.start_time <= $2 AND b.end_time > $2) AS confirmed_bookings
           FROM rm_analytics_lots l WHERE l.lot_id = $1",
    )
    .bind(lot_id)
    .bind(at)
    .fetch_optional(pool)
    .await?;
    let Some(state) = state else {
        return Ok(None);
    };
    let to = now
        .duration_trunc(Duration::hours(1))
        .map_err(|e| sqlx::Error::Decode(e.into()))?;
    let from = to - Duration::weeks(PROFILE_WEEKS);
    let profile = Profile::of(&hours(pool, lot_id, from, to, now).await?);
    let (rate, weeks) = profile.at(state.dow, state.hod);
    let (expected_occupancy, expected_free_slots) =
        expect(state.slots_in_service, state.confirmed_bookings, rate);
    Ok(Some(Forecast {
        lot_id,
        at,
        time_zone: state.time_zone,
        slots_in_service: state.slots_in_service,
        confirmed_bookings: state.confirmed_bookings,
        historical_occupancy: rate,
        weeks_of_history: weeks,
        expected_occupancy,
        expected_free_slots,
    }))
}

/// Expected occupancy and free slots of `slots` slots, `confirmed` of them booked, the history
/// saying `rate`: the larger of the two counts, at most every slot.
fn expect(slots: i64, confirmed: i64, rate: Option<f64>) -> (Option<f64>, f64) {
    if slots <= 0 {
        return (None, 0.0);
    }
    let total = slots as f64;
    let occupied = (rate.unwrap_or(0.0) * total)
        .max(confirmed as f64)
        .min(total);
    (Some(occupied / total), total - occupied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hour(dow: i32, hod: i32, in_service: i64, occupied: i64) -> Hour {
        Hour {
            hour: Utc.timestamp_opt(0, 0).unwrap(),
            dow,
            hod,
            in_service,
            occupied,
        }
    }

    #[test]
    fn the_profile_weighs_each_week_by_its_slot_time() {
        let profile = Profile::of(&[
            hour(2, 14, 100, 50),
            hour(2, 14, 300, 0),
            hour(2, 14, 0, 0), // nothing in service: not a week of history
            hour(3, 9, 10, 10),
        ]);
        assert_eq!(profile.at(2, 14), (Some(50.0 / 400.0), 2));
        assert_eq!(profile.at(3, 9), (Some(1.0), 1));
        assert_eq!(profile.at(7, 23), (None, 0));
    }

    #[test]
    fn confirmed_bookings_are_a_floor_and_the_slots_a_ceiling() {
        assert_eq!(expect(4, 0, Some(0.5)), (Some(0.5), 2.0));
        assert_eq!(expect(4, 3, Some(0.5)), (Some(0.75), 1.0));
        assert_eq!(expect(4, 1, None), (Some(0.25), 3.0));
        assert_eq!(expect(4, 9, Some(0.5)), (Some(1.0), 0.0));
        assert_eq!(expect(0, 0, Some(0.5)), (None, 0.0));
    }
}

//! The figures over a window of calendar days: for an owner's lots (or all), one row per lot,
//! or for one lot, one row per day. Each lot's window is its own: the last `days` days up to
//! today in its time zone, today counted up to `now`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use parking_domain::booking::BookingStatus;
use serde::Serialize;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// The windows a client may ask for, in days.
pub const WINDOWS: [u32; 3] = [30, 60, 90];

/// Money per currency, in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Revenue {
    pub currency: String,
    /// Payments that succeeded.
    pub captured_minor: i64,
    /// Refunds that succeeded.
    pub refunded_minor: i64,
    /// Captured minus refunded.
    pub net_minor: i64,
}

/// Bookings made in the window, by their status now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BookingCounts {
    pub total: i64,
    pub pending: i64,
    pub confirmed: i64,
    pub active: i64,
    pub completed: i64,
    pub cancelled: i64,
    pub expired: i64,
}

/// Slot time in the window: in service, and occupied while in service.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Occupancy {
    /// Occupied over in-service slot time, 0 to 1; 0 when no slot was in service.
    pub rate: f64,
    pub occupied_slot_seconds: f64,
    pub in_service_slot_seconds: f64,
}

/// What happened at some lots over some days.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// One entry per currency taken, by currency code; empty when nothing was.
    pub revenue: Vec<Revenue>,
    pub bookings: BookingCounts,
    /// Cancelled bookings over bookings made; 0 when none were made.
    pub cancellation_rate: f64,
    /// The mean length of the ranges of the bookings made that were paid (now `confirmed`,
    /// `active` or `completed`); `null` when there are none.
    pub average_booked_minutes: Option<f64>,
    pub occupancy: Occupancy,
}

/// A lot's figures over its window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LotFigures {
    pub lot_id: Uuid,
    pub name: String,
    pub time_zone: String,
    pub is_active: bool,
    /// The window's first and last calendar day, in the lot's time zone.
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(flatten)]
    pub figures: Figures,
}

/// `GET /api/v1/analytics/dashboard`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub days: u32,
    /// The instant today's figures run to.
    pub generated_at: DateTime<Utc>,
    /// All the lots' figures together.
    pub totals: Figures,
    /// Every lot, by name; a lot with no activity has zeros.
    pub lots: Vec<LotFigures>,
}

/// One calendar day of a lot.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DayFigures {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub figures: Figures,
}

/// `GET /api/v1/analytics/lots/{lot_id}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LotSeries {
    pub days: u32,
    pub generated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub lot: LotFigures,
    /// Every day of the window, oldest first; a day with no activity has zeros.
    pub series: Vec<DayFigures>,
}

/// Raw sums, added up before they become [`Figures`].
#[derive(Debug, Clone, Default)]
struct Sums {
    money: BTreeMap<String, (i64, i64)>,
    /// Bookings and their booked microseconds, by status (`BookingStatus::ALL` order).
    bookings: [(i64, i64); 6],
    in_service_micros: i64,
    occupied_micros: i64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        for (currency, (captured, refunded)) in &other.money {
            let mine = self.money.entry(currency.clone()).or_default();
            mine.0 += captured;
            mine.1 += refunded;
        }
        for (mine, theirs) in self.bookings.iter_mut().zip(other.bookings) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
        self.in_service_micros += other.in_service_micros;
        self.occupied_micros += other.occupied_micros;
    }

    fn figures(&self) -> Figures {
        let count = |status: BookingStatus| {
            let i = BookingStatus::ALL.iter().position(|s| *s == status);
            i.map_or((0, 0), |i| self.bookings[i])
        };
        let bookings = BookingCounts {
            total: self.bookings.iter().map(|b| b.0).sum(),
            pending: count(BookingStatus::Pending).0,
            confirmed: count(BookingStatus::Confirmed).0,
            active: count(BookingStatus::Active).0,
            completed: count(BookingStatus::Completed).0,
            cancelled: count(BookingStatus::Cancelled).0,
            expired: count(BookingStatus::Expired).0,
        };
        let paid = [
            BookingStatus::Confirmed,
            BookingStatus::Active,
            BookingStatus::Completed,
        ]
        .map(count);
        let (paid_count, paid_micros) = paid
            .iter()
            .fold((0, 0), |(n, m), (pn, pm)| (n + pn, m + pm));
        let ratio = |part: i64, whole: i64| {
            if whole > 0 {
                part as f64 / whole as f64
            } else {
                0.0
            }
        };
        Figures {
            revenue: (self.money.iter())
                .map(|(currency, (captured, refunded))| Revenue {
                    currency: currency.clone(),
                    captured_minor: *captured,
                    refunded_minor: *refunded,
                    net_minor: captured - refunded,
                })
                .collect(),
            cancellation_rate: ratio(bookings.cancelled, bookings.total),
            average_booked_minutes: (paid_count > 0)
                .then(|| paid_micros as f64 / paid_count as f64 / 60_000_000.0),
            bookings,
            occupancy: Occupancy {
                rate: ratio(self.occupied_micros, self.in_service_micros),
                occupied_slot_seconds: self.occupied_micros as f64 / 1e6,
                in_service_slot_seconds: self.in_service_micros as f64 / 1e6,
            },
        }
    }
}

/// Whose lots, and how the window is cut.
struct Selection {
    owner: Option<Uuid>,
    lot: Option<Uuid>,
    days: u32,
    per_day: bool,
    now: DateTime<Utc>,
}

/// The windows the three queries sum over: `$1` owner, `$2` lot (either may be null), `$3` days,
/// `$4` one window per day (else one per lot), `$5` now. Each window is a lot and a range of
/// its calendar days (`from_day` to `to_day`), with the instants it starts and ends (today
/// ends now).
const WINDOWS_SQL: &str = "
WITH lots AS (
    SELECT l.*, ($5::timestamptz AT TIME ZONE l.time_zone)::date AS today
      FROM rm_analytics_lots l
     WHERE ($1::uuid IS NULL OR l.owner_id = $1) AND ($2::uuid IS NULL OR l.lot_id = $2)
), windows AS (
    SELECT lot_id, today - ($3::int - 1) AS from_day, today AS to_day FROM lots WHERE NOT $4
    UNION ALL
    SELECT lot_id, g::date, g::date
      FROM lots, generate_series(today - ($3::int - 1), today, interval '1 day') AS g WHERE $4
), bounds AS (
    SELECT w.lot_id, w.from_day, w.to_day,
           w.from_day::timestamp AT TIME ZONE l.time_zone AS starts,
           least($5::timestamptz, (w.to_day + 1)::timestamp AT TIME ZONE l.time_zone) AS ends
      FROM windows w JOIN lots l ON l.lot_id = w.lot_id
)";

#[derive(sqlx::FromRow)]
struct TimeRow {
    lot_id: Uuid,
    from_day: NaiveDate,
    to_day: NaiveDate,
    name: String,
    time_zone: String,
    is_active: bool,
    in_service: i64,
    occupied: i64,
    /// `[status, bookings, booked microseconds]` per status.
    bookings: Json<Vec<(String, i64, i64)>>,
    /// `[currency, captured, refunded]` per currency.
    revenue: Json<Vec<(String, i64, i64)>>,
}

/// Per window: slot time (the day rows, plus each slot's time since its last change, which
/// the day rows do not hold yet, within the window), bookings by status, money by currency.
const FIGURES_SQL: &str = "
SELECT b.lot_id, b.from_day, b.to_day, l.name, l.time_zone, l.is_active,
       (COALESCE(closed.in_service, 0) + COALESCE(open.in_service, 0))::int8 AS in_service,
       (COALESCE(closed.occupied, 0) + COALESCE(open.occupied, 0))::int8 AS occupied,
       counts.bookings, money.revenue
  FROM bounds b
  JOIN lots l ON l.lot_id = b.lot_id
  LEFT JOIN LATERAL (
      SELECT sum(d.in_service_micros) AS in_service, sum(d.occupied_micros) AS occupied
        FROM rm_analytics_days d
       WHERE d.lot_id = b.lot_id AND d.day BETWEEN b.from_day AND b.to_day) AS closed ON true
  LEFT JOIN LATERAL (
      SELECT sum(analytics_micros(greatest(s.counted_to, b.starts), b.ends)) AS in_service,
             sum(analytics_open_occupied(s.counted_to, s.observed, s.stays, b.starts, b.ends))
                 AS occupied
        FROM rm_analytics_slots s
       WHERE s.lot_id = b.lot_id AND s.in_service) AS open ON true
  LEFT JOIN LATERAL (
      SELECT COALESCE(json_agg(json_build_array(status, bookings, booked_micros)), '[]')
                 AS bookings
        FROM (SELECT d.status, sum(d.bookings)::int8 AS bookings,
                     sum(d.booked_micros)::int8 AS booked_micros
                FROM rm_analytics_booking_days d
               WHERE d.lot_id = b.lot_id AND d.day BETWEEN b.from_day AND b.to_day
               GROUP BY d.status) AS per_status) AS counts ON true
  LEFT JOIN LATERAL (
      SELECT COALESCE(json_agg(json_build_array(currency, captured, refunded)), '[]')
                 AS revenue
        FROM (SELECT r.currency, sum(r.captured_minor)::int8 AS captured,
                     sum(r.refunded_minor)::int8 AS refunded
                FROM rm_analytics_revenue r
               WHERE r.lot_id = b.lot_id AND r.day BETWEEN b.from_day AND b.to_day
               GROUP BY r.currency) AS per_currency) AS money ON true";

/// The windows' rows in order (by lot name, then day), with their sums.
async fn windows(pool: &PgPool, sel: &Selection) -> Result<Vec<(TimeRow, Sums)>, sqlx::Error> {
    let rows: Vec<TimeRow> = sqlx::query_as(&format!(
        "{WINDOWS_SQL} {FIGURES_SQL} ORDER BY l.name, b.lot_id, b.from_day"
    ))
    .bind(sel.owner)
    .bind(sel.lot)
    .bind(sel.days as i32)
    .bind(sel.per_day)
    .bind(sel.now)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            let mut sums = Sums {
                in_service_micros: row.in_service,
                occupied_micros: row.occupied,
                ..Sums::default()
            };
            for (status, count, micros) in &row.bookings.0 {
                let status = BookingStatus::parse(status).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown booking status {status:?}").into())
                })?;
                let i = BookingStatus::ALL.iter().position(|s| *s == status);
                if let Some(i) = i {
                    sums.bookings[i] = (*count, *micros);
                }
            }
            for (currency, captured, refunded) in &row.revenue.0 {
                sums.money.insert(currency.clone(), (*captured, *refunded));
            }
            Ok((row, sums))
        })
        .collect()
}

fn lot_figures(row: &TimeRow, from: NaiveDate, to: NaiveDate, sums: &Sums) -> LotFigures {
    LotFigures {
        lot_id: row.lot_id,
        name: row.name.clone(),
        time_zone: row.time_zone.clone(),
        is_active: row.is_active,
        from,
        to,
        figures: sums.figures(),
    }
}

/// The figures of `owner`'s lots (every lot's for `None`) over the last `days` days.
pub async fn dashboard(
    pool: &PgPool,
    owner: Option<Uuid>,
    days: u32,
    now: DateTime<Utc>,
) -> Result<Dashboard, sqlx::Error> {
    let selection = Selection {
        owner,
        lot: None,
        days,
        per_day: false,
        now,
    };
    let rows = windows(pool, &selection).await?;
    let mut totals = Sums::default();
    let lots = (rows.iter())
        .map(|(row, sums)| {
            totals.add(sums);
            lot_figures(row, row.from_day, row.to_day, sums)
        })
        .collect();
    Ok(Dashboard {
        days,
        generated_at: now,
        totals: totals.figures(),
        lots,
    })
}

/// The owner of a lot analytics knows, if it knows it.
pub async fn owner_of(pool: &PgPool, lot_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT owner_id FROM rm_analytics_lots WHERE lot_id = $1")
        .bind(lot_id)
        .fetch_optional(pool)
        .await
}

/// A lot's figures day by day over the last `days` days; `None` for a lot analytics does not
/// know.
pub async fn lot_series(
    pool: &PgPool,
    lot_id: Uuid,
    days: u32,
    now: DateTime<Utc>,
) -> Result<Option<LotSeries>, sqlx::Error> {
    let selection = Selection {
        owner: None,
        lot: Some(lot_id),
        days,
        per_day: true,
        now,
    };
    let rows = windows(pool, &selection).await?;
    let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let mut totals = Sums::default();
    let series = (rows.iter())
        .map(|(row, sums)| {
            totals.add(sums);
            DayFigures {
                date: row.from_day,
                figures: sums.figures(),
            }
        })
        .collect();
    Ok(Some(LotSeries {
        days,
        generated_at: now,
        lot: lot_figures(first, first.from_day, last.to_day, &totals),
        series,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_from_the_sums() {
        let mut sums = Sums::default();
        sums.money.insert("EUR".into(), (1000, 250));
        sums.bookings[1] = (2, 2 * 3_600_000_000); // confirmed, an hour each
        sums.bookings[3] = (1, 1_800_000_000); // completed, half an hour
        sums.bookings[4] = (1, 7_200_000_000); // cancelled: not in the average
        sums.in_service_micros = 4_000_000;
        sums.occupied_micros = 1_000_000;
        let f = sums.figures();
        assert_eq!(f.revenue[0].net_minor, 750);
        assert_eq!(f.bookings.total, 4);
        assert_eq!(f.cancellation_rate, 0.25);
        assert_eq!(f.average_booked_minutes, Some(50.0));
        assert_eq!(f.occupancy.rate, 0.25);

        let none = Sums::default().figures();
        assert_eq!((none.cancellation_rate, none.occupancy.rate), (0.0, 0.0));
        assert_eq!(none.average_booked_minutes, None);
    }
}

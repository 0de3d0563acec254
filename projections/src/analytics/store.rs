//! Loading the entities a run of events touches, and writing back what the run changed: a
//! fixed number of statements per run, whatever its length. Calendar days are computed here,
//! by PostgreSQL, in each lot's time zone as its row has it when the run is written.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};
use parking_domain::booking::{BookingEvent, BookingStatus};
use parking_domain::lot::LotEvent;
use parking_domain::payment::PaymentEvent;
use parking_domain::slot::SlotEvent;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::fold::{BookingRow, Fact, Input, LotRow, PaymentRow, SlotTime, Stay, Work};

/// Applies a run of events in which no lot changes its time zone (`super::runs`).
pub(super) async fn apply_run(db: &mut PgConnection, run: &[Input]) -> Result<(), sqlx::Error> {
    let mut work = load(db, run).await?;
    for input in run {
        work.apply(input);
    }
    write(db, &work).await
}

/// The ids a run touches whose rows may exist, by kind. An entity created in the run has no
/// row yet (the runtime applies every event once), so it is not looked for.
#[derive(Default)]
struct Touched {
    lots: HashSet<Uuid>,
    slots: HashSet<Uuid>,
    bookings: HashSet<Uuid>,
    payments: HashSet<Uuid>,
    /// Lots deactivated in the run: all their slots are touched.
    deactivated: HashSet<Uuid>,
    /// Bookings checked in or out in the run: their slots are touched.
    parked: HashSet<Uuid>,
}

impl Touched {
    fn of(run: &[Input]) -> Self {
        let mut touched = Self::default();
        let mut created = HashSet::new();
        let mut slot_of = HashMap::new();
        for input in run {
            let id = input.stream;
            match &input.fact {
                Fact::Lot(LotEvent::LotRegistered { .. })
                | Fact::Slot(SlotEvent::SlotRegistered { .. })
                | Fact::Payment(PaymentEvent::PaymentOpened { .. }) => {
                    created.insert(id);
                }
                Fact::Booking(BookingEvent::BookingCreated { slot_id, .. }) => {
                    created.insert(id);
                    slot_of.insert(id, *slot_id);
                }
                Fact::Lot(event) => {
                    touched.lots.insert(id);
                    if matches!(event, LotEvent::LotDeactivated { .. }) {
                        touched.deactivated.insert(id);
                    }
                }
                Fact::Slot(_) => {
                    touched.slots.insert(id);
                }
                Fact::Booking(event) => {
                    touched.bookings.insert(id);
                    if matches!(
                        event,
                        BookingEvent::BookingCheckedIn { .. }
                            | BookingEvent::BookingCheckedOut { .. }
                    ) {
                        touched.parked.insert(id);
                        if let Some(slot_id) = slot_of.get(&id) {
                            touched.slots.insert(*slot_id);
                        }
                    }
                }
                Fact::Payment(_) => {
                    touched.payments.insert(id);
                }
            }
        }
        for set in [
            &mut touched.lots,
            &mut touched.slots,
            &mut touched.bookings,
            &mut touched.payments,
        ] {
            set.retain(|id| !created.contains(id));
        }
        touched
    }
}

fn ids(set: &HashSet<Uuid>) -> Vec<Uuid> {
    set.iter().copied().collect()
}

#[derive(sqlx::FromRow)]
struct SlotRecord {
    slot_id: Uuid,
    lot_id: Uuid,
    counted_to: DateTime<Utc>,
    in_service: bool,
    observed: bool,
    stays: Json<Vec<Stay>>,
    position: i64,
}

impl From<SlotRecord> for SlotTime {
    fn from(r: SlotRecord) -> Self {
        Self {
            slot_id: r.slot_id,
            lot_id: r.lot_id,
            counted_to: r.counted_to,
            in_service: r.in_service,
            observed: r.observed,
            stays: r.stays.0,
            position: r.position,
        }
    }
}

#[derive(sqlx::FromRow)]
struct BookingRecord {
    booking_id: Uuid,
    lot_id: Uuid,
    slot_id: Uuid,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    day: NaiveDate,
    status: String,
    position: i64,
}

async fn load(db: &mut PgConnection, run: &[Input]) -> Result<Work, sqlx::Error> {
    let mut touched = Touched::of(run);
    let mut work = Work::default();
    if !touched.bookings.is_empty() {
        let rows: Vec<BookingRecord> = sqlx::query_as(
            "SELECT booking_id, lot_id, slot_id, start_time, end_time, day, status, position
               FROM rm_analytics_bookings WHERE booking_id = ANY($1)",
        )
        .bind(ids(&touched.bookings))
        .fetch_all(&mut *db)
        .await?;
        for r in rows {
            let status =
                BookingStatus::try_from(r.status).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            if touched.parked.contains(&r.booking_id) {
                touched.slots.insert(r.slot_id);
            }
            let row = BookingRow {
                booking_id: r.booking_id,
                lot_id: r.lot_id,
                slot_id: r.slot_id,
                start: r.start_time,
                end: r.end_time,
                day: Some(r.day),
                made_at: None,
                status,
                position: r.position,
            };
            work.bookings.insert(row.booking_id, row);
        }
    }
    if !touched.slots.is_empty() || !touched.deactivated.is_empty() {
        let rows: Vec<SlotRecord> = sqlx::query_as(
            "SELECT slot_id, lot_id, counted_to, in_service, observed, stays, position
               FROM rm_analytics_slots WHERE slot_id = ANY($1) OR lot_id = ANY($2)",
        )
        .bind(ids(&touched.slots))
        .bind(ids(&touched.deactivated))
        .fetch_all(&mut *db)
        .await?;
        work.slots = rows
            .into_iter()
            .map(|r| (r.slot_id, SlotTime::from(r)))
            .collect();
    }
    if !touched.lots.is_empty() {
        let rows: Vec<LotRow> = sqlx::query_as(
            "SELECT lot_id, owner_id, name, time_zone, is_active, position
               FROM rm_analytics_lots WHERE lot_id = ANY($1)",
        )
        .bind(ids(&touched.lots))
        .fetch_all(&mut *db)
        .await?;
        work.lots = rows.into_iter().map(|r| (r.lot_id, r)).collect();
    }
    if !touched.payments.is_empty() {
        let rows: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
            "SELECT payment_id, lot_id, position FROM rm_analytics_payments
              WHERE payment_id = ANY($1)",
        )
        .bind(ids(&touched.payments))
        .fetch_all(&mut *db)
        .await?;
        work.payments = (rows.into_iter())
            .map(|(payment_id, lot_id, position)| {
                let row = PaymentRow {
                    payment_id,
                    lot_id,
                    position,
                };
                (payment_id, row)
            })
            .collect();
    }
    Ok(work)
}

async fn write(db: &mut PgConnection, work: &Work) -> Result<(), sqlx::Error> {
    write_lots(db, work).await?;
    write_bookings(db, work).await?;
    write_slots(db, work).await?;
    write_payments(db, work).await?;
    write_time(db, work).await?;
    write_revenue(db, work).await
}

async fn write_lots(db: &mut PgConnection, work: &Work) -> Result<(), sqlx::Error> {
    if work.dirty_lots.is_empty() {
        return Ok(());
    }
    let lots: Vec<&LotRow> = work.dirty_lots.iter().map(|id| &work.lots[id]).collect();
    sqlx::query(
        "INSERT INTO rm_analytics_lots (lot_id, owner_id, name, time_zone, is_active, position)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[],
                              $6::int8[])
         ON CONFLICT (lot_id) DO UPDATE SET
             name = EXCLUDED.name, time_zone = EXCLUDED.time_zone,
             is_active = EXCLUDED.is_active, position = EXCLUDED.position",
    )
    .bind(lots.iter().map(|l| l.lot_id).collect::<Vec<_>>())
    .bind(lots.iter().map(|l| l.owner_id).collect::<Vec<_>>())
    .bind(lots.iter().map(|l| l.name.as_str()).collect::<Vec<_>>())
    .bind(
        lots.iter()
            .map(|l| l.time_zone.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(lots.iter().map(|l| l.is_active).collect::<Vec<_>>())
    .bind(lots.iter().map(|l| l.position).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// The bookings changed, and their moves between statuses added to their days, in one
/// statement. A new booking's day is the day it was made, in its lot's time zone now (unknown
/// lot: UTC). Every booking that moved is among those changed.
async fn write_bookings(db: &mut PgConnection, work: &Work) -> Result<(), sqlx::Error> {
    if work.dirty_bookings.is_empty() {
        return Ok(());
    }
    let rows: Vec<&BookingRow> = (work.dirty_bookings.iter())
        .map(|id| &work.bookings[id])
        .collect();
    let moves = &work.moves;
    sqlx::query(
        "WITH written AS (
             INSERT INTO rm_analytics_bookings
                 (booking_id, lot_id, slot_id, start_time, end_time, day, status, position)
             SELECT b.booking_id, b.lot_id, b.slot_id, b.start_time, b.end_time,
                    COALESCE(b.day, (b.made_at AT TIME ZONE COALESCE(l.time_zone, 'UTC'))::date),
                    b.status, b.position
               FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[],
                           $5::timestamptz[], $6::date[], $7::timestamptz[], $8::text[],
                           $9::int8[])
                    AS b(booking_id, lot_id, slot_id, start_time, end_time, day, made_at, status,
                         position)
               LEFT JOIN rm_analytics_lots l ON l.lot_id = b.lot_id
             ON CONFLICT (booking_id) DO UPDATE SET
                 status = EXCLUDED.status, position = EXCLUDED.position
             RETURNING booking_id, lot_id, day
         )
         INSERT INTO rm_analytics_booking_days AS d (lot_id, day, status, bookings, booked_micros)
         SELECT w.lot_id, w.day, m.status, sum(m.sign), sum(m.sign * m.micros)
           FROM unnest($10::uuid[], $11::text[], $12::int8[], $13::int8[])
                AS m(booking_id, status, sign, micros)
           JOIN written w ON w.booking_id = m.booking_id
          GROUP BY w.lot_id, w.day, m.status
         ON CONFLICT (lot_id, day, status) DO UPDATE SET
             bookings = d.bookings + EXCLUDED.bookings,
             booked_micros = d.booked_micros + EXCLUDED.booked_micros",
    )
    .bind(rows.iter().map(|b| b.booking_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|b| b.lot_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|b| b.slot_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|b| b.start).collect::<Vec<_>>())
    .bind(rows.iter().map(|b| b.end).collect::<Vec<_>>())
    .bind(rows.iter().map(|b| b.day).collect::<Vec<_>>())
    .bind(rows.iter().map(|b| b.made_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|b| b.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|b| b.position).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.booking_id).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.status.as_str()).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.sign).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.micros).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

async fn write_slots(db: &mut PgConnection, work: &Work) -> Result<(), sqlx::Error> {
    if work.dirty_slots.is_empty() {
        return Ok(());
    }
    let slots: Vec<&SlotTime> = work.dirty_slots.iter().map(|id| &work.slots[id]).collect();
    let stays = (slots.iter())
        .map(|s| serde_json::to_string(&s.stays))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO rm_analytics_slots (slot_id, lot_id, counted_to, in_service, observed,
             stays, position)
         SELECT slot_id, lot_id, counted_to, in_service, observed, stays::jsonb, position
           FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bool[], $5::bool[],
                       $6::text[], $7::int8[])
                AS s(slot_id, lot_id, counted_to, in_service, observed, stays, position)
         ON CONFLICT (slot_id) DO UPDATE SET
             counted_to = EXCLUDED.counted_to, in_service = EXCLUDED.in_service,
             observed = EXCLUDED.observed, stays = EXCLUDED.stays,
             position = EXCLUDED.position",
    )
    .bind(slots.iter().map(|s| s.slot_id).collect::<Vec<_>>())
    .bind(slots.iter().map(|s| s.lot_id).collect::<Vec<_>>())
    .bind(slots.iter().map(|s| s.counted_to).collect::<Vec<_>>())
    .bind(slots.iter().map(|s| s.in_service).collect::<Vec<_>>())
    .bind(slots.iter().map(|s| s.observed).collect::<Vec<_>>())
    .bind(stays)
    .bind(slots.iter().map(|s| s.position).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

async fn write_payments(db: &mut PgConnection, work: &Work) -> Result<(), sqlx::Error> {
    if work.dirty_payments.is_empty() {
        return Ok(());
    }
    let rows: Vec<&PaymentRow> = (work.dirty_payments.iter())
        .map(|id| &work.payments[id])
        .collect();
    sqlx::query(
        "INSERT INTO rm_analytics_payments (payment_id, lot_id, position)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int8[])
         ON CONFLICT (payment_id) DO UPDATE SET position = EXCLUDED.position",
    )
    .bind(rows.iter().map(|p| p.payment_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|p| p.lot_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|p| p.position).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// Slot time per key (a lot and a day, or a lot and an hour): in service, occupied.
type TimeSums<K> = HashMap<(Uuid, K), (i64, i64)>;

fn add<K: std::hash::Hash + Eq>(
    sums: &mut TimeSums<K>,
    key: (Uuid, K),
    micros: i64,
    occupied: bool,
) {
    if micros > 0 {
        let entry = sums.entry(key).or_default();
        if occupied {
            entry.1 += micros;
        } else {
            entry.0 += micros;
        }
    }
}

fn micros(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX)
}

/// The run's intervals cut at their lots' local midnights (asked of PostgreSQL, which knows
/// the zones) and at UTC hours, summed per day and per hour, and added to the day and hour
/// rows. Pieces of no length add nothing, so the rows a run touches do not depend on how the
/// log was cut into runs.
async fn write_time(db: &mut PgConnection, work: &Work) -> Result<(), sqlx::Error> {
    if work.intervals.is_empty() {
        return Ok(());
    }
    // Each lot's span, then the instants its days start at over that span (one more at the
    // end, where the last day ends).
    let mut spans: HashMap<Uuid, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
    for i in &work.intervals {
        let span = spans.entry(i.lot_id).or_insert((i.start, i.end));
        span.0 = span.0.min(i.start);
        span.1 = span.1.max(i.end);
    }
    let rows: Vec<(Uuid, NaiveDate, DateTime<Utc>)> = sqlx::query_as(
        "SELECT l.lot_id, g::date, g::timestamp AT TIME ZONE l.time_zone
           FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS s(lot_id, s, e)
           JOIN rm_analytics_lots l ON l.lot_id = s.lot_id,
                generate_series((s.s AT TIME ZONE l.time_zone)::date,
                                (s.e AT TIME ZONE l.time_zone)::date + 1, interval '1 day') AS g
          ORDER BY 1, 2",
    )
    .bind(spans.keys().copied().collect::<Vec<_>>())
    .bind(spans.values().map(|s| s.0).collect::<Vec<_>>())
    .bind(spans.values().map(|s| s.1).collect::<Vec<_>>())
    .fetch_all(&mut *db)
    .await?;
    let mut midnights: HashMap<Uuid, Vec<(NaiveDate, DateTime<Utc>)>> = HashMap::new();
    for (lot_id, day, starts) in rows {
        midnights.entry(lot_id).or_default().push((day, starts));
    }

    let mut days: TimeSums<NaiveDate> = HashMap::new();
    let mut hours: TimeSums<DateTime<Utc>> = HashMap::new();
    for i in &work.intervals {
        // Days: a lot analytics does not know has no calendar, and no day rows.
        if let Some(starts) = midnights.get(&i.lot_id) {
            let first = starts
                .partition_point(|(_, at)| *at <= i.start)
                .saturating_sub(1);
            for pair in starts[first..].windows(2) {
                let ((day, from), (_, to)) = (pair[0], pair[1]);
                if from >= i.end {
                    break;
                }
                let piece = micros(i.start.max(from), i.end.min(to));
                add(&mut days, (i.lot_id, day), piece, i.occupied);
            }
        }
        let mut hour = i
            .start
            .duration_trunc(Duration::hours(1))
            .unwrap_or(i.start);
        while hour < i.end {
            let next = hour + Duration::hours(1);
            let piece = micros(i.start.max(hour), i.end.min(next));
            add(&mut hours, (i.lot_id, hour), piece, i.occupied);
            hour = next;
        }
    }
    upsert_time(db, "rm_analytics_days", "day", "date", days).await?;
    upsert_time(db, "rm_analytics_hours", "hour", "timestamptz", hours).await
}

/// Adds `sums` to `table`, keyed by lot and `column` (of SQL type `kind`).
async fn upsert_time<K>(
    db: &mut PgConnection,
    table: &str,
    column: &str,
    kind: &str,
    sums: TimeSums<K>,
) -> Result<(), sqlx::Error>
where
    K: for<'q> sqlx::Encode<'q, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + sqlx::postgres::PgHasArrayType
        + Send,
{
    if sums.is_empty() {
        return Ok(());
    }
    let mut lots = Vec::with_capacity(sums.len());
    let mut keys = Vec::with_capacity(sums.len());
    let (mut in_service, mut occupied) = (Vec::new(), Vec::new());
    for ((lot_id, key), (service, taken)) in sums {
        lots.push(lot_id);
        keys.push(key);
        in_service.push(service);
        occupied.push(taken);
    }
    sqlx::query(&format!(
        "INSERT INTO {table} AS t (lot_id, {column}, in_service_micros, occupied_micros)
         SELECT * FROM unnest($1::uuid[], $2::{kind}[], $3::int8[], $4::int8[])
         ON CONFLICT (lot_id, {column}) DO UPDATE SET
             in_service_micros = t.in_service_micros + EXCLUDED.in_service_micros,
             occupied_micros = t.occupied_micros + EXCLUDED.occupied_micros"
    ))
    .bind(lots)
    .bind(keys)
    .bind(in_service)
    .bind(occupied)
    .execute(db)
    .await?;
    Ok(())
}

async fn write_revenue(db: &mut PgConnection, work: &Work) -> Result<(), sqlx::Error> {
    if work.takings.is_empty() {
        return Ok(());
    }
    let all = &work.takings;
    sqlx::query(
        "INSERT INTO rm_analytics_revenue AS r (lot_id, day, currency, captured_minor,
             refunded_minor)
         SELECT t.lot_id, (t.at AT TIME ZONE COALESCE(l.time_zone, 'UTC'))::date, t.currency,
                sum(t.captured), sum(t.refunded)
           FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::int8[], $5::int8[])
                AS t(lot_id, at, currency, captured, refunded)
           LEFT JOIN rm_analytics_lots l ON l.lot_id = t.lot_id
          GROUP BY 1, 2, 3
         ON CONFLICT (lot_id, day, currency) DO UPDATE SET
             captured_minor = r.captured_minor + EXCLUDED.captured_minor,
             refunded_minor = r.refunded_minor + EXCLUDED.refunded_minor",
    )
    .bind(all.iter().map(|t| t.lot_id).collect::<Vec<_>>())
    .bind(all.iter().map(|t| t.at).collect::<Vec<_>>())
    .bind(all.iter().map(|t| t.currency.as_str()).collect::<Vec<_>>())
    .bind(all.iter().map(|t| t.captured_minor).collect::<Vec<_>>())
    .bind(all.iter().map(|t| t.refunded_minor).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// Whether `input` changes a lot's time zone: days after it are counted in another calendar,
/// so it starts a new run.
pub(super) fn moves_a_lot(input: &Input) -> bool {
    matches!(&input.fact, Fact::Lot(LotEvent::LotUpdated { changes }) if changes.time_zone.is_some())
}

/// The facts the projection uses; the others pass by undecoded.
pub(super) fn wanted(aggregate_type: &str, event_type: &str) -> bool {
    use cqrs_es::Aggregate;
    use parking_domain::booking::Booking;
    use parking_domain::lot::ParkingLot;
    use parking_domain::payment::Payment;
    use parking_domain::slot::Slot;
    if aggregate_type == ParkingLot::TYPE {
        matches!(
            event_type,
            "LotRegistered" | "LotUpdated" | "LotDeactivated"
        )
    } else if aggregate_type == Slot::TYPE {
        matches!(
            event_type,
            "SlotRegistered"
                | "SlotOccupancyObserved"
                | "SlotTakenOutOfService"
                | "SlotReturnedToService"
        )
    } else if aggregate_type == Booking::TYPE {
        true
    } else if aggregate_type == Payment::TYPE {
        matches!(
            event_type,
            "PaymentOpened" | "PaymentSucceeded" | "RefundSucceeded"
        )
    } else {
        false
    }
}

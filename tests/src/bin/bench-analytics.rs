//! Benchmark of owner analytics on a generated year of history, against the real application
//! (in this process, on a free port) and a fresh database:
//!
//! 1. **History.** `BENCH_LOTS` lots (default 200) of `BENCH_SLOTS` slots (default 4), over
//!    the 365 days up to now, generated from `BENCH_SEED` (default 1) and appended to the event
//!    store as the command path would have recorded it: cars parking through the day and the
//!    week (an hour-of-week demand profile, scaled per lot), seen by the cameras as they come
//!    and go; about one visit in seven booked ahead, paid and checked in and out, some of those
//!    cancelled and refunded or left unpaid to expire; now and then a slot out of service for a
//!    day. The first 50 lots belong to one owner. The server's projections follow meanwhile.
//! 2. **Rebuild.** `analytics` rebuilt from position 0 over the whole log: log positions per
//!    second. `bookings` rebuilt the same way in the same run: the reference.
//! 3. **Dashboard latency.** The owner of 50 lots asks `GET /api/v1/analytics/dashboard?days=90`
//!    `BENCH_REQUESTS` times (default 300) back to back on one connection: p50, p99, max; then
//!    one of their lots' 90-day series the same way.
//! 4. **Forecast error.** The last four weeks are held back: for the owner's 50 lots, every
//!    hour of those weeks is forecast from the eight weeks before them (the hour-of-week
//!    profile `GET /api/v1/lots/{lot_id}/forecast` uses) and, as the naive reference, from the
//!    same hour of the last week before them; the mean absolute error of each against the
//!    occupancy that came (both as rates, 0 to 1), over the hours with a slot in service.
//!
//! Run: `cargo run --release --locked --bin bench-analytics`

use std::time::Instant;

use chrono::{DateTime, Datelike, Duration, DurationRound, Timelike, Utc};
use hyper::StatusCode;
use parking_projections::analytics::forecast::{hours, Profile, PROFILE_WEEKS};
use parking_tests::history::{Place, Script};
use parking_tests::load::{env, Client};
use parking_tests::spawn_app_with;
use uuid::Uuid;

/// SplitMix64: a small, fast, seedable generator; the history must be the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low) as u64) as i64
    }
}

/// How busy an hour of the week is, 0 to 1: weekdays peak from 8 to 18, weekends at midday,
/// nights are quiet.
fn demand(at: DateTime<Utc>) -> f64 {
    let hour = at.hour() as f64;
    let weekend = at.weekday().number_from_monday() >= 6;
    let day = if weekend {
        (-((hour - 13.0) / 3.5).powi(2)).exp() * 0.6
    } else {
        (-((hour - 9.0) / 2.0).powi(2)).exp() * 0.9 + (-((hour - 16.0) / 3.0).powi(2)).exp() * 0.7
    };
    (0.04 + day).min(1.0)
}

/// A year of one lot's slots, added to `script` in time order across the slots (as the log
/// would have it: a lot's slots change side by side).
fn lot_history(
    script: &mut Script,
    rng: &mut Rng,
    place: (Uuid, Uuid),
    slots: &[Uuid],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let (lot_id, owner_id) = place;
    let camera = Uuid::new_v4();
    // Cars per slot-hour at the busiest hour, for this lot.
    let scale = 0.15 + 0.2 * rng.unit();
    // When each slot is next looked at: the earliest goes first.
    let mut next: Vec<DateTime<Utc>> = (slots.iter())
        .map(|_| from + Duration::minutes(rng.between(0, 60)))
        .collect();
    loop {
        let (i, at) = (next.iter().copied().enumerate())
            .min_by_key(|(_, at)| *at)
            .expect("a lot has slots");
        if at >= to {
            break;
        }
        let slot_id = slots[i];
        // The next arrival: thinned by the hour's demand, one candidate every 10 minutes.
        if rng.unit() >= demand(at) * scale / 6.0 {
            next[i] = at + Duration::minutes(10);
            continue;
        }
        let leave = at + Duration::minutes(rng.between(30, 300));
        if leave >= to {
            next[i] = to;
            continue;
        }
        if rng.unit() < 0.0015 {
            // Out of service for a day instead.
            let back = (at + Duration::hours(24)).min(to);
            script.out_of_service(slot_id, owner_id, at, back);
            next[i] = back;
            continue;
        }
        let place = Place {
            lot_id,
            owner_id,
            slot_id,
        };
        if rng.unit() < 0.15 {
            booked_visit(script, rng, place, at, leave, camera);
        } else {
            script.observed(slot_id, at, true, camera);
            script.observed(slot_id, leave, false, camera);
        }
        next[i] = leave + Duration::minutes(rng.between(5, 60));
    }
}

/// A visit booked ahead: made 1 to 48 hours before, paid a few minutes later (or left unpaid
/// to expire, or cancelled and refunded), the car seen when it comes and goes.
fn booked_visit(
    script: &mut Script,
    rng: &mut Rng,
    place: Place,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    camera: Uuid,
) {
    let made = start - Duration::minutes(rng.between(60, 48 * 60));
    let booked_end =
        end.duration_round(Duration::minutes(15)).unwrap_or(end) + Duration::minutes(15);
    let price = ((booked_end - start).num_minutes() / 15 + 1) * 50;
    let money = (price, "EUR");
    let booking = script.booking(made, place, (start, booked_end), money);
    let roll = rng.unit();
    if roll < 0.05 {
        script.expired(made + Duration::minutes(15), booking);
        return;
    }
    let payment = script.paid(made + Duration::minutes(2), booking, place.lot_id, money);
    if roll < 0.12 {
        let cancelled = made + Duration::minutes(30);
        script.cancelled(cancelled, booking, Uuid::nil(), true);
        script.refunded(cancelled + Duration::seconds(5), payment, money);
        return;
    }
    let driver = Uuid::new_v4();
    script.observed(place.slot_id, start, true, camera);
    script.stay(booking, driver, start, end);
    script.observed(place.slot_id, end, false, camera);
    if roll > 0.98 {
        // A goodwill refund of part of it.
        script.refunded(end + Duration::hours(2), payment, (price / 4, "EUR"));
    }
}

fn quantiles(mut millis: Vec<f64>) -> String {
    millis.sort_by(f64::total_cmp);
    let at = |q: f64| millis[((millis.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
        at(0.5),
        at(0.99),
        at(1.0),
        millis.len()
    )
}

async fn latency(client: &mut Client, path: &str, requests: u64) -> String {
    let mut millis = Vec::with_capacity(requests as usize);
    for _ in 0..requests {
        let began = Instant::now();
        let answer = client.get(path, None).await;
        millis.push(began.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
    }
    quantiles(millis)
}

fn main() -> anyhow::Result<()> {
    parking_tests::load::bench_main(run)
}

async fn run() -> anyhow::Result<()> {
    let lots = env("BENCH_LOTS", 200) as usize;
    let slots = env("BENCH_SLOTS", 4) as usize;
    let requests = env("BENCH_REQUESTS", 300);
    let mut rng = Rng(env("BENCH_SEED", 1));
    let app = spawn_app_with(&[("READ_WAIT_MS", "60000")]).await;
    let (token, owner) = app.signed_in("parking_owner").await;

    // 1. The history.
    let to = Utc::now().duration_trunc(Duration::hours(1))?;
    let from = to - Duration::days(365);
    let began = Instant::now();
    let (mut events, mut head) = (0, 0);
    let mut owned = Vec::new();
    for n in 0..lots {
        let mut script = Script::default();
        let owner_id = if n < 50 { owner } else { Uuid::new_v4() };
        let zone = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"][n % 4];
        let lot_id = script.lot(from, owner_id, &format!("Lot {n:03}"), zone, "EUR");
        let ids: Vec<Uuid> = (0..slots)
            .map(|i| script.slot(from, lot_id, &format!("S{i}")))
            .collect();
        lot_history(&mut script, &mut rng, (lot_id, owner_id), &ids, from, to);
        events += script.len();
        head = script.append(&app.db).await?;
        if owner_id == owner {
            owned.push(lot_id);
        }
    }
    let written = began.elapsed().as_secs_f64();
    println!(
        "history: {lots} lots × {slots} slots, one year: {events} events appended in {written:.1} s"
    );

    // The live projections catch up (the first answer waits for them).
    let began = Instant::now();
    loop {
        let caught_up = app
            .get_at("/api/v1/analytics/dashboard?days=90", Some(&token), head)
            .await;
        match caught_up.status {
            StatusCode::OK => break,
            StatusCode::SERVICE_UNAVAILABLE if began.elapsed().as_secs() < 1800 => continue,
            _ => anyhow::bail!("{caught_up:?}"),
        }
    }
    println!(
        "live projections caught up {:.1} s after the last append",
        began.elapsed().as_secs_f64()
    );

    // 2. Rebuilds.
    for name in ["analytics", "bookings"] {
        let models = parking_projections::all();
        let model = models
            .iter()
            .find(|m| m.name() == name)
            .expect("a projection");
        let done = parking_projections::rebuild::rebuild(
            &parking_tests::event_log(&app.db),
            model.as_ref(),
            |_| {},
        )
        .await?;
        println!(
            "rebuild {name}: {} log positions in {:.1} s: {:.0} positions/s",
            done.events,
            done.seconds,
            done.events as f64 / done.seconds
        );
    }

    // 3. Latency, on one held connection, over tables as autovacuum keeps them: a year's rows
    //    written long ago are vacuumed and analyzed (here they were all written a minute ago).
    for model in parking_projections::all()
        .iter()
        .filter(|m| m.name() == "analytics")
    {
        for table in model.tables() {
            sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
                .execute(&app.db)
                .await?;
        }
    }
    let mut client = Client::connect(&app.address, &token).await;
    latency(&mut client, "/api/v1/analytics/dashboard?days=90", 20).await;
    println!(
        "dashboard, 50 lots, 90 days: {}",
        latency(&mut client, "/api/v1/analytics/dashboard?days=90", requests).await
    );
    let series = format!("/api/v1/analytics/lots/{}?days=90", owned[0]);
    println!(
        "one lot's series, 90 days: {}",
        latency(&mut client, &series, requests).await
    );
    let dashboard: serde_json::Value = serde_json::from_slice(
        &client
            .get("/api/v1/analytics/dashboard?days=90", None)
            .await
            .body,
    )?;
    println!(
        "the owner's 90 days: {} bookings, occupancy {:.3}, revenue {}",
        dashboard["totals"]["bookings"]["total"],
        dashboard["totals"]["occupancy"]["rate"]
            .as_f64()
            .unwrap_or(0.0),
        dashboard["totals"]["revenue"]
    );

    // 4. Forecast error on the held-back weeks.
    let cutoff = to - Duration::weeks(4);
    let (mut profile_error, mut naive_error, mut count) = (0.0, 0.0, 0u32);
    for &lot_id in &owned {
        let known = hours(
            &app.db,
            lot_id,
            cutoff - Duration::weeks(PROFILE_WEEKS),
            to,
            Utc::now(),
        )
        .await?;
        let (before, after): (Vec<_>, Vec<_>) = known.into_iter().partition(|h| h.hour < cutoff);
        let profile = Profile::of(&before);
        let last_week = Profile::of(
            &before
                .iter()
                .filter(|h| h.hour >= cutoff - Duration::weeks(1))
                .cloned()
                .collect::<Vec<_>>(),
        );
        for hour in &after {
            let Some(actual) = hour.rate() else { continue };
            let guess = |p: &Profile| p.at(hour.dow, hour.hod).0.unwrap_or(0.0);
            profile_error += (guess(&profile) - actual).abs();
            naive_error += (guess(&last_week) - actual).abs();
            count += 1;
        }
    }
    let (profile_mae, naive_mae) = (profile_error / count as f64, naive_error / count as f64);
    println!(
        "forecast, 4 held-back weeks × {} lots ({count} lot-hours): mean absolute error {profile_mae:.4} \
         (hour-of-week profile, {PROFILE_WEEKS} weeks) vs {naive_mae:.4} (same hour last week): {:.2}×",
        owned.len(),
        profile_mae / naive_mae
    );
    Ok(())
}

//! Owner analytics end to end: a small history written to the event store at chosen instants
//! (the projector and the API are the real ones), figures computed by hand, who sees what,
//! the command path feeding the figures live, and a rebuild giving the same rows.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use parking_tests::history::{Place, Script};
use parking_tests::{assert_read_models_equal_a_rebuild, spawn_app};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// The day row of `date` in a lot's series.
fn day(series: &Value, date: NaiveDate) -> &Value {
    let days = series["series"].as_array().expect("series");
    days.iter()
        .find(|d| d["date"] == date.to_string())
        .unwrap_or_else(|| panic!("no {date} in {series}"))
}

fn seconds(figures: &Value) -> (f64, f64) {
    let o = &figures["occupancy"];
    (
        o["in_service_slot_seconds"].as_f64().unwrap(),
        o["occupied_slot_seconds"].as_f64().unwrap(),
    )
}

#[tokio::test]
async fn an_owner_reads_figures_computed_from_a_scripted_history() {
    let app = spawn_app().await;
    let (owner_token, owner) = app.signed_in("parking_owner").await;
    let driver = Uuid::new_v4();
    // Four days ago at midnight UTC: day 1; the next two days, day 2 and day 3.
    let d1 = (Utc::now() - Duration::days(4)).date_naive();
    let (d2, d3) = (d1 + Duration::days(1), d1 + Duration::days(2));
    let base = d1.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let at = |days: i64, hour: i64, minute: i64| {
        base + Duration::days(days) + Duration::hours(hour) + Duration::minutes(minute)
    };

    let place = |lot_id, slot_id| Place {
        lot_id,
        owner_id: owner,
        slot_id,
    };
    let mut s = Script::default();
    // Lot A (UTC), two slots. S2 is out of service from 06:00 to 18:00 on day 1; a car seen
    // there meanwhile does not count.
    let a = s.lot(base, owner, "A lot", "UTC", "EUR");
    let (s1, s2) = (s.slot(base, a, "S1"), s.slot(base, a, "S2"));
    s.out_of_service(s2, owner, at(0, 6, 0), at(0, 18, 0));
    s.observed(s2, at(0, 8, 0), true, owner);
    s.observed(s2, at(0, 9, 0), false, owner);
    // K1: made day 1 20:00 for 22:00-02:00 (4 h, across midnight), paid 8.00 EUR, parked
    // 22:30-01:30; 3.00 refunded on day 2 at noon.
    let (at_a1, at_a2) = (place(a, s1), place(a, s2));
    let k1 = s.booking(
        at(0, 20, 0),
        at_a1,
        (at(0, 22, 0), at(1, 2, 0)),
        (800, "EUR"),
    );
    let p1 = s.paid(at(0, 20, 2), k1, a, (800, "EUR"));
    s.stay(k1, driver, at(0, 22, 30), at(1, 1, 30));
    // K2: made day 2 09:00, never paid, expired 09:15.
    let k2 = s.booking(
        at(1, 9, 0),
        at_a2,
        (at(1, 10, 0), at(1, 12, 0)),
        (400, "EUR"),
    );
    s.expired(at(1, 9, 15), k2);
    // K3: made day 2 11:00, paid 2.00, cancelled 11:30 and refunded in full 11:31.
    let k3 = s.booking(
        at(1, 11, 0),
        at_a2,
        (at(1, 13, 0), at(1, 14, 0)),
        (200, "EUR"),
    );
    let p3 = s.paid(at(1, 11, 5), k3, a, (200, "EUR"));
    s.cancelled(at(1, 11, 30), k3, driver, true);
    s.refunded(at(1, 11, 31), p3, (200, "EUR"));
    s.refunded(at(1, 12, 0), p1, (300, "EUR"));
    // A car in S2 from 15:00 to 17:00 on day 2.
    s.observed(s2, at(1, 15, 0), true, owner);
    s.observed(s2, at(1, 17, 0), false, owner);

    // Lot B in Tokyo (UTC+9, no daylight saving): its day 1 starts at 09:00 there. M1 is made
    // at 16:00 UTC on day 1, which is 01:00 on day 2 in Tokyo, and parked 17:00-17:45 UTC.
    let b = s.lot(base, owner, "B lot", "Asia/Tokyo", "JPY");
    let t1 = s.slot(base, b, "T1");
    let m1 = s.booking(
        at(0, 16, 0),
        place(b, t1),
        (at(0, 17, 0), at(0, 18, 0)),
        (500, "JPY"),
    );
    s.paid(at(0, 16, 30), m1, b, (500, "JPY"));
    s.stay(m1, driver, at(0, 17, 0), at(0, 17, 45));

    // Lot C: nothing ever happens there.
    let c = s.lot(base, owner, "C lot", "UTC", "EUR");
    let position = s.append(&app.db).await.expect("append the script");

    // Someone else's lot, made through the API, with a booking made through the API.
    let other = app.lot_with_slot().await;
    let (driver_token, _) = app.signed_in("user").await;
    app.booked_hour(&driver_token, other.slot_id, 2).await;

    // Lot A, day by day.
    let path = format!("/api/v1/analytics/lots/{a}?days=30");
    let series = app.get_at(&path, Some(&owner_token), position).await;
    assert_eq!(series.status, StatusCode::OK, "{series:?}");
    let series = series.body;
    assert_eq!(series["series"].as_array().unwrap().len(), 30);
    assert_eq!(
        (series["time_zone"].as_str(), series["name"].as_str()),
        (Some("UTC"), Some("A lot"))
    );
    let one = day(&series, d1);
    // Service: S1 24 h + S2 12 h; occupied: K1 22:30-24:00.
    assert_eq!(seconds(one), (36.0 * 3600.0, 1.5 * 3600.0), "{one}");
    assert_eq!(one["occupancy"]["rate"].as_f64().unwrap(), 1.5 / 36.0);
    assert_eq!(
        one["bookings"],
        json!({"total": 1, "pending": 0, "confirmed": 0, "active": 0,
        "completed": 1, "cancelled": 0, "expired": 0})
    );
    assert_eq!(
        one["revenue"],
        json!([{"currency": "EUR", "captured_minor": 800,
        "refunded_minor": 0, "net_minor": 800}])
    );
    assert_eq!(one["average_booked_minutes"], 240.0);
    let two = day(&series, d2);
    // Service: 2 × 24 h; occupied: K1 00:00-01:30 and the car in S2 15:00-17:00.
    assert_eq!(seconds(two), (48.0 * 3600.0, 3.5 * 3600.0), "{two}");
    assert_eq!(two["bookings"]["total"], 2);
    assert_eq!(
        (
            two["bookings"]["expired"].as_i64(),
            two["bookings"]["cancelled"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(two["cancellation_rate"], 0.5);
    assert_eq!(two["average_booked_minutes"], Value::Null);
    assert_eq!(
        two["revenue"],
        json!([{"currency": "EUR", "captured_minor": 200,
        "refunded_minor": 500, "net_minor": -300}])
    );
    let three = day(&series, d3);
    assert_eq!(seconds(three), (48.0 * 3600.0, 0.0), "{three}");
    assert_eq!(three["bookings"]["total"], 0);
    assert_eq!(three["revenue"], json!([]));

    // Lot B, in Tokyo's calendar.
    let series = app
        .get(&format!("/api/v1/analytics/lots/{b}"), Some(&owner_token))
        .await;
    assert_eq!(series.status, StatusCode::OK, "{series:?}");
    let series = series.body;
    let one = day(&series, d1);
    assert_eq!(seconds(one), (15.0 * 3600.0, 0.0), "{one}");
    assert_eq!(one["bookings"]["total"], 0);
    let two = day(&series, d2);
    assert_eq!(seconds(two), (24.0 * 3600.0, 0.75 * 3600.0), "{two}");
    assert_eq!(two["bookings"]["completed"], 1);
    assert_eq!(
        two["revenue"],
        json!([{"currency": "JPY", "captured_minor": 500,
        "refunded_minor": 0, "net_minor": 500}])
    );

    // The dashboard: the owner's three lots and no one else's, C with zeros.
    let dashboard = app
        .get("/api/v1/analytics/dashboard?days=90", Some(&owner_token))
        .await;
    assert_eq!(dashboard.status, StatusCode::OK, "{dashboard:?}");
    let dashboard = dashboard.body;
    assert_eq!(dashboard["days"], 90);
    let names: Vec<&str> = (dashboard["lots"].as_array().unwrap().iter())
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A lot", "B lot", "C lot"]);
    let totals = &dashboard["totals"];
    assert_eq!(
        totals["revenue"],
        json!([
            {"currency": "EUR", "captured_minor": 1000, "refunded_minor": 500, "net_minor": 500},
            {"currency": "JPY", "captured_minor": 500, "refunded_minor": 0, "net_minor": 500},
        ])
    );
    assert_eq!(
        totals["bookings"],
        json!({"total": 4, "pending": 0, "confirmed": 0, "active": 0,
        "completed": 2, "cancelled": 1, "expired": 1})
    );
    assert_eq!(totals["cancellation_rate"], 0.25);
    // K1's 4 h and M1's 1 h.
    assert_eq!(totals["average_booked_minutes"], 150.0);
    // Lot A's slots have been in service since day 1 up to the dashboard's instant, less S2's
    // 12 h out of service; occupied 5 h in all.
    let generated: DateTime<Utc> =
        serde_json::from_value(dashboard["generated_at"].clone()).unwrap();
    let since = (generated - base).num_microseconds().unwrap();
    let lot_a = &dashboard["lots"][0];
    let expected = (2 * since - 12 * 3_600_000_000) as f64 / 1e6;
    assert_eq!(seconds(lot_a), (expected, 5.0 * 3600.0), "{lot_a}");
    let lot_c = &dashboard["lots"][2];
    assert_eq!(lot_c["lot_id"], json!(c));
    assert_eq!(seconds(lot_c), (0.0, 0.0));
    assert_eq!(lot_c["bookings"]["total"], 0);
    assert_eq!(lot_c["revenue"], json!([]));
    assert_eq!(lot_c["occupancy"]["rate"], 0.0);

    // The other owner sees their lot with the booking made through the API, today, pending.
    let theirs = app
        .get("/api/v1/analytics/dashboard", Some(&other.owner_token))
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{theirs:?}");
    let lots = theirs.body["lots"].as_array().unwrap();
    assert_eq!(lots.len(), 1);
    assert_eq!(lots[0]["lot_id"], json!(other.lot_id));
    assert_eq!(lots[0]["bookings"]["pending"], 1);
    // An admin sees every lot.
    let (admin_token, _) = app.admin().await;
    let all = app
        .get("/api/v1/analytics/dashboard", Some(&admin_token))
        .await;
    assert_eq!(all.body["lots"].as_array().unwrap().len(), 4, "{all:?}");
    let theirs = app
        .get(&format!("/api/v1/analytics/lots/{a}"), Some(&admin_token))
        .await;
    assert_eq!(theirs.status, StatusCode::OK);

    // Who may not, and what is refused.
    app.get("/api/v1/analytics/dashboard", Some(&driver_token))
        .await
        .assert_problem(403, "forbidden");
    app.get("/api/v1/analytics/dashboard", None)
        .await
        .assert_problem(401, "unauthenticated");
    app.get(
        &format!("/api/v1/analytics/lots/{a}"),
        Some(&other.owner_token),
    )
    .await
    .assert_problem(403, "forbidden");
    app.get(&format!("/api/v1/analytics/lots/{a}"), Some(&driver_token))
        .await
        .assert_problem(403, "forbidden");
    app.get(
        &format!("/api/v1/analytics/lots/{}", Uuid::new_v4()),
        Some(&owner_token),
    )
    .await
    .assert_problem(404, "lot_not_found");
    for days in ["45", "0", "-30", "thirty"] {
        let refused = app
            .get(
                &format!("/api/v1/analytics/dashboard?days={days}"),
                Some(&owner_token),
            )
            .await;
        assert!(refused.status.is_client_error(), "days={days}: {refused:?}");
    }
    app.get("/api/v1/analytics/dashboard?days=45", Some(&owner_token))
        .await
        .assert_problem(422, "invalid_days");

    assert_read_models_equal_a_rebuild(&app.db).await;
}

#[tokio::test]
async fn figures_follow_the_command_path_and_a_lot_moved_to_another_time_zone() {
    let app = spawn_app().await;
    let fixture = app.lot_with_slot().await;
    let (driver_token, _) = app.signed_in("user").await;
    let booked = app.booked_hour(&driver_token, fixture.slot_id, 3).await;
    let path = format!("/api/v1/bookings/{}/cancel", booked.id());
    let cancelled = app.post(&path, Some(&driver_token), json!({})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    app.booked_hour(&driver_token, fixture.slot_id, 5).await;

    let lot_path = format!("/api/v1/analytics/lots/{}", fixture.lot_id);
    let series = app.get(&lot_path, Some(&fixture.owner_token)).await;
    assert_eq!(series.status, StatusCode::OK, "{series:?}");
    let bookings = &series.body["bookings"];
    assert_eq!(
        (
            bookings["total"].as_i64(),
            bookings["pending"].as_i64(),
            bookings["cancelled"].as_i64()
        ),
        (Some(2), Some(1), Some(1)),
        "{series:?}"
    );
    assert_eq!(series.body["cancellation_rate"], 0.5);
    // The slot has been in service since it was added: some time, none of it occupied.
    let (in_service, occupied) = seconds(&series.body);
    assert!(in_service > 0.0 && occupied == 0.0, "{series:?}");

    // Moving the lot to another zone changes how later days are cut, and a rebuild agrees.
    let moved = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/lots/{}", fixture.lot_id),
            Some(&fixture.owner_token),
            Some(json!({"time_zone": "Pacific/Kiritimati"})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:?}");
    let series = app.get(&lot_path, Some(&fixture.owner_token)).await;
    assert_eq!(series.body["time_zone"], "Pacific/Kiritimati");
    app.booked_hour(&driver_token, fixture.slot_id, 7).await;
    let series = app.get(&lot_path, Some(&fixture.owner_token)).await;
    assert_eq!(series.body["bookings"]["total"], 3, "{series:?}");
    assert_read_models_equal_a_rebuild(&app.db).await;
}

#[tokio::test]
async fn the_forecast_rests_on_the_lots_weeks_and_its_paid_bookings() {
    use chrono::{Datelike, Duration as D};
    let app = spawn_app().await;
    let (_, owner) = app.signed_in("parking_owner").await;
    let camera = Uuid::new_v4();
    // A weekday three days from today's (so neither today nor its neighbours), at 05:00 UTC:
    // 14:00 in Tokyo. `last` is its most recent one, two to five days ago.
    let now = Utc::now();
    let mut last = now.date_naive().and_hms_opt(5, 0, 0).unwrap().and_utc() - D::days(1);
    let weekday = (now.weekday().num_days_from_monday() + 3) % 7;
    while last.weekday().num_days_from_monday() != weekday {
        last -= D::days(1);
    }
    let mut s = Script::default();
    let lot = s.lot(
        last - D::days(21) - D::hours(1),
        owner,
        "Tokyo lot",
        "Asia/Tokyo",
        "JPY",
    );
    let a = s.slot(last - D::days(21) - D::hours(1), lot, "A");
    let b = s.slot(last - D::days(21) - D::hours(1), lot, "B");
    // In four weeks of that hour, A was taken three times (05:00-07:00 UTC), B never.
    for week in [14, 7, 0] {
        s.observed(a, last - D::days(week), true, camera);
        s.observed(a, last - D::days(week) + D::hours(2), false, camera);
    }
    // A lot with no history yet.
    let new_lot = s.lot(now - D::minutes(5), owner, "New lot", "UTC", "EUR");
    s.slot(now - D::minutes(5), new_lot, "N1");
    let position = s.append(&app.db).await.unwrap();

    let at = last + D::days(7) + D::minutes(30);
    let path = format!(
        "/api/v1/lots/{lot}/forecast?at={}",
        at.to_rfc3339().replace('+', "%2B")
    );
    let forecast = app.get_at(&path, None, position).await;
    assert_eq!(forecast.status, StatusCode::OK, "{forecast:?}");
    assert_eq!(forecast.body["time_zone"], "Asia/Tokyo");
    assert_eq!(forecast.body["slots_in_service"], 2);
    assert_eq!(forecast.body["weeks_of_history"], 4, "{forecast:?}");
    assert_eq!(forecast.body["historical_occupancy"], 3.0 / 8.0);
    assert_eq!(forecast.body["confirmed_bookings"], 0);
    assert_eq!(forecast.body["expected_occupancy"], 3.0 / 8.0);
    assert_eq!(forecast.body["expected_free_slots"], 1.25);

    // A paid booking for that instant is a floor under the history's share (the same script:
    // its streams' numbering goes on).
    let place = Place {
        lot_id: lot,
        owner_id: owner,
        slot_id: b,
    };
    let booking = s.booking(
        now,
        place,
        (at - D::minutes(30), at + D::hours(1)),
        (900, "JPY"),
    );
    s.paid(now, booking, lot, (900, "JPY"));
    let position = s.append(&app.db).await.unwrap();
    let forecast = app.get_at(&path, None, position).await;
    assert_eq!(forecast.body["confirmed_bookings"], 1, "{forecast:?}");
    assert_eq!(forecast.body["expected_occupancy"], 0.5);
    assert_eq!(forecast.body["expected_free_slots"], 1.0);

    // No history: the bookings alone.
    let fresh = format!(
        "/api/v1/lots/{new_lot}/forecast?at={}",
        (now + D::hours(2)).timestamp()
    );
    app.get(&fresh, None)
        .await
        .assert_problem(400, "malformed_query");
    let at_text = |t: DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
    let fresh = format!(
        "/api/v1/lots/{new_lot}/forecast?at={}",
        at_text(now + D::hours(2))
    );
    let forecast = app.get(&fresh, None).await;
    assert_eq!(forecast.status, StatusCode::OK, "{forecast:?}");
    assert_eq!(forecast.body["historical_occupancy"], Value::Null);
    assert_eq!(forecast.body["weeks_of_history"], 0);
    assert_eq!(forecast.body["expected_occupancy"], 0.0);

    // What is refused.
    for bad in [now - D::hours(2), now + D::days(91)] {
        let path = format!("/api/v1/lots/{lot}/forecast?at={}", at_text(bad));
        app.get(&path, None).await.assert_problem(422, "invalid_at");
    }
    app.get(&format!("/api/v1/lots/{lot}/forecast"), None)
        .await
        .assert_problem(400, "malformed_query");
    let unknown = format!(
        "/api/v1/lots/{}/forecast?at={}",
        Uuid::new_v4(),
        at_text(at)
    );
    app.get(&unknown, None)
        .await
        .assert_problem(404, "lot_not_found");
}

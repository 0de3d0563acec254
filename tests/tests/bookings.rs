//! Booking a slot, and cancelling.

use chrono::{Duration, Utc};
use parking_tests::{hours_from_now, spawn_app};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_booking_is_priced_from_the_rate_and_the_duration() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, driver_id) = app.signed_in("user").await;

    let two_hours = app
        .book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(3))
        .await;
    assert_eq!(two_hours.status, StatusCode::CREATED, "{two_hours:?}");
    assert_eq!(two_hours.body["status"], "pending");
    assert_eq!(two_hours.body["price_cents"], 500, "250 ¢/h × 2 h");
    assert_eq!(two_hours.body["currency"], "EUR");
    assert_eq!(two_hours.body["user_id"], driver_id.to_string());
    assert_eq!(two_hours.body["lot_id"], fx.lot_id.to_string());
    assert_eq!(two_hours.body["vehicle_number"], "AB-123-CD");

    let ninety_minutes = app
        .book(
            &driver,
            fx.slot_id,
            hours_from_now(5),
            hours_from_now(5) + Duration::minutes(90),
        )
        .await;
    assert_eq!(ninety_minutes.body["price_cents"], 375, "250 ¢/h × 1.5 h");
}

#[tokio::test]
async fn booking_that_overlaps_another_is_rejected_and_an_adjacent_one_accepted() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (alice, _) = app.signed_in("user").await;
    let (bob, _) = app.signed_in("user").await;
    assert_eq!(
        app.book(&alice, fx.slot_id, hours_from_now(2), hours_from_now(4))
            .await
            .status,
        StatusCode::CREATED
    );

    app.book(&bob, fx.slot_id, hours_from_now(3), hours_from_now(5))
        .await
        .assert_problem(409, "slot_already_reserved");
    app.book(&bob, fx.slot_id, hours_from_now(1), hours_from_now(5))
        .await
        .assert_problem(409, "slot_already_reserved");
    app.book(
        &bob,
        fx.slot_id,
        hours_from_now(2) + Duration::minutes(30),
        hours_from_now(3),
    )
    .await
    .assert_problem(409, "slot_already_reserved");

    let after = app
        .book(&bob, fx.slot_id, hours_from_now(4), hours_from_now(6))
        .await;
    assert_eq!(
        after.status,
        StatusCode::CREATED,
        "end == start does not overlap: {after:?}"
    );
    let before = app
        .book(&bob, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await;
    assert_eq!(before.status, StatusCode::CREATED, "{before:?}");

    let reservations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SlotReserved'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(reservations, 3, "refused bookings record nothing");
}

#[tokio::test]
async fn bad_ranges_and_unknown_slots_are_rejected() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;

    app.book(&driver, fx.slot_id, hours_from_now(3), hours_from_now(2))
        .await
        .assert_problem(422, "invalid_range");
    app.book(&driver, fx.slot_id, hours_from_now(3), hours_from_now(3))
        .await
        .assert_problem(422, "invalid_range");
    let yesterday = Utc::now() - Duration::days(1);
    app.book(
        &driver,
        fx.slot_id,
        yesterday,
        yesterday + Duration::hours(2),
    )
    .await
    .assert_problem(422, "booking_in_past");
    app.book(
        &driver,
        fx.slot_id,
        hours_from_now(1),
        hours_from_now(1 + 24 * 8),
    )
    .await
    .assert_problem(422, "booking_too_long");
    app.book(
        &driver,
        Uuid::new_v4(),
        hours_from_now(1),
        hours_from_now(2),
    )
    .await
    .assert_problem(404, "slot_not_found");

    let bad_plate = json!({"slot_id": fx.slot_id, "start_time": hours_from_now(1), "end_time": hours_from_now(2), "vehicle_number": ""});
    app.post("/api/v1/bookings", Some(&driver), bad_plate)
        .await
        .assert_problem(422, "invalid_vehicle_number");
    let bad_time = json!({"slot_id": fx.slot_id, "start_time": "tomorrow", "end_time": hours_from_now(2), "vehicle_number": "X1"});
    app.post("/api/v1/bookings", Some(&driver), bad_time)
        .await
        .assert_problem(400, "malformed_body");
    app.post_raw("/api/v1/bookings", Some(&driver), "{")
        .await
        .assert_problem(400, "malformed_body");

    let bookings: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type IN ('booking', 'slot') AND event_type <> 'SlotRegistered'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(bookings, 0);
}

#[tokio::test]
async fn a_deactivated_lot_takes_no_bookings() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let path = format!("/api/v1/lots/{}", fx.lot_id);
    let deleted = app
        .request(reqwest::Method::DELETE, &path, Some(&fx.owner_token), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await
        .assert_problem(409, "lot_inactive");
}

#[tokio::test]
async fn cancelling_frees_the_slot_and_only_the_driver_may_do_it() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (alice, _) = app.signed_in("user").await;
    let (mallory, _) = app.signed_in("user").await;
    let booking = app
        .book(&alice, fx.slot_id, hours_from_now(1), hours_from_now(3))
        .await;
    let cancel = format!("/api/v1/bookings/{}/cancel", booking.id());

    app.post(&cancel, Some(&mallory), json!({}))
        .await
        .assert_problem(403, "forbidden");
    app.post(&cancel, Some(&fx.owner_token), json!({}))
        .await
        .assert_problem(403, "forbidden");
    app.book(&mallory, fx.slot_id, hours_from_now(1), hours_from_now(3))
        .await
        .assert_problem(409, "slot_already_reserved");

    let cancelled = app
        .post(&cancel, Some(&alice), json!({"reason": "plans changed"}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancelled");
    app.post(&cancel, Some(&alice), json!({}))
        .await
        .assert_problem(409, "booking_not_cancellable");

    let rebooked = app
        .book(&mallory, fx.slot_id, hours_from_now(1), hours_from_now(3))
        .await;
    assert_eq!(
        rebooked.status,
        StatusCode::CREATED,
        "the freed range can be booked again: {rebooked:?}"
    );

    app.post(
        &format!("/api/v1/bookings/{}/cancel", Uuid::new_v4()),
        Some(&alice),
        json!({}),
    )
    .await
    .assert_problem(404, "booking_not_found");
}

#[tokio::test]
async fn an_admin_may_cancel_any_booking() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (alice, _) = app.signed_in("user").await;
    let (admin, _) = app.admin().await;
    let booking = app
        .book(&alice, fx.slot_id, hours_from_now(1), hours_from_now(3))
        .await;
    let cancelled = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/bookings/{}/cancel", booking.id()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancelled");
}

#[tokio::test]
async fn a_booking_is_visible_to_its_driver_the_lot_owner_and_admins_only() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (alice, _) = app.signed_in("user").await;
    let (mallory, _) = app.signed_in("user").await;
    let (admin, _) = app.admin().await;
    let booking = app
        .book(&alice, fx.slot_id, hours_from_now(1), hours_from_now(3))
        .await;
    let path = format!("/api/v1/bookings/{}", booking.id());

    for token in [&alice, &fx.owner_token, &admin] {
        let read = app.get(&path, Some(token)).await;
        assert_eq!(read.status, StatusCode::OK, "{read:?}");
        assert_eq!(read.body, booking.body);
    }
    app.get(&path, Some(&mallory))
        .await
        .assert_problem(403, "forbidden");
    app.get(&path, None)
        .await
        .assert_problem(401, "unauthenticated");

    let total = |token: String| {
        let app = &app;
        async move { app.get("/api/v1/bookings", Some(&token)).await.body["total"].clone() }
    };
    assert_eq!(total(alice.clone()).await, 1);
    assert_eq!(total(fx.owner_token.clone()).await, 1);
    assert_eq!(total(admin.clone()).await, 1);
    assert_eq!(total(mallory.clone()).await, 0);

    let filtered = app
        .get("/api/v1/bookings?status=cancelled", Some(&alice))
        .await;
    assert_eq!(filtered.body["total"], 0);
    let by_lot = app
        .get(
            &format!("/api/v1/bookings?lot_id={}&status=pending", fx.lot_id),
            Some(&alice),
        )
        .await;
    assert_eq!(by_lot.body["total"], 1);
    app.get("/api/v1/bookings?status=lost", Some(&alice))
        .await
        .assert_problem(400, "invalid_status");
}

#[tokio::test]
async fn a_pending_booking_shows_its_slot_as_reserved_while_it_runs() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (alice, _) = app.signed_in("user").await;
    // A booking covering now (start within the grace minute).
    let now = Utc::now();
    let booking = app
        .book(&alice, fx.slot_id, now, now + Duration::hours(1))
        .await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    let slots = app
        .get(&format!("/api/v1/lots/{}/slots", fx.lot_id), None)
        .await;
    assert_eq!(slots.body["items"][0]["status"], "reserved");
    let lot = app.get(&format!("/api/v1/lots/{}", fx.lot_id), None).await;
    assert_eq!(lot.body["available_slots"], 0);
    assert_eq!(lot.body["total_slots"], 1);
}

#[tokio::test]
async fn a_booking_and_its_reservation_are_recorded_together() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let booked = app
        .book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await;
    assert_eq!(booked.status.as_u16(), 201, "{booked:?}");
    // One statement, one transaction: both or neither.
    let transactions: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, transaction_id::text FROM events
          WHERE (aggregate_type = 'booking' AND aggregate_id = $1)
             OR (aggregate_type = 'slot' AND aggregate_id = $2 AND event_type = 'SlotReserved')
          ORDER BY event_type",
    )
    .bind(booked.id().to_string())
    .bind(fx.slot_id.to_string())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(transactions.len(), 2, "{transactions:?}");
    assert_eq!(transactions[0].0, "BookingCreated");
    assert_eq!(transactions[1].0, "SlotReserved");
    assert_eq!(transactions[0].1, transactions[1].1);
}

/// A booking's write answers as soon as its events are recorded, from the booking as it was
/// decided: the same body the read model then shows, to the microsecond. Cancelling likewise.
#[tokio::test]
async fn a_booking_answers_with_what_the_read_model_then_shows() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;

    let created = app
        .book(&driver, fx.slot_id, hours_from_now(2), hours_from_now(4))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let path = format!("/api/v1/bookings/{}", created.id());
    assert_eq!(created.headers["location"], path.as_str());
    let position = created.position().expect("X-Event-Position");
    let read = app.get_at(&path, Some(&driver), position).await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(read.body, created.body);

    let cancelled = app
        .post(&format!("{path}/cancel"), Some(&driver), json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancelled");
    let position = cancelled.position().expect("X-Event-Position");
    let read = app.get_at(&path, Some(&driver), position).await;
    assert_eq!(read.body, cancelled.body);
    assert_ne!(cancelled.body["updated_at"], created.body["updated_at"]);
}

/// Bookings do not wait for the read models: with the projector held up, a booking is still
/// recorded and answered at once, while a read that asks to see it waits, and then succeeds
/// once the projector moves again.
#[tokio::test]
async fn bookings_are_answered_while_the_read_models_are_held_up() {
    let app = parking_tests::spawn_app_with(&[("READ_WAIT_MS", "300")]).await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    // Make sure the fixtures are shown before holding the projector up.
    assert_eq!(
        app.get(&format!("/api/v1/lots/{}", fx.lot_id), None)
            .await
            .status,
        200
    );

    // Every projector step starts by locking its checkpoint rows: hold them.
    let mut hold = app.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM log_checkpoints WHERE consumer LIKE 'projection:%' FOR UPDATE")
        .execute(&mut *hold)
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let booked = app
        .book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
    assert!(started.elapsed() < std::time::Duration::from_millis(300));
    let position = booked.position().expect("X-Event-Position");
    let path = format!("/api/v1/bookings/{}", booked.id());
    app.get_at(&path, Some(&driver), position)
        .await
        .assert_problem(503, "read_model_lagging");

    hold.rollback().await.unwrap();
    let read = app.get_at(&path, Some(&driver), position).await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(read.body, booked.body);
}

//! Changing a slot: label, type, and taking it out of service.

use parking_tests::{hours_from_now, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn an_owner_relabels_and_retypes_a_slot() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let path = format!("/api/v1/slots/{}", fx.slot_id);
    let body = json!({"label": "Z9", "slot_type": "ev_charging"});
    let updated = app
        .request(Method::PATCH, &path, Some(&fx.owner_token), Some(body))
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    assert_eq!(updated.body["label"], "Z9");
    assert_eq!(updated.body["slot_type"], "ev_charging");

    // The old label is free again; the new one is taken.
    let slots = format!("/api/v1/lots/{}/slots", fx.lot_id);
    let a1 = app
        .post(
            &slots,
            Some(&fx.owner_token),
            json!({"label": "A1", "slot_type": "standard"}),
        )
        .await;
    assert_eq!(a1.status, StatusCode::CREATED);
    app.post(
        &slots,
        Some(&fx.owner_token),
        json!({"label": "z9", "slot_type": "standard"}),
    )
    .await
    .assert_problem(409, "duplicate_slot_label");
    let taken = json!({"label": "a1"});
    app.request(Method::PATCH, &path, Some(&fx.owner_token), Some(taken))
        .await
        .assert_problem(409, "duplicate_slot_label");
}

#[tokio::test]
async fn an_out_of_service_slot_takes_no_bookings_until_it_is_back() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let path = format!("/api/v1/slots/{}", fx.slot_id);
    let out = app
        .request(
            Method::PATCH,
            &path,
            Some(&fx.owner_token),
            Some(json!({"out_of_service": true})),
        )
        .await;
    assert_eq!(out.status, StatusCode::OK, "{out:?}");
    assert_eq!(out.body["status"], "out_of_service");
    assert_eq!(out.body["out_of_service"], true);

    app.book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await
        .assert_problem(409, "slot_out_of_service");
    let lot = app.get(&format!("/api/v1/lots/{}", fx.lot_id), None).await;
    assert_eq!(lot.body["available_slots"], 0);

    let back = app
        .request(
            Method::PATCH,
            &path,
            Some(&fx.owner_token),
            Some(json!({"out_of_service": false})),
        )
        .await;
    assert_eq!(back.body["status"], "free");
    let booked = app
        .book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");

    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'slot' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(fx.slot_id.to_string())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        events,
        [
            "SlotRegistered",
            "SlotTakenOutOfService",
            "SlotReturnedToService",
            "SlotReserved"
        ]
    );
}

#[tokio::test]
async fn only_the_lot_owner_or_an_admin_changes_a_slot() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (stranger, _) = app.signed_in("parking_owner").await;
    let (admin, _) = app.admin().await;
    let path = format!("/api/v1/slots/{}", fx.slot_id);
    let out = json!({"out_of_service": true, "label": "X"});
    app.request(Method::PATCH, &path, Some(&stranger), Some(out.clone()))
        .await
        .assert_problem(403, "forbidden");
    let unchanged = app
        .get(&format!("/api/v1/lots/{}/slots", fx.lot_id), None)
        .await;
    assert_eq!(unchanged.body["items"][0]["label"], "A1");
    assert_eq!(
        unchanged.body["items"][0]["out_of_service"], false,
        "a refused change records nothing"
    );

    let by_admin = app
        .request(Method::PATCH, &path, Some(&admin), Some(out))
        .await;
    assert_eq!(by_admin.status, StatusCode::OK);
    assert_eq!(by_admin.body["label"], "X");
    assert_eq!(by_admin.body["out_of_service"], true);
}

#[tokio::test]
async fn unknown_slots_and_types_are_refused() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let unknown = format!("/api/v1/slots/{}", Uuid::new_v4());
    app.request(
        Method::PATCH,
        &unknown,
        Some(&fx.owner_token),
        Some(json!({"out_of_service": true})),
    )
    .await
    .assert_problem(404, "slot_not_found");
    let path = format!("/api/v1/slots/{}", fx.slot_id);
    app.request(
        Method::PATCH,
        &path,
        Some(&fx.owner_token),
        Some(json!({"slot_type": "boat"})),
    )
    .await
    .assert_problem(422, "invalid_slot_type");
    app.request(Method::PATCH, &path, None, Some(json!({})))
        .await
        .assert_problem(401, "unauthenticated");
}

//! Races on one slot: the calendar must admit exactly one of any set of overlapping bookings.

use parking_tests::{hours_from_now, spawn_app};
use reqwest::StatusCode;

#[tokio::test]
async fn forty_concurrent_overlapping_bookings_admit_exactly_one() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let mut drivers = Vec::new();
    for _ in 0..8 {
        drivers.push(app.signed_in("user").await.0);
    }
    let attempts = (0..40).map(|i| {
        let (app, token) = (&app, drivers[i % drivers.len()].clone());
        // Every range overlaps every other: all contain hour 2..3.
        let start = hours_from_now(1 + (i % 2) as i64);
        let end = hours_from_now(3 + (i % 3) as i64);
        async move { app.book(&token, fx.slot_id, start, end).await }
    });
    let replies = futures::future::join_all(attempts).await;

    assert!(
        replies.iter().all(|r| !r.status.is_server_error()),
        "{replies:?}"
    );
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{replies:?}");
    for refused in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        refused.assert_problem(409, "slot_already_reserved");
    }
    let (reserved, bookings): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE event_type = 'SlotReserved'),
                count(*) FILTER (WHERE event_type = 'BookingCreated') FROM events",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((reserved, bookings), (1, 1));
}

#[tokio::test]
async fn concurrent_non_overlapping_bookings_of_one_slot_all_succeed() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    // Twelve back-to-back hours, all racing for the same slot stream.
    let attempts = (0..12).map(|h| {
        let (app, token) = (&app, driver.clone());
        async move {
            app.book(&token, fx.slot_id, hours_from_now(h), hours_from_now(h + 1))
                .await
        }
    });
    let replies = futures::future::join_all(attempts).await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::CREATED),
        "{replies:?}"
    );
    let sequences: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_type = 'slot' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(fx.slot_id.to_string())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        sequences,
        (1..=13).collect::<Vec<i64>>(),
        "registration plus twelve reservations, no gaps"
    );
}
